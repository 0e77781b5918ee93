#!/usr/bin/env python3
"""Failover of a 3-node Sluice cluster under a real idempotent producer and a live consumer group
(issue 7, "must show"), driven by sluice/tests/cluster.rs, which owns the node processes.

  1. CreateTopics RF=3, --partitions partitions, min.insync.replicas=2; wait until every
     partition has a leader and a full ISR.
  2. An idempotent producer (enable.idempotence=true, acks=all) sends keyed records carrying a
     sequence number (record seq goes to partition seq % P) continuously and remembers every
     acknowledged (partition, offset, seq); two members of one consumer group consume at the
     same time and commit every second. Nothing is killed before the group has every partition
     assigned and has read from each.
  3. Leader kill: the leader of partition 0 is SIGKILLed; measured: kill -> first acknowledgement
     of a record sent after the kill, for partition 0 and for every partition. Then restarted,
     and the ISR must become full again.
  4. Follower kill: the same with a follower of partition 0 (one that leads no partition when
     there is such a node).
  5. Producing stops; the live group must have seen every acknowledged record at least once,
     its committed offsets must reach the end of every partition, and everything it saw must be
     in the final log at the same offset (no read above the high watermark that was later
     truncated). A fresh group reads everything from the beginning:
     every acknowledged record exactly once at its acknowledged offset, nothing else (no
     duplicate seq), seqs increasing along each partition.

Control channel with the test (which owns the processes): this program prints `KILL <node>` or
`RESTART <node>` on stdout and keeps producing until the test answers `OK <unix_ms>` on stdin
(the wall-clock time the SIGKILL was sent, or the restarted node printed ready). Progress goes to
stderr. At the end: `TIMING ...` lines and `SUMMARY ... OK` on stdout, exit 0; any failure:
`FAIL: ...` on stderr, exit 1 (3 when confluent-kafka is missing).

  cluster_scenario.py --bootstrap H:P,H:P,H:P --topic t [--partitions 3] [--rate 200]
"""

import argparse
import queue
import sys
import threading
import time

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
except ImportError as e:  # the test says how to install it
    print(f"FAIL: confluent-kafka is not installed ({e}); run `bash .ci/run`", file=sys.stderr, flush=True)
    sys.exit(3)

# Deadlines (seconds). They only turn a hang into a failure; the cluster settings the test
# uses (session timeout 3 s, replica lag 5 s) put the expected times well below them.
CONTROL_TIMEOUT = 120
FAILOVER_TIMEOUT = 90
ISR_TIMEOUT = 90
CATCH_UP_TIMEOUT = 120
WARMUP_ACKS = 300
FINAL_ACKS = 300


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now_ms():
    return time.time() * 1000.0


class Scenario:
    def __init__(self, args):
        self.args = args
        self.topic = args.topic
        self.partitions = args.partitions
        self.admin = AdminClient({"bootstrap.servers": args.bootstrap})
        self.producer = None
        self.next_seq = 0
        self.sent = {}  # seq -> (partition, sent_at_ms)
        self.acked = {}  # seq -> (partition, offset, acked_at_ms)
        self.delivery_errors = []
        self.watch = None  # (t_ms, {partition: first ack time of a record sent at or after t_ms})
        self.interval = 1.0 / args.rate
        self.next_send = time.monotonic()
        self.producing = True
        self.control = queue.Queue()
        self.timings = []
        self.consumers = []
        self.stop_consumers = threading.Event()
        threading.Thread(target=self._read_stdin, daemon=True).start()

    # ---- control channel ------------------------------------------------------------------

    def _read_stdin(self):
        for line in sys.stdin:
            self.control.put(line.strip())
        self.control.put(None)

    def ask(self, command):
        """Prints a command for the test and keeps producing until it answers OK <unix_ms>."""
        print(command, flush=True)
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while time.monotonic() < deadline:
            self.step()
            try:
                line = self.control.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                raise Failed(f"{command}: the test closed stdin")
            parts = line.split()
            if len(parts) != 2 or parts[0] != "OK":
                raise Failed(f"{command}: the test answered {line!r}")
            return float(parts[1])
        raise Failed(f"{command}: no answer from the test within {CONTROL_TIMEOUT} s")

    # ---- producer -------------------------------------------------------------------------

    def start_producer(self):
        self.producer = Producer({
            "bootstrap.servers": self.args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Outlives any failover here: a record that times out is a failure, not noise.
            "message.timeout.ms": 180000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
        })

    def _on_delivery(self, seq, partition, err, msg):
        if err is not None:
            self.delivery_errors.append(f"seq {seq} (partition {partition}): {err}")
            return
        if msg.partition() != partition:
            self.delivery_errors.append(f"seq {seq}: sent to partition {partition}, acked on {msg.partition()}")
            return
        acked_at = now_ms()
        self.acked[seq] = (partition, msg.offset(), acked_at)
        if self.watch is not None and self.sent[seq][1] >= self.watch[0]:
            self.watch[1].setdefault(partition, acked_at)

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

    def produce_until(self, what, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise Failed(f"{what}: not within {timeout} s (sent {self.next_seq}, acked {len(self.acked)})")
            self.step()

    def watch_acks_after(self, t_ms):
        """From now on, note per partition the first acknowledgement of a record sent at or after
        t_ms (delivery reports come in time order); the dict fills as they arrive."""
        first = {}
        for seq, (partition, _offset, acked_at) in self.acked.items():
            if self.sent[seq][1] >= t_ms and (partition not in first or acked_at < first[partition]):
                first[partition] = acked_at
        self.watch = (t_ms, first)
        return first

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

    def wait_full_isr(self, what, producing):
        start = time.monotonic()
        deadline = start + ISR_TIMEOUT
        last_poll = 0.0
        while True:
            if time.monotonic() - last_poll >= 0.25:
                last_poll = time.monotonic()
                if self.full_isr():
                    return time.monotonic() - start
            if time.monotonic() > deadline:
                raise Failed(f"{what}: no leader and full ISR on every partition within {ISR_TIMEOUT} s; "
                             f"last metadata: {self.partition_states()}")
            if producing:
                self.step(0.05)
            else:
                time.sleep(0.05)

    # ---- topic ----------------------------------------------------------------------------

    def create_topic(self):
        topic = NewTopic(self.topic, num_partitions=self.partitions, replication_factor=3,
                         config={"min.insync.replicas": "2"})
        try:
            self.admin.create_topics([topic], operation_timeout=30)[self.topic].result(timeout=60)
        except KafkaException as e:
            raise Failed(f"CreateTopics {self.topic} RF=3: {e}")
        res = ConfigResource(ResourceType.TOPIC, self.topic)
        try:
            configs = self.admin.describe_configs([res])[res].result(timeout=30)
        except KafkaException as e:
            raise Failed(f"DescribeConfigs {self.topic}: {e}")
        misr = configs.get("min.insync.replicas")
        if misr is None or misr.value != "2":
            raise Failed(f"min.insync.replicas of {self.topic} is {misr and misr.value!r}, want '2'")

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

    def live_committed(self):
        """partition -> the group's committed offset, as last fetched by its current owner."""
        committed = {}
        for m in self.consumers:
            for p in m.assignment:
                if p in m.committed:
                    committed[p] = m.committed[p]
        return committed

    def live_seen(self):
        seen = {}
        for m in self.consumers:
            with m.lock:
                for key, seqs in m.seen.items():
                    seen.setdefault(key, set()).update(seqs)
        return seen

    # ---- the failure phases ---------------------------------------------------------------

    def kill_phase(self, role, node):
        states = self.partition_states()
        log(f"{role} kill: node {node}; metadata before: {states}")
        acked_before = len(self.acked)
        t_kill = self.ask(f"KILL {node}")
        log(f"{role} kill: node {node} killed at {t_kill:.0f}")
        want = set(range(self.partitions))
        first = self.watch_acks_after(t_kill)
        self.produce_until(f"{role} kill of node {node}: a record sent after the kill acknowledged on every partition",
                           lambda: set(first) >= want, FAILOVER_TIMEOUT)
        self.watch = None
        p0_ms = first[0] - t_kill
        all_ms = max(first.values()) - t_kill
        any_ms = min(first.values()) - t_kill
        after = self.partition_states()
        log(f"{role} kill: first ack after kill: partition 0 {p0_ms:.0f} ms, first partition {any_ms:.0f} ms, "
            f"all partitions {all_ms:.0f} ms; metadata after: {after}")
        if states is not None and role == "leader":
            new_leader = after[0][0] if after else None
            if new_leader == node:
                raise Failed(f"partition 0 still led by killed node {node}")
        t_restart = self.ask(f"RESTART {node}")
        isr_s = self.wait_full_isr(f"after restarting node {node}", producing=True)
        log(f"{role} kill: node {node} back; full ISR {isr_s:.1f} s after its restart")
        self.timings.append(
            f"TIMING {role}_kill node={node} kill_to_first_ack_p0_ms={p0_ms:.0f} "
            f"kill_to_first_ack_any_ms={any_ms:.0f} kill_to_first_ack_all_ms={all_ms:.0f} "
            f"restart_to_full_isr_ms={(isr_s * 1000):.0f} acked_during_phase={len(self.acked) - acked_before}")
        return p0_ms, t_restart

    def leader_of_p0(self):
        states = self.partition_states()
        if states is None or states[0][0] < 0:
            raise Failed(f"no leader for partition 0: {states}")
        return states[0][0]

    def follower_of_p0(self):
        states = self.partition_states()
        if states is None:
            raise Failed("no metadata for the follower kill")
        leader, _replicas, isr = states[0]
        followers = [n for n in isr if n != leader]
        if not followers:
            raise Failed(f"partition 0 has no follower in its ISR: {states}")
        leaders = {s[0] for s in states.values()}
        pure = [n for n in followers if n not in leaders]
        return (pure or followers)[0]

    # ---- checks ---------------------------------------------------------------------------

    def read_all(self):
        """A fresh group reads the topic from the beginning up to the high watermarks."""
        c = Consumer({
            "bootstrap.servers": self.args.bootstrap,
            "group.id": f"cluster-verify-{int(time.time() * 1000)}",
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
            log(f"verify: high watermarks {high}")
            logs = {p: [] for p in range(self.partitions)}
            c.subscribe([self.topic])
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
        """When a record was sent and acknowledged (UTC wall clock, to match the node logs)."""
        def utc(ms):
            return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{int(ms % 1000):03d}Z"
        sent = self.sent.get(seq)
        acked = self.acked.get(seq)
        return (f"sent {utc(sent[1]) if sent else '?'}, acknowledged "
                + (f"at ({acked[0]}, {acked[1]}) {utc(acked[2])}" if acked else "never"))

    def check(self, logs, high):
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
        for seq, (p, offset, _t) in sorted(self.acked.items()):
            if seq not in where:
                problems.append(f"acknowledged seq {seq} ({p}, {offset}) missing; {self.story(seq)}")
            elif where[seq] != (p, offset):
                problems.append(f"acknowledged seq {seq} at ({p}, {offset}) found at {where[seq]}")
        extra = sorted(set(where) - set(self.acked))
        if extra:
            problems.append(f"{len(extra)} records in the log that were never acknowledged, e.g. seqs {extra[:10]}")
        seen = self.live_seen()
        missed = [seq for seq, (p, offset, _t) in sorted(self.acked.items()) if (p, offset) not in seen]
        if missed:
            problems.append(f"the live group never saw {len(missed)} acknowledged records, e.g. seqs {missed[:10]}")
        by_offset = {p: dict(records) for p, records in logs.items()}
        for (p, offset), seqs in sorted(seen.items()):
            logged = by_offset[p].get(offset)
            if seqs != {logged}:
                problems.append(f"the live group read seqs {sorted(seqs)} at ({p}, {offset}); the log has {logged}")
                if len(problems) > 50:
                    break
        if problems:
            raise Failed(f"{len(problems)} problems: " + "; ".join(problems[:25]))
        return len(where), len(seen)


class LiveMember:
    """A member of the live group in its own thread: consumes and commits every second."""

    def __init__(self, scenario, name):
        self.scenario = scenario
        self.name = name
        self.lock = threading.Lock()
        self.seen = {}  # (partition, offset) -> {seq}
        self.reads = 0
        self.commits = 0
        self.commit_errors = []
        self.error = None
        self.assignment = []
        self.positions = {}  # partition -> position, refreshed every second
        self.committed = {}
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        try:
            c = Consumer({
                "bootstrap.servers": self.scenario.args.bootstrap,
                "group.id": "cluster-live",
                "client.id": self.name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 2000,
            })
            c.subscribe([self.scenario.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            last_commit = time.monotonic()
            while not self.scenario.stop_consumers.is_set():
                m = c.poll(0.2)
                if m is not None:
                    if m.error():
                        if m.error().fatal():
                            raise Failed(f"{self.name}: fatal consumer error {m.error()}")
                        log(f"{self.name}: consumer error (client retries) {m.error()}")
                    else:
                        with self.lock:
                            self.seen.setdefault((m.partition(), m.offset()), set()).add(parse_seq(m))
                            self.reads += 1
                if time.monotonic() - last_commit >= 1.0:
                    last_commit = time.monotonic()
                    self._note_positions(c)
                    try:
                        c.commit(asynchronous=False)
                        self.commits += 1
                    except KafkaException as e:
                        code = e.args[0].code() if e.args else None
                        if code != KafkaError._NO_OFFSET:
                            self.commit_errors.append(str(e))
            c.close()
        except Exception as e:  # reported by the main thread
            self.error = f"{type(e).__name__}: {e}"

    def _on_assign(self, _consumer, partitions):
        self.assignment = sorted(tp.partition for tp in partitions)
        log(f"{self.name}: assigned {self.assignment}")

    def _on_revoke(self, _consumer, partitions):
        log(f"{self.name}: revoked {sorted(tp.partition for tp in partitions)}")
        self.assignment = []

    def _note_positions(self, c):
        tps = [TopicPartition(self.scenario.topic, p) for p in self.assignment]
        if not tps:
            return
        try:
            self.positions = {tp.partition: tp.offset for tp in c.position(tps)}
            self.committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=2)}
        except KafkaException as e:
            log(f"{self.name}: position/committed: {e}")

    def state(self):
        return (f"{self.name}: assigned {self.assignment} positions {self.positions} committed {self.committed} "
                f"reads {self.reads} commits {self.commits} commit errors {self.commit_errors[-3:]}")


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
    s = Scenario(args)
    log(f"create topic {s.topic}: RF=3, {s.partitions} partitions, min.insync.replicas=2")
    s.create_topic()
    isr_s = s.wait_full_isr("after CreateTopics", producing=False)
    log(f"full ISR on every partition {isr_s:.1f} s after CreateTopics: {s.partition_states()}")

    s.start_producer()
    s.start_consumers(2)
    s.produce_until("warm-up", lambda: len(s.acked) >= WARMUP_ACKS, FAILOVER_TIMEOUT)
    # The group must be consuming before anything is killed, or it would only read afterwards.
    s.produce_until("the live group has every partition assigned and has read from each",
                    s.live_group_reading, FAILOVER_TIMEOUT)
    log("live group: " + " | ".join(m.state() for m in s.consumers))

    leader = s.leader_of_p0()
    leader_p0_ms, _ = s.kill_phase("leader", leader)
    s.produce_until("between the phases", lambda: len(s.acked) >= len(s.sent) - 50, FAILOVER_TIMEOUT)
    follower = s.follower_of_p0()
    follower_p0_ms, _ = s.kill_phase("follower", follower)

    target = len(s.acked) + FINAL_ACKS
    s.produce_until("after the failovers", lambda: len(s.acked) >= target, FAILOVER_TIMEOUT)
    s.producing = False
    remaining = s.producer.flush(60)
    if remaining:
        raise Failed(f"{remaining} records still unacknowledged 60 s after the last send")
    s.step(0)
    if len(s.acked) != len(s.sent):
        raise Failed(f"sent {len(s.sent)} records, {len(s.acked)} acknowledged, no delivery error")
    log(f"produced {len(s.sent)} records, all acknowledged")

    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    want = {(p, offset) for p, offset, _t in s.acked.values()}
    while not want <= set(s.live_seen()):
        errors = [m.error for m in s.consumers if m.error]
        if errors:
            raise Failed(f"live consumer failed: {errors}")
        if time.monotonic() > deadline:
            seen = set(s.live_seen())
            missing = {}
            for p, offset in want - seen:
                missing.setdefault(p, []).append(offset)
            gaps = {p: f"{len(v)} offsets in [{min(v)}, {max(v)}]" for p, v in sorted(missing.items())}
            raise Failed(f"the live group saw {len(want & seen)} of {len(want)} acknowledged records "
                         f"within {CATCH_UP_TIMEOUT} s; missing per partition: {gaps}; members: "
                         + " | ".join(m.state() for m in s.consumers))
        time.sleep(0.2)
    # Members commit every second: the group's committed offsets must reach the end.
    ends = {}
    for p, offset, _t in s.acked.values():
        ends[p] = max(ends.get(p, 0), offset + 1)
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while s.live_committed() != ends:
        if time.monotonic() > deadline:
            raise Failed(f"the live group's committed offsets {s.live_committed()} did not reach the ends {ends} "
                         f"within {CATCH_UP_TIMEOUT} s; members: " + " | ".join(m.state() for m in s.consumers))
        time.sleep(0.2)
    s.stop_consumers.set()
    for m in s.consumers:
        m.thread.join(60)
        if m.thread.is_alive():
            raise Failed(f"{m.name} did not close within 60 s")
        if m.error:
            raise Failed(f"live consumer failed: {m.error}")
    commits = sum(m.commits for m in s.consumers)
    commit_errors = [e for m in s.consumers for e in m.commit_errors]
    log(f"live group: {sum(m.reads for m in s.consumers)} reads, {commits} commits, "
        f"{len(commit_errors)} failed commits (retried next second): {commit_errors[:5]}")

    logs, high = s.read_all()
    verified, live_seen = s.check(logs, high)
    for line in s.timings:
        print(line, flush=True)
    print(f"SUMMARY produced={len(s.sent)} acked={len(s.acked)} verified={verified} live_seen={live_seen} "
          f"leader_kill_p0_ms={leader_p0_ms:.0f} follower_kill_p0_ms={follower_p0_ms:.0f} "
          f"killed_leader={leader} killed_follower={follower} OK", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="records per second")
    args = p.parse_args()
    try:
        run(args)
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
