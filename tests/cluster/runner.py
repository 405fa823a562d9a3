#!/usr/bin/env python3
"""Cluster in a box: the pod runner.

Runs the Helm chart's real topology on one machine, on loopback only:

* the Kubernetes API stand-in (tests/cluster/apiserver.py),
* the built-in SMSC simulator (`smsgw smsc-sim`) at a fixed address,
* the chart rendered by `helm template` with the given values, every
  rendered object created in the API,
* every Deployment's and StatefulSet's pods as local processes of the
  freshly built binaries, with the container's command, args and env as
  rendered, each pod on its own loopback address with the real container
  ports, a Pod object kept current in the API (IP, phase, Ready from the
  readiness probe), restarted on exit with backoff like a kubelet, scaled
  and rolled like the Deployment/StatefulSet controllers do,
* every Service as a round-robin TCP forwarder on its own loopback address
  (its "ClusterIP") with the Service's ports, to the Ready pods it selects
  (the `service-proxy` example, a compiled process like kube-proxy's
  in-kernel forwarding, not a thread of this one).

What a real cluster does differently, and how the runner stands in
(README, "Cluster in a box"):

* DNS: `<service>.<namespace>.svc[.cluster.local]` in a container's env or
  args is replaced by the Service's loopback address.
* Network namespaces: a wildcard listen address (`0.0.0.0:P`, `[::]:P`) in
  env or args is narrowed to the pod's own address.
* Volumes: each volume is a directory of the pod under the state
  directory; a path under a volumeMount's mountPath in env or args is
  rewritten to it (a StatefulSet's claim survives the pod's restarts).
  `secret`, `configMap` and `projected` volumes get their files before
  each container start (a projected `serviceAccountToken` is a
  TokenRequest for its audience bound to the pod; not refreshed).
* Images: `…/smsgw:*` runs the built `smsgw` / `smsgw-operator` named by
  the container's command; the official `redis` image runs the Debian
  `redis-server` with the rendered args plus `--bind <pod address>` (its
  `redis-cli` exec probe gets `-h <pod address>`). Any other image is an
  error.
* Service-account credentials: the kubelet's projected token becomes
  `KUBECONFIG` (a kubeconfig with a TokenRequest token of the pod's
  ServiceAccount, the admin one when the API has no TokenRequest). It is
  the only variable the runner adds, with PATH and HOME.
* Probes: readiness is polled every second (not periodSeconds); liveness
  is not enforced. Restarts back off 1, 2, 4, 8 s (capped), not 10 s-5 min.

An env var in a rendered smsgw container that the binary does not read
(not listed as `[env: …]` in its `--help`, RUST_LOG aside) is an error:
the runner stops and `up` fails.

Usage (normally through scripts/cluster.sh):
  runner.py run --state DIR --net 127.80.0 --service-proxy BIN [--proxies N] [--values F]...
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "smsgw"
APISERVER = REPO / "tests" / "cluster" / "apiserver.py"
# Keys of the S3 stand-in (smsgw_archive::testing::{ACCESS_KEY, SECRET_KEY}).
S3_ACCESS_KEY = "AKIATESTTESTTEST"
S3_SECRET_KEY = "test-secret-key-not-a-real-one"
# Variables every Rust binary here reads besides its flags.
ALWAYS_KNOWN_ENV = {"RUST_LOG"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class Fatal(Exception):
    """A problem that stops the runner (and makes `up` fail)."""


# ---------------------------------------------------------------- API client


class Api:
    """Just enough of a Kubernetes client: JSON over HTTP(S) with the
    kubeconfig's server and bearer token, discovery of kinds."""

    def __init__(self, kubeconfig: Path):
        kc = yaml.safe_load(kubeconfig.read_text())
        ctx_name = kc.get("current-context")
        ctx = next((c["context"] for c in kc.get("contexts", []) if c["name"] == ctx_name), None)
        cluster_name = ctx["cluster"] if ctx else kc["clusters"][0]["name"]
        user_name = ctx.get("user") if ctx else None
        self.server = next(c["cluster"]["server"] for c in kc["clusters"] if c["name"] == cluster_name).rstrip("/")
        self.token = None
        for u in kc.get("users", []) or []:
            if user_name is None or u["name"] == user_name:
                self.token = (u.get("user") or {}).get("token")
                break
        self.kinds: dict[tuple[str, str], tuple[str, str, bool]] = {}

    def request(self, method: str, path: str, body=None, ctype="application/json", ok=(200, 201, 202)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = {"raw": raw.decode(errors="replace")}
        if ok is not None and status not in ok:
            msg = obj.get("message") if isinstance(obj, dict) else obj
            raise ApiError(status, f"{method} {path}: {status} {msg}")
        return status, obj

    def get(self, path, missing_ok=False):
        status, obj = self.request("GET", path, ok=(200, 404) if missing_ok else (200,))
        return None if status == 404 else obj

    def discover(self):
        def add(prefix, gv):
            _, res = self.request("GET", prefix)
            for r in res.get("resources", []):
                if "/" in r["name"]:
                    continue
                self.kinds[(gv, r["kind"])] = (prefix, r["name"], r.get("namespaced", True))

        add("/api/v1", "v1")
        _, groups = self.request("GET", "/apis")
        for g in groups.get("groups", []):
            for v in g.get("versions", []):
                add(f"/apis/{v['groupVersion']}", v["groupVersion"])

    def path(self, api_version, kind, namespace, name=None):
        key = (api_version, kind)
        if key not in self.kinds:
            self.discover()
        if key not in self.kinds:
            raise Fatal(f"the API serves no {kind} in {api_version}")
        prefix, plural, namespaced = self.kinds[key]
        p = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        return p + (f"/{name}" if name else "")

    def patch(self, path, body):
        return self.request("PATCH", path, body, ctype="application/merge-patch+json")[1]


class ApiError(Exception):
    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status


# ---------------------------------------------------------------- helpers


def rand5():
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def template_hash(template) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def http_ok(url: str, timeout=1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_ok(host, port, timeout=1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def known_env(binary: str, subcommand: list[str], cache: dict) -> set[str]:
    """Env names a clap binary reads: every `[env: NAME` in its --help."""
    key = (binary, tuple(subcommand))
    if key not in cache:
        out = subprocess.run([binary, *subcommand, "--help"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise Fatal(f"{binary} {' '.join(subcommand)} --help failed: {out.stderr.strip()}")
        cache[key] = set(re.findall(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)", out.stdout)) | ALWAYS_KNOWN_ENV
    return cache[key]


# ---------------------------------------------------------------- pods


class Pod:
    """One pod: its containers as local processes, its Pod object."""

    def __init__(self, box: "Box", owner: dict, name: str, ip: str, thash: str, ordinal=None):
        self.box, self.owner, self.name, self.ip, self.hash = box, owner, name, ip, thash
        self.ordinal = ordinal
        self.template = owner["spec"]["template"]
        self.spec = self.template["spec"]
        self.labels = dict(self.template.get("metadata", {}).get("labels", {}))
        self.dir = box.state / "pods" / name
        self.ready = False
        self.stopping = False
        self.terminating = False
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.created = time.time()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"pod-{name}", daemon=True)

    # -- API object
    def _create_object(self):
        meta = self.template.get("metadata", {})
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.box.ns,
                "labels": self.labels,
                "annotations": dict(meta.get("annotations", {})),
                "ownerReferences": [
                    {
                        "apiVersion": self.owner["apiVersion"],
                        "kind": self.owner["kind"],
                        "name": self.owner["metadata"]["name"],
                        "uid": self.owner["metadata"].get("uid", ""),
                        "controller": True,
                    }
                ],
            },
            "spec": {**self.spec, "nodeName": "box"},
        }
        if self.ordinal is not None:
            obj["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = str(self.ordinal)
        api = self.box.api
        path = api.path("v1", "Pod", self.box.ns)
        st, _ = api.request("POST", path, obj, ok=(200, 201, 409))
        if st == 409:  # a StatefulSet pod of the same name is still there
            api.request("DELETE", f"{path}/{self.name}", ok=(200, 202, 404))
            api.request("POST", path, obj)
        self.uid = api.get(f"{path}/{self.name}")["metadata"].get("uid", "")

    def publish(self):
        conds = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True" if self.ready else "False"},
            {"type": "Ready", "status": "True" if self.ready else "False", "lastTransitionTime": now_rfc3339()},
        ]
        cstat = []
        for c in self.spec["containers"]:
            p = self.procs.get(c["name"])
            running = p is not None and p.poll() is None
            cstat.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "ready": self.ready and running,
                    "restartCount": self.restarts.get(c["name"], 0),
                    "state": {"running": {"startedAt": now_rfc3339()}} if running else {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            )
        status = {
            "phase": "Running",
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "hostIP": "127.0.0.1",
            "conditions": conds,
            "containerStatuses": cstat,
        }
        try:
            self.box.api.patch(self.box.api.path("v1", "Pod", self.box.ns, self.name) + "/status", {"status": status})
        except ApiError as e:
            if e.status != 404:
                log(f"pod {self.name}: status update failed: {e}")
        self.box.write_pods()

    # -- container environment
    def _volume_dirs(self) -> dict[str, Path]:
        dirs = {}
        for v in self.spec.get("volumes", []) or []:
            dirs[v["name"]] = self.dir / "volumes" / v["name"]
        for t in self.owner["spec"].get("volumeClaimTemplates", []) or []:
            # A StatefulSet claim: kept across the pod's restarts.
            dirs[t["metadata"]["name"]] = self.box.state / "claims" / f"{t['metadata']['name']}-{self.name}"
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        return dirs

    def _fill_volumes(self):
        """What the kubelet writes into volumes before a container starts:
        Secret and ConfigMap files (`secret`, `configMap`, and those
        sources of `projected`) and projected ServiceAccount tokens (a
        TokenRequest for the volume's audience, bound to this pod). Other
        volumes stay empty directories."""
        api, ns = self.box.api, self.box.ns

        def files_of(kind, name, items, optional, default_mode=None):
            obj = api.get(api.path("v1", kind, ns, name), missing_ok=True)
            if obj is None:
                if optional:
                    return {}
                raise PodNotStartable(f"{kind} {name} not found (volume)")
            data = self.box.object_data(obj)
            if not items:
                return dict(data)
            out = {}
            for it in items:
                if it["key"] not in data:
                    if optional:
                        continue
                    raise PodNotStartable(f"{kind} {name} has no key {it['key']} (volume)")
                out[it.get("path", it["key"])] = data[it["key"]]
            return out

        for v in self.spec.get("volumes", []) or []:
            files: dict[str, str] = {}
            if "secret" in v:
                src = v["secret"]
                files = files_of("Secret", src["secretName"], src.get("items"), src.get("optional"))
            elif "configMap" in v:
                src = v["configMap"]
                files = files_of("ConfigMap", src["name"], src.get("items"), src.get("optional"))
            elif "projected" in v:
                for src in v["projected"].get("sources", []) or []:
                    if "secret" in src:
                        s2 = src["secret"]
                        files.update(files_of("Secret", s2["name"], s2.get("items"), s2.get("optional")))
                    elif "configMap" in src:
                        c2 = src["configMap"]
                        files.update(files_of("ConfigMap", c2["name"], c2.get("items"), c2.get("optional")))
                    elif "serviceAccountToken" in src:
                        t = src["serviceAccountToken"]
                        sa = self.spec.get("serviceAccountName", "default")
                        spec = {
                            "expirationSeconds": int(t.get("expirationSeconds", 3600)),
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": getattr(self, "uid", "")},
                        }
                        if t.get("audience"):
                            spec["audiences"] = [t["audience"]]
                        _, tr = api.request(
                            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
                        )
                        files[t["path"]] = tr["status"]["token"]
                    else:
                        raise Fatal(f"pod {self.name}: volume {v['name']}: unsupported projected source {list(src)}")
            else:
                continue
            root = self.vols[v["name"]]
            for rel, text in files.items():
                f = root / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_name(f.name + ".tmp")
                tmp.write_text(text)
                tmp.replace(f)

    def rewrite(self, value: str, mounts: list[tuple[str, Path]]) -> str:
        value = self.box.resolve_dns(value)
        value = re.sub(r"(?<![\d.])0\.0\.0\.0(?=:\d)", self.ip, value)
        value = re.sub(r"\[::\](?=:\d)", self.ip, value)
        for mount, local in mounts:  # longest mountPath first; one rewrite only
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(local) + value[len(mount.rstrip("/")):]
        return value

    def field(self, path: str) -> str:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.box.ns,
            "metadata.uid": getattr(self, "uid", ""),
            "spec.nodeName": "box",
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "status.hostIP": "127.0.0.1",
        }
        if path in fields:
            return fields[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            src = self.labels if m.group(1) == "labels" else self.template.get("metadata", {}).get("annotations", {})
            return src.get(m.group(2), "")
        raise Fatal(f"pod {self.name}: unsupported fieldRef {path}")

    def env_of(self, c: dict, mounts) -> dict[str, str]:
        env: dict[str, str] = {}
        api, ns = self.box.api, self.box.ns
        for src in c.get("envFrom", []) or []:
            ref = src.get("secretRef") or src.get("configMapRef")
            kind = "Secret" if "secretRef" in src else "ConfigMap"
            obj = api.get(api.path("v1", kind, ns, ref["name"]), missing_ok=True)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise PodNotStartable(f"{kind} {ref['name']} not found (envFrom)")
            for k, v in self.box.object_data(obj).items():
                env[src.get("prefix", "") + k] = v
        for e in c.get("env", []) or []:
            name = e["name"]
            if "value" in e:
                val = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
                env[name] = val.replace("$$", "$")
                continue
            vf = e.get("valueFrom") or {}
            if "fieldRef" in vf:
                env[name] = self.field(vf["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                kind = "Secret" if "secretKeyRef" in vf else "ConfigMap"
                obj = api.get(api.path("v1", kind, ns, ref["name"]), missing_ok=True)
                data = self.box.object_data(obj) if obj else {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodNotStartable(f"{kind} {ref['name']} has no key {ref['key']} (env {name})")
                env[name] = data[ref["key"]]
            else:
                raise Fatal(f"pod {self.name}: env {name}: unsupported valueFrom {list(vf)}")
        return {k: self.rewrite(v, mounts) for k, v in env.items()}

    def command_of(self, c: dict) -> tuple[list[str], dict[str, str], str]:
        """argv, extra env and the kind of program ("smsgw" or "redis")."""
        image = c.get("image", "")
        repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        base = repo.rsplit("/", 1)[-1]
        mounts = [(m["mountPath"], self.vols[m["name"]]) for m in c.get("volumeMounts", []) or []]
        mounts.sort(key=lambda m: -len(m[0]))
        cmd = list(c.get("command") or []) + list(c.get("args") or [])
        if not cmd:
            raise Fatal(f"pod {self.name}: container {c['name']} has no command (the image's entrypoint is unknown here)")
        env = self.env_of(c, mounts)
        argv = [self.rewrite(a, mounts) for a in cmd]
        if base == "smsgw":
            prog = self.box.binaries.get(argv[0])
            if not prog:
                raise Fatal(f"pod {self.name}: the smsgw image has no command {argv[0]!r}")
            sub = [a for a in argv[1:2] if not a.startswith("-")]
            known = known_env(prog, sub, self.box.help_cache)
            unknown = sorted(set(env) - known)
            if unknown:
                raise Fatal(
                    f"{self.owner['kind']} {self.owner['metadata']['name']}, container {c['name']}: "
                    f"env {', '.join(unknown)} not read by `{argv[0]} {' '.join(sub)}` (see its --help)"
                )
            return [prog, *argv[1:]], env, "smsgw"
        if base == "redis":
            if argv[0] != "redis-server":
                raise Fatal(f"pod {self.name}: redis image command {argv[0]!r} is not redis-server")
            if env:
                raise Fatal(f"pod {self.name}: env {sorted(env)} on redis-server")
            return [self.box.redis_server, *argv[1:], "--bind", self.ip, "--daemonize", "no"], env, "redis"
        raise Fatal(f"pod {self.name}: image {image} cannot run here (only smsgw and redis)")

    # -- lifecycle
    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._create_object()
        self.vols = self._volume_dirs()
        self.thread.start()

    def _spawn(self, c) -> subprocess.Popen:
        self._fill_volumes()
        argv, env, _kind = self.command_of(c)
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        full_env.update(env)
        if self.spec.get("automountServiceAccountToken", True):
            full_env["KUBECONFIG"] = str(self.box.sa_kubeconfig(self.spec.get("serviceAccountName", "default")))
        logf = open(self.box.state / "logs" / f"{self.name}.log", "ab")
        logf.write(f"--- {now_rfc3339()} start {c['name']}: {' '.join(argv)}\n".encode())
        logf.flush()
        p = subprocess.Popen(argv, env=full_env, cwd=self.dir, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.box.track_pid(p.pid, argv[0])
        return p

    def _probe(self, c) -> bool:
        p = c.get("readinessProbe")
        if not p:
            return True
        ports = {cp.get("name"): cp["containerPort"] for cp in c.get("ports", []) or []}

        def port_of(v):
            return ports.get(v) if isinstance(v, str) else v

        if "httpGet" in p:
            g = p["httpGet"]
            return http_ok(f"http://{self.ip}:{port_of(g['port'])}{g.get('path', '/')}")
        if "tcpSocket" in p:
            return tcp_ok(self.ip, port_of(p["tcpSocket"]["port"]))
        if "exec" in p:
            cmd = list(p["exec"]["command"])
            if cmd and cmd[0] == "redis-cli":
                cmd = [self.box.redis_cli, "-h", self.ip, *cmd[1:]]
            try:
                r = subprocess.run(cmd, capture_output=True, timeout=2, cwd=self.dir)
            except (OSError, subprocess.TimeoutExpired):
                return False
            return r.returncode == 0
        if "grpc" in p:
            return tcp_ok(self.ip, p["grpc"]["port"])
        return True

    def _run(self):
        containers = self.spec["containers"]
        backoff = {c["name"]: 1.0 for c in containers}
        next_start = {c["name"]: 0.0 for c in containers}
        try:
            while not self.stopping:
                changed = False
                for c in containers:
                    n = c["name"]
                    p = self.procs.get(n)
                    if p is not None and p.poll() is not None:
                        log(f"pod {self.name}: container {n} exited with {p.returncode}")
                        self.box.untrack_pid(p.pid)
                        del self.procs[n]
                        self.restarts[n] = self.restarts.get(n, 0) + 1
                        next_start[n] = time.time() + backoff[n]
                        backoff[n] = min(backoff[n] * 2, 8.0)
                        changed = True
                    if n not in self.procs and time.time() >= next_start[n] and not self.stopping:
                        try:
                            with self.lock:
                                if not self.stopping:
                                    self.procs[n] = self._spawn(c)
                        except PodNotStartable as e:
                            log(f"pod {self.name}: {e}; retrying")
                            next_start[n] = time.time() + 2
                        changed = True
                ready = all(n in self.procs and self._probe(c) for c in containers for n in [c["name"]])
                if ready:
                    for c in containers:
                        if self.procs.get(c["name"]) and time.time() - self.created > 10:
                            backoff[c["name"]] = 1.0
                if ready != self.ready or changed:
                    self.ready = ready
                    self.publish()
                time.sleep(0.25 if not self.ready else 1.0)
        except Fatal as e:
            self.box.fail(str(e))
        except Exception as e:  # noqa: BLE001 — a runner bug must not hang `up`
            self.box.fail(f"pod {self.name}: {type(e).__name__}: {e}")

    def stop(self, grace: float | None = None, kill=False):
        """Terminates like the kubelet: SIGTERM, then SIGKILL after the
        grace period; then the Pod object goes."""
        with self.lock:
            self.stopping = True
        self.terminating = True
        self.ready = False
        self.publish()  # NotReady first: out of the Services, slots move away
        if grace is None:
            grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        for p in list(self.procs.values()):
            try:
                os.killpg(p.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        for p in list(self.procs.values()):
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            self.box.untrack_pid(p.pid)
        self.procs.clear()
        try:
            self.box.api.request("DELETE", self.box.api.path("v1", "Pod", self.box.ns, self.name), ok=(200, 202, 404))
        except (ApiError, OSError) as e:
            log(f"pod {self.name}: delete failed: {e}")
        self.box.release_ip(self.ip)
        self.box.write_pods()


class PodNotStartable(Exception):
    """A container cannot start yet (a referenced Secret key is missing):
    retried, like CreateContainerConfigError."""


# ---------------------------------------------------------------- services


class Forwarders:
    """Each Service as a TCP forwarder on its own loopback address and the
    Service's ports, round robin per connection over the Ready pods it
    selects: the compiled `service-proxy` (an example of the smsgw
    package), one process for all Services, its table of endpoints written
    on its stdin whenever it changes (checked every 50 ms). A forwarder in
    this process cost half a core at 1,000 msg/s (every Redis command of
    every pod crosses a Service) and shared the runner's GIL with its
    probes; kube-proxy forwards in the kernel for next to nothing."""

    def __init__(self, box: "Box", binary: str):
        self.box = box
        self.services: dict[str, tuple[int | str, dict]] = {}  # "ip:port" → (target, selector)
        self.lock = threading.Lock()
        self.sent: str | None = None
        self.p = subprocess.Popen(
            [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(box.state / "logs" / "service-proxy.log", "ab"), start_new_session=True, text=True,
        )
        box.track_pid(self.p.pid, binary)
        box.extra_procs.append(self.p)
        threading.Thread(target=self._refresh, name="service-proxy", daemon=True).start()

    def _write(self, table: str):
        if table != self.sent:
            self.p.stdin.write(table + "\n")
            self.p.stdin.flush()
            self.sent = table

    def ensure(self, svc_name: str, ip: str, port: int, target, selector: dict):
        key = f"{ip}:{port}"
        with self.lock:
            if key in self.services:
                return
            self.services[key] = (target, selector)
            self._write(self.table_locked())
            line = self.p.stdout.readline().strip()
        if line != f"listening {key}":
            raise Fatal(f"the Service {svc_name} could not listen on {key}: {line!r}; see logs/service-proxy.log")

    def table_locked(self) -> str:
        return json.dumps({k: [f"{h}:{p}" for h, p in self.box.endpoints(sel, target)]
                           for k, (target, sel) in sorted(self.services.items())}, sort_keys=True)

    def _refresh(self):
        while not self.box.stop_event.wait(0.05):
            try:
                with self.lock:
                    self._write(self.table_locked())
            except (OSError, ValueError):
                return

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the box


class Box:
    def __init__(self, args):
        self.args = args
        self.state: Path = Path(args.state).resolve()
        self.ns = args.namespace
        self.net = args.net
        self.binaries = {"smsgw": str(Path(args.smsgw).resolve()), "smsgw-operator": str(Path(args.operator).resolve())}
        self.redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.redis_cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        self.help_cache: dict = {}
        self.pods: dict[str, Pod] = {}
        self.workloads: dict[tuple[str, str], dict] = {}
        self.services: dict[str, dict] = {}
        self.svc_ips: dict[str, str] = {}
        self.used_ips: set[str] = set()
        self.next_pod_ip = 50
        self.next_svc_ip = 10
        self.lock = threading.RLock()
        self.failed: str | None = None
        self.stop_event = threading.Event()
        self.sa_configs: dict[str, Path] = {}
        self.sa_lock = threading.Lock()
        self.extra_procs: list[subprocess.Popen] = []
        self.rolling: dict[str, str] = {}

    # -- bookkeeping
    def addr(self, last: int) -> str:
        return f"{self.net}.{last}"

    def alloc_ip(self) -> str:
        with self.lock:
            for _ in range(200):
                ip = self.addr(self.next_pod_ip)
                self.next_pod_ip = 50 if self.next_pod_ip >= 250 else self.next_pod_ip + 1
                if ip not in self.used_ips:
                    self.used_ips.add(ip)
                    return ip
        raise Fatal("no free pod address")

    def release_ip(self, ip):
        with self.lock:
            self.used_ips.discard(ip)

    def track_pid(self, pid, what):
        (self.state / "pids").mkdir(exist_ok=True)
        (self.state / "pids" / str(pid)).write_text(what)

    def untrack_pid(self, pid):
        try:
            (self.state / "pids" / str(pid)).unlink()
        except FileNotFoundError:
            pass

    def write_pods(self):
        with self.lock:
            data = {
                n: {
                    "ip": p.ip,
                    "ready": p.ready,
                    "owner": f"{p.owner['kind']}/{p.owner['metadata']['name']}",
                    "pids": {c: pr.pid for c, pr in p.procs.items()},
                    "restarts": p.restarts,
                    "terminating": p.terminating,
                }
                for n, p in self.pods.items()
            }
            tmp = self.state / "pods.json.tmp"
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.state / "pods.json")

    def fail(self, msg):
        if self.failed is None:
            self.failed = msg
            log("FATAL:", msg)
        self.stop_event.set()

    def object_data(self, obj) -> dict[str, str]:
        out = {}
        if obj.get("kind") == "Secret" or "type" in obj:
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v).decode()
        else:
            out.update(obj.get("data") or {})
        out.update(obj.get("stringData") or {})
        return out

    def resolve_dns(self, value: str) -> str:
        """Cluster DNS: `<svc>.<ns>.svc[.cluster.local]` → the Service's
        loopback address."""

        def sub(m):
            svc, ns = m.group(1), m.group(2)
            if ns == self.ns and svc in self.svc_ips:
                return self.svc_ips[svc]
            return m.group(0)

        return re.sub(r"\b([a-z0-9][-a-z0-9]*)\.([a-z0-9][-a-z0-9]*)\.svc(?:\.cluster\.local)?\b", sub, value)

    def endpoints(self, selector, target) -> list[tuple[str, int]]:
        out = []
        with self.lock:
            pods = list(self.pods.values())
        for p in sorted(pods, key=lambda p: p.name):
            if not p.ready or p.terminating or not labels_match(selector, p.labels):
                continue
            port = target
            if isinstance(target, str):
                port = next(
                    (cp["containerPort"] for c in p.spec["containers"] for cp in c.get("ports", []) or [] if cp.get("name") == target),
                    None,
                )
            if port:
                out.append((p.ip, int(port)))
        return out

    def sa_kubeconfig(self, sa: str) -> Path:
        with self.sa_lock:  # pods of one ServiceAccount start concurrently
            return self._sa_kubeconfig(sa)

    def _sa_kubeconfig(self, sa: str) -> Path:
        if sa in self.sa_configs:
            return self.sa_configs[sa]
        kc = yaml.safe_load(self.kubeconfig.read_text())
        try:
            _, tr = self.api.request(
                "POST",
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}},
            )
            token = tr["status"]["token"]
            for u in kc.get("users", []):
                u["user"] = {"token": token}
        except (ApiError, KeyError, TypeError) as e:
            log(f"no TokenRequest for ServiceAccount {sa} ({e}); pods use the admin kubeconfig")
        for c in kc.get("contexts", []):
            c["context"]["namespace"] = self.ns
        path = self.state / f"kubeconfig-sa-{sa}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(kc))
        tmp.replace(path)
        self.sa_configs[sa] = path
        return path

    # -- start-up
    def start_process(self, argv, name, env=None, **kw) -> subprocess.Popen:
        logf = open(self.state / "logs" / f"{name}.log", "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env, **kw)
        logf.close()
        self.track_pid(p.pid, argv[0])
        self.extra_procs.append(p)
        return p

    def start_apiserver(self):
        self.kubeconfig = self.state / "kubeconfig"
        logf = open(self.state / "logs" / "apiserver.log", "ab")
        p = subprocess.Popen(
            [sys.executable, str(APISERVER), "--listen", f"{self.addr(1)}:0", "--crds", str(CHART / "crds"),
             "--kubeconfig-out", str(self.kubeconfig), "--namespace", self.ns],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True, text=True,
        )
        logf.close()
        self.track_pid(p.pid, "apiserver")
        self.extra_procs.append(p)
        deadline = time.time() + 20
        line = ""
        while time.time() < deadline:
            line = p.stdout.readline()
            if line.startswith("READY "):
                break
            if not line and p.poll() is not None:
                raise Fatal(f"the API stand-in exited ({p.returncode}); see {self.state}/logs/apiserver.log")
        else:
            raise Fatal("the API stand-in did not print READY within 20 s")
        # Keep draining its stdout.
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
        self.api = Api(self.kubeconfig)
        log("API stand-in at", line.split()[1])

    def start_simulator(self):
        a = self.args
        self.smsc = f"{self.addr(2)}:{a.smsc_port}"
        self.smsc_admin = f"{self.addr(2)}:{a.smsc_port + 1}"
        argv = [self.binaries["smsgw"], "smsc-sim", "--listen", self.smsc, "--receipt-delay", a.receipt_delay]
        # As an SMSC does: a receipt its session did not acknowledge (the
        # pod went away in a rolling restart) is delivered on the next bind.
        if "SMSGW_SIM_REDELIVER_RECEIPTS" in known_env(self.binaries["smsgw"], ["smsc-sim"], self.help_cache):
            argv += ["--redeliver-receipts"]
        has_stats = "SMSGW_SIM_ADMIN_LISTEN" in known_env(self.binaries["smsgw"], ["smsc-sim"], self.help_cache)
        if has_stats:
            argv += ["--admin-listen", self.smsc_admin, "--track-submits"]
        else:
            self.smsc_admin = None
        self.start_process(argv, "smsc-sim", env={"PATH": os.environ.get("PATH", ""), "RUST_LOG": "info"})
        host, port = self.smsc.rsplit(":", 1)
        deadline = time.time() + 15
        while not (http_ok(f"http://{self.smsc_admin}/stats") if has_stats else tcp_ok(host, int(port))):
            if time.time() > deadline:
                raise Fatal(f"the SMSC simulator did not come up; see {self.state}/logs/smsc-sim.log")
            time.sleep(0.1)

    def start_s3(self):
        """The S3 stand-in (the tests' s3s-fs server) and the chart values
        that point the journal at it, with a credentials Secret."""
        self.s3 = f"{self.addr(3)}:9000"
        p = subprocess.Popen(
            [self.args.s3_server, self.s3, str(self.state / "s3"), "smsgw"],
            stdout=subprocess.PIPE, stderr=open(self.state / "logs" / "s3.log", "ab"), stdin=subprocess.DEVNULL,
            start_new_session=True, text=True,
        )
        self.track_pid(p.pid, self.args.s3_server)
        self.extra_procs.append(p)
        line = p.stdout.readline()
        if not line.startswith("READY "):
            raise Fatal(f"the S3 stand-in did not start; see {self.state}/logs/s3.log")
        secret = {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "smsgw-s3", "namespace": self.ns}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in
                     {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}.items()},
        }
        self.api.request("POST", self.api.path("v1", "Secret", self.ns), secret)
        return ["s3.enabled=true", "s3.bucket=smsgw", f"s3.endpoint=http://{self.s3}", "s3.existingSecret=smsgw-s3"]

    def render(self, extra_sets=()) -> list[dict]:
        a = self.args
        cmd = [a.helm, "template", a.release, str(CHART), "--namespace", self.ns]
        for v in a.values or []:
            cmd += ["-f", v]
        if a.proxies is not None:
            cmd += ["--set", f"proxy.replicas={a.proxies}"]
        for s in extra_sets:
            cmd += ["--set", s]
        for s in a.set or []:
            cmd += ["--set", s]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise Fatal(f"helm template failed: {r.stderr.strip()}")
        (self.state / "rendered.yaml").write_text(r.stdout)
        return [d for d in yaml.safe_load_all(r.stdout) if d]

    def create_objects(self, docs):
        self.api.discover()
        # Namespaced kinds first by dependency: the workloads last.
        order = {"ServiceAccount": 0, "Secret": 1, "ConfigMap": 1, "Role": 2, "ClusterRole": 2, "RoleBinding": 3,
                 "ClusterRoleBinding": 3, "Service": 4, "Deployment": 9, "StatefulSet": 9}
        for d in sorted(docs, key=lambda d: order.get(d["kind"], 5)):
            av, kind = d["apiVersion"], d["kind"]
            if (av, kind) not in self.api.kinds:
                if av.startswith("monitoring.coreos.com/"):
                    log(f"skipping {kind} {d['metadata']['name']}: no Prometheus Operator here")
                    continue
                raise Fatal(f"the API serves no {kind} ({av}): cannot create {d['metadata']['name']}")
            d.setdefault("metadata", {}).setdefault("namespace", self.ns)
            self.api.request("POST", self.api.path(av, kind, self.ns), d)

    # -- controllers
    def sync_services(self):
        svcs = self.api.get(self.api.path("v1", "Service", self.ns))["items"]
        for s in svcs:
            name = s["metadata"]["name"]
            sel = s["spec"].get("selector")
            if not sel:
                continue
            with self.lock:
                if name not in self.svc_ips:
                    self.svc_ips[name] = self.addr(self.next_svc_ip)
                    self.next_svc_ip += 1
            for p in s["spec"].get("ports", []):
                self.forwarders.ensure(name, self.svc_ips[name], p["port"], p.get("targetPort", p["port"]), sel)
        (self.state / "services.json").write_text(json.dumps(
            {n: {"ip": ip, "ports": [p["port"] for s in svcs if s["metadata"]["name"] == n for p in s["spec"].get("ports", [])]}
             for n, ip in self.svc_ips.items()}, indent=1))

    def new_pod(self, w, name, thash, ordinal=None) -> Pod:
        p = Pod(self, w, name, self.alloc_ip(), thash, ordinal)
        with self.lock:
            self.pods[name] = p
        log(f"pod {name} at {p.ip}")
        p.start()
        return p

    def retire(self, p: Pod, kill=False):
        p.terminating = True
        p.ready = False

        def go():
            p.stop(kill=kill)
            with self.lock:
                if self.pods.get(p.name) is p:
                    del self.pods[p.name]
            self.write_pods()

        threading.Thread(target=go, daemon=True).start()

    def reconcile(self):
        api = self.api
        # Pods deleted through the API (kubectl delete pod): terminate them.
        listed = {p["metadata"]["name"] for p in api.get(api.path("v1", "Pod", self.ns))["items"]}
        with self.lock:
            ours = list(self.pods.values())
        for p in ours:
            if not p.terminating and p.name not in listed and time.time() - p.created > 2:
                log(f"pod {p.name} was deleted through the API: terminating it")
                self.retire(p)
        for kind in ("Deployment", "StatefulSet"):
            for w in api.get(api.path("apps/v1", kind, self.ns))["items"]:
                w["kind"], w["apiVersion"] = kind, "apps/v1"  # list items may omit them
                self.reconcile_workload(w)

    def reconcile_workload(self, w):
        kind, name = w["kind"], w["metadata"]["name"]
        desired = w["spec"].get("replicas", 1)
        thash = template_hash(w["spec"]["template"])
        with self.lock:
            mine = [p for p in self.pods.values() if p.owner["metadata"]["name"] == name and p.owner["kind"] == kind and not p.terminating]
        current = [p for p in mine if p.hash == thash]
        old = [p for p in mine if p.hash != thash]
        if kind == "Deployment":
            if old:
                # RollingUpdate, maxSurge 1 / maxUnavailable 0: a new pod,
                # once Ready an old one goes, and so on.
                if all(p.ready for p in current) and len(mine) > desired and current:
                    self.retire(min(old, key=lambda p: p.created))
                elif all(p.ready for p in current) and len(mine) <= desired:
                    self.new_pod(w, f"{name}-{thash}-{rand5()}", thash)
            elif len(current) < desired:
                for _ in range(desired - len(current)):
                    self.new_pod(w, f"{name}-{thash}-{rand5()}", thash)
            elif len(current) > desired:
                extra = sorted(current, key=lambda p: (p.ready, -p.created))[: len(current) - desired]
                for p in extra:
                    self.retire(p)
        else:  # StatefulSet: ordered, one at a time
            by_ord = {p.ordinal: p for p in mine}
            for p in mine:
                if p.ordinal >= desired:
                    self.retire(p)
            stale = [p for p in mine if p.hash != thash and p.ordinal < desired]
            if stale and all(p.ready for p in mine if p.hash == thash):
                self.retire(max(stale, key=lambda p: p.ordinal))
            for i in range(desired):
                if i not in by_ord:
                    with self.lock:
                        busy = f"{name}-{i}" in self.pods
                    if not busy and all(by_ord[j].ready for j in range(i) if j in by_ord):
                        self.new_pod(w, f"{name}-{i}", thash, ordinal=i)
                    break
        ready = sum(1 for p in mine if p.ready)
        status = {
            "observedGeneration": w["metadata"].get("generation", 1),
            "replicas": len(mine),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": len(current),
        }
        if kind == "StatefulSet":
            status["currentReplicas"] = len(current)
        old_status = w.get("status") or {}
        if any(old_status.get(k) != v for k, v in status.items()):
            try:
                self.api.patch(self.api.path("apps/v1", kind, self.ns, name) + "/status", {"status": status})
            except ApiError as e:
                log(f"{kind} {name}: status update failed: {e}")

    def all_ready(self) -> bool:
        api = self.api
        for kind in ("Deployment", "StatefulSet"):
            for w in api.get(api.path("apps/v1", kind, self.ns))["items"]:
                want = w["spec"].get("replicas", 1)
                with self.lock:
                    mine = [p for p in self.pods.values() if p.owner["metadata"]["name"] == w["metadata"]["name"] and not p.terminating]
                # An operator stands by unready unless it is the leader:
                # one Ready replica is enough for an operator Deployment.
                need = 1 if w["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator" else want
                if len(mine) != want or sum(p.ready for p in mine) < need:
                    return False
        return True

    # -- main
    def run(self):
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        for f in ("up.env", "failed"):
            (self.state / f).unlink(missing_ok=True)
        (self.state / "runner.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        t0 = time.time()
        up_written = False
        try:
            self.start_apiserver()
            self.start_simulator()
            docs = self.render(self.start_s3() if self.args.s3_server else ())
            self.create_objects(docs)
            self.forwarders = Forwarders(self, self.args.service_proxy)
            self.sync_services()
            proxy_svc = f"{self.args.release}-proxy" if "smsgw" in self.args.release else f"{self.args.release}-smsgw-proxy"
            while not self.stop_event.is_set():
                try:
                    self.sync_services()
                    self.reconcile()
                except (ApiError, OSError) as e:
                    log("reconcile:", e)
                if not up_written and self.all_ready():
                    svc = self.api.get(self.api.path("v1", "Service", self.ns, proxy_svc))
                    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
                    ip = self.svc_ips[proxy_svc]
                    lines = [
                        f"KUBECONFIG={self.kubeconfig}",
                        f"NAMESPACE={self.ns}",
                        f"REST={ip}:{ports['http']}",
                        f"GRPC={ip}:{ports['grpc']}",
                        f"SMSC={self.smsc}",
                    ]
                    if self.smsc_admin:
                        lines.append(f"SMSC_STATS=http://{self.smsc_admin}/stats")
                    if self.args.s3_server:
                        # Shell-sourceable (cluster.sh sources up.env).
                        lines += [f"S3=http://{self.s3}", "S3_BUCKET=smsgw", f"S3_ROOT={self.state / 's3'}"]
                    (self.state / "up.env").write_text("\n".join(lines) + "\n")
                    log(f"every pod Ready after {time.time() - t0:.1f} s")
                    up_written = True
                self.stop_event.wait(0.3)
        except Fatal as e:
            self.fail(str(e))
        except Exception as e:  # noqa: BLE001
            self.fail(f"{type(e).__name__}: {e}")
        finally:
            self.shutdown()
        if self.failed:
            (self.state / "failed").write_text(self.failed + "\n")
            return 1
        return 0

    def shutdown(self):
        log("stopping")
        with self.lock:
            pods = list(self.pods.values())
        threads = [threading.Thread(target=p.stop, kwargs={"grace": 10}) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if hasattr(self, "forwarders"):
            self.forwarders.close()
        for p in reversed(self.extra_procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            self.untrack_pid(p.pid)
        self.write_pods()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run in the foreground until SIGTERM")
    r.add_argument("--state", required=True, help="state directory (logs, kubeconfig, pods.json, up.env)")
    r.add_argument("--net", default="127.80.0", help="first three octets of the loopback /24 used (default 127.80.0)")
    r.add_argument("--namespace", default="smsgw")
    r.add_argument("--release", default="smsgw")
    r.add_argument("--proxies", type=int, help="proxy.replicas")
    r.add_argument("--values", action="append", help="values file for helm template (repeatable)")
    r.add_argument("--set", action="append", help="helm --set (repeatable)")
    r.add_argument("--smsgw", required=True, help="the built smsgw binary")
    r.add_argument("--operator", required=True, help="the built smsgw-operator binary")
    r.add_argument("--helm", required=True)
    r.add_argument("--smsc-port", type=int, default=2775, help="simulator SMPP port (its /stats on the next port)")
    r.add_argument("--receipt-delay", default="50ms")
    r.add_argument("--s3-server", help="the s3-server example binary: run it and point the journal at it")
    r.add_argument("--service-proxy", required=True, help="the service-proxy example binary (the Services)")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", a.net):
        ap.error("--net must be three octets in 127.0.0.0/8, like 127.80.0")
    return Box(a).run()


if __name__ == "__main__":
    sys.exit(main())
