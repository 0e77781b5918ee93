// IBM/sarama's transactional producer (issue 15): Producer.Transaction.ID with Idempotent and
// MaxOpenRequests=1; plain transactions that commit and abort, then a consume-transform-produce
// app in a ConsumerGroup (read_committed) whose transactions carry the consumed offsets through
// AddMessageToTxn and AddOffsetsToTxn (with the member's group metadata, KIP-447), committing or
// aborting by the seeded plan. The checks are txn.go's, read back with sarama's consumers.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// The sarama app's shape: records per input partition (eosPartitions of them) and the most
// records one transaction takes (what one claim has buffered).
const (
	saramaPerPartition = 20
	saramaBatchMax     = 8
)

// saramaTxnBackoff replaces sarama's 100 ms between retries of a transactional request (Kafka
// answers CONCURRENT_TRANSACTIONS while the previous transaction's markers are being written).
const saramaTxnBackoff = 20 * time.Millisecond

func saramaTxn(ctx context.Context, e *env) (string, error) {
	plan, err := newTxnPlan()
	if err != nil {
		return "", err
	}
	facts, err := saramaTxnRun(ctx, e, plan)
	if err != nil {
		return "", fmt.Errorf("seed %d (%s=%d replays it): %w", plan.seed, txnSeedEnv, plan.seed, err)
	}
	return fmt.Sprintf("seed=%d %s", plan.seed, facts), nil
}

func saramaTxnConfig(id string) *sarama.Config {
	c := saramaConfig()
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Transaction.ID = id
	c.Producer.Transaction.Timeout = txnTimeout
	c.Producer.Transaction.Retry.Backoff = saramaTxnBackoff
	c.Producer.Partitioner = sarama.NewManualPartitioner
	return c
}

func saramaTxnRun(ctx context.Context, e *env, plan *txnPlan) (string, error) {
	in, out, plainTopic, group := e.name("eos-in"), e.name("eos-out"), e.name("txn-plain"), e.name("eos-g")
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	for _, topic := range []string{in, out, plainTopic} {
		if err := saramaCreateTopic(admin, topic, eosPartitions, nil); err != nil {
			return "", err
		}
	}
	if err := saramaSeedInput(e, in); err != nil {
		return "", err
	}
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaTxnConfig(e.name("txn")))
	if err != nil {
		return "", fmt.Errorf("transactional SyncProducer: %w", err)
	}
	defer producer.Close()

	// Plain transactions: commit, abort, then the sentinels committed.
	plain := newTxnLog(plainTopic, eosPartitions)
	plain.noFault = true // --inject-fault goes to the consume-transform-produce output
	for _, step := range []struct {
		key    string
		commit bool
	}{{"plain-commit", true}, {"plain-abort", false}, {sentinelKey, true}} {
		if err := saramaPlainTxn(producer, plain, step.key, step.commit); err != nil {
			return "", err
		}
	}
	if _, err := saramaCheckTxnOutput(ctx, e, plain); err != nil {
		return "", fmt.Errorf("plain transactions: %w", err)
	}

	// Consume-transform-produce in a group.
	app := &saramaEOS{producer: producer, group: group, out: out, log: newTxnLog(out, eosPartitions), plan: plan, errs: make(chan error, 1)}
	if err := app.run(ctx, e, in); err != nil {
		return "", err
	}
	if err := saramaPlainTxnTo(producer, app.log, out, sentinelKey, true); err != nil {
		return "", err
	}
	got, err := saramaCheckTxnOutput(ctx, e, app.log)
	if err != nil {
		return "", err
	}
	if err := checkTransformedOnce(app.log, got, saramaPerPartition); err != nil {
		return "", err
	}
	if err := saramaCheckGroupOffsets(ctx, admin, group, in, saramaPerPartition); err != nil {
		return "", err
	}
	commits, aborts := app.log.counts()
	if commits < 2 || aborts < 1 {
		return "", fmt.Errorf("%d commits and %d aborts: the run must have both", commits, aborts)
	}
	return fmt.Sprintf("plain=commit,abort input=%dx%d commits=%d aborts=%d records_out=%d offsets_by=AddMessageToTxn,AddOffsetsToTxn group_offsets=%d each",
		eosPartitions, saramaPerPartition, commits, aborts, len(app.log.produced), saramaPerPartition), nil
}

// saramaSeedInput writes input record i to partition i % eosPartitions (idempotent producer).
func saramaSeedInput(e *env, topic string) error {
	c := saramaConfig()
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, c)
	if err != nil {
		return fmt.Errorf("SyncProducer: %w", err)
	}
	defer producer.Close()
	msgs := make([]*sarama.ProducerMessage, eosPartitions*saramaPerPartition)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Partition: int32(i % eosPartitions), Key: sarama.StringEncoder(fmt.Sprintf("key-%05d", i)), Value: sarama.StringEncoder(inputValue(i))}
	}
	if err := producer.SendMessages(msgs); err != nil {
		return fmt.Errorf("seeding %s: %w", topic, err)
	}
	return nil
}

// saramaPlainTxn writes one record with key to every partition of the log's topic in one
// transaction and commits or aborts it.
func saramaPlainTxn(producer sarama.SyncProducer, log *txnLog, key string, commit bool) error {
	return saramaPlainTxnTo(producer, log, log.topic, key, commit)
}

func saramaPlainTxnTo(producer sarama.SyncProducer, log *txnLog, topic, key string, commit bool) error {
	if err := producer.BeginTxn(); err != nil {
		return fmt.Errorf("BeginTxn: %w", err)
	}
	txn := log.begin()
	msgs := make([]*sarama.ProducerMessage, log.partitions)
	for p := range msgs {
		msgs[p] = &sarama.ProducerMessage{Topic: topic, Partition: int32(p), Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(fmt.Sprintf("%s txn-%d", key, txn))}
	}
	if err := saramaSendLogged(producer, log, txn, msgs); err != nil {
		return err
	}
	return saramaEndTxn(producer, log, txn, commit)
}

// saramaSendLogged sends msgs in the open transaction txn and logs them with their offsets.
func saramaSendLogged(producer sarama.SyncProducer, log *txnLog, txn int, msgs []*sarama.ProducerMessage) error {
	if err := producer.SendMessages(msgs); err != nil {
		return fmt.Errorf("transaction %d: produce: %w", txn, err)
	}
	for _, m := range msgs {
		key, _ := m.Key.Encode()
		value, _ := m.Value.Encode()
		log.add(txn, rec{key: string(key), value: string(value), partition: m.Partition, offset: m.Offset})
	}
	return nil
}

func saramaEndTxn(producer sarama.SyncProducer, log *txnLog, txn int, commit bool) error {
	var err error
	if commit {
		err = producer.CommitTxn()
	} else {
		err = producer.AbortTxn()
	}
	if err != nil {
		return fmt.Errorf("transaction %d: end (commit=%v): %w", txn, commit, err)
	}
	if status := producer.TxnStatus(); status&sarama.ProducerTxnFlagReady == 0 {
		return fmt.Errorf("transaction %d: status %v after the end, want ready", txn, status)
	}
	log.end(txn, commit)
	return nil
}

// saramaEOS is the consume-transform-produce app: a ConsumerGroupHandler whose claims share one
// transactional producer, one transaction at a time.
type saramaEOS struct {
	producer sarama.SyncProducer
	group    string
	out      string
	log      *txnLog
	plan     *txnPlan
	errs     chan error

	mu   sync.Mutex // one transaction at a time; guards done, log and plan
	done int
}

// run consumes in as one group member until every input record's transform is committed.
func (h *saramaEOS) run(ctx context.Context, e *env, in string) error {
	c := saramaConfig()
	c.Consumer.IsolationLevel = sarama.ReadCommitted
	g, err := sarama.NewConsumerGroup([]string{e.bootstrap}, h.group, c)
	if err != nil {
		return fmt.Errorf("ConsumerGroup %s: %w", h.group, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for runCtx.Err() == nil {
			if err := g.Consume(runCtx, []string{in}, h); err != nil && runCtx.Err() == nil {
				h.fail(fmt.Errorf("Consume: %w", err))
				return
			}
		}
	}()
	total := eosPartitions * saramaPerPartition
	err = waitFor(ctx, "every input record's transform to commit", func() (bool, string) {
		select {
		case err := <-h.errs:
			h.errs <- err
			return true, err.Error()
		default:
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.done >= total, fmt.Sprintf("%d of %d", h.done, total)
	})
	stop()
	wg.Wait()
	if cerr := g.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the group member: %w", cerr)
	}
	select {
	case ferr := <-h.errs:
		return errors.Join(ferr, err)
	default:
	}
	return err
}

func (h *saramaEOS) fail(err error) {
	select {
	case h.errs <- err:
	default:
	}
}

func (h *saramaEOS) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *saramaEOS) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim takes what the claim has buffered (at most saramaBatchMax) into one transaction.
func (h *saramaEOS) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		var batch []*sarama.ConsumerMessage
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			batch = append(batch, m)
		case <-s.Context().Done():
			return nil
		}
	drain:
		for len(batch) < saramaBatchMax {
			select {
			case m, ok := <-claim.Messages():
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := h.process(s, batch); err != nil {
			h.fail(err)
			return err
		}
	}
}

// process transforms batch in transactions until one commits: an aborted transaction's output
// and offsets are discarded, and the same records are processed again in the next one.
// Transactions alternate between AddMessageToTxn and AddOffsetsToTxn for the offsets.
func (h *saramaEOS) process(s sarama.ConsumerGroupSession, batch []*sarama.ConsumerMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := batch[len(batch)-1]
	meta := sarama.NewConsumerGroupMetadataFromSession(s, h.group, nil)
	for {
		if err := h.producer.BeginTxn(); err != nil {
			return fmt.Errorf("BeginTxn: %w", err)
		}
		txn := h.log.begin()
		msgs := make([]*sarama.ProducerMessage, len(batch))
		for i, m := range batch {
			msgs[i] = &sarama.ProducerMessage{Topic: h.out, Partition: m.Partition, Key: sarama.ByteEncoder(m.Key), Value: sarama.StringEncoder(transform(string(m.Value), txn))}
		}
		if err := saramaSendLogged(h.producer, h.log, txn, msgs); err != nil {
			return err
		}
		var err error
		if txn%2 == 0 {
			err = h.producer.AddMessageToTxnWithGroupMetadata(last, meta, nil)
		} else {
			offsets := map[string][]*sarama.PartitionOffsetMetadata{last.Topic: {{Partition: last.Partition, Offset: last.Offset + 1}}}
			err = h.producer.AddOffsetsToTxnWithGroupMetadata(offsets, meta)
		}
		if err != nil {
			return fmt.Errorf("transaction %d: adding offsets: %w", txn, err)
		}
		commit := h.plan.commit()
		if err := saramaEndTxn(h.producer, h.log, txn, commit); err != nil {
			return err
		}
		trace("sarama txn %d: p%d %d records, commit=%v", txn, last.Partition, len(batch), commit)
		if commit {
			h.done += len(batch)
			return nil
		}
	}
}

// saramaCheckTxnOutput reads log's topic under both isolation levels and checks it (txn.go);
// it returns what read_committed read.
func saramaCheckTxnOutput(ctx context.Context, e *env, log *txnLog) ([]rec, error) {
	committed, err := saramaReadToSentinels(ctx, e, log.topic, log.partitions, sarama.ReadCommitted)
	if err != nil {
		return nil, fmt.Errorf("read_committed: %w", err)
	}
	uncommitted, err := saramaReadToSentinels(ctx, e, log.topic, log.partitions, sarama.ReadUncommitted)
	if err != nil {
		return nil, fmt.Errorf("read_uncommitted: %w", err)
	}
	client, err := sarama.NewClient([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return nil, fmt.Errorf("Client: %w", err)
	}
	defer client.Close()
	hws := map[int32]int64{}
	for p := int32(0); p < log.partitions; p++ {
		hw, err := client.GetOffset(log.topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("ListOffsets (newest) %s/%d: %w", log.topic, p, err)
		}
		hws[p] = hw
	}
	return committed, checkTxnReadBack(log, committed, uncommitted, hws)
}

// saramaReadToSentinels reads every partition of topic from the oldest offset at the given
// isolation level, all partitions at once, until each partition's sentinel came.
func saramaReadToSentinels(ctx context.Context, e *env, topic string, partitions int32, level sarama.IsolationLevel) ([]rec, error) {
	c := saramaConfig()
	c.Consumer.IsolationLevel = level
	consumer, err := sarama.NewConsumer([]string{e.bootstrap}, c)
	if err != nil {
		return nil, fmt.Errorf("Consumer: %w", err)
	}
	defer consumer.Close() // closes the partition consumers too
	read := make([][]rec, partitions)
	errs := make([]error, partitions)
	var wg sync.WaitGroup
	for p := range partitions {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("ConsumePartition %s/%d: %w", topic, p, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case m := <-pc.Messages():
					read[p] = append(read[p], saramaRec(m))
					if string(m.Key) == sentinelKey {
						return
					}
				case err := <-pc.Errors():
					errs[p] = fmt.Errorf("consume %s/%d: %w", topic, p, err)
					return
				case <-ctx.Done():
					errs[p] = fmt.Errorf("consume %s/%d: %d records, no sentinel: %w", topic, p, len(read[p]), ctx.Err())
					return
				}
			}
		}()
	}
	wg.Wait()
	var got []rec
	for _, rs := range read {
		got = append(got, rs...)
	}
	return got, errors.Join(errs...)
}

// saramaCheckGroupOffsets waits until the group's committed offsets are `want` on every
// partition of topic (the markers, and so the offsets, land a moment after EndTxn answers).
func saramaCheckGroupOffsets(ctx context.Context, admin sarama.ClusterAdmin, group, topic string, want int64) error {
	partitions := []int32{}
	for p := int32(0); p < eosPartitions; p++ {
		partitions = append(partitions, p)
	}
	return eventually(ctx, "the group's committed offsets", func() error {
		fetched, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: partitions})
		if err != nil {
			return fmt.Errorf("OffsetFetch %s: %w", group, err)
		}
		for _, p := range partitions {
			b := fetched.GetBlock(topic, p)
			if b == nil || b.Err != sarama.ErrNoError || b.Offset != want {
				return fmt.Errorf("OffsetFetch %s %s/%d: %+v, want %d", group, topic, p, b, want)
			}
		}
		return nil
	})
}

// saramaTxnAdmin: sarama's KIP-664 admin calls (TransactionClusterAdmin) around a transaction
// of three records (offsets 2-4, after two plain ones) left open, then committed:
// ListTransactions by state, by producer id and by duration (v1, KIP-994: only transactions
// running longer than the filter), DescribeTransactions and DescribeProducers, which must agree
// on the producer id and epoch.
func saramaTxnAdmin(ctx context.Context, e *env) (string, error) {
	topic, id := e.name("txnadm"), e.name("txnadm-txn")
	ca, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer ca.Close()
	admin, ok := ca.(sarama.TransactionClusterAdmin)
	if !ok {
		return "", fmt.Errorf("sarama's ClusterAdmin has no transaction calls")
	}
	if err := saramaCreateTopic(admin, topic, 1, nil); err != nil {
		return "", err
	}
	plain, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("SyncProducer: %w", err)
	}
	defer plain.Close()
	if err := plain.SendMessages([]*sarama.ProducerMessage{{Topic: topic, Value: sarama.StringEncoder("p-0")}, {Topic: topic, Value: sarama.StringEncoder("p-1")}}); err != nil {
		return "", fmt.Errorf("plain produce: %w", err)
	}
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaTxnConfig(id))
	if err != nil {
		return "", fmt.Errorf("transactional SyncProducer: %w", err)
	}
	defer producer.Close()
	if err := producer.BeginTxn(); err != nil {
		return "", fmt.Errorf("BeginTxn: %w", err)
	}
	msgs := make([]*sarama.ProducerMessage, 3)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder(fmt.Sprintf("t-%d", i))}
	}
	if err := producer.SendMessages(msgs); err != nil {
		return "", fmt.Errorf("transactional produce: %w", err)
	}
	if msgs[0].Offset != 2 {
		return "", fmt.Errorf("the transaction's first record is at %d, want 2", msgs[0].Offset)
	}

	open, err := saramaCheckOngoing(ctx, admin, id, topic)
	if err != nil {
		return "", fmt.Errorf("open transaction: %w", err)
	}
	if err := producer.CommitTxn(); err != nil {
		return "", fmt.Errorf("CommitTxn: %w", err)
	}
	var after sarama.TransactionState
	err = eventually(ctx, "the transaction to be CompleteCommit", func() error {
		var err error
		after, err = saramaCheckCompleted(admin, id, topic, open)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("committed transaction: %w", err)
	}
	return fmt.Sprintf("open: Ongoing pid=%d epoch=%d last_sequence=2 txn_start_offset=2, listed by state/producer/duration; committed: CompleteCommit epoch=%d txn_start_offset=-1",
		open.ProducerID, open.ProducerEpoch, after.ProducerEpoch), nil
}

// saramaListIDs lists transactions with the given filters and returns their ids.
func saramaListIDs(admin sarama.TransactionClusterAdmin, states []string, pids []int64, durationMs int64) (map[string]sarama.ListTransactionsResponseTransactionState, error) {
	listed, err := admin.ListTransactions(states, pids, durationMs)
	if err != nil {
		return nil, fmt.Errorf("ListTransactions(states %v, producers %v, duration %d): %w", states, pids, durationMs, err)
	}
	out := map[string]sarama.ListTransactionsResponseTransactionState{}
	for _, l := range listed {
		out[l.TransactionalID] = l
	}
	return out, nil
}

// saramaCheckOngoing: the open transaction through every call, exactly; returns its state.
func saramaCheckOngoing(ctx context.Context, admin sarama.TransactionClusterAdmin, id, topic string) (sarama.TransactionState, error) {
	described, err := admin.DescribeTransactions([]string{id})
	if err != nil {
		return sarama.TransactionState{}, fmt.Errorf("DescribeTransactions: %w", err)
	}
	d := described[id]
	if d.ErrorCode != sarama.ErrNoError || d.TransactionState != "Ongoing" || d.TransactionTimeout != txnTimeout || d.TransactionStartTime <= 0 ||
		len(d.Topics) != 1 || d.Topics[0].Topic != topic || len(d.Topics[0].Partitions) != 1 || d.Topics[0].Partitions[0] != 0 {
		return d, fmt.Errorf("DescribeTransactions %s: %+v, want Ongoing, timeout %v, partitions [%s/0]", id, d, txnTimeout, topic)
	}
	pid := d.ProducerID

	byState, err := saramaListIDs(admin, []string{"Ongoing"}, []int64{pid}, -1)
	if err != nil {
		return d, err
	}
	if l, ok := byState[id]; !ok || len(byState) != 1 || l.ProducerID != pid || l.TransactionState != "Ongoing" {
		return d, fmt.Errorf("ListTransactions(Ongoing, producer %d): %+v, want only %s", pid, byState, id)
	}
	done, err := saramaListIDs(admin, []string{"CompleteCommit", "CompleteAbort"}, []int64{pid}, -1)
	if err != nil {
		return d, err
	}
	if len(done) != 0 {
		return d, fmt.Errorf("ListTransactions(CompleteCommit, CompleteAbort, producer %d) lists the open transaction: %+v", pid, done)
	}
	// Duration (Kafka: only transactions running longer than the filter): not an hour yet,
	// and longer than 0 ms once a millisecond has passed since it started.
	long, err := saramaListIDs(admin, nil, []int64{pid}, time.Hour.Milliseconds())
	if err != nil {
		return d, err
	}
	if len(long) != 0 {
		return d, fmt.Errorf("ListTransactions(running > 1 h) lists a transaction started now: %+v", long)
	}
	err = eventually(ctx, "ListTransactions(running > 0 ms) to list the transaction", func() error {
		running, err := saramaListIDs(admin, nil, []int64{pid}, 0)
		if err != nil {
			return err
		}
		if _, ok := running[id]; !ok || len(running) != 1 {
			return fmt.Errorf("ListTransactions(producer %d, running > 0 ms): %+v, want only %s", pid, running, id)
		}
		return nil
	})
	if err != nil {
		return d, err
	}

	p, err := saramaDescribeProducer(admin, topic, pid)
	if err != nil {
		return d, err
	}
	if p.ProducerEpoch != int32(d.ProducerEpoch) || p.LastSequence != 2 || p.CurrentTxnStartOffset != 2 {
		return d, fmt.Errorf("DescribeProducers %s/0 producer %d: %+v, want epoch %d last sequence 2 txn start offset 2", topic, pid, p, d.ProducerEpoch)
	}
	return d, nil
}

// saramaCheckCompleted: the committed transaction once its markers are written; the epoch rule
// is franzCheckCompleted's (a version-2 EndTxn bumps it, a version-1 one does not; sarama
// speaks version 1, so its epoch stays).
func saramaCheckCompleted(admin sarama.TransactionClusterAdmin, id, topic string, open sarama.TransactionState) (sarama.TransactionState, error) {
	described, err := admin.DescribeTransactions([]string{id})
	if err != nil {
		return sarama.TransactionState{}, fmt.Errorf("DescribeTransactions: %w", err)
	}
	d := described[id]
	if d.ErrorCode != sarama.ErrNoError || d.TransactionState != "CompleteCommit" || d.ProducerID != open.ProducerID || d.ProducerEpoch != open.ProducerEpoch || len(d.Topics) != 0 {
		return d, fmt.Errorf("DescribeTransactions %s: %+v, want CompleteCommit producer %d epoch %d and no partitions", id, d, open.ProducerID, open.ProducerEpoch)
	}
	p, err := saramaDescribeProducer(admin, topic, open.ProducerID)
	if err != nil {
		return d, err
	}
	if p.ProducerEpoch != int32(d.ProducerEpoch) || p.LastSequence != 2 || p.CurrentTxnStartOffset != -1 {
		return d, fmt.Errorf("DescribeProducers %s/0 producer %d: %+v, want epoch %d last sequence 2, no open transaction (-1)", topic, open.ProducerID, p, d.ProducerEpoch)
	}
	return d, nil
}

// saramaDescribeProducer returns the one active producer of topic/0, which must be pid.
func saramaDescribeProducer(admin sarama.TransactionClusterAdmin, topic string, pid int64) (sarama.ProducerState, error) {
	described, err := admin.DescribeProducers(map[string][]int32{topic: {0}})
	if err != nil {
		return sarama.ProducerState{}, fmt.Errorf("DescribeProducers: %w", err)
	}
	part, ok := described[topic][0]
	if !ok || part.ErrorCode != sarama.ErrNoError || len(part.ActiveProducers) != 1 || part.ActiveProducers[0].ProducerID != pid {
		return sarama.ProducerState{}, fmt.Errorf("DescribeProducers %s/0: %+v (found %v), want exactly producer %d", topic, part, ok, pid)
	}
	return part.ActiveProducers[0], nil
}

// saramaTxnFencing: producer A commits a-1 and leaves a-2 open; producer B with the same
// transactional id starts (its InitProducerId fences A and aborts A's open transaction) and
// commits b-1 and a sentinel. A's CommitTxn must fail as fenced and leave A in a fatal state.
// Read back: read_committed a-1, b-1, sentinel; read_uncommitted a-2 too; a marker after each
// transaction.
func saramaTxnFencing(ctx context.Context, e *env) (string, error) {
	topic, id := e.name("fence"), e.name("fence-txn")
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	if err := saramaCreateTopic(admin, topic, 1, nil); err != nil {
		return "", err
	}
	log := newTxnLog(topic, 1)
	a, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaTxnConfig(id))
	if err != nil {
		return "", fmt.Errorf("producer A: %w", err)
	}
	defer a.Close()
	if err := saramaOneTxn(a, log, true, "a-1"); err != nil {
		return "", fmt.Errorf("A: %w", err)
	}
	if err := a.BeginTxn(); err != nil {
		return "", fmt.Errorf("A BeginTxn: %w", err)
	}
	open := log.begin()
	if err := saramaSendLogged(a, log, open, saramaKeyed(topic, "a-2")); err != nil {
		return "", fmt.Errorf("A: %w", err)
	}

	b, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaTxnConfig(id)) // InitProducerId
	if err != nil {
		return "", fmt.Errorf("producer B: %w", err)
	}
	defer b.Close()
	log.end(open, false) // B's InitProducerId aborted it
	if err := saramaOneTxn(b, log, true, "b-1", sentinelKey); err != nil {
		return "", fmt.Errorf("B: %w", err)
	}

	commitErr := a.CommitTxn()
	fenced := "PRODUCER_FENCED"
	switch {
	case errors.Is(commitErr, sarama.ErrProducerFenced):
	case errors.Is(commitErr, sarama.ErrInvalidProducerEpoch):
		fenced = "INVALID_PRODUCER_EPOCH"
	default:
		return "", fmt.Errorf("A's commit after B started: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", commitErr)
	}
	status := a.TxnStatus()
	if status&sarama.ProducerTxnFlagFatalError == 0 {
		return "", fmt.Errorf("A's status after the fenced commit: %v, want a fatal error", status)
	}
	if _, err := saramaCheckTxnOutput(ctx, e, log); err != nil {
		return "", err
	}
	return fmt.Sprintf("A.commit=%s A.status=%v", fenced, status), nil
}

// saramaKeyed returns one message per key for partition 0 of topic.
func saramaKeyed(topic string, keys ...string) []*sarama.ProducerMessage {
	msgs := make([]*sarama.ProducerMessage, len(keys))
	for i, k := range keys {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Partition: 0, Key: sarama.StringEncoder(k), Value: sarama.StringEncoder(k + " value")}
	}
	return msgs
}

// saramaOneTxn writes keys to partition 0 of the log's topic in one transaction and ends it.
func saramaOneTxn(producer sarama.SyncProducer, log *txnLog, commit bool, keys ...string) error {
	if err := producer.BeginTxn(); err != nil {
		return fmt.Errorf("BeginTxn: %w", err)
	}
	txn := log.begin()
	if err := saramaSendLogged(producer, log, txn, saramaKeyed(log.topic, keys...)); err != nil {
		return err
	}
	return saramaEndTxn(producer, log, txn, commit)
}
