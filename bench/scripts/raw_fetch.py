#!/usr/bin/env python3
"""Raw Fetch v4 reader for broker benchmarks: reads every partition of TOPIC from offset 0
to the log end taken at start, one request at a time like a consumer (fetch.max.bytes 64 MiB,
max.partition.fetch.bytes 1 MiB by default), counting response bytes; it walks only batch
headers to advance offsets, so the client costs little next to the broker. Prints bytes/s.

  raw_fetch.py HOST:PORT TOPIC PARTITIONS [partition_max_bytes]
"""
import socket, struct, sys, time
host, port = sys.argv[1].split(':'); topic = sys.argv[2].encode(); P = int(sys.argv[3])
pmax = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20
s = socket.create_connection((host, int(port))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(64 << 20); mv = memoryview(buf)
def recv_exact(n):
    got = 0
    while got < n:
        k = s.recv_into(mv[got:n])
        if k == 0: raise EOFError
        got += k
    return mv[:n]
def request(corr, offsets):
    body = struct.pack('>iiiib', -1, 500, 1, 64 << 20, 0)
    body += struct.pack('>i', 1) + struct.pack('>h', len(topic)) + topic + struct.pack('>i', len(offsets))
    for p, o in offsets.items(): body += struct.pack('>iqi', p, o, pmax)
    hdr = struct.pack('>hhih', 1, 4, corr, 3) + b'raw'
    msg = hdr + body
    s.sendall(struct.pack('>i', len(msg)) + msg)
    n = struct.unpack('>i', bytes(recv_exact(4)))[0]
    return recv_exact(n), n
# end offsets via ListOffsets v1
def list_end():
    body = struct.pack('>i', -1) + struct.pack('>i', 1) + struct.pack('>h', len(topic)) + topic + struct.pack('>i', P)
    for p in range(P): body += struct.pack('>iq', p, -1)
    hdr = struct.pack('>hhih', 2, 1, 0, 3) + b'raw'; msg = hdr + body
    s.sendall(struct.pack('>i', len(msg)) + msg)
    n = struct.unpack('>i', bytes(recv_exact(4)))[0]; r = bytes(recv_exact(n))
    pos = 4; ends = {}
    nt = struct.unpack_from('>i', r, pos)[0]; pos += 4
    tl = struct.unpack_from('>h', r, pos)[0]; pos += 2 + tl
    np_ = struct.unpack_from('>i', r, pos)[0]; pos += 4
    for _ in range(np_):
        p, err, ts, off = struct.unpack_from('>ihqq', r, pos); pos += 22; ends[p] = off
    return ends
ends = list_end()
offsets = {p: 0 for p in range(P) if ends[p] > 0}
total = 0; corr = 1; t0 = time.time()
while offsets:
    r, n = request(corr, offsets); corr += 1; total += n
    pos = 4 + 4  # corr, throttle
    nt = struct.unpack_from('>i', r, pos)[0]; pos += 4
    for _ in range(nt):
        tl = struct.unpack_from('>h', r, pos)[0]; pos += 2 + tl
        np_ = struct.unpack_from('>i', r, pos)[0]; pos += 4
        for _ in range(np_):
            p, err, hw, lso = struct.unpack_from('>ihqq', r, pos); pos += 22
            na = struct.unpack_from('>i', r, pos)[0]; pos += 4 + max(na, 0) * 16
            rl = struct.unpack_from('>i', r, pos)[0]; pos += 4
            if err: raise SystemExit(f'error {err} on {p}')
            end = pos + max(rl, 0); q = pos; nxt = None
            while q + 61 <= end:
                base, blen = struct.unpack_from('>qi', r, q)
                if q + 12 + blen > end: break
                nxt = base + struct.unpack_from('>i', r, q + 23)[0] + 1
                q += 12 + blen
            pos = end
            if nxt is not None and p in offsets:
                offsets[p] = nxt
                if nxt >= ends[p]: del offsets[p]
dt = time.time() - t0
print(f'rawfetch: {total} bytes in {dt:.2f} s = {total/dt/1e6:.0f} MB/s ({corr-1} requests)')
