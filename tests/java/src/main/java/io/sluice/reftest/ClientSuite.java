/*
 * The Java client suite (issue 14): Apache Kafka's own KafkaProducer, KafkaConsumer and Admin
 * against one broker, many scenarios in one JVM (a JVM takes seconds to start on two cores).
 *
 *   java io.sluice.reftest.ClientSuite <bootstrap> <scenario>...
 *
 * (no scenario: prints their names). Sluice runs every scenario except
 * admin_elect_leaders_not_needed; Apache Kafka every one except admin_elect_leaders_unsupported.
 * Prints one line per scenario on stdout: "PASS <name> <millis>ms <detail>", or "FAIL <name>"
 * followed by the stack trace; exits 1 when any failed, 2 on bad arguments. Every scenario
 * makes its own topics and groups (named after it), so scenarios run in any order and subset.
 *
 * Owns: the runner, the scenario table and the helpers the scenarios share (client settings,
 * topic creation, reading a topic back, checks). The scenarios live in ProducerScenarios,
 * GroupScenarios and AdminScenarios. Kafka's command-line tools are tested elsewhere
 * (io.sluice.reftest.tools).
 */
package io.sluice.reftest;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class ClientSuite {
    /** How long a scenario waits for records, a group to settle or an answer. */
    static final Duration WAIT = Duration.ofSeconds(60);
    /** One poll of a consumer inside a wait loop. */
    static final Duration POLL = Duration.ofMillis(100);

    /** A scenario: throws on any failed check, returns a one-line detail of what it saw. */
    interface Scenario {
        String run(String bootstrap) throws Exception;
    }

    /** Every scenario by name. */
    static Map<String, Scenario> scenarios() {
        Map<String, Scenario> all = new LinkedHashMap<>();
        all.put("produce_acks_0", b -> ProducerScenarios.acks(b, "0"));
        all.put("produce_acks_1", b -> ProducerScenarios.acks(b, "1"));
        all.put("produce_acks_all", b -> ProducerScenarios.acks(b, "all"));
        all.put("produce_idempotent", ProducerScenarios::idempotent);
        all.put("produce_codecs", ProducerScenarios::codecs);
        all.put("produce_headers", ProducerScenarios::headers);
        all.put("produce_large_records", ProducerScenarios::largeRecords);
        all.put("group_classic", b -> GroupScenarios.splitCommitResume(b, "classic"));
        all.put("group_consumer", b -> GroupScenarios.splitCommitResume(b, "consumer"));
        all.put("seek_by_timestamp", GroupScenarios::seekByTimestamp);
        all.put("admin_topics_configs", AdminScenarios::topicsAndConfigs);
        all.put("admin_offsets_records", AdminScenarios::offsetsAndDeleteRecords);
        all.put("admin_cluster_log_dirs", AdminScenarios::clusterAndLogDirs);
        all.put("admin_elect_leaders_unsupported", b -> AdminScenarios.electLeaders(b, false));
        // Apache Kafka's answer, for running the suite against the reference broker.
        all.put("admin_elect_leaders_not_needed", b -> AdminScenarios.electLeaders(b, true));
        return all;
    }

    public static void main(String[] args) {
        Map<String, Scenario> all = scenarios();
        if (args.length < 2) {
            System.err.println("usage: ClientSuite <bootstrap> <scenario>...; scenarios: " + all.keySet());
            System.exit(2);
        }
        String bootstrap = args[0];
        List<String> names = Arrays.asList(args).subList(1, args.length);
        int failed = 0;
        for (String name : names) {
            Scenario scenario = all.get(name);
            if (scenario == null) {
                System.out.println("FAIL " + name + " unknown scenario; known: " + all.keySet());
                failed++;
                continue;
            }
            long start = System.nanoTime();
            try {
                String detail = scenario.run(bootstrap);
                long ms = (System.nanoTime() - start) / 1_000_000;
                System.out.println("PASS " + name + " " + ms + "ms " + detail);
            } catch (Throwable t) {
                System.out.println("FAIL " + name);
                t.printStackTrace(System.out);
                failed++;
            }
            System.out.flush();
        }
        System.out.println("DONE passed=" + (names.size() - failed) + " failed=" + failed);
        System.out.flush();
        // Consumers of the KIP-848 protocol keep background threads; do not wait for them.
        System.exit(failed == 0 ? 0 : 1);
    }

    // ---- shared helpers ------------------------------------------------------------------

    static Properties common(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        return p;
    }

    static Admin admin(String bootstrap) {
        return Admin.create(common(bootstrap));
    }

    /** A byte[] producer; `overrides` are key, value pairs. */
    static KafkaProducer<byte[], byte[]> producer(String bootstrap, String... overrides) {
        Properties p = common(bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        put(p, overrides);
        return new KafkaProducer<>(p);
    }

    /** A byte[] consumer reading from the beginning, no auto commit; `overrides` as above. */
    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap, String... overrides) {
        Properties p = common(bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        put(p, overrides);
        return new KafkaConsumer<>(p);
    }

    private static void put(Properties p, String... overrides) {
        check(overrides.length % 2 == 0, "overrides come in key, value pairs");
        for (int i = 0; i < overrides.length; i += 2) {
            p.put(overrides[i], overrides[i + 1]);
        }
    }

    /** Creates a topic (replication factor 1 unless the cluster's default) and waits for it. */
    static void createTopic(Admin admin, String topic, int partitions, Map<String, String> configs)
            throws ExecutionException, InterruptedException {
        NewTopic t = new NewTopic(topic, partitions, (short) 1).configs(configs);
        admin.createTopics(List.of(t)).all().get();
    }

    static void createTopic(String bootstrap, String topic, int partitions)
            throws ExecutionException, InterruptedException {
        try (Admin admin = admin(bootstrap)) {
            createTopic(admin, topic, partitions, Map.of());
        }
    }

    /**
     * Reads `count` records of `topic` from the beginning of every partition (no group), in
     * fetch order; fails when fewer arrive within WAIT, and reads a little longer to catch extras.
     */
    static List<ConsumerRecord<byte[], byte[]>> readAll(String bootstrap, String topic, int count)
            throws InterruptedException {
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (out.size() < count && System.nanoTime() < deadline) {
                c.poll(POLL).forEach(out::add);
            }
            check(out.size() >= count, "read %d of %d records of %s", out.size(), count, topic);
            // Anything past the end is a duplicate or a stray record: one more short poll.
            c.poll(Duration.ofMillis(300)).forEach(out::add);
            check(out.size() == count, "read %d records of %s, want exactly %d", out.size(), topic, count);
            return out;
        }
    }

    static byte[] bytes(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    static void check(boolean ok, String format, Object... args) {
        if (!ok) {
            throw new AssertionError(String.format(format, args));
        }
    }

    static void checkEq(Object want, Object got, String what) {
        if (want == null ? got != null : !want.equals(got)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    /** Runs `action`, which must fail with `type` somewhere in its cause chain; returns it. */
    static <T extends Throwable> T expect(Class<T> type, Action action, String what) throws Exception {
        try {
            action.run();
        } catch (Throwable t) {
            for (Throwable c = t; c != null; c = c.getCause()) {
                if (type.isInstance(c)) {
                    return type.cast(c);
                }
            }
            throw new AssertionError(what + ": want " + type.getSimpleName() + ", got " + t, t);
        }
        throw new AssertionError(what + ": want " + type.getSimpleName() + ", it succeeded");
    }

    interface Action {
        void run() throws Exception;
    }

    private ClientSuite() {}
}
