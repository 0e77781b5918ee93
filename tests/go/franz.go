// franz-go (github.com/twmb/franz-go: kgo for producing and consuming, kadm for admin calls)
// against the broker: produce with acks=all (idempotent, franz-go's default) and acks=1 in
// every codec, a classic group and a KIP-848 group (the broker assigns) of two members sharing
// partitions, commit and resume, kadm's topic, config, offset and group calls, and ElectLeaders
// (answered as Kafka does, or cleanly refused where the broker does not offer it).
// Transactions are in franz_txn.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func franzScenarios() []scenario {
	return []scenario{
		{"produce", franzProduce},
		{"group", func(ctx context.Context, e *env) (string, error) { return franzGroup(ctx, e, false) }},
		{"group-kip848", func(ctx context.Context, e *env) (string, error) { return franzGroup(ctx, e, true) }},
		{"commit-resume", franzCommitResume},
		{"admin", franzAdmin},
		{"elect-leaders", franzElectLeaders},
		{"txn-eos", franzTxnEOS},
		{"txn-fencing", franzTxnFencing},
		{"txn-admin", franzTxnAdmin},
	}
}

// franzCodecs maps Kafka's codec names to franz-go's and to the attribute bits a fetched
// record reports, so the read-back proves the batch really was compressed.
var franzCodecs = map[string]struct {
	codec kgo.CompressionCodec
	attr  uint8
}{
	"none":   {kgo.NoCompression(), 0},
	"gzip":   {kgo.GzipCompression(), 1},
	"snappy": {kgo.SnappyCompression(), 2},
	"lz4":    {kgo.Lz4Compression(), 3},
	"zstd":   {kgo.ZstdCompression(), 4},
}

func franzClient(e *env, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(franzOpts(e, opts...)...)
}

// franzOpts is the options every client here starts from (broker, client id, tracing), then opts.
func franzOpts(e *env, opts ...kgo.Opt) []kgo.Opt {
	base := []kgo.Opt{kgo.SeedBrokers(e.bootstrap), kgo.ClientID("goclients-franz")}
	if traceOn {
		base = append(base, kgo.WithLogger(kgo.BasicLogger(os.Stderr, traceLevel(), func() string { return time.Now().Format("15:04:05.000 ") })))
	}
	return append(base, opts...)
}

func franzAdminClient(e *env) (*kadm.Client, error) {
	cl, err := franzClient(e)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

func franzCreateTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	if err != nil {
		return fmt.Errorf("CreateTopics %s: %w", topic, err)
	}
	if resp.Err != nil {
		return fmt.Errorf("CreateTopics %s: %w (%s)", topic, resp.Err, resp.ErrMessage)
	}
	if resp.NumPartitions != partitions || resp.ReplicationFactor != 1 {
		return fmt.Errorf("CreateTopics %s answered %d partitions rf %d, asked %d rf 1", topic, resp.NumPartitions, resp.ReplicationFactor, partitions)
	}
	return nil
}

// franzProduceSync produces recs (keys spread them over partitions) and fills in each one's
// partition and offset from the acknowledgement.
func franzProduceSync(ctx context.Context, cl *kgo.Client, topic string, recs []rec) error {
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krs[i] = &kgo.Record{
			Topic:   topic,
			Key:     []byte(r.key),
			Value:   []byte(r.value),
			Headers: []kgo.RecordHeader{{Key: headerKey, Value: []byte(r.header)}},
		}
	}
	if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	for i, kr := range krs {
		recs[i].partition, recs[i].offset = kr.Partition, kr.Offset
	}
	return nil
}

func franzRec(r *kgo.Record) rec {
	out := rec{key: string(r.Key), value: string(r.Value), partition: r.Partition, offset: r.Offset}
	for _, h := range r.Headers {
		if h.Key == headerKey {
			out.header = string(h.Value)
		}
	}
	return out
}

// franzPollUntil polls cl until n records arrived in all, handing each to onRecord.
func franzPollUntil(ctx context.Context, cl *kgo.Client, n int, onRecord func(*kgo.Record)) error {
	got := 0
	return franzPollWhile(ctx, cl, func() bool { return got < n }, func(r *kgo.Record) {
		got++
		onRecord(r)
	})
}

// franzPollWhile polls cl while more() holds, handing each record to onRecord.
func franzPollWhile(ctx context.Context, cl *kgo.Client, more func() bool, onRecord func(*kgo.Record)) error {
	for more() {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fetches.EachError(func(topic string, p int32, err error) {
			ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err)
		})
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(onRecord)
	}
	return nil
}

func franzProduce(ctx context.Context, e *env) (string, error) {
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	const records, partitions = 120, 3
	for _, acks := range []string{"all", "1"} {
		for _, codec := range codecs {
			topic := e.name("produce-acks" + acks + "-" + codec)
			if err := franzCreateTopic(ctx, adm, topic, partitions, nil); err != nil {
				return "", err
			}
			opts := []kgo.Opt{kgo.ProducerBatchCompression(franzCodecs[codec].codec)}
			if acks == "1" {
				opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
			}
			if err := franzProduceReadBack(ctx, e, topic, partitions, records, codec, opts); err != nil {
				return "", fmt.Errorf("acks=%s %s: %w", acks, codec, err)
			}
		}
	}
	return fmt.Sprintf("acks=all(idempotent),1 codecs=%v records=%d each", codecs, records), nil
}

func franzProduceReadBack(ctx context.Context, e *env, topic string, partitions int32, records int, codec string, opts []kgo.Opt) error {
	producer, err := franzClient(e, opts...)
	if err != nil {
		return err
	}
	defer producer.Close()
	produced := makeRecords(topic, records)
	if err := franzProduceSync(ctx, producer, topic, produced); err != nil {
		return err
	}
	if err := checkProducedOffsets(produced, partitions); err != nil {
		return err
	}
	consumer, err := franzClient(e, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(fetchMaxWait))
	if err != nil {
		return err
	}
	defer consumer.Close()
	var got []rec
	var codecErr error
	err = franzPollUntil(ctx, consumer, records, func(r *kgo.Record) {
		got = append(got, franzRec(r))
		if c := r.Attrs.CompressionType(); c != franzCodecs[codec].attr && codecErr == nil {
			codecErr = fmt.Errorf("offset %d/%d fetched with compression %d, produced with %s", r.Partition, r.Offset, c, codec)
		}
	})
	if err != nil {
		return err
	}
	if codecErr != nil {
		return codecErr
	}
	return checkReadBack(produced, got)
}

// franzMember is one consumer-group member: its client, its current assignment (from the
// rebalance callbacks) and what it read.
type franzMember struct {
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[int32]bool
	got      []rec
}

func newFranzMember(e *env, group, topic string, serverSide bool, extra ...kgo.Opt) (*franzMember, error) {
	m := &franzMember{assigned: map[int32]bool{}}
	set := func(ps map[string][]int32, in bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range ps[topic] {
			m.assigned[p] = in
		}
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.HeartbeatInterval(heartbeatInterval),
		kgo.SessionTimeout(sessionTimeout),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { set(ps, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { set(ps, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { set(ps, false) }),
	}
	if serverSide {
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()))
	}
	cl, err := franzClient(e, append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	m.cl = cl
	return m, nil
}

func (m *franzMember) assignment() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedPartitions(m.assigned)
}

func (m *franzMember) read() []rec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]rec{}, m.got...)
}

// poll reads until ctx ends; errors other than the end of ctx go to errs.
func (m *franzMember) poll(ctx context.Context, errs chan<- error) {
	for ctx.Err() == nil {
		fetches := m.cl.PollFetches(ctx)
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				select {
				case errs <- fmt.Errorf("fetch %s/%d: %w", topic, p, err):
				default:
				}
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			m.mu.Lock()
			m.got = append(m.got, franzRec(r))
			m.mu.Unlock()
		})
	}
}

// franzGroup: two members join one group, wait until they split the 4 partitions, then read
// what is produced afterwards; each must read exactly its own partitions' records, together all.
func franzGroup(ctx context.Context, e *env, serverSide bool) (string, error) {
	const records, partitions = 400, 4
	name := "group"
	if serverSide {
		name = "group848"
	}
	topic, group := e.name(name), e.name(name+"-g")
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	if err := franzCreateTopic(ctx, adm, topic, partitions, nil); err != nil {
		return "", err
	}
	pollCtx, stop := context.WithCancel(ctx)
	errs := make(chan error, 2)
	var members []*franzMember
	defer func() {
		stop()
		for _, m := range members {
			m.cl.Close()
		}
	}()
	for range 2 {
		m, err := newFranzMember(e, group, topic, serverSide)
		if err != nil {
			return "", err
		}
		members = append(members, m)
		go m.poll(pollCtx, errs)
	}
	a, b := members[0], members[1]
	err = waitFor(ctx, "two members to split the partitions", func() (bool, string) {
		sa, sb := a.assignment(), b.assignment()
		return checkShared(sa, sb, partitions) == nil, fmt.Sprintf("%v and %v", sa, sb)
	})
	if err != nil {
		return "", err
	}
	if err := franzCheckGroupType(ctx, adm, group, topic, serverSide); err != nil {
		return "", err
	}
	producer, err := franzClient(e)
	if err != nil {
		return "", err
	}
	defer producer.Close()
	produced := makeRecords(topic, records)
	if err := franzProduceSync(ctx, producer, topic, produced); err != nil {
		return "", err
	}
	err = waitFor(ctx, "the members to read every record", func() (bool, string) {
		select {
		case err := <-errs:
			return true, err.Error()
		default:
		}
		n := len(a.read()) + len(b.read())
		return n >= records, fmt.Sprintf("%d of %d read", n, records)
	})
	if err != nil {
		return "", err
	}
	select {
	case err := <-errs:
		return "", err
	default:
	}
	ra, rb := a.read(), b.read()
	pa, pb := partitionsOf(ra), partitionsOf(rb)
	if err := checkShared(pa, pb, partitions); err != nil {
		return "", fmt.Errorf("records read: %w", err)
	}
	if err := checkSubset(pa, a.assignment()); err != nil {
		return "", err
	}
	if err := checkReadBack(produced, append(ra, rb...)); err != nil {
		return "", err
	}
	return fmt.Sprintf("members=%v,%v records=%d+%d", pa, pb, len(ra), len(rb)), nil
}

// franzCheckGroupType: ListGroups (v5: the group's type) says which protocol the members
// really use; a classic group is described by DescribeGroups, a KIP-848 one by
// ConsumerGroupDescribe, each with both members and their partitions.
func franzCheckGroupType(ctx context.Context, adm *kadm.Client, group, topic string, serverSide bool) error {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("ListGroups: %w", err)
	}
	wantType := "classic"
	if serverSide {
		wantType = "consumer"
	}
	if g, ok := listed[group]; !ok || g.GroupType != wantType || g.State != "Stable" {
		return fmt.Errorf("ListGroups: %s is %+v (listed %v), want type %s Stable", group, g, ok, wantType)
	}
	if !serverSide {
		described, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return fmt.Errorf("DescribeGroups: %w", err)
		}
		d := described[group]
		if d.Err != nil || len(d.Members) != 2 || d.State != "Stable" || d.Protocol != "cooperative-sticky" {
			return fmt.Errorf("DescribeGroups %s: state %q protocol %q, %d members, err %v; want Stable cooperative-sticky with 2", group, d.State, d.Protocol, len(d.Members), d.Err)
		}
		return nil
	}
	described, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("ConsumerGroupDescribe: %w", err)
	}
	d := described[group]
	if d.Err != nil || len(d.Members) != 2 || d.State != "Stable" || d.AssignorName != "range" {
		return fmt.Errorf("ConsumerGroupDescribe %s: state %q assignor %q, %d members, err %v; want Stable range with 2", group, d.State, d.AssignorName, len(d.Members), d.Err)
	}
	total := 0
	for _, m := range d.Members {
		n := len(m.Assignment[topic])
		if n == 0 || m.MemberType != 1 {
			return fmt.Errorf("ConsumerGroupDescribe %s: member %s type %d owns %v", group, m.MemberID, m.MemberType, m.Assignment)
		}
		total += n
	}
	if total != 4 {
		return fmt.Errorf("ConsumerGroupDescribe %s: members own %d partitions, want 4", group, total)
	}
	return nil
}

func checkSubset(read, assigned []int32) error {
	in := map[int32]bool{}
	for _, p := range assigned {
		in[p] = true
	}
	for _, p := range read {
		if !in[p] {
			return fmt.Errorf("a member read partition %d but owns %v", p, assigned)
		}
	}
	return nil
}

// franzCommitResume: a member processes the first 40 records of each partition, commits
// exactly those and leaves; a new member of the group must start at those offsets and read
// exactly the rest.
func franzCommitResume(ctx context.Context, e *env) (string, error) {
	const records, partitions, processedPerPartition = 200, 2, 40
	topic, group := e.name("resume"), e.name("resume-g")
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	if err := franzCreateTopic(ctx, adm, topic, partitions, nil); err != nil {
		return "", err
	}
	producer, err := franzClient(e)
	if err != nil {
		return "", err
	}
	defer producer.Close()
	produced := makeRecords(topic, records)
	if err := franzProduceSync(ctx, producer, topic, produced); err != nil {
		return "", err
	}

	first, err := newFranzMember(e, group, topic, false)
	if err != nil {
		return "", err
	}
	var done []*kgo.Record
	perPartition := map[int32]int{}
	more := func() bool { return perPartition[0] < processedPerPartition || perPartition[1] < processedPerPartition }
	err = franzPollWhile(ctx, first.cl, more, func(r *kgo.Record) {
		if perPartition[r.Partition] < processedPerPartition {
			perPartition[r.Partition]++
			done = append(done, r)
		}
	})
	if err != nil {
		first.cl.Close()
		return "", fmt.Errorf("first member: %w", err)
	}
	if err := first.cl.CommitRecords(ctx, done...); err != nil {
		first.cl.Close()
		return "", fmt.Errorf("commit: %w", err)
	}
	first.cl.Close() // leaves the group; auto-commit is off, so nothing else is committed
	want := map[int32]int64{}
	var firstRecs []rec
	for _, r := range done {
		want[r.Partition] = max(want[r.Partition], r.Offset+1)
		firstRecs = append(firstRecs, franzRec(r))
	}

	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return "", fmt.Errorf("OffsetFetch: %w", err)
	}
	for p, at := range want {
		o, ok := committed.Lookup(topic, p)
		if !ok || o.Err != nil || o.At != at {
			return "", fmt.Errorf("OffsetFetch %s/%d: %+v (found %v), committed %d", topic, p, o, ok, at)
		}
	}

	second, err := newFranzMember(e, group, topic, false)
	if err != nil {
		return "", err
	}
	defer second.cl.Close()
	var rest []rec
	firstAt := map[int32]int64{}
	err = franzPollUntil(ctx, second.cl, records-len(done), func(r *kgo.Record) {
		if _, ok := firstAt[r.Partition]; !ok {
			firstAt[r.Partition] = r.Offset
		}
		rest = append(rest, franzRec(r))
	})
	if err != nil {
		return "", fmt.Errorf("second member: %w", err)
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

// franzAdmin: kadm's topic, config, partition, offset, record-deletion and group calls, each
// read back through another call.
func franzAdmin(ctx context.Context, e *env) (string, error) {
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	topic := e.name("admin")
	// Reads that follow a change wait for it (eventually): Kafka's brokers learn of a change a
	// moment after the controller answered.
	retention := "3600000"
	if err := franzCreateTopic(ctx, adm, topic, 3, map[string]*string{"retention.ms": &retention}); err != nil {
		return "", err
	}
	if resp, _ := adm.CreateTopic(ctx, 3, 1, nil, topic); !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		return "", fmt.Errorf("creating %s again: %v, want TOPIC_ALREADY_EXISTS", topic, resp.Err)
	}
	err = eventually(ctx, "the new topic in Metadata and DescribeConfigs", func() error {
		return errors.Join(franzCheckPartitions(ctx, adm, topic, 3), franzCheckConfig(ctx, adm, topic, "retention.ms", retention))
	})
	if err != nil {
		return "", err
	}

	// Configs: alter incrementally, read the change back; a value of the wrong type is refused
	// with INVALID_CONFIG.
	newRetention := "7200000"
	alter := []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &newRetention}}
	if err := franzAlter(ctx, adm, topic, alter); err != nil {
		return "", err
	}
	err = eventually(ctx, "the altered config in DescribeConfigs", func() error {
		return franzCheckConfig(ctx, adm, topic, "retention.ms", newRetention)
	})
	if err != nil {
		return "", err
	}
	bad := "not-a-number"
	err = franzAlter(ctx, adm, topic, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &bad}})
	if !errors.Is(err, kerr.InvalidConfig) {
		return "", fmt.Errorf("retention.ms=%q: %v, want INVALID_CONFIG", bad, err)
	}

	// CreatePartitions 3 -> 5.
	created, err := adm.CreatePartitions(ctx, 2, topic)
	if err != nil || created[topic].Err != nil {
		return "", fmt.Errorf("CreatePartitions +2: %v %v (%s)", err, created[topic].Err, created[topic].ErrMessage)
	}
	if err := eventually(ctx, "5 partitions in Metadata", func() error { return franzCheckPartitions(ctx, adm, topic, 5) }); err != nil {
		return "", err
	}

	// ListOffsets: 10 records per partition with known timestamps, start/end/by time.
	producer, err := franzClient(e, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return "", err
	}
	defer producer.Close()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var krs []*kgo.Record
	for p := int32(0); p < 5; p++ {
		for i := range 10 {
			krs = append(krs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprint(i)), Timestamp: base.Add(time.Duration(i) * time.Second)})
		}
	}
	if err := producer.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		return "", fmt.Errorf("produce: %w", err)
	}
	if err := franzCheckOffsets(ctx, adm.ListStartOffsets, "start", topic, map[int32]int64{0: 0, 1: 0, 2: 0, 3: 0, 4: 0}); err != nil {
		return "", err
	}
	if err := franzCheckOffsets(ctx, adm.ListEndOffsets, "end", topic, map[int32]int64{0: 10, 1: 10, 2: 10, 3: 10, 4: 10}); err != nil {
		return "", err
	}
	byTime := func(ctx context.Context, topics ...string) (kadm.ListedOffsets, error) {
		return adm.ListOffsetsAfterMilli(ctx, base.Add(5500*time.Millisecond).UnixMilli(), topics...)
	}
	if err := franzCheckOffsets(ctx, byTime, "after t+5.5s", topic, map[int32]int64{0: 6, 4: 6}); err != nil {
		return "", err
	}

	// DeleteRecords below offset 4 of partition 0.
	deleted, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 4}}})
	if err != nil {
		return "", fmt.Errorf("DeleteRecords: %w", err)
	}
	if d, ok := deleted.Lookup(topic, 0); !ok || d.Err != nil || d.LowWatermark != 4 {
		return "", fmt.Errorf("DeleteRecords %s/0 before 4: %+v", topic, d)
	}
	if err := franzCheckOffsets(ctx, adm.ListStartOffsets, "start after DeleteRecords", topic, map[int32]int64{0: 4, 1: 0}); err != nil {
		return "", err
	}

	groupFacts, err := franzAdminGroups(ctx, e, adm, topic)
	if err != nil {
		return "", err
	}

	if resp, err := adm.DeleteTopic(ctx, topic); err != nil || resp.Err != nil {
		return "", fmt.Errorf("DeleteTopics %s: %v %v", topic, err, resp.Err)
	}
	err = eventually(ctx, "the topic to leave Metadata", func() error {
		listed, err := adm.ListTopics(ctx)
		if err != nil {
			return fmt.Errorf("ListTopics: %w", err)
		}
		if listed.Has(topic) {
			return fmt.Errorf("%s still listed after DeleteTopics", topic)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "create/list/describe/alter-configs/create-partitions/list-offsets/delete-records/delete-topic " + groupFacts, nil
}

// franzAdminGroups: a live member's group is listed and described with its assignment; offsets
// committed through the admin client (no member) are fetched back.
func franzAdminGroups(ctx context.Context, e *env, adm *kadm.Client, topic string) (string, error) {
	group := e.name("admin-g")
	m, err := newFranzMember(e, group, topic, false)
	if err != nil {
		return "", err
	}
	pollCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		m.cl.Close()
	}()
	errs := make(chan error, 1)
	go m.poll(pollCtx, errs)
	err = waitFor(ctx, "the member to own all 5 partitions", func() (bool, string) {
		a := m.assignment()
		return len(a) == 5, fmt.Sprint(a)
	})
	if err != nil {
		return "", err
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return "", fmt.Errorf("ListGroups: %w", err)
	}
	if g, ok := listed[group]; !ok || g.ProtocolType != "consumer" {
		return "", fmt.Errorf("ListGroups: %s is %+v (listed %v)", group, g, ok)
	}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return "", fmt.Errorf("DescribeGroups: %w", err)
	}
	d := described[group]
	if d.Err != nil || d.State != "Stable" || d.ProtocolType != "consumer" || len(d.Members) != 1 {
		return "", fmt.Errorf("DescribeGroups %s: %+v", group, d)
	}
	assigned, ok := d.Members[0].Assigned.AsConsumer()
	if !ok || len(assigned.Topics) != 1 || assigned.Topics[0].Topic != topic || len(assigned.Topics[0].Partitions) != 5 {
		return "", fmt.Errorf("DescribeGroups %s: member assignment %+v", group, assigned)
	}

	simple := e.name("admin-simple")
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: topic, Partition: 1, At: 7, LeaderEpoch: -1, Metadata: "by kadm"})
	if err := adm.CommitAllOffsets(ctx, simple, commit); err != nil {
		return "", fmt.Errorf("OffsetCommit (no member) to %s: %w", simple, err)
	}
	fetched, err := adm.FetchOffsets(ctx, simple)
	if err != nil {
		return "", fmt.Errorf("OffsetFetch %s: %w", simple, err)
	}
	if o, ok := fetched.Lookup(topic, 1); !ok || o.Err != nil || o.At != 7 || o.Metadata != "by kadm" {
		return "", fmt.Errorf("OffsetFetch %s: %+v (found %v), committed 7 %q", simple, o, ok, "by kadm")
	}
	return fmt.Sprintf("groups: %s Stable 1 member 5 partitions, %s offsets committed and fetched", group, simple), nil
}

func franzCheckPartitions(ctx context.Context, adm *kadm.Client, topic string, want int) error {
	listed, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("Metadata %s: %w", topic, err)
	}
	t := listed[topic]
	if t.Err != nil || len(t.Partitions) != want {
		return fmt.Errorf("Metadata %s: %d partitions (err %v), want %d", topic, len(t.Partitions), t.Err, want)
	}
	for p, d := range t.Partitions {
		if d.Err != nil || d.Leader < 0 || len(d.Replicas) != 1 || len(d.ISR) != 1 {
			return fmt.Errorf("Metadata %s/%d: %+v", topic, p, d)
		}
	}
	return nil
}

func franzCheckConfig(ctx context.Context, adm *kadm.Client, topic, key, want string) error {
	described, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("DescribeConfigs %s: %w", topic, err)
	}
	rc, err := described.On(topic, nil)
	if err != nil || rc.Err != nil {
		return fmt.Errorf("DescribeConfigs %s: %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			if c.Value == nil || *c.Value != want || c.Source.String() != "DYNAMIC_TOPIC_CONFIG" {
				return fmt.Errorf("DescribeConfigs %s: %s=%v source %v, want %s from DYNAMIC_TOPIC_CONFIG", topic, key, deref(c.Value), c.Source, want)
			}
			return nil
		}
	}
	return fmt.Errorf("DescribeConfigs %s: no %s among %d configs", topic, key, len(rc.Configs))
}

func franzAlter(ctx context.Context, adm *kadm.Client, topic string, alter []kadm.AlterConfig) error {
	resp, err := adm.AlterTopicConfigs(ctx, alter, topic)
	if err != nil {
		return fmt.Errorf("IncrementalAlterConfigs %s: %w", topic, err)
	}
	r, err := resp.On(topic, nil)
	if err != nil {
		return fmt.Errorf("IncrementalAlterConfigs %s: %w", topic, err)
	}
	return r.Err
}

func franzCheckOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), what, topic string, want map[int32]int64) error {
	listed, err := list(ctx, topic)
	if err != nil {
		return fmt.Errorf("ListOffsets %s: %w", what, err)
	}
	for p, at := range want {
		o, ok := listed.Lookup(topic, p)
		if !ok || o.Err != nil || o.Offset != at {
			return fmt.Errorf("ListOffsets %s %s/%d: %+v (found %v), want %d", what, topic, p, o, ok, at)
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

func traceLevel() kgo.LogLevel {
	if os.Getenv("GOCLIENTS_TRACE") == "debug" {
		return kgo.LogLevelDebug
	}
	return kgo.LogLevelInfo
}

// franzElectLeaders: a broker that offers ElectLeaders (43) must answer a preferred election
// for a single-replica partition with ELECTION_NOT_NEEDED (Kafka's answer); one that does not
// offer it must make kadm fail cleanly with no result, not hang or drop the connection. The
// facts say which (`elect-leaders=offered` or `elect-leaders=not-offered`).
func franzElectLeaders(ctx context.Context, e *env) (string, error) {
	adm, err := franzAdminClient(e)
	if err != nil {
		return "", err
	}
	defer adm.Close()
	topic := e.name("elect")
	if err := franzCreateTopic(ctx, adm, topic, 1, nil); err != nil {
		return "", err
	}
	versions, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", fmt.Errorf("ApiVersions: %w", err)
	}
	offered := len(versions) > 0
	versions.Each(func(v kadm.BrokerApiVersions) {
		_, ok := v.KeyMaxVersion(int16(kmsg.ElectLeaders))
		offered = offered && v.Err == nil && ok
	})
	set := kadm.TopicsSet{}
	set.Add(topic, 0)
	var results kadm.ElectLeadersResults
	var callErr error
	err = eventually(ctx, "ElectLeaders to know the new partition", func() error {
		results, callErr = adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, set)
		if !offered || callErr != nil {
			return nil
		}
		if r := results[topic][0]; errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return r.Err
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if !offered {
		if callErr == nil || len(results) != 0 {
			return "", fmt.Errorf("ElectLeaders is not in ApiVersions, yet the call gave %v, %+v", callErr, results)
		}
		return fmt.Sprintf("elect-leaders=not-offered (kadm: %v)", callErr), nil
	}
	if callErr != nil {
		return "", fmt.Errorf("ElectLeaders: %w", callErr)
	}
	if r := results[topic][0]; !errors.Is(r.Err, kerr.ElectionNotNeeded) {
		return "", fmt.Errorf("ElectLeaders %s/0: %+v, want ELECTION_NOT_NEEDED", topic, r)
	}
	return "elect-leaders=offered ELECTION_NOT_NEEDED", nil
}
