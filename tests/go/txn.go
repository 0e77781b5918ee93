// What the transactional scenarios (issue 15) share, whichever client runs them: the seeded
// plan of commits and aborts, the log of what a transactional producer was told, and the
// read-back check under both isolation levels.
//
// Invariants every transactional scenario checks, from Kafka's semantics (observed on Apache
// Kafka 4.3.1; the partition side is ProducerStateManager / UnifiedLog in apache/kafka):
//   - a read_committed reader of a partition returns exactly the records of the committed
//     transactions, in offset order, each once, and nothing from an aborted one;
//   - a read_uncommitted reader returns every record produced, aborted ones included, in
//     offset order, at the offsets the producer was told;
//   - each ended transaction leaves one control record (its marker) in each partition it
//     wrote, which takes one offset and never comes out as a record: records + markers = the
//     high watermark;
//   - the transform of an input record is committed exactly once, in input order per
//     partition (the consume-transform-produce scenarios).
//
// Each scenario ends with a "sentinel" transaction that commits one record to every output
// partition, so a reader knows it has read everything once it saw the sentinel (no reader
// waits for "no more records" with a timeout).
package main

import (
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// txnSeedEnv replays a run's commit/abort choices (the seed is in the scenario's line).
const txnSeedEnv = "GOCLIENTS_TXN_SEED"

// Seeded transaction choices: about abortRatio of the transactions abort; the first always
// aborts (so an abort before any commit is covered) and no more than maxAbortsInARow abort in
// a row, so every run has both and ends.
const (
	abortRatio      = 0.35
	maxAbortsInARow = 2
)

// sentinelKey marks the last record of every output partition (see the file comment).
const sentinelKey = "sentinel"

// injectFault is set by `--inject-fault=duplicate|missing`: the transactional scenarios corrupt
// what their read_committed reader returned (the first record duplicated, or the last one
// before the sentinel dropped) before the checks, to show the checks catch it (the run must
// then FAIL naming the read_committed partition).
var injectFault = "none"

// txnPlan decides, from a seed, whether each transaction commits.
type txnPlan struct {
	seed         int64
	rng          *rand.Rand
	abortsInARow int
	decided      int
}

// newTxnPlan seeds from GOCLIENTS_TXN_SEED when set, else from the clock.
func newTxnPlan() (*txnPlan, error) {
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv(txnSeedEnv); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", txnSeedEnv, s, err)
		}
		seed = v
	}
	return &txnPlan{seed: seed, rng: rand.New(rand.NewSource(seed))}, nil
}

// commit says whether the next transaction should commit.
func (p *txnPlan) commit() bool {
	p.decided++
	abort := p.decided == 1 || (p.abortsInARow < maxAbortsInARow && p.rng.Float64() < abortRatio)
	if abort {
		p.abortsInARow++
		return false
	}
	p.abortsInARow = 0
	return true
}

// txnRecord is one record a transactional producer was acknowledged, with the transaction
// that wrote it.
type txnRecord struct {
	rec
	txn int
}

// txnLog is what a transactional producer did: every acknowledged record in produce order,
// how each transaction ended and which partitions it wrote.
type txnLog struct {
	topic      string
	partitions int32
	produced   []txnRecord
	ended      map[int]bool // transaction -> committed
	touched    map[int]map[int32]bool
	next       int
	// noFault exempts this log's check from --inject-fault (a scenario that checks several
	// logs injects into the one that matters).
	noFault bool
}

func newTxnLog(topic string, partitions int32) *txnLog {
	return &txnLog{topic: topic, partitions: partitions, ended: map[int]bool{}, touched: map[int]map[int32]bool{}}
}

// begin numbers a new transaction.
func (l *txnLog) begin() int {
	l.next++
	l.touched[l.next] = map[int32]bool{}
	return l.next
}

// add records what transaction txn was acknowledged (partition and offset filled in).
func (l *txnLog) add(txn int, rs ...rec) {
	for _, r := range rs {
		l.produced = append(l.produced, txnRecord{rec: r, txn: txn})
		l.touched[txn][r.partition] = true
	}
}

// end records how transaction txn ended.
func (l *txnLog) end(txn int, committed bool) {
	l.ended[txn] = committed
}

// counts returns how many transactions committed and aborted.
func (l *txnLog) counts() (commits, aborts int) {
	for _, c := range l.ended {
		if c {
			commits++
		} else {
			aborts++
		}
	}
	return commits, aborts
}

// expected returns, per partition and in offset order, what a read_committed reader
// (committedOnly) or a read_uncommitted one must read.
func (l *txnLog) expected(committedOnly bool) map[int32][]rec {
	out := map[int32][]rec{}
	for _, r := range l.produced {
		if committed, ended := l.ended[r.txn]; !ended || (committedOnly && !committed) {
			continue
		}
		out[r.partition] = append(out[r.partition], r.rec)
	}
	for _, rs := range out {
		sort.Slice(rs, func(i, j int) bool { return rs[i].offset < rs[j].offset })
	}
	return out
}

// markers returns how many control records partition p holds: one per ended transaction
// that wrote to it.
func (l *txnLog) markers(p int32) int64 {
	n := int64(0)
	for txn := range l.ended {
		if l.touched[txn][p] {
			n++
		}
	}
	return n
}

// byPartition splits what a reader returned by partition, keeping its order.
func byPartition(rs []rec) map[int32][]rec {
	out := map[int32][]rec{}
	for _, r := range rs {
		out[r.partition] = append(out[r.partition], r)
	}
	return out
}

// corrupt applies --inject-fault to what a read_committed reader returned.
func corrupt(got map[int32][]rec) {
	rs := got[0]
	switch {
	case len(rs) < 2:
	case injectFault == "duplicate":
		got[0] = append([]rec{rs[0]}, rs...)
	case injectFault == "missing":
		got[0] = append(append([]rec{}, rs[:len(rs)-2]...), rs[len(rs)-1])
	}
}

// checkTxnReadBack compares what each reader returned with the log: read_committed exactly the
// committed records, read_uncommitted every record, both at the acknowledged offsets and in
// offset order; and each partition's high watermark equals its records plus one marker per
// transaction that wrote to it. Errors name the reader and the partition.
func checkTxnReadBack(l *txnLog, readCommitted, readUncommitted []rec, highWatermarks map[int32]int64) error {
	committed := byPartition(readCommitted)
	if !l.noFault {
		corrupt(committed)
	}
	for _, level := range []struct {
		name string
		got  map[int32][]rec
		want map[int32][]rec
	}{
		{"read_committed", committed, l.expected(true)},
		{"read_uncommitted", byPartition(readUncommitted), l.expected(false)},
	} {
		for p := int32(0); p < l.partitions; p++ {
			if err := samePartition(level.got[p], level.want[p]); err != nil {
				return fmt.Errorf("%s p%d: %w", level.name, p, err)
			}
		}
	}
	all := l.expected(false)
	for p := int32(0); p < l.partitions; p++ {
		want := int64(len(all[p])) + l.markers(p)
		if hw, ok := highWatermarks[p]; !ok || hw != want {
			return fmt.Errorf("p%d: high watermark %d (listed %v), want %d records + %d markers = %d", p, hw, ok, len(all[p]), l.markers(p), want)
		}
	}
	return nil
}

// samePartition requires got to be want, record by record (key, value, offset).
func samePartition(got, want []rec) error {
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			return fmt.Errorf("read %d records, want %d; first missing: %s at %d", len(got), len(want), want[i].value, want[i].offset)
		case i >= len(want):
			return fmt.Errorf("read %d records, want %d; first extra: %s at %d", len(got), len(want), got[i].value, got[i].offset)
		case got[i].key != want[i].key || got[i].value != want[i].value || got[i].offset != want[i].offset:
			return fmt.Errorf("record %d: read %q=%q at %d, want %q=%q at %d", i, got[i].key, got[i].value, got[i].offset, want[i].key, want[i].value, want[i].offset)
		}
	}
	return nil
}

// The consume-transform-produce scenarios: input record i (partition i % partitions) has key
// "key-<i>" and value "in-<i>"; its transform, written by transaction t to the output
// partition of the same number, has the same key and value "out-<i> txn-<t>".

func inputValue(i int) string { return fmt.Sprintf("in-%05d", i) }

func transform(inValue string, txn int) string {
	return fmt.Sprintf("out-%s txn-%d", strings.TrimPrefix(inValue, "in-"), txn)
}

// checkTransformedOnce requires the read_committed output of each partition to be the
// transforms of that input partition's records, each exactly once, in input order, each
// written by a committed transaction: exactly-once from the application's point of view,
// independent of what the producer was told.
func checkTransformedOnce(l *txnLog, readCommitted []rec, inputPerPartition int) error {
	got := byPartition(readCommitted)
	corrupt(got)
	for p := int32(0); p < l.partitions; p++ {
		next := 0
		for _, r := range got[p] {
			if r.key == sentinelKey {
				continue
			}
			var idx, txn int
			if _, err := fmt.Sscanf(r.value, "out-%d txn-%d", &idx, &txn); err != nil {
				return fmt.Errorf("read_committed p%d: %q at %d is not a transform: %v", p, r.value, r.offset, err)
			}
			want := int(p) + next*int(l.partitions)
			if idx != want {
				return fmt.Errorf("read_committed p%d: transform of input %d at %d, want input %d (each once, in order)", p, idx, r.offset, want)
			}
			if committed, ended := l.ended[txn]; !ended || !committed {
				return fmt.Errorf("read_committed p%d: %q at %d is from transaction %d, which did not commit", p, r.value, r.offset, txn)
			}
			next++
		}
		if next != inputPerPartition {
			return fmt.Errorf("read_committed p%d: %d transforms, want %d", p, next, inputPerPartition)
		}
	}
	return nil
}

// sawSentinels reports whether the sentinel of every partition below partitions was seen.
func sawSentinels(seen map[int32]bool, partitions int32) bool {
	for p := int32(0); p < partitions; p++ {
		if !seen[p] {
			return false
		}
	}
	return true
}
