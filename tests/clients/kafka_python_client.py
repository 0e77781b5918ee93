#!/usr/bin/env python3
"""kafka-python against a Kafka-compatible broker: create a topic with KafkaAdminClient, produce
the common record set (idempotent producer), read it all back by explicit assignment (no group),
and check ListOffsets (beginning_offsets, end_offsets, offsets_for_times). See common.py for the
data model and the output contract.

  kafka_python_client.py --bootstrap 127.0.0.1:9092 --topic t [--partitions 4]
      [--records 10000] [--compression none|gzip|snappy|lz4|zstd] [--mode all|produce|consume]
"""

import time

import common
from common import Mismatch, fail

kafka = common.need("kafka-python", lambda: __import__("kafka"))
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402

CLIENT = "kafka-python"


def create_topic(args):
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id=CLIENT, request_timeout_ms=15_000)
    try:
        resp = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
                                   timeout_ms=10_000)
        errors = [(t[0], t[1]) for t in getattr(resp, "topic_errors", getattr(resp, "topics", []))
                  if t[1] != 0]
        if errors:
            raise Mismatch(f"CreateTopics {args.topic}: error codes {errors}")
        deadline = time.monotonic() + 15
        while True:
            parts = admin.describe_topics([args.topic])[0]
            if parts.get("error_code", 0) == 0 and len(parts.get("partitions", [])) == args.partitions:
                return
            if time.monotonic() > deadline:
                raise Mismatch(f"Metadata for {args.topic}: {parts}")
            time.sleep(0.1)
    finally:
        admin.close()


def produce(args):
    codec = None if args.compression == "none" else args.compression
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, client_id=CLIENT, acks="all",
                             enable_idempotence=True, compression_type=codec, linger_ms=5,
                             batch_size=64 * 1024, request_timeout_ms=30_000,
                             max_request_size=max(1_048_576, 2 * args.value_bytes))
    try:
        futures = []
        for i in range(args.records):
            futures.append(producer.send(args.topic, key=common.key_of(i), value=common.value_of(i),
                                         partition=common.partition_of(i, args.partitions),
                                         headers=common.headers_of(i, CLIENT),
                                         timestamp_ms=common.timestamp_of(i, args.base_ts)))
        producer.flush(timeout=90)
        for i, f in enumerate(futures):
            try:
                md = f.get(timeout=1)
            except KafkaError as e:
                raise Mismatch(f"produce record {i}: {e!r}")
            want = (common.partition_of(i, args.partitions), common.offset_of(i, args.partitions))
            if (md.partition, md.offset) != want:
                raise Mismatch(f"produce record {i}: acknowledged at partition {md.partition} offset {md.offset}, "
                               f"want {want}")
    finally:
        producer.close(timeout=10)


def consume(args):
    extra = {}
    if args.fetch_max_bytes:
        # Smaller than one batch: the broker must still return the first batch whole (KIP-74).
        extra["max_partition_fetch_bytes"] = args.fetch_max_bytes
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, client_id=CLIENT, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none", fetch_max_wait_ms=200,
                             request_timeout_ms=30_000, **extra)
    try:
        tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        checker = common.Checker(args.records, args.partitions, args.base_ts, args.produced_by or CLIENT)
        deadline = common.Deadline(args.timeout, "consuming")
        while not checker.done():
            batches = consumer.poll(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for r in records:
                    checker.check(tp.partition, r.offset, r.key, r.value, r.headers, r.timestamp,
                                  "create" if r.timestamp_type == 0 else f"type {r.timestamp_type}")
            if batches:
                deadline.progressed()
            deadline.check(f"({checker.progress()})")
        extra = consumer.poll(timeout_ms=1000)
        if any(extra.values()):
            tp, recs = next((tp, r) for tp, r in extra.items() if r)
            raise Mismatch(f"extra record after all were read: partition {tp.partition} offset {recs[0].offset}")
        list_offsets(args, consumer, tps)
    finally:
        consumer.close()
    return checker.consumed


def list_offsets(args, consumer, tps):
    got = {}
    for tp, off in consumer.beginning_offsets(tps).items():
        got[(tp.partition, "earliest")] = off
    for tp, off in consumer.end_offsets(tps).items():
        got[(tp.partition, "latest")] = off
    for ts in common.lookup_timestamps(args.records, args.base_ts):
        answers = consumer.offsets_for_times({tp: ts for tp in tps})
        for tp, ot in answers.items():
            # kafka-python answers None when no record has a timestamp >= ts.
            got[(tp.partition, f"ts={ts - args.base_ts:+d}")] = -1 if ot is None else ot.offset
            if ot is not None:
                i = common.index_at(tp.partition, ot.offset, args.partitions)
                if ot.timestamp != common.timestamp_of(i, args.base_ts):
                    raise Mismatch(f"offsets_for_times p{tp.partition} ts {ts}: offset {ot.offset} with "
                                   f"timestamp {ot.timestamp}, want {common.timestamp_of(i, args.base_ts)}")
    common.check_list_offsets("consumer", got, common.expected_offsets(args.records, args.partitions, args.base_ts))


def admin_mode(args):
    """KafkaAdminClient's topic admin requests (the versions kafka-python sends): CreateTopics with
    a config (and again), DescribeConfigs (value and source), the legacy AlterConfigs,
    CreatePartitions, DeleteRecords, DeleteTopics; each checked through another request."""
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions
    from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
    t = args.topic
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id=CLIENT, request_timeout_ms=15_000)

    def config(name):
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t)])[0].to_object()["resources"][0]
        if res["error_code"] != 0:
            raise Mismatch(f"DescribeConfigs {t}: error {res['error_code']} {res['error_message']}")
        entry = next((e for e in res["config_entries"] if e["config_names"] == name), None)
        if entry is None:
            raise Mismatch(f"DescribeConfigs {t}: no {name} among {[e['config_names'] for e in res['config_entries']]}")
        return entry["config_value"], entry.get("config_source")

    def partitions():
        return len(admin.describe_topics([t])[0]["partitions"])

    try:
        admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1,
                                      topic_configs={"retention.ms": "3600000"})])
        try:
            admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])
            raise Mismatch("CreateTopics of an existing topic succeeded (want TOPIC_ALREADY_EXISTS)")
        except TopicAlreadyExistsError:
            pass
        # config_source 1 = DYNAMIC_TOPIC_CONFIG, 5 = DEFAULT_CONFIG
        if config("retention.ms") != ("3600000", 1) or config("cleanup.policy") != ("delete", 5):
            raise Mismatch(f"DescribeConfigs: retention.ms {config('retention.ms')}, cleanup.policy "
                           f"{config('cleanup.policy')}; want ('3600000', 1) and ('delete', 5)")
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": "7200000"})])
        if config("retention.ms")[0] != "7200000":
            raise Mismatch(f"after AlterConfigs retention.ms={config('retention.ms')}, want 7200000")
        admin.create_partitions({t: NewPartitions(5)})
        if partitions() != 5:
            raise Mismatch(f"after CreatePartitions 5: Metadata shows {partitions()} partitions")
        producer = KafkaProducer(bootstrap_servers=args.bootstrap, client_id=CLIENT, acks="all")
        for i in range(100):
            producer.send(t, key=b"k%d" % i, value=b"v%d" % i, partition=0)
        producer.flush(30)
        producer.close(timeout=10)
        tp = TopicPartition(t, 0)
        deleted = admin.delete_records({tp: 50})
        if deleted[tp].get("low_watermark") != 50:
            raise Mismatch(f"DeleteRecords p0 < 50: {deleted[tp]}, want low watermark 50")
        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, client_id=CLIENT)
        try:
            low = consumer.beginning_offsets([tp])[tp]
        finally:
            consumer.close()
        if low != 50:
            raise Mismatch(f"after DeleteRecords the earliest offset is {low}, want 50")
        admin.delete_topics([t])
        if t in admin.list_topics():
            raise Mismatch(f"after DeleteTopics list_topics still has {t}")
        try:
            admin.delete_topics([t])
            raise Mismatch("DeleteTopics of a deleted topic succeeded (want UNKNOWN_TOPIC_OR_PARTITION)")
        except UnknownTopicOrPartitionError:
            pass
    finally:
        admin.close()


def extra_args(p):
    p.add_argument("--fetch-max-bytes", type=int, default=0,
                   help="consumer max_partition_fetch_bytes (0: client default)")


def main():
    args = common.parse_args(__doc__, extra_args)
    if args.mode == "live":
        fail("--mode live is only in confluent_kafka_client.py", 2)
    if args.mode == "group":
        fail("--mode group: see group_scenario.py for this client", 2)
    if args.mode == "admin":
        try:
            admin_mode(args)
        except Mismatch as e:
            fail(f"{CLIENT} admin topic={args.topic}: {e}")
        except KafkaError as e:
            fail(f"{CLIENT} admin topic={args.topic}: client error {e!r}")
        print(f"SUMMARY client={CLIENT} version={kafka.__version__} mode=admin topic={args.topic} produced=0 "
              f"consumed=0 OK", flush=True)
        return
    started = time.monotonic()
    produced = consumed = 0
    try:
        if args.mode in ("all", "produce"):
            create_topic(args)
            produce(args)
            produced = args.records
        if args.mode in ("all", "consume"):
            consumed = consume(args)
    except Mismatch as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic} compression={args.compression}: {e}")
    except KafkaError as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic}: client error {e!r}")
    print(f"SUMMARY client={CLIENT} version={kafka.__version__} mode={args.mode} topic={args.topic} "
          f"partitions={args.partitions} compression={args.compression} produced={produced} consumed={consumed} "
          f"base_ts={args.base_ts} seconds={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    main()
