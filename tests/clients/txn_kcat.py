#!/usr/bin/env python3
"""kcat's transactional producer (`-X transactional.id=...`: kcat wraps each produce run in one
transaction and commits it at the end), read back with kcat under both isolation levels, issue 15.

On one partition of a fresh topic:
  1. kcat produces FIRST records (key k<i>, value kcat-a-<i>) in one transaction;
  2. confluent-kafka writes ABORTED records (value aborted-<i>) in a transaction it aborts;
  3. kcat produces SECOND records (value kcat-b-<i>) in a second transaction, same id.
Checks: `kcat -C -X isolation.level=read_committed` reads exactly the kcat records, in order;
read_uncommitted reads all three runs; the offsets are Kafka's layout, one offset per transaction
marker after each run (so kcat's produce really was transactional); the high watermark counts
the three markers. --inject-fault duplicate|missing corrupts the read_committed result before
the checks, to show they catch it.

  txn_kcat.py --bootstrap HOST:PORT [--topic kcat-txn] [--inject-fault none|duplicate|missing]
"""

import argparse
import json
import shutil
import subprocess
import time

import common
import txn_common
from common import Mismatch, fail
from txn_common import base_conf

from confluent_kafka import KafkaException, Producer  # noqa: E402

FIRST = 20
ABORTED = 10
SECOND = 15
PARTITION = 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", default="kcat-txn")
    p.add_argument("--kcat", default=shutil.which("kcat"))
    p.add_argument("--inject-fault", choices=("none", "duplicate", "missing"), default="none")
    args = p.parse_args()
    if not args.kcat:
        fail("kcat is not on PATH; run `bash .ci/run` to install the test clients", 3)
    return args


def kcat(args, *argv, stdin=None):
    cmd = [args.kcat, "-b", args.bootstrap, "-X", "socket.timeout.ms=10000", *argv]
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=txn_common.PROGRESS_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise Mismatch(f"`{' '.join(cmd)}` did not finish; stderr: {(e.stderr or b'').decode(errors='replace')[-1500:]}")
    if r.returncode != 0:
        raise Mismatch(f"`{' '.join(cmd)}` exited {r.returncode}; stderr: {r.stderr.decode(errors='replace')[-1500:]}")
    return r


def kcat_produce(args, prefix, count):
    lines = b"".join(b"k%d:%s%d\n" % (i, prefix, i) for i in range(count))
    kcat(args, "-P", "-t", args.topic, "-p", str(PARTITION), "-K", ":",
         "-X", f"transactional.id={args.topic}-kcat", stdin=lines)


def aborted_transaction(args):
    p = Producer({**base_conf(args.bootstrap), "transactional.id": f"{args.topic}-aborter"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(ABORTED):
        p.produce(args.topic, key=b"k%d" % i, value=b"aborted-%d" % i, partition=PARTITION)
    if p.flush(30) != 0:
        raise Mismatch("aborted transaction: records left unacknowledged")
    p.abort_transaction(30)


def kcat_read(args, isolation):
    r = kcat(args, "-C", "-t", args.topic, "-p", str(PARTITION), "-o", "beginning", "-e", "-J",
             "-X", f"isolation.level={isolation}")
    out = []
    for line in r.stdout.decode().splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        out.append((m["offset"], m["key"], m["payload"]))
    return out


def main():
    args = parse_args()
    started = time.monotonic()
    txn_common.create_topics(args.bootstrap, {args.topic: 1})
    kcat_produce(args, b"kcat-a-", FIRST)
    aborted_transaction(args)
    kcat_produce(args, b"kcat-b-", SECOND)

    committed = kcat_read(args, "read_committed")
    if args.inject_fault == "duplicate":
        committed.insert(1, committed[0])
    elif args.inject_fault == "missing":
        del committed[len(committed) // 2]
    uncommitted = kcat_read(args, "read_uncommitted")
    hw = txn_common.high_watermarks(args.bootstrap, args.topic, 1)[0]

    first = [f"kcat-a-{i}" for i in range(FIRST)]
    aborted = [f"aborted-{i}" for i in range(ABORTED)]
    second = [f"kcat-b-{i}" for i in range(SECOND)]
    txn_common.check_sequence("kcat read_committed", [v for _, _, v in committed], first + second)
    txn_common.check_sequence("kcat read_committed keys", [k for _, k, _ in committed],
                              [f"k{i}" for i in range(FIRST)] + [f"k{i}" for i in range(SECOND)])
    txn_common.check_sequence("kcat read_uncommitted", [v for _, _, v in uncommitted], first + aborted + second)
    # A marker follows each of the three transactions.
    a_end = FIRST + 1 + ABORTED
    want_offsets = (list(range(0, FIRST)) + list(range(FIRST + 1, a_end))
                    + list(range(a_end + 1, a_end + 1 + SECOND)))
    got_offsets = [o for o, _, _ in uncommitted]
    if got_offsets != want_offsets:
        raise Mismatch(f"kcat read_uncommitted offsets {got_offsets}, want {want_offsets} (a marker after each run)")
    txn_common.check_offsets_fill_log("kcat read_uncommitted", got_offsets, 3, hw)
    print(f"SUMMARY client=kcat scenario=transactional-produce committed={len(committed)} "
          f"aborted={ABORTED} high_watermark={hw} elapsed_s={time.monotonic() - started:.1f} OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (Mismatch, KafkaException) as e:
        fail(str(e))
