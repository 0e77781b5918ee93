"""Shared data model and checks for the Python client programs (and the kcat driver).

Every program produces the same deterministic record set, so a failure names the exact record:

  record i (0 <= i < n) goes to partition i % P and is the (i // P)-th record there, so it must
  come back at offset i // P; key b"key-<i>"; value b"value-<i>-" + filler (length varies with i),
  or a NULL value when i % NULL_VALUE_EVERY == NULL_VALUE_AT; headers [("i", b"<i>"),
  ("client", b"<name>"), ("empty", b"")]; CreateTime timestamp base_ts + i (so timestamps rise
  along each partition and a timestamp lookup has one right answer).

The programs print one line starting with "SUMMARY " on success and exit 0; on any mismatch they
print "FAIL: <what>" on stderr and exit 1 (2 for bad arguments, 3 when the client library is
missing), so the Rust tests can assert on exit status and output alone.
"""

import argparse
import sys
import time

FILLER = bytes(range(ord("a"), ord("z") + 1)) * 8
NULL_VALUE_EVERY = 1000
NULL_VALUE_AT = 500
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


class Mismatch(Exception):
    """A difference between what the broker returned and what was produced."""


def fail(msg, code=1):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def need(module_name, import_fn):
    """Import a client library or exit 3 with the fix."""
    try:
        return import_fn()
    except ImportError as e:
        fail(f"{module_name} is not installed ({e}); run `bash .ci/run` to install the test clients", 3)


def parse_args(description, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--compression", choices=CODECS, default="none")
    p.add_argument(
        "--mode",
        choices=("all", "produce", "consume", "live", "group", "admin"),
        default="all",
        help="produce then consume (all), one half (to restart the broker between them), or "
             "live: the consumer is already waiting while the records are produced in chunks; "
             "group: the program's consumer-group test (kcat, kafkajs); admin: its topic admin test "
             "(kafka-python)",
    )
    p.add_argument("--value-bytes", type=int, default=0,
                   help="make every non-NULL value exactly this long (large-record tests)")
    p.add_argument(
        "--base-ts",
        type=int,
        default=None,
        help="timestamp of record 0 in ms; required with --mode consume (the producer prints it)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before failing")
    p.add_argument("--produced-by", default=None,
                   help="with --mode consume: the client that produced (its name is in a header)")
    if extra:
        extra(p)
    args = p.parse_args()
    if args.partitions < 1 or args.records < args.partitions:
        p.error("need partitions >= 1 and records >= partitions")
    if args.mode == "consume" and args.base_ts is None:
        p.error("--mode consume needs --base-ts (printed by --mode produce)")
    global VALUE_BYTES
    VALUE_BYTES = args.value_bytes
    if args.base_ts is None:
        # Ten minutes ago: inside any sane timestamp-skew window, and the last record is still
        # in the past, so brokers that bound CreateTime in the future accept it.
        args.base_ts = int(time.time() * 1000) - 600_000
    return args


def partition_of(i, partitions):
    return i % partitions


def offset_of(i, partitions):
    return i // partitions


def key_of(i):
    return b"key-%d" % i


VALUE_BYTES = 0  # set from --value-bytes


def value_of(i):
    if i % NULL_VALUE_EVERY == NULL_VALUE_AT:
        return None
    prefix = b"value-%d-" % i
    if VALUE_BYTES:
        body = FILLER * (VALUE_BYTES // len(FILLER) + 1)
        return (prefix + body)[:VALUE_BYTES]
    return prefix + FILLER[: 16 + (i * 7) % 150]


def headers_of(i, client):
    return [("i", b"%d" % i), ("client", client.encode()), ("empty", b"")]


def timestamp_of(i, base_ts):
    return base_ts + i


def count_in_partition(p, n, partitions):
    """How many of records 0..n-1 land in partition p."""
    return len(range(p, n, partitions))


def index_at(p, offset, partitions):
    """The record index that must be at `offset` of partition `p`."""
    return p + offset * partitions


def first_offset_at_or_after(p, ts, n, partitions, base_ts):
    """Kafka's answer to ListOffsets(timestamp=ts) on partition p: the first offset whose
    timestamp is >= ts, or None (Kafka answers -1) when there is none."""
    k = ts - base_ts  # smallest record index with timestamp >= ts is max(k, 0)
    k = max(k, 0)
    # smallest i >= k with i % P == p
    i = k + ((p - k) % partitions)
    if i >= n:
        return None
    return offset_of(i, partitions)


def lookup_timestamps(n, base_ts):
    """Timestamps to look up: before everything, exact hits, between, after everything."""
    return [base_ts - 10_000, base_ts, base_ts + 1, base_ts + n // 3, base_ts + n // 2 + 1,
            base_ts + n - 1, base_ts + n + 10_000]


def norm_headers(headers):
    """Headers as a list of (str, bytes) with None values kept as None."""
    out = []
    for k, v in headers or []:
        if isinstance(k, bytes):
            k = k.decode()
        if isinstance(v, str):
            v = v.encode()
        out.append((k, v))
    return out


class Checker:
    """Checks records as they arrive, partition by partition, in offset order."""

    def __init__(self, n, partitions, base_ts, client, check_headers=True, check_timestamps=True):
        self.n = n
        self.partitions = partitions
        self.base_ts = base_ts
        self.client = client
        self.check_headers = check_headers
        self.check_timestamps = check_timestamps
        self.next_offset = [0] * partitions
        self.expected = [count_in_partition(p, n, partitions) for p in range(partitions)]
        self.consumed = 0

    def done(self):
        return self.next_offset == self.expected

    def progress(self):
        return ", ".join(f"p{p}: {self.next_offset[p]}/{self.expected[p]}" for p in range(self.partitions))

    def check(self, partition, offset, key, value, headers, timestamp, timestamp_type=None):
        p = partition
        if not 0 <= p < self.partitions:
            raise Mismatch(f"record from partition {p}, topic has {self.partitions}")
        want_offset = self.next_offset[p]
        if offset != want_offset:
            raise Mismatch(f"partition {p}: got offset {offset}, want {want_offset} (records out of order, "
                           f"duplicated or lost)")
        if want_offset >= self.expected[p]:
            raise Mismatch(f"partition {p}: extra record at offset {offset} (only {self.expected[p]} produced)")
        i = index_at(p, offset, self.partitions)
        where = f"partition {p} offset {offset} (record {i})"
        if key != key_of(i):
            raise Mismatch(f"{where}: key {key!r}, want {key_of(i)!r}")
        want_value = value_of(i)
        if value != want_value:
            raise Mismatch(f"{where}: value {short(value)}, want {short(want_value)}")
        if self.check_headers:
            got = norm_headers(headers)
            want = headers_of(i, self.client)
            if got != want:
                raise Mismatch(f"{where}: headers {got!r}, want {want!r}")
        if self.check_timestamps:
            if timestamp != timestamp_of(i, self.base_ts):
                raise Mismatch(f"{where}: timestamp {timestamp}, want {timestamp_of(i, self.base_ts)}")
            if timestamp_type is not None and timestamp_type != "create":
                raise Mismatch(f"{where}: timestamp type {timestamp_type}, want CreateTime")
        self.next_offset[p] += 1
        self.consumed += 1


def short(b):
    if b is None:
        return "NULL"
    return repr(b if len(b) <= 40 else b[:40] + b"...") + f" ({len(b)} bytes)"


def check_list_offsets(name, got, want):
    """got/want: dicts {(partition, what): offset}; raise on the first difference."""
    bad = [f"{what} p{p}: got {got.get((p, what))}, want {w}"
           for (p, what), w in sorted(want.items(), key=lambda kv: (str(kv[0][1]), kv[0][0]))
           if got.get((p, what)) != w]
    if bad:
        raise Mismatch(f"{name}: ListOffsets answers differ: " + "; ".join(bad[:12]))


def expected_offsets(n, partitions, base_ts):
    """ListOffsets answers the data model implies: earliest, latest and per lookup timestamp."""
    want = {}
    for p in range(partitions):
        want[(p, "earliest")] = 0
        want[(p, "latest")] = count_in_partition(p, n, partitions)
        for ts in lookup_timestamps(n, base_ts):
            off = first_offset_at_or_after(p, ts, n, partitions, base_ts)
            want[(p, f"ts={ts - base_ts:+d}")] = -1 if off is None else off
    return want


class Deadline:
    """Fails when no progress was made for `seconds`."""

    def __init__(self, seconds, what):
        self.seconds = seconds
        self.what = what
        self.last = time.monotonic()

    def progressed(self):
        self.last = time.monotonic()

    def check(self, detail=""):
        if time.monotonic() - self.last > self.seconds:
            raise Mismatch(f"no progress for {self.seconds:.0f}s while {self.what} {detail}")
