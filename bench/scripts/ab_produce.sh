#!/usr/bin/env bash
# Before/after produce comparison of two builds in one run (issue 13; docs/benchmarks.md,
# "Issue 13: produce path before/after"): interleaved rounds (before, after, before, after,
# ...), each a fresh broker and data dir, 16 partitions, loadgen with 1 KiB records at acks=1
# and at acks=all. Reports produce MB/s and the broker's CPU seconds per GB produced
# (utime + stime of the broker pid from /proc/PID/stat, fields 14 and 15, read before and
# after the loadgen run), per run and as medians with the after/before ratio.
#
#   cargo build --release -p sluice -p loadgen
#   bench/scripts/ab_produce.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [PRODUCE_MB]
#
# Each BIN_DIR holds `sluice` and `loadgen`. The client is the same for both sides
# (LOADGEN, default AFTER_BIN_DIR/loadgen), so only the broker differs. Broker settings as
# broker_perf.sh: 2 shards, sparse 256 MiB segments, threads not pinned, acks=all after
# fdatasync; each run starts right after PREFAULT_MB (default 1000) of memory was touched and
# freed (see broker_perf.sh for why). Defaults: 5 rounds of 600 MB per configuration.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [PRODUCE_MB]" >&2; exit 2; }
before_dir=$1; after_dir=$2; rounds=${3:-5}; produce_mb=${4:-600}
prefault_mb=${PREFAULT_MB:-1000}; loadgen=${LOADGEN:-$after_dir/loadgen}
for b in "$before_dir/sluice" "$after_dir/sluice" "$loadgen"; do
  [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }
done
data="$(mktemp -d)"; log="$data.log"; results="$data.results"; port=19192; broker=""
cleanup() {
  if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
  rm -rf "$data" "$log" "$data.json" "$results"
}
trap cleanup EXIT
prefault() {
  if [ "$prefault_mb" -gt 0 ]; then
    dd if=/dev/zero of=/dev/shm/sluice-ab-prefault bs=1M count="$prefault_mb" status=none
    rm -f /dev/shm/sluice-ab-prefault
  fi
}
start() { # $1: bin dir
  rm -rf "$data"; mkdir -p "$data"
  SLUICE_BROKER_PIN_THREADS=false SLUICE_LOG_PREALLOCATE=false SLUICE_LOG_SEGMENT_BYTES=268435456 \
    SLUICE_BROKER_TUNING_REPORT=false "$1/sluice" start --shards 2 --data-dir "$data" \
    --kafka-addr 127.0.0.1:$port > "$log" 2>&1 &
  broker=$!
  for _ in $(seq 200); do grep -q "ready" "$log" && return; sleep 0.05; done
  echo "broker did not start" >&2; cat "$log" >&2; exit 1
}
stop() { kill "$broker"; wait "$broker" || true; broker=""; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$broker/stat"; }

records=$((produce_mb * 1000000 / 1024)); hz=$(getconf CLK_TCK)
echo "# $(date -u +%FT%TZ) rounds=$rounds produce_mb=$produce_mb load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for acks in 1 all; do
    for side in before after; do
      dir=$before_dir; [ "$side" = after ] && dir=$after_dir
      start "$dir"; prefault
      t0=$(cpu_ticks)
      "$loadgen" --bootstrap 127.0.0.1:$port --quiet --partitions 16 --topic "t-ab" \
        --record-bytes 1024 --acks "$acks" --records "$records" --json "$data.json" > /dev/null 2>&1
      t1=$(cpu_ticks)
      stop
      line=$(python3 - "$data.json" "$side" "$acks" "$r" "$t0" "$t1" "$hz" <<'PY'
import json, sys
path, side, acks, rnd, t0, t1, hz = sys.argv[1:]
d = json.load(open(path))
p = d["produce"]
gb = d["records_acked"] * 1024 / 1e9
cpu = (int(t1) - int(t0)) / int(hz)
print(f"1k-acks{acks} {side} {rnd} {p['mb_per_sec']:.0f} {cpu / gb:.3f} {d['errors']}")
PY
)
      echo "$line" >> "$results"
      read -r cfg s rr mbps cpugb errors <<< "$line"
      echo "$cfg round $rr $s: $mbps MB/s, broker $cpugb CPU s/GB, errors $errors"
    done
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("\n| config | before MB/s (median) | after MB/s (median) | after/before | before CPU s/GB | after CPU s/GB | after/before |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for cfg in sorted({r[0] for r in rows}):
    m = {}
    for side in ("before", "after"):
        sel = [r for r in rows if r[0] == cfg and r[1] == side]
        m[side] = (statistics.median(float(r[3]) for r in sel),
                   statistics.median(float(r[4]) for r in sel))
    b, a = m["before"], m["after"]
    print(f"| {cfg} | {b[0]:.0f} | {a[0]:.0f} | {a[0] / b[0]:.2f} | {b[1]:.3f} | {a[1]:.3f} | {a[1] / b[1]:.2f} |")
PY
