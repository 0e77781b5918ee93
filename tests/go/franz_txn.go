// franz-go's transactions (issue 15): a consume-transform-produce app on a
// GroupTransactSession with a seeded mix of commits and aborts (txn-eos), fencing of a
// producer by a second one with the same transactional id (txn-fencing), and kadm's
// ListTransactions / DescribeTransactions / DescribeProducers around an open and a committed
// transaction (txn-admin). The checks shared with sarama are in txn.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The EOS app's shape: input partitions, records per input partition, most records one
// transaction takes (a poll's worth, from any partitions).
const (
	eosPartitions   = 3
	eosPerPartition = 40
	eosBatchMax     = 25
)

// txnTimeout is the transaction timeout the scenarios' producers ask for (DescribeTransactions
// must report it).
const txnTimeout = 45 * time.Second

// franzTxnEOS: the input (3 partitions, 40 records each) is consumed by a GroupTransactSession
// (read_committed, require-stable offsets); each poll's records are transformed into the output
// partition of the same number in one transaction, which, with the consumed offsets, commits or
// aborts by the seeded plan; after an abort the session rewinds to the committed offsets and the
// records are processed again. Then: read_committed output = each input's transform exactly
// once, in order, from committed transactions; read_uncommitted = every record produced; the
// high watermarks count one marker per transaction and partition; the group's committed offsets
// are the input's end offsets.
func franzTxnEOS(ctx context.Context, e *env) (string, error) {
	plan, err := newTxnPlan()
	if err != nil {
		return "", err
	}
	facts, err := franzEOSRun(ctx, e, plan)
	if err != nil {
		return "", fmt.Errorf("seed %d (%s=%d replays it): %w", plan.seed, txnSeedEnv, plan.seed, err)
	}
	return fmt.Sprintf("seed=%d %s", plan.seed, facts), nil
}

func franzEOSRun(ctx context.Context, e *env, plan *txnPlan) (string, error) {
	in, out, group := e.name("eos-in"), e.name("eos-out"), e.name("eos-g")
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	for _, topic := range []string{in, out} {
		if err := franzCreateTopic(ctx, adm, topic, eosPartitions, nil); err != nil {
			return "", err
		}
	}
	if err := franzSeedInput(ctx, e, in); err != nil {
		return "", err
	}

	sess, err := kgo.NewGroupTransactSession(franzOpts(e,
		kgo.TransactionalID(e.name("eos-txn")),
		kgo.TransactionTimeout(txnTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.HeartbeatInterval(heartbeatInterval),
		kgo.SessionTimeout(sessionTimeout),
	)...)
	if err != nil {
		return "", err
	}
	defer sess.Close()
	log := newTxnLog(out, eosPartitions)
	unplanned, err := franzEOSLoop(ctx, sess, log, plan, out)
	if err != nil {
		return "", err
	}
	if err := franzSentinels(ctx, sess, log, out); err != nil {
		return "", err
	}
	sess.Close() // leaves the group

	got, err := franzCheckTxnOutput(ctx, e, adm, log)
	if err != nil {
		return "", err
	}
	if err := checkTransformedOnce(log, got, eosPerPartition); err != nil {
		return "", err
	}
	if err := franzCheckGroupOffsets(ctx, adm, group, in, eosPerPartition); err != nil {
		return "", err
	}
	commits, aborts := log.counts()
	if commits < 2 || aborts < 1 {
		return "", fmt.Errorf("%d commits and %d aborts: the run must have both", commits, aborts)
	}
	return fmt.Sprintf("input=%dx%d commits=%d aborts=%d (unplanned %d) records_out=%d group_offsets=%d each",
		eosPartitions, eosPerPartition, commits, aborts, unplanned, len(log.produced), eosPerPartition), nil
}

// franzSeedInput writes input record i to partition i % eosPartitions (idempotent producer).
func franzSeedInput(ctx context.Context, e *env, topic string) error {
	producer, err := franzClient(e, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer producer.Close()
	krs := make([]*kgo.Record, eosPartitions*eosPerPartition)
	for i := range krs {
		krs[i] = &kgo.Record{Topic: topic, Partition: int32(i % eosPartitions), Key: fmt.Appendf(nil, "key-%05d", i), Value: []byte(inputValue(i))}
	}
	if err := producer.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		return fmt.Errorf("seeding %s: %w", topic, err)
	}
	return nil
}

// franzEOSLoop runs transactions until every input record's transform is committed; it returns
// how many transactions the session aborted although the plan said commit (a rebalance makes
// GroupTransactSession do that; a run with one member should have none).
func franzEOSLoop(ctx context.Context, sess *kgo.GroupTransactSession, log *txnLog, plan *txnPlan, out string) (int, error) {
	done, unplanned := 0, 0
	for done < eosPartitions*eosPerPartition {
		fetches := sess.PollRecords(ctx, eosBatchMax)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("%d of %d input records committed: %w", done, eosPartitions*eosPerPartition, err)
		}
		if err := fetches.Err(); err != nil {
			return 0, fmt.Errorf("poll: %w", err)
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return 0, fmt.Errorf("Begin: %w", err)
		}
		txn := log.begin()
		outs := make([]*kgo.Record, len(recs))
		for i, r := range recs {
			outs[i] = &kgo.Record{Topic: out, Partition: r.Partition, Key: r.Key, Value: []byte(transform(string(r.Value), txn))}
		}
		if err := sess.ProduceSync(ctx, outs...).FirstErr(); err != nil {
			return 0, fmt.Errorf("transaction %d: produce: %w", txn, err)
		}
		for _, o := range outs {
			log.add(txn, franzRec(o))
		}
		commit := plan.commit()
		committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
		if err != nil {
			return 0, fmt.Errorf("transaction %d: End(commit=%v): %w", txn, commit, err)
		}
		if commit && !committed {
			unplanned++
		}
		if !commit && committed {
			return 0, fmt.Errorf("transaction %d: End(TryAbort) committed", txn)
		}
		log.end(txn, committed)
		if committed {
			done += len(recs)
		}
		trace("franz txn %d: %d records, commit=%v committed=%v (%d done)", txn, len(recs), commit, committed, done)
	}
	return unplanned, nil
}

// franzSentinels commits one sentinel record to every partition of topic in one transaction.
func franzSentinels(ctx context.Context, sess *kgo.GroupTransactSession, log *txnLog, topic string) error {
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("sentinel Begin: %w", err)
	}
	txn := log.begin()
	krs := make([]*kgo.Record, log.partitions)
	for p := range krs {
		krs[p] = &kgo.Record{Topic: topic, Partition: int32(p), Key: []byte(sentinelKey), Value: fmt.Appendf(nil, "end txn-%d", txn)}
	}
	if err := sess.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		return fmt.Errorf("sentinel produce: %w", err)
	}
	for _, kr := range krs {
		log.add(txn, franzRec(kr))
	}
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil || !committed {
		return fmt.Errorf("sentinel commit: committed=%v err=%v", committed, err)
	}
	log.end(txn, true)
	return nil
}

// franzCheckTxnOutput reads log's topic under both isolation levels and checks it (txn.go);
// it returns what read_committed read.
func franzCheckTxnOutput(ctx context.Context, e *env, adm *kadm.Client, log *txnLog) ([]rec, error) {
	committed, err := franzReadToSentinels(ctx, e, log.topic, log.partitions, kgo.ReadCommitted())
	if err != nil {
		return nil, fmt.Errorf("read_committed: %w", err)
	}
	uncommitted, err := franzReadToSentinels(ctx, e, log.topic, log.partitions, kgo.ReadUncommitted())
	if err != nil {
		return nil, fmt.Errorf("read_uncommitted: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, log.topic)
	if err != nil {
		return nil, fmt.Errorf("ListOffsets (end) %s: %w", log.topic, err)
	}
	hws := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			hws[o.Partition] = o.Offset
		}
	})
	return committed, checkTxnReadBack(log, committed, uncommitted, hws)
}

// franzReadToSentinels reads every partition of topic from the start at the given isolation
// level until each partition's sentinel came.
func franzReadToSentinels(ctx context.Context, e *env, topic string, partitions int32, level kgo.IsolationLevel) ([]rec, error) {
	offsets := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl, err := franzClient(e, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}), kgo.FetchIsolationLevel(level), kgo.FetchMaxWait(fetchMaxWait))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var got []rec
	seen := map[int32]bool{}
	err = franzPollWhile(ctx, cl, func() bool { return !sawSentinels(seen, partitions) }, func(r *kgo.Record) {
		if seen[r.Partition] {
			return // nothing follows a sentinel; a record that did would be a different bug
		}
		got = append(got, franzRec(r))
		seen[r.Partition] = string(r.Key) == sentinelKey
	})
	if err != nil {
		return nil, fmt.Errorf("%d records read, sentinels seen %v: %w", len(got), seen, err)
	}
	return got, nil
}

// franzCheckGroupOffsets waits until the group's stable committed offsets (OffsetFetch with
// require_stable) are `want` on every partition of topic: Kafka writes a transaction's markers,
// and so makes its offsets stable, a moment after EndTxn answered.
func franzCheckGroupOffsets(ctx context.Context, adm *kadm.Client, group, topic string, want int64) error {
	return eventually(ctx, "the group's committed offsets", func() error {
		fetched, err := adm.FetchOffsets(kadm.RequireStable(ctx), group)
		if err != nil {
			return fmt.Errorf("OffsetFetch %s: %w", group, err)
		}
		for p := int32(0); p < eosPartitions; p++ {
			o, ok := fetched.Lookup(topic, p)
			if !ok || o.Err != nil || o.At != want {
				return fmt.Errorf("OffsetFetch %s %s/%d: at %d err %v (found %v), want %d", group, topic, p, o.At, o.Err, ok, want)
			}
		}
		return nil
	})
}

// franzTxnFencing: producer A commits one record and leaves a second transaction open; B, with
// the same transactional id, starts (InitProducerId fences A and aborts A's open transaction),
// commits one record. A's next commit must fail as fenced (PRODUCER_FENCED, or
// INVALID_PRODUCER_EPOCH), its open transaction aborted. Read back:
// read_committed a-1, b-1; read_uncommitted a-1, a-2, b-1, with a marker after each.
func franzTxnFencing(ctx context.Context, e *env) (string, error) {
	topic, id := e.name("fence"), e.name("fence-txn")
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	if err := franzCreateTopic(ctx, adm, topic, 1, nil); err != nil {
		return "", err
	}
	log := newTxnLog(topic, 1)
	newProducer := func() (*kgo.Client, error) {
		return franzClient(e, kgo.TransactionalID(id), kgo.TransactionTimeout(txnTimeout), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	send := func(cl *kgo.Client, txn int, key string) error {
		kr := &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(key + " value")}
		if err := cl.ProduceSync(ctx, kr).FirstErr(); err != nil {
			return fmt.Errorf("produce %s: %w", key, err)
		}
		log.add(txn, franzRec(kr))
		return nil
	}
	a, err := newProducer()
	if err != nil {
		return "", err
	}
	defer a.Close()
	if err := franzTxnOne(ctx, a, log, "a-1", send, true); err != nil {
		return "", fmt.Errorf("A: %w", err)
	}
	aID, aEpoch, err := a.ProducerID(ctx)
	if err != nil {
		return "", fmt.Errorf("A ProducerID: %w", err)
	}
	if err := a.BeginTransaction(); err != nil {
		return "", fmt.Errorf("A Begin: %w", err)
	}
	openTxn := log.begin()
	if err := send(a, openTxn, "a-2"); err != nil {
		return "", fmt.Errorf("A: %w", err)
	}

	b, err := newProducer()
	if err != nil {
		return "", err
	}
	defer b.Close()
	if err := franzTxnOne(ctx, b, log, "b-1", send, true); err != nil {
		return "", fmt.Errorf("B: %w", err)
	}
	log.end(openTxn, false) // B's InitProducerId aborted it
	bID, bEpoch, err := b.ProducerID(ctx)
	if err != nil {
		return "", fmt.Errorf("B ProducerID: %w", err)
	}
	if bID != aID || bEpoch <= aEpoch {
		return "", fmt.Errorf("B has producer %d epoch %d, A had %d epoch %d: want A's id, a higher epoch", bID, bEpoch, aID, aEpoch)
	}

	commitErr := a.EndTransaction(ctx, kgo.TryCommit)
	if !franzFenced(commitErr) {
		return "", fmt.Errorf("A's commit after B started: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", commitErr)
	}
	// franz-go treats PRODUCER_FENCED as recoverable (it re-initializes the producer id on the
	// next produce, which would fence B in turn); the abort that leaves the failed transaction
	// must return, either cleanly or fenced again.
	abortErr := a.EndTransaction(ctx, kgo.TryAbort)
	if abortErr != nil && !franzFenced(abortErr) {
		return "", fmt.Errorf("A's abort after the failed commit: %v", abortErr)
	}
	if err := franzCheckTxnOutputNoSentinel(ctx, e, adm, log); err != nil {
		return "", err
	}
	return fmt.Sprintf("producer=%d epochs A=%d B=%d A.commit=%s A.abort=%s", aID, aEpoch, bEpoch, franzKerr(commitErr), franzKerr(abortErr)), nil
}

// franzTxnOne runs one transaction of one record (key) on cl and commits or aborts it.
func franzTxnOne(ctx context.Context, cl *kgo.Client, log *txnLog, key string, send func(*kgo.Client, int, string) error, commit bool) error {
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("Begin: %w", err)
	}
	txn := log.begin()
	if err := send(cl, txn, key); err != nil {
		return err
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return fmt.Errorf("EndTransaction(commit=%v) after %s: %w", commit, key, err)
	}
	log.end(txn, commit)
	return nil
}

// franzFenced says whether err is the broker's fencing of an older producer epoch.
func franzFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// franzKerr names the Kafka error in err (its message otherwise).
func franzKerr(err error) string {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return fmt.Sprint(err)
}

// franzCheckTxnOutputNoSentinel checks a one-partition topic whose last transaction committed
// (its last record is the last record read_committed returns): both isolation levels read up
// to the high watermark.
func franzCheckTxnOutputNoSentinel(ctx context.Context, e *env, adm *kadm.Client, log *txnLog) error {
	ends, err := adm.ListEndOffsets(ctx, log.topic)
	if err != nil {
		return fmt.Errorf("ListOffsets (end): %w", err)
	}
	end, ok := ends.Lookup(log.topic, 0)
	if !ok || end.Err != nil {
		return fmt.Errorf("ListOffsets (end) %s/0: %+v", log.topic, end)
	}
	read := func(level kgo.IsolationLevel, n int) ([]rec, error) {
		cl, err := franzClient(e, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{log.topic: {0: kgo.NewOffset().AtStart()}}), kgo.FetchIsolationLevel(level), kgo.FetchMaxWait(fetchMaxWait))
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		var got []rec
		err = franzPollUntil(ctx, cl, n, func(r *kgo.Record) { got = append(got, franzRec(r)) })
		return got, err
	}
	committed, err := read(kgo.ReadCommitted(), len(log.expected(true)[0]))
	if err != nil {
		return fmt.Errorf("read_committed: %w", err)
	}
	uncommitted, err := read(kgo.ReadUncommitted(), len(log.expected(false)[0]))
	if err != nil {
		return fmt.Errorf("read_uncommitted: %w", err)
	}
	return checkTxnReadBack(log, committed, uncommitted, map[int32]int64{0: end.Offset})
}

// franzTxnAdmin: two plain records (offsets 0-1, no idempotence), then a transaction of three
// (2-4) left open: ListTransactions (all, by state, by producer id, by id pattern),
// DescribeTransactions and DescribeProducers describe it exactly; after the commit they
// describe it as CompleteCommit with no open transaction on the partition.
func franzTxnAdmin(ctx context.Context, e *env) (string, error) {
	topic, id := e.name("txnadm"), e.name("txnadm-txn")
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	if err := franzCreateTopic(ctx, adm, topic, 1, nil); err != nil {
		return "", err
	}
	plain, err := franzClient(e, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	if err != nil {
		return "", err
	}
	defer plain.Close()
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("p-0")}, &kgo.Record{Topic: topic, Value: []byte("p-1")}).FirstErr(); err != nil {
		return "", fmt.Errorf("plain produce: %w", err)
	}
	txn, err := franzClient(e, kgo.TransactionalID(id), kgo.TransactionTimeout(txnTimeout))
	if err != nil {
		return "", err
	}
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		return "", fmt.Errorf("Begin: %w", err)
	}
	var krs []*kgo.Record
	for i := range 3 {
		krs = append(krs, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "t-%d", i)})
	}
	if err := txn.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		return "", fmt.Errorf("transactional produce: %w", err)
	}
	if krs[0].Offset != 2 {
		return "", fmt.Errorf("the transaction's first record is at %d, want 2", krs[0].Offset)
	}
	pid, epoch, err := txn.ProducerID(ctx)
	if err != nil {
		return "", fmt.Errorf("ProducerID: %w", err)
	}
	if err := franzCheckOngoing(ctx, adm, id, topic, pid, epoch); err != nil {
		return "", fmt.Errorf("open transaction: %w", err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	var after kadm.DescribedTransaction
	err = eventually(ctx, "the transaction to be CompleteCommit", func() error {
		var err error
		after, err = franzCheckCompleted(ctx, adm, id, topic, pid, epoch)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("committed transaction: %w", err)
	}
	return fmt.Sprintf("open: Ongoing %s/0 pid=%d epoch=%d last_sequence=2 txn_start_offset=2; committed: CompleteCommit epoch=%d txn_start_offset=-1 end_txn_bumped_epoch=%v",
		topic, pid, epoch, after.ProducerEpoch, after.ProducerEpoch != epoch), nil
}

// franzCheckOngoing: every kadm view of the open transaction, exactly.
func franzCheckOngoing(ctx context.Context, adm *kadm.Client, id, topic string, pid int64, epoch int16) error {
	listed, err := adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("ListTransactions: %w", err)
	}
	if l, ok := listed[id]; !ok || l.State != "Ongoing" || l.ProducerID != pid {
		return fmt.Errorf("ListTransactions: %s is %+v (listed %v), want Ongoing producer %d", id, l, ok, pid)
	}
	byState, err := adm.ListTransactions(ctx, nil, []string{"CompleteCommit", "Empty"})
	if err != nil {
		return fmt.Errorf("ListTransactions(CompleteCommit, Empty): %w", err)
	}
	if l, ok := byState[id]; ok {
		return fmt.Errorf("ListTransactions(CompleteCommit, Empty) lists the open %s: %+v", id, l)
	}
	byPid, err := adm.ListTransactions(ctx, []int64{pid}, []string{"Ongoing"})
	if err != nil {
		return fmt.Errorf("ListTransactions(producer %d, Ongoing): %w", pid, err)
	}
	if ids := byPid.TransactionalIDs(); len(ids) != 1 || ids[0] != id {
		return fmt.Errorf("ListTransactions(producer %d, Ongoing): %v, want [%s]", pid, ids, id)
	}
	byPattern, err := adm.ListTransactionsByTxPattern(ctx, nil, nil, regexp.QuoteMeta(id))
	if err != nil {
		return fmt.Errorf("ListTransactions(pattern %s): %w", id, err)
	}
	if ids := byPattern.TransactionalIDs(); len(ids) != 1 || ids[0] != id {
		return fmt.Errorf("ListTransactions(pattern %s): %v, want [%s]", id, ids, id)
	}

	described, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return fmt.Errorf("DescribeTransactions: %w", err)
	}
	d := described[id]
	if d.Err != nil || d.State != "Ongoing" || d.ProducerID != pid || d.ProducerEpoch != epoch ||
		d.TimeoutMillis != int32(txnTimeout.Milliseconds()) || d.StartTimestamp <= 0 || !d.Topics.Lookup(topic, 0) || topicsSetSize(d.Topics) != 1 {
		return fmt.Errorf("DescribeTransactions %s: %+v, want Ongoing producer %d epoch %d timeout %d partitions [%s/0]", id, d, pid, epoch, txnTimeout.Milliseconds(), topic)
	}
	unknown := id + "-unknown"
	missing, err := adm.DescribeTransactions(ctx, unknown)
	if err == nil {
		err = missing[unknown].Err
	}
	if !errors.Is(err, kerr.TransactionalIDNotFound) {
		return fmt.Errorf("DescribeTransactions of an unknown id: %v, want TRANSACTIONAL_ID_NOT_FOUND", err)
	}

	p, err := franzDescribeProducer(ctx, adm, topic, pid)
	if err != nil {
		return err
	}
	if p.ProducerEpoch != epoch || p.LastSequence != 2 || p.CurrentTxnStartOffset != 2 || p.LastTimestamp <= 0 {
		return fmt.Errorf("DescribeProducers %s/0 producer %d: %+v, want epoch %d last sequence 2 txn start offset 2", topic, pid, p, epoch)
	}
	return nil
}

// franzCheckCompleted: the committed transaction, as DescribeTransactions, ListTransactions and
// DescribeProducers show it once its markers are written. Transaction version 2 bumps the
// epoch at each EndTxn (KIP-890), version 1 does not: either is accepted, and reported.
func franzCheckCompleted(ctx context.Context, adm *kadm.Client, id, topic string, pid int64, epoch int16) (kadm.DescribedTransaction, error) {
	described, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return kadm.DescribedTransaction{}, fmt.Errorf("DescribeTransactions: %w", err)
	}
	d := described[id]
	if d.Err != nil || d.State != "CompleteCommit" || d.ProducerID != pid || (d.ProducerEpoch != epoch && d.ProducerEpoch != epoch+1) || topicsSetSize(d.Topics) != 0 {
		return d, fmt.Errorf("DescribeTransactions %s: %+v, want CompleteCommit producer %d epoch %d (or %d) and no partitions", id, d, pid, epoch, epoch+1)
	}
	ongoing, err := adm.ListTransactions(ctx, []int64{pid}, []string{"Ongoing"})
	if err != nil {
		return d, fmt.Errorf("ListTransactions(Ongoing): %w", err)
	}
	if len(ongoing) != 0 {
		return d, fmt.Errorf("ListTransactions(producer %d, Ongoing) after the commit: %v", pid, ongoing.TransactionalIDs())
	}
	p, err := franzDescribeProducer(ctx, adm, topic, pid)
	if err != nil {
		return d, err
	}
	// The marker carries the transaction's final epoch; a marker of a newer epoch than the data
	// (version 2) drops the producer's batch metadata, so LastSequence reads -1
	// (ProducerStateEntry.maybeUpdateProducerEpoch in apache/kafka).
	wantSeq := int32(2)
	if d.ProducerEpoch != epoch {
		wantSeq = -1
	}
	if p.ProducerEpoch != d.ProducerEpoch || p.LastSequence != wantSeq || p.CurrentTxnStartOffset != -1 {
		return d, fmt.Errorf("DescribeProducers %s/0 producer %d: %+v, want epoch %d last sequence %d, no open transaction (-1)", topic, pid, p, d.ProducerEpoch, wantSeq)
	}
	return d, nil
}

// franzDescribeProducer returns the one active producer of topic/0, which must be pid.
func franzDescribeProducer(ctx context.Context, adm *kadm.Client, topic string, pid int64) (kadm.DescribedProducer, error) {
	set := kadm.TopicsSet{}
	set.Add(topic, 0)
	described, err := adm.DescribeProducers(ctx, set)
	if err != nil {
		return kadm.DescribedProducer{}, fmt.Errorf("DescribeProducers: %w", err)
	}
	part := described[topic].Partitions[0]
	p, ok := part.ActiveProducers[pid]
	if part.Err != nil || !ok || len(part.ActiveProducers) != 1 {
		return p, fmt.Errorf("DescribeProducers %s/0: err %v, active %+v, want exactly producer %d", topic, part.Err, part.ActiveProducers, pid)
	}
	return p, nil
}

// topicsSetSize counts the partitions in s.
func topicsSetSize(s kadm.TopicsSet) int {
	n := 0
	for _, ps := range s {
		n += len(ps)
	}
	return n
}
