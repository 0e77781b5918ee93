#!/usr/bin/env python3
"""confluent-kafka (librdkafka) against a Kafka-compatible broker: create a topic with the admin
API, produce the common record set with the idempotent producer, read it all back by explicit
assignment (no consumer group needed), and check ListOffsets (earliest, latest, by timestamp, max
timestamp). See common.py for the data model and the output contract.

  confluent_kafka_client.py --bootstrap 127.0.0.1:9092 --topic t [--partitions 4]
      [--records 10000] [--compression none|gzip|snappy|lz4|zstd] [--mode all|produce|consume]
"""

import sys
import time

import common
from common import Mismatch, fail

ck = common.need("confluent-kafka", lambda: __import__("confluent_kafka"))
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # noqa: E402

CLIENT = "confluent-kafka"


def log_error(err):
    # librdkafka reports transient trouble (a coordinator it cannot find, a broker going away)
    # through this callback; print it so a failing run shows why, but let the checks decide.
    print(f"librdkafka error: {err}", file=sys.stderr, flush=True)


def base_conf(args):
    return {"bootstrap.servers": args.bootstrap, "error_cb": log_error, "socket.timeout.ms": 10_000}


def create_topic(args):
    admin = AdminClient(base_conf(args))
    futures = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    try:
        futures[args.topic].result(timeout=30)
    except KafkaException as e:
        raise Mismatch(f"CreateTopics {args.topic}: {e}")
    # The topic must be visible with the partition count we asked for.
    deadline = time.monotonic() + 15
    while True:
        md = admin.list_topics(args.topic, timeout=10)
        t = md.topics.get(args.topic)
        if t is not None and t.error is None and len(t.partitions) == args.partitions:
            bad = [p for p in t.partitions.values() if p.error is not None or p.leader < 0]
            if not bad:
                return admin
        if time.monotonic() > deadline:
            raise Mismatch(f"Metadata for {args.topic}: {t and t.error}, "
                           f"partitions {t and sorted(t.partitions)}; want {args.partitions} with leaders")
        time.sleep(0.1)


def produce(args):
    conf = base_conf(args)
    conf.update({
        # Idempotence needs acks=all; with --acks 0/1 it is off (and max.in.flight stays 5).
        "enable.idempotence": args.acks == "all",
        "acks": args.acks,
        "compression.type": args.compression,
        "linger.ms": 5,
        "batch.num.messages": 1000,
        "message.timeout.ms": 60_000,
    })
    logs = []
    if args.pause_after:
        # librdkafka's own log lines, to see whether it had to reset its idempotence state.
        conf["logger"] = CapturingLogger(logs)
    producer = Producer(conf)
    errors = []
    acked = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")
        else:
            acked[0] += 1

    for i in range(args.records):
        if args.pause_after and i == args.pause_after:
            pause(producer, errors, logs)
        while True:
            try:
                producer.produce(args.topic, key=common.key_of(i), value=common.value_of(i),
                                 partition=common.partition_of(i, args.partitions),
                                 headers=common.headers_of(i, CLIENT),
                                 timestamp=common.timestamp_of(i, args.base_ts), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(90)
    if left:
        raise Mismatch(f"produce: {left} records still unacknowledged after 90s")
    if errors:
        raise Mismatch(f"produce: {len(errors)} delivery errors, first: {errors[0]}")
    if acked[0] != args.records:
        raise Mismatch(f"produce: {acked[0]} acks for {args.records} records")
    if args.pause_after:
        reset = [line for line in logs if any(w in line for w in IDEMPOTENCE_RESET_WORDS)]
        if reset:
            raise Mismatch("the idempotent producer had to reset its producer id/epoch after the pause "
                           f"(the broker lost its producer state?): {reset[:3]}")


# librdkafka log words that mean its idempotent producer state was thrown away or fenced.
IDEMPOTENCE_RESET_WORDS = ("UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE", "epoch bump", "INVALID_PRODUCER_EPOCH",
                           "Fatal")


class CapturingLogger:
    """A logging.Logger stand-in for librdkafka's `logger` config: keeps every line."""

    def __init__(self, lines):
        self.lines = lines

    def log(self, level, fmt, *args):
        line = fmt % args if args else str(fmt)
        self.lines.append(line)
        print(f"librdkafka log: {line}", file=sys.stderr, flush=True)


def pause(producer, errors, logs):
    """Everything so far is acknowledged; say PAUSED and wait for a line on stdin (the test
    restarts the broker meanwhile), then go on with the same producer id and sequences."""
    if producer.flush(60):
        raise Mismatch("produce: records before the pause not acknowledged within 60s")
    if errors:
        raise Mismatch(f"produce before the pause: {errors[0]}")
    print("PAUSED", flush=True)
    if not sys.stdin.readline():
        raise Mismatch("stdin closed while paused")
    logs.clear()


def consume(args, started=None):
    # The Python binding refuses a Consumer without group.id (and crashes on an empty one), so
    # give it a unique group that is never joined or committed to: assign() + no auto commit.
    conf = base_conf(args)
    conf.update({
        "group.id": f"sluice-client-test-{args.topic}-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",  # an out-of-range offset is a failure, not a silent reset
        "enable.partition.eof": False,
    })
    if args.fetch_max_bytes:
        # Smaller than one batch: the broker must still return the first batch whole (KIP-74).
        conf["max.partition.fetch.bytes"] = args.fetch_max_bytes
    consumer = Consumer(conf)
    try:
        consumer.assign([TopicPartition(args.topic, p, ck.OFFSET_BEGINNING) for p in range(args.partitions)])
        if started is not None:
            started.set()
        checker = common.Checker(args.records, args.partitions, args.base_ts, args.produced_by or CLIENT)
        deadline = common.Deadline(args.timeout, "consuming")
        while not checker.done():
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            for m in msgs:
                if m.error() is not None:
                    raise Mismatch(f"consume error on partition {m.partition()}: {m.error()}")
                ts_type, ts = m.timestamp()
                checker.check(m.partition(), m.offset(), m.key(), m.value(), m.headers(), ts,
                              "create" if ts_type == ck.TIMESTAMP_CREATE_TIME else f"type {ts_type}")
            if msgs:
                deadline.progressed()
            deadline.check(f"({checker.progress()})")
        # Nothing more may arrive.
        extra = consumer.consume(num_messages=10, timeout=0.5)
        if extra:
            m = extra[0]
            raise Mismatch(f"extra record after all were read: partition {m.partition()} offset {m.offset()}"
                           f" error {m.error()}")
        # Stop fetching first: a broker answers one request per connection at a time (as Kafka
        # does), so each lookup would otherwise wait out a long-polling Fetch.
        consumer.unassign()
        list_offsets_consumer(args, consumer)
    finally:
        consumer.close()
    return checker.consumed


def list_offsets_consumer(args, consumer):
    """ListOffsets through the consumer API: watermarks and offsets_for_times."""
    got = {}
    for p in range(args.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10, cached=False)
        got[(p, "earliest")] = low
        got[(p, "latest")] = high
    for ts in common.lookup_timestamps(args.records, args.base_ts):
        answers = consumer.offsets_for_times([TopicPartition(args.topic, p, ts) for p in range(args.partitions)],
                                             timeout=10)
        for tp in answers:
            if tp.error is not None:
                raise Mismatch(f"offsets_for_times p{tp.partition} ts {ts}: {tp.error}")
            # librdkafka reports "no such offset" as OFFSET_END (-1)
            got[(tp.partition, f"ts={ts - args.base_ts:+d}")] = tp.offset
    common.check_list_offsets("consumer", got, common.expected_offsets(args.records, args.partitions, args.base_ts))


def list_offsets_admin(args):
    """ListOffsets through the admin API, including MAX_TIMESTAMP (ListOffsets v7+)."""
    admin = AdminClient(base_conf(args))
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "max_timestamp": OffsetSpec.max_timestamp()}
    for ts in common.lookup_timestamps(args.records, args.base_ts):
        specs[f"ts={ts - args.base_ts:+d}"] = OffsetSpec.for_timestamp(ts)
    got = {}
    max_ts = {}
    for what, spec in specs.items():
        futures = admin.list_offsets({TopicPartition(args.topic, p): spec for p in range(args.partitions)},
                                     request_timeout=15)
        for tp, fut in futures.items():
            try:
                info = fut.result(timeout=30)
            except KafkaException as e:
                raise Mismatch(f"admin list_offsets {what} p{tp.partition}: {e}")
            got[(tp.partition, what)] = info.offset
            if what == "max_timestamp":
                max_ts[tp.partition] = info.timestamp
    want = common.expected_offsets(args.records, args.partitions, args.base_ts)
    for p in range(args.partitions):
        n_p = common.count_in_partition(p, args.records, args.partitions)
        last_i = common.index_at(p, n_p - 1, args.partitions)
        want[(p, "max_timestamp")] = n_p - 1
        if max_ts.get(p) != common.timestamp_of(last_i, args.base_ts):
            raise Mismatch(f"admin list_offsets max_timestamp p{p}: timestamp {max_ts.get(p)}, "
                           f"want {common.timestamp_of(last_i, args.base_ts)}")
    common.check_list_offsets("admin", got, want)


def extra_args(p):
    p.add_argument("--acks", choices=("0", "1", "all"), default="all",
                   help="producer acks; 0 and 1 turn idempotence off")
    p.add_argument("--fetch-max-bytes", type=int, default=0,
                   help="consumer max.partition.fetch.bytes (0: client default)")
    p.add_argument("--pause-after", type=int, default=0,
                   help="after this many records: flush, print PAUSED, wait for a line on stdin")


def live(args):
    """The consumer is assigned and long-polling before the first record exists; the records
    then arrive in ten flushed chunks, each of which must wake the waiting fetches."""
    import threading
    create_topic(args)
    started = threading.Event()
    result = {}

    def run():
        try:
            result["consumed"] = consume(args, started)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    if not started.wait(30):
        raise Mismatch("live: the consumer did not start")
    chunk = max(args.records // 10, 1)
    producer = Producer(dict(base_conf(args), **{"enable.idempotence": True, "acks": "all", "linger.ms": 0,
                                                  "compression.type": args.compression}))
    for start in range(0, args.records, chunk):
        for i in range(start, min(start + chunk, args.records)):
            producer.produce(args.topic, key=common.key_of(i), value=common.value_of(i),
                             partition=common.partition_of(i, args.partitions), headers=common.headers_of(i, CLIENT),
                             timestamp=common.timestamp_of(i, args.base_ts))
        if producer.flush(30):
            raise Mismatch("live: a chunk was not acknowledged within 30s")
    t.join()
    if "error" in result:
        raise result["error"]
    return result["consumed"]


def main():
    args = common.parse_args(__doc__, extra_args)
    if args.mode == "group":
        fail("--mode group: see group_scenario.py for this client", 2)
    if args.mode == "admin":
        fail("--mode admin: see confluent_admin_client.py / kafka_python_client.py", 2)
    started = time.monotonic()
    produced = consumed = 0
    try:
        if args.mode == "live":
            consumed = live(args)
            produced = args.records
            list_offsets_admin(args)
        if args.mode in ("all", "produce"):
            create_topic(args)
            produce(args)
            produced = args.records
        if args.mode in ("all", "consume"):
            consumed = consume(args)
            list_offsets_admin(args)
    except Mismatch as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic} compression={args.compression}: {e}")
    except KafkaException as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic}: client error {e}")
    print(f"SUMMARY client={CLIENT} version={ck.version() if isinstance(ck.version(), str) else ck.version()[0]} librdkafka={ck.libversion()[0]} mode={args.mode} "
          f"topic={args.topic} partitions={args.partitions} compression={args.compression} acks={args.acks} "
          f"produced={produced} "
          f"consumed={consumed} base_ts={args.base_ts} seconds={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    main()
