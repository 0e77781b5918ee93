// segmentio/kafka-go against the broker: Writer with acks=all and acks=1 in every codec (no
// idempotence: kafka-go has none), Readers in a group of two members sharing partitions
// (observed through DescribeGroups), commit and resume with CommitMessages, and the Client's
// CreateTopics, Metadata, DescribeConfigs, CreatePartitions, ListOffsets and DeleteTopics.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

func kafkaGoScenarios() []scenario {
	return []scenario{
		{"produce", kafkaGoProduce},
		{"group", kafkaGoGroup},
		{"commit-resume", kafkaGoCommitResume},
		{"admin", kafkaGoAdmin},
	}
}

var kafkaGoCodecs = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

// kafkaGoClient returns a Client with a transport of its own: a kafka-go Transport answers
// Metadata from its cache (refreshed every 6 s and after CreateTopics only), so a check after
// CreatePartitions or DeleteTopics needs a fresh one to see the broker's answer.
func kafkaGoClient(e *env) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(e.bootstrap), Timeout: 30 * time.Second, Transport: &kafka.Transport{}}
}

func kafkaGoLogger() kafka.Logger {
	if !traceOn {
		return nil
	}
	return log.New(os.Stderr, "[kafka-go] ", log.Ltime|log.Lmicroseconds)
}

func kafkaGoCreateTopic(ctx context.Context, cl *kafka.Client, topic string, partitions int, configs ...kafka.ConfigEntry) error {
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs,
	}}})
	if err != nil {
		return fmt.Errorf("CreateTopics %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil {
		return fmt.Errorf("CreateTopics %s: %w", topic, err)
	}
	return nil
}

// kafkaGoWrite writes recs and fills in each one's partition and offset from the Writer's
// Completion callback.
func kafkaGoWrite(ctx context.Context, w *kafka.Writer, recs []rec) error {
	var mu sync.Mutex
	where := map[string][2]int64{}
	w.Completion = func(msgs []kafka.Message, err error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if err == nil {
				where[string(m.Key)] = [2]int64{int64(m.Partition), m.Offset}
			}
		}
	}
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafka.Message{Key: []byte(r.key), Value: []byte(r.value), Headers: []kafka.Header{{Key: headerKey, Value: []byte(r.header)}}}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write to %s: %w", w.Topic, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range recs {
		at, ok := where[recs[i].key]
		if !ok {
			return fmt.Errorf("write to %s: no completion for key %q", w.Topic, recs[i].key)
		}
		recs[i].partition, recs[i].offset = int32(at[0]), at[1]
	}
	return nil
}

// kafkaGoWriter shares cl's transport, whose metadata cache CreateTopics refreshed: a writer
// with a transport of its own would not know a topic created a moment ago for up to 6 s.
func kafkaGoWriter(cl *kafka.Client, topic string, acks kafka.RequiredAcks, codec kafka.Compression, batch int) *kafka.Writer {
	return &kafka.Writer{
		Addr:         cl.Addr,
		Transport:    cl.Transport,
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: acks,
		Compression:  codec,
		BatchSize:    batch,
		BatchTimeout: 10 * time.Millisecond,
		Logger:       kafkaGoLogger(),
	}
}

func kafkaGoRec(m kafka.Message) rec {
	out := rec{key: string(m.Key), value: string(m.Value), partition: int32(m.Partition), offset: m.Offset}
	for _, h := range m.Headers {
		if h.Key == headerKey {
			out.header = string(h.Value)
		}
	}
	return out
}

func kafkaGoProduce(ctx context.Context, e *env) (string, error) {
	cl := kafkaGoClient(e)
	const records, partitions = 120, 3
	for _, acks := range []kafka.RequiredAcks{kafka.RequireAll, kafka.RequireOne} {
		for _, codec := range codecs {
			topic := e.name(fmt.Sprintf("produce-acks%v-%s", acks, codec))
			if err := kafkaGoCreateTopic(ctx, cl, topic, partitions); err != nil {
				return "", err
			}
			w := kafkaGoWriter(cl, topic, acks, kafkaGoCodecs[codec], records)
			produced := makeRecords(topic, records)
			err := kafkaGoWrite(ctx, w, produced)
			if cerr := w.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("closing the writer: %w", cerr)
			}
			if err == nil {
				err = checkProducedOffsets(produced, partitions)
			}
			if err == nil {
				err = kafkaGoReadBack(ctx, e, topic, partitions, produced)
			}
			if err != nil {
				return "", fmt.Errorf("acks=%v %s: %w", acks, codec, err)
			}
		}
	}
	return fmt.Sprintf("acks=all,1 codecs=%v records=%d each", codecs, records), nil
}

// kafkaGoReadBack reads every partition from its first offset with one partition Reader each
// until all produced records are in.
func kafkaGoReadBack(ctx context.Context, e *env, topic string, partitions int, produced []rec) error {
	readCtx, stop := context.WithCancel(ctx)
	defer stop()
	type read struct {
		r   rec
		err error
	}
	out := make(chan read, len(produced)+partitions)
	var wg sync.WaitGroup
	for p := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: []string{e.bootstrap}, Topic: topic, Partition: p,
			// Closing a Reader waits for its fetch in flight: a short wait keeps ten rounds quick.
			MaxWait: 100 * time.Millisecond, ReadLagInterval: -1, Logger: kafkaGoLogger(),
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				m, err := r.FetchMessage(readCtx)
				if err != nil {
					if readCtx.Err() == nil {
						out <- read{err: fmt.Errorf("read %s/%d: %w", topic, p, err)}
					}
					return
				}
				out <- read{r: kafkaGoRec(m)}
			}
		}()
	}
	var got []rec
	var err error
	for len(got) < len(produced) && err == nil {
		select {
		case r := <-out:
			got, err = append(got, r.r), r.err
		case <-ctx.Done():
			err = fmt.Errorf("read %d of %d: %w", len(got), len(produced), ctx.Err())
		}
	}
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	return checkReadBack(produced, got)
}

// kafkaGoMember is a Reader in a group, fetching into got until stopped.
type kafkaGoMember struct {
	r    *kafka.Reader
	mu   sync.Mutex
	got  []kafka.Message
	errs chan error
}

func newKafkaGoMember(e *env, group, topic string) *kafkaGoMember {
	return &kafkaGoMember{
		r: kafka.NewReader(kafka.ReaderConfig{
			Brokers:           []string{e.bootstrap},
			GroupID:           group,
			Topic:             topic,
			StartOffset:       kafka.FirstOffset,
			MaxWait:           fetchMaxWait,
			HeartbeatInterval: heartbeatInterval,
			SessionTimeout:    sessionTimeout,
			RebalanceTimeout:  sessionTimeout,
			JoinGroupBackoff:  heartbeatInterval,
			ReadLagInterval:   -1,
			Logger:            kafkaGoLogger(),
		}),
		errs: make(chan error, 1),
	}
}

// fetch reads messages until ctx ends or keep returns false for one (that one is not kept).
func (m *kafkaGoMember) fetch(ctx context.Context, keep func(kafka.Message) bool) {
	for {
		msg, err := m.r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() == nil {
				select {
				case m.errs <- err:
				default:
				}
			}
			return
		}
		m.mu.Lock()
		ok := keep == nil || keep(msg)
		if ok {
			m.got = append(m.got, msg)
		}
		m.mu.Unlock()
	}
}

func (m *kafkaGoMember) read() []kafka.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]kafka.Message{}, m.got...)
}

func (m *kafkaGoMember) err() error {
	select {
	case err := <-m.errs:
		return err
	default:
		return nil
	}
}

func kafkaGoRecs(msgs []kafka.Message) []rec {
	out := make([]rec, len(msgs))
	for i, m := range msgs {
		out[i] = kafkaGoRec(m)
	}
	return out
}

// kafkaGoGroup: two Readers of one group; once DescribeGroups shows them Stable with the 4
// partitions split, records are produced; each member reads only its own partitions.
func kafkaGoGroup(ctx context.Context, e *env) (string, error) {
	const records, partitions = 400, 4
	topic, group := e.name("group"), e.name("group-g")
	cl := kafkaGoClient(e)
	if err := kafkaGoCreateTopic(ctx, cl, topic, partitions); err != nil {
		return "", err
	}
	fetchCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	members := []*kafkaGoMember{newKafkaGoMember(e, group, topic), newKafkaGoMember(e, group, topic)}
	for _, m := range members {
		wg.Add(1)
		go func() { defer wg.Done(); m.fetch(fetchCtx, nil) }()
	}
	defer func() {
		stop()
		wg.Wait()
		for _, m := range members {
			m.r.Close()
		}
	}()
	a, b := members[0], members[1]
	var owned [][]int32
	err := waitFor(ctx, "DescribeGroups to show two members splitting the partitions", func() (bool, string) {
		if err := errors.Join(a.err(), b.err()); err != nil {
			return true, err.Error()
		}
		var state string
		owned, state = kafkaGoDescribe(ctx, cl, group, topic)
		return len(owned) == 2 && checkShared(owned[0], owned[1], partitions) == nil, state
	})
	if err != nil {
		return "", err
	}
	if err := errors.Join(a.err(), b.err()); err != nil {
		return "", err
	}
	listed, err := cl.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err != nil || listed.Error != nil {
		return "", fmt.Errorf("ListGroups: %v %v", err, listed.Error)
	}
	found := false
	for _, g := range listed.Groups {
		found = found || (g.GroupID == group && g.ProtocolType == "consumer")
	}
	if !found {
		return "", fmt.Errorf("ListGroups: %s not listed as a consumer group: %+v", group, listed.Groups)
	}

	w := kafkaGoWriter(cl, topic, kafka.RequireAll, 0, records)
	produced := makeRecords(topic, records)
	err = kafkaGoWrite(ctx, w, produced)
	w.Close()
	if err != nil {
		return "", err
	}
	err = waitFor(ctx, "the members to read every record", func() (bool, string) {
		if err := errors.Join(a.err(), b.err()); err != nil {
			return true, err.Error()
		}
		n := len(a.read()) + len(b.read())
		return n >= records, fmt.Sprintf("%d of %d read", n, records)
	})
	if err != nil {
		return "", err
	}
	if err := errors.Join(a.err(), b.err()); err != nil {
		return "", err
	}
	ra, rb := kafkaGoRecs(a.read()), kafkaGoRecs(b.read())
	pa, pb := partitionsOf(ra), partitionsOf(rb)
	if err := checkShared(pa, pb, partitions); err != nil {
		return "", fmt.Errorf("records read: %w", err)
	}
	if err := checkReadBack(produced, append(ra, rb...)); err != nil {
		return "", err
	}
	return fmt.Sprintf("members=%v,%v records=%d+%d", pa, pb, len(ra), len(rb)), nil
}

// kafkaGoDescribe returns each member's partitions of topic when the group is Stable, and a
// description of what DescribeGroups said.
func kafkaGoDescribe(ctx context.Context, cl *kafka.Client, group, topic string) ([][]int32, string) {
	resp, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(resp.Groups) != 1 {
		return nil, fmt.Sprintf("DescribeGroups: %v %+v", err, resp)
	}
	g := resp.Groups[0]
	if g.Error != nil || g.GroupState != "Stable" {
		return nil, fmt.Sprintf("DescribeGroups: state %q error %v", g.GroupState, g.Error)
	}
	var owned [][]int32
	for _, m := range g.Members {
		set := map[int32]bool{}
		for _, t := range m.MemberAssignments.Topics {
			if t.Topic == topic {
				for _, p := range t.Partitions {
					set[int32(p)] = true
				}
			}
		}
		owned = append(owned, sortedPartitions(set))
	}
	return owned, fmt.Sprintf("Stable, members own %v", owned)
}

// kafkaGoCommitResume: a Reader processes the first 40 records of each partition, commits
// exactly those and closes; a new Reader of the group must start at the committed offsets.
func kafkaGoCommitResume(ctx context.Context, e *env) (string, error) {
	const records, partitions, processedPerPartition = 200, 2, 40
	topic, group := e.name("resume"), e.name("resume-g")
	cl := kafkaGoClient(e)
	if err := kafkaGoCreateTopic(ctx, cl, topic, partitions); err != nil {
		return "", err
	}
	w := kafkaGoWriter(cl, topic, kafka.RequireAll, 0, records)
	produced := makeRecords(topic, records)
	err := kafkaGoWrite(ctx, w, produced)
	w.Close()
	if err != nil {
		return "", err
	}

	first := newKafkaGoMember(e, group, topic)
	perPartition := map[int]int{}
	enough := make(chan struct{})
	var once sync.Once
	fetchCtx, stop := context.WithCancel(ctx)
	go first.fetch(fetchCtx, func(m kafka.Message) bool {
		if perPartition[m.Partition] >= processedPerPartition {
			return false
		}
		perPartition[m.Partition]++
		if perPartition[0] == processedPerPartition && perPartition[1] == processedPerPartition {
			once.Do(func() { close(enough) })
		}
		return true
	})
	select {
	case <-enough:
	case <-ctx.Done():
	}
	stop()
	done := first.read()
	var commitErr error
	if ctx.Err() == nil {
		commitErr = first.r.CommitMessages(ctx, done...)
	}
	if err := errors.Join(commitErr, first.r.Close()); err != nil || ctx.Err() != nil {
		return "", fmt.Errorf("first member: processed %v: commit/close %v, %v (member error: %v)", perPartition, err, ctx.Err(), first.err())
	}
	want := map[int32]int64{}
	for _, m := range done {
		want[int32(m.Partition)] = max(want[int32(m.Partition)], m.Offset+1)
	}

	fetched, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1}}})
	if err != nil || fetched.Error != nil {
		return "", fmt.Errorf("OffsetFetch: %v %v", err, fetched.Error)
	}
	for _, o := range fetched.Topics[topic] {
		if o.Error != nil || o.CommittedOffset != want[int32(o.Partition)] {
			return "", fmt.Errorf("OffsetFetch %s/%d: %+v, committed %d", topic, o.Partition, o, want[int32(o.Partition)])
		}
	}

	second := newKafkaGoMember(e, group, topic)
	defer second.r.Close()
	fetchCtx, stop = context.WithCancel(ctx)
	defer stop()
	go second.fetch(fetchCtx, nil)
	rest := len(produced) - len(done)
	err = waitFor(ctx, "the second member to read the rest", func() (bool, string) {
		if err := second.err(); err != nil {
			return true, err.Error()
		}
		n := len(second.read())
		return n >= rest, fmt.Sprintf("%d of %d", n, rest)
	})
	if err != nil {
		return "", err
	}
	if err := second.err(); err != nil {
		return "", err
	}
	resumed := second.read()
	firstAt := map[int32]int64{}
	for _, m := range resumed {
		if _, ok := firstAt[int32(m.Partition)]; !ok {
			firstAt[int32(m.Partition)] = m.Offset
		}
	}
	for p, at := range want {
		if got, ok := firstAt[p]; !ok || got != at {
			return "", fmt.Errorf("second member started partition %d at %d (read it: %v), committed %d", p, got, ok, at)
		}
	}
	if err := checkReadBack(produced, append(kafkaGoRecs(done), kafkaGoRecs(resumed)...)); err != nil {
		return "", fmt.Errorf("first + second member: %w", err)
	}
	return fmt.Sprintf("committed=%v resumed_records=%d", want, len(resumed)), nil
}

// kafkaGoAdmin: the Client's admin requests, each read back through another one.
func kafkaGoAdmin(ctx context.Context, e *env) (string, error) {
	cl := kafkaGoClient(e)
	topic := e.name("admin")
	if err := kafkaGoCreateTopic(ctx, cl, topic, 3, kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "3600000"}); err != nil {
		return "", err
	}
	if err := kafkaGoCreateTopic(ctx, cl, topic, 3); !errors.Is(err, kafka.TopicAlreadyExists) {
		return "", fmt.Errorf("creating %s again: %v, want TOPIC_ALREADY_EXISTS", topic, err)
	}
	// Reads that follow a change wait for it (eventually): Kafka's brokers learn of a change a
	// moment after the controller answered.
	err := eventually(ctx, "the new topic in Metadata and DescribeConfigs", func() error {
		if err := kafkaGoCheckPartitions(ctx, cl, topic, 3); err != nil {
			return err
		}
		configs, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"retention.ms"},
		}}})
		if err != nil || len(configs.Resources) != 1 || configs.Resources[0].Error != nil {
			return fmt.Errorf("DescribeConfigs %s: %v %+v", topic, err, configs)
		}
		if c := configs.Resources[0].ConfigEntries; len(c) != 1 || c[0].ConfigName != "retention.ms" || c[0].ConfigValue != "3600000" || c[0].IsDefault {
			return fmt.Errorf("DescribeConfigs %s retention.ms: %+v, want 3600000 (not default)", topic, c)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	created, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 5}}})
	if err != nil || created.Errors[topic] != nil {
		return "", fmt.Errorf("CreatePartitions %s to 5: %v %v", topic, err, created)
	}
	err = eventually(ctx, "5 partitions in Metadata", func() error {
		cl = kafkaGoClient(e) // a fresh metadata cache
		return kafkaGoCheckPartitions(ctx, cl, topic, 5)
	})
	if err != nil {
		return "", err
	}

	// 10 records per partition, timestamps a second apart.
	w := kafkaGoWriter(cl, topic, kafka.RequireAll, 0, 50)
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	var msgs []kafka.Message
	for p := range 5 {
		for i := range 10 {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("%d-%d", p, i)), Value: []byte(fmt.Sprint(i)), Time: base.Add(time.Duration(i) * time.Second)})
		}
	}
	err = w.WriteMessages(ctx, msgs...)
	w.Close()
	if err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	// One ListOffsets request per kind: Kafka refuses a partition twice in one request.
	// kafka-go files each answer under the kind asked for (a time query under Offsets, keyed
	// by offset).
	byTime := base.Add(5500 * time.Millisecond)
	for _, q := range []struct {
		what string
		req  func(p int) kafka.OffsetRequest
		pick func(kafka.PartitionOffsets) int64
		want int64
	}{
		{"first", kafka.FirstOffsetOf, func(o kafka.PartitionOffsets) int64 { return o.FirstOffset }, 0},
		{"last", kafka.LastOffsetOf, func(o kafka.PartitionOffsets) int64 { return o.LastOffset }, 10},
		{"after t+5.5s", func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, byTime) }, kafkaGoTimeOffset, 6},
	} {
		if err := kafkaGoCheckOffsets(ctx, cl, topic, 5, q.what, q.req, q.pick, q.want); err != nil {
			return "", err
		}
	}

	deleted, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil || deleted.Errors[topic] != nil {
		return "", fmt.Errorf("DeleteTopics %s: %v %v", topic, err, deleted)
	}
	err = eventually(ctx, "the topic to leave Metadata", func() error {
		meta, err := kafkaGoClient(e).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil || len(meta.Topics) != 1 || !errors.Is(meta.Topics[0].Error, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("Metadata after DeleteTopics %s: %v %+v, want UNKNOWN_TOPIC_OR_PARTITION", topic, err, meta)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "create-topics/metadata/describe-configs/create-partitions/list-offsets(first,last,time)/delete-topics", nil
}

func kafkaGoCheckPartitions(ctx context.Context, cl *kafka.Client, topic string, want int) error {
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) != 1 {
		return fmt.Errorf("Metadata %s: %v %+v", topic, err, meta)
	}
	t := meta.Topics[0]
	if t.Error != nil || t.Name != topic || len(t.Partitions) != want {
		return fmt.Errorf("Metadata %s: %d partitions (err %v), want %d", topic, len(t.Partitions), t.Error, want)
	}
	for _, p := range t.Partitions {
		if p.Error != nil || p.Leader.ID != meta.Brokers[0].ID || len(p.Replicas) != 1 || len(p.Isr) != 1 {
			return fmt.Errorf("Metadata %s/%d: %+v", topic, p.ID, p)
		}
	}
	return nil
}

func kafkaGoCheckOffsets(ctx context.Context, cl *kafka.Client, topic string, partitions int, what string, req func(int) kafka.OffsetRequest, pick func(kafka.PartitionOffsets) int64, want int64) error {
	var reqs []kafka.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, req(p))
	}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return fmt.Errorf("ListOffsets %s: %w", what, err)
	}
	if len(resp.Topics[topic]) != partitions {
		return fmt.Errorf("ListOffsets %s: %+v", what, resp.Topics)
	}
	for _, o := range resp.Topics[topic] {
		got := pick(o)
		if o.Error != nil || got != want {
			return fmt.Errorf("ListOffsets %s %s/%d: %+v, want %d (all: %+v)", what, topic, o.Partition, o, want, resp.Topics[topic])
		}
	}
	return nil
}

// kafkaGoTimeOffset is the one offset a by-time ListOffsets answer carries (-1 if none).
func kafkaGoTimeOffset(o kafka.PartitionOffsets) int64 {
	if len(o.Offsets) != 1 {
		return -1
	}
	for off := range o.Offsets {
		return off
	}
	return -1
}
