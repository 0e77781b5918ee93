#!/usr/bin/env python3
"""aiokafka (asyncio) against a Kafka-compatible broker: create a topic, produce the common record
set (idempotent producer), read it all back by explicit assignment, check ListOffsets; or with
--mode group, two members of one consumer group read it with explicit commits, every record
once, and a third member of the same group then finds nothing left (resumes at the commits).
See common.py for the data model and the output contract.

  aiokafka_client.py --bootstrap 127.0.0.1:9092 --topic t [--partitions 4] [--records 10000]
      [--compression none|gzip|snappy|lz4|zstd] [--mode all|produce|consume|group]
"""

import asyncio
import time

import common
from common import Mismatch, fail

aiokafka = common.need("aiokafka", lambda: __import__("aiokafka"))
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402

CLIENT = "aiokafka"


async def create_topic(args):
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap, client_id=CLIENT)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(args, first=0, end=None):
    end = args.records if end is None else end
    codec = None if args.compression == "none" else args.compression
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, client_id=CLIENT, acks="all",
                                enable_idempotence=True, compression_type=codec, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(first, end):
            futures.append((i, await producer.send(
                args.topic, key=common.key_of(i), value=common.value_of(i),
                partition=common.partition_of(i, args.partitions), headers=common.headers_of(i, CLIENT),
                timestamp_ms=common.timestamp_of(i, args.base_ts))))
        for i, fut in futures:
            md = await fut
            want = (common.partition_of(i, args.partitions), common.offset_of(i, args.partitions))
            if (md.partition, md.offset) != want:
                raise Mismatch(f"produce record {i}: acknowledged at partition {md.partition} offset {md.offset}, "
                               f"want {want}")
    finally:
        await producer.stop()


async def consume(args):
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, client_id=CLIENT, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="none", fetch_max_wait_ms=200)
    await consumer.start()
    try:
        tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        checker = common.Checker(args.records, args.partitions, args.base_ts, args.produced_by or CLIENT)
        deadline = common.Deadline(args.timeout, "consuming")
        while not checker.done():
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for r in records:
                    checker.check(tp.partition, r.offset, r.key, r.value, list(r.headers), r.timestamp,
                                  "create" if r.timestamp_type == 0 else f"type {r.timestamp_type}")
            if batches:
                deadline.progressed()
            deadline.check(f"({checker.progress()})")
        extra = await consumer.getmany(timeout_ms=500)
        if any(extra.values()):
            tp, recs = next((tp, r) for tp, r in extra.items() if r)
            raise Mismatch(f"extra record after all were read: partition {tp.partition} offset {recs[0].offset}")
        await list_offsets(args, consumer, tps)
    finally:
        await consumer.stop()
    return checker.consumed


async def list_offsets(args, consumer, tps):
    got = {}
    for tp, off in (await consumer.beginning_offsets(tps)).items():
        got[(tp.partition, "earliest")] = off
    for tp, off in (await consumer.end_offsets(tps)).items():
        got[(tp.partition, "latest")] = off
    for ts in common.lookup_timestamps(args.records, args.base_ts):
        for tp, ot in (await consumer.offsets_for_times({tp: ts for tp in tps})).items():
            got[(tp.partition, f"ts={ts - args.base_ts:+d}")] = -1 if ot is None else ot.offset
    common.check_list_offsets("consumer", got, common.expected_offsets(args.records, args.partitions, args.base_ts))


async def group_member(args, group, name, seen, stop, assigned):
    """Reads in the group until `stop` is set; commits after every batch, then records it;
    keeps `assigned[name]` up to date with its partitions."""
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, client_id=name, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=200,
                                session_timeout_ms=10_000, heartbeat_interval_ms=500)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            assigned[name] = sorted(tp.partition for tp in consumer.assignment())
            if not batches:
                continue
            try:
                await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items() if recs})
            except KafkaError:
                # A rebalance took the partitions; their new owner reads from the last commit.
                continue
            for tp, recs in batches.items():
                for r in recs:
                    i = common.index_at(tp.partition, r.offset, args.partitions)
                    if r.key != common.key_of(i):
                        raise Mismatch(f"{name}: partition {tp.partition} offset {r.offset}: key {r.key!r}, want "
                                       f"record {i}")
                    key = (tp.partition, r.offset)
                    if key in seen:
                        raise Mismatch(f"partition {key[0]} offset {key[1]} read by {seen[key]} and again by {name}")
                    seen[key] = name
    finally:
        await consumer.stop()


async def group_mode(args):
    await create_topic(args)
    group = f"{args.topic}-group"
    seen = {}
    assigned = {}
    stop = asyncio.Event()
    members = [asyncio.create_task(group_member(args, group, f"a{n}", seen, stop, assigned)) for n in (1, 2)]
    # Produce only once the two members hold disjoint partitions covering the topic, so that
    # both reading some does not depend on join timing.
    deadline = common.Deadline(args.timeout, "the two members to split the partitions")
    while not (len(assigned) == 2 and all(assigned.values())
               and sorted(p for ps in assigned.values() for p in ps) == list(range(args.partitions))):
        for m in members:
            if m.done():
                m.result()
        deadline.check(f"(assignments {assigned})")
        await asyncio.sleep(0.05)
    await produce(args)
    deadline = common.Deadline(args.timeout, "the group consumed")
    last = 0
    while len(seen) < args.records:
        for m in members:
            if m.done():
                stop.set()
                m.result()  # raises the member's failure
        if len(seen) != last:
            last = len(seen)
            deadline.progressed()
        deadline.check(f"({len(seen)}/{args.records})")
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*members)
    if len(set(seen.values())) < 2:
        raise Mismatch(f"only {set(seen.values())} read records; the two members did not share the partitions")
    # A new member of the same group resumes at the commits: the next records it sees are new ones.
    await produce(args, args.records, args.records + args.partitions)
    before = len(seen)
    stop = asyncio.Event()
    member = asyncio.create_task(group_member(args, group, "a3", seen, stop, {}))
    deadline = common.Deadline(args.timeout, "the resumed member consumed")
    while len(seen) < args.records + args.partitions:
        if member.done():
            member.result()
        deadline.check(f"({len(seen) - before}/{args.partitions} new)")
        await asyncio.sleep(0.05)
    stop.set()
    await member
    return args.records + args.partitions, len(seen)


async def run(args):
    produced = consumed = 0
    if args.mode == "group":
        return await group_mode(args)
    if args.mode in ("all", "produce"):
        await create_topic(args)
        await produce(args)
        produced = args.records
    if args.mode in ("all", "consume"):
        consumed = await consume(args)
    return produced, consumed


def main():
    args = common.parse_args(__doc__)
    if args.mode not in ("all", "produce", "consume", "group"):
        fail(f"--mode {args.mode} is not in aiokafka_client.py", 2)
    started = time.monotonic()
    try:
        produced, consumed = asyncio.run(run(args))
    except Mismatch as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic} compression={args.compression}: {e}")
    except KafkaError as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic}: client error {e!r}")
    print(f"SUMMARY client={CLIENT} version={aiokafka.__version__} mode={args.mode} topic={args.topic} "
          f"partitions={args.partitions} compression={args.compression} produced={produced} consumed={consumed} "
          f"base_ts={args.base_ts} seconds={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    main()
