#!/usr/bin/env bash
# Produce throughput of two sluice binaries, alternating A/B per round on the same machine
# (docs/benchmarks.md, "Single node: quorum of one vs the pre-quorum broker").
#
#   bench/scripts/compare_brokers.sh OLD_SLUICE NEW_SLUICE [ROUNDS]
#
# e.g. build an older commit with `git worktree add /tmp/old <rev> && (cd /tmp/old &&
# CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p sluice)`, then pass
# /tmp/old-target/release/sluice and target/release/sluice. loadgen: target/release/loadgen.
set -u
a=${1:?old sluice binary}; b=${2:?new sluice binary}; rounds=${3:-3}
root="$(cd "$(dirname "$0")/../.." && pwd)"; lg="$root/target/release/loadgen"
for r in $(seq "$rounds"); do
  for v in old new; do
    if [ $v = old ]; then bin=$a; else bin=$b; fi
    d=$(mktemp -d); log=$d.log
    SLUICE_LOG_PREALLOCATE=false SLUICE_LOG_SEGMENT_BYTES=268435456 SLUICE_BROKER_TUNING_REPORT=false \
      "$bin" start --data-dir "$d" --kafka-addr 127.0.0.1:19700 --shards 2 > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do grep -q "sluice ready" "$log" && break; sleep 0.05; done
    for cfg in "1k-acks1:--record-bytes 1024 --acks 1" "100b-acks1:--record-bytes 100 --acks 1" "1k-acksall:--record-bytes 1024 --acks all"; do
      name=${cfg%%:*}; read -r -a flags <<< "${cfg#*:}"
      "$lg" --bootstrap 127.0.0.1:19700 --quiet --warmup-secs 1 --duration 5 --partitions 16 \
        --topic "t-$name-$r" "${flags[@]}" --json "$d.json" > /dev/null 2>&1
      python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["produce"]; print("%s round %s %s: %.0f MB/s %.2f M rec/s" % (sys.argv[2], sys.argv[3], sys.argv[4], p["mb_per_sec"], p["records_per_sec"]/1e6))' "$d.json" $v "$r" $name 2>/dev/null || echo "$v $r $name: failed"
    done
    kill $pid; wait $pid 2>/dev/null; rm -rf "$d" "$log" "$d.json"
  done
done
