#!/usr/bin/env python3
"""Issue 17: which hand-off engine between pods? Measures, on this machine,
the round trip of one hand-off and its answer at a paced rate, two ways,
with the same client code around them:

* Redis Streams with a consumer group (the broker the issue names): the
  accepting pod XADDs the message to the link's stream; the holder reads
  it with XREADGROUP, XACKs it and XADDs the SMSC outcome to the accepting
  pod's reply stream, which the accepting pod reads with XREAD.
* a direct request/response hop (what gRPC forwarding is on the wire: one
  round trip on a kept-open connection to the holder), here a length-
  prefixed echo over TCP.

Both run in one Python process (a thread per side), so Python's own cost
is in both numbers; the difference is the engine's. Needs redis-server and
the `redis` package (`python3 -m venv /tmp/rv && /tmp/rv/bin/pip install
redis`, then run with /tmp/rv/bin/python). Loopback only.

    /tmp/rv/bin/python scripts/bench-handoff.py [--rate 1000] [--count 5000]
"""

import argparse
import socket
import struct
import subprocess
import tempfile
import threading
import time

import redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(lat, p):
    return lat[min(len(lat) - 1, int(len(lat) * p))]


def report(name, lat, took, count):
    lat = sorted(lat)
    print(f"{name:<28} {count / took:7.0f}/s  p50 {pct(lat, .5) * 1e3:6.2f} ms  p99 {pct(lat, .99) * 1e3:6.2f} ms"
          f"  max {lat[-1] * 1e3:6.2f} ms")


def paced(rate, count, one):
    lat, t0 = [], time.perf_counter()
    for i in range(count):
        due = t0 + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        s = time.perf_counter()
        one(i)
        lat.append(time.perf_counter() - s)
    return lat, time.perf_counter() - t0


def streams(port, rate, count):
    r = redis.Redis(port=port)
    r.xgroup_create("link:sim", "holders", id="0", mkstream=True)
    stop = threading.Event()

    def holder():
        c = redis.Redis(port=port)
        while not stop.is_set():
            got = c.xreadgroup("holders", "pod-b", {"link:sim": ">"}, count=16, block=100)
            for _, entries in got or []:
                for eid, f in entries:
                    p = c.pipeline(transaction=False)
                    p.xack("link:sim", "holders", eid)
                    p.xadd(b"reply:" + f[b"from"], {"id": f[b"id"], "smsc_id": b"1", "status": b"0"})
                    p.execute()

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    last = ["$"]

    def one(i):
        r.xadd("link:sim", {"id": str(i), "from": "pod-a", "msg": "x" * 120})
        while True:
            got = r.xread({"reply:pod-a": last[0]}, count=1, block=1000)
            if got:
                last[0] = got[0][1][0][0]
                return

    out = paced(rate, count, one)
    stop.set()
    t.join()
    return out


def direct(rate, count):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def recv_exact(s, n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b

    def holder():
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                n = struct.unpack(">I", recv_exact(c, 4))[0]
                recv_exact(c, n)
                reply = b'{"smsc_id":"1","status":0}'
                c.sendall(struct.pack(">I", len(reply)) + reply)
        except EOFError:
            pass

    threading.Thread(target=holder, daemon=True).start()
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b'{"id":"0","msg":"' + b"x" * 120 + b'"}'

    def one(i):
        c.sendall(struct.pack(">I", len(body)) + body)
        n = struct.unpack(">I", recv_exact(c, 4))[0]
        recv_exact(c, n)

    out = paced(rate, count, one)
    c.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--count", type=int, default=5000)
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        # appendonly everysec: the durability a hand-off broker would need.
        p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "yes", "--appendfsync", "everysec", "--dir", d],
                             stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            lat, took = streams(port, a.rate, a.count)
            report("redis streams + reply", lat, took, a.count)
            lat, took = direct(a.rate, a.count)
            report("direct request/response", lat, took, a.count)
        finally:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
