/*
 * Kafka Streams with processing.guarantee=exactly_once_v2 against a 3-node cluster while the
 * test kills a broker (issue 15, sluice/tests/nemesis_txn.rs `streams_eos_word_count_...`).
 *
 *   java io.sluice.reftest.StreamsEos <bootstrap> <prefix> <records> <state-dir>
 *
 * 1. Creates `<prefix>-in` and `<prefix>-out` (3 partitions, RF 3, min.insync.replicas 2).
 * 2. An idempotent producer writes <records> records to the input, about 500 a second while
 *    the app runs (then prints `PRODUCED <records>`): key "k<i>", value the word "w<i % WORDS>",
 *    so each word's expected count is known up front.
 * 3. Starts the Streams app (application.id <prefix>-app): stream(in).groupBy(word).count()
 *    (a repartition topic, a RocksDB store and its changelog, all RF 3) .toStream().to(out).
 *    Small polls and a short commit interval spread the work over many transactions.
 * 4. A read_committed consumer follows the output. Every second: `PROGRESS <sum of the latest
 *    count of each word>`. Checks as it reads: a word's count never exceeds its expected count
 *    (a duplicate would) and never goes down (an aborted or half-applied update would).
 * 5. When every word's latest count is exactly its expected count: `RESULT OK words=<n>
 *    updates=<n>`, exit 0. A check failing, or no result within the result wait (RESULT_WAIT,
 *    or twice the input's feeding time when that is longer): `RESULT FAIL
 *    <why>`, exit 1. Streams state changes and thread exceptions are printed as `STATE ...` and
 *    `STREAMS_ERROR ...` (a thread that dies is replaced, as a production app configures).
 *
 * The test owns the nodes: it reads PROGRESS, kills a node in the middle, restarts it.
 */
package io.sluice.reftest;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

public final class StreamsEos {
    private static final int PARTITIONS = 3;
    private static final short REPLICATION = 3;
    /** Distinct words: record i carries word w(i % WORDS). */
    private static final int WORDS = 20;
    /** How long the app may take to reach the exact counts (a broker kill included). */
    private static final Duration RESULT_WAIT = Duration.ofSeconds(240);
    /** Input pace: FEED_BATCH records, then FEED_PAUSE_MS (about 500 records a second). */
    private static final int FEED_BATCH = 50;
    private static final long FEED_PAUSE_MS = 100;

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: StreamsEos <bootstrap> <prefix> <records> <state-dir>");
            System.exit(2);
        }
        String bootstrap = args[0];
        String input = args[1] + "-in";
        String output = args[1] + "-out";
        String appId = args[1] + "-app";
        int records = Integer.parseInt(args[2]);
        String stateDir = args[3];
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);

        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String t : List.of(input, output)) {
                topics.add(new NewTopic(t, PARTITIONS, REPLICATION).configs(Map.of("min.insync.replicas", "2")));
            }
            admin.createTopics(topics).all().get();
        }

        Map<String, Long> expected = new HashMap<>();
        for (int i = 0; i < records; i++) {
            expected.merge("w" + (i % WORDS), 1L, Long::sum);
        }
        // The input is written while the app runs, at a steady pace, so the test's kill lands
        // in the middle of the work.
        Thread feeder = new Thread(() -> feed(bootstrap, input, records, out), "feeder");
        feeder.setDaemon(true);
        feeder.start();

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, (int) REPLICATION);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), 20);
        props.put(StreamsConfig.topicPrefix("min.insync.replicas"), "2");
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> out.println("STATE " + before + " -> " + now));
        streams.setUncaughtExceptionHandler(e -> {
            out.println("STREAMS_ERROR " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        streams.start();

        int code = follow(bootstrap, output, expected, out);
        streams.close(Duration.ofSeconds(30));
        System.exit(code);
    }

    /** Writes the input with an idempotent acks=all producer, FEED_BATCH records at a time. */
    private static void feed(String bootstrap, String input, int records, PrintStream out) {
        Properties producerProps = new Properties();
        producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
            for (int i = 0; i < records; i++) {
                producer.send(new ProducerRecord<>(input, "k" + i, "w" + (i % WORDS)));
                if (i % FEED_BATCH == FEED_BATCH - 1) {
                    Thread.sleep(FEED_PAUSE_MS);
                }
            }
            producer.flush();
            out.println("PRODUCED " + records);
        } catch (Exception e) {
            out.println("RESULT FAIL feeder: " + e);
        }
    }

    /** Reads the output read_committed until the counts are exact; 0 on success. */
    /** RESULT_WAIT, or twice the input's feeding time at FEED_BATCH per FEED_PAUSE_MS. */
    private static Duration resultWait(long records) {
        Duration feeding = Duration.ofMillis(records / FEED_BATCH * FEED_PAUSE_MS);
        Duration twice = feeding.multipliedBy(2);
        return twice.compareTo(RESULT_WAIT) > 0 ? twice : RESULT_WAIT;
    }

    private static int follow(String bootstrap, String output, Map<String, Long> expected, PrintStream out) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class);
        Map<String, Long> latest = new HashMap<>();
        long updates = 0;
        Duration wait = resultWait(expected.values().stream().mapToLong(Long::longValue).sum());
        long deadline = System.nanoTime() + wait.toNanos();
        long lastProgress = 0;
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                tps.add(new TopicPartition(output, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                    updates++;
                    Long want = expected.get(r.key());
                    long prev = latest.getOrDefault(r.key(), 0L);
                    if (want == null || r.value() > want || r.value() < prev) {
                        out.println("RESULT FAIL " + r.key() + "=" + r.value() + " at " + r.partition() + "/"
                                + r.offset() + " after " + prev + ", expected at most " + want);
                        return 1;
                    }
                    latest.put(r.key(), r.value());
                }
                if (System.nanoTime() - lastProgress > 1_000_000_000L) {
                    lastProgress = System.nanoTime();
                    out.println("PROGRESS " + latest.values().stream().mapToLong(Long::longValue).sum());
                }
                if (latest.equals(expected)) {
                    out.println("RESULT OK words=" + latest.size() + " updates=" + updates);
                    return 0;
                }
            }
        }
        out.println("RESULT FAIL no exact counts within " + wait + ": " + latest + " expected " + expected);
        return 1;
    }
}
