#!/usr/bin/env python3
"""Request latency of the API stand-in (tests/cluster/apiserver.py), one
client, keep-alive: creates of a CRD object (schema + CEL), status merge
patches, Lease creates, and a list. Run: python3 tests/cluster/bench_apiserver.py [N]
"""
import http.client
import json
import sys
import time

from test_apiserver import G, Server, link


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    s = Server()
    c = http.client.HTTPConnection(s.host, s.port)

    def req(method, path, body=None, ctype="application/json"):
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": ctype})
        r = c.getresponse()
        r.read()
        assert r.status in (200, 201), (method, path, r.status)

    def timed(what, fn, count):
        t = time.perf_counter()
        for i in range(count):
            fn(i)
        dt = time.perf_counter() - t
        print(f"{what}: {dt / count * 1000:.2f} ms each ({count / dt:.0f}/s)")
    try:
        timed("SmppLink create (schema + CEL)", lambda i: req("POST", f"{G}/smpplinks", link(f"l{i}", rate=10, burst=5)), n)
        timed("SmppLink status merge patch", lambda i: req("PATCH", f"{G}/smpplinks/l{i}/status",
                                                             {"status": {"boundSessions": 1}},
                                                             "application/merge-patch+json"), n)
        timed("Lease create", lambda i: req("POST", "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases",
                                            {"metadata": {"name": f"x{i}"}, "spec": {"holderIdentity": "a"}}), n)
        timed(f"list of {n} SmppLinks", lambda i: req("GET", f"{G}/smpplinks"), 20)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
