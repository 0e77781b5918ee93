/*
 * A Kafka Streams application with a state store, a repartition topic and a KTable-KTable
 * join, against a 3-node cluster (issue 16, sluice/tests/streams_app.rs). Two roles, each its
 * own JVM, so the test can SIGKILL the application and start it again:
 *
 *   java io.sluice.reftest.StreamsJoin driver <bootstrap> <prefix> <orders> <seed> <guarantee>
 *   java io.sluice.reftest.StreamsJoin app <bootstrap> <prefix> <guarantee> <state-dir>
 *
 * <guarantee> is a processing.guarantee: exactly_once_v2 or at_least_once.
 *
 * The topology (application.id <prefix>-app):
 *
 *   <prefix>-orders (key order id, value "customer,amount")
 *     .selectKey(customer) .groupByKey(Grouped.as("by-customer"))  -> <prefix>-app-by-customer-repartition
 *     .aggregate(count, sum) Materialized.as("totals")              -> <prefix>-app-totals-changelog
 *     .join(table(<prefix>-customers: key customer, value name) Materialized.as("customers"))
 *     .toStream() .to(<prefix>-customer-totals: key customer, value "name,count,sum")
 *
 * The driver:
 * 1. Creates `<prefix>-orders`, `<prefix>-customers` (compacted) and `<prefix>-customer-totals`
 *    (3 partitions, RF 3, min.insync.replicas 2), writes every customer's name, prints
 *    `READY customers=<n> orders=<n>`.
 * 2. Writes <orders> orders, about 500 a second (then `PRODUCED <n>`): order i goes to a
 *    customer and has an amount 1..100, both drawn from SplittableRandom(<seed>), so the final
 *    count and sum of each customer are known up front.
 * 3. Follows the output (read_committed for exactly_once_v2) and checks every update: the key is
 *    a customer, the name is its name, count and sum never above the final ones. With
 *    exactly_once_v2 each update is exact too: a customer's count goes up by exactly one, and the
 *    sum by one of that customer's order amounts not yet seen (a duplicate, a lost update or an
 *    aborted update seen would break it). Every second `PROGRESS <sum of the latest counts>`.
 *    `COUNTS <tag>` on stdin is answered `COUNTS <tag> <that sum now>`, so the test can wait
 *    for output written after a moment of its choosing.
 * 4. When every customer's latest value is exactly its final "name,count,sum" (and, with
 *    exactly_once_v2, the updates number the orders): `RESULT OK customers=<n> updates=<n>`;
 *    a check failing, or no result within RESULT_WAIT: `RESULT FAIL <why>`. Then it waits for
 *    stdin to close and exits 0 after OK, 1 after FAIL.
 *
 * The app runs the topology until stdin closes (then closes Streams cleanly and exits 0), or
 * until the test kills it. It prints `STATE <before> -> <now>`, `RESTORED <store> <partition>
 * <records>` when a store partition was restored from its changelog, and `STREAMS_ERROR ...`
 * (a dead thread is replaced). Streams purges the repartition topic through DeleteRecords every
 * PURGE_INTERVAL_MS after a commit; the test checks that with ListOffsets.
 */
package io.sluice.reftest;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

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
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;

public final class StreamsJoin {
    private static final int PARTITIONS = 3;
    private static final short REPLICATION = 3;
    private static final int CUSTOMERS = 30;
    private static final int AMOUNT_MAX = 100;
    /** How long the driver waits for the exact totals, from the start of the feed. */
    private static final Duration RESULT_WAIT = Duration.ofSeconds(240);
    /** Input pace: FEED_BATCH orders, then FEED_PAUSE_MS (about 500 orders a second). */
    private static final int FEED_BATCH = 50;
    private static final long FEED_PAUSE_MS = 100;
    /** Streams commits this often, and purges the repartition topic at most this often. */
    private static final int COMMIT_INTERVAL_MS = 200;
    private static final int PURGE_INTERVAL_MS = 1000;
    /** The app's group session: a killed app's partitions move on within it. */
    private static final int SESSION_TIMEOUT_MS = 6000;

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        if (args.length == 6 && args[0].equals("driver")) {
            System.exit(driver(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]),
                    exactlyOnce(args[5]), out));
        } else if (args.length == 5 && args[0].equals("app")) {
            app(args[1], args[2], exactlyOnce(args[3]), args[4], out);
        } else {
            System.err.println("usage: StreamsJoin driver <bootstrap> <prefix> <orders> <seed> <guarantee>\n"
                    + "       StreamsJoin app <bootstrap> <prefix> <guarantee> <state-dir>");
            System.exit(2);
        }
    }

    private static boolean exactlyOnce(String guarantee) {
        switch (guarantee) {
            case StreamsConfig.EXACTLY_ONCE_V2:
                return true;
            case StreamsConfig.AT_LEAST_ONCE:
                return false;
            default:
                throw new IllegalArgumentException("guarantee: " + guarantee);
        }
    }

    private static String ordersTopic(String prefix) {
        return prefix + "-orders";
    }

    private static String customersTopic(String prefix) {
        return prefix + "-customers";
    }

    private static String outputTopic(String prefix) {
        return prefix + "-customer-totals";
    }

    private static String customer(int j) {
        return "c" + j;
    }

    private static String name(int j) {
        return "name-" + j;
    }

    // ---- the app ----------------------------------------------------------------------------

    private static void app(String bootstrap, String prefix, boolean eos, String stateDir, PrintStream out)
            throws Exception {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, prefix + "-app");
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                eos ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, (int) REPLICATION);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, COMMIT_INTERVAL_MS);
        props.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, PURGE_INTERVAL_MS);
        // Every aggregate update goes downstream, so each order makes exactly one output update.
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), 50);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), SESSION_TIMEOUT_MS);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), SESSION_TIMEOUT_MS / 4);
        props.put(StreamsConfig.topicPrefix("min.insync.replicas"), "2");

        StreamsBuilder builder = new StreamsBuilder();
        KTable<String, String> names = builder.table(customersTopic(prefix),
                Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("customers")
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()));
        KTable<String, String> totals = builder.stream(ordersTopic(prefix), Consumed.with(Serdes.String(), Serdes.String()))
                .selectKey((orderId, order) -> order.split(",")[0])
                .groupByKey(Grouped.<String, String>as("by-customer")
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()))
                .aggregate(() -> "0,0", (customer, order, total) -> add(total, order),
                        Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("totals")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()));
        totals.join(names, (total, name) -> name + "," + total)
                .toStream()
                .to(outputTopic(prefix), Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> out.println("STATE " + before + " -> " + now));
        streams.setUncaughtExceptionHandler(e -> {
            out.println("STREAMS_ERROR " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                out.println("RESTORING " + store + " " + tp.partition() + " " + start + ".." + end);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long records) {
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long records) {
                out.println("RESTORED " + store + " " + tp.partition() + " " + records);
            }
        });
        streams.start();
        // Until the test closes stdin (a clean stop), or kills the JVM.
        InputStream in = System.in;
        while (in.read() >= 0) {
            // commands are not used; the app only watches for the end of its input
        }
        streams.close(Duration.ofSeconds(30));
        out.println("CLOSED");
        System.exit(0);
    }

    /** "count,sum" plus one order "customer,amount". */
    private static String add(String total, String order) {
        String[] t = total.split(",");
        long amount = Long.parseLong(order.split(",")[1]);
        return (Long.parseLong(t[0]) + 1) + "," + (Long.parseLong(t[1]) + amount);
    }

    // ---- the driver -------------------------------------------------------------------------

    /** A customer's expected final totals, and the amounts of its orders not yet seen. */
    private static final class Expected {
        final String name;
        long count;
        long sum;
        final Map<Long, Integer> unseen = new HashMap<>();

        Expected(String name) {
            this.name = name;
        }

        String value() {
            return name + "," + count + "," + sum;
        }
    }

    /** An order: customer index and amount. */
    private record Order(int customer, long amount) {
    }

    private static int driver(String bootstrap, String prefix, int orders, long seed, boolean eos, PrintStream out)
            throws Exception {
        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            List<NewTopic> topics = new ArrayList<>();
            topics.add(new NewTopic(ordersTopic(prefix), PARTITIONS, REPLICATION)
                    .configs(Map.of("min.insync.replicas", "2")));
            topics.add(new NewTopic(customersTopic(prefix), PARTITIONS, REPLICATION)
                    .configs(Map.of("min.insync.replicas", "2", "cleanup.policy", "compact")));
            topics.add(new NewTopic(outputTopic(prefix), PARTITIONS, REPLICATION)
                    .configs(Map.of("min.insync.replicas", "2")));
            admin.createTopics(topics).all().get();
        }

        SplittableRandom random = new SplittableRandom(seed);
        List<Order> input = new ArrayList<>(orders);
        Map<String, Expected> expected = new HashMap<>();
        for (int i = 0; i < orders; i++) {
            Order o = new Order(random.nextInt(CUSTOMERS), 1 + random.nextInt(AMOUNT_MAX));
            input.add(o);
            Expected e = expected.computeIfAbsent(customer(o.customer), k -> new Expected(name(o.customer)));
            e.count++;
            e.sum += o.amount;
            e.unseen.merge(o.amount, 1, Integer::sum);
        }

        KafkaProducer<String, String> producer = producer(bootstrap);
        for (int j = 0; j < CUSTOMERS; j++) {
            producer.send(new ProducerRecord<>(customersTopic(prefix), customer(j), name(j)));
        }
        producer.flush();
        out.println("READY customers=" + CUSTOMERS + " orders=" + orders);

        // The orders are written while the app runs, at a steady pace, so the test's faults
        // land in the middle of the work.
        Thread feeder = new Thread(() -> feed(producer, ordersTopic(prefix), input, out), "feeder");
        feeder.setDaemon(true);
        feeder.start();
        AtomicLong counts = new AtomicLong();
        CountDownLatch stdinClosed = new CountDownLatch(1);
        Thread commands = new Thread(() -> commands(counts, stdinClosed, out), "commands");
        commands.setDaemon(true);
        commands.start();
        int code = follow(bootstrap, outputTopic(prefix), expected, orders, eos, counts, out);
        // Until the test closes stdin: it checks the cluster while the driver is still here.
        stdinClosed.await();
        return code;
    }

    /** Answers `COUNTS <tag>` with `COUNTS <tag> <sum of the latest counts>` until stdin closes. */
    private static void commands(AtomicLong counts, CountDownLatch stdinClosed, PrintStream out) {
        try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (line.startsWith("COUNTS ")) {
                    out.println(line.trim() + " " + counts.get());
                } else {
                    out.println("UNKNOWN " + line);
                }
            }
        } catch (IOException e) {
            out.println("STDIN_ERROR " + e);
        }
        stdinClosed.countDown();
    }

    private static KafkaProducer<String, String> producer(String bootstrap) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        return new KafkaProducer<>(props);
    }

    /** Writes the orders, FEED_BATCH at a time, keyed by order id. */
    private static void feed(KafkaProducer<String, String> producer, String topic, List<Order> input,
            PrintStream out) {
        try (producer) {
            for (int i = 0; i < input.size(); i++) {
                Order o = input.get(i);
                producer.send(new ProducerRecord<>(topic, "o" + i, customer(o.customer) + "," + o.amount));
                if (i % FEED_BATCH == FEED_BATCH - 1) {
                    Thread.sleep(FEED_PAUSE_MS);
                }
            }
            producer.flush();
            out.println("PRODUCED " + input.size());
        } catch (Exception e) {
            out.println("RESULT FAIL feeder: " + e);
        }
    }

    /** Reads the output until every customer's totals are exact; 0 on success. */
    private static int follow(String bootstrap, String output, Map<String, Expected> expected, int orders,
            boolean eos, AtomicLong counts, PrintStream out) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, eos ? "read_committed" : "read_uncommitted");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        Map<String, long[]> latest = new HashMap<>();
        long updates = 0;
        long deadline = System.nanoTime() + RESULT_WAIT.toNanos();
        long lastProgress = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                tps.add(new TopicPartition(output, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    updates++;
                    String where = r.key() + "=" + r.value() + " at " + r.partition() + "/" + r.offset();
                    String bad = check(r.key(), r.value(), expected, latest, eos);
                    if (bad != null) {
                        out.println("RESULT FAIL " + where + ": " + bad);
                        return 1;
                    }
                }
                counts.set(latest.values().stream().mapToLong(v -> v[0]).sum());
                if (System.nanoTime() - lastProgress > 1_000_000_000L) {
                    lastProgress = System.nanoTime();
                    out.println("PROGRESS " + counts.get());
                }
                if (done(expected, latest)) {
                    if (eos && updates != orders) {
                        out.println("RESULT FAIL " + updates + " updates for " + orders + " orders");
                        return 1;
                    }
                    out.println("RESULT OK customers=" + latest.size() + " updates=" + updates);
                    return 0;
                }
            }
        }
        StringBuilder diff = new StringBuilder();
        for (Map.Entry<String, Expected> e : expected.entrySet()) {
            long[] got = latest.get(e.getKey());
            String have = got == null ? "none" : got[0] + "," + got[1];
            if (got == null || got[0] != e.getValue().count || got[1] != e.getValue().sum) {
                diff.append(' ').append(e.getKey()).append('=').append(have).append(" want ")
                        .append(e.getValue().value());
            }
        }
        out.println("RESULT FAIL no exact totals within " + RESULT_WAIT + ":" + diff);
        return 1;
    }

    /** Checks one output update against the expectation; null when it is fine, else why not. */
    private static String check(String key, String value, Map<String, Expected> expected, Map<String, long[]> latest,
            boolean eos) {
        Expected want = expected.get(key);
        if (want == null) {
            return "not a customer with orders";
        }
        String[] parts = value == null ? new String[0] : value.split(",");
        if (parts.length != 3 || !parts[0].equals(want.name)) {
            return "not \"" + want.name + ",count,sum\"";
        }
        long count = Long.parseLong(parts[1]);
        long sum = Long.parseLong(parts[2]);
        if (count > want.count || sum > want.sum) {
            return "above the final " + want.value();
        }
        long[] prev = latest.getOrDefault(key, new long[] {0, 0});
        if (eos) {
            long amount = sum - prev[1];
            Integer left = want.unseen.get(amount);
            if (count != prev[0] + 1 || left == null) {
                return "after " + prev[0] + "," + prev[1] + ": not one more order of this customer";
            }
            if (left == 1) {
                want.unseen.remove(amount);
            } else {
                want.unseen.put(amount, left - 1);
            }
        }
        latest.put(key, new long[] {count, sum});
        return null;
    }

    private static boolean done(Map<String, Expected> expected, Map<String, long[]> latest) {
        for (Map.Entry<String, Expected> e : expected.entrySet()) {
            long[] got = latest.get(e.getKey());
            if (got == null || got[0] != e.getValue().count || got[1] != e.getValue().sum) {
                return false;
            }
        }
        return true;
    }
}
