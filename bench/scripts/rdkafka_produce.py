#!/usr/bin/env python3
"""Produce N records of a fixed size with librdkafka (confluent-kafka) and report throughput.

The reference side of bench/scripts/xcheck.sh: same settings as the loadgen run it is
compared with (acks, linger, batch size, compression, record size, no keys). Prints one JSON
line: {"records", "acked", "errors", "secs", "records_per_sec", "mb_per_sec", "librdkafka"}.
The clock runs from the first produce() to the end of flush() (every record answered).
"""
import argparse
import json
import os
import time

from confluent_kafka import Producer, libversion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--acks", default="all")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--batch-bytes", type=int, default=1_000_000)
    parser.add_argument("--compression", default="none")
    args = parser.parse_args()

    errors = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors[0] += 1

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": args.acks,
            "linger.ms": args.linger_ms,
            "batch.size": args.batch_bytes,
            "compression.type": args.compression,
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 5,
            "queue.buffering.max.kbytes": 1048576,
            "queue.buffering.max.messages": 1000000,
            "delivery.report.only.error": True,
            "message.max.bytes": 1000000 + 512,
        }
    )
    # Warm the connection and metadata so the clock measures producing only.
    producer.list_topics(args.topic, timeout=10)
    value = os.urandom(args.record_bytes)
    produce = producer.produce
    poll = producer.poll
    start = time.perf_counter()
    for _ in range(args.records):
        while True:
            try:
                produce(args.topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.001)
    producer.flush(120)
    secs = time.perf_counter() - start
    acked = args.records - errors[0] - len(producer)
    print(
        json.dumps(
            {
                "records": args.records,
                "acked": acked,
                "errors": errors[0],
                "secs": secs,
                "records_per_sec": acked / secs,
                "mb_per_sec": acked * args.record_bytes / secs / 1e6,
                "librdkafka": libversion()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
