// IBM/sarama against the broker: SyncProducer with acks=all (idempotent) and acks=1 in every
// codec, a ConsumerGroup of two members sharing partitions (range assignor), commit and resume
// through the group session, and ClusterAdmin's topic, config, partition, cluster, log-dir,
// record-deletion and group calls (offsets listed through the Client). Transactions are in
// sarama_txn.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

func saramaScenarios() []scenario {
	return []scenario{
		{"produce", saramaProduce},
		{"group", saramaGroup},
		{"commit-resume", saramaCommitResume},
		{"admin", saramaAdmin},
		{"txn", saramaTxn},
		{"txn-fencing", saramaTxnFencing},
		{"txn-admin", saramaTxnAdmin},
	}
}

// saramaVersion is the protocol level sarama is told the broker speaks: the Kafka 4.0 request
// versions (sarama's default is 2.8), since the broker under test claims a current Kafka.
var saramaVersion = saramaVersionFromEnv()

var saramaCodecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD,
}

func init() {
	if traceOn {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	}
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = saramaVersion
	c.ClientID = "goclients-sarama"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Return.Errors = true
	c.Consumer.MaxWaitTime = fetchMaxWait
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.Group.Heartbeat.Interval = heartbeatInterval
	c.Consumer.Group.Session.Timeout = sessionTimeout
	return c
}

func saramaAdmin(ctx context.Context, e *env) (string, error) {
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	facts, err := saramaAdminCalls(ctx, e, admin)
	if err != nil {
		return "", err
	}
	return facts, nil
}

func saramaCreateTopic(admin sarama.ClusterAdmin, topic string, partitions int32, configs map[string]*string) error {
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		return fmt.Errorf("CreateTopics %s: %w", topic, err)
	}
	return nil
}

// saramaSend produces recs with a SyncProducer and fills in partitions and offsets.
func saramaSend(producer sarama.SyncProducer, topic string, recs []rec) error {
	msgs := make([]*sarama.ProducerMessage, len(recs))
	for i, r := range recs {
		msgs[i] = &sarama.ProducerMessage{
			Topic:   topic,
			Key:     sarama.StringEncoder(r.key),
			Value:   sarama.StringEncoder(r.value),
			Headers: []sarama.RecordHeader{{Key: []byte(headerKey), Value: []byte(r.header)}},
		}
	}
	if err := producer.SendMessages(msgs); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	for i, m := range msgs {
		recs[i].partition, recs[i].offset = m.Partition, m.Offset
	}
	return nil
}

func saramaRec(m *sarama.ConsumerMessage) rec {
	out := rec{key: string(m.Key), value: string(m.Value), partition: m.Partition, offset: m.Offset}
	for _, h := range m.Headers {
		if string(h.Key) == headerKey {
			out.header = string(h.Value)
		}
	}
	return out
}

func saramaProduce(ctx context.Context, e *env) (string, error) {
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	const records, partitions = 120, 3
	for _, acks := range []string{"all", "1"} {
		for _, codec := range codecs {
			topic := e.name("produce-acks" + acks + "-" + codec)
			if err := saramaCreateTopic(admin, topic, partitions, nil); err != nil {
				return "", err
			}
			c := saramaConfig()
			c.Producer.Compression = saramaCodecs[codec]
			if acks == "all" {
				c.Producer.Idempotent = true
				c.Net.MaxOpenRequests = 1
			} else {
				c.Producer.RequiredAcks = sarama.WaitForLocal
			}
			if err := saramaProduceReadBack(ctx, e, c, topic, partitions, records); err != nil {
				return "", fmt.Errorf("acks=%s %s: %w", acks, codec, err)
			}
		}
	}
	return fmt.Sprintf("acks=all(idempotent),1 codecs=%v records=%d each", codecs, records), nil
}

func saramaProduceReadBack(ctx context.Context, e *env, c *sarama.Config, topic string, partitions int32, records int) error {
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, c)
	if err != nil {
		return fmt.Errorf("SyncProducer: %w", err)
	}
	produced := makeRecords(topic, records)
	err = saramaSend(producer, topic, produced)
	if cerr := producer.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the producer: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := checkProducedOffsets(produced, partitions); err != nil {
		return err
	}
	got, err := saramaReadPartitions(ctx, e, topic, produced)
	if err != nil {
		return err
	}
	return checkReadBack(produced, got)
}

// saramaReadPartitions reads every partition from its oldest offset with partition consumers
// (all at once) until each has as many records as were produced to it.
func saramaReadPartitions(ctx context.Context, e *env, topic string, produced []rec) ([]rec, error) {
	consumer, err := sarama.NewConsumer([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return nil, fmt.Errorf("Consumer: %w", err)
	}
	defer consumer.Close() // closes the partition consumers too
	want := map[int32]int{}
	for _, r := range produced {
		want[r.partition]++
	}
	type result struct {
		recs []rec
		err  error
	}
	results := make(chan result, len(want))
	for p, n := range want {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("ConsumePartition %s/%d: %w", topic, p, err)
		}
		go func() {
			var out []rec
			for len(out) < n {
				select {
				case m := <-pc.Messages():
					out = append(out, saramaRec(m))
				case err := <-pc.Errors():
					results <- result{err: fmt.Errorf("consume %s/%d: %w", topic, p, err)}
					return
				case <-ctx.Done():
					results <- result{err: fmt.Errorf("consume %s/%d: %d of %d records: %w", topic, p, len(out), n, ctx.Err())}
					return
				}
			}
			results <- result{recs: out}
		}()
	}
	var got []rec
	var errs []error
	for range want {
		r := <-results
		got = append(got, r.recs...)
		errs = append(errs, r.err)
	}
	return got, errors.Join(errs...)
}

// saramaMember is a ConsumerGroup member: Setup/Cleanup track its claims, ConsumeClaim hands
// each message to onMessage (under the member's lock) and marks it when that returns true.
type saramaMember struct {
	group     sarama.ConsumerGroup
	mu        sync.Mutex
	claims    map[int32]bool
	topic     string
	onMessage func(sarama.ConsumerGroupSession, *sarama.ConsumerMessage) bool
	errs      chan error
}

func newSaramaMember(e *env, group, topic string, onMessage func(sarama.ConsumerGroupSession, *sarama.ConsumerMessage) bool) (*saramaMember, error) {
	g, err := sarama.NewConsumerGroup([]string{e.bootstrap}, group, saramaConfig())
	if err != nil {
		return nil, fmt.Errorf("ConsumerGroup %s: %w", group, err)
	}
	return &saramaMember{group: g, claims: map[int32]bool{}, topic: topic, onMessage: onMessage, errs: make(chan error, 8)}, nil
}

// run consumes until ctx ends (Consume returns at every rebalance and is called again).
func (m *saramaMember) run(ctx context.Context) {
	go func() {
		for err := range m.group.Errors() {
			select {
			case m.errs <- err:
			default:
			}
		}
	}()
	for ctx.Err() == nil {
		if err := m.group.Consume(ctx, []string{m.topic}, m); err != nil && ctx.Err() == nil {
			select {
			case m.errs <- fmt.Errorf("Consume: %w", err):
			default:
			}
			return
		}
	}
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range s.Claims()[m.topic] {
		m.claims[p] = true
	}
	return nil
}

func (m *saramaMember) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = map[int32]bool{}
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m.mu.Lock()
			mark := m.onMessage(s, msg)
			m.mu.Unlock()
			if mark {
				s.MarkMessage(msg, "")
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

func (m *saramaMember) assignment() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedPartitions(m.claims)
}

func (m *saramaMember) err() error {
	select {
	case err := <-m.errs:
		return err
	default:
		return nil
	}
}

// saramaGroup: two members wait until they split the 4 partitions, then read what is produced
// afterwards; each reads only its own partitions, together every record once.
func saramaGroup(ctx context.Context, e *env) (string, error) {
	const records, partitions = 400, 4
	topic, group := e.name("group"), e.name("group-g")
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	if err := saramaCreateTopic(admin, topic, partitions, nil); err != nil {
		return "", err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var members []*saramaMember
	got := make([][]rec, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		m, err := newSaramaMember(e, group, topic, func(_ sarama.ConsumerGroupSession, msg *sarama.ConsumerMessage) bool {
			got[i] = append(got[i], saramaRec(msg))
			return true
		})
		if err != nil {
			return "", err
		}
		members = append(members, m)
		wg.Add(1)
		go func() { defer wg.Done(); m.run(runCtx) }()
	}
	defer func() {
		stop()
		wg.Wait()
		for _, m := range members {
			m.group.Close()
		}
	}()
	a, b := members[0], members[1]
	err = waitFor(ctx, "two members to split the partitions", func() (bool, string) {
		if err := errors.Join(a.err(), b.err()); err != nil {
			return true, err.Error()
		}
		sa, sb := a.assignment(), b.assignment()
		return checkShared(sa, sb, partitions) == nil, fmt.Sprintf("%v and %v", sa, sb)
	})
	if err != nil {
		return "", err
	}
	if err := checkShared(a.assignment(), b.assignment(), partitions); err != nil {
		return "", fmt.Errorf("member error: %w", errors.Join(a.err(), b.err()))
	}
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("SyncProducer: %w", err)
	}
	defer producer.Close()
	produced := makeRecords(topic, records)
	if err := saramaSend(producer, topic, produced); err != nil {
		return "", err
	}
	read := func() (ra, rb []rec) {
		a.mu.Lock()
		ra = append(ra, got[0]...)
		a.mu.Unlock()
		b.mu.Lock()
		rb = append(rb, got[1]...)
		b.mu.Unlock()
		return ra, rb
	}
	err = waitFor(ctx, "the members to read every record", func() (bool, string) {
		ra, rb := read()
		return len(ra)+len(rb) >= records, fmt.Sprintf("%d of %d read", len(ra)+len(rb), records)
	})
	if err != nil {
		return "", err
	}
	if err := errors.Join(a.err(), b.err()); err != nil {
		return "", err
	}
	ra, rb := read()
	pa, pb := partitionsOf(ra), partitionsOf(rb)
	if err := checkShared(pa, pb, partitions); err != nil {
		return "", fmt.Errorf("records read: %w", err)
	}
	if err := checkReadBack(produced, append(ra, rb...)); err != nil {
		return "", err
	}
	return fmt.Sprintf("members=%v,%v records=%d+%d", pa, pb, len(ra), len(rb)), nil
}

// saramaCommitResume: a member processes the first 40 records of each partition, marks and
// commits exactly those, and leaves; a new member must start at the committed offsets.
func saramaCommitResume(ctx context.Context, e *env) (string, error) {
	const records, partitions, processedPerPartition = 200, 2, 40
	topic, group := e.name("resume"), e.name("resume-g")
	admin, err := sarama.NewClusterAdmin([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("ClusterAdmin: %w", err)
	}
	defer admin.Close()
	if err := saramaCreateTopic(admin, topic, partitions, nil); err != nil {
		return "", err
	}
	producer, err := sarama.NewSyncProducer([]string{e.bootstrap}, saramaConfig())
	if err != nil {
		return "", fmt.Errorf("SyncProducer: %w", err)
	}
	defer producer.Close()
	produced := makeRecords(topic, records)
	if err := saramaSend(producer, topic, produced); err != nil {
		return "", err
	}

	var firstRecs []rec
	perPartition := map[int32]int{}
	want := map[int32]int64{}
	committed := make(chan struct{})
	var commitOnce sync.Once
	first, err := newSaramaMember(e, group, topic, func(s sarama.ConsumerGroupSession, msg *sarama.ConsumerMessage) bool {
		if perPartition[msg.Partition] >= processedPerPartition {
			return false
		}
		perPartition[msg.Partition]++
		firstRecs = append(firstRecs, saramaRec(msg))
		want[msg.Partition] = msg.Offset + 1
		if perPartition[0] == processedPerPartition && perPartition[1] == processedPerPartition {
			// Mark this last one before the synchronous commit (the caller marks after return).
			s.MarkMessage(msg, "")
			commitOnce.Do(func() {
				s.Commit()
				close(committed)
			})
		}
		return true
	})
	if err != nil {
		return "", err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); first.run(runCtx) }()
	select {
	case <-committed:
	case <-ctx.Done():
	}
	stop()
	<-done
	if err := first.group.Close(); err != nil { // leaves the group
		return "", fmt.Errorf("closing the first member: %w", err)
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("first member: processed %v: %w (member error: %v)", perPartition, ctx.Err(), first.err())
	}

	fetched, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
	if err != nil {
		return "", fmt.Errorf("OffsetFetch: %w", err)
	}
	for p, at := range want {
		b := fetched.GetBlock(topic, p)
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != at {
			return "", fmt.Errorf("OffsetFetch %s/%d: %+v, committed %d", topic, p, b, at)
		}
	}

	var rest []rec
	firstAt := map[int32]int64{}
	second, err := newSaramaMember(e, group, topic, func(_ sarama.ConsumerGroupSession, msg *sarama.ConsumerMessage) bool {
		if _, ok := firstAt[msg.Partition]; !ok {
			firstAt[msg.Partition] = msg.Offset
		}
		rest = append(rest, saramaRec(msg))
		return true
	})
	if err != nil {
		return "", err
	}
	runCtx, stop = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { defer close(done); second.run(runCtx) }()
	err = waitFor(ctx, "the second member to read the rest", func() (bool, string) {
		if err := second.err(); err != nil {
			return true, err.Error()
		}
		second.mu.Lock()
		defer second.mu.Unlock()
		return len(rest) >= records-len(firstRecs), fmt.Sprintf("%d of %d", len(rest), records-len(firstRecs))
	})
	stop()
	<-done
	second.group.Close()
	if err != nil {
		return "", err
	}
	if err := second.err(); err != nil {
		return "", err
	}
	for p, at := range want {
		if got, ok := firstAt[p]; !ok || got != at {
			return "", fmt.Errorf("second member started partition %d at %d (read it: %v), committed %d", p, got, ok, at)
		}
	}
	if err := checkReadBack(produced, append(firstRecs, rest...)); err != nil {
		return "", fmt.Errorf("first + second member: %w", err)
	}
	return fmt.Sprintf("committed=%v resumed_records=%d", want, len(rest)), nil
}

// saramaAdminCalls: ClusterAdmin's calls, each read back through another call.
func saramaAdminCalls(ctx context.Context, e *env, admin sarama.ClusterAdmin) (string, error) {
	topic := e.name("admin")
	retention := "3600000"
	if err := saramaCreateTopic(admin, topic, 3, map[string]*string{"retention.ms": &retention}); err != nil {
		return "", err
	}
	if err := saramaCreateTopic(admin, topic, 3, nil); !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return "", fmt.Errorf("creating %s again: %v, want TOPIC_ALREADY_EXISTS", topic, err)
	}
	// Reads that follow a change wait for it (eventually): Kafka's brokers learn of a change a
	// moment after the controller answered.
	err := eventually(ctx, "the new topic in ListTopics, Metadata and DescribeConfigs", func() error {
		topics, err := admin.ListTopics()
		if err != nil {
			return fmt.Errorf("ListTopics: %w", err)
		}
		if d, ok := topics[topic]; !ok || d.NumPartitions != 3 || d.ReplicationFactor != 1 || deref(d.ConfigEntries["retention.ms"]) != retention {
			return fmt.Errorf("ListTopics: %s is %+v (listed %v), want 3 partitions rf 1 retention.ms=%s", topic, d, ok, retention)
		}
		return errors.Join(saramaCheckPartitions(admin, topic, 3), saramaCheckConfig(admin, topic, map[string]string{"retention.ms": retention}))
	})
	if err != nil {
		return "", err
	}

	// Configs: AlterConfigs (the whole dynamic set), IncrementalAlterConfigs (one key), a bad
	// value refused with INVALID_CONFIG.
	newRetention := "7200000"
	if err := admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &newRetention}, false); err != nil {
		return "", fmt.Errorf("AlterConfigs: %w", err)
	}
	retentionBytes := "1073741824"
	incremental := map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.bytes": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &retentionBytes},
	}
	if err := admin.IncrementalAlterConfig(sarama.TopicResource, topic, incremental, false); err != nil {
		return "", fmt.Errorf("IncrementalAlterConfigs: %w", err)
	}
	err = eventually(ctx, "the altered configs in DescribeConfigs", func() error {
		return saramaCheckConfig(admin, topic, map[string]string{"retention.ms": newRetention, "retention.bytes": retentionBytes})
	})
	if err != nil {
		return "", err
	}
	bad := "not-a-number"
	err = admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &bad}, false)
	if !errors.Is(err, sarama.ErrInvalidConfig) {
		return "", fmt.Errorf("AlterConfigs retention.ms=%q: %v, want INVALID_CONFIG", bad, err)
	}

	if err := admin.CreatePartitions(topic, 5, nil, false); err != nil {
		return "", fmt.Errorf("CreatePartitions 5: %w", err)
	}
	if err := eventually(ctx, "5 partitions in Metadata", func() error { return saramaCheckPartitions(admin, topic, 5) }); err != nil {
		return "", err
	}

	brokers, controller, err := admin.DescribeCluster()
	if err != nil || len(brokers) != 1 || controller < 0 {
		return "", fmt.Errorf("DescribeCluster: %d brokers, controller %d, err %v", len(brokers), controller, err)
	}
	err = eventually(ctx, "5 partitions in DescribeLogDirs", func() error {
		logDirs, err := admin.DescribeLogDirs([]int32{brokers[0].ID()})
		if err != nil {
			return fmt.Errorf("DescribeLogDirs: %w", err)
		}
		if n := saramaLogDirPartitions(logDirs[brokers[0].ID()], topic); n != 5 {
			return fmt.Errorf("DescribeLogDirs: %d partitions of %s, want 5", n, topic)
		}
		return nil
	})
	if err != nil {
		return "", err
	}

	offsetFacts, err := saramaOffsets(e, admin, topic)
	if err != nil {
		return "", err
	}
	groupFacts, err := saramaAdminGroups(ctx, e, admin, topic)
	if err != nil {
		return "", err
	}

	if err := admin.DeleteTopic(topic); err != nil {
		return "", fmt.Errorf("DeleteTopics: %w", err)
	}
	err = eventually(ctx, "the topic to leave ListTopics", func() error {
		topics, err := admin.ListTopics()
		if err != nil {
			return fmt.Errorf("ListTopics: %w", err)
		}
		if _, ok := topics[topic]; ok {
			return fmt.Errorf("%s still listed after DeleteTopics", topic)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "create/list/describe/alter-configs/incremental-alter-configs/create-partitions/describe-cluster/describe-log-dirs/delete-topic " + offsetFacts + " " + groupFacts, nil
}

func saramaLogDirPartitions(dirs []sarama.DescribeLogDirsResponseDirMetadata, topic string) int {
	n := 0
	for _, d := range dirs {
		for _, t := range d.Topics {
			if t.Topic == topic {
				n += len(t.Partitions)
			}
		}
	}
	return n
}

// saramaOffsets: 10 records per partition with known timestamps; ListOffsets (oldest, newest,
// by time) through the Client; DeleteRecords moves partition 0's start.
func saramaOffsets(e *env, admin sarama.ClusterAdmin, topic string) (string, error) {
	c := saramaConfig()
	c.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient([]string{e.bootstrap}, c)
	if err != nil {
		return "", fmt.Errorf("Client: %w", err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return "", fmt.Errorf("SyncProducer: %w", err)
	}
	defer producer.Close()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var msgs []*sarama.ProducerMessage
	for p := int32(0); p < 5; p++ {
		for i := range 10 {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder(fmt.Sprint(i)), Timestamp: base.Add(time.Duration(i) * time.Second)})
		}
	}
	if err := producer.SendMessages(msgs); err != nil {
		return "", fmt.Errorf("produce: %w", err)
	}
	check := func(what string, p int32, at int64, want int64) error {
		got, err := client.GetOffset(topic, p, at)
		if err != nil || got != want {
			return fmt.Errorf("ListOffsets %s %s/%d: %d (err %v), want %d", what, topic, p, got, err, want)
		}
		return nil
	}
	byTime := base.Add(5500 * time.Millisecond).UnixMilli()
	for p := int32(0); p < 5; p++ {
		if err := errors.Join(check("oldest", p, sarama.OffsetOldest, 0), check("newest", p, sarama.OffsetNewest, 10), check("after t+5.5s", p, byTime, 6)); err != nil {
			return "", err
		}
	}
	if err := admin.DeleteRecords(topic, map[int32]int64{0: 4}); err != nil {
		return "", fmt.Errorf("DeleteRecords %s/0 before 4: %w", topic, err)
	}
	if err := errors.Join(check("oldest after DeleteRecords", 0, sarama.OffsetOldest, 4), check("oldest", 1, sarama.OffsetOldest, 0)); err != nil {
		return "", err
	}
	return "list-offsets(oldest,newest,time)/delete-records", nil
}

// saramaAdminGroups: a live member's group is listed and described with its assignment, its
// commit is fetched back, and the group is deleted once empty.
func saramaAdminGroups(ctx context.Context, e *env, admin sarama.ClusterAdmin, topic string) (string, error) {
	group := e.name("admin-g")
	committed := make(chan struct{})
	var once sync.Once
	m, err := newSaramaMember(e, group, topic, func(s sarama.ConsumerGroupSession, msg *sarama.ConsumerMessage) bool {
		once.Do(func() {
			s.MarkOffset(topic, 1, 7, "by sarama")
			s.Commit()
			close(committed)
		})
		return false
	})
	if err != nil {
		return "", err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.run(runCtx) }()
	closeMember := func() {
		stop()
		<-done
		m.group.Close()
	}
	err = waitFor(ctx, "the member to own all 5 partitions and commit", func() (bool, string) {
		select {
		case <-committed:
			return len(m.assignment()) == 5, fmt.Sprint(m.assignment())
		default:
			return false, fmt.Sprintf("%v, not committed", m.assignment())
		}
	})
	if err != nil {
		closeMember()
		return "", err
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil || groups[group] != "consumer" {
		closeMember()
		return "", fmt.Errorf("ListGroups: %s is %q (err %v)", group, groups[group], err)
	}
	described, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil || len(described) != 1 {
		closeMember()
		return "", fmt.Errorf("DescribeGroups: %v %v", described, err)
	}
	d := described[0]
	if d.State != "Stable" || d.ProtocolType != "consumer" || d.Protocol != "range" || len(d.Members) != 1 {
		closeMember()
		return "", fmt.Errorf("DescribeGroups %s: state %q type %q protocol %q, %d members", group, d.State, d.ProtocolType, d.Protocol, len(d.Members))
	}
	for _, member := range d.Members {
		assignment, err := member.GetMemberAssignment()
		if err != nil || len(assignment.Topics[topic]) != 5 {
			closeMember()
			return "", fmt.Errorf("DescribeGroups %s: member assignment %+v (err %v)", group, assignment, err)
		}
	}
	closeMember()
	fetched, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {1}})
	if err != nil {
		return "", fmt.Errorf("OffsetFetch %s: %w", group, err)
	}
	if b := fetched.GetBlock(topic, 1); b == nil || b.Err != sarama.ErrNoError || b.Offset != 7 || b.Metadata != "by sarama" {
		return "", fmt.Errorf("OffsetFetch %s/1: %+v, committed 7 %q", topic, b, "by sarama")
	}
	if err := admin.DeleteConsumerGroup(group); err != nil {
		return "", fmt.Errorf("DeleteGroups %s: %w", group, err)
	}
	groups, err = admin.ListConsumerGroups()
	if err != nil {
		return "", fmt.Errorf("ListGroups: %w", err)
	}
	if _, ok := groups[group]; ok {
		return "", fmt.Errorf("ListGroups: %s still listed after DeleteGroups", group)
	}
	return fmt.Sprintf("groups: %s Stable range 1 member 5 partitions, commit fetched, deleted", group), nil
}

func saramaCheckPartitions(admin sarama.ClusterAdmin, topic string, want int) error {
	described, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(described) != 1 {
		return fmt.Errorf("Metadata %s: %v %v", topic, described, err)
	}
	t := described[0]
	if t.Err != sarama.ErrNoError || len(t.Partitions) != want {
		return fmt.Errorf("Metadata %s: %d partitions (err %v), want %d", topic, len(t.Partitions), t.Err, want)
	}
	for _, p := range t.Partitions {
		if p.Err != sarama.ErrNoError || p.Leader < 0 || len(p.Replicas) != 1 || len(p.Isr) != 1 {
			return fmt.Errorf("Metadata %s/%d: %+v", topic, p.ID, p)
		}
	}
	return nil
}

func saramaCheckConfig(admin sarama.ClusterAdmin, topic string, want map[string]string) error {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		return fmt.Errorf("DescribeConfigs %s: %w", topic, err)
	}
	found := 0
	for _, c := range entries {
		if w, ok := want[c.Name]; ok {
			if c.Value != w || c.Source != sarama.SourceTopic {
				return fmt.Errorf("DescribeConfigs %s: %s=%s source %v, want %s from the topic", topic, c.Name, c.Value, c.Source, w)
			}
			found++
		}
	}
	if found != len(want) {
		return fmt.Errorf("DescribeConfigs %s: found %d of %v among %d configs", topic, found, want, len(entries))
	}
	return nil
}

// saramaVersionFromEnv: GOCLIENTS_SARAMA_VERSION (e.g. 2.8.0) overrides the protocol level, to
// try what sarama's default speaks; 4.0.0 otherwise.
func saramaVersionFromEnv() sarama.KafkaVersion {
	v, err := sarama.ParseKafkaVersion(os.Getenv("GOCLIENTS_SARAMA_VERSION"))
	if os.Getenv("GOCLIENTS_SARAMA_VERSION") == "" || err != nil {
		return sarama.V4_0_0_0
	}
	return v
}
