#!/usr/bin/env python3
"""The clients of the transactional nemesis (sluice/tests/nemesis_txn.rs, issue 15): a real
exactly-once consume-transform-produce app (librdkafka through confluent-kafka) kept running
while the test SIGKILLs the transaction coordinator, the group coordinator and partition
leaders of a 3-node cluster, and the checks at the end. The test owns the node processes and
decides the faults; this program never sleeps to synchronise: it waits on conditions with
deadlines.

  1. CreateTopics `<topic>-in` and `<topic>-out`, RF=3, --partitions partitions,
     min.insync.replicas=2; wait for a full ISR.
  2. The feeder (an idempotent acks=all producer, not transactional) sends input record seq to
     partition seq % P, key `key-<seq>`, value `seq=<seq>`, and remembers what was
     acknowledged.
  3. The app (its own thread) is what an EOS app is: a read_committed consumer in group
     `eos-app` (no auto commit) and a transactional producer (`transactional.id` eos-app-txn).
     Each turn: consume a batch, begin_transaction, produce `seq=<seq> txn=<n>` to the same
     partition of the output topic for each input record, send_offsets_to_transaction (the
     positions after the batch, with the consumer's group metadata), then commit, or abort
     (seeded draw, --abort-percent) and rewind the consumer to its committed offsets. Errors
     the way EOS apps handle them (librdkafka's transactions example): retriable -> retry the
     call; txn_requires_abort -> abort_transaction and rewind; fatal (fenced) -> a new
     producer, init_transactions, rewind.
  4. Commands from the test on stdin, each answered on stdout:
       ROUND <n> <fault>  -> `ROUND <n> OK`.
       AFTER <n> <k>      -> `AFTER <n> ...` once k more transactions ended (the test's seeded
                             moment to strike).
       ACKED <n>          -> `ACKED <n> ...` once a transaction begun after the command
                             committed and a feeder record sent after it was acknowledged on
                             every input partition (the cluster serves around the fault).
       HEALED <n>         -> `HEALED <n> ...` the same, and a leader with a full ISR on every
                             partition of both topics.
       FINISH             -> stops feeding, waits until the app committed the input's end on
                             every partition, stops the app and runs the checks; `SUMMARY ...
                             OK`.
  5. Checks (read_committed reads of the whole output after the last stable offset reached the
     high watermark everywhere: no transaction left hanging): every acknowledged input record's
     transform is in the output exactly once (zero loss, zero duplicates) and nothing else is;
     on each output partition seqs increase (the input's order) and sit on their input's
     partition; no record of an aborted transaction is visible; every committed transaction
     is visible whole; a transaction whose outcome the app could not learn (a fatal error
     during commit) is visible whole or not at all. A read_uncommitted read counts the aborted
     records physically in the log, so the "none visible" check is not vacuous.

Any failure: `FAIL: ...` on stderr, exit 1 (3 when confluent-kafka is missing). librdkafka's
`eos` debug log of the transactional producer goes to --client-log.

  nemesis_txn.py --bootstrap H:P,... --topic t --client-log FILE --seed N [--partitions 3]
                 [--rate 100] [--abort-percent 25]
"""

import argparse
import faulthandler
import logging
import queue
import random
import sys
import threading
import time

try:
    from confluent_kafka import (Consumer, IsolationLevel, KafkaError, KafkaException, Producer,
                                 TopicPartition)
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
except ImportError as e:  # the test says how to install it
    print(f"FAIL: confluent-kafka is not installed ({e}); run `bash .ci/run`", file=sys.stderr, flush=True)
    sys.exit(3)

# Deadlines (seconds): they only turn a hang into a failure.
COMMAND_TIMEOUT = 600
PROGRESS_TIMEOUT = 180
CATCH_UP_TIMEOUT = 240
# One transactional call (init/send_offsets/commit/abort); retriable errors retry it until
# PROGRESS_TIMEOUT.
TXN_CALL_TIMEOUT = 30
# The producer's transaction.timeout.ms: longer than a round's failover, so the coordinator
# does not abort a live transaction (that path, a fenced producer, still occurs when a
# coordinator move outlasts it).
TXN_TIMEOUT_MS = 60000
WARMUP_TXNS = 5
BATCH_MAX = 50
GROUP = "eos-app"
TRANSACTIONAL_ID = "eos-app-txn"


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kafka_error(e):
    return e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None


class App:
    """The exactly-once consume-transform-produce app, in its own thread."""

    def __init__(self, args, client_log):
        self.args = args
        self.client_log = client_log
        self.rng = random.Random(args.seed)
        self.input = f"{args.topic}-in"
        self.output = f"{args.topic}-out"
        self.lock = threading.Lock()
        self.txn = 0  # number of the current / last transaction
        self.outcome = {}  # txn -> "committed" | "aborted" | "unknown"
        self.produced = {}  # txn -> [(partition, seq)]
        self.ended = 0  # transactions ended (any outcome)
        self.committed_at = []  # (txn, began_monotonic) of committed transactions
        self.stats = {"commits": 0, "aborts": 0, "abortable": 0, "fatal": 0, "retries": 0, "rewinds": 0,
                      "rebalances": 0}
        self.errors = []  # the last few errors, for the summary
        self.stop = threading.Event()
        self.failure = None
        self.producer = None
        self.consumer = None
        self.thread = threading.Thread(target=self._run, name="eos-app", daemon=True)

    # ---- what the main thread reads ------------------------------------------------------

    def snapshot(self):
        with self.lock:
            return self.ended, dict(self.stats)

    def committed_since(self, t):
        with self.lock:
            return any(began >= t for _txn, began in self.committed_at)

    # ---- the app --------------------------------------------------------------------------

    def _new_producer(self):
        if self.producer is not None:
            # The old one is fatal: drop it without flushing (its transaction is the
            # coordinator's to abort when the new one's InitProducerId fences it).
            self.producer = None
        self.producer = Producer({
            "bootstrap.servers": self.args.bootstrap,
            "transactional.id": TRANSACTIONAL_ID,
            "transaction.timeout.ms": TXN_TIMEOUT_MS,
            "linger.ms": 5,
            "socket.timeout.ms": 10000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
            "debug": self.args.debug,
        }, logger=self.client_log)
        self._retrying("init_transactions", lambda: self.producer.init_transactions(TXN_CALL_TIMEOUT))

    def _retrying(self, what, call):
        """Runs a transactional call, retrying it while its error is retriable; raises the
        KafkaException of an abortable or fatal error."""
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        while True:
            try:
                return call()
            except KafkaException as e:
                err = kafka_error(e)
                if err is None or err.fatal() or err.txn_requires_abort() or not err.retriable():
                    raise
                self._note(f"{what}: retriable {err}")
                with self.lock:
                    self.stats["retries"] += 1
                if time.monotonic() > deadline:
                    raise Failed(f"{what}: still retriable after {PROGRESS_TIMEOUT} s: {err}")

    def _note(self, msg):
        with self.lock:
            self.errors = (self.errors + [msg])[-8:]

    def _on_assign(self, _c, partitions):
        with self.lock:
            self.stats["rebalances"] += 1
        log(f"app: assigned {sorted(tp.partition for tp in partitions)}")

    def _on_revoke(self, _c, partitions):
        log(f"app: revoked {sorted(tp.partition for tp in partitions)}")

    def _rewind(self):
        """Seeks every assigned partition back to the group's committed offset (the start of
        the aborted transaction's input): librdkafka's transactions example."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        while True:
            try:
                committed = self.consumer.committed(assignment, timeout=TXN_CALL_TIMEOUT)
                break
            except KafkaException as e:
                self._note(f"committed(): {kafka_error(e)}")
                if time.monotonic() > deadline:
                    raise Failed(f"rewind: no committed offsets within {PROGRESS_TIMEOUT} s: {e}")
        for tp in committed:
            if tp.error is not None:
                raise Failed(f"rewind: committed offset of {tp}: {tp.error}")
            offset = tp.offset if tp.offset >= 0 else 0
            self.consumer.seek(TopicPartition(self.input, tp.partition, offset))
        with self.lock:
            self.stats["rewinds"] += 1

    def _end(self, txn, outcome):
        with self.lock:
            self.outcome[txn] = outcome
            self.ended += 1
            if outcome == "committed":
                self.stats["commits"] += 1
            elif outcome == "aborted":
                self.stats["aborts"] += 1

    def _abort(self, txn):
        """abort_transaction (retried while retriable) and rewind; a fatal error instead makes
        a new producer (whose InitProducerId aborts the transaction)."""
        try:
            self._retrying("abort_transaction", lambda: self.producer.abort_transaction(TXN_CALL_TIMEOUT))
            self._end(txn, "aborted")
        except KafkaException as e:
            self._note(f"abort_transaction: {kafka_error(e)}")
            with self.lock:
                self.stats["fatal"] += 1
            # InitProducerId fences and aborts the open transaction: it ends aborted.
            self._new_producer()
            self._end(txn, "aborted")
        self._rewind()

    def _run(self):
        try:
            self.consumer = Consumer({
                "bootstrap.servers": self.args.bootstrap,
                "group.id": GROUP,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": 2000,
            })
            self.consumer.subscribe([self.input], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._new_producer()
            while not self.stop.is_set():
                self._turn()
            self.consumer.close()
            self.producer.flush(TXN_CALL_TIMEOUT)
        except Exception as e:  # reported by the main thread
            self.failure = f"{type(e).__name__}: {e}"
            log(f"app failed: {self.failure}")

    def _turn(self):
        # Serves the producer's delivery reports and log lines (librdkafka queues them until
        # the application polls; the eos log's timestamps are when they are served).
        self.producer.poll(0)
        # Rebalance callbacks run inside consume(), never while a transaction is open.
        msgs = self.consumer.consume(num_messages=BATCH_MAX, timeout=0.1)
        batch = []
        for m in msgs:
            if m.error():
                if m.error().fatal():
                    raise Failed(f"consumer: fatal {m.error()}")
                continue
            batch.append(m)
        if not batch:
            return
        with self.lock:
            self.txn += 1
            txn = self.txn
            self.produced[txn] = []
        began = time.monotonic()
        commit = self.rng.randrange(100) >= self.args.abort_percent
        try:
            self.producer.begin_transaction()
            positions = {}
            for m in batch:
                seq = parse_seq(m)
                self._produce(m.partition(), seq, txn)
                positions[m.partition()] = m.offset() + 1
            offsets = [TopicPartition(self.input, p, o) for p, o in sorted(positions.items())]
            self._retrying("send_offsets_to_transaction", lambda: self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), TXN_CALL_TIMEOUT))
            if not commit:
                self._abort(txn)
                return
            self._retrying("commit_transaction", lambda: self.producer.commit_transaction(TXN_CALL_TIMEOUT))
        except KafkaException as e:
            err = kafka_error(e)
            self._note(f"txn {txn}: {err}")
            if err is not None and err.txn_requires_abort():
                with self.lock:
                    self.stats["abortable"] += 1
                self._abort(txn)
                return
            # Fatal (fenced, or an unexpected state): the outcome is the coordinator's; a new
            # producer's InitProducerId completes or aborts it before anything else happens.
            log(f"app: txn {txn}: fatal {err}: new producer")
            with self.lock:
                self.stats["fatal"] += 1
            self._end(txn, "unknown")
            self._new_producer()
            self._rewind()
            return
        self._end(txn, "committed")
        with self.lock:
            self.committed_at.append((txn, began))

    def _produce(self, partition, seq, txn):
        while True:
            try:
                self.producer.produce(self.output, key=f"key-{seq}".encode(),
                                      value=f"seq={seq} txn={txn}".encode(), partition=partition)
                break
            except BufferError:
                self.producer.poll(0.05)
        with self.lock:
            self.produced[txn].append((partition, seq))


class Nemesis:
    def __init__(self, args):
        self.args = args
        self.input = f"{args.topic}-in"
        self.output = f"{args.topic}-out"
        self.partitions = args.partitions
        self.admin = AdminClient({"bootstrap.servers": args.bootstrap})
        client_log = logging.getLogger("librdkafka")
        handler = logging.FileHandler(args.client_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        client_log.addHandler(handler)
        client_log.setLevel(logging.DEBUG)
        self.app = App(args, client_log)
        self.feeder = None
        self.next_seq = 0
        self.sent = {}  # seq -> (partition, sent_monotonic)
        self.acked = {}  # seq -> (partition, offset)
        self.delivery_errors = []
        self.interval = 1.0 / args.rate
        self.next_send = time.monotonic()
        self.feeding = True
        self.commands = queue.Queue()
        self.checker = Consumer({
            "bootstrap.servers": args.bootstrap,
            "group.id": GROUP,
            "isolation.level": "read_committed",
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

    # ---- the feeder -----------------------------------------------------------------------

    def start_feeder(self):
        self.feeder = Producer({
            "bootstrap.servers": self.args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 600000,
            "socket.timeout.ms": 10000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
        })

    def _on_delivery(self, seq, partition, err, msg):
        if err is not None:
            self.delivery_errors.append(f"seq {seq} (partition {partition}): {err}")
        else:
            self.acked[seq] = (partition, msg.offset())

    def step(self, wait=0.005):
        """One turn of the main loop: feed what the rate allows, serve delivery reports, and
        fail when the app did."""
        if self.feeding and time.monotonic() >= self.next_send:
            seq = self.next_seq
            partition = seq % self.partitions
            try:
                self.feeder.produce(
                    self.input, key=f"key-{seq}".encode(), value=f"seq={seq}".encode(), partition=partition,
                    on_delivery=lambda err, msg, s=seq, p=partition: self._on_delivery(s, p, err, msg))
                self.sent[seq] = (partition, time.monotonic())
                self.next_seq += 1
                self.next_send = max(self.next_send + self.interval, time.monotonic() - 1.0)
            except BufferError:
                pass
        self.feeder.poll(wait)
        # The app's producer logs through its queue, served by poll(): served here too, so the
        # eos log stays current while the app thread waits in a transactional call.
        producer = self.app.producer
        if producer is not None:
            producer.poll(0)
        if self.delivery_errors:
            raise Failed("feeder delivery failed: " + "; ".join(self.delivery_errors[:10]))
        if self.app.failure:
            raise Failed(f"the app failed: {self.app.failure}")

    def until(self, what, cond, timeout, poll_s=0.0):
        deadline = time.monotonic() + timeout
        last = 0.0
        while True:
            if time.monotonic() - last >= poll_s:
                last = time.monotonic()
                if cond():
                    return
            if time.monotonic() > deadline:
                ended, stats = self.app.snapshot()
                raise Failed(f"{what}: not within {timeout} s (fed {self.next_seq}, acked {len(self.acked)}, "
                             f"txns ended {ended}, {stats}, last app errors {self.app.errors}); "
                             f"metadata: {self.partition_states(self.input)} {self.partition_states(self.output)}")
            self.step(0.02)

    def progress(self, what):
        """A transaction begun from now on commits, and an input record sent from now on is
        acknowledged on every partition."""
        t = time.monotonic()
        start_seq = self.next_seq
        seen = set()

        def cond():
            for seq in range(start_seq, self.next_seq):
                a = self.acked.get(seq)
                if a is not None:
                    seen.add(a[0])
            return len(seen) == self.partitions and self.app.committed_since(t)

        self.until(what, cond, PROGRESS_TIMEOUT)

    # ---- metadata -------------------------------------------------------------------------

    def partition_states(self, topic):
        try:
            md = self.admin.list_topics(topic=topic, timeout=5)
        except KafkaException:
            return None
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != self.partitions:
            return None
        return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}

    def full_isr(self):
        for topic in (self.input, self.output):
            states = self.partition_states(topic)
            if states is None or not all(leader >= 0 and len(replicas) == 3 and isr == replicas
                                         for leader, replicas, isr in states.values()):
                return False
        return True

    def create_topics(self):
        topics = [NewTopic(t, num_partitions=self.partitions, replication_factor=3,
                           config={"min.insync.replicas": "2"}) for t in (self.input, self.output)]
        for name, fut in self.admin.create_topics(topics, operation_timeout=30).items():
            try:
                fut.result(timeout=60)
            except KafkaException as e:
                raise Failed(f"CreateTopics {name} RF=3: {e}")

    # ---- the rounds -----------------------------------------------------------------------

    def serve(self):
        while True:
            cmd = self.next_command()
            ended, stats = self.app.snapshot()
            if cmd[0] == "ROUND" and len(cmd) >= 2:
                log(f"round {cmd[1]}: {' '.join(cmd[2:])}; fed {self.next_seq}, acked {len(self.acked)}, "
                    f"txns ended {ended}, {stats}")
                print(f"ROUND {cmd[1]} OK", flush=True)
            elif cmd[0] == "AFTER" and len(cmd) == 3:
                target = ended + int(cmd[2])
                self.until(f"round {cmd[1]}: {cmd[2]} more transactions", lambda: self.app.snapshot()[0] >= target,
                           PROGRESS_TIMEOUT)
                print(f"AFTER {cmd[1]} txns_ended={self.app.snapshot()[0]}", flush=True)
            elif cmd[0] == "ACKED" and len(cmd) == 2:
                self.progress(f"round {cmd[1]}: a transaction committed and input acknowledged during the fault")
                print(f"ACKED {cmd[1]} txns_ended={self.app.snapshot()[0]}", flush=True)
            elif cmd[0] == "HEALED" and len(cmd) == 2:
                start = time.monotonic()
                self.progress(f"round {cmd[1]}: a transaction committed and input acknowledged after the repair")
                self.until(f"round {cmd[1]}: a leader and full ISR on every partition", self.full_isr,
                           PROGRESS_TIMEOUT, poll_s=0.25)
                ended, stats = self.app.snapshot()
                print(f"HEALED {cmd[1]} fed={self.next_seq} txns_ended={ended} commits={stats['commits']} "
                      f"aborts={stats['aborts']} abortable={stats['abortable']} fatal={stats['fatal']} "
                      f"heal_s={time.monotonic() - start:.1f}", flush=True)
            elif cmd[0] == "FINISH":
                return
            else:
                raise Failed(f"unknown command {cmd}")

    # ---- the end --------------------------------------------------------------------------

    def drain(self):
        """Stops feeding, waits until the app committed the input's end everywhere, stops it."""
        self.feeding = False
        remaining = self.feeder.flush(PROGRESS_TIMEOUT)
        if remaining:
            raise Failed(f"{remaining} input records unacknowledged {PROGRESS_TIMEOUT} s after the last send")
        self.step(0)
        if len(self.acked) != len(self.sent):
            raise Failed(f"fed {len(self.sent)} records, {len(self.acked)} acknowledged, no delivery error")
        ends = {p: 0 for p in range(self.partitions)}
        for p, o in self.acked.values():
            ends[p] = max(ends[p], o + 1)
        tps = [TopicPartition(self.input, p) for p in range(self.partitions)]
        last = {}

        def caught_up():
            nonlocal last
            try:
                got = self.checker.committed(tps, timeout=5)
            except KafkaException:
                return False
            last = {tp.partition: tp.offset for tp in got}
            return last == ends

        self.until(f"the app's committed offsets reach the input's ends {ends} (last {last})", caught_up,
                   CATCH_UP_TIMEOUT, poll_s=0.5)
        self.app.stop.set()
        self.app.thread.join(PROGRESS_TIMEOUT)
        if self.app.thread.is_alive():
            raise Failed(f"the app did not stop within {PROGRESS_TIMEOUT} s")
        if self.app.failure:
            raise Failed(f"the app failed: {self.app.failure}")
        log(f"fed {len(self.sent)} records; the app committed them all: {self.app.snapshot()}")

    def wait_stable(self):
        """The output's last stable offset reaches its high watermark on every partition (no
        transaction left open); returns the high watermarks."""
        tps = [TopicPartition(self.output, p) for p in range(self.partitions)]
        seen = {}

        def offsets(level):
            futs = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=level,
                                           request_timeout=10)
            return {tp.partition: f.result().offset for tp, f in futs.items()}

        def stable():
            try:
                hw = offsets(IsolationLevel.READ_UNCOMMITTED)
                lso = offsets(IsolationLevel.READ_COMMITTED)
            except KafkaException:
                return False
            seen["hw"], seen["lso"] = hw, lso
            return hw == lso

        self.until(f"the output's last stable offsets reach the high watermarks (last {seen})", stable,
                   CATCH_UP_TIMEOUT, poll_s=0.5)
        return seen["hw"]

    def read_output(self, isolation, high):
        """(partition, offset, seq, txn) of every output record the isolation level shows."""
        c = Consumer({
            "bootstrap.servers": self.args.bootstrap,
            "group.id": f"eos-verify-{isolation}-{int(time.time() * 1000)}",
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        })
        records = []
        try:
            c.assign([TopicPartition(self.output, p, 0) for p in range(self.partitions)])
            at_end = set(p for p, hw in high.items() if hw == 0)
            deadline = time.monotonic() + CATCH_UP_TIMEOUT
            while len(at_end) < self.partitions:
                if time.monotonic() > deadline:
                    raise Failed(f"verify ({isolation}): {len(records)} records, partitions at the end {at_end} "
                                 f"within {CATCH_UP_TIMEOUT} s; high watermarks {high}")
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        # The end of what this isolation level shows; with LSO == HW that is all.
                        pos = c.position([TopicPartition(self.output, m.partition())])[0].offset
                        if pos >= high[m.partition()] or isolation == "read_committed":
                            at_end.add(m.partition())
                        continue
                    raise Failed(f"verify consumer ({isolation}): {m.error()}")
                seq, txn = parse_out(m)
                records.append((m.partition(), m.offset(), seq, txn))
        finally:
            c.close()
        return records

    def check(self, committed_view, uncommitted_view):
        app = self.app
        problems = []
        where = {}
        last = {}
        visible_by_txn = {}
        for p, offset, seq, txn in committed_view:
            if seq in where:
                problems.append(f"seq {seq} twice: {where[seq]} and ({p}, {offset}, txn {txn})")
            where[seq] = (p, offset, txn)
            if seq % self.partitions != p:
                problems.append(f"seq {seq} on output partition {p}, its input partition is {seq % self.partitions}")
            if seq <= last.get(p, -1):
                problems.append(f"partition {p}: seq {seq} at offset {offset} after seq {last[p]}")
            last[p] = seq
            visible_by_txn.setdefault(txn, set()).add((p, seq))
            if app.outcome.get(txn) == "aborted":
                problems.append(f"seq {seq} at ({p}, {offset}) of aborted transaction {txn} is visible to "
                                "read_committed")
            elif txn not in app.outcome:
                problems.append(f"seq {seq} at ({p}, {offset}) of transaction {txn}, which never ended")
        for seq, (p, offset) in sorted(self.acked.items()):
            if seq not in where:
                problems.append(f"input seq {seq} at ({p}, {offset}) has no transform in the output (lost)")
                if len(problems) > 50:
                    break
        extra = sorted(set(where) - set(self.acked))
        if extra:
            problems.append(f"{len(extra)} output records for input never acknowledged, e.g. {extra[:10]}")
        unknown_visible = 0
        for txn, outcome in sorted(app.outcome.items()):
            produced = set(app.produced.get(txn, []))
            visible = visible_by_txn.get(txn, set())
            if outcome == "committed" and visible != produced:
                problems.append(f"committed transaction {txn}: {len(produced - visible)} of its {len(produced)} "
                                f"records not visible, e.g. {sorted(produced - visible)[:5]}")
            if outcome == "unknown":
                if visible and visible != produced:
                    problems.append(f"transaction {txn} (outcome unknown to the app) is partly visible: "
                                    f"{len(visible)} of {len(produced)}")
                unknown_visible += bool(visible)
        aborted_in_log = sum(1 for _p, _o, _s, txn in uncommitted_view if app.outcome.get(txn) == "aborted")
        if len(uncommitted_view) < len(committed_view):
            problems.append(f"read_uncommitted shows {len(uncommitted_view)} records, fewer than read_committed "
                            f"{len(committed_view)}")
        if problems:
            raise Failed(f"{len(problems)} problems: " + "; ".join(problems[:25]))
        return len(where), aborted_in_log, unknown_visible


def parse_seq(m):
    value = m.value() or b""
    key = m.key() or b""
    if not value.startswith(b"seq="):
        raise Failed(f"input ({m.partition()}, {m.offset()}): unexpected value {value[:40]!r}")
    seq = int(value[4:])
    if key != f"key-{seq}".encode():
        raise Failed(f"input ({m.partition()}, {m.offset()}): key {key!r} does not match value {value!r}")
    return seq


def parse_out(m):
    value = (m.value() or b"").decode(errors="replace")
    parts = dict(w.split("=", 1) for w in value.split() if "=" in w)
    try:
        seq, txn = int(parts["seq"]), int(parts["txn"])
    except (KeyError, ValueError):
        raise Failed(f"output ({m.partition()}, {m.offset()}): unexpected value {value[:60]!r}")
    if (m.key() or b"") != f"key-{seq}".encode():
        raise Failed(f"output ({m.partition()}, {m.offset()}): key {m.key()!r} does not match {value!r}")
    return seq, txn


def run(args):
    n = Nemesis(args)
    log(f"create topics {n.input}, {n.output}: RF=3, {n.partitions} partitions, min.insync.replicas=2")
    n.create_topics()
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while not n.full_isr():
        if time.monotonic() > deadline:
            raise Failed(f"no full ISR within {PROGRESS_TIMEOUT} s of CreateTopics")
        time.sleep(0.1)
    n.start_feeder()
    n.app.thread.start()
    n.until("warm-up: the app committed transactions", lambda: n.app.snapshot()[1]["commits"] >= WARMUP_TXNS,
            PROGRESS_TIMEOUT)
    print(f"READY acked={len(n.acked)} txns_ended={n.app.snapshot()[0]}", flush=True)
    n.serve()
    n.drain()
    high = n.wait_stable()
    committed_view = n.read_output("read_committed", high)
    uncommitted_view = n.read_output("read_uncommitted", high)
    verified, aborted_in_log, unknown_visible = n.check(committed_view, uncommitted_view)
    ended, stats = n.app.snapshot()
    outcomes = list(n.app.outcome.values())
    print(f"SUMMARY fed={len(n.sent)} acked={len(n.acked)} verified={verified} txns={ended} "
          f"committed={outcomes.count('committed')} aborted={outcomes.count('aborted')} "
          f"unknown={outcomes.count('unknown')} unknown_visible={unknown_visible} "
          f"aborted_records_in_log={aborted_in_log} abortable_errors={stats['abortable']} "
          f"fatal_errors={stats['fatal']} retries={stats['retries']} rewinds={stats['rewinds']} "
          f"assignments={stats['rebalances']} OK", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--client-log", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--rate", type=float, default=100.0, help="input records per second")
    p.add_argument("--debug", default="eos", help="librdkafka debug contexts of the transactional producer")
    p.add_argument("--abort-percent", type=int, default=25, help="transactions the app aborts on purpose")
    args = p.parse_args()
    try:
        run(args)
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        # Where the app thread is (a call that does not return is the usual story).
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
