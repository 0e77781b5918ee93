#!/usr/bin/env python3
"""Start librdkafka's built-in mock cluster and print its bootstrap address.

A Kafka-compatible broker that needs no JVM: useful to exercise loadgen (and the
cross-check scripts) when no real broker is at hand. Not for performance numbers.

Usage: mock_broker.py [BROKERS]   (prints "bootstrap HOST:PORT,..." then "ready"; runs until
killed or stdin closes)
"""
import sys
import time

from confluent_kafka import Producer


def main() -> None:
    brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    producer = Producer({"test.mock.num.brokers": brokers, "bootstrap.servers": ""})
    metadata = producer.list_topics(timeout=10)
    addresses = ",".join(
        f"{b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id)
    )
    print(f"bootstrap {addresses}", flush=True)
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
