#!/usr/bin/env bash
# Issue 3's broker numbers in one run (docs/benchmarks.md, "broker: produce and fetch"): the
# host's limits first (host_limits.sh: iperf3 loopback, fio fdatasync patterns, the ideal
# produce pipe), then ROUNDS x produce of about PRODUCE_MB each with loadgen (16 partitions:
# 1 KiB acks=1, 100 B acks=1, 1 KiB acks=all with 1 and with 4 producers; each run against a
# fresh broker and data dir), then fetch of FETCH_RECORDS x 1 KiB from the start with
# raw_fetch.py, zero-copy on and off alternating on the same data. Medians are up to the reader.
#
#   cargo build --release -p sluice -p loadgen
#   bench/scripts/broker_perf.sh [ROUNDS] [PRODUCE_MB] [FETCH_RECORDS]
#
# Broker: target/release/sluice, 2 shards on a 2-core machine, fresh data dir under /tmp,
# 256 MiB segments, acks=all answered after fdatasync (the default). Segments are sparse unless
# the caller sets SLUICE_LOG_PREALLOCATE=true (log.preallocate). Shard threads are not pinned
# (broker.pin_threads=false, as docs/operations.md advises when clients share the broker's
# cores, as loadgen does here); SLUICE_BROKER_PIN_THREADS=true measures them pinned. Set
# SKIP_HOST_LIMITS=1 to skip the host measurements.
#
# Runs have a fixed size, and each starts right after PREFAULT_MB (default 3000) of memory was
# touched and freed (a file in /dev/shm): this VM hands freed guest memory back to its host
# (virtio-balloon free page reporting), and the next touch of such a page faults in the host,
# which makes page-cache writes past the recently freed memory 2-3x slower (the ideal pipe of
# host_limits.sh drops from ~2 GB/s to 0.6-1.3 GB/s at 6 GB). Bare metal has no such cost;
# PREFAULT_MB=0 turns it off.
set -euo pipefail
rounds=${1:-3}; produce_mb=${2:-2000}; records=${3:-1000000}; prefault_mb=${PREFAULT_MB:-3000}
root="$(cd "$(dirname "$0")/../.." && pwd)"; bin="$root/target/release"
data="$(mktemp -d)"; log="$data.log"; port=19092; broker=""
cleanup() { if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi; rm -rf "$data" "$log" "$data.json"; }
trap cleanup EXIT
fresh() { rm -rf "$data"; mkdir -p "$data"; }
prefault() {
  if [ "$prefault_mb" -gt 0 ]; then
    dd if=/dev/zero of=/dev/shm/sluice-prefault bs=1M count="$prefault_mb" status=none
    rm -f /dev/shm/sluice-prefault
  fi
}
start() { # $1: zero-copy fetch on/off
  SLUICE_BROKER_PIN_THREADS=${SLUICE_BROKER_PIN_THREADS:-false} \
  SLUICE_LOG_PREALLOCATE=${SLUICE_LOG_PREALLOCATE:-false} SLUICE_LOG_SEGMENT_BYTES=268435456 SLUICE_KAFKA_ZERO_COPY_FETCH=$1 \
    SLUICE_BROKER_TUNING_REPORT=false "$bin/sluice" start --data-dir "$data" --kafka-addr 127.0.0.1:$port > "$log" 2>&1 &
  broker=$!
  for _ in $(seq 200); do grep -q "sluice ready" "$log" && return; sleep 0.05; done
  echo "broker did not start" >&2; cat "$log" >&2; exit 1
}
stop() { kill "$broker"; wait "$broker" || true; broker=""; }
mb() { python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["produce"]; print("%.0f MB/s %.2f M rec/s" % (p["mb_per_sec"], p["records_per_sec"]/1e6))' "$1"; }

if [ "${SKIP_HOST_LIMITS:-0}" != 1 ]; then prefault; "$root/bench/scripts/host_limits.sh" "$data"; fi
k1=$((produce_mb * 1000000 / 1024)); b100=$((produce_mb * 1000000 / 100))
for r in $(seq "$rounds"); do
  for cfg in "1k-acks1:--record-bytes 1024 --acks 1 --records $k1" \
    "100b-acks1:--record-bytes 100 --acks 1 --records $b100" \
    "1k-acksall:--record-bytes 1024 --acks all --records $k1" \
    "1k-acksall-4p:--record-bytes 1024 --acks all --producers 4 --records $k1"; do
    name=${cfg%%:*}; read -r -a flags <<< "${cfg#*:}"
    fresh; start true; prefault
    "$bin/loadgen" --bootstrap 127.0.0.1:$port --quiet --partitions 16 \
      --topic "t-$name" "${flags[@]}" --json "$data.json" > /dev/null 2>&1
    stop
    echo "produce $name round $r: $(mb "$data.json")"
  done
done
fresh; start true
"$bin/loadgen" --bootstrap 127.0.0.1:$port --quiet --partitions 16 --topic fetch --record-bytes 1024 --acks 1 \
  --records "$records" > /dev/null 2>&1
stop
for r in $(seq "$rounds"); do for zc in true false; do
  start $zc
  echo "fetch zero_copy_fetch=$zc round $r: $(python3 "$root/bench/scripts/raw_fetch.py" 127.0.0.1:$port fetch 16)"
  stop
done; done
rm -f "$data.json"
