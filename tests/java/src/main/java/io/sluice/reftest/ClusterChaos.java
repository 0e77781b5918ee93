/*
 * The Java client through leader failures (issue 14, sluice/tests/cluster_java.rs): an
 * idempotent acks=all KafkaProducer writes numbered records while the test kills and restarts
 * partition leaders; then a KafkaConsumer reads every partition from the beginning.
 *
 *   java io.sluice.reftest.ClusterChaos <bootstrap> <topic> <partitions>
 *
 * Record n goes to partition n % partitions with key and value "n". Phase 1 sends about 400
 * records a second until a line "STOP" arrives on stdin, then flushes and closes the producer.
 * A line "MARK" on stdin is answered with "MARK <n>": every record from n on was sent after
 * the MARK arrived (the test sends it right after a kill, to wait for acknowledgements that
 * only a new leader can have given).
 * Phase 2 reads every partition up to its end offset. Stdout, one event a line:
 *   MARK <n>                          the answer to MARK
 *   ACK <n> <partition> <offset>      the broker acknowledged record n (acks=all)
 *   NACK <n> <exception>              the producer gave record n up
 *   PRODUCED sent=<count> acked=<count> failed=<count>
 *   REC <partition> <offset> <n>      phase 2 read record n
 *   END records=<count>
 * The Rust side owns the processes and every check (all acknowledged records present at their
 * offsets, none twice, order per partition); this program only reports.
 */
package io.sluice.reftest;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

public final class ClusterChaos {
    /** Pause between sends: about 400 records a second, enough to see every failover. */
    private static final long SEND_PAUSE_MS = 2;
    /** How long phase 2 may take to reach the end offsets. */
    private static final Duration READ_WAIT = Duration.ofSeconds(120);

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: ClusterChaos <bootstrap> <topic> <partitions>");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);

        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong next = new AtomicLong();
        Thread stdin = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null && !line.trim().equals("STOP")) {
                    if (line.trim().equals("MARK")) {
                        synchronized (out) {
                            out.println("MARK " + next.get());
                            out.flush();
                        }
                    }
                }
            } catch (Exception e) {
                // A closed stdin stops the producer as STOP does.
            }
            stop.set(true);
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();

        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();

        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap,
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5",
                ProducerConfig.LINGER_MS_CONFIG, "5",
                ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000",
                ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "90000",
                ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "100",
                ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "1000",
                ProducerConfig.METADATA_MAX_AGE_CONFIG, "5000")) {
            while (!stop.get()) {
                final long n = next.getAndIncrement();
                byte[] v = Long.toString(n).getBytes(StandardCharsets.UTF_8);
                p.send(new ProducerRecord<>(topic, (int) (n % partitions), v, v), (md, e) -> {
                    synchronized (out) {
                        if (e == null) {
                            acked.incrementAndGet();
                            out.println("ACK " + n + " " + md.partition() + " " + md.offset());
                        } else {
                            failed.incrementAndGet();
                            out.println("NACK " + n + " " + e.getClass().getName() + ": " + e.getMessage());
                        }
                        out.flush();
                    }
                });
                Thread.sleep(SEND_PAUSE_MS);
            }
            p.flush();
        }
        synchronized (out) {
            out.println("PRODUCED sent=" + next.get() + " acked=" + acked.get() + " failed=" + failed.get());
            out.flush();
        }

        long read = 0;
        try (KafkaConsumer<byte[], byte[]> c = ClientSuite.consumer(bootstrap)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.nanoTime() + READ_WAIT.toNanos();
            while (!reached(c, end)) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("did not reach the end offsets " + end + " within " + READ_WAIT);
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    out.println("REC " + r.partition() + " " + r.offset() + " "
                            + new String(r.value(), StandardCharsets.UTF_8));
                    read++;
                }
            }
        }
        out.println("END records=" + read);
        out.flush();
        System.exit(0);
    }

    private static boolean reached(KafkaConsumer<byte[], byte[]> c, Map<TopicPartition, Long> end) {
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            if (c.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    private ClusterChaos() {}
}
