#!/usr/bin/env python3
"""Consumer-group scenarios (issue 4) with real clients, each member a group_member.py process.

Scenarios (--scenario):
  share     a 6-partition topic; members c1, c2 (confluent-kafka) and k1 (kafka-python) share it;
            k2 (kafka-python) joins, c2 leaves (LeaveGroup), k1 is killed with SIGKILL (no
            leave: the group notices by session timeout). After each change the live members'
            assignments must be disjoint and cover every partition, and records produced then
            must be consumed. In the end every record was consumed exactly once.
  restart-1 first half of "resume after broker restart": members consume and commit everything,
            leave; committed offsets must equal the high watermarks. Writes --state.
  restart-2 second half, after the caller restarted the broker: the committed offsets are still
            there, new records are produced and new members of the same group read exactly the
            new records (nothing re-read, nothing skipped).
  static    two static members (group.instance.id); one is closed and restarted within the
            session timeout: no rebalance (the other sees no revoke/assign), it gets its old
            partitions back, and new records are all consumed once.
  kip848    two confluent-kafka members with group.protocol=consumer (KIP-848) share the topic.
  cooperative  three confluent-kafka members with cooperative-sticky; a fourth joins, one
            leaves: balanced after each, every record once, and no member has a partition it
            keeps revoked (incremental rebalancing, KIP-429).
  admin     the admin views of a live group (issue 4): ListGroups with a state filter,
            DescribeGroups (state, members, their assignments), lag per partition from
            OffsetFetch + ListOffsets, through confluent-kafka and kafka-python admin clients;
            then Empty after the members leave, and DeleteGroups.

Prints "SUMMARY ... OK" and exits 0, or "FAIL: ..." on stderr and exits 1.

  group_scenario.py --bootstrap HOST:PORT --scenario share --topic t [--state FILE]
"""

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import common
from common import Mismatch, fail

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 6


class Member:
    def __init__(self, scenario, name, client, instance_id=None, protocol="classic", session_timeout_ms=6000,
                 assignor=None):
        self.name = name
        self.client = client
        self.assignment = None  # the latest full assignment (eager protocol), or the running set
        self.events = []
        self.closed = False
        cmd = [sys.executable, os.path.join(HERE, "group_member.py"), "--bootstrap", scenario.args.bootstrap,
               "--topic", scenario.args.topic, "--partitions", str(PARTITIONS), "--group", scenario.group,
               "--name", name, "--client", client, "--protocol", protocol,
               "--session-timeout-ms", str(session_timeout_ms)]
        if instance_id:
            cmd += ["--instance-id", instance_id]
        if assignor:
            cmd += ["--assignor", assignor]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=self._read, args=(scenario.events,), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self, events):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            events.put(ev)
        events.put({"m": self.name, "ev": "exited"})

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())
            del self.stderr[:-40]

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Scenario:
    def __init__(self, args):
        self.args = args
        self.group = args.group or f"{args.topic}-group"
        self.events = queue.Queue()
        self.members = {}
        self.consumed = {}  # (p, offset) -> member
        self.produced = 0
        self.failures = []
        self.retries = []  # retriable coordinator errors seen (reported in the summary)

    # -- members ---------------------------------------------------------------------------------

    def start(self, name, client, **kw):
        self.members[name] = Member(self, name, client, **kw)

    def live(self):
        return [m for m in self.members.values() if not m.closed]

    def pump(self, timeout):
        """Applies one event (or none within timeout)."""
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        m = self.members.get(ev.get("m"))
        if m is None:
            return
        m.events.append(ev)
        kind = ev.get("ev")
        if kind == "assigned":
            if ev.get("incremental"):
                m.assignment = sorted(set(m.assignment or []) | set(ev["partitions"]))
            else:
                m.assignment = ev["partitions"]
        elif kind == "revoked":
            if ev.get("incremental"):
                m.assignment = sorted(set(m.assignment or []) - set(ev["partitions"]))
            else:
                m.assignment = []
        elif kind == "records":
            for off in range(ev["first"], ev["last"] + 1):
                key = (ev["p"], off)
                if key in self.consumed:
                    raise Mismatch(f"partition {ev['p']} offset {off} consumed by {self.consumed[key]} and again "
                                   f"by {m.name}")
                self.consumed[key] = m.name
        elif kind == "fail":
            raise Mismatch(f"member {m.name}: {ev.get('error')}")
        elif kind in ("exited", "closed"):
            if kind == "exited" and not m.closed and m.proc.poll() not in (None, 0, -signal.SIGKILL):
                raise Mismatch(f"member {m.name} exited with {m.proc.returncode}: " + " | ".join(m.stderr[-8:]))
            if kind == "closed":
                m.closed = True

    def wait_for(self, what, cond, timeout=None):
        timeout = timeout or self.args.timeout
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                state = "; ".join(f"{m.name}: {m.assignment}" for m in self.live())
                raise Mismatch(f"timed out after {timeout:.0f}s waiting for {what} (assignments: {state}; consumed "
                               f"{len(self.consumed)}/{self.produced})\n" + self.stderr_tails())
            self.pump(0.1)

    def stderr_tails(self):
        return "\n".join(f"  [{m.name} stderr] " + " | ".join(m.stderr[-5:]) for m in self.members.values()
                         if m.stderr)

    def balanced(self, names):
        """The given members (and only they) hold disjoint assignments covering every partition."""
        members = [self.members[n] for n in names]
        if any(m.assignment is None for m in members):
            return False
        held = [p for m in members for p in m.assignment]
        return sorted(held) == list(range(PARTITIONS)) and all(m.assignment for m in members[:PARTITIONS])

    def wait_balanced(self, names, what):
        self.wait_for(f"a balanced assignment over {names} ({what})", lambda: self.balanced(names))

    def all_consumed(self):
        return len(self.consumed) >= self.produced

    def stop(self, name):
        m = self.members[name]
        m.terminate()
        self.wait_for(f"{name} to close", lambda: m.closed)
        m.proc.wait(timeout=30)

    def stop_all(self):
        for m in self.live():
            m.terminate()
        self.wait_for("all members to close", lambda: not self.live())

    # -- data ------------------------------------------------------------------------------------

    def create_topic(self):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.args.bootstrap})
        fut = admin.create_topics([NewTopic(self.args.topic, num_partitions=PARTITIONS, replication_factor=1)],
                                  operation_timeout=10)[self.args.topic]
        fut.result(timeout=30)

    def produce(self, count):
        """Produces records self.produced .. self.produced+count-1 of common.py's data model."""
        from confluent_kafka import Producer
        producer = Producer({"bootstrap.servers": self.args.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5})
        errors = []
        base_ts = int(time.time() * 1000) - 600_000
        for i in range(self.produced, self.produced + count):
            producer.produce(self.args.topic, key=common.key_of(i), value=common.value_of(i),
                             partition=common.partition_of(i, PARTITIONS), headers=common.headers_of(i, "scenario"),
                             timestamp=base_ts + i,
                             on_delivery=lambda err, msg: errors.append(err) if err else None)
            producer.poll(0)
        if producer.flush(60) or errors:
            raise Mismatch(f"produce: {errors[:3]} (or unflushed)")
        self.produced += count

    def wait_consumed(self, what):
        self.wait_for(f"all {self.produced} records to be consumed ({what})", self.all_consumed)

    def check_exactly_once(self, start=0):
        want = {(common.partition_of(i, PARTITIONS), common.offset_of(i, PARTITIONS))
                for i in range(start, self.produced)}
        got = set(self.consumed)
        missing = sorted(want - got)
        extra = sorted(got - want)
        if missing or extra:
            raise Mismatch(f"consumed set differs: missing {missing[:10]} ({len(missing)}), "
                           f"unexpected {extra[:10]} ({len(extra)})")

    def committed(self):
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient
        from confluent_kafka import KafkaError, KafkaException
        admin = AdminClient({"bootstrap.servers": self.args.bootstrap})
        req = ConsumerGroupTopicPartitions(self.group, [TopicPartition(self.args.topic, p) for p in range(PARTITIONS)])
        # Right after a restart the coordinator may still be loading its offsets partition; Kafka
        # answers COORDINATOR_LOAD_IN_PROGRESS (retriable) then too, and librdkafka's admin call
        # does not retry it by itself.
        retriable = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                     KafkaError.NOT_COORDINATOR)
        deadline = time.monotonic() + 30
        while True:
            try:
                res = admin.list_consumer_group_offsets([req])[self.group].result(timeout=30)
                return {tp.partition: tp.offset for tp in res.topic_partitions}
            except KafkaException as e:
                if e.args[0].code() not in retriable or time.monotonic() > deadline:
                    raise
                self.retries.append(e.args[0].name())
                time.sleep(0.2)

    def check_committed(self, what):
        want = {p: common.count_in_partition(p, self.produced, PARTITIONS) for p in range(PARTITIONS)}
        got = self.committed()
        if got != want:
            raise Mismatch(f"committed offsets {what}: {got}, want the high watermarks {want}")


def scenario_share(s):
    s.create_topic()
    s.produce(1500)
    s.start("c1", "confluent-kafka")
    s.start("c2", "confluent-kafka")
    s.start("k1", "kafka-python")
    s.wait_balanced(["c1", "c2", "k1"], "three members")
    s.wait_consumed("three members")
    rebalances = 1

    s.start("k2", "kafka-python")
    s.wait_balanced(["c1", "c2", "k1", "k2"], "k2 joined")
    s.produce(1500)
    s.wait_consumed("k2 joined")
    rebalances += 1

    s.stop("c2")
    s.wait_balanced(["c1", "k1", "k2"], "c2 left")
    s.produce(1500)
    s.wait_consumed("c2 left")
    rebalances += 1

    s.members["k1"].kill()
    s.members["k1"].closed = True
    s.wait_balanced(["c1", "k2"], "k1 killed, session timeout")
    s.produce(1500)
    s.wait_consumed("k1 killed")
    rebalances += 1

    s.stop_all()
    s.check_exactly_once()
    s.check_committed("at the end")
    users = sorted(set(s.consumed.values()))
    return f"rebalances={rebalances} members_that_consumed={','.join(users)}"


def scenario_restart_1(s):
    s.create_topic()
    s.produce(3000)
    for name, client in (("c1", "confluent-kafka"), ("c2", "confluent-kafka"), ("k1", "kafka-python")):
        s.start(name, client)
    s.wait_balanced(["c1", "c2", "k1"], "three members")
    s.wait_consumed("before restart")
    s.stop_all()
    s.check_exactly_once()
    s.check_committed("before the restart")
    with open(s.args.state, "w") as f:
        json.dump({"produced": s.produced, "group": s.group}, f)
    return "phase=1"


def scenario_restart_2(s):
    with open(s.args.state) as f:
        state = json.load(f)
    s.produced = state["produced"]
    s.check_committed("after the broker restart")
    before = s.produced
    s.produce(2000)
    for name, client in (("c3", "confluent-kafka"), ("k3", "kafka-python"), ("c4", "confluent-kafka")):
        s.start(name, client)
    s.wait_balanced(["c3", "k3", "c4"], "after restart")
    s.wait_for("the new records", lambda: len(s.consumed) >= s.produced - before)
    s.stop_all()
    s.check_exactly_once(start=before)  # also fails if anything before `before` was re-read
    s.check_committed("after resuming")
    return f"phase=2 resumed_from={before}"


def scenario_static(s):
    s.create_topic()
    s.produce(600)
    s.start("s1", "confluent-kafka", instance_id="static-1", session_timeout_ms=30000)
    s.start("s2", "confluent-kafka", instance_id="static-2", session_timeout_ms=30000)
    s.wait_balanced(["s1", "s2"], "two static members")
    s.wait_consumed("two static members")
    s2 = s.members["s2"]
    s2_events = len([e for e in s2.events if e["ev"] in ("assigned", "revoked")])
    old = list(s.members["s1"].assignment)
    s.stop("s1")  # a static member's close sends no LeaveGroup
    del s.members["s1"]
    s.start("s1", "confluent-kafka", instance_id="static-1", session_timeout_ms=30000)
    s.wait_for("the restarted static member's assignment", lambda: s.members["s1"].assignment is not None)
    if s.members["s1"].assignment != old:
        raise Mismatch(f"restarted static member got {s.members['s1'].assignment}, had {old}")
    s.produce(600)
    s.wait_consumed("after the static restart")
    later = [e for e in s2.events if e["ev"] in ("assigned", "revoked")][s2_events:]
    if later:
        raise Mismatch(f"static member restart caused a rebalance: s2 saw {later}")
    s.stop_all()
    s.check_exactly_once()
    return "rebalances_on_static_restart=0"


def scenario_kip848(s):
    s.create_topic()
    s.produce(1200)
    s.start("n1", "confluent-kafka", protocol="consumer")
    s.start("n2", "confluent-kafka", protocol="consumer")
    s.wait_balanced(["n1", "n2"], "KIP-848 members")
    s.wait_consumed("KIP-848")
    s.stop_all()
    s.check_exactly_once()
    s.check_committed("KIP-848")
    return "protocol=consumer"


def scenario_cooperative(s):
    coop = {"assignor": "cooperative-sticky"}
    s.create_topic()
    s.produce(1200)
    for name in ("c1", "c2", "c3"):
        s.start(name, "confluent-kafka", **coop)
    s.wait_balanced(["c1", "c2", "c3"], "three cooperative members")
    s.wait_consumed("three cooperative members")

    def revoked_but_kept(names, mark):
        """Partitions a member had revoked since `mark` although it holds them now."""
        bad = {}
        for n in names:
            m = s.members[n]
            revoked = {p for e in m.events[mark[n]:] if e["ev"] == "revoked" for p in e["partitions"]}
            kept = revoked & set(m.assignment or [])
            if kept:
                bad[n] = sorted(kept)
        return bad

    mark = {n: len(s.members[n].events) for n in ("c1", "c2", "c3")}
    s.start("c4", "confluent-kafka", **coop)
    s.wait_balanced(["c1", "c2", "c3", "c4"], "c4 joined")
    bad = revoked_but_kept(["c1", "c2", "c3"], mark)
    if bad:
        raise Mismatch(f"cooperative rebalance revoked partitions their owners kept: {bad}")
    s.produce(1200)
    s.wait_consumed("c4 joined")

    mark = {n: len(s.members[n].events) for n in ("c1", "c3", "c4")}
    s.stop("c2")
    s.wait_balanced(["c1", "c3", "c4"], "c2 left")
    bad = revoked_but_kept(["c1", "c3", "c4"], mark)
    if bad:
        raise Mismatch(f"cooperative rebalance after a leave revoked partitions their owners kept: {bad}")
    s.produce(1200)
    s.wait_consumed("c2 left")
    s.stop_all()
    s.check_exactly_once()
    s.check_committed("cooperative")
    return "assignor=cooperative-sticky"


def kafka_python_views(s):
    """The same views through kafka-python's KafkaAdminClient (DescribeGroups v3 with
    include_authorized_operations, which it always sets)."""
    from kafka import KafkaAdminClient
    kadmin = KafkaAdminClient(bootstrap_servers=s.args.bootstrap)
    try:
        groups = [g[0] if isinstance(g, tuple) else g.group for g in kadmin.list_consumer_groups()]
        if s.group not in groups:
            raise Mismatch(f"kafka-python list_consumer_groups: {groups}, want {s.group} in it")
        info = kadmin.describe_consumer_groups([s.group])[0]
        if info.state != "Stable" or len(info.members) != 3:
            raise Mismatch(f"kafka-python describe_consumer_groups: state {info.state}, {len(info.members)} members")
    finally:
        kadmin.close()


def scenario_admin(s):
    from confluent_kafka import ConsumerGroupState, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    admin = AdminClient({"bootstrap.servers": s.args.bootstrap})
    s.create_topic()
    s.produce(1200)
    for name, client in (("c1", "confluent-kafka"), ("c2", "confluent-kafka"), ("k1", "kafka-python")):
        s.start(name, client)
    s.wait_balanced(["c1", "c2", "k1"], "three members")
    s.wait_consumed("three members")

    def listed(state):
        # ListGroups answers COORDINATOR_LOAD_IN_PROGRESS while any offsets partition of the
        # broker loads (Kafka too); retry that, and report how often it happened.
        deadline = time.monotonic() + 30
        while True:
            res = admin.list_consumer_groups(states={state}, request_timeout=15).result(timeout=30)
            loading = [e for e in res.errors if e.code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
            if not loading or time.monotonic() > deadline:
                return [g.group_id for g in res.valid], res.errors
            s.retries.append(f"ListGroups {loading[0].name()}")
            time.sleep(0.2)

    def describe():
        return admin.describe_consumer_groups([s.group], request_timeout=15)[s.group].result(timeout=30)

    def lag():
        committed = s.committed()
        latest = admin.list_offsets({TopicPartition(s.args.topic, p): OffsetSpec.latest() for p in range(PARTITIONS)})
        return {tp.partition: f.result(timeout=30).offset - committed[tp.partition] for tp, f in latest.items()}

    stable, errors = listed(ConsumerGroupState.STABLE)
    if s.group not in stable or errors:
        raise Mismatch(f"ListGroups(state=Stable): {stable}, errors {errors}; want {s.group} in it")
    d = describe()
    if d.state != ConsumerGroupState.STABLE or len(d.members) != 3:
        raise Mismatch(f"DescribeGroups: state {d.state}, {len(d.members)} members; want Stable with 3")
    by_client = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}
    live = {n: s.members[n].assignment for n in ("c1", "c2", "k1")}
    if by_client != live:
        raise Mismatch(f"DescribeGroups member assignments {by_client}, the members say {live}")
    if d.partition_assignor not in ("range", "roundrobin"):
        raise Mismatch(f"DescribeGroups: assignor {d.partition_assignor!r}, want range or roundrobin")
    if any(lag().values()):
        raise Mismatch(f"lag after everything was consumed: {lag()}, want 0 everywhere")

    if s.args.kafka_python_admin:
        kafka_python_views(s)

    s.stop_all()
    s.check_exactly_once()
    d = describe()
    if d.state != ConsumerGroupState.EMPTY or d.members:
        raise Mismatch(f"after all members left: state {d.state}, members {d.members}; want Empty and none")
    empty, _ = listed(ConsumerGroupState.EMPTY)
    if s.group not in empty:
        raise Mismatch(f"ListGroups(state=Empty): {empty}; want {s.group} in it")
    s.produce(60)  # lag is now 10 per partition
    want_lag = {p: 10 for p in range(PARTITIONS)}
    if lag() != want_lag:
        raise Mismatch(f"lag of the empty group after 60 more records: {lag()}, want {want_lag}")
    s.produced -= 60  # nobody reads them; keep the exactly-once bookkeeping honest

    admin.delete_consumer_groups([s.group], request_timeout=15)[s.group].result(timeout=30)
    remaining = [g for state in (ConsumerGroupState.EMPTY, ConsumerGroupState.STABLE) for g in listed(state)[0]]
    if s.group in remaining:
        raise Mismatch(f"after DeleteGroups the group is still listed: {remaining}")
    return "views=ListGroups,DescribeGroups,OffsetFetch,ListOffsets,DeleteGroups"


SCENARIOS = {"share": scenario_share, "restart-1": scenario_restart_1, "restart-2": scenario_restart_2,
             "static": scenario_static, "kip848": scenario_kip848,
             "admin": scenario_admin, "cooperative": scenario_cooperative}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", default=None)
    p.add_argument("--state", default=None, help="file passed from restart-1 to restart-2")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds each step may take")
    p.add_argument("--kafka-python-admin", action="store_true",
                   help="admin scenario: also check the views through kafka-python's admin client")
    args = p.parse_args()
    if args.scenario.startswith("restart") and not args.state:
        p.error("--state is required for restart-1/restart-2")
    common.need("confluent-kafka", lambda: __import__("confluent_kafka"))
    common.need("kafka-python", lambda: __import__("kafka"))
    s = Scenario(args)
    started = time.monotonic()
    try:
        detail = SCENARIOS[args.scenario](s)
    except Mismatch as e:
        fail(f"group scenario {args.scenario}: {e}")
    except Exception as e:  # noqa: BLE001 - a client exception is the scenario's failure
        fail(f"group scenario {args.scenario}: {type(e).__name__}: {e}\n{s.stderr_tails()}")
    finally:
        for m in s.members.values():
            if m.proc.poll() is None:
                m.kill()
    print(f"SUMMARY client=group-scenario scenario={args.scenario} topic={args.topic} group={s.group} "
          f"produced={s.produced} consumed={len(s.consumed)} {detail} coordinator_retries={len(s.retries)} seconds={time.monotonic() - started:.1f} OK",
          flush=True)


if __name__ == "__main__":
    main()
