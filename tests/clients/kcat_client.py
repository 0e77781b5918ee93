#!/usr/bin/env python3
"""kcat (Debian's, librdkafka 2.0) against a Kafka-compatible broker, driven from Python.

kcat cannot create topics, set per-message timestamps or per-message headers, so its record set
differs from common.py's in those three points:
  - the topic is made by auto-creation (--create auto: kcat's producer asks Metadata with
    allow_auto_topic_creation, and the partition count is whatever the broker defaults to), or
    by confluent-kafka's admin API (--create admin, the default) with --partitions;
  - each partition is produced by one `kcat -P -p <p>` run with headers client=kcat, p=<p>;
  - timestamps are the producer's clock: checked to be non-decreasing along each partition and
    within the produce run's wall-clock window.
Keys, values (with NULLs via -Z), order and offsets per partition are as in common.py. ListOffsets
are checked with `kcat -Q` (earliest -2, latest -1, by timestamp) against the timestamps read back.

  kcat_client.py --bootstrap 127.0.0.1:9092 --topic t [--partitions 4] [--records 10000]
      [--compression none|gzip|snappy|lz4|zstd] [--mode all|produce|consume] [--create admin|auto]
"""

import json
import shutil
import subprocess
import sys
import time

import common
from common import Mismatch, fail

CLIENT = "kcat"
KCAT = shutil.which("kcat")


def extra_args(p):
    p.add_argument("--create", choices=("admin", "auto"), default="admin")
    p.add_argument("--kcat", default=KCAT, help="kcat binary (default: from PATH)")


def kcat(args, *argv, stdin=None, timeout=60):
    cmd = [args.kcat, "-b", args.bootstrap, "-m", "10", "-X", "socket.timeout.ms=10000", *argv]
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Mismatch(f"`{' '.join(cmd)}` did not finish in {timeout}s; stderr: {tail(e.stderr)}")
    if r.returncode != 0:
        raise Mismatch(f"`{' '.join(cmd)}` exited {r.returncode}; stderr: {tail(r.stderr)}")
    return r


def tail(b, n=1500):
    s = (b or b"").decode(errors="replace").strip()
    return s[-n:] if s else "(empty)"


def kcat_value(i):
    """Values as kcat sends them: NULL comes from an empty line with -Z."""
    v = common.value_of(i)
    return b"" if v is None else v


def partitions_of(args):
    r = kcat(args, "-L", "-J", "-t", args.topic)
    md = json.loads(r.stdout)
    topics = [t for t in md.get("topics", []) if t.get("topic") == args.topic]
    if not topics or topics[0].get("error"):
        raise Mismatch(f"kcat -L: topic {args.topic} missing or in error: {topics}")
    parts = sorted(p["partition"] for p in topics[0]["partitions"])
    if parts != list(range(len(parts))):
        raise Mismatch(f"kcat -L: partitions {parts}")
    leaders = {p["partition"]: p.get("leader") for p in topics[0]["partitions"]}
    if any(l is None or l < 0 for l in leaders.values()):
        raise Mismatch(f"kcat -L: partitions without a leader: {leaders}")
    return len(parts)


def create_topic(args):
    if args.create == "auto":
        # One record to partition 0 makes the broker auto-create the topic; it is record 0.
        return None
    common.need("confluent-kafka (for --create admin)", lambda: __import__("confluent_kafka"))
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    fut = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
                              operation_timeout=10, request_timeout=15)[args.topic]
    try:
        fut.result(timeout=30)
    except Exception as e:  # noqa: BLE001 - any admin failure is the test's failure
        raise Mismatch(f"CreateTopics {args.topic} via confluent-kafka admin: {e}")


def producer_flags(args):
    flags = ["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5"]
    if args.compression != "none":
        flags += ["-X", f"compression.codec={args.compression}"]
    return flags


def produce_partition(args, p, indexes):
    lines = b"".join(common.key_of(i) + b"\t" + kcat_value(i) + b"\n" for i in indexes)
    kcat(args, "-P", "-t", args.topic, "-p", str(p), "-K", r"\t", "-Z", "-H", f"client={CLIENT}", "-H", f"p={p}",
         *producer_flags(args), stdin=lines, timeout=120)


def produce(args):
    """Returns the wall-clock window (ms) that CreateTime timestamps must fall into."""
    started_ms = int(time.time() * 1000)
    create_topic(args)
    if args.create == "auto":
        produce_partition(args, 0, [0])
        args.partitions = partitions_of(args)
        if args.records < args.partitions:
            raise Mismatch(f"auto-created topic has {args.partitions} partitions, more than --records")
    else:
        if partitions_of(args) != args.partitions:
            raise Mismatch(f"topic has {partitions_of(args)} partitions, want {args.partitions}")
    for p in range(args.partitions):
        indexes = [i for i in range(p, args.records, args.partitions)]
        if args.create == "auto" and p == 0:
            indexes = indexes[1:]
        produce_partition(args, p, indexes)
    return started_ms - 1000, int(time.time() * 1000) + 1000


def consume(args, window):
    """Reads each partition with `kcat -C -e -J` (no group) and checks it; returns
    [(partition, offset, timestamp)] of every record for the ListOffsets check."""
    args.partitions = partitions_of(args)
    seen = []
    for p in range(args.partitions):
        want = common.count_in_partition(p, args.records, args.partitions)
        r = kcat(args, "-C", "-t", args.topic, "-p", str(p), "-o", "beginning", "-e", "-J", "-c", str(want + 1),
                 timeout=args.timeout)
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        if len(lines) != want:
            raise Mismatch(f"partition {p}: kcat read {len(lines)} records, want {want}; stderr: {tail(r.stderr, 300)}")
        last_ts = None
        for k, line in enumerate(lines):
            m = json.loads(line)
            i = common.index_at(p, k, args.partitions)
            where = f"partition {p} offset {k} (record {i})"
            if m.get("partition") != p or m.get("offset") != k:
                raise Mismatch(f"{where}: kcat shows partition {m.get('partition')} offset {m.get('offset')}")
            key = None if m.get("key") is None else m["key"].encode()
            value = None if m.get("payload") is None else m["payload"].encode()
            if key != common.key_of(i):
                raise Mismatch(f"{where}: key {key!r}, want {common.key_of(i)!r}")
            if value != common.value_of(i):
                raise Mismatch(f"{where}: value {common.short(value)}, want {common.short(common.value_of(i))}")
            # -J prints headers as a flat [name, value, name, value, ...] list.
            hs = m.get("headers") or []
            headers = list(zip(hs[0::2], hs[1::2]))
            if headers != [("client", CLIENT), ("p", str(p))]:
                raise Mismatch(f"{where}: headers {headers}, want client={CLIENT}, p={p}")
            ts = m.get("ts")
            if m.get("tstype") != "create":
                raise Mismatch(f"{where}: timestamp type {m.get('tstype')}, want create")
            if window is not None and not window[0] <= ts <= window[1]:
                raise Mismatch(f"{where}: timestamp {ts} outside the produce window {window}")
            if last_ts is not None and ts < last_ts:
                raise Mismatch(f"{where}: timestamp {ts} before the previous record's {last_ts}")
            last_ts = ts
            seen.append((p, k, ts))
    return seen


def group_read(args, group, first, last):
    """One `kcat -G` member reads the topic to the end of every partition (-e) and must see
    exactly records first..last-1 (from the group's committed offsets), each once."""
    r = kcat(args, "-C", "-G", group, "-J", "-e", "-q", "-X", "auto.offset.reset=earliest",
             "-X", "session.timeout.ms=6000", args.topic, timeout=args.timeout)
    got = {}
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        key = (m["partition"], m["offset"])
        if key in got:
            raise Mismatch(f"kcat -G read partition {key[0]} offset {key[1]} twice")
        i = common.index_at(m["partition"], m["offset"], args.partitions)
        if m.get("key") != common.key_of(i).decode():
            raise Mismatch(f"kcat -G: partition {key[0]} offset {key[1]}: key {m.get('key')!r}, want record {i}")
        got[key] = i
    want = set(range(first, last))
    if set(got.values()) != want:
        missing = sorted(want - set(got.values()))
        extra = sorted(set(got.values()) - want)
        raise Mismatch(f"kcat -G in group {group}: missing records {missing[:10]} ({len(missing)}), unexpected "
                       f"{extra[:10]} ({len(extra)}); stderr: {tail(r.stderr, 500)}")
    return len(got)


def group_mode(args):
    """kcat's balanced consumer (-G; librdkafka 2.0's group protocol versions): read everything,
    read again (nothing: resumed at the committed end), then exactly the records added since."""
    produce(args)
    group = f"{args.topic}-kcat-group"
    consumed = group_read(args, group, 0, args.records)
    consumed += group_read(args, group, args.records, args.records)
    more = args.partitions * 10
    for p in range(args.partitions):
        produce_partition(args, p, [i for i in range(args.records, args.records + more)
                                    if common.partition_of(i, args.partitions) == p])
    consumed += group_read(args, group, args.records, args.records + more)
    return args.records + more, consumed


def list_offsets(args, seen):
    """kcat -Q: -2 (earliest), -1 (latest) and real timestamps, against what was read."""
    by_p = {p: [(k, ts) for (pp, k, ts) in seen if pp == p] for p in range(args.partitions)}
    queries = {}
    for p, recs in by_p.items():
        queries[(p, "earliest")] = (-2, 0)
        queries[(p, "latest")] = (-1, len(recs))
        probes = {recs[0][1] - 5000, recs[0][1], recs[len(recs) // 2][1], recs[-1][1], recs[-1][1] + 5000}
        for ts in probes:
            first = next((k for k, t in recs if t >= ts), -1)
            queries[(p, f"ts={ts}")] = (ts, first)
    # kcat -Q takes one timestamp per partition per run.
    rounds = {}
    for (p, what), (ts, want) in queries.items():
        rounds.setdefault(p, []).append((what, ts, want))
    bad = []
    for r in range(max(len(v) for v in rounds.values())):
        batch = [(p, v[r]) for p, v in rounds.items() if r < len(v)]
        argv = ["-Q"]
        for p, (_, ts, _) in batch:
            argv += ["-t", f"{args.topic}:{p}:{ts}"]
        out = kcat(args, *argv).stdout.decode()
        got = parse_query(out)
        for p, (what, ts, want) in batch:
            if got.get(p) != want:
                bad.append(f"{what} p{p}: got {got.get(p)}, want {want}")
    if bad:
        raise Mismatch("kcat -Q answers differ: " + "; ".join(bad[:12]))


def parse_query(out):
    """kcat -Q prints ' <topic> [<p>] offset <n>' per partition."""
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if "offset" in parts and len(parts) >= 4:
            p = int(parts[parts.index("offset") - 1].strip("[]"))
            got[p] = int(parts[parts.index("offset") + 1])
    return got


def main():
    args = common.parse_args(__doc__, extra_args)
    if not args.kcat:
        fail("kcat is not on PATH; run `bash .ci/run` (it installs Debian's kcat)", 3)
    if args.mode == "live":
        fail("--mode live is only in confluent_kafka_client.py", 2)
    if args.mode == "group" and args.create != "admin":
        fail("--mode group needs --create admin", 2)
    if args.mode == "admin":
        fail("--mode admin: see confluent_admin_client.py / kafka_python_client.py", 2)
    started = time.monotonic()
    produced = consumed = 0
    try:
        window = None
        if args.mode == "group":
            produced, consumed = group_mode(args)
        if args.mode in ("all", "produce"):
            window = produce(args)
            produced = args.records
        if args.mode in ("all", "consume"):
            seen = consume(args, window)
            consumed = len(seen)
            list_offsets(args, seen)
    except Mismatch as e:
        fail(f"{CLIENT} {args.mode} topic={args.topic} compression={args.compression}: {e}")
    version = subprocess.run([args.kcat, "-V"], capture_output=True).stdout.decode().splitlines()
    version = next((l.split()[1] for l in version if l.startswith("Version")), "?")
    print(f"SUMMARY client={CLIENT} version={version} mode={args.mode} topic={args.topic} partitions={args.partitions} "
          f"compression={args.compression} produced={produced} consumed={consumed} "
          f"seconds={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    sys.exit(main())
