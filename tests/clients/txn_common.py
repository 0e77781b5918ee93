"""Shared helpers of the transaction client programs (txn_confluent.py, txn_kcat.py), on
confluent-kafka (librdkafka): creating topics, reading a topic to its end under either isolation
level, and the checks every program makes on what it read.

Output contract (as common.py): one "SUMMARY ... OK" line and exit 0 on success; "FAIL: <what>"
on stderr and exit 1 on any mismatch, 2 for bad arguments, 3 when a client library is missing.

Reading "to the end" under read_committed means up to the last stable offset; every program
reads only after its last transaction has ended, so the LSO equals the high watermark, and each
reader stops once its position reaches the high watermark of every partition. A control record
(a transaction marker) takes an offset of its own but must never come out as a record, so a
reader also checks that the offsets it saw plus the markers it expects fill the log exactly.
"""

import sys
import time

import common
from common import Mismatch

ck = common.need("confluent-kafka", lambda: __import__("confluent_kafka"))
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

# Every wait here ends with a failure after this long without progress.
PROGRESS_TIMEOUT_S = 60.0


def log_error(err):
    print(f"librdkafka error: {err}", file=sys.stderr, flush=True)


def base_conf(bootstrap):
    return {"bootstrap.servers": bootstrap, "error_cb": log_error, "socket.timeout.ms": 10_000}


def create_topics(bootstrap, partitions_by_topic):
    """Creates the topics and waits until Metadata shows each with a leader per partition."""
    admin = AdminClient(base_conf(bootstrap))
    new = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in partitions_by_topic.items()]
    for topic, future in admin.create_topics(new, operation_timeout=10, request_timeout=15).items():
        try:
            future.result(timeout=30)
        except KafkaException as e:
            raise Mismatch(f"CreateTopics {topic}: {e}")
    deadline = time.monotonic() + 15
    for topic, n in partitions_by_topic.items():
        while True:
            t = admin.list_topics(topic, timeout=10).topics.get(topic)
            if (t is not None and t.error is None and len(t.partitions) == n
                    and all(p.error is None and p.leader >= 0 for p in t.partitions.values())):
                break
            if time.monotonic() > deadline:
                raise Mismatch(f"Metadata for {topic}: {t and t.error}; want {n} partitions with leaders")
            time.sleep(0.1)
    return admin


def high_watermarks(bootstrap, topic, partitions):
    c = Consumer({**base_conf(bootstrap), "group.id": "txn-watermarks", "enable.auto.commit": False})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


def read_all(bootstrap, topic, partitions, isolation):
    """Every record of the topic under `isolation` ("read_committed" or "read_uncommitted"), by
    explicit assignment from offset 0 until the position of each partition reaches its high
    watermark. Returns ({partition: [(offset, key, value)]}, [high watermark per partition])."""
    hw = high_watermarks(bootstrap, topic, partitions)
    c = Consumer({
        **base_conf(bootstrap),
        "group.id": f"txn-reader-{isolation}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
    })
    got = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        done = {p for p in range(partitions) if hw[p] == 0}
        deadline = common.Deadline(PROGRESS_TIMEOUT_S, f"reading {topic} ({isolation})")
        while len(done) < partitions:
            msg = c.poll(0.5)
            if msg is None:
                deadline.check(f"done {sorted(done)}, high watermarks {hw}")
                continue
            deadline.progressed()
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    # EOF at the high watermark means the whole log was read (a read_committed
                    # reader reaches it only once no transaction is open).
                    if msg.offset() >= hw[msg.partition()]:
                        done.add(msg.partition())
                    continue
                raise Mismatch(f"consume {topic} ({isolation}): {msg.error()}")
            p = msg.partition()
            if msg.offset() >= hw[p]:
                raise Mismatch(f"{topic} p{p}: record at offset {msg.offset()} beyond high watermark {hw[p]}")
            got[p].append((msg.offset(), msg.key(), msg.value()))
    finally:
        c.close()
    return got, hw


def check_sequence(what, got, want):
    """got/want: lists of values; names the first difference (duplicate, loss, order)."""
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise Mismatch(f"{what}: at position {i} got {common.short(g)}, want {common.short(w)} "
                           f"({len(got)} records read, {len(want)} expected)")
    extra = got[len(want):] or want[len(got):]
    kind = "extra" if len(got) > len(want) else "missing"
    raise Mismatch(f"{what}: {len(got)} records read, {len(want)} expected; first {kind}: "
                   f"{common.short(extra[0])}")


def check_offsets_fill_log(what, offsets, markers, hw):
    """Records read under read_uncommitted plus the expected control records (one offset each)
    must fill [0, hw) exactly: no record may be a control record, none may be missing."""
    if len(set(offsets)) != len(offsets) or offsets != sorted(offsets):
        raise Mismatch(f"{what}: offsets not strictly increasing: {offsets[:20]}")
    if len(offsets) + markers != hw:
        raise Mismatch(f"{what}: {len(offsets)} records + {markers} transaction markers != high watermark {hw}")
