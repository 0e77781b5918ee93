//! The differential harness (issue 14, part 4): a real Apache Kafka (the oracle, from
//! `refstack`) and a real Sluice side by side, the same raw requests sent to both, and the
//! answers compared field by field.
//!
//! Owns: starting the pair, sending one request (or one request per side, where a request
//! carries a broker-assigned value such as a producer id) to both, and the comparison: both
//! answers are printed with `{:#?}`, fields named in an ignore list are blanked (each entry
//! says why), error messages are reduced to null / "" / text (their wording is each broker's
//! own; whether one is sent is not), and the remaining lines must be equal. Differences are
//! collected, not panicked on, so one run lists them all; `Oracle::finish` fails the test when
//! there are any. Does not own: the cases (`tests/differential.rs`).

use std::fmt::Debug;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use refstack::{ApacheKafka, JavaStack, KafkaOptions};

use crate::common::{Broker, RawClient};

/// A field blanked before the comparison, with the reason it may differ.
#[derive(Clone, Copy, Debug)]
pub struct Ignore {
    /// The field's name as `{:#?}` prints it (any depth).
    pub field: &'static str,
    pub why: &'static str,
}

/// Fields that differ between any two brokers, in every answer.
pub const IGNORE_ALWAYS: &[Ignore] = &[
    Ignore {
        field: "throttle_time_ms",
        why: "quota throttling is each broker's own",
    },
    Ignore {
        field: "cluster_id",
        why: "each cluster has its own id",
    },
    Ignore {
        field: "host",
        why: "each broker listens on its own address",
    },
    Ignore {
        field: "port",
        why: "each broker listens on its own port",
    },
    Ignore {
        field: "topic_id",
        why: "topic ids are random per topic",
    },
    Ignore {
        field: "unknown_tagged_fields",
        why: "neither broker sends unknown tagged fields; a map prints in any order",
    },
];

/// Set to print both answers of every comparison.
pub const VERBOSE_ENV: &str = "SLUICE_DIFF_VERBOSE";

/// Node id both brokers run with, so ids in answers need no normalising.
pub const NODE_ID: i32 = 1;

/// Apache Kafka and Sluice, configured alike, with one raw connection to each.
pub struct Oracle {
    pub kafka: ApacheKafka,
    /// Kept running for the test's life (its log prints when the test panics).
    pub sluice: Broker,
    pub k: RawClient,
    pub s: RawClient,
    differences: Vec<String>,
    compared: usize,
    _sluice_config: tempfile::NamedTempFile,
}

impl Oracle {
    /// Starts both: one node each, node id [`NODE_ID`], topic auto-creation as given
    /// (Kafka's `auto.create.topics.enable`, Sluice's `kafka.auto_create_topics`), one
    /// partition per auto-created topic.
    pub fn start(auto_create: bool) -> Oracle {
        let stack = JavaStack::locate().expect("Apache Kafka's jars");
        let kafka = ApacheKafka::start(
            &stack,
            KafkaOptions {
                heap_mb: 256,
                props: vec![
                    ("auto.create.topics.enable".into(), auto_create.to_string()),
                    ("num.partitions".into(), "1".into()),
                    ("node.id".into(), NODE_ID.to_string()),
                ],
                ..KafkaOptions::short_lived()
            },
        )
        .expect("start Apache Kafka");
        let mut config = tempfile::NamedTempFile::new().expect("config file");
        std::io::Write::write_all(
            &mut config,
            format!("[kafka]\nauto_create_topics = {auto_create}\ndefault_partitions = 1\n")
                .as_bytes(),
        )
        .expect("write config");
        let path = config.path().to_str().expect("utf-8 path").to_string();
        let node_id = NODE_ID.to_string();
        let sluice = Broker::start_with(&["--config", &path, "--node-id", &node_id]);
        let k = RawClient::connect(&kafka.bootstrap());
        let s = sluice.connect();
        Oracle {
            kafka,
            sluice,
            k,
            s,
            differences: Vec::new(),
            compared: 0,
            _sluice_config: config,
        }
    }

    /// The same request to both: `[kafka's answer, sluice's answer]`.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> [Resp; 2] {
        self.call_each(api, version, req, req)
    }

    /// One request per side (for requests that carry a value each broker assigned).
    pub fn call_each<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        to_kafka: &Req,
        to_sluice: &Req,
    ) -> [Resp; 2] {
        let k = self.k.call(api, version, to_kafka);
        let s = self.s.call(api, version, to_sluice);
        [k, s]
    }

    /// The same request to each broker, repeated on each side on its own until `settled`
    /// holds for that side's answer or 30 s pass (a coordinator loading on one broker must
    /// not make the other repeat a request that changes state).
    pub fn call_until<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
        settled: impl Fn(&Resp) -> bool,
    ) -> [Resp; 2] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let side = |c: &mut RawClient| loop {
            let answer: Resp = c.call(api, version, req);
            if settled(&answer) || std::time::Instant::now() >= deadline {
                return answer;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let k = side(&mut self.k);
        let s = side(&mut self.s);
        [k, s]
    }

    /// `call_until` with one request per side (for requests that carry a value each broker
    /// assigned, such as a producer id).
    pub fn call_each_until<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        to_kafka: &Req,
        to_sluice: &Req,
        settled: impl Fn(&Resp) -> bool,
    ) -> [Resp; 2] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let side = |c: &mut RawClient, req: &Req| loop {
            let answer: Resp = c.call(api, version, req);
            if settled(&answer) || std::time::Instant::now() >= deadline {
                return answer;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let k = side(&mut self.k, to_kafka);
        let s = side(&mut self.s, to_sluice);
        [k, s]
    }

    /// Sends to both and compares the answers; returns them for the next step of the case.
    pub fn check<Req: Encodable, Resp: Decodable + Debug>(
        &mut self,
        case: &str,
        api: ApiKey,
        version: i16,
        req: &Req,
        ignore: &[Ignore],
    ) -> [Resp; 2] {
        let answers = self.call(api, version, req);
        self.compare(case, &answers, ignore);
        answers
    }

    /// Compares two answers (Kafka's first); a difference is recorded under `case`.
    pub fn compare<T: Debug>(&mut self, case: &str, answers: &[T; 2], ignore: &[Ignore]) {
        self.compared += 1;
        if std::env::var_os(VERBOSE_ENV).is_some() {
            eprintln!(
                "== {case}\n--- kafka ---\n{:#?}\n--- sluice ---\n{:#?}",
                answers[0], answers[1]
            );
        }
        if let Some(report) = differences(&answers[0], &answers[1], ignore) {
            self.differences.push(format!("== {case}\n{report}"));
        }
    }

    /// Counts a comparison a case made itself.
    pub fn compared(&mut self) {
        self.compared += 1;
    }

    /// Fails the test when any comparison found a difference, listing them all.
    pub fn finish(self) {
        eprintln!(
            "differential: {} comparisons against Kafka {} and Sluice {}, {} differences",
            self.compared,
            self.kafka.bootstrap(),
            self.sluice.addr(),
            self.differences.len()
        );
        assert!(
            self.differences.is_empty(),
            "Sluice answered differently from Apache Kafka {}:\n{}\n",
            self.kafka.bootstrap(),
            self.differences.join("\n"),
        );
    }
}

/// `None` when `kafka` and `sluice` print alike once `ignore` and [`IGNORE_ALWAYS`] are
/// applied; otherwise the differing lines, side by side.
pub fn differences<T: Debug>(kafka: &T, sluice: &T, ignore: &[Ignore]) -> Option<String> {
    let k = normalise(&format!("{kafka:#?}"), ignore);
    let mut s = normalise(&format!("{sluice:#?}"), ignore);
    // Accepted everywhere: Sluice explains an error in `error_message` where Kafka sends
    // null (Produce errors, for one); the code is still compared. The other way round (Kafka
    // explains, Sluice is silent) and "" against null are differences.
    if k.len() == s.len() {
        for (kl, sl) in k.iter().zip(s.iter_mut()) {
            if kl.trim() == "error_message: None," && sl.trim() == "error_message: Some(<text>)," {
                *sl = kl.clone();
            }
        }
    }
    if k == s {
        return None;
    }
    let mut report = String::new();
    let mut shown = 0;
    for i in 0..k.len().max(s.len()) {
        let (kl, sl) = (k.get(i), s.get(i));
        if kl != sl {
            report.push_str(&format!(
                "  line {i}\n    kafka:  {}\n    sluice: {}\n",
                kl.map_or("<none>", |l| l.trim()),
                sl.map_or("<none>", |l| l.trim())
            ));
            shown += 1;
            if shown == 8 || k.len() != s.len() {
                break;
            }
        }
    }
    if k.len() != s.len() {
        report.push_str(&format!(
            "  (structure differs)\n--- kafka ---\n{}\n--- sluice ---\n{}\n",
            k.join("\n"),
            s.join("\n")
        ));
    }
    Some(report)
}

/// `{:#?}` lines with ignored fields blanked (a multi-line value as a whole) and error
/// messages reduced to whether they are null, empty or text.
fn normalise(text: &str, ignore: &[Ignore]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_deeper_than: Option<usize> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if let Some(depth) = skip_deeper_than {
            if indent > depth {
                continue;
            }
            skip_deeper_than = None;
            if trimmed.starts_with(['}', ']', ')']) {
                continue;
            }
        }
        let Some((key, value)) = trimmed.split_once(": ") else {
            out.push(line.to_string());
            continue;
        };
        let pad = &line[..indent];
        if let Some(entry) = IGNORE_ALWAYS
            .iter()
            .chain(ignore)
            .find(|entry| entry.field == key)
        {
            out.push(format!("{pad}{key}: <ignored: {}>", entry.why));
            if value.ends_with(['{', '[', '(']) {
                skip_deeper_than = Some(indent);
            }
        } else if key == "error_message" {
            // `Some(` then the text on its own line, then `),`.
            let shape = match value.trim_end_matches(',') {
                "None" => "None",
                "Some(\"\")" => "Some(\"\")",
                "Some(" => {
                    let inner = lines.peek().map(|l| l.trim()).unwrap_or_default();
                    skip_deeper_than = Some(indent);
                    if inner == "\"\"," {
                        "Some(\"\")"
                    } else {
                        "Some(<text>)"
                    }
                }
                _ => "Some(<text>)",
            };
            out.push(format!("{pad}{key}: {shape},"));
        } else {
            out.push(line.to_string());
        }
    }
    out
}
