#!/usr/bin/env python3
"""Fault drills of issue 21 through the real binary and its simulator.

Each drill starts `smsgw smsc-sim` (with --track-submits, so it keeps a
ledger of every submit_sm it accepted, and --redeliver-receipts, so it keeps
receipts until they are answered, as SMSCs do) and `smsgw standalone`,
sends COUNT messages over REST at RATE/s (each with its own text and
transaction id, no client retries), injects a fault once FAULT_AFTER have
been sent, waits for the dust to settle, and compares what the gateway
acknowledged (HTTP 200) with the SMSC's ledger:

  acknowledged     sends answered 200
  never reached    acknowledged, but the SMSC never accepted a submit_sm
                   with that text (the loss the issue is about)
  twice            texts the SMSC accepted more than once
  twice unmarked   of those, messages NOT marked possible_duplicate
  delivered        acknowledged messages whose receipt was applied

Drills (--drills, comma separated):
  gw-kill     SIGKILL the gateway, restart it at once on the same data
  gw-term     SIGTERM the gateway (graceful), restart it on the same data
  smsc-stop   SIGSTOP the simulator for STOP_SECS, then SIGCONT
  smsc-kill   SIGKILL the simulator, restart it KILL_SECS later on the same
              port (its ledger is a file, --ledger, so it survives; the
              receipts it owed die with it, as they would not at an SMSC
              that keeps them on disk: "delivered" falls short by those)
  smsc-drop   the simulator closes one session right after reading a
              submit_sm, before answering it (--drop-after-submits
              FAULT_AFTER --drop-before-response)
  none        no fault (the baseline)

usage: scripts/fault-drills.py --smsgw target/release/smsgw [--count 12000]
       [--rate 400] [--fault-after 4800] [--drills gw-kill,gw-term,smsc-stop]
Exits non-zero if any drill lost an acknowledged message or left a
duplicate unmarked. Loopback only; ports are picked free.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ADMIN_KEY = "drill-admin-key"
PASSWORD = "drill password 123"
EMAIL = "drill@example.com"

CONFIG = """apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {{name: drill-link}}
spec:
  host: 127.0.0.1
  port: {port}
  systemId: smsgw
  password: secret
  sessions: 2
  window: 64
  responseTimeout: 5s
  stallAfterTimeouts: 1
  unknownPolicy: {policy}
  enquireLinkInterval: 5s
  reconnect: {{initial: 200ms, max: 2s}}
  messageIdFormat: hex
---
apiVersion: smsgw.io/v1alpha1
kind: EsmePool
metadata: {{name: default}}
spec:
  members: [{{link: drill-link, weight: 1}}]
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def request(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def wait_until(what, check, within):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


class Drill:
    def __init__(self, args, name):
        self.args, self.name = args, name
        self.dir = tempfile.mkdtemp(prefix=f"drill-{name}-")
        self.sim_port, self.admin_port = free_port(), free_port()
        self.rest, self.grpc = free_port(), free_port()
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(port=self.sim_port, policy=args.policy))
        self.sim = self.gw = None
        self.logs = open(os.path.join(self.dir, "logs.txt"), "ab")

    def start_sim(self):
        extra = []
        if self.name == "smsc-drop":
            extra = ["--drop-after-submits", str(self.args.fault_after),
                     "--drop-before-response"]
        self.sim = subprocess.Popen(
            [self.args.smsgw, "smsc-sim", "--listen", f"127.0.0.1:{self.sim_port}",
             "--track-submits", "--ledger", os.path.join(self.dir, "ledger.txt"),
             "--redeliver-receipts",
             "--admin-listen", f"127.0.0.1:{self.admin_port}"] + extra,
            stdout=subprocess.DEVNULL, stderr=self.logs,
            env=dict(os.environ, RUST_LOG="warn"))
        wait_until("simulator up",
                   lambda: request(self.admin_port, "GET", "/stats")[0] == 200, 30)

    def start_gw(self):
        self.gw = subprocess.Popen(
            [self.args.smsgw, "standalone", "--config", self.config,
             "--rest-addr", f"127.0.0.1:{self.rest}",
             "--grpc-addr", f"127.0.0.1:{self.grpc}", "--data-dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=self.logs,
            env=dict(os.environ, RUST_LOG="warn", ADMIN_API_KEY=ADMIN_KEY,
                     SMSGW_REGISTRATIONS_PER_ADDRESS="1000"))
        wait_until("gateway up",
                   lambda: request(self.rest, "GET", "/healthy")[0] == 200, 60)

    def login(self):
        st, r = request(self.rest, "POST", "/api/v1/auth/register",
                        {"email": EMAIL, "password": PASSWORD, "app_name": "drill"})
        if st in (200, 201):
            self.app_id = r["app_id"]
        elif not hasattr(self, "app_id"):
            raise SystemExit(f"register failed: {st} {r}")
        st, t = request(self.rest, "POST", "/api/v1/auth/login",
                        {"email": EMAIL, "password": PASSWORD, "app_id": self.app_id})
        assert st == 200, t
        self.headers = {"authorization": f"Bearer {t['token']}", "x-app-id": self.app_id}

    def bound(self):
        def up():
            st, v = request(self.rest, "GET", "/api/v1/smpp/links", headers=self.headers)
            return st == 200 and all(l["sessions_bound"] == 2 for l in v["links"])
        wait_until("link bound", up, 30)

    def fault(self):
        a = self.args
        t0 = time.time()
        if self.name == "gw-kill":
            self.gw.send_signal(signal.SIGKILL)
            self.gw.wait()
            self.start_gw()
        elif self.name == "gw-term":
            self.gw.send_signal(signal.SIGTERM)
            self.gw.wait(timeout=60)
            self.start_gw()
        elif self.name == "smsc-kill":
            self.sim.send_signal(signal.SIGKILL)
            self.sim.wait()
            time.sleep(a.kill_secs)
            self.start_sim()
        elif self.name == "smsc-stop":
            self.sim.send_signal(signal.SIGSTOP)
            time.sleep(a.stop_secs)
            self.sim.send_signal(signal.SIGCONT)
        self.fault_took = time.time() - t0

    def run(self):
        a = self.args
        self.start_sim()
        self.start_gw()
        self.login()
        self.bound()
        acked = {}
        lock = threading.Lock()
        nxt = [0]
        start = time.time()
        fault_thread = None

        def worker():
            conn = None
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= a.count:
                    return
                due = start + i / a.rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                body = json.dumps({"esme": "default", "source": "DRILL",
                                   "destination": f"4915{i:09d}",
                                   "message": f"drill {i}",
                                   "transaction_id": f"drill-{i}"})
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.rest, timeout=30)
                    conn.request("POST", "/api/v1/sms/send", body,
                                 dict(self.headers, **{"content-type": "application/json"}))
                    r = conn.getresponse()
                    data = r.read()
                    if r.status == 200:
                        with lock:
                            acked[f"drill {i}"] = json.loads(data)["message_id"]
                except (OSError, http.client.HTTPException):
                    conn = None

        threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
        for t in threads:
            t.start()
        if self.name in ("gw-kill", "gw-term", "smsc-stop", "smsc-kill"):
            while nxt[0] < a.fault_after:
                time.sleep(0.005)
            fault_thread = threading.Thread(target=self.fault)
            fault_thread.start()
        for t in threads:
            t.join()
        sent_in = time.time() - start
        if fault_thread:
            fault_thread.join()

        # Settle: until every acknowledged text is in the SMSC's ledger and
        # the ledger stops growing, or SETTLE seconds.
        def ledger():
            st, v = request(self.admin_port, "GET", "/submissions", timeout=30)
            return {t: n for (_, t, n) in v}
        deadline = time.time() + a.settle
        last, stable_since = -1, time.time()
        while time.time() < deadline:
            led = ledger()
            if len(led) != last:
                last, stable_since = len(led), time.time()
            if all(t in led for t in acked) and time.time() - stable_since > 3:
                break
            time.sleep(0.5)
        led = ledger()
        never = [t for t in acked if t not in led]
        twice = [t for t, n in led.items() if n > 1]
        unmarked = []
        for t in twice:
            mid = acked.get(t)
            if mid is None:
                continue
            st, v = request(self.rest, "GET", f"/api/v1/sms/{mid}", headers=self.headers)
            if not (st == 200 and v.get("possible_duplicate")):
                unmarked.append(t)
        # Receipts: how many acknowledged messages ended delivered.
        delivered = 0
        marked = 0
        deadline = time.time() + a.settle
        pending = dict(acked)
        while pending and time.time() < deadline:
            for t, mid in list(pending.items()):
                st, v = request(self.rest, "GET", f"/api/v1/sms/{mid}", headers=self.headers)
                if st == 200 and v["status"] == "delivered":
                    del pending[t]
                    marked += bool(v.get("possible_duplicate"))
            if pending:
                time.sleep(1)
        delivered = len(acked) - len(pending)
        st, stats = request(self.admin_port, "GET", "/stats")
        c = http.client.HTTPConnection("127.0.0.1", self.rest, timeout=10)
        c.request("GET", "/metrics")
        metrics = c.getresponse().read().decode()
        c.close()
        in_doubt = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("smsgw_sweeper_in_doubt_total{"))
        self.result = {
            "drill": self.name, "sent": a.count, "acknowledged": len(acked),
            "never_reached": len(never), "twice": len(twice),
            "twice_unmarked": len(unmarked), "delivered": delivered,
            "marked": marked, "in_doubt_after_restart": int(in_doubt),
            "sent_in_s": round(sent_in, 1),
            "fault_s": round(getattr(self, "fault_took", 0.0), 1),
            "smsc_stalls_drops": (stats["counters"]["stalls"], stats["counters"]["drops"]),
            "receipts_redelivered": stats["counters"]["receipts_redelivered"],
            "examples_never": never[:5], "examples_unmarked": unmarked[:5],
        }
        return self.result

    def stop(self):
        for p in (self.gw, self.sim):
            if p and p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smsgw", default="target/release/smsgw")
    ap.add_argument("--count", type=int, default=12000)
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--fault-after", type=int, default=4800)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--stop-secs", type=float, default=10.0)
    ap.add_argument("--kill-secs", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=90.0)
    ap.add_argument("--policy", default="resubmit", choices=["resubmit", "hold"])
    ap.add_argument("--drills", default="gw-kill,gw-term,smsc-stop,smsc-kill,smsc-drop")
    a = ap.parse_args()
    bad = False
    print("| drill | sent | acknowledged | never reached the SMSC | submitted twice "
          "| twice, not marked possible_duplicate | delivered | marked possible_duplicate |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.drills.split(","):
        d = Drill(a, name)
        try:
            r = d.run()
        finally:
            d.stop()
        print(f"| {name} | {r['sent']} | {r['acknowledged']} | {r['never_reached']} "
              f"| {r['twice']} | {r['twice_unmarked']} | {r['delivered']} | {r['marked']} |",
              flush=True)
        print(json.dumps(r), file=sys.stderr, flush=True)
        bad |= r["never_reached"] > 0 or r["twice_unmarked"] > 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
