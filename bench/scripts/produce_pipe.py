#!/usr/bin/env python3
"""The host's limit for produce over loopback, with no broker and no client work: an ideal
client (one prebuilt 1 MiB buffer, sendall in a loop) and an ideal broker (recv_into one reused
1 MiB buffer, pwrite to a file in DIR) in two processes; with --sync a thread of the receiver
fdatasyncs the file in a loop, as Sluice does to advance the high watermark. No CRC, no record
building, no protocol. Prints the receiver's MB/s.

  produce_pipe.py DIR GB [--sync]
"""
import os, socket, sys, threading, time


def receive(listener, path, total, sync, report):
    conn, _ = listener.accept()
    view = memoryview(bytearray(1 << 20))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    done = threading.Event()

    def syncer():
        while not done.is_set():
            os.fdatasync(fd)

    thread = threading.Thread(target=syncer) if sync else None
    if thread:
        thread.start()
    got = 0
    start = time.perf_counter()
    while got < total:
        n = conn.recv_into(view)
        if n == 0:
            break
        os.pwrite(fd, view[:n], got)
        got += n
    if sync:
        os.fdatasync(fd)
    elapsed = time.perf_counter() - start
    done.set()
    if thread:
        thread.join()
    os.close(fd)
    os.write(report, b"%.0f" % (got / elapsed / 1e6))


def main():
    directory, total = sys.argv[1], int(float(sys.argv[2]) * 1e9)
    sync = "--sync" in sys.argv[3:]
    path = os.path.join(directory, "produce_pipe.dat")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        receive(listener, path, total, sync, w)
        os._exit(0)
    s = socket.create_connection(listener.getsockname())
    data = os.urandom(1 << 20)
    sent = 0
    while sent < total:
        s.sendall(data)
        sent += len(data)
    s.shutdown(socket.SHUT_WR)
    os.waitpid(pid, 0)
    os.unlink(path)
    print(os.read(r, 64).decode())


main()
