#!/usr/bin/env python3
"""Compacted-topic client for sluice/tests/compaction.rs (issue 16), confluent-kafka.

  compaction_client.py --bootstrap HOST:PORT produce TOPIC ROUND KEYS [--delete K1,K2,...]
      [--compression none|gzip|snappy|lz4|zstd]
      Writes one record per key k0..k{KEYS-1} (value "r<ROUND>-k<i>" padded to 100 bytes),
      or a tombstone for the keys listed in --delete, acks=all; prints
      `SUMMARY produced=N OK`.
  compaction_client.py --bootstrap HOST:PORT read TOPIC ROUND KEYS [--delete K1,...]
      Reads every partition from the beginning to its high watermark, as a consumer would,
      and checks the key -> latest value map it ends with (tombstones delete): exactly the
      keys k0..k{KEYS-1} not in --delete, each with round ROUND's value. Fails (exit 1,
      `FAIL: ...`) on a difference or if offsets do not rise within a partition; prints
      `SUMMARY records=N keys=K OK` (N records read).
  compaction_client.py --bootstrap HOST:PORT keyless TOPIC
      Produces one record without a key; prints `SUMMARY error=<Kafka error name> OK`.
"""

import argparse
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

TIMEOUT_S = 60


def produce(args):
    # Small batches: the test broker rolls 16 KiB segments.
    p = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 4096, "compression.type": args.compression})
    deleted = set(filter(None, (args.delete or "").split(",")))
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(err)

    n = 0
    for i in range(args.keys):
        key = f"k{i}"
        value = None if key in deleted else f"r{args.round}-{key}".ljust(100, ".").encode()
        p.produce(args.topic, key=key.encode(), value=value, on_delivery=report)
        n += 1
        p.poll(0)
    left = p.flush(TIMEOUT_S)
    if left or failures:
        sys.exit(f"FAIL: {left} undelivered, errors {failures[:3]}")
    print(f"SUMMARY produced={n} OK")


def read(args):
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "compaction-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    meta = c.list_topics(args.topic, timeout=TIMEOUT_S)
    parts = sorted(meta.topics[args.topic].partitions)
    latest = {}
    records = 0
    for part in parts:
        low, high = c.get_watermark_offsets(TopicPartition(args.topic, part), timeout=TIMEOUT_S)
        if high <= low:
            continue
        c.assign([TopicPartition(args.topic, part, low)])
        last = -1
        while last < high - 1:
            msg = c.poll(TIMEOUT_S)
            if msg is None:
                # Compaction may have removed the records just below the watermark.
                break
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                sys.exit(f"FAIL: {msg.error()}")
            if msg.offset() <= last:
                print(f"FAIL: partition {part} offset {msg.offset()} after {last}", file=sys.stderr)
                sys.exit(1)
            last = msg.offset()
            records += 1
            key = msg.key().decode()
            if msg.value() is None:
                latest.pop(key, None)
            else:
                latest[key] = msg.value().decode().rstrip(".")
    c.close()
    deleted = set(filter(None, (args.delete or "").split(",")))
    expected = {f"k{i}": f"r{args.round}-k{i}" for i in range(args.keys) if f"k{i}" not in deleted}
    if latest != expected:
        wrong = sorted(k for k in set(latest) | set(expected) if latest.get(k) != expected.get(k))
        print(f"FAIL: {len(wrong)} keys differ, e.g. "
              + ", ".join(f"{k}: got {latest.get(k)!r} want {expected.get(k)!r}" for k in wrong[:5]),
              file=sys.stderr)
        sys.exit(1)
    print(f"SUMMARY records={records} keys={len(latest)} OK")


def keyless(args):
    p = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "retries": 0,
                  "compression.type": args.compression})
    errors = []
    p.produce(args.topic, value=b"no key", on_delivery=lambda err, _m: errors.append(err))
    p.flush(TIMEOUT_S)
    err = errors[0] if errors else None
    print(f"SUMMARY error={err.name() if err else 'NONE'} OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("mode", choices=["produce", "read", "keyless"])
    ap.add_argument("topic")
    ap.add_argument("round", nargs="?", type=int, default=0)
    ap.add_argument("keys", nargs="?", type=int, default=0)
    ap.add_argument("--delete")
    ap.add_argument("--compression", default="none")
    args = ap.parse_args()
    {"produce": produce, "read": read, "keyless": keyless}[args.mode](args)


if __name__ == "__main__":
    main()
