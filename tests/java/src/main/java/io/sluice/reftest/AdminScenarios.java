/*
 * Admin scenarios of the client suite: topics (create, list, describe, add partitions, delete),
 * configs (describe, incrementalAlterConfigs then describe), listOffsets (earliest, latest,
 * timestamp, max-timestamp) around deleteRecords, describeCluster, describeLogDirs, and
 * electLeaders (which Sluice does not serve: the user's exact error is asserted).
 *
 * Owns: the Admin side of ClientSuite (group admin calls run in GroupScenarios, beside a live
 * group). Does not own: the runner and helpers (ClientSuite).
 */
package io.sluice.reftest;

import static io.sluice.reftest.ClientSuite.bytes;
import static io.sluice.reftest.ClientSuite.check;
import static io.sluice.reftest.ClientSuite.checkEq;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

final class AdminScenarios {
    /**
     * createTopics with configs (and again: TopicExistsException; a bad value:
     * InvalidConfigurationException), listTopics, describeTopics, describeConfigs,
     * incrementalAlterConfigs SET / DELETE / APPEND then describeConfigs, createPartitions (up,
     * and down: InvalidPartitionsException), deleteTopics.
     */
    static String topicsAndConfigs(String bootstrap) throws Exception {
        String topic = "java-admin-topic";
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            NewTopic t = new NewTopic(topic, 2, (short) 1).configs(Map.of("retention.ms", "3600000",
                    "segment.bytes", "10485760"));
            admin.createTopics(List.of(t)).all().get();
            ClientSuite.expect(TopicExistsException.class, () -> admin.createTopics(List.of(t)).all().get(),
                    "createTopics of an existing topic");
            ClientSuite.expect(InvalidConfigurationException.class, () -> admin.createTopics(List.of(
                    new NewTopic("java-admin-bad", 1, (short) 1).configs(Map.of("retention.ms", "soon"))))
                    .all().get(), "createTopics with retention.ms=soon");

            Set<String> names = admin.listTopics().names().get();
            check(names.contains(topic), "listTopics: %s", names);
            check(!names.contains("java-admin-bad"), "listTopics lists the refused topic: %s", names);

            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            checkEq(2, d.partitions().size(), "partitions described");
            check(!d.topicId().equals(Uuid.ZERO_UUID), "topic id is zero");
            check(!d.isInternal(), "topic described as internal");
            for (TopicPartitionInfo p : d.partitions()) {
                check(p.leader() != null && p.leader().id() >= 0, "partition %d leader %s", p.partition(), p.leader());
                checkEq(1, p.replicas().size(), "replicas of partition " + p.partition());
                checkEq(p.replicas(), p.isr(), "isr of partition " + p.partition());
            }

            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config c = describe(admin, res);
            checkEntry(c, "retention.ms", "3600000", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG);
            checkEntry(c, "segment.bytes", "10485760", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG);
            checkEntry(c, "cleanup.policy", "delete", null);
            check(c.get("cleanup.policy").isDefault(), "cleanup.policy not default: %s", c.get("cleanup.policy"));

            Collection<AlterConfigOp> ops = List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("segment.bytes", null), AlterConfigOp.OpType.DELETE),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET));
            admin.incrementalAlterConfigs(Map.of(res, ops)).all().get();
            c = describe(admin, res);
            checkEntry(c, "retention.ms", "7200000", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG);
            checkEntry(c, "max.message.bytes", "2000000", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG);
            check(c.get("segment.bytes").isDefault(), "segment.bytes after DELETE: %s", c.get("segment.bytes"));
            check(!"10485760".equals(c.get("segment.bytes").value()), "segment.bytes kept after DELETE");
            ClientSuite.expect(InvalidConfigurationException.class, () -> admin.incrementalAlterConfigs(Map.of(res,
                    List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "-7"), AlterConfigOp.OpType.SET))))
                    .all().get(), "incrementalAlterConfigs retention.ms=-7");
            checkEntry(describe(admin, res), "retention.ms", "7200000", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG);

            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
            d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            checkEq(3, d.partitions().size(), "partitions after createPartitions(3)");
            ClientSuite.expect(InvalidPartitionsException.class,
                    () -> admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all().get(),
                    "createPartitions down to 2");

            admin.deleteTopics(List.of(topic)).all().get();
            ClientSuite.expect(UnknownTopicOrPartitionException.class,
                    () -> admin.describeTopics(List.of(topic)).allTopicNames().get(), "describeTopics after delete");
        }
        return "create (exists, bad config refused), list, describe, describeConfigs, incrementalAlterConfigs "
                + "SET/DELETE (bad value refused), createPartitions 2->3 (3->2 refused), delete";
    }

    /**
     * listOffsets earliest / latest / forTimestamp / maxTimestamp on 10 records whose timestamps
     * rise by 1 s except record 7 (far in the future of the others); deleteRecords before 4
     * moves the earliest offset (the log start) to 4.
     */
    static String offsetsAndDeleteRecords(String bootstrap) throws Exception {
        String topic = "java-admin-offsets";
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 600_000;
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            ClientSuite.createTopic(admin, topic, 1, Map.of());
            checkEq(0L, offset(admin, tp, OffsetSpec.latest()).offset(), "latest of an empty partition");
            try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
                for (int i = 0; i < 10; i++) {
                    long ts = i == 7 ? base + 100_000 : base + i * 1000L;
                    p.send(new ProducerRecord<>(topic, 0, ts, bytes("k" + i), bytes("v" + i))).get();
                }
            }
            checkEq(0L, offset(admin, tp, OffsetSpec.earliest()).offset(), "earliest");
            checkEq(10L, offset(admin, tp, OffsetSpec.latest()).offset(), "latest");
            ListOffsetsResultInfo at = offset(admin, tp, OffsetSpec.forTimestamp(base + 2500));
            checkEq(3L, at.offset(), "forTimestamp(base + 2.5 s) offset");
            checkEq(base + 3000, at.timestamp(), "forTimestamp(base + 2.5 s) timestamp");
            // The first record at or after the time in offset order: record 7 (base + 100 s).
            checkEq(7L, offset(admin, tp, OffsetSpec.forTimestamp(base + 7500)).offset(), "forTimestamp(base + 7.5 s)");
            ListOffsetsResultInfo max = offset(admin, tp, OffsetSpec.maxTimestamp());
            checkEq(7L, max.offset(), "maxTimestamp offset");
            checkEq(base + 100_000, max.timestamp(), "maxTimestamp timestamp");
            checkEq(-1L, offset(admin, tp, OffsetSpec.forTimestamp(base + 200_000)).offset(),
                    "forTimestamp after every record");

            long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp).get()
                    .lowWatermark();
            checkEq(4L, low, "deleteRecords low watermark");
            checkEq(4L, offset(admin, tp, OffsetSpec.earliest()).offset(), "earliest after deleteRecords");
            checkEq(10L, offset(admin, tp, OffsetSpec.latest()).offset(), "latest after deleteRecords");
            checkEq(4L, offset(admin, tp, OffsetSpec.forTimestamp(base)).offset(),
                    "forTimestamp(a deleted record's time) after deleteRecords");
            ClientSuite.expect(org.apache.kafka.common.errors.OffsetOutOfRangeException.class,
                    () -> admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(11))).all().get(),
                    "deleteRecords beyond the log end");
        }
        return "earliest 0, latest 10, forTimestamp 3 and 7, maxTimestamp 7; deleteRecords(4): low watermark 4, "
                + "earliest 4; beyond the end refused";
    }

    /** describeCluster: one broker, a controller, a cluster id; describeLogDirs: the partition. */
    static String clusterAndLogDirs(String bootstrap) throws Exception {
        String topic = "java-admin-logdirs";
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = cluster.nodes().get();
            checkEq(1, nodes.size(), "brokers " + nodes);
            Node node = nodes.iterator().next();
            checkEq(bootstrap, node.host() + ":" + node.port(), "the broker's address");
            Node controller = cluster.controller().get();
            check(controller != null && !controller.isEmpty(), "controller %s", controller);
            String clusterId = cluster.clusterId().get();
            check(clusterId != null && !clusterId.isEmpty(), "cluster id %s", clusterId);

            ClientSuite.createTopic(admin, topic, 1, Map.of());
            try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
                p.send(new ProducerRecord<>(topic, 0, bytes("k"), bytes("v".repeat(1000)))).get();
            }
            Map<String, LogDirDescription> dirs =
                    admin.describeLogDirs(List.of(node.id())).allDescriptions().get().get(node.id());
            check(dirs != null && !dirs.isEmpty(), "no log dirs for broker %d", node.id());
            ReplicaInfo replica = null;
            for (Map.Entry<String, LogDirDescription> e : dirs.entrySet()) {
                check(e.getValue().error() == null, "log dir %s: %s", e.getKey(), e.getValue().error());
                ReplicaInfo r = e.getValue().replicaInfos().get(new TopicPartition(topic, 0));
                if (r != null) {
                    replica = r;
                }
            }
            check(replica != null, "describeLogDirs does not list %s-0: %s", topic, dirs);
            check(replica.size() > 1000, "size of %s-0: %d", topic, replica.size());
            check(!replica.isFuture(), "%s-0 is a future replica", topic);
            return "1 broker at " + bootstrap + ", controller " + controller.id() + ", cluster id " + clusterId
                    + "; " + dirs.size() + " log dir(s), " + topic + "-0 " + replica.size() + " bytes";
        }
    }

    /**
     * electLeaders(PREFERRED) of a single-replica partition whose leader is already the
     * preferred one. Apache Kafka answers ELECTION_NOT_NEEDED (ElectionNotNeededException);
     * Sluice does not implement ElectLeaders (API 43; it balances preferred leaders itself), so
     * the user gets UnsupportedVersionException, as from any broker that does not list the API
     * (docs/status.md). `supported` picks which of the two this run requires.
     */
    static String electLeaders(String bootstrap, boolean supported) throws Exception {
        String topic = "java-admin-elect";
        try (Admin admin = ClientSuite.admin(bootstrap)) {
            ClientSuite.createTopic(admin, topic, 1, Map.of());
            Set<TopicPartition> partitions = Set.of(new TopicPartition(topic, 0));
            Class<? extends Exception> want =
                    supported ? ElectionNotNeededException.class : UnsupportedVersionException.class;
            Exception e = ClientSuite.expect(want,
                    () -> admin.electLeaders(ElectionType.PREFERRED, partitions).all().get(),
                    "electLeaders(PREFERRED)");
            return "electLeaders(PREFERRED): " + e.getClass().getSimpleName() + ": " + e.getMessage();
        }
    }

    private static Config describe(Admin admin, ConfigResource res) throws Exception {
        return admin.describeConfigs(List.of(res)).all().get().get(res);
    }

    private static void checkEntry(Config c, String name, String value, ConfigEntry.ConfigSource source) {
        ConfigEntry e = c.get(name);
        check(e != null, "describeConfigs has no %s", name);
        checkEq(value, e.value(), name);
        if (source != null) {
            checkEq(source, e.source(), name + " source");
        }
    }

    private static ListOffsetsResultInfo offset(Admin admin, TopicPartition tp, OffsetSpec spec) throws Exception {
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get();
    }

    private AdminScenarios() {}
}
