//! The reference Kafka starts from the Maven jars and answers a real Kafka tool.

use refstack::{ApacheKafka, JavaStack, KafkaOptions};

#[test]
fn apache_kafka_starts_and_kafka_topics_talks_to_it() {
    let stack = JavaStack::locate().unwrap();
    let kafka = ApacheKafka::start(&stack, KafkaOptions::default()).unwrap();
    let run = |args: &[&str]| {
        let out = stack
            .java("org.apache.kafka.tools.TopicCommand")
            .args(["--bootstrap-server", &kafka.bootstrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka-topics {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["--create", "--topic", "ref-smoke", "--partitions", "3"]);
    let described = run(&["--describe", "--topic", "ref-smoke"]);
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(
        stack.kafka_version().starts_with('4'),
        "{}",
        stack.kafka_version()
    );
}
