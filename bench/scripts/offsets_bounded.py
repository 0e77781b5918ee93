#!/usr/bin/env python3
"""__consumer_offsets under a commit-heavy run (issue 16): does the log cleaner keep it bounded?

Starts nothing: point it at a running broker and its data dir. GROUPS consumer groups each
commit offsets for PARTITIONS partitions of one topic as fast as synchronous commits go
(offsets rise by one per commit, so every commit is a new value of the same keys), for
SECONDS; every SAMPLE seconds it prints the bytes of every `__consumer_offsets-*` directory
under DATA_DIR (segment files, indexes, snapshots) and the commits so far.

  offsets_bounded.py --bootstrap HOST:PORT --data-dir DIR [--groups 20] [--partitions 8]
      [--seconds 180] [--sample 10]

With the cleaner working, the size levels off (a few segments per partition: the active
one, the cleaned ones, the dirty ones below min.cleanable.dirty.ratio); without it, it
grows with the number of commits.
"""

import argparse
import os
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def offsets_bytes(data_dir):
    total = 0
    for name in os.listdir(data_dir):
        if name.startswith("__consumer_offsets-"):
            d = os.path.join(data_dir, name)
            for f in os.listdir(d):
                try:
                    total += os.path.getsize(os.path.join(d, f))
                except FileNotFoundError:
                    pass
    return total


def committer(args, group, counter, stop):
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    n = 0
    while not stop.is_set():
        n += 1
        offsets = [TopicPartition(args.topic, p, n) for p in range(args.partitions)]
        try:
            c.commit(offsets=offsets, asynchronous=False)
        except KafkaException:  # the coordinator is still loading: retry
            time.sleep(0.1)
            continue
        counter[group] = n
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--topic", default="offsets-bounded")
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--sample", type=int, default=10)
    args = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(args.topic, args.partitions, 1)]).values():
        try:
            f.result()
        except Exception:  # exists already
            pass
    counter, stop = {}, threading.Event()
    threads = [threading.Thread(target=committer, args=(args, f"g{i}", counter, stop))
               for i in range(args.groups)]
    for t in threads:
        t.start()
    start = time.time()
    print("seconds,commits,offset_records,offsets_topic_bytes", flush=True)
    while time.time() - start < args.seconds:
        time.sleep(args.sample)
        commits = sum(counter.values())
        print(f"{time.time() - start:.0f},{commits},{commits * args.partitions},"
              f"{offsets_bytes(args.data_dir)}", flush=True)
    stop.set()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
