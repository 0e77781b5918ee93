/*
 * KafkaProducer scenarios of the client suite: acks 0/1/all, idempotence, every compression
 * codec, headers, and records at and above the broker's max.message.bytes. Each one reads what
 * it wrote back with a KafkaConsumer and compares keys, values, headers and offsets.
 *
 * Owns: the producer side of ClientSuite. Does not own: the runner and helpers (ClientSuite).
 */
package io.sluice.reftest;

import static io.sluice.reftest.ClientSuite.bytes;
import static io.sluice.reftest.ClientSuite.check;
import static io.sluice.reftest.ClientSuite.checkEq;
import static io.sluice.reftest.ClientSuite.str;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;

final class ProducerScenarios {
    private static final int ACKS_RECORDS = 20;
    private static final int IDEMPOTENT_RECORDS = 300;
    private static final int IDEMPOTENT_PARTITIONS = 3;
    private static final int CODEC_RECORDS = 200;
    private static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    /** acks=0, 1 or all: 20 keyed records with a header on one partition, read back in order. */
    static String acks(String bootstrap, String acks) throws Exception {
        String topic = "java-acks-" + acks;
        ClientSuite.createTopic(bootstrap, topic, 1);
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap,
                ProducerConfig.ACKS_CONFIG, acks,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, String.valueOf(acks.equals("all")))) {
            for (int i = 0; i < ACKS_RECORDS; i++) {
                RecordHeaders h = new RecordHeaders();
                h.add("i", bytes(Integer.toString(i)));
                sent.add(p.send(new ProducerRecord<>(topic, 0, bytes("k" + i), bytes("v" + i), h)));
            }
            p.flush();
        }
        for (int i = 0; i < ACKS_RECORDS; i++) {
            RecordMetadata md = sent.get(i).get();
            if (acks.equals("0")) {
                // No response to acks=0: the client cannot know the offset.
                check(!md.hasOffset(), "acks=0 record %d has offset %d", i, md.offset());
            } else {
                checkEq((long) i, md.offset(), "acks=" + acks + " record " + i + " offset");
            }
        }
        List<ConsumerRecord<byte[], byte[]>> got = ClientSuite.readAll(bootstrap, topic, ACKS_RECORDS);
        for (int i = 0; i < ACKS_RECORDS; i++) {
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            checkEq((long) i, r.offset(), "offset of record " + i);
            checkEq("k" + i, str(r.key()), "key at offset " + i);
            checkEq("v" + i, str(r.value()), "value at offset " + i);
            checkEq(Integer.toString(i), str(r.headers().lastHeader("i").value()), "header at offset " + i);
        }
        return "acks=" + acks + " " + ACKS_RECORDS + " records read back in order";
    }

    /**
     * enable.idempotence=true (4.x's default, set explicitly), acks=all, 5 in flight: 300
     * records over 3 partitions, each read back exactly once, in send order per partition.
     */
    static String idempotent(String bootstrap) throws Exception {
        String topic = "java-idempotent";
        ClientSuite.createTopic(bootstrap, topic, IDEMPOTENT_PARTITIONS);
        Map<Integer, RecordMetadata> acked = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5",
                ProducerConfig.LINGER_MS_CONFIG, "2",
                ProducerConfig.BATCH_SIZE_CONFIG, "2048")) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < IDEMPOTENT_RECORDS; i++) {
                sent.add(p.send(new ProducerRecord<>(topic, bytes("key-" + (i % 17)), bytes(Integer.toString(i)))));
            }
            p.flush();
            for (int i = 0; i < IDEMPOTENT_RECORDS; i++) {
                acked.put(i, sent.get(i).get());
            }
        }
        List<ConsumerRecord<byte[], byte[]>> got = ClientSuite.readAll(bootstrap, topic, IDEMPOTENT_RECORDS);
        boolean[] seen = new boolean[IDEMPOTENT_RECORDS];
        Map<Integer, Integer> lastPerPartition = new HashMap<>();
        for (ConsumerRecord<byte[], byte[]> r : got) {
            int i = Integer.parseInt(str(r.value()));
            check(!seen[i], "record %d read twice", i);
            seen[i] = true;
            RecordMetadata md = acked.get(i);
            checkEq(md.partition(), r.partition(), "partition of record " + i);
            checkEq(md.offset(), r.offset(), "offset of record " + i);
            checkEq("key-" + (i % 17), str(r.key()), "key of record " + i);
            Integer last = lastPerPartition.put(r.partition(), i);
            check(last == null || last < i, "partition %d: record %d after %d", r.partition(), i, last);
        }
        return IDEMPOTENT_RECORDS + " records over " + lastPerPartition.size()
                + " partitions, each once, in order, at the acknowledged offsets";
    }

    /**
     * Every codec: 200 compressible records through compression.type=<codec>, read back equal;
     * then DescribeLogDirs shows the gzip/zstd partitions far smaller than the uncompressed one
     * (the broker kept the producer's compressed batches).
     */
    static String codecs(String bootstrap) throws Exception {
        Map<String, Long> sizes = new HashMap<>();
        for (String codec : CODECS) {
            String topic = "java-codec-" + codec;
            ClientSuite.createTopic(bootstrap, topic, 1);
            try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap,
                    ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                    ProducerConfig.LINGER_MS_CONFIG, "50",
                    ProducerConfig.BATCH_SIZE_CONFIG, "1000000")) {
                for (int i = 0; i < CODEC_RECORDS; i++) {
                    p.send(new ProducerRecord<>(topic, bytes("k" + i), bytes(codecValue(codec, i))));
                }
                p.flush();
            }
            List<ConsumerRecord<byte[], byte[]>> got = ClientSuite.readAll(bootstrap, topic, CODEC_RECORDS);
            for (int i = 0; i < CODEC_RECORDS; i++) {
                checkEq("k" + i, str(got.get(i).key()), codec + " key at offset " + i);
                checkEq(codecValue(codec, i), str(got.get(i).value()), codec + " value at offset " + i);
            }
        }
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            int node = admin.describeCluster().nodes().get().iterator().next().id();
            Map<String, LogDirDescription> dirs = admin.describeLogDirs(List.of(node)).allDescriptions().get().get(node);
            for (LogDirDescription dir : dirs.values()) {
                for (Map.Entry<TopicPartition, ReplicaInfo> e : dir.replicaInfos().entrySet()) {
                    if (e.getKey().topic().startsWith("java-codec-")) {
                        sizes.put(e.getKey().topic().substring("java-codec-".length()), e.getValue().size());
                    }
                }
            }
        }
        check(sizes.keySet().containsAll(Arrays.asList(CODECS)), "DescribeLogDirs sizes: %s", sizes);
        long plain = sizes.get("none");
        for (String codec : List.of("gzip", "zstd")) {
            check(sizes.get(codec) * 4 < plain, "%s partition is %d bytes, uncompressed %d", codec, sizes.get(codec), plain);
        }
        return "none, gzip, snappy, lz4, zstd: " + CODEC_RECORDS + " records each read back; log sizes " + sizes;
    }

    private static String codecValue(String codec, int i) {
        return (codec + " record " + i + " ").repeat(20);
    }

    /**
     * Headers survive as sent: repeated keys in order, a null header value, binary values, no
     * headers; also a null key, a null value (tombstone) and an empty value.
     */
    static String headers(String bootstrap) throws Exception {
        String topic = "java-headers";
        ClientSuite.createTopic(bootstrap, topic, 1);
        byte[] binary = new byte[256];
        for (int i = 0; i < binary.length; i++) {
            binary[i] = (byte) i;
        }
        List<Header[]> want = List.of(
                new Header[] {new RecordHeader("a", bytes("1")), new RecordHeader("a", bytes("2")),
                    new RecordHeader("b", bytes(""))},
                new Header[] {new RecordHeader("null-value", (byte[]) null), new RecordHeader("bin", binary)},
                new Header[] {},
                new Header[] {new RecordHeader("ünïcödé-key", bytes("välue"))});
        byte[][] keys = {bytes("k0"), null, bytes("k2"), bytes("k3")};
        byte[][] values = {bytes("v0"), bytes("v1"), null, new byte[0]};
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
            for (int i = 0; i < want.size(); i++) {
                p.send(new ProducerRecord<>(topic, 0, keys[i], values[i], new RecordHeaders(want.get(i)))).get();
            }
        }
        List<ConsumerRecord<byte[], byte[]>> got = ClientSuite.readAll(bootstrap, topic, want.size());
        for (int i = 0; i < want.size(); i++) {
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            check(Arrays.equals(keys[i], r.key()), "record %d key %s", i, str(r.key()));
            check(Arrays.equals(values[i], r.value()), "record %d value %s", i, str(r.value()));
            Header[] h = r.headers().toArray();
            checkEq(want.get(i).length, h.length, "record " + i + " header count");
            for (int j = 0; j < h.length; j++) {
                checkEq(want.get(i)[j].key(), h[j].key(), "record " + i + " header " + j + " key");
                check(Arrays.equals(want.get(i)[j].value(), h[j].value()), "record %d header %d value", i, j);
            }
        }
        return want.size() + " records: repeated, null, binary, unicode and no headers; null key, tombstone, empty value";
    }

    /**
     * A record just under the topic's max.message.bytes is stored and read back whole; one just
     * above it is refused by the broker (the client's own limit is raised out of the way) with
     * RecordTooLargeException, and the log end does not move.
     */
    static String largeRecords(String bootstrap) throws Exception {
        String topic = "java-large";
        int limit;
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            ClientSuite.createTopic(admin, topic, 1, Map.of());
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config config = admin.describeConfigs(List.of(res)).all().get().get(res);
            limit = Integer.parseInt(config.get("max.message.bytes").value());
        }
        checkEq(1048588, limit, "default max.message.bytes (Kafka's 1 MiB + 12)");
        // One uncompressed record in its own batch: 61 bytes of batch header, ~20 of record
        // framing and the 2-byte key.
        byte[] fits = new byte[limit - 200];
        byte[] tooBig = new byte[limit + 1];
        Arrays.fill(fits, (byte) 'f');
        Arrays.fill(tooBig, (byte) 't');
        long offset;
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap,
                ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Integer.toString(4 << 20),
                ProducerConfig.BUFFER_MEMORY_CONFIG, Integer.toString(16 << 20),
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "none")) {
            offset = p.send(new ProducerRecord<>(topic, 0, bytes("ok"), fits)).get().offset();
            RecordTooLargeException e = ClientSuite.expect(RecordTooLargeException.class,
                    () -> p.send(new ProducerRecord<>(topic, 0, bytes("no"), tooBig)).get(),
                    "a record of max.message.bytes + 1");
            check(e.getMessage() != null, "exception without a message");
            // The partition still takes records after the refusal.
            long next = p.send(new ProducerRecord<>(topic, 0, bytes("after"), bytes("small"))).get().offset();
            checkEq(offset + 1, next, "offset after the refused record");
        }
        List<ConsumerRecord<byte[], byte[]>> got = ClientSuite.readAll(bootstrap, topic, 2);
        check(Arrays.equals(fits, got.get(0).value()), "the large record came back %d bytes",
                got.get(0).value() == null ? -1 : got.get(0).value().length);
        checkEq("after", str(got.get(1).key()), "the record after the refused one");
        return "max.message.bytes=" + limit + ": " + fits.length + "-byte value stored and read back; "
                + tooBig.length + "-byte value refused with RecordTooLargeException";
    }

    private ProducerScenarios() {}
}
