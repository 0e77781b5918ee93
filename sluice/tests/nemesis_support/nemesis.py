#!/usr/bin/env python3
"""The clients of the nemesis test (sluice/tests/nemesis.rs, issue 12 "Keep it fixed"): a real
idempotent acks=all producer (librdkafka through confluent-kafka) and a committing consumer
group, kept running while the test injects faults into a 3-node cluster, and the checks at the
end. The test owns the node processes and decides the faults; this program never sleeps to
synchronise: it waits on conditions with deadlines while producing.

  1. CreateTopics RF=3, --partitions partitions, min.insync.replicas=2; wait for a full ISR.
  2. The producer sends record seq to partition seq % P, value `seq=<seq>`, key `key-<seq>`
     (so a record carries the producer's per-partition order: seqs on a partition increase),
     and remembers every acknowledged (partition, offset, seq). Two members of group
     `nemesis-live` consume and commit every second; every commit the coordinator acknowledged
     raises that partition's floor.
  3. Commands from the test on stdin, each answered on stdout:
       ROUND <n> <fault>   -> `ROUND <n> OK`: snapshots the committed-offset floors.
       ACKED <n>           -> `ACKED <n> ...` once a record sent after the command is
                              acknowledged on every partition (the cluster serves writes
                              around the fault).
       HEALED <n>          -> `HEALED <n> ...` once, in addition, every partition has a leader
                              and a full ISR, and the group's committed offsets (OffsetFetch)
                              are at or above the floors of the round's snapshot.
       FINISH              -> stops producing, lets everything drain and runs the checks;
                              prints `HW <partition> <high watermark>` lines and
                              `SUMMARY ... OK`.
  4. Checks: every acknowledged record carries an offset >= 0 and is in the final log exactly
     once at that offset; no record appears twice (seq); seqs increase along each partition;
     nothing in the log was never acknowledged; the live group saw every acknowledged record and
     its committed offsets reached the end of every partition; committed offsets never went
     below an acknowledged commit.

Any failure: `FAIL: ...` on stderr, exit 1 (3 when confluent-kafka is missing). librdkafka's
`eos` debug log goes to --client-log (the idempotence decisions: retries, epoch bumps, implicit
acknowledgements), so a failure can be read against the node logs.

  nemesis.py --bootstrap H:P,H:P,H:P --topic t --client-log FILE [--partitions 3] [--rate 200]
             [--linger-ms 5]
"""

import argparse
import logging
import queue
import re
import sys
import threading
import time

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as e:  # the test says how to install it
    print(f"FAIL: confluent-kafka is not installed ({e}); run `bash .ci/run`", file=sys.stderr, flush=True)
    sys.exit(3)

# Deadlines (seconds): they only turn a hang into a failure. A round's recovery (restart of
# every node, leader elections, ISR expansion) takes seconds on the test's cluster settings.
COMMAND_TIMEOUT = 600
PROGRESS_TIMEOUT = 180
CATCH_UP_TIMEOUT = 180
WARMUP_ACKS = 200
FINAL_ACKS = 100
GROUP = "nemesis-live"
# librdkafka's eos debug line for delivery reports it makes itself, without a response (so
# without an offset): a batch failed with a possibly-persisted error (a timeout), and a later
# batch's success proves it was written after all (rd_kafka_dr_implicit_ack).
IMPLICIT_ACK = re.compile(r"\[(\d+)\] (\d+) message\(s\) implicitly acked by subsequent batch success "
                          r"\(msgids (\d+)\.\.(\d+),")


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now_ms():
    return time.time() * 1000.0


class Nemesis:
    def __init__(self, args):
        self.args = args
        self.topic = args.topic
        self.partitions = args.partitions
        self.admin = AdminClient({"bootstrap.servers": args.bootstrap})
        self.client_log = logging.getLogger("librdkafka")
        handler = logging.FileHandler(args.client_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.client_log.addHandler(handler)
        self.client_log.setLevel(logging.DEBUG)
        self.producer = None
        self.next_seq = 0
        self.sent = {}  # seq -> (partition, sent_at_ms)
        self.acked = {}  # seq -> (partition, offset, acked_at_ms)
        self.no_offset = []  # seqs acknowledged without an offset
        self.delivery_errors = []
        self.interval = 1.0 / args.rate
        self.next_send = time.monotonic()
        self.producing = True
        self.commands = queue.Queue()
        self.consumers = []
        self.stop_consumers = threading.Event()
        # partition -> highest offset whose commit the coordinator acknowledged.
        self.commit_floor = {}
        self.floor_lock = threading.Lock()
        self.checker = Consumer({
            "bootstrap.servers": args.bootstrap,
            "group.id": GROUP,
            "enable.auto.commit": False,
        })
        threading.Thread(target=self._read_stdin, daemon=True).start()

    # ---- control channel ------------------------------------------------------------------

    def _read_stdin(self):
        for line in sys.stdin:
            self.commands.put(line.strip())
        self.commands.put(None)

    def next_command(self):
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            self.step()
            try:
                line = self.commands.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                raise Failed("the test closed stdin")
            return line.split()
        raise Failed(f"no command from the test within {COMMAND_TIMEOUT} s")

    # ---- producer -------------------------------------------------------------------------

    def start_producer(self):
        self.producer = Producer({
            "bootstrap.servers": self.args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.args.linger_ms,
            # Outlives every round: a record that times out is a failure, not noise.
            "message.timeout.ms": 600000,
            # A request's own deadline (capped by this, 60 s by default). Before producing to
            # a new leader, an idempotent producer waits for its requests to the old one, which
            # a frozen node never answers: 10 s keeps pause rounds short (and adds client-side
            # timeouts, so implicit acknowledgements, to what the checks see).
            "socket.timeout.ms": 10000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
            "debug": "eos",
        }, logger=self.client_log)

    def _on_delivery(self, seq, partition, err, msg):
        if err is not None:
            self.delivery_errors.append(f"seq {seq} (partition {partition}): {err}")
            return
        if msg.partition() != partition:
            self.delivery_errors.append(f"seq {seq}: sent to partition {partition}, acked on {msg.partition()}")
            return
        offset = msg.offset()
        if offset is None or offset < 0:
            self.no_offset.append(seq)
            offset = -1
        self.acked[seq] = (partition, offset, now_ms())

    def step(self, wait=0.005):
        """One turn of the producer loop: send what the rate allows, serve delivery reports."""
        if self.producing and time.monotonic() >= self.next_send:
            seq = self.next_seq
            partition = seq % self.partitions
            try:
                self.producer.produce(
                    self.topic,
                    key=f"key-{seq}".encode(),
                    value=f"seq={seq}".encode(),
                    partition=partition,
                    on_delivery=lambda err, msg, s=seq, p=partition: self._on_delivery(s, p, err, msg),
                )
                self.sent[seq] = (partition, now_ms())
                self.next_seq += 1
                self.next_send = max(self.next_send + self.interval, time.monotonic() - 1.0)
            except BufferError:
                pass  # queue full: delivery reports below make room
        self.producer.poll(wait)
        if self.delivery_errors:
            raise Failed("delivery failed: " + "; ".join(self.delivery_errors[:10]))
        errors = [m.error for m in self.consumers if m.error]
        if errors:
            raise Failed(f"live consumer failed: {errors}")

    def produce_until(self, what, cond, timeout, poll_s=0.0):
        deadline = time.monotonic() + timeout
        last = 0.0
        while True:
            if time.monotonic() - last >= poll_s:
                last = time.monotonic()
                if cond():
                    return
            if time.monotonic() > deadline:
                raise Failed(f"{what}: not within {timeout} s (sent {self.next_seq}, acked {len(self.acked)}); "
                             f"metadata: {self.partition_states()}; members: "
                             + " | ".join(m.state() for m in self.consumers))
            self.step(0.02)

    def acked_after(self, t_ms):
        """Partitions with an acknowledged record sent at or after t_ms."""
        return {p for seq, (p, _o, _t) in self.acked.items() if self.sent[seq][1] >= t_ms}

    def wait_acked(self, what):
        t = now_ms()
        want = set(range(self.partitions))
        # Only records sent from now on count; scan the new acknowledgements incrementally.
        seen = set()
        start_seq = self.next_seq

        def cond():
            for seq in range(start_seq, self.next_seq):
                a = self.acked.get(seq)
                if a is not None and self.sent[seq][1] >= t:
                    seen.add(a[0])
            return seen >= want

        self.produce_until(what, cond, PROGRESS_TIMEOUT)

    # ---- metadata -------------------------------------------------------------------------

    def partition_states(self):
        """partition -> (leader, replicas, isr) from Metadata, or None if unavailable."""
        try:
            md = self.admin.list_topics(topic=self.topic, timeout=5)
        except KafkaException:
            return None
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or len(t.partitions) != self.partitions:
            return None
        return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}

    def full_isr(self):
        states = self.partition_states()
        if states is None:
            return False
        return all(leader >= 0 and len(replicas) == 3 and isr == replicas and leader in isr
                   for leader, replicas, isr in states.values())

    def create_topic(self):
        topic = NewTopic(self.topic, num_partitions=self.partitions, replication_factor=3,
                         config={"min.insync.replicas": "2"})
        try:
            self.admin.create_topics([topic], operation_timeout=30)[self.topic].result(timeout=60)
        except KafkaException as e:
            raise Failed(f"CreateTopics {self.topic} RF=3: {e}")

    # ---- committed offsets ----------------------------------------------------------------

    def raise_floor(self, partition, offset):
        with self.floor_lock:
            if offset > self.commit_floor.get(partition, -1):
                self.commit_floor[partition] = offset

    def floors(self):
        with self.floor_lock:
            return dict(self.commit_floor)

    def committed_now(self):
        """partition -> the group's committed offset (OffsetFetch), or None if unavailable."""
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            got = self.checker.committed(tps, timeout=5)
        except KafkaException:
            return None
        out = {}
        for tp in got:
            if tp.error is not None:
                return None
            out[tp.partition] = tp.offset
        return out

    def below_floor(self, floors):
        """The partitions whose committed offset is below `floors` (None: cannot tell yet)."""
        committed = self.committed_now()
        if committed is None:
            return None
        return {p: (committed.get(p), f) for p, f in floors.items() if committed.get(p, -1) < f}

    # ---- consumers ------------------------------------------------------------------------

    def start_consumers(self, count):
        for i in range(count):
            member = LiveMember(self, f"live-{i}")
            self.consumers.append(member)
            member.thread.start()

    def live_group_reading(self):
        assigned = set()
        for m in self.consumers:
            assigned.update(m.assignment)
        read = {p for p, _offset in self.live_seen()}
        return assigned == read == set(range(self.partitions))

    def live_seen(self):
        seen = {}
        for m in self.consumers:
            with m.lock:
                for key, seqs in m.seen.items():
                    seen.setdefault(key, set()).update(seqs)
        return seen

    # ---- the rounds -----------------------------------------------------------------------

    def serve(self):
        round_floors = {}
        while True:
            cmd = self.next_command()
            if cmd[0] == "ROUND" and len(cmd) >= 2:
                round_floors = self.floors()
                log(f"round {cmd[1]}: {' '.join(cmd[2:])}; sent {self.next_seq}, acked {len(self.acked)}, "
                    f"commit floors {round_floors}")
                print(f"ROUND {cmd[1]} OK", flush=True)
            elif cmd[0] == "ACKED" and len(cmd) == 2:
                self.wait_acked(f"round {cmd[1]}: a record sent during the fault acknowledged on every partition")
                print(f"ACKED {cmd[1]} sent={self.next_seq} acked={len(self.acked)}", flush=True)
            elif cmd[0] == "HEALED" and len(cmd) == 2:
                start = time.monotonic()
                self.wait_acked(f"round {cmd[1]}: a record sent after the repair acknowledged on every partition")
                self.produce_until(f"round {cmd[1]}: a leader and full ISR on every partition",
                                   self.full_isr, PROGRESS_TIMEOUT, poll_s=0.25)
                below = {}

                def committed_intact():
                    nonlocal below
                    below = self.below_floor(round_floors)
                    return below == {}

                self.produce_until(f"round {cmd[1]}: committed offsets at or above the floors {round_floors} "
                                   f"(last below: {below})", committed_intact, PROGRESS_TIMEOUT, poll_s=0.5)
                print(f"HEALED {cmd[1]} sent={self.next_seq} acked={len(self.acked)} "
                      f"no_offset={len(self.no_offset)} heal_s={time.monotonic() - start:.1f}", flush=True)
            elif cmd[0] == "FINISH":
                return
            else:
                raise Failed(f"unknown command {cmd}")

    # ---- the end --------------------------------------------------------------------------

    def drain(self):
        target = len(self.acked) + FINAL_ACKS
        self.produce_until("after the rounds", lambda: len(self.acked) >= target, PROGRESS_TIMEOUT)
        self.producing = False
        remaining = self.producer.flush(PROGRESS_TIMEOUT)
        if remaining:
            raise Failed(f"{remaining} records still unacknowledged {PROGRESS_TIMEOUT} s after the last send")
        self.step(0)
        if len(self.acked) != len(self.sent):
            raise Failed(f"sent {len(self.sent)} records, {len(self.acked)} acknowledged, no delivery error")
        log(f"produced {len(self.sent)} records, all acknowledged ({len(self.no_offset)} without an offset)")

        want = {(p, o) for p, o, _t in self.acked.values() if o >= 0}
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while not want <= set(self.live_seen()):
            if time.monotonic() > deadline:
                seen = set(self.live_seen())
                raise Failed(f"the live group saw {len(want & seen)} of {len(want)} acknowledged records within "
                             f"{CATCH_UP_TIMEOUT} s; members: " + " | ".join(m.state() for m in self.consumers))
            self.step(0.2)
        ends = {}
        for p, o, _t in self.acked.values():
            ends[p] = max(ends.get(p, 0), o + 1)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while self.committed_now() != ends:
            if time.monotonic() > deadline:
                raise Failed(f"the group's committed offsets {self.committed_now()} did not reach the ends {ends} "
                             f"within {CATCH_UP_TIMEOUT} s; members: " + " | ".join(m.state() for m in self.consumers))
            self.step(0.2)
        self.stop_consumers.set()
        for m in self.consumers:
            m.thread.join(60)
            if m.thread.is_alive():
                raise Failed(f"{m.name} did not close within 60 s")
            if m.error:
                raise Failed(f"live consumer failed: {m.error}")
        below = self.below_floor(self.floors())
        if below:
            raise Failed(f"committed offsets below acknowledged commits at the end: {below}")

    def read_all(self):
        """A fresh group reads the topic from the beginning up to the high watermarks."""
        c = Consumer({
            "bootstrap.servers": self.args.bootstrap,
            "group.id": f"nemesis-verify-{int(time.time() * 1000)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        try:
            high = {}
            for p in range(self.partitions):
                low, hi = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                if low != 0:
                    raise Failed(f"partition {p}: log start offset {low}, want 0")
                high[p] = hi
            logs = {p: [] for p in range(self.partitions)}
            c.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
            deadline = time.monotonic() + CATCH_UP_TIMEOUT
            while any((logs[p][-1][0] + 1 if logs[p] else 0) < high[p] for p in logs):
                if time.monotonic() > deadline:
                    got = {p: len(v) for p, v in logs.items()}
                    raise Failed(f"verify: read {got} records within {CATCH_UP_TIMEOUT} s, high watermarks {high}")
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise Failed(f"verify consumer: {m.error()}")
                logs[m.partition()].append((m.offset(), parse_seq(m)))
            return logs, high
        finally:
            c.close()

    def story(self, seq):
        def utc(ms):
            return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{int(ms % 1000):03d}Z"
        sent = self.sent.get(seq)
        acked = self.acked.get(seq)
        return (f"sent {utc(sent[1]) if sent else '?'}, acknowledged "
                + (f"at ({acked[0]}, {acked[1]}) {utc(acked[2])}" if acked else "never"))

    def implicit_acks(self):
        """The seqs librdkafka acknowledged implicitly (its eos log): message ids count from 1
        per partition in produce order, so msgid m on partition p is seq (m - 1) * P + p."""
        seqs = set()
        with open(self.args.client_log, errors="replace") as f:
            for line in f:
                m = IMPLICIT_ACK.search(line)
                if m is None:
                    continue
                p, first, last = int(m.group(1)), int(m.group(3)), int(m.group(4))
                seqs.update((msgid - 1) * self.partitions + p for msgid in range(first, last + 1))
        return seqs

    def check(self, logs):
        problems = []
        where = {}  # seq -> (partition, offset)
        for p, records in logs.items():
            prev_offset, prev_seq = -1, -1
            for offset, seq in records:
                if offset <= prev_offset:
                    problems.append(f"partition {p}: offset {offset} after {prev_offset}")
                if seq in where:
                    problems.append(f"seq {seq} twice: {where[seq]} and ({p}, {offset}); {self.story(seq)}")
                if seq % self.partitions != p:
                    problems.append(f"seq {seq} on partition {p}, was sent to {seq % self.partitions}")
                if seq <= prev_seq:
                    problems.append(f"partition {p}: seq {seq} at offset {offset} after seq {prev_seq}")
                where[seq] = (p, offset)
                prev_offset, prev_seq = offset, seq
        implicit = self.implicit_acks()
        for seq in self.no_offset:
            if seq not in implicit:
                problems.append(f"seq {seq} acknowledged without an offset and not by librdkafka's implicit "
                                f"ack: a response carried no base offset (in the log at {where.get(seq)}); "
                                f"{self.story(seq)}")
        for seq, (p, offset, _t) in sorted(self.acked.items()):
            if seq not in where:
                problems.append(f"acknowledged seq {seq} ({p}, {offset}) missing; {self.story(seq)}")
            elif offset >= 0 and where[seq] != (p, offset):
                problems.append(f"acknowledged seq {seq} at ({p}, {offset}) found at {where[seq]}")
        extra = sorted(set(where) - set(self.acked))
        if extra:
            problems.append(f"{len(extra)} records in the log that were never acknowledged, e.g. seqs {extra[:10]}")
        by_offset = {p: dict(records) for p, records in logs.items()}
        for (p, offset), seqs in sorted(self.live_seen().items()):
            logged = by_offset[p].get(offset)
            if seqs != {logged}:
                problems.append(f"the live group read seqs {sorted(seqs)} at ({p}, {offset}); the log has {logged}")
                if len(problems) > 50:
                    break
        if problems:
            raise Failed(f"{len(problems)} problems: " + "; ".join(problems[:25]))
        return len(where)


class LiveMember:
    """A member of the live group in its own thread: consumes and commits every second."""

    def __init__(self, nemesis, name):
        self.nemesis = nemesis
        self.name = name
        self.lock = threading.Lock()
        self.seen = {}  # (partition, offset) -> {seq}
        self.reads = 0
        self.commits = 0
        self.commit_errors = []
        self.error = None
        self.assignment = []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        try:
            c = Consumer({
                "bootstrap.servers": self.nemesis.args.bootstrap,
                "group.id": GROUP,
                "client.id": self.name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 2000,
            })
            c.subscribe([self.nemesis.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            last_commit = time.monotonic()
            while not self.nemesis.stop_consumers.is_set():
                m = c.poll(0.2)
                if m is not None:
                    if m.error():
                        if m.error().fatal():
                            raise Failed(f"{self.name}: fatal consumer error {m.error()}")
                    else:
                        with self.lock:
                            self.seen.setdefault((m.partition(), m.offset()), set()).add(parse_seq(m))
                            self.reads += 1
                if time.monotonic() - last_commit >= 1.0:
                    last_commit = time.monotonic()
                    self._commit(c)
            c.close()
        except Exception as e:  # reported by the main thread
            self.error = f"{type(e).__name__}: {e}"

    def _commit(self, c):
        try:
            done = c.commit(asynchronous=False)
        except KafkaException as e:
            code = e.args[0].code() if e.args else None
            if code != KafkaError._NO_OFFSET:
                self.commit_errors.append(str(e))
            return
        self.commits += 1
        for tp in done or []:
            if tp.error is None and tp.offset >= 0:
                self.nemesis.raise_floor(tp.partition, tp.offset)

    def _on_assign(self, _consumer, partitions):
        self.assignment = sorted(tp.partition for tp in partitions)

    def _on_revoke(self, _consumer, _partitions):
        self.assignment = []

    def state(self):
        return (f"{self.name}: assigned {self.assignment} reads {self.reads} commits {self.commits} "
                f"commit errors {self.commit_errors[-3:]}")


def parse_seq(m):
    value = m.value() or b""
    key = m.key() or b""
    if not value.startswith(b"seq="):
        raise Failed(f"({m.partition()}, {m.offset()}): unexpected value {value[:40]!r}")
    seq = int(value[4:])
    if key != f"key-{seq}".encode():
        raise Failed(f"({m.partition()}, {m.offset()}): key {key!r} does not match value {value!r}")
    return seq


def run(args):
    n = Nemesis(args)
    log(f"create topic {n.topic}: RF=3, {n.partitions} partitions, min.insync.replicas=2")
    n.create_topic()
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while not n.full_isr():
        if time.monotonic() > deadline:
            raise Failed(f"no full ISR within {PROGRESS_TIMEOUT} s of CreateTopics: {n.partition_states()}")
        time.sleep(0.1)
    n.start_producer()
    n.start_consumers(2)
    n.produce_until("warm-up", lambda: len(n.acked) >= WARMUP_ACKS, PROGRESS_TIMEOUT)
    n.produce_until("the live group has every partition assigned and has read from each",
                    n.live_group_reading, PROGRESS_TIMEOUT)
    print(f"READY acked={len(n.acked)}", flush=True)
    n.serve()
    n.drain()
    logs, high = n.read_all()
    verified = n.check(logs)
    commits = sum(m.commits for m in n.consumers)
    commit_errors = sum(len(m.commit_errors) for m in n.consumers)
    log(f"acknowledged commit floors at the end: {n.floors()}")
    for p, hw in sorted(high.items()):
        print(f"HW {p} {hw}", flush=True)
    print(f"SUMMARY sent={len(n.sent)} acked={len(n.acked)} verified={verified} implicit_acks={len(n.no_offset)} "
          f"live_seen={len(n.live_seen())} commits={commits} failed_commits={commit_errors} OK", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--client-log", required=True)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="records per second")
    p.add_argument("--linger-ms", type=int, default=5, help="the producer's linger.ms")
    args = p.parse_args()
    try:
        run(args)
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
