#!/usr/bin/env python3
"""One consumer-group member (confluent-kafka or kafka-python) for group_scenario.py.

It subscribes to --topic in --group and, after every poll that returned records, commits the
next offsets synchronously and only then reports the records, so what it reports is exactly what
it committed: a record reported twice means the group handed a partition to two members (or
lost a commit). Records are checked against common.py's data model (key and value at each
offset). SIGTERM closes the consumer the normal way (LeaveGroup for dynamic members, none for
static ones) and exits 0.

Events are JSON lines on stdout, each with "m" (the member name):
  {"ev": "ready"}                       subscribed
  {"ev": "assigned", "partitions": [..]} / {"ev": "revoked", "partitions": [..]}
  {"ev": "records", "p": P, "first": O1, "last": O2}   committed and checked
  {"ev": "commit_failed", "error": ...}  (the batch is re-read, not reported)
  {"ev": "closed"}
Failures print {"ev": "fail", "error": ...} and exit 1.
"""

import argparse
import json
import signal
import sys
import time

import common

stop = False


def on_sigterm(_sig, _frame):
    global stop
    stop = True


def emit(name, **ev):
    ev["m"] = name
    print(json.dumps(ev), flush=True)


def check_record(name, partitions, p, offset, key, value):
    i = common.index_at(p, offset, partitions)
    if key != common.key_of(i) or value != common.value_of(i):
        emit(name, ev="fail", error=f"partition {p} offset {offset}: key {key!r} value {common.short(value)}, "
                                    f"want record {i}: {common.key_of(i)!r} {common.short(common.value_of(i))}")
        sys.exit(1)


def run_confluent(args):
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "error_cb": lambda e: print(f"{args.name}: librdkafka error: {e}", file=sys.stderr, flush=True),
    }
    if args.protocol == "consumer":
        conf["group.protocol"] = "consumer"  # KIP-848: broker-side assignment, no session settings
    else:
        conf.update({"session.timeout.ms": args.session_timeout_ms, "heartbeat.interval.ms": 500,
                     "partition.assignment.strategy": args.assignor})
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    consumer = Consumer(conf)
    # KIP-848 and cooperative-sticky hand out and take back partitions incrementally.
    incremental = args.protocol == "consumer" or args.assignor == "cooperative-sticky"

    def on_assign(c, parts):
        emit(args.name, ev="assigned", partitions=sorted(tp.partition for tp in parts), incremental=incremental)

    def on_revoke(c, parts):
        emit(args.name, ev="revoked", partitions=sorted(tp.partition for tp in parts), incremental=incremental)

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    emit(args.name, ev="ready")
    while not stop:
        msgs = consumer.consume(num_messages=500, timeout=0.2)
        if not msgs:
            continue
        ranges = {}
        for m in msgs:
            if m.error() is not None:
                emit(args.name, ev="fail", error=f"consume: {m.error()}")
                sys.exit(1)
            check_record(args.name, args.partitions, m.partition(), m.offset(), m.key(), m.value())
            first, _ = ranges.get(m.partition(), (m.offset(), None))
            ranges[m.partition()] = (first, m.offset())
        try:
            consumer.commit(offsets=[TopicPartition(args.topic, p, last + 1) for p, (_, last) in ranges.items()],
                            asynchronous=False)
        except KafkaException as e:
            emit(args.name, ev="commit_failed", error=str(e))
            for p, (first, _) in ranges.items():
                try:
                    consumer.seek(TopicPartition(args.topic, p, first))
                except KafkaException:
                    pass  # no longer ours: the new owner reads from the committed offset
            continue
        for p, (first, last) in sorted(ranges.items()):
            emit(args.name, ev="records", p=p, first=first, last=last)
    consumer.close()
    emit(args.name, ev="closed")


def run_kafka_python(args):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            emit(args.name, ev="revoked", partitions=sorted(tp.partition for tp in revoked), incremental=False)

        def on_partitions_assigned(self, assigned):
            emit(args.name, ev="assigned", partitions=sorted(tp.partition for tp in assigned), incremental=False)

    if args.protocol != "classic":
        emit(args.name, ev="fail", error="kafka-python has no KIP-848 consumer protocol")
        sys.exit(2)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=args.session_timeout_ms, heartbeat_interval_ms=500,
                             group_instance_id=args.instance_id, fetch_max_wait_ms=200)
    consumer.subscribe([args.topic], listener=Listener())
    emit(args.name, ev="ready")
    while not stop:
        batches = consumer.poll(timeout_ms=200, max_records=500)
        if not batches:
            continue
        ranges = {}
        for tp, records in batches.items():
            for r in records:
                check_record(args.name, args.partitions, tp.partition, r.offset, r.key, r.value)
            if records:
                ranges[tp.partition] = (records[0].offset, records[-1].offset)
        try:
            consumer.commit({TopicPartition(args.topic, p): OffsetAndMetadata(last + 1, None, -1)
                             for p, (_, last) in ranges.items()})
        except KafkaError as e:
            emit(args.name, ev="commit_failed", error=repr(e))
            for p, (first, _) in ranges.items():
                try:
                    consumer.seek(TopicPartition(args.topic, p), first)
                except (KafkaError, AssertionError, ValueError):
                    pass
            continue
        for p, (first, last) in sorted(ranges.items()):
            emit(args.name, ev="records", p=p, first=first, last=last)
    consumer.close()
    emit(args.name, ev="closed")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True, help="the topic's partition count (data model)")
    p.add_argument("--group", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--client", choices=("confluent-kafka", "kafka-python"), required=True)
    p.add_argument("--instance-id", default=None, help="group.instance.id (static membership, KIP-345)")
    p.add_argument("--protocol", choices=("classic", "consumer"), default="classic")
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--assignor", default="range,roundrobin",
                   help="librdkafka partition.assignment.strategy (cooperative-sticky: incremental)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    if args.client == "confluent-kafka":
        run_confluent(args)
    else:
        run_kafka_python(args)
    print(f"{args.name}: ran {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
