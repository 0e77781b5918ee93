#!/usr/bin/env bash
# Cross-check loadgen against librdkafka (confluent-kafka Python) and kcat on one broker.
#
#   bench/scripts/xcheck.sh [--bootstrap HOST:PORT] [--records N] [--record-bytes B]
#                           [--partitions P] [--acks A] [--rounds R]
#
# Without --bootstrap it starts target/release/sluice on a free port with a temporary data
# directory (sparse 256 MiB segments) and stops it at the end. Each round produces the same
# number of records of the same size with the same acks / linger / batch size, first with
# loadgen, then with librdkafka, each to a fresh topic, and reads loadgen's topic back with
# kcat to check the count. Prints one line per round and the median ratio
# loadgen/librdkafka of producer records/s (issue 5 asks for >= 0.9).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
bootstrap=""
records=1000000
record_bytes=1024
partitions=16
acks=all
rounds=3
linger_ms=5
batch_bytes=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) bootstrap="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --record-bytes) record_bytes="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --acks) acks="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-$root/.venv/bin/python}"
loadgen="${LOADGEN:-$root/target/release/loadgen}"
[ -x "$loadgen" ] || { echo "build loadgen first: cargo build --release -p loadgen" >&2; exit 1; }
work="$(mktemp -d)"
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$bootstrap" ]; then
  sluice="${SLUICE:-$root/target/release/sluice}"
  [ -x "$sluice" ] || { echo "build the broker first: cargo build --release -p broker" >&2; exit 1; }
  port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  bootstrap="127.0.0.1:$port"
  SLUICE_LOG_PREALLOCATE=false SLUICE_LOG_SEGMENT_BYTES=268435456 \
    "$sluice" start --kafka-addr "$bootstrap" --data-dir "$work/data" >"$work/sluice.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 100); do grep -q ready "$work/sluice.log" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/sluice.log" || { echo "sluice did not start:"; cat "$work/sluice.log"; exit 1; }
fi

echo "xcheck: $bootstrap, $records records x $record_bytes B, $partitions partitions, acks=$acks, linger ${linger_ms} ms, batch $batch_bytes B, 1 producer, no compression"
ratios=()
for round in $(seq 1 "$rounds"); do
  tag="xcheck-$$-$round"
  # Topics created up front by loadgen's CreateTopics (partitions) for both sides.
  "$loadgen" --bootstrap "$bootstrap" --topic "$tag-rdkafka" --partitions "$partitions" \
    --records 1 --record-bytes 16 --quiet >/dev/null
  "$loadgen" --bootstrap "$bootstrap" --topic "$tag-loadgen" --partitions "$partitions" \
    --records "$records" --record-bytes "$record_bytes" --acks "$acks" --linger-ms "$linger_ms" \
    --batch-bytes "$batch_bytes" --producers 1 --quiet --json "$work/loadgen.json" >/dev/null
  "$python" "$root/bench/scripts/rdkafka_produce.py" --bootstrap "$bootstrap" --topic "$tag-rdkafka" \
    --records "$records" --record-bytes "$record_bytes" --acks "$acks" --linger-ms "$linger_ms" \
    --batch-bytes "$batch_bytes" >"$work/rdkafka.json"
  read_back="$(timeout 300 kcat -b "$bootstrap" -C -t "$tag-loadgen" -o beginning -e -q -f 'x\n' | wc -l)"
  "$python" - "$work/loadgen.json" "$work/rdkafka.json" "$read_back" "$round" <<'PY' | tee -a "$work/ratios"
import json, sys
lg = json.load(open(sys.argv[1])); rk = json.load(open(sys.argv[2]))
read_back = int(sys.argv[3]); rnd = sys.argv[4]
lg_rate = lg["produce"]["records_per_sec"]; rk_rate = rk["records_per_sec"]
ok = lg["records_acked"] == lg["records_sent"] == read_back
print(f"round {rnd}: loadgen {lg_rate:,.0f} rec/s ({lg['produce']['mb_per_sec']:.1f} MB/s, p99 {lg['produce']['latency_us']['p99']} us)"
      f" | librdkafka {rk['librdkafka']} {rk_rate:,.0f} rec/s ({rk['mb_per_sec']:.1f} MB/s)"
      f" | ratio {lg_rate / rk_rate:.3f} | loadgen acked {lg['records_acked']} kcat read {read_back} {'OK' if ok else 'MISMATCH'}")
PY
done
"$python" - "$work/ratios" <<'PY'
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
ratios = [float(re.search(r"ratio ([0-9.]+)", l).group(1)) for l in lines]
bad = [l for l in lines if "MISMATCH" in l]
print(f"median ratio loadgen/librdkafka: {statistics.median(ratios):.3f} over {len(ratios)} rounds; counts {'all exact' if not bad else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY
