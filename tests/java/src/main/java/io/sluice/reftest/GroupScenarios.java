/*
 * KafkaConsumer scenarios of the client suite: a consumer group of two members under the
 * classic protocol and under KIP-848 (group.protocol=consumer) splitting the partitions,
 * committing, and a new member resuming from the commits; the group as Admin sees it
 * (listGroups, describeConsumerGroups, listConsumerGroupOffsets); seeking by timestamp.
 *
 * Owns: the consumer side of ClientSuite. Does not own: the runner and helpers (ClientSuite).
 */
package io.sluice.reftest;

import static io.sluice.reftest.ClientSuite.bytes;
import static io.sluice.reftest.ClientSuite.check;
import static io.sluice.reftest.ClientSuite.checkEq;
import static io.sluice.reftest.ClientSuite.str;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;

final class GroupScenarios {
    private static final int PARTITIONS = 4;
    private static final int FIRST_PER_PARTITION = 10;
    private static final int SECOND_PER_PARTITION = 5;

    /**
     * Two members of one group (group.protocol = `protocol`) split the 4 partitions between
     * them (disjoint, both non-empty, all covered), read 40 records each exactly once from their
     * own partitions and commit; Admin lists and describes the group with both members and
     * their assignments and lists the committed offsets. After both leave, 20 more records are
     * written and a new member of the group reads exactly those: it resumed at the commits.
     */
    static String splitCommitResume(String bootstrap, String protocol) throws Exception {
        String topic = "java-group-" + protocol;
        String group = "java-group-" + protocol;
        ClientSuite.createTopic(bootstrap, topic, PARTITIONS);
        String[] settings = {
            ConsumerConfig.GROUP_ID_CONFIG, group,
            ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol,
        };
        Set<TopicPartition> all = new HashSet<>();
        for (int p = 0; p < PARTITIONS; p++) {
            all.add(new TopicPartition(topic, p));
        }
        String groupSeen;
        try (KafkaConsumer<byte[], byte[]> c1 = ClientSuite.consumer(bootstrap, with(settings, "c1"));
                KafkaConsumer<byte[], byte[]> c2 = ClientSuite.consumer(bootstrap, with(settings, "c2"));
                Admin admin = ClientSuite.admin(bootstrap)) {
            c1.subscribe(List.of(topic));
            c2.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> early = new ArrayList<>();
            long deadline = System.nanoTime() + ClientSuite.WAIT.toNanos();
            while (!split(c1.assignment(), c2.assignment(), all)) {
                check(System.nanoTime() < deadline, "%s group did not split %s: c1 %s, c2 %s",
                        protocol, all, c1.assignment(), c2.assignment());
                c1.poll(ClientSuite.POLL).forEach(early::add);
                c2.poll(ClientSuite.POLL).forEach(early::add);
            }
            check(early.isEmpty(), "records before any were written: %d", early.size());
            Set<TopicPartition> a1 = Set.copyOf(c1.assignment());
            Set<TopicPartition> a2 = Set.copyOf(c2.assignment());

            produce(bootstrap, topic, 0, FIRST_PER_PARTITION);
            Map<String, ConsumerRecord<byte[], byte[]>> seen = new HashMap<>();
            deadline = System.nanoTime() + ClientSuite.WAIT.toNanos();
            while (seen.size() < PARTITIONS * FIRST_PER_PARTITION) {
                check(System.nanoTime() < deadline, "read %d of %d records", seen.size(), PARTITIONS * FIRST_PER_PARTITION);
                take(c1.poll(ClientSuite.POLL), a1, seen, "c1");
                take(c2.poll(ClientSuite.POLL), a2, seen, "c2");
            }
            checkEq(a1, c1.assignment(), "c1's assignment while reading");
            checkEq(a2, c2.assignment(), "c2's assignment while reading");
            c1.commitSync();
            c2.commitSync();
            for (TopicPartition tp : a1) {
                checkEq(new OffsetAndMetadata(FIRST_PER_PARTITION).offset(),
                        c1.committed(Set.of(tp)).get(tp).offset(), "c1 committed " + tp);
            }

            groupSeen = describeGroup(admin, group, protocol, Map.of("c1", a1, "c2", a2), all);
            // Keep both members alive while Admin looked: a poll each, then leave.
            c1.poll(java.time.Duration.ZERO);
            c2.poll(java.time.Duration.ZERO);
        }

        produce(bootstrap, topic, FIRST_PER_PARTITION, SECOND_PER_PARTITION);
        Map<String, ConsumerRecord<byte[], byte[]>> resumed = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c3 = ClientSuite.consumer(bootstrap, with(settings, "c3"))) {
            c3.subscribe(List.of(topic));
            long deadline = System.nanoTime() + ClientSuite.WAIT.toNanos();
            while (resumed.size() < PARTITIONS * SECOND_PER_PARTITION) {
                check(System.nanoTime() < deadline, "resumed member read %d of %d: %s",
                        resumed.size(), PARTITIONS * SECOND_PER_PARTITION, resumed.keySet());
                take(c3.poll(ClientSuite.POLL), all, resumed, "c3");
            }
            // A short extra poll: nothing from before the commits may follow.
            take(c3.poll(java.time.Duration.ofMillis(300)), all, resumed, "c3");
            checkEq(PARTITIONS * SECOND_PER_PARTITION, resumed.size(), "records read by the resumed member");
            for (ConsumerRecord<byte[], byte[]> r : resumed.values()) {
                check(r.offset() >= FIRST_PER_PARTITION, "resumed member read %s at offset %d (before the commit)",
                        str(r.value()), r.offset());
            }
            c3.commitSync();
        }
        return "group.protocol=" + protocol + ": split " + PARTITIONS + " partitions 2+2, read "
                + PARTITIONS * FIRST_PER_PARTITION + " once, committed, resumed with exactly the "
                + PARTITIONS * SECOND_PER_PARTITION + " new records; admin: " + groupSeen;
    }

    /**
     * listGroups (consumer groups) names the group with its type; describeConsumerGroups shows
     * it Stable with the two members and exactly their assignments; listConsumerGroupOffsets
     * returns the committed offsets.
     */
    private static String describeGroup(Admin admin, String group, String protocol,
            Map<String, Set<TopicPartition>> members, Set<TopicPartition> all) throws Exception {
        GroupType type = protocol.equals("consumer") ? GroupType.CONSUMER : GroupType.CLASSIC;
        GroupListing listing = null;
        for (GroupListing l : admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get()) {
            if (l.groupId().equals(group)) {
                listing = l;
            }
        }
        check(listing != null, "listGroups does not name %s", group);
        checkEq(java.util.Optional.of(type), listing.type(), "listGroups type of " + group);

        ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
        checkEq(type, d.type(), "describeConsumerGroups type");
        checkEq(GroupState.STABLE, d.groupState(), "describeConsumerGroups state");
        checkEq(members.size(), d.members().size(), "member count " + d.members());
        for (MemberDescription m : d.members()) {
            Set<TopicPartition> want = members.get(m.clientId());
            check(want != null, "member with client id %s: %s", m.clientId(), d.members());
            checkEq(want, m.assignment().topicPartitions(), "assignment of " + m.clientId());
        }

        Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        checkEq(all, offsets.keySet(), "partitions with committed offsets");
        for (OffsetAndMetadata o : offsets.values()) {
            checkEq((long) FIRST_PER_PARTITION, o.offset(), "committed offset");
        }
        return "type " + d.type() + ", state " + d.groupState() + ", assignor " + d.partitionAssignor()
                + ", 2 members, committed " + FIRST_PER_PARTITION + " on " + offsets.size() + " partitions";
    }

    /**
     * offsetsForTimes finds the first record at or after a timestamp; seek there and poll
     * returns it; a time after the last record has no offset.
     */
    static String seekByTimestamp(String bootstrap) throws Exception {
        String topic = "java-timestamps";
        ClientSuite.createTopic(bootstrap, topic, 1);
        long base = System.currentTimeMillis() - 600_000;
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, 0, base + i * 1000L, bytes("k" + i), bytes("v" + i)));
            }
            p.flush();
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> c = ClientSuite.consumer(bootstrap)) {
            c.assign(List.of(tp));
            OffsetAndTimestamp at = c.offsetsForTimes(Map.of(tp, base + 5500)).get(tp);
            check(at != null, "no offset for a time inside the log");
            checkEq(6L, at.offset(), "offsetsForTimes(base + 5.5 s) offset");
            checkEq(base + 6000, at.timestamp(), "offsetsForTimes(base + 5.5 s) timestamp");
            checkEq(0L, c.offsetsForTimes(Map.of(tp, base - 1)).get(tp).offset(), "offsetsForTimes(before all)");
            checkEq(null, c.offsetsForTimes(Map.of(tp, base + 60_000)).get(tp), "offsetsForTimes(after all)");
            c.seek(tp, at.offset());
            List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
            long deadline = System.nanoTime() + ClientSuite.WAIT.toNanos();
            while (got.size() < 4) {
                check(System.nanoTime() < deadline, "read %d records after the seek", got.size());
                c.poll(ClientSuite.POLL).forEach(got::add);
            }
            checkEq(4, got.size(), "records from offset 6 on");
            for (int i = 0; i < 4; i++) {
                checkEq(6L + i, got.get(i).offset(), "offset after seek");
                checkEq("v" + (6 + i), str(got.get(i).value()), "value after seek");
                checkEq(base + (6 + i) * 1000L, got.get(i).timestamp(), "timestamp after seek");
            }
        }
        return "offsetsForTimes(+5.5 s)=6, before all=0, after all=none; seek(6) read 6..9 with their timestamps";
    }

    private static void take(Iterable<ConsumerRecord<byte[], byte[]>> records, Set<TopicPartition> owned,
            Map<String, ConsumerRecord<byte[], byte[]>> seen, String who) {
        for (ConsumerRecord<byte[], byte[]> r : records) {
            TopicPartition tp = new TopicPartition(r.topic(), r.partition());
            check(owned.contains(tp), "%s read %s from %s, not its partition (%s)", who, str(r.value()), tp, owned);
            ConsumerRecord<byte[], byte[]> before = seen.put(str(r.value()), r);
            check(before == null, "%s read %s twice", who, str(r.value()));
            checkEq("p" + r.partition() + "-" + r.offset(), str(r.value()), "value at " + tp + "@" + r.offset());
        }
    }

    /** `perPartition` records on each partition, values "p<partition>-<offset>". */
    private static void produce(String bootstrap, String topic, int firstOffset, int perPartition) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = ClientSuite.producer(bootstrap)) {
            for (int part = 0; part < PARTITIONS; part++) {
                for (int i = 0; i < perPartition; i++) {
                    String v = "p" + part + "-" + (firstOffset + i);
                    p.send(new ProducerRecord<>(topic, part, bytes(v), bytes(v)));
                }
            }
            p.flush();
        }
    }

    private static boolean split(Set<TopicPartition> a, Set<TopicPartition> b, Set<TopicPartition> all) {
        Set<TopicPartition> union = new HashSet<>(a);
        union.addAll(b);
        return !a.isEmpty() && !b.isEmpty() && a.size() + b.size() == all.size() && union.equals(all);
    }

    private static String[] with(String[] settings, String clientId) {
        String[] out = java.util.Arrays.copyOf(settings, settings.length + 2);
        out[settings.length] = ConsumerConfig.CLIENT_ID_CONFIG;
        out[settings.length + 1] = clientId;
        return out;
    }

    private GroupScenarios() {}
}
