#!/usr/bin/env bash
# Produce latency on a plain topic while the log cleaner is busy on another topic of the same
# broker, against the same run with the cleaner switched off (issue 16). Rounds alternate
# cleaner on / off so drift on a shared machine hits both alike.
#
#   cargo build --release -p sluice -p loadgen
#   bench/scripts/cleaner_latency.sh [ROUNDS]     # SLUICE=..., LOADGEN=... to override
#
# Per round and mode: a fresh broker (2 shards, `[cleaner] backoff_ms = 1000`), a churn load
# (loadgen, acks=all, 512 B records over 20,000 keys as fast as it goes, 45 s) on `churn`
# (compact, 1 MiB segments, min.cleanable.dirty.ratio 0.1) and, from 5 s in, the measured
# load (loadgen, acks=all, 1 KiB records at 5,000/s, 30 s) on `hot` (delete policy).
# Prints the measured load's p50 / p99 / p999 and the cleaner's bytes read on the broker.
set -euo pipefail
ROUNDS=${1:-2}
SLUICE=${SLUICE:-target/release/sluice}
LOADGEN=${LOADGEN:-target/release/loadgen}
OUT=$(mktemp -d)
echo "results in $OUT"
port=$((20000 + RANDOM % 20000))
for round in $(seq 1 "$ROUNDS"); do
  for mode in on off; do
    dir="$OUT/data-$mode-$round"
    mkdir -p "$dir"
    enabled=true; [ "$mode" = off ] && enabled=false
    printf '[cleaner]\nenabled = %s\nbackoff_ms = 1000\n[http]\naddr = "127.0.0.1:%s"\n' "$enabled" $((port + 1)) > "$OUT/cfg-$mode.toml"
    "$SLUICE" start --config "$OUT/cfg-$mode.toml" --data-dir "$dir" --kafka-addr 127.0.0.1:$port --shards 2 > "$OUT/broker-$mode-$round.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do grep -q ready "$OUT/broker-$mode-$round.log" && break; sleep 0.1; done
    "$LOADGEN" --bootstrap 127.0.0.1:$port --topic churn --partitions 4 --record-bytes 512 \
      --keys uniform:20000 --acks all --duration 45 --quiet \
      --topic-config cleanup.policy=compact --topic-config segment.bytes=1048576 \
      --topic-config min.cleanable.dirty.ratio=0.1 --json "$OUT/churn-$mode-$round.json" > /dev/null 2>&1 &
    churn=$!
    sleep 5
    "$LOADGEN" --bootstrap 127.0.0.1:$port --topic hot --partitions 4 --record-bytes 1024 \
      --rate 5000 --acks all --duration 30 --quiet --json "$OUT/hot-$mode-$round.json" > /dev/null 2>&1
    cleaned=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk '/^sluice_cleaner_bytes_read_total/ {s += $2} END {print s + 0}')
    wait $churn || true
    kill $broker; wait $broker || true
    python3 - "$OUT/hot-$mode-$round.json" "$mode" "$round" "$cleaned" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["produce"]["latency_us"]
print(f"round {sys.argv[3]} cleaner {sys.argv[2]:3}: p50 {p['p50']} us  p99 {p['p99']} us  "
      f"p999 {p['p999']} us  max {p['max']} us  ({r['produce']['records_per_sec']:.0f} rec/s; "
      f"cleaner read {int(float(sys.argv[4])) / 1e6:.1f} MB)")
PY
  done
done
