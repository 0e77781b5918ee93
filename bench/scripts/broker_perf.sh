#!/usr/bin/env bash
# Issue 3's broker numbers in one run (docs/benchmarks.md, "broker: produce and fetch"):
# loopback bandwidth (iperf3), then ROUNDS x produce with loadgen (16 partitions: 1 KiB acks=1,
# 100 B acks=1, 1 KiB acks=all), then fetch of RECORDS x 1 KiB from the start with
# raw_fetch.py, zero-copy on and off alternating on the same data. Medians are up to the reader.
#
#   cargo build --release -p broker -p loadgen
#   bench/scripts/broker_perf.sh [ROUNDS] [SECONDS] [RECORDS]
#
# Broker: target/release/sluice, 2 shards on a 2-core machine, fresh data dir under /tmp,
# sparse 256 MiB segments (SLUICE_LOG_PREALLOCATE=false), acks=all answered after fdatasync.
set -euo pipefail
rounds=${1:-3}; secs=${2:-5}; records=${3:-1000000}
root="$(cd "$(dirname "$0")/../.." && pwd)"; bin="$root/target/release"
data="$(mktemp -d)"; log="$data.log"; port=19092; broker=""
cleanup() { if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi; rm -rf "$data" "$log" "$data.json"; }
trap cleanup EXIT
start() { # $1: zero-copy fetch on/off
  SLUICE_LOG_PREALLOCATE=false SLUICE_LOG_SEGMENT_BYTES=268435456 SLUICE_KAFKA_ZERO_COPY_FETCH=$1 \
    SLUICE_BROKER_TUNING_REPORT=false "$bin/sluice" start --data-dir "$data" --kafka-addr 127.0.0.1:$port > "$log" 2>&1 &
  broker=$!
  for _ in $(seq 200); do grep -q "sluice ready" "$log" && return; sleep 0.05; done
  echo "broker did not start" >&2; cat "$log" >&2; exit 1
}
stop() { kill "$broker"; wait "$broker" || true; broker=""; }
mb() { python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["produce"]; print("%.0f MB/s %.2f M rec/s" % (p["mb_per_sec"], p["records_per_sec"]/1e6))' "$1"; }

iperf3 -s -p 15201 -B 127.0.0.1 >/dev/null 2>&1 & iperf=$!
sleep 0.5
for r in $(seq "$rounds"); do
  echo "iperf3 loopback round $r: $(iperf3 -c 127.0.0.1 -p 15201 -t 3 -J | python3 -c 'import json,sys; print("%.1f Gbit/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')"
done
kill $iperf 2>/dev/null || true; wait $iperf 2>/dev/null || true

start true
for r in $(seq "$rounds"); do
  for cfg in "1k-acks1:--record-bytes 1024 --acks 1" "100b-acks1:--record-bytes 100 --acks 1" "1k-acksall:--record-bytes 1024 --acks all"; do
    name=${cfg%%:*}; read -r -a flags <<< "${cfg#*:}"
    "$bin/loadgen" --bootstrap 127.0.0.1:$port --quiet --warmup-secs 1 --duration "$secs" --partitions 16 \
      --topic "t-$name-$r" "${flags[@]}" --json "$data.json" > /dev/null 2>&1
    echo "produce $name round $r: $(mb "$data.json")"
  done
done
"$bin/loadgen" --bootstrap 127.0.0.1:$port --quiet --partitions 16 --topic fetch --record-bytes 1024 --acks 1 \
  --records "$records" > /dev/null 2>&1
stop
for r in $(seq "$rounds"); do for zc in true false; do
  start $zc
  echo "fetch zero_copy_fetch=$zc round $r: $(python3 "$root/bench/scripts/raw_fetch.py" 127.0.0.1:$port fetch 16)"
  stop
done; done
rm -f "$data.json"
