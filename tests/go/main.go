// Command goclients drives a Kafka-compatible broker with the current Go clients (issue 14):
// franz-go (kgo and kadm), IBM/sarama and segmentio/kafka-go. sluice/tests/go_clients.rs runs
// it against a real `sluice` process; it works against Apache Kafka unchanged.
//
//	goclients <client> <bootstrap> [--inject-fault=duplicate|missing] [scenario ...]
//
// client is franz-go, sarama or kafka-go; without scenarios it runs all of the client's.
// --inject-fault makes the transactional scenarios corrupt what their read_committed reader
// returned before checking it (txn.go), to show that the checks fail. Each
// scenario prints one line, `ok <client> <scenario> <facts>` or `FAIL <client> <scenario>:
// <what differed>`, then a final `SUMMARY <client> ok=N failed=M`; the exit status is 1 when any
// scenario failed (2 for bad arguments). The scenarios check outcomes, never just "no error":
// every record read back equals the one produced (key, value, header, partition, offset where
// the client reports it), group members' partitions are disjoint and cover the topic, a resumed
// member starts exactly at the committed offsets, and admin calls are read back through a
// second call.
//
// The transactional scenarios (issue 15: franz_txn.go, sarama_txn.go, txn.go) check exactly-once
// delivery under both isolation levels; their expectations were taken from Apache Kafka 4.3.1.
//
// This file owns the command line, the runner and what the clients share: the record set, the
// read-back comparison and naming. One file per client holds its scenarios.
package main

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"time"
)

// scenarioTimeout bounds one scenario: against a debug broker on a loaded 2-core machine the
// slowest (a group rebalance) takes a few seconds; this only turns a hang into a failure.
const scenarioTimeout = 90 * time.Second

// pollInterval is how often a waiting scenario re-checks its condition (never a sleep that
// stands in for synchronisation: every wait re-checks a condition until a deadline).
const pollInterval = 50 * time.Millisecond

// Consumer settings shorter than the clients' defaults, so a test does not idle: a fetch
// sent before a partition's start offset is known long-polls without it (franz-go's default
// wait is 5 s), and a member notices a rebalance at its next heartbeat (3 s by default). The
// broker under test must allow the session timeouts the clients send (Kafka's
// group.min.session.timeout.ms is 6 s).
const (
	fetchMaxWait      = 500 * time.Millisecond
	heartbeatInterval = 300 * time.Millisecond
	sessionTimeout    = 10 * time.Second
)

// codecs are the compression codecs every client here supports, by Kafka's names.
var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// env is what every scenario gets: the broker and a run id that keeps topic and group names
// unique, so the program can run twice against one broker.
type env struct {
	client    string
	bootstrap string
	run       string
}

// name returns "<client>-<what>-<run>", a topic or group name unique to this run.
func (e *env) name(what string) string {
	return fmt.Sprintf("go-%s-%s-%s", e.client, what, e.run)
}

type scenario struct {
	name string
	run  func(ctx context.Context, e *env) (string, error)
}

func clients() map[string][]scenario {
	return map[string][]scenario{
		"franz-go": franzScenarios(),
		"sarama":   saramaScenarios(),
		"kafka-go": kafkaGoScenarios(),
	}
}

func main() {
	all := clients()
	if len(os.Args) < 3 || all[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: goclients franz-go|sarama|kafka-go <bootstrap> [--inject-fault=duplicate|missing] [scenario ...]")
		os.Exit(2)
	}
	e := &env{client: os.Args[1], bootstrap: os.Args[2], run: fmt.Sprintf("%06d", rand.Intn(1_000_000))}
	var names []string
	for _, arg := range os.Args[3:] {
		if fault, ok := strings.CutPrefix(arg, "--inject-fault="); ok {
			if fault != "duplicate" && fault != "missing" {
				fmt.Fprintf(os.Stderr, "--inject-fault=%q: want duplicate or missing\n", fault)
				os.Exit(2)
			}
			injectFault = fault
			continue
		}
		names = append(names, arg)
	}
	selected, err := selectScenarios(all[e.client], names)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ok, failed := 0, 0
	for _, s := range selected {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
		facts, err := s.run(ctx, e)
		cancel()
		elapsed := time.Since(start).Round(time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s %s: %v (after %v)\n", e.client, s.name, err, elapsed)
			continue
		}
		ok++
		fmt.Printf("ok %s %s %s time=%v\n", e.client, s.name, facts, elapsed)
	}
	fmt.Printf("SUMMARY %s ok=%d failed=%d\n", e.client, ok, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func selectScenarios(all []scenario, names []string) ([]scenario, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []scenario
	for _, n := range names {
		found := false
		for _, s := range all {
			if s.name == n {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			var known []string
			for _, s := range all {
				known = append(known, s.name)
			}
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// ---- the shared record set and its read-back check ---------------------------------------------

// rec is one record as produced or as read back, in client-neutral form. Offset is -1 where
// the client does not report it (kafka-go's writer).
type rec struct {
	key, value, header string
	partition          int32
	offset             int64
}

// headerKey is the one header every produced record carries (value: the record's index).
const headerKey = "go-index"

// makeRecords returns n records with distinct keys; values are long and repetitive enough
// that every codec really compresses them.
func makeRecords(tag string, n int) []rec {
	out := make([]rec, n)
	for i := range out {
		out[i] = rec{
			key:    fmt.Sprintf("key-%05d", i),
			value:  fmt.Sprintf("%s-%05d-%s", tag, i, strings.Repeat("sluice ", 8+i%16)),
			header: fmt.Sprint(i),
			offset: -1,
		}
	}
	return out
}

// checkReadBack compares what was read with what was produced: the same records exactly once
// (by key: value and header equal), on the partition and at the offset the producer was told
// when it was told one, and offsets strictly increasing within each partition in read order.
func checkReadBack(produced, got []rec) error {
	want := make(map[string]rec, len(produced))
	for _, r := range produced {
		want[r.key] = r
	}
	seen := make(map[string]bool, len(got))
	last := map[int32]int64{}
	for _, g := range got {
		w, ok := want[g.key]
		if !ok {
			return fmt.Errorf("read a record that was not produced: key %q partition %d offset %d", g.key, g.partition, g.offset)
		}
		if seen[g.key] {
			return fmt.Errorf("read key %q twice (second at partition %d offset %d)", g.key, g.partition, g.offset)
		}
		seen[g.key] = true
		if g.value != w.value || g.header != w.header {
			return fmt.Errorf("key %q: read value %.40q header %q, produced %.40q header %q", g.key, g.value, g.header, w.value, w.header)
		}
		if w.offset >= 0 && (g.partition != w.partition || g.offset != w.offset) {
			return fmt.Errorf("key %q: read at %d/%d, the producer was told %d/%d", g.key, g.partition, g.offset, w.partition, w.offset)
		}
		if prev, ok := last[g.partition]; ok && g.offset <= prev {
			return fmt.Errorf("partition %d: offset %d read after %d", g.partition, g.offset, prev)
		}
		last[g.partition] = g.offset
	}
	if len(seen) != len(want) {
		return fmt.Errorf("read %d of %d produced records; first missing: %s", len(seen), len(want), firstMissing(produced, seen))
	}
	return nil
}

func firstMissing(produced []rec, seen map[string]bool) string {
	for _, r := range produced {
		if !seen[r.key] {
			return r.key
		}
	}
	return "none"
}

// checkProducedOffsets requires the offsets a producer was told to be 0..n-1 in each partition
// of a fresh topic, and every partition in 0..partitions-1 to get records.
func checkProducedOffsets(produced []rec, partitions int32) error {
	byPartition := map[int32][]int64{}
	for _, r := range produced {
		if r.partition < 0 || r.partition >= partitions {
			return fmt.Errorf("key %q produced to partition %d of %d", r.key, r.partition, partitions)
		}
		byPartition[r.partition] = append(byPartition[r.partition], r.offset)
	}
	for p := int32(0); p < partitions; p++ {
		offsets := byPartition[p]
		if len(offsets) == 0 {
			return fmt.Errorf("no record went to partition %d of %d", p, partitions)
		}
		sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
		for i, o := range offsets {
			if o != int64(i) {
				return fmt.Errorf("partition %d: produce offsets %v..., want 0..%d", p, offsets[:min(len(offsets), 8)], len(offsets)-1)
			}
		}
	}
	return nil
}

// partitionsOf returns the sorted partitions records were read from.
func partitionsOf(rs []rec) []int32 {
	set := map[int32]bool{}
	for _, r := range rs {
		set[r.partition] = true
	}
	return sortedPartitions(set)
}

func sortedPartitions(set map[int32]bool) []int32 {
	out := make([]int32, 0, len(set))
	for p, in := range set {
		if in {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// checkShared requires two members' partitions to be non-empty, disjoint and to cover
// 0..partitions-1.
func checkShared(a, b []int32, partitions int32) error {
	if len(a) == 0 || len(b) == 0 {
		return fmt.Errorf("members did not share the partitions: %v and %v", a, b)
	}
	seen := map[int32]bool{}
	for _, p := range append(append([]int32{}, a...), b...) {
		if seen[p] {
			return fmt.Errorf("partition %d owned by both members (%v and %v)", p, a, b)
		}
		seen[p] = true
	}
	if int32(len(seen)) != partitions {
		return fmt.Errorf("members own %v and %v, want all %d partitions", a, b, partitions)
	}
	return nil
}

// traceOn is set by GOCLIENTS_TRACE=1: each client logs its own protocol steps to stderr and
// trace prints timestamped scenario steps (for finding out where time or a failure went).
var traceOn = os.Getenv("GOCLIENTS_TRACE") != ""

func trace(format string, args ...any) {
	if traceOn {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
}

// eventually re-runs check until it passes or ctx ends, for what Kafka makes visible a
// moment after it answered: a broker's metadata and topic configs after CreatePartitions,
// AlterConfigs or DeleteTopics (brokers learn of controller changes asynchronously; Kafka's
// AdminClient documents it).
func eventually(ctx context.Context, what string, check func() error) error {
	var last error
	err := waitFor(ctx, what, func() (bool, string) {
		last = check()
		return last == nil, fmt.Sprint(last)
	})
	if err != nil {
		return fmt.Errorf("%w: %v", err, last)
	}
	return nil
}

// waitFor re-checks cond every pollInterval until it holds or ctx ends; what says what was
// awaited, and the last state cond reported goes into the error.
func waitFor(ctx context.Context, what string, cond func() (bool, string)) error {
	for {
		done, state := cond()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (last: %s)", what, state)
		case <-time.After(pollInterval):
		}
	}
}
