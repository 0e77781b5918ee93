/*
 * Transactions through Apache Kafka's own Java client and kafka-transactions tool (issue 15),
 * against one broker, every scenario in one JVM:
 *
 *   java io.sluice.reftest.TxnScenarios <bootstrap> [--prefix P] <scenario>...
 *
 * Scenarios:
 * - txn_commit_abort: commit, abort, commit on two partitions; read_committed sees the committed
 *   records only, read_uncommitted all of them; the offsets are Kafka's exact layout (one offset
 *   per transaction marker) and no marker comes out as a record.
 * - txn_send_offsets: consume-transform-produce with sendOffsetsToTransaction(offsets,
 *   consumer.groupMetadata()); an aborted transaction commits no offsets (the app seeks back and
 *   re-processes), committed ones do; the output holds each input record exactly once.
 * - txn_fencing: a second producer with the same transactional.id fences the first
 *   (ProducerFencedException on the first's next send/commit) and aborts its open transaction.
 * - txn_tools: kafka-transactions (org.apache.kafka.tools.TransactionsCommand, run in this JVM
 *   with Exit's procedure replaced): list, describe --transactional-id, describe-producers,
 *   find-hanging and abort --start-offset of an open transaction; afterwards the partition's
 *   last stable offset has moved past it.
 *
 * Output: one JSON object per line and scenario on stdout,
 * {"scenario":"...","status":"PASS"|"FAIL","ms":N,"detail":"..."}, then
 * {"done":true,"passed":N,"failed":N}; exit 1 when any failed, 2 on bad arguments. Every
 * scenario makes its own topics, groups and transactional ids (named after it).
 *
 * Owns: these scenarios. Does not own: the shared client helpers (ClientSuite).
 */
package io.sluice.reftest;

import static io.sluice.reftest.ClientSuite.bytes;
import static io.sluice.reftest.ClientSuite.check;
import static io.sluice.reftest.ClientSuite.checkEq;
import static io.sluice.reftest.ClientSuite.str;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.FinalizedVersionRange;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ApiException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.utils.Exit;
import org.apache.kafka.tools.TransactionsCommand;

public final class TxnScenarios {
    /** How long a read waits for the end of a topic. */
    static final Duration WAIT = ClientSuite.WAIT;
    /** The transaction timeout of every transactional producer here. */
    static final String TRANSACTION_TIMEOUT_MS = "60000";
    /** Starts every topic, group and transactional id name (--prefix; "java" by default). */
    static String prefix = "java";

    public static void main(String[] args) {
        Map<String, ClientSuite.Scenario> all = new LinkedHashMap<>();
        all.put("txn_commit_abort", TxnScenarios::commitAbort);
        all.put("txn_send_offsets", TxnScenarios::sendOffsets);
        all.put("txn_fencing", TxnScenarios::fencing);
        all.put("txn_tools", TxnScenarios::tools);
        if (args.length < 2) {
            System.err.println("usage: TxnScenarios <bootstrap> <scenario>...; scenarios: " + all.keySet());
            System.exit(2);
        }
        String bootstrap = args[0];
        List<String> names = Arrays.asList(args).subList(1, args.length);
        if (names.size() >= 2 && names.get(0).equals("--prefix")) {
            prefix = names.get(1);
            names = names.subList(2, names.size());
        }
        int failed = 0;
        for (String name : names) {
            ClientSuite.Scenario scenario = all.get(name);
            long start = System.nanoTime();
            String status;
            String detail;
            try {
                if (scenario == null) {
                    throw new IllegalArgumentException("unknown scenario; known: " + all.keySet());
                }
                detail = scenario.run(bootstrap);
                status = "PASS";
            } catch (Throwable t) {
                ByteArrayOutputStream trace = new ByteArrayOutputStream();
                t.printStackTrace(new PrintStream(trace, true, StandardCharsets.UTF_8));
                detail = trace.toString(StandardCharsets.UTF_8);
                status = "FAIL";
                failed++;
            }
            long ms = (System.nanoTime() - start) / 1_000_000;
            System.out.println("{\"scenario\":" + json(name) + ",\"status\":\"" + status + "\",\"ms\":" + ms
                + ",\"detail\":" + json(detail) + "}");
            System.out.flush();
        }
        System.out.println("{\"done\":true,\"passed\":" + (names.size() - failed) + ",\"failed\":" + failed + "}");
        System.out.flush();
        System.exit(failed == 0 ? 0 : 1);
    }

    // ---- scenarios -----------------------------------------------------------------------

    /** Commit 10, abort 10, commit 5 records on each of two partitions. */
    static String commitAbort(String bootstrap) throws Exception {
        String topic = prefix + "-txn-commit-abort";
        ClientSuite.createTopic(bootstrap, topic, 2);
        Map<Integer, List<Long>> offsets = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = transactional(bootstrap, prefix + "-txn-commit-abort")) {
            p.initTransactions();
            transaction(p, topic, "c1-", 10, true, offsets);
            transaction(p, topic, "a-", 10, false, offsets);
            transaction(p, topic, "c2-", 5, true, offsets);
        }
        for (int partition = 0; partition < 2; partition++) {
            // Each transaction is followed by its marker: c1 at 0-9, marker 10, a at 11-20,
            // marker 21, c2 at 22-26, marker 27.
            checkEq(range(0, 10, 11, 21, 22, 27), offsets.get(partition), "acknowledged offsets of p" + partition);
        }
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> committed = readToEnd(bootstrap, topic, "read_committed");
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> uncommitted = readToEnd(bootstrap, topic, "read_uncommitted");
        for (int partition = 0; partition < 2; partition++) {
            List<String> want = new ArrayList<>(values("c1-", partition, 10));
            want.addAll(values("c2-", partition, 5));
            checkEq(want, valuesOf(committed.get(partition)), "read_committed values of p" + partition);
            checkEq(range(0, 10, 22, 27), offsetsOf(committed.get(partition)), "read_committed offsets of p" + partition);
            List<String> all = new ArrayList<>(values("c1-", partition, 10));
            all.addAll(values("a-", partition, 10));
            all.addAll(values("c2-", partition, 5));
            checkEq(all, valuesOf(uncommitted.get(partition)), "read_uncommitted values of p" + partition);
            checkEq(offsets.get(partition), offsetsOf(uncommitted.get(partition)), "read_uncommitted offsets of p" + partition);
        }
        Map<TopicPartition, Long> ends = endOffsets(bootstrap, topic, "read_committed");
        checkEq(28L, ends.get(new TopicPartition(topic, 0)), "last stable offset of p0");
        // Kafka 4 finalizes transaction.version 2 (KIP-890 part 2), and this client then uses
        // it: every commit and abort bumps the producer epoch, so three ends leave epoch 3.
        String id = prefix + "-txn-commit-abort";
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            FinalizedVersionRange tv = admin.describeFeatures().featureMetadata().get()
                .finalizedFeatures().get("transaction.version");
            check(tv != null, "transaction.version is not finalized");
            checkEq((short) 2, tv.maxVersionLevel(), "finalized transaction.version");
            TransactionDescription d = admin.describeTransactions(List.of(id)).description(id).get();
            checkEq(3, (int) d.producerEpoch(), "producer epoch after 3 transactions (one bump per end)");
        }
        return "2 partitions: 15 committed + 10 aborted records each, markers at 10, 21, 27, LSO 28;"
            + " transaction.version 2, epoch 3 after 3 ends";
    }

    /** Consume-transform-produce of 30 records in batches of 10; the first batch aborts once. */
    static String sendOffsets(String bootstrap) throws Exception {
        String input = prefix + "-txn-offsets-in";
        String output = prefix + "-txn-offsets-out";
        String group = prefix + "-txn-offsets-app";
        int records = 30;
        ClientSuite.createTopic(bootstrap, input, 1);
        ClientSuite.createTopic(bootstrap, output, 1);
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
            for (int i = 0; i < records; i++) {
                p.send(new ProducerRecord<>(input, 0, bytes("k" + i), bytes("in-" + i)));
            }
            p.flush();
        }
        TopicPartition in = new TopicPartition(input, 0);
        int commits = 0;
        int aborts = 0;
        try (KafkaProducer<byte[], byte[]> p = transactional(bootstrap, prefix + "-txn-offsets-app");
             KafkaConsumer<byte[], byte[]> c = ClientSuite.consumer(bootstrap,
                 "group.id", group, "isolation.level", "read_committed", "max.poll.records", "10");
             Admin admin = ClientSuite.admin(bootstrap)) {
            p.initTransactions();
            c.subscribe(List.of(input));
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (committedOffset(admin, group, in) < records) {
                check(System.nanoTime() < deadline, "group %s stuck at %d of %d", group,
                    committedOffset(admin, group, in), records);
                ConsumerRecords<byte[], byte[]> batch = c.poll(ClientSuite.POLL);
                if (batch.isEmpty()) {
                    continue;
                }
                p.beginTransaction();
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    p.send(new ProducerRecord<>(output, 0, r.key(), bytes("out-" + str(r.value()).substring(3))));
                }
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                next.put(in, new OffsetAndMetadata(c.position(in)));
                p.sendOffsetsToTransaction(next, c.groupMetadata());
                if (aborts == 0) {
                    long before = committedOffset(admin, group, in);
                    p.flush();
                    p.abortTransaction();
                    aborts++;
                    checkEq(before, committedOffset(admin, group, in), "group offset after an aborted transaction");
                    c.seek(in, before < 0 ? 0 : before);
                } else {
                    p.commitTransaction();
                    commits++;
                    checkEq(c.position(in), committedOffset(admin, group, in), "group offset after a commit");
                }
            }
        }
        List<String> want = new ArrayList<>();
        for (int i = 0; i < records; i++) {
            want.add("out-" + i);
        }
        checkEq(want, valuesOf(readToEnd(bootstrap, output, "read_committed").get(0)), "read_committed output");
        int uncommitted = readToEnd(bootstrap, output, "read_uncommitted").get(0).size();
        checkEq(records + 10, uncommitted, "read_uncommitted output records (the aborted batch too)");
        return records + " records exactly once, " + commits + " commits, " + aborts + " abort, group offset " + records;
    }

    /** A second producer with the same transactional.id fences the first. */
    static String fencing(String bootstrap) throws Exception {
        String topic = prefix + "-txn-fencing";
        String id = prefix + "-txn-fencing";
        ClientSuite.createTopic(bootstrap, topic, 1);
        String fencedBy;
        try (KafkaProducer<byte[], byte[]> first = transactional(bootstrap, id);
             KafkaProducer<byte[], byte[]> second = transactional(bootstrap, id)) {
            first.initTransactions();
            first.beginTransaction();
            for (int i = 0; i < 5; i++) {
                first.send(new ProducerRecord<>(topic, 0, null, bytes("first-" + i)));
            }
            first.flush();
            // Bumps the epoch and aborts the first producer's open transaction.
            second.initTransactions();
            // Kafka answers the stale epoch's Produce with INVALID_PRODUCER_EPOCH, an abortable
            // error (KIP-588): the commit rethrows it, and the abort an application then tries
            // learns from EndTxn that the producer is fenced.
            Exception sendError = ClientSuite.expect(ApiException.class,
                () -> first.send(new ProducerRecord<>(topic, 0, null, bytes("first-late"))).get(),
                "the fenced producer's next send");
            check(sendError instanceof InvalidProducerEpochException || sendError instanceof ProducerFencedException,
                "the fenced producer's send: want InvalidProducerEpochException or ProducerFencedException, got %s",
                sendError);
            Exception commitError = ClientSuite.expect(KafkaException.class, first::commitTransaction,
                "the fenced producer's commit");
            ClientSuite.expect(ProducerFencedException.class, first::abortTransaction,
                "the fenced producer's abort");
            fencedBy = sendError.getClass().getSimpleName() + " on send, " + commitError.getClass().getSimpleName()
                + " on commit, ProducerFencedException on abort";
            second.beginTransaction();
            for (int i = 0; i < 3; i++) {
                second.send(new ProducerRecord<>(topic, 0, null, bytes("second-" + i)));
            }
            second.commitTransaction();
        }
        checkEq(List.of("second-0", "second-1", "second-2"),
            valuesOf(readToEnd(bootstrap, topic, "read_committed").get(0)), "read_committed after fencing");
        List<String> all = valuesOf(readToEnd(bootstrap, topic, "read_uncommitted").get(0));
        checkEq(List.of("first-0", "first-1", "first-2", "first-3", "first-4", "second-0", "second-1", "second-2"),
            all, "read_uncommitted after fencing");
        return "first producer got " + fencedBy + "; its 5 records aborted, the second's 3 committed";
    }

    /** kafka-transactions on an open transaction that starts at offset 2 of its partition. */
    static String tools(String bootstrap) throws Exception {
        String topic = prefix + "-txn-tools";
        String id = prefix + "-txn-tools";
        ClientSuite.createTopic(bootstrap, topic, 1);
        try (KafkaProducer<byte[], byte[]> plain = ClientSuite.producer(bootstrap)) {
            plain.send(new ProducerRecord<>(topic, 0, null, bytes("plain-0")));
            plain.send(new ProducerRecord<>(topic, 0, null, bytes("plain-1")));
            plain.flush();
        }
        String tp = topic + "-0";
        try (KafkaProducer<byte[], byte[]> p = transactional(bootstrap, id)) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>(topic, 0, null, bytes("open-" + i)));
            }
            p.flush();

            List<Map<String, String>> listed = tool(bootstrap, "list");
            Map<String, String> mine = only(listed, "TransactionalId", id, "list");
            checkEq("Ongoing", mine.get("TransactionState"), "list: state of " + id);

            Map<String, String> described = only(tool(bootstrap, "describe", "--transactional-id", id),
                "TransactionalId", id, "describe");
            checkEq("Ongoing", described.get("TransactionState"), "describe: state");
            checkEq(mine.get("ProducerId"), described.get("ProducerId"), "describe: producer id");
            checkEq(TRANSACTION_TIMEOUT_MS, described.get("TransactionTimeoutMs"), "describe: timeout");
            checkEq(tp, described.get("TopicPartitions"), "describe: partitions");

            Map<String, String> producer = only(
                tool(bootstrap, "describe-producers", "--topic", topic, "--partition", "0"),
                "ProducerId", mine.get("ProducerId"), "describe-producers");
            checkEq("2", producer.get("CurrentTransactionStartOffset"), "describe-producers: transaction start");
            checkEq("2", producer.get("LastSequence"), "describe-producers: last sequence");

            // Open but known to its coordinator (which lists the partition): not hanging.
            List<Map<String, String>> hanging = tool(bootstrap, "find-hanging", "--topic", topic,
                "--max-transaction-timeout", "0");
            checkEq(List.of(), hanging, "find-hanging while the coordinator tracks the transaction");

            tool(bootstrap, "abort", "--topic", topic, "--partition", "0", "--start-offset", "2");
            Map<String, String> after = only(
                tool(bootstrap, "describe-producers", "--topic", topic, "--partition", "0"),
                "ProducerId", mine.get("ProducerId"), "describe-producers after abort");
            checkEq("None", after.get("CurrentTransactionStartOffset"), "describe-producers after abort");
            // The abort marker (offset 5) ends the transaction: the LSO is the high watermark.
            checkEq(6L, endOffsets(bootstrap, topic, "read_committed").get(new TopicPartition(topic, 0)),
                "last stable offset after the abort");
            checkEq(List.of("plain-0", "plain-1"), valuesOf(readToEnd(bootstrap, topic, "read_committed").get(0)),
                "read_committed after the abort");
            p.abortTransaction();
        }
        return "list/describe/describe-producers saw the open transaction at offset 2; find-hanging none; "
            + "abort moved the LSO to 6";
    }

    // ---- helpers -------------------------------------------------------------------------

    static KafkaProducer<byte[], byte[]> transactional(String bootstrap, String transactionalId) {
        return ClientSuite.producer(bootstrap,
            ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId,
            ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, TRANSACTION_TIMEOUT_MS);
    }

    /** One transaction of `count` records to each of partitions 0 and 1; records their offsets. */
    static void transaction(KafkaProducer<byte[], byte[]> p, String topic, String prefix, int count, boolean commit,
                            Map<Integer, List<Long>> offsets) throws Exception {
        p.beginTransaction();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        for (int partition = 0; partition < 2; partition++) {
            for (String v : values(prefix, partition, count)) {
                sent.add(p.send(new ProducerRecord<>(topic, partition, null, bytes(v))));
            }
        }
        p.flush();
        for (Future<RecordMetadata> f : sent) {
            RecordMetadata md = f.get();
            offsets.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
        }
        if (commit) {
            p.commitTransaction();
        } else {
            p.abortTransaction();
        }
    }

    static List<String> values(String prefix, int partition, int count) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            out.add(prefix + partition + "-" + i);
        }
        return out;
    }

    /** [from0, to0) ++ [from1, to1) ++ ... as offsets. */
    static List<Long> range(long... bounds) {
        List<Long> out = new ArrayList<>();
        for (int i = 0; i < bounds.length; i += 2) {
            for (long o = bounds[i]; o < bounds[i + 1]; o++) {
                out.add(o);
            }
        }
        return out;
    }

    static List<String> valuesOf(List<ConsumerRecord<byte[], byte[]>> records) {
        List<String> out = new ArrayList<>();
        records.forEach(r -> out.add(str(r.value())));
        return out;
    }

    static List<Long> offsetsOf(List<ConsumerRecord<byte[], byte[]>> records) {
        List<Long> out = new ArrayList<>();
        records.forEach(r -> out.add(r.offset()));
        return out;
    }

    static Map<TopicPartition, Long> endOffsets(String bootstrap, String topic, String isolation) {
        try (KafkaConsumer<byte[], byte[]> c = ClientSuite.consumer(bootstrap, "isolation.level", isolation)) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            return c.endOffsets(tps);
        }
    }

    /**
     * Every record of `topic` under `isolation`, per partition, reading until each position
     * reaches the end offset (the LSO under read_committed, the high watermark otherwise).
     */
    static Map<Integer, List<ConsumerRecord<byte[], byte[]>>> readToEnd(String bootstrap, String topic,
                                                                       String isolation) {
        try (KafkaConsumer<byte[], byte[]> c = ClientSuite.consumer(bootstrap, "isolation.level", isolation)) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps);
            if (isolation.equals("read_committed")) {
                // Markers are written after EndTxn answers: wait until no transaction is open
                // (the last stable offset is the high watermark).
                Map<TopicPartition, Long> hw = endOffsets(bootstrap, topic, "read_uncommitted");
                long deadline = System.nanoTime() + WAIT.toNanos();
                while (!ends.equals(hw)) {
                    check(System.nanoTime() < deadline, "%s: last stable offsets %s stay below %s", topic, ends, hw);
                    ends = c.endOffsets(tps);
                }
            }
            Map<TopicPartition, Long> until = ends;
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
            tps.forEach(tp -> out.put(tp.partition(), new ArrayList<>()));
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (tps.stream().anyMatch(tp -> c.position(tp) < until.get(tp))) {
                check(System.nanoTime() < deadline, "reading %s (%s): positions short of %s", topic, isolation, until);
                c.poll(ClientSuite.POLL).forEach(r -> out.get(r.partition()).add(r));
            }
            return out;
        }
    }

    /**
     * The group's committed offset (-1 when none), asked with require_stable (KIP-447): while a
     * transaction's offsets await its marker the broker answers UNSTABLE_OFFSET_COMMIT and the
     * admin client retries, so the answer never predates a completed commit.
     */
    static long committedOffset(Admin admin, String group, TopicPartition tp) throws Exception {
        OffsetAndMetadata om = admin.listConsumerGroupOffsets(Map.of(group, new ListConsumerGroupOffsetsSpec()),
                new ListConsumerGroupOffsetsOptions().requireStable(true))
            .partitionsToOffsetAndMetadata(group).get().get(tp);
        return om == null ? -1 : om.offset();
    }

    /** Thrown by Exit's replaced procedure: the tool's exit status. */
    static final class ToolExit extends RuntimeException {
        final int status;

        ToolExit(int status, String message) {
            super("exit " + status + (message == null ? "" : ": " + message));
            this.status = status;
        }
    }

    /**
     * Runs kafka-transactions with `args` in this JVM and parses its table (a header line, then
     * whitespace-separated rows; no cell here contains a space). Fails unless it exits 0.
     */
    static synchronized List<Map<String, String>> tool(String bootstrap, String... args) throws Exception {
        String[] full = new String[args.length + 2];
        full[0] = "--bootstrap-server";
        full[1] = bootstrap;
        System.arraycopy(args, 0, full, 2, args.length);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        PrintStream stdout = System.out;
        PrintStream stderr = System.err;
        int status = -1;
        Exit.setExitProcedure((code, message) -> {
            throw new ToolExit(code, message);
        });
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            TransactionsCommand.main(full);
        } catch (ToolExit e) {
            status = e.status;
        } finally {
            System.setOut(stdout);
            System.setErr(stderr);
            Exit.resetExitProcedure();
        }
        String text = out.toString(StandardCharsets.UTF_8);
        check(status == 0, "kafka-transactions %s: exit %d\n%s%s", String.join(" ", args), status, text,
            err.toString(StandardCharsets.UTF_8));
        List<Map<String, String>> rows = new ArrayList<>();
        String[] lines = text.strip().split("\n");
        if (lines.length == 0 || lines[0].isBlank()) {
            return rows;
        }
        String[] header = lines[0].trim().split("\\s+");
        for (int i = 1; i < lines.length; i++) {
            String[] cells = lines[i].trim().split("\\s+");
            check(cells.length == header.length, "kafka-transactions %s: row %s does not match header %s",
                args[0], lines[i], lines[0]);
            Map<String, String> row = new LinkedHashMap<>();
            for (int c = 0; c < header.length; c++) {
                row.put(header[c], cells[c]);
            }
            rows.add(row);
        }
        return rows;
    }

    /** The one row whose `column` is `value`. */
    static Map<String, String> only(List<Map<String, String>> rows, String column, String value, String what) {
        List<Map<String, String>> hits = new ArrayList<>();
        rows.forEach(r -> {
            if (value.equals(r.get(column))) {
                hits.add(r);
            }
        });
        check(hits.size() == 1, "%s: want one row with %s=%s, got %s", what, column, value, rows);
        return hits.get(0);
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (ch < 0x20) {
                        b.append(String.format("\\u%04x", (int) ch));
                    } else {
                        b.append(ch);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
