#!/usr/bin/env python3
"""confluent-kafka's AdminClient against a Kafka-compatible broker: the topic admin APIs of
issue 3, each checked the way an operator's tool would see it.

  1. CreateTopics with a config (retention.ms), then again: TOPIC_ALREADY_EXISTS.
  2. DescribeConfigs: the set value, and Kafka's defaults for a few others.
  3. IncrementalAlterConfigs SET and DELETE, seen by DescribeConfigs.
  4. CreatePartitions 3 -> 5, seen by Metadata; records produced to a new partition are read.
  5. DeleteRecords below offset 50 of partition 0: low watermark 50, reads start there; a
     fetch at 10 is OFFSET_OUT_OF_RANGE (reset to 50, or reported with auto.offset.reset=error).
  6. DescribeCluster: one node, a controller, a cluster id.
  7. DeleteTopics: gone from Metadata; deleting again: UNKNOWN_TOPIC_OR_PART.
  8. The same name created again is a new, empty topic: offsets from 0, none of the old records.
  9. A record over the topic's max.message.bytes: MSG_SIZE_TOO_LARGE, and the partition still
     takes records after it.
 10. message.timestamp.after.max.ms=60000: a record an hour in the future gets INVALID_TIMESTAMP.
With --log-append-time instead: message.timestamp.type=LogAppendTime, the broker stamps its own
time (the batch rewritten, CRC and all); consumers see LogAppendTime within the produce window.

Prints "SUMMARY ... OK" and exits 0, or "FAIL: ..." on stderr and exits 1.

  confluent_admin_client.py --bootstrap 127.0.0.1:9092 --topic t
"""

import argparse
import sys
import time

import common
from common import Mismatch, fail

ck = common.need("confluent-kafka", lambda: __import__("confluent_kafka"))
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

CLIENT = "confluent-kafka-admin"


def result(fut, what):
    try:
        return fut.result(timeout=30)
    except KafkaException as e:
        raise Mismatch(f"{what}: {e}")


def error_of(fut):
    try:
        fut.result(timeout=30)
    except KafkaException as e:
        return e.args[0].code()
    return None


def topic_configs(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = result(admin.describe_configs([res])[res], f"DescribeConfigs {topic}")
    return {name: entry.value for name, entry in configs.items()}


def partitions_of(admin, topic):
    # All topics: a Metadata request naming the topic may auto-create it again after DeleteTopics
    # (librdkafka asks with allow_auto_topic_creation for producer-type handles, as Kafka allows).
    md = admin.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return sorted(t.partitions)


def wait_until(what, cond, seconds=15):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def produce(args, partition, count):
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True,
                         "allow.auto.create.topics": False})
    errors = []
    for i in range(count):
        producer.produce(args.topic, key=b"k%d" % i, value=b"v%d" % i, partition=partition,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    if producer.flush(30) or errors:
        raise Mismatch(f"produce to partition {partition}: {errors[:3]} (or unflushed)")


def read_partition(args, partition, start):
    """Reads partition from OFFSET_BEGINNING; returns the offsets seen."""
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"admin-test-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(args.topic, partition, ck.OFFSET_BEGINNING)])
        _, high = consumer.get_watermark_offsets(TopicPartition(args.topic, partition), timeout=10, cached=False)
        offsets = []
        deadline = time.monotonic() + 30
        while (not offsets or offsets[-1] < high - 1) and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is not None:
                    raise Mismatch(f"read partition {partition}: {m.error()}")
                offsets.append(m.offset())
        if not offsets or offsets[0] != start or offsets[-1] != high - 1:
            raise Mismatch(f"read partition {partition} from the beginning: offsets "
                           f"{offsets[:3]}..{offsets[-3:]}, want {start}..{high - 1}")
        return offsets
    finally:
        consumer.close()


def out_of_range_below_log_start(args):
    """A fetch at offset 10, below the log start (50) after DeleteRecords: OFFSET_OUT_OF_RANGE,
    which auto.offset.reset=earliest turns into a restart at 50, and =error reports."""
    for reset in ("earliest", "error"):
        consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"admin-test-{time.time_ns()}",
                             "enable.auto.commit": False, "auto.offset.reset": reset})
        try:
            consumer.assign([TopicPartition(args.topic, 0, 10)])
            deadline = time.monotonic() + 20
            first = None
            while first is None and time.monotonic() < deadline:
                for m in consumer.consume(10, 0.5):
                    first = m
                    break
        finally:
            consumer.close()
        if first is None:
            raise Mismatch(f"fetch at offset 10 below log start 50 (auto.offset.reset={reset}): nothing in 20s")
        if reset == "earliest" and (first.error() is not None or first.offset() != 50):
            raise Mismatch(f"fetch at offset 10 below log start 50, reset earliest: got offset {first.offset()} "
                           f"error {first.error()}, want the record at 50")
        if reset == "error" and (first.error() is None or first.error().code() != ck.KafkaError._AUTO_OFFSET_RESET):
            raise Mismatch(f"fetch at offset 10 below log start 50, reset error: got offset {first.offset()} "
                           f"error {first.error()}, want _AUTO_OFFSET_RESET (from OFFSET_OUT_OF_RANGE)")


def run(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "allow.auto.create.topics": False})
    t = args.topic

    # 1. CreateTopics with a config; again -> TOPIC_ALREADY_EXISTS (36).
    new = NewTopic(t, num_partitions=3, replication_factor=1, config={"retention.ms": "3600000"})
    result(admin.create_topics([new], operation_timeout=10)[t], f"CreateTopics {t}")
    again = error_of(admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])[t])
    if again != ck.KafkaError.TOPIC_ALREADY_EXISTS:
        raise Mismatch(f"CreateTopics of an existing topic: error {again}, want TOPIC_ALREADY_EXISTS")
    wait_until("the topic in Metadata", lambda: partitions_of(admin, t) == [0, 1, 2])

    # 2. DescribeConfigs: the value set at creation, Kafka's defaults for the rest.
    configs = topic_configs(admin, t)
    want = {"retention.ms": "3600000", "cleanup.policy": "delete"}
    bad = {k: (configs.get(k), v) for k, v in want.items() if configs.get(k) != v}
    if bad:
        raise Mismatch(f"DescribeConfigs {t}: (got, want) {bad}; all: {sorted(configs)[:30]}")

    # 3. IncrementalAlterConfigs: SET retention.ms, SET then DELETE segment.ms.
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET)])
    result(admin.incremental_alter_configs([res])[res], "IncrementalAlterConfigs SET")
    configs = topic_configs(admin, t)
    if (configs.get("retention.ms"), configs.get("segment.ms")) != ("7200000", "600000"):
        raise Mismatch(f"after IncrementalAlterConfigs SET: retention.ms={configs.get('retention.ms')} "
                       f"segment.ms={configs.get('segment.ms')}, want 7200000 and 600000")
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    result(admin.incremental_alter_configs([res])[res], "IncrementalAlterConfigs DELETE")
    configs = topic_configs(admin, t)
    if configs.get("segment.ms") != "604800000":
        raise Mismatch(f"after IncrementalAlterConfigs DELETE segment.ms: {configs.get('segment.ms')}, "
                       f"want Kafka's default 604800000")

    # 4. CreatePartitions 3 -> 5; the new partition takes records.
    result(admin.create_partitions([NewPartitions(t, 5)])[t], "CreatePartitions 5")
    wait_until("5 partitions in Metadata", lambda: partitions_of(admin, t) == [0, 1, 2, 3, 4])
    produce(args, 4, 20)
    read_partition(args, 4, 0)

    # 5. DeleteRecords before offset 50 of partition 0.
    produce(args, 0, 100)
    deleted = result(admin.delete_records([TopicPartition(t, 0, 50)])[TopicPartition(t, 0, 50)],
                     "DeleteRecords p0 < 50")
    if deleted.low_watermark != 50:
        raise Mismatch(f"DeleteRecords p0 < 50: low watermark {deleted.low_watermark}, want 50")
    read_partition(args, 0, 50)
    out_of_range_below_log_start(args)

    # 6. DescribeCluster.
    cluster = result(admin.describe_cluster(request_timeout=15), "DescribeCluster")
    if len(cluster.nodes) != 1 or cluster.controller is None or not cluster.cluster_id:
        raise Mismatch(f"DescribeCluster: nodes {cluster.nodes}, controller {cluster.controller}, "
                       f"cluster id {cluster.cluster_id!r}")

    # 7. DeleteTopics; again -> UNKNOWN_TOPIC_OR_PART (3).
    result(admin.delete_topics([t], operation_timeout=10)[t], f"DeleteTopics {t}")
    wait_until("the topic to leave Metadata", lambda: partitions_of(admin, t) is None)
    again = error_of(admin.delete_topics([t])[t])
    if again != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise Mismatch(f"DeleteTopics of a deleted topic: error {again}, want UNKNOWN_TOPIC_OR_PART")

    # 8. Recreated under the same name: empty, offsets from 0, no old records.
    new = NewTopic(t, num_partitions=2, replication_factor=1, config={"max.message.bytes": "100000"})
    result(admin.create_topics([new], operation_timeout=10)[t], f"CreateTopics {t} again")
    wait_until("the recreated topic in Metadata", lambda: partitions_of(admin, t) == [0, 1])
    produce(args, 0, 5)
    offsets = read_partition(args, 0, 0)
    if offsets != [0, 1, 2, 3, 4]:
        raise Mismatch(f"recreated topic partition 0: offsets {offsets[:10]}, want [0, 1, 2, 3, 4]")

    # 9. Over max.message.bytes (100000 for this topic): MSG_SIZE_TOO_LARGE, then still usable.
    producer = Producer({"bootstrap.servers": args.bootstrap, "allow.auto.create.topics": False,
                         "message.max.bytes": 1_000_000, "compression.type": "none"})
    errors = []
    producer.produce(t, value=b"x" * 200_000, partition=0, on_delivery=lambda err, msg: errors.append(err))
    if producer.flush(30):
        raise Mismatch("produce of an oversized record: no answer within 30s")
    if len(errors) != 1 or errors[0] is None or errors[0].code() != ck.KafkaError.MSG_SIZE_TOO_LARGE:
        raise Mismatch(f"produce of a 200000-byte record over max.message.bytes=100000: {errors}, "
                       "want MSG_SIZE_TOO_LARGE")
    produce(args, 0, 5)
    offsets = read_partition(args, 0, 0)
    if offsets != list(range(10)):
        raise Mismatch(f"after the oversized record, partition 0 offsets {offsets}, want 0..9")

    future_timestamp(args, admin)


def log_append_time(args, admin):
    t = args.topic + "-lat"
    new = NewTopic(t, num_partitions=1, replication_factor=1, config={"message.timestamp.type": "LogAppendTime"})
    result(admin.create_topics([new], operation_timeout=10)[t], f"CreateTopics {t}")
    wait_until(f"{t} in Metadata", lambda: partitions_of(admin, t) == [0])
    before = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True,
                         "compression.type": "lz4", "linger.ms": 5})
    errors = []
    for i in range(50):
        producer.produce(t, key=b"k%d" % i, value=b"v%d" % i, partition=0, timestamp=1_000_000 + i,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    if producer.flush(30) or errors:
        raise Mismatch(f"produce to a LogAppendTime topic: {errors[:3]} (or unflushed)")
    after = int(time.time() * 1000)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"admin-test-{time.time_ns()}",
                         "enable.auto.commit": False, "check.crcs": True})
    try:
        consumer.assign([TopicPartition(t, 0, ck.OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 50 and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.5):
                if m.error() is not None:
                    raise Mismatch(f"read LogAppendTime topic: {m.error()}")
                got.append(m.timestamp())
    finally:
        consumer.close()
    bad = [ts for ts in got if ts[0] != ck.TIMESTAMP_LOG_APPEND_TIME or not before - 1000 <= ts[1] <= after + 1000]
    if len(got) != 50 or bad:
        raise Mismatch(f"LogAppendTime topic: read {len(got)}/50, timestamps outside LogAppendTime in "
                       f"[{before}, {after}]: {bad[:3]} (type {ck.TIMESTAMP_LOG_APPEND_TIME} is LogAppendTime)")


def future_timestamp(args, admin):
    t = args.topic + "-future"
    new = NewTopic(t, num_partitions=1, replication_factor=1, config={"message.timestamp.after.max.ms": "60000"})
    result(admin.create_topics([new], operation_timeout=10)[t], f"CreateTopics {t}")
    wait_until(f"{t} in Metadata", lambda: partitions_of(admin, t) == [0])
    producer = Producer({"bootstrap.servers": args.bootstrap, "allow.auto.create.topics": False})
    errors = []
    producer.produce(t, value=b"from the future", partition=0, timestamp=int(time.time() * 1000) + 3_600_000,
                     on_delivery=lambda err, msg: errors.append(err))
    if producer.flush(30):
        raise Mismatch("produce of a future timestamp: no answer within 30s")
    if len(errors) != 1 or errors[0] is None or errors[0].code() != ck.KafkaError.INVALID_TIMESTAMP:
        raise Mismatch(f"produce with a timestamp 1 h ahead, message.timestamp.after.max.ms=60000: {errors}, "
                       "want INVALID_TIMESTAMP")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--log-append-time", action="store_true", help="only the LogAppendTime check")
    args = p.parse_args()
    started = time.monotonic()
    try:
        if args.log_append_time:
            log_append_time(args, AdminClient({"bootstrap.servers": args.bootstrap}))
        else:
            run(args)
    except Mismatch as e:
        fail(f"{CLIENT} topic={args.topic}: {e}")
    print(f"SUMMARY client={CLIENT} topic={args.topic} produced=0 consumed=0 "
          f"seconds={time.monotonic() - started:.1f} OK", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
