#!/usr/bin/env python3
"""Exactly-once consume-transform-produce with confluent-kafka (librdkafka), issue 15.

1. Seeds an input topic (--partitions partitions, --records records; record i goes to partition
   i % P with key b"key-<i>", value b"in-<i>") with the idempotent producer.
2. Runs a transactional app: a read_committed consumer subscribed in group --group (no auto
   commit), a producer with transactional.id. Each transaction takes up to --batch records,
   as many from each input partition's head as the others (so it spans partitions), writes b"out-<i>" (same key) to the output topic's partition of the same number, adds the
   consumer's positions with send_offsets_to_transaction, then commits or aborts by a seeded
   random choice (--seed, printed; the first transaction always aborts, and no more than
   MAX_ABORTS_IN_A_ROW in a row, so every run has both and ends). After an abort the app seeks
   every partition back to the group's committed offset, as a real EOS app does, and
   re-processes the batch.
3. Checks: a read_committed reader of the output sees each input record's transform exactly
   once, in input order per partition, and nothing from aborted transactions; a
   read_uncommitted reader sees exactly what was produced, aborted records included, in produce
   order; in both, the offsets read plus one control record per transaction and partition fill
   the log up to the high watermark (no marker comes out as a record); the group's committed
   offsets equal the input's end offsets.

  txn_confluent.py --bootstrap HOST:PORT [--prefix eos] [--partitions 3] [--records 600]
      [--batch 40] [--seed N] [--abort-ratio 0.35] [--inject-fault none|duplicate|missing]

--inject-fault corrupts what the read_committed reader returned before the checks, to show
they catch a duplicate or a lost record (the run must then FAIL).
"""

import argparse
import collections
import random
import sys
import time

import common
import txn_common
from common import Mismatch, fail
from txn_common import base_conf

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402

# Consecutive aborts allowed before a commit is forced, so every run makes progress.
MAX_ABORTS_IN_A_ROW = 2
# Most records one consume() call hands over.
CONSUME_MAX = 500
# Answers to OffsetFetch that mean "ask again" (the coordinator is moving or loading).
RETRIABLE_COORDINATOR_ERRORS = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                KafkaError.COORDINATOR_NOT_AVAILABLE)
# librdkafka's OFFSET_INVALID: the group has no committed offset for the partition.
NO_COMMITTED_OFFSET = -1001


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", default="eos")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--records", type=int, default=600)
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--abort-ratio", type=float, default=0.35)
    p.add_argument("--inject-fault", choices=("none", "duplicate", "missing"), default="none")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    args.input = f"{args.prefix}-input"
    args.output = f"{args.prefix}-output"
    args.group = f"{args.prefix}-app"
    args.transactional_id = f"{args.prefix}-app-txn"
    return args


def seed_input(args):
    p = Producer({**base_conf(args.bootstrap), "enable.idempotence": True, "linger.ms": 5})
    for i in range(args.records):
        p.produce(args.input, key=b"key-%d" % i, value=b"in-%d" % i, partition=i % args.partitions)
    if p.flush(30) != 0:
        raise Mismatch("seeding the input topic: records left unacknowledged after 30 s")


def committed_offsets(consumer, topic, partitions):
    """The consumer's group's committed offset per partition (0 where none is committed).
    librdkafka asks with require_stable (the consumers here are read_committed), so offsets of
    a transaction whose marker is not yet written are never half-seen. Coordinator errors of a
    broker still electing or loading the group's coordinator are retried, as an app would."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    deadline = time.monotonic() + txn_common.PROGRESS_TIMEOUT_S
    while True:
        try:
            return [tp.offset if tp.offset != NO_COMMITTED_OFFSET else 0
                    for tp in consumer.committed(tps, timeout=10)]
        except KafkaException as e:
            if e.args[0].code() not in RETRIABLE_COORDINATOR_ERRORS or time.monotonic() > deadline:
                raise
            print(f"committed offsets: {e}; retrying", file=sys.stderr, flush=True)
            time.sleep(0.1)


class App:
    """The transactional consume-transform-produce loop and what it produced, per partition."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.producer = Producer({
            **base_conf(args.bootstrap),
            "transactional.id": args.transactional_id,
            "transaction.timeout.ms": 60_000,
        })
        self.consumer = Consumer({
            **base_conf(args.bootstrap),
            "group.id": args.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        # (value, committed) in produce order, per output partition.
        self.produced = {p: [] for p in range(args.partitions)}
        # Transactions (committed or aborted) that wrote to each output partition: each leaves
        # one control record there.
        self.markers = [0] * args.partitions
        self.commits = 0
        self.aborts = 0
        self.aborts_in_a_row = 0
        # Records consumed but not yet processed, per input partition.
        self.buffered = {p: collections.deque() for p in range(args.partitions)}

    def run(self):
        args = self.args
        self.producer.init_transactions(30)
        self.consumer.subscribe([args.input])
        ends = [len(range(p, args.records, args.partitions)) for p in range(args.partitions)]
        deadline = common.Deadline(txn_common.PROGRESS_TIMEOUT_S, "running the transactional app")
        while True:
            msgs = self.consumer.consume(num_messages=CONSUME_MAX, timeout=0.2)
            errors = [m.error() for m in msgs if m.error()]
            if errors:
                raise Mismatch(f"app consumer: {errors[0]}")
            for m in msgs:
                self.buffered[m.partition()].append(m)
            if not any(self.buffered.values()):
                if self.committed_positions() == ends:
                    return
                deadline.check(f"committed {self.committed_positions()}, input ends {ends}")
                continue
            deadline.progressed()
            # Up to batch/P records from each partition's head: one transaction spans partitions.
            take = max(1, args.batch // args.partitions)
            batch = {p: [q.popleft() for _ in range(min(take, len(q)))] for p, q in self.buffered.items()}
            self.transaction({p: ms for p, ms in batch.items() if ms})

    def transaction(self, batch):
        """batch: {input partition: [messages in offset order]}."""
        self.producer.begin_transaction()
        touched = set()
        pending = []
        delivered = []
        for p, msgs in batch.items():
            for m in msgs:
                value = b"out-" + m.value()[len(b"in-"):]
                self.producer.produce(self.args.output, key=m.key(), value=value, partition=p,
                                      on_delivery=lambda err, msg: delivered.append((err, msg)))
                pending.append((p, value))
            touched.add(p)
        # Every record is written before the decision, so an aborted transaction leaves its
        # records in the log (librdkafka would otherwise purge unsent ones on abort).
        if self.producer.flush(30) != 0:
            raise Mismatch("transactional records left unacknowledged after 30 s")
        failed = [err for err, _ in delivered if err is not None]
        if failed or len(delivered) != len(pending):
            raise Mismatch(f"transactional produce: {len(delivered)}/{len(pending)} delivered, errors {failed[:3]}")
        # The next offset to read after each partition's last processed record.
        positions = [TopicPartition(self.args.input, p, msgs[-1].offset() + 1) for p, msgs in batch.items()]
        self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(), 30)
        abort = self.aborts == 0 or (self.aborts_in_a_row < MAX_ABORTS_IN_A_ROW
                                     and self.rng.random() < self.args.abort_ratio)
        if abort:
            self.producer.abort_transaction(30)
            self.aborts += 1
            self.aborts_in_a_row += 1
            self.rewind()
        else:
            self.producer.commit_transaction(30)
            self.commits += 1
            self.aborts_in_a_row = 0
        for p, value in pending:
            self.produced[p].append((value, not abort))
        for p in touched:
            self.markers[p] += 1

    def committed_positions(self):
        return committed_offsets(self.consumer, self.args.input, self.args.partitions)

    def rewind(self):
        """After an abort: back to the group's committed offsets (the aborted transaction's
        offsets must not have been committed)."""
        committed = self.committed_positions()
        for q in self.buffered.values():
            q.clear()
        for tp in self.consumer.assignment():
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, committed[tp.partition]))

    def close(self):
        self.consumer.close()


def main():
    args = parse_args()
    print(f"seed={args.seed}", flush=True)
    started = time.monotonic()
    txn_common.create_topics(args.bootstrap, {args.input: args.partitions, args.output: args.partitions})
    seed_input(args)
    app = App(args)
    try:
        app.run()
    finally:
        app.close()

    committed, hw = txn_common.read_all(args.bootstrap, args.output, args.partitions, "read_committed")
    if args.inject_fault == "duplicate":
        committed[0].insert(1, committed[0][0])
    elif args.inject_fault == "missing":
        del committed[0][len(committed[0]) // 2]
    uncommitted, hw2 = txn_common.read_all(args.bootstrap, args.output, args.partitions, "read_uncommitted")
    if hw != hw2:
        raise Mismatch(f"high watermarks moved between reads: {hw} then {hw2}")
    aborted_records = 0
    for p in range(args.partitions):
        want = [b"out-%d" % i for i in range(p, args.records, args.partitions)]
        txn_common.check_sequence(f"read_committed p{p}", [v for _, _, v in committed[p]], want)
        txn_common.check_sequence(f"read_uncommitted p{p}", [v for _, _, v in uncommitted[p]],
                                  [v for v, _ in app.produced[p]])
        txn_common.check_offsets_fill_log(f"read_uncommitted p{p}", [o for o, _, _ in uncommitted[p]],
                                          app.markers[p], hw[p])
        committed_set = {o for o, _, _ in committed[p]}
        in_committed_txn = [o for (o, _, _), (_, ok) in zip(uncommitted[p], app.produced[p]) if ok]
        if sorted(committed_set) != in_committed_txn:
            raise Mismatch(f"read_committed p{p}: offsets differ from the committed transactions' records")
        aborted_records += sum(1 for _, ok in app.produced[p] if not ok)
    reader = Consumer({**base_conf(args.bootstrap), "group.id": args.group, "enable.auto.commit": False})
    try:
        group_offsets = committed_offsets(reader, args.input, args.partitions)
    finally:
        reader.close()
    ends = [len(range(p, args.records, args.partitions)) for p in range(args.partitions)]
    if group_offsets != ends:
        raise Mismatch(f"group {args.group} committed offsets {group_offsets}, input end offsets {ends}")
    print(f"SUMMARY client=confluent-kafka scenario=eos seed={args.seed} input={args.records} "
          f"commits={app.commits} aborts={app.aborts} aborted_records={aborted_records} "
          f"markers={sum(app.markers)} group_offsets={'/'.join(map(str, group_offsets))} "
          f"elapsed_s={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (Mismatch, KafkaException) as e:
        fail(str(e))
