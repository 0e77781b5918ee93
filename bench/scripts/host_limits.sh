#!/usr/bin/env bash
# The host's raw limits that broker numbers should be read against:
#   loopback TCP bandwidth (iperf3, one stream and four), sequential write bandwidth with
#   fdatasync at the end, fdatasync latency of small appends, 1 MiB writes each followed by
#   fdatasync in 1 and 4 files at once (fio: the acks=all pattern), and produce_pipe.py (an
#   ideal client and broker: loopback TCP into the page cache, with and without an fdatasync
#   loop), in DIR (default: a temporary directory on the filesystem holding /tmp).
#
#   bench/scripts/host_limits.sh [DIR]
#
# Prints a markdown table. Needs iperf3 and fio (Debian packages of the same names).
set -euo pipefail
made_dir=""
if [ $# -ge 1 ]; then dir="$1"; mkdir -p "$dir"; else dir="$(mktemp -d)"; made_dir="$dir"; fi
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$dir/host_limits.fio" ${made_dir:+"$made_dir"}
}
trap cleanup EXIT
for tool in iperf3 fio; do
  command -v "$tool" >/dev/null || { echo "$tool not installed (apt-get install $tool)" >&2; exit 1; }
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iperf3 -s -p "$port" -B 127.0.0.1 >/dev/null 2>&1 &
server_pid=$!
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.time() + 10
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("iperf3 server did not start")
PY
gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))'; }
loop1=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -J | gbps)
loop4=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -P 4 -J | gbps)

fio --name=seqwrite --filename="$dir/host_limits.fio" --rw=write --bs=1m --size=1g \
  --ioengine=psync --end_fsync=1 --output-format=json >"$work/seq.json"
fio --name=fdatasync --filename="$dir/host_limits.fio" --rw=write --bs=4k --size=64m \
  --ioengine=psync --fdatasync=1 --runtime=10 --time_based=0 --output-format=json >"$work/sync.json"
for jobs in 1 4; do
  fio --name=syncmib --directory="$dir" --filename_format='host_limits.$jobnum.fio' --rw=write \
    --bs=1m --size=512m --numjobs=$jobs --group_reporting --ioengine=psync --fdatasync=1 \
    --output-format=json >"$work/syncmib$jobs.json"
  rm -f "$dir"/host_limits.*.fio
done
pipe=$(python3 "$(dirname "$0")/produce_pipe.py" "$dir" 2)
pipe_sync=$(python3 "$(dirname "$0")/produce_pipe.py" "$dir" 2 --sync)
python3 - "$work/seq.json" "$work/sync.json" "$loop1" "$loop4" "$dir" "$work" "$pipe" "$pipe_sync" <<'PY'
import json, sys
seq = json.load(open(sys.argv[1]))["jobs"][0]["write"]
sync_job = json.load(open(sys.argv[2]))["jobs"][0]
sync = sync_job["sync"]["lat_ns"]
pct = sync.get("percentile", {})
def p(q):
    for k, v in pct.items():
        if abs(float(k) - q) < 1e-6:
            return v / 1000
    return float("nan")
print(f"| limit | value |")
print(f"|---|---:|")
print(f"| loopback TCP, 1 stream (iperf3 -t 5) | {sys.argv[3]} Gbit/s |")
print(f"| loopback TCP, 4 streams (iperf3 -t 5 -P 4) | {sys.argv[4]} Gbit/s |")
print(f"| sequential write, 1 MiB blocks, 1 GiB + fsync (fio, {sys.argv[5]}) | {seq['bw_bytes']/1e6:.0f} MB/s |")
print(f"| fdatasync after each 4 KiB append (fio) | {sync_job['write']['iops']:.0f} appends/s, fdatasync p50 {p(50.0):.0f} us, p99 {p(99.0):.0f} us |")
for jobs in (1, 4):
    w = json.load(open(f"{sys.argv[6]}/syncmib{jobs}.json"))["jobs"][0]["write"]
    print(f"| 1 MiB writes, fdatasync after each, {jobs} file(s) at once (fio) | {w['bw_bytes']/1e6:.0f} MB/s |")
print(f"| loopback TCP into the page cache, ideal client and broker (produce_pipe.py, 2 GB) | {sys.argv[7]} MB/s |")
print(f"| the same with an fdatasync loop (produce_pipe.py --sync) | {sys.argv[8]} MB/s |")
PY
