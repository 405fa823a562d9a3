#!/usr/bin/env python3
"""Tests of the Kubernetes API stand-in (tests/cluster/apiserver.py):
each class starts the real server as a process on an ephemeral loopback
port and talks HTTP to it; KubectlTest drives it with the pinned kubectl
of scripts/k8s-tools.sh. Run: python3 -m unittest tests/cluster/test_apiserver.py
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER = os.path.join(ROOT, "tests", "cluster", "apiserver.py")
CRDS = os.path.join(ROOT, "charts", "smsgw", "crds")
G = "/apis/smsgw.io/v1alpha1/namespaces/smsgw"


def k8s_tools():
    """The pinned helm, kubectl, PyYAML and cel-python (installed once)."""
    return subprocess.run([os.path.join(ROOT, "scripts", "k8s-tools.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


sys.path.insert(0, os.path.join(k8s_tools(), "py"))
import yaml  # noqa: E402


class Server:
    """The stand-in as a child process."""

    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="apiserver-test-")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        env = dict(os.environ, SMSGW_K8S_TOOLS_DIR=k8s_tools())
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--listen", "127.0.0.1:0", "--crds", CRDS,
             "--kubeconfig-out", self.kubeconfig, *extra],
            stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith("READY http://"), f"no READY line: {line!r}"
        self.url = line.split()[1]
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return code

    def req(self, method, path, body=None, ctype="application/json", headers=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        h = {"Content-Type": ctype, "Authorization": "Bearer anything"}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, json.loads(raw) if raw else None

    def ok(self, method, path, body=None, ctype="application/json", want=(200, 201)):
        code, out = self.req(method, path, body, ctype)
        assert code in want, f"{method} {path}: {code} {out}"
        return out

    def watch(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200, r.status
        return c, r


def link(name, **spec):
    s = {"host": "smsc", "port": 2775, "systemId": "sys", "password": "pw", "sessions": 1}
    s.update(spec)
    return {"apiVersion": "smsgw.io/v1alpha1", "kind": "SmppLink", "metadata": {"name": name}, "spec": s}


def cm(name, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


class ApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--bookmark-seconds", "0.2", "--history", "40")

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0

    def test_discovery_lists_crds_with_subresources(self):
        groups = self.s.ok("GET", "/apis")
        self.assertIn("smsgw.io", [g["name"] for g in groups["groups"]])
        res = {r["name"]: r for r in self.s.ok("GET", "/apis/smsgw.io/v1alpha1")["resources"]}
        self.assertEqual(res["smpplinks"]["kind"], "SmppLink")
        self.assertIn("smppl", res["smpplinks"]["shortNames"])
        self.assertTrue(res["smpplinks"]["namespaced"])
        self.assertIn("watch", res["smpplinks"]["verbs"])
        self.assertEqual(res["smpplinks/status"]["verbs"], ["get", "patch", "update"])
        self.assertEqual(res["smpplinks/scale"]["kind"], "Scale")
        core = {r["name"] for r in self.s.ok("GET", "/api/v1")["resources"]}
        self.assertTrue({"secrets", "configmaps", "pods", "services", "serviceaccounts/token"} <= core)
        leases = self.s.ok("GET", "/apis/coordination.k8s.io/v1")["resources"]
        self.assertEqual(leases[0]["name"], "leases")
        doc = self.s.ok("GET", "/openapi/v3/apis/smsgw.io/v1alpha1")
        self.assertIn("io.smsgw.v1alpha1.SmppLink", doc["components"]["schemas"])

    def test_crud_conflicts_and_not_found(self):
        p = "/api/v1/namespaces/smsgw/configmaps"
        created = self.s.ok("POST", p, cm("crud"), want=(201,))
        meta = created["metadata"]
        self.assertTrue(meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0)
        code, st = self.s.req("POST", p, cm("crud"))
        self.assertEqual((code, st["reason"]), (409, "AlreadyExists"))
        self.assertEqual(st["message"], 'configmaps "crud" already exists')
        upd = dict(created, data={"k": "w"})
        new = self.s.ok("PUT", f"{p}/crud", upd)
        self.assertGreater(int(new["metadata"]["resourceVersion"]), int(meta["resourceVersion"]))
        self.assertEqual(new["metadata"]["uid"], meta["uid"])
        code, st = self.s.req("PUT", f"{p}/crud", upd)  # still the old resourceVersion
        self.assertEqual((code, st["kind"], st["reason"]), (409, "Status", "Conflict"))
        self.assertIn("the object has been modified", st["message"])
        lst = self.s.ok("GET", p)
        self.assertEqual(lst["kind"], "ConfigMapList")
        self.assertGreaterEqual(int(lst["metadata"]["resourceVersion"]), int(new["metadata"]["resourceVersion"]))
        self.s.ok("DELETE", f"{p}/crud")
        code, st = self.s.req("GET", f"{p}/crud")
        self.assertEqual((code, st["kind"], st["reason"], st["message"]),
                         (404, "Status", "NotFound", 'configmaps "crud" not found'))
        code, st = self.s.req("POST", "/api/v1/namespaces/nowhere/configmaps", cm("x"))
        self.assertEqual((code, st["message"]), (404, 'namespaces "nowhere" not found'))

    def test_selectors(self):
        p = "/api/v1/namespaces/default/configmaps"
        for name, labels in (("sel-a", {"app": "a", "tier": "web"}), ("sel-b", {"app": "b", "tier": "db"}),
                             ("sel-c", {"app": "c"})):
            self.s.ok("POST", p, cm(name, labels))

        def names(query):
            out = self.s.ok("GET", f"{p}?{urllib.parse.urlencode(query)}")
            return [o["metadata"]["name"] for o in out["items"]]
        self.assertEqual(names({"labelSelector": "app=a"}), ["sel-a"])
        self.assertEqual(names({"labelSelector": "app==b"}), ["sel-b"])
        self.assertEqual(names({"labelSelector": "app!=a"}), ["sel-b", "sel-c"])
        self.assertEqual(names({"labelSelector": "app in (a, c)"}), ["sel-a", "sel-c"])
        self.assertEqual(names({"labelSelector": "app notin (a,c)"}), ["sel-b"])
        self.assertEqual(names({"labelSelector": "tier"}), ["sel-a", "sel-b"])
        self.assertEqual(names({"labelSelector": "!tier"}), ["sel-c"])
        self.assertEqual(names({"labelSelector": "tier,app in (b,c)"}), ["sel-b"])
        self.assertEqual(names({"fieldSelector": "metadata.name=sel-c"}), ["sel-c"])
        self.assertEqual(names({"fieldSelector": "metadata.name!=sel-c,metadata.namespace=default"}),
                         ["sel-a", "sel-b"])
        everywhere = self.s.ok("GET", "/api/v1/configmaps?labelSelector=app")
        self.assertEqual({o["metadata"]["namespace"] for o in everywhere["items"]}, {"default"})
        code, _ = self.s.req("GET", f"{p}?labelSelector=" + urllib.parse.quote("a in b"))
        self.assertEqual(code, 400)

    def test_watch_from_resource_version_with_bookmarks(self):
        p = "/api/v1/namespaces/smsgw/configmaps"
        first = self.s.ok("POST", p, cm("w-1", {"w": "yes"}))
        rv = first["metadata"]["resourceVersion"]
        self.s.ok("POST", p, cm("w-2", {"w": "yes"}))
        self.s.ok("POST", p, cm("w-other", {"w": "no"}))
        c, r = self.s.watch(f"{p}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=w%3Dyes"
                            f"&timeoutSeconds=5")
        ev = json.loads(r.readline())
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w-2"))
        self.s.ok("PATCH", f"{p}/w-1", {"data": {"k": "changed"}}, "application/merge-patch+json")
        ev = json.loads(r.readline())
        self.assertEqual((ev["type"], ev["object"]["data"]), ("MODIFIED", {"k": "changed"}))
        # leaving the selector is a DELETED for this watch
        self.s.ok("PATCH", f"{p}/w-2", {"metadata": {"labels": {"w": "no"}}}, "application/merge-patch+json")
        ev = json.loads(r.readline())
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "w-2"))
        ev = json.loads(r.readline())
        self.assertEqual(ev["type"], "BOOKMARK")
        bm = int(ev["object"]["metadata"]["resourceVersion"])
        self.assertGreaterEqual(bm, int(rv) + 3)
        self.s.ok("DELETE", f"{p}/w-1")
        ev = json.loads(r.readline())
        while ev["type"] == "BOOKMARK":
            ev = json.loads(r.readline())
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "w-1"))
        self.assertGreater(int(ev["object"]["metadata"]["resourceVersion"]), bm)
        c.close()

    def test_watch_without_version_lists_first_and_ends_at_timeout(self):
        p = "/api/v1/namespaces/smsgw/secrets"
        self.s.ok("POST", p, {"metadata": {"name": "wi-1"}, "stringData": {"a": "b"}})
        t = time.monotonic()
        c, r = self.s.watch(f"{p}?watch=true&timeoutSeconds=1")
        events = [json.loads(line) for line in r]
        self.assertLess(time.monotonic() - t, 3)
        self.assertIn(("ADDED", "wi-1"), [(e["type"], e["object"]["metadata"]["name"]) for e in events])
        c.close()

    def test_watch_too_old_is_410(self):
        p = "/api/v1/namespaces/default/configmaps"
        old = self.s.ok("POST", p, cm("old-0"))["metadata"]["resourceVersion"]
        for i in range(100):
            self.s.ok("POST", p, cm(f"old-{i + 1}"))
        c, r = self.s.watch(f"{p}?watch=true&resourceVersion={old}")
        ev = json.loads(r.readline())
        self.assertEqual(ev["type"], "ERROR")
        self.assertEqual((ev["object"]["code"], ev["object"]["reason"]), (410, "Expired"))
        self.assertIn("too old resource version", ev["object"]["message"])
        c.close()

    def test_patches(self):
        p = "/api/v1/namespaces/smsgw/configmaps"
        self.s.ok("POST", p, cm("pa", {"a": "1"}, {"x": "1", "y": "2"}))
        out = self.s.ok("PATCH", f"{p}/pa", {"data": {"x": None, "z": "3"}}, "application/merge-patch+json")
        self.assertEqual(out["data"], {"y": "2", "z": "3"})
        out = self.s.ok("PATCH", f"{p}/pa", [{"op": "replace", "path": "/data/y", "value": "20"},
                                              {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                                              {"op": "remove", "path": "/data/z"}], "application/json-patch+json")
        self.assertEqual((out["data"], out["metadata"]["labels"]), ({"y": "20"}, {"a": "1", "b": "2"}))
        code, _ = self.s.req("PATCH", f"{p}/pa", [{"op": "test", "path": "/data/y", "value": "no"}],
                             "application/json-patch+json")
        self.assertEqual(code, 422)
        # server-side apply: creates when missing, merges when present
        apply = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  one: '1'\n"
        code, out = self.s.req("PATCH", f"{p}/ssa?fieldManager=test&force=true", apply,
                               "application/apply-patch+yaml")
        self.assertEqual((code, out["data"]), (201, {"one": "1"}))
        out = self.s.ok("PATCH", f"{p}/ssa?fieldManager=test", apply.replace("one: '1'", "two: '2'"),
                        "application/apply-patch+yaml")
        self.assertEqual(out["data"], {"one": "1", "two": "2"})
        # a stale resourceVersion in a patch is a conflict
        code, st = self.s.req("PATCH", f"{p}/ssa", {"metadata": {"resourceVersion": "1"}},
                              "application/merge-patch+json")
        self.assertEqual((code, st["reason"]), (409, "Conflict"))
        code, _ = self.s.req("PATCH", f"{p}/ssa", {"data": {}}, "text/plain")
        self.assertEqual(code, 415)
        code, _ = self.s.req("PATCH", f"{p}/missing", {"data": {}}, "application/merge-patch+json")
        self.assertEqual(code, 404)

    def test_strategic_merge_merges_named_lists(self):
        p = "/apis/apps/v1/namespaces/smsgw/deployments"
        dep = {"metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
               "template": {"spec": {"containers": [{"name": "one", "image": "i1"}, {"name": "two", "image": "i2"}]}}}}
        self.s.ok("POST", p, dep)
        out = self.s.ok("PATCH", f"{p}/d", {"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "one"}, {"name": "two"}],
            "containers": [{"name": "two", "image": "i2b"}]}}}}, "application/strategic-merge-patch+json")
        self.assertEqual(out["spec"]["template"]["spec"]["containers"],
                         [{"name": "one", "image": "i1"}, {"name": "two", "image": "i2b"}])
        scale = self.s.ok("PATCH", f"{p}/d/scale", {"spec": {"replicas": 3}}, "application/merge-patch+json")
        self.assertEqual((scale["kind"], scale["spec"]["replicas"], scale["status"]["selector"]), ("Scale", 3, "a=b"))
        self.assertEqual(self.s.ok("GET", f"{p}/d")["spec"]["replicas"], 3)

    def test_status_is_kept_apart_and_generation(self):
        p = f"{G}/smpplinks"
        body = link("st")
        body["status"] = {"boundSessions": 7}
        created = self.s.ok("POST", p, body)
        self.assertNotIn("status", created)  # dropped on create
        self.assertEqual(created["metadata"]["generation"], 1)
        out = self.s.ok("PATCH", f"{p}/st/status", {"status": {"boundSessions": 1}, "spec": {"port": 1}},
                        "application/merge-patch+json")
        self.assertEqual((out["status"]["boundSessions"], out["spec"]["port"]), (1, 2775))
        self.assertEqual(out["metadata"]["generation"], 1)
        upd = dict(out, spec=dict(out["spec"], port=2776), status={"boundSessions": 99})
        out = self.s.ok("PUT", f"{p}/st", upd)
        self.assertEqual((out["status"]["boundSessions"], out["spec"]["port"]), (1, 2776))
        self.assertEqual(out["metadata"]["generation"], 2)
        # a write that changes nothing keeps the resourceVersion
        again = self.s.ok("PATCH", f"{p}/st", {"spec": {"port": 2776}}, "application/merge-patch+json")
        self.assertEqual(again["metadata"]["resourceVersion"], out["metadata"]["resourceVersion"])
        code, _ = self.s.req("GET", "/api/v1/namespaces/smsgw/configmaps/x/status")
        self.assertEqual(code, 404)

    def test_scale_subresource_of_a_crd(self):
        p = f"{G}/smpplinks"
        self.s.ok("POST", p, link("sc", sessions=2))
        self.s.ok("PATCH", f"{p}/sc/status", {"status": {"boundSessions": 2}}, "application/merge-patch+json")
        sc = self.s.ok("GET", f"{p}/sc/scale")
        self.assertEqual((sc["kind"], sc["apiVersion"], sc["spec"], sc["status"]["replicas"]),
                         ("Scale", "autoscaling/v1", {"replicas": 2}, 2))
        sc["spec"]["replicas"] = 4
        out = self.s.ok("PUT", f"{p}/sc/scale", sc)
        self.assertEqual(out["spec"]["replicas"], 4)
        code, st = self.s.req("PUT", f"{p}/sc/scale", sc)  # stale resourceVersion
        self.assertEqual(code, 409)
        self.s.ok("PATCH", f"{p}/sc/scale", {"spec": {"replicas": 5}}, "application/merge-patch+json")
        obj = self.s.ok("GET", f"{p}/sc")
        self.assertEqual((obj["spec"]["sessions"], obj["metadata"]["generation"]), (5, 3))
        # the schema still applies through /scale
        code, st = self.s.req("PATCH", f"{p}/sc/scale", {"spec": {"replicas": -1}}, "application/merge-patch+json")
        self.assertEqual(code, 422, st)
        self.assertIn("spec.sessions", st["message"])

    def test_cel_rules_refuse_with_the_crds_message(self):
        code, st = self.s.req("POST", f"{G}/smpplinks", link("cel", passwordSecretRef={"name": "s", "key": "k"}))
        self.assertEqual((code, st["reason"]), (422, "Invalid"))
        self.assertEqual(st["message"], 'SmppLink.smsgw.io "cel" is invalid: spec.password: Invalid value: '
                                        '"object": set either password or passwordSecretRef, not both')
        self.assertEqual(st["details"]["causes"][0]["field"], "spec.password")
        code, st = self.s.req("POST", f"{G}/smpplinks", link("cel2", burst=5))
        self.assertEqual(code, 422)
        self.assertIn('spec.burst: Invalid value: "object": burst needs rate', st["message"])
        user = {"apiVersion": "smsgw.io/v1alpha1", "kind": "User", "metadata": {"name": "u"},
                "spec": {"email": "not-an-email", "appName": "a"}}
        code, st = self.s.req("POST", f"{G}/users", user)
        self.assertEqual(code, 422, st)
        self.assertIn('spec.email: Invalid value: "string": must be an email address', st["message"])
        pool = {"apiVersion": "smsgw.io/v1alpha1", "kind": "EsmePool", "metadata": {"name": "p"},
                "spec": {"members": [{"link": "a"}, {"link": "a"}]}}
        code, st = self.s.req("POST", f"{G}/esmepools", pool)
        self.assertEqual(code, 422, st)
        self.assertIn("a link is listed twice in members", st["message"])
        pool["spec"]["members"] = [{"link": "a"}]
        self.s.ok("POST", f"{G}/esmepools", pool)
        # an update is checked too
        code, st = self.s.req("PATCH", f"{G}/esmepools/p", {"spec": {"members": [{"link": "b"}, {"link": "b"}]}},
                              "application/merge-patch+json")
        self.assertEqual(code, 422)

    def test_schema_refusal_pruning_and_defaults(self):
        code, st = self.s.req("POST", f"{G}/smpplinks", link("sch", port="x", sessions=0))
        self.assertEqual(code, 422)
        self.assertIn('spec.port: Invalid value: "string": spec.port in body must be of type integer', st["message"])
        self.assertIn("spec.sessions: Invalid value: 0: spec.sessions in body should be greater than or equal to 1",
                      st["message"])
        bad = link("sch2", bindMode="sideways")
        del bad["spec"]["host"]
        code, st = self.s.req("POST", f"{G}/smpplinks", bad)
        self.assertEqual(code, 422)
        self.assertIn('spec.bindMode: Unsupported value: "sideways"', st["message"])
        self.assertIn("spec.host: Required value", st["message"])
        out = self.s.ok("POST", f"{G}/smpplinks", link("sch3", bogus=1))
        self.assertNotIn("bogus", out["spec"])
        self.assertEqual(out["spec"]["bindMode"], "transceiver")  # the schema's default
        code, st = self.s.req("POST", f"{G}/smpplinks?fieldValidation=Strict", link("sch4", bogus=1))
        self.assertEqual(code, 400)
        self.assertIn('unknown field "spec.bogus"', st["message"])

    def test_secret_string_data_is_stored_as_data(self):
        p = "/api/v1/namespaces/smsgw/secrets"
        out = self.s.ok("POST", p, {"metadata": {"name": "sd"}, "data": {"a": "eA=="}, "stringData": {"b": "pw"}})
        self.assertEqual((out["data"], out.get("stringData")), ({"a": "eA==", "b": "cHc="}, None))
        out = self.s.ok("PATCH", f"{p}/sd", {"stringData": {"a": "new"}}, "application/merge-patch+json")
        self.assertEqual(out["data"], {"a": "bmV3", "b": "cHc="})

    def test_names_are_checked(self):
        code, st = self.s.req("POST", "/api/v1/namespaces/smsgw/configmaps", cm("Bad_Name"))
        self.assertEqual(code, 422)
        self.assertIn('metadata.name: Invalid value: "Bad_Name"', st["message"])
        self.s.ok("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "system:x"}})
        made = self.s.ok("POST", "/api/v1/namespaces/smsgw/configmaps", {"metadata": {"generateName": "gen-"}})
        self.assertRegex(made["metadata"]["name"], r"^gen-[a-z0-9]{5}$")

    def test_finalizers_delay_deletion(self):
        p = "/api/v1/namespaces/smsgw/configmaps"
        c = cm("fin")
        c["metadata"]["finalizers"] = ["smsgw.io/test"]
        self.s.ok("POST", p, c)
        out = self.s.ok("DELETE", f"{p}/fin")
        self.assertIn("deletionTimestamp", out["metadata"])
        self.assertEqual(self.s.req("GET", f"{p}/fin")[0], 200)
        self.s.ok("PATCH", f"{p}/fin", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
        self.assertEqual(self.s.req("GET", f"{p}/fin")[0], 404)

    def test_cluster_scoped_and_crd_through_the_api(self):
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "widgets.example.com"},
               "spec": {"group": "example.com", "scope": "Cluster",
                        "names": {"plural": "widgets", "kind": "Widget", "singular": "widget"},
                        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                            "type": "object", "properties": {"spec": {
                                "type": "object", "properties": {"size": {"type": "integer"}},
                                "x-kubernetes-validations": [{"rule": "self.size < oldSelf.size",
                                                              "message": "size only shrinks"}]}}}}}]}}
        self.s.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        w = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 5}}
        self.s.ok("POST", "/apis/example.com/v1/widgets", w)
        self.s.ok("PATCH", "/apis/example.com/v1/widgets/w", {"spec": {"size": 3}}, "application/merge-patch+json")
        code, st = self.s.req("PATCH", "/apis/example.com/v1/widgets/w", {"spec": {"size": 4}},
                              "application/merge-patch+json")
        self.assertEqual(code, 422)
        self.assertIn('Widget.example.com "w" is invalid: spec: Invalid value: "object": size only shrinks',
                      st["message"])
        self.s.ok("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        self.assertEqual(self.s.req("GET", "/apis/example.com/v1/widgets")[0], 404)

    def test_token_request_and_review(self):
        self.s.ok("POST", "/api/v1/namespaces/smsgw/serviceaccounts", {"metadata": {"name": "proxy"}})
        tr = self.s.ok("POST", "/api/v1/namespaces/smsgw/serviceaccounts/proxy/token",
                       {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"audiences": ["smsgw-operator"], "expirationSeconds": 600}})
        tok = tr["status"]["token"]
        self.assertTrue(tok and tr["status"]["expirationTimestamp"])

        def review(token, aud):
            return self.s.ok("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "spec": {"token": token, "audiences": aud}})["status"]
        ok = review(tok, ["smsgw-operator"])
        self.assertTrue(ok["authenticated"])
        self.assertEqual(ok["user"]["username"], "system:serviceaccount:smsgw:proxy")
        self.assertIn("system:serviceaccounts:smsgw", ok["user"]["groups"])
        self.assertEqual(ok["audiences"], ["smsgw-operator"])
        self.assertFalse(review(tok, ["someone-else"])["authenticated"])
        self.assertFalse(review("made-up", ["smsgw-operator"])["authenticated"])
        code, _ = self.s.req("POST", "/api/v1/namespaces/smsgw/serviceaccounts/ghost/token", {"spec": {}})
        self.assertEqual(code, 404)
        self.s.ok("DELETE", "/api/v1/namespaces/smsgw/serviceaccounts/proxy")
        self.assertFalse(review(tok, ["smsgw-operator"])["authenticated"])  # bound to the account

    def test_a_pod_bound_token_names_its_pod_and_dies_with_it(self):
        self.s.ok("POST", "/api/v1/namespaces/smsgw/serviceaccounts", {"metadata": {"name": "bound"}})
        pod = self.s.ok("POST", "/api/v1/namespaces/smsgw/pods",
                        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}})
        tr = self.s.ok("POST", "/api/v1/namespaces/smsgw/serviceaccounts/bound/token",
                       {"spec": {"audiences": ["smsgw-config"], "boundObjectRef": {
                           "apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": pod["metadata"]["uid"]}}})
        tok = tr["status"]["token"]

        def review():
            return self.s.ok("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                             {"spec": {"token": tok, "audiences": ["smsgw-config"]}})["status"]
        ok = review()
        self.assertTrue(ok["authenticated"])
        self.assertEqual(ok["user"]["extra"]["authentication.kubernetes.io/pod-name"], ["p1"])
        self.s.ok("DELETE", "/api/v1/namespaces/smsgw/pods/p1")
        self.assertFalse(review()["authenticated"])

    def test_leases_create_and_guarded_replace(self):
        p = "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases"
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                 "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
        got = self.s.ok("POST", p, lease)
        mine = dict(got, spec=dict(got["spec"], holderIdentity="b"))
        theirs = dict(got, spec=dict(got["spec"], holderIdentity="c"))
        self.s.ok("PUT", f"{p}/l", mine)
        self.assertEqual(self.s.req("PUT", f"{p}/l", theirs)[0], 409)
        self.assertEqual(self.s.ok("GET", f"{p}/l")["spec"]["holderIdentity"], "b")


class StopTest(unittest.TestCase):
    def test_sigterm_ends_open_watches_and_exits_0(self):
        s = Server()
        c, r = s.watch("/api/v1/namespaces/smsgw/configmaps?watch=true&resourceVersion=1")
        t = time.monotonic()
        self.assertEqual(s.stop(), 0)
        self.assertLess(time.monotonic() - t, 3)
        self.assertEqual(r.read(), b"")  # the stream ended cleanly
        c.close()


class KubectlTest(unittest.TestCase):
    """Real kubectl (scripts/k8s-tools.sh) against the stand-in."""

    @classmethod
    def setUpClass(cls):
        cls.tools = k8s_tools()
        cls.s = Server("--namespace", "smsgw")
        cls.env = dict(os.environ, KUBECONFIG=cls.s.kubeconfig, KUBECACHEDIR=os.path.join(cls.s.dir, "cache"))

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0

    def kubectl(self, *args, ok=True):
        r = subprocess.run([os.path.join(self.tools, "bin", "kubectl"), *args], env=self.env,
                           capture_output=True, text=True, timeout=60)
        if ok:
            self.assertEqual(r.returncode, 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def test_apply_get_scale_explain_and_refusal(self):
        examples = os.path.join(ROOT, "examples", "cluster")
        out = self.kubectl("apply", "-f", examples).stdout
        self.assertIn("smpplink.smsgw.io/sim created", out)
        self.assertIn("unchanged", self.kubectl("apply", "-f", examples).stdout)
        out = self.kubectl("get", "smppl").stdout
        self.assertRegex(out, r"NAME\s+HOST\s+PORT\s+SESSIONS")
        with open(os.path.join(examples, "10-links.yaml")) as f:
            sim = next(d for d in yaml.safe_load_all(f) if d and d["metadata"]["name"] == "sim")["spec"]
        self.assertRegex(out, rf"sim\s+{re.escape(sim['host'])}\s+{sim['port']}\s+{sim['sessions']}\s")
        self.assertIn("scaled", self.kubectl("scale", "smppl", "sim", "--replicas", "3").stdout)
        got = self.kubectl("get", "smppl", "sim", "-o", "json").stdout
        self.assertEqual(json.loads(got)["spec"]["sessions"], 3)
        out = self.kubectl("explain", "smppl.spec").stdout
        self.assertIn("KIND:       SmppLink", out)
        self.assertIn("sessions", out)
        bad = os.path.join(self.s.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("apiVersion: smsgw.io/v1alpha1\nkind: SmppLink\nmetadata:\n  name: bad\nspec:\n"
                    "  host: h\n  port: 2775\n  systemId: s\n  sessions: 1\n  burst: 3\n")
        r = self.kubectl("apply", "-f", bad, ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('The SmppLink "bad" is invalid: spec.burst: Invalid value: "object": burst needs rate',
                      r.stderr)
        r = self.kubectl("apply", "--server-side", "-f", bad, ok=False)
        self.assertIn("burst needs rate", r.stderr)
        self.kubectl("patch", "smppl", "sim", "--type", "merge", "-p", '{"spec":{"window":16}}')
        self.kubectl("delete", "smppl", "sim", "--wait=true", "--timeout=20s")
        self.assertIn("NotFound", self.kubectl("get", "smppl", "sim", ok=False).stderr)

    def test_the_rendered_chart_is_creatable(self):
        helm = os.path.join(self.tools, "bin", "helm")
        rendered = subprocess.run([helm, "template", "smsgw", os.path.join(ROOT, "charts", "smsgw"),
                                   "--namespace", "chart"], capture_output=True, text=True, check=True).stdout
        path = os.path.join(self.s.dir, "chart.yaml")
        with open(path, "w") as f:
            f.write(rendered)
        ns = os.path.join(self.s.dir, "ns.yaml")
        with open(ns, "w") as f:
            f.write("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: chart\n")
        self.kubectl("apply", "-f", ns)
        out = self.kubectl("apply", "-n", "chart", "-f", path).stdout
        self.assertIn("deployment.apps/smsgw-proxy created", out)
        again = self.kubectl("apply", "-n", "chart", "-f", path).stdout
        self.assertIn("deployment.apps/smsgw-operator unchanged", again)
        self.assertNotIn("created", again)
        docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
        live = json.loads(self.kubectl("get", "-n", "chart", "deployment", "smsgw-proxy", "-o", "json").stdout)
        self.assertEqual(live["spec"]["template"]["spec"]["containers"],
                         docs[("Deployment", "smsgw-proxy")]["spec"]["template"]["spec"]["containers"])
        self.kubectl("scale", "-n", "chart", "deployment/smsgw-proxy", "--replicas", "5")
        got = json.loads(self.kubectl("get", "-n", "chart", "deployment", "smsgw-proxy", "-o", "json").stdout)
        self.assertEqual(got["spec"]["replicas"], 5)
        self.kubectl("rollout", "restart", "-n", "chart", "deployment/smsgw-proxy")
        after = json.loads(self.kubectl("get", "-n", "chart", "deployment", "smsgw-proxy", "-o", "json").stdout)
        self.assertIn("kubectl.kubernetes.io/restartedAt", after["spec"]["template"]["metadata"]["annotations"])
        self.assertEqual(after["metadata"]["generation"], got["metadata"]["generation"] + 1)
        self.assertEqual(after["spec"]["template"]["spec"]["containers"], got["spec"]["template"]["spec"]["containers"])

    def test_protobuf_clients_helm_install_and_create_token(self):
        """helm keeps releases in Secrets and `kubectl create ...` sends
        protobuf: both work against the stand-in."""
        env = dict(self.env, **{k: os.path.join(self.s.dir, k) for k in (
            "HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
        helm = [os.path.join(self.tools, "bin", "helm"), "-n", "proto"]
        chart = os.path.join(ROOT, "charts", "smsgw")
        self.kubectl("create", "namespace", "proto")
        r = subprocess.run(helm + ["install", "smsgw", chart], env=env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        release = json.loads(self.kubectl("get", "-n", "proto", "secret", "sh.helm.release.v1.smsgw.v1",
                                          "-o", "json").stdout)
        self.assertEqual((release["type"], release["metadata"]["labels"]["owner"]), ("helm.sh/release.v1", "helm"))
        self.assertIn("release", release["data"])
        self.kubectl("get", "-n", "proto", "deployment", "smsgw-proxy")
        r = subprocess.run(helm + ["upgrade", "smsgw", chart], env=env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.kubectl("get", "-n", "proto", "secret", "sh.helm.release.v1.smsgw.v2")
        r = subprocess.run(helm + ["uninstall", "smsgw"], env=env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("NotFound", self.kubectl("get", "-n", "proto", "deployment", "smsgw-proxy", ok=False).stderr)

        token = self.kubectl("create", "token", "default", "-n", "proto", "--audience", "smsgw",
                             "--duration", "10m").stdout.strip()
        review = self.s.ok("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                           {"spec": {"token": token, "audiences": ["smsgw"]}})["status"]
        self.assertEqual((review["authenticated"], review["user"]["username"]),
                         (True, "system:serviceaccount:proto:default"))
        self.kubectl("create", "secret", "generic", "-n", "proto", "pb", "--from-literal=a=b")
        self.kubectl("create", "configmap", "-n", "proto", "pb", "--from-literal=x=y")
        got = json.loads(self.kubectl("get", "-n", "proto", "secret", "pb", "-o", "json").stdout)
        self.assertEqual(got["data"], {"a": "Yg=="})
        got = json.loads(self.kubectl("get", "-n", "proto", "configmap", "pb", "-o", "json").stdout)
        self.assertEqual(got["data"], {"x": "y"})


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OperatorTest(unittest.TestCase):
    """The real smsgw-operator (built here with cargo) against the stand-in:
    kube-rs lists, watches, takes its leader Lease, writes status and
    creates Secrets."""

    @classmethod
    def setUpClass(cls):
        # SMSGW_OPERATOR_BIN: a binary built already (test-all.sh builds the
        # workspace once and passes it, so this does not build again).
        cls.exe = os.environ.get("SMSGW_OPERATOR_BIN")
        if not cls.exe:
            build = subprocess.run(["cargo", "build", "-q", "-p", "smsgw-operator", "--bin", "smsgw-operator",
                                    "--message-format=json"], cwd=ROOT, capture_output=True, text=True)
            assert build.returncode == 0, build.stderr
            exe = [json.loads(line).get("executable") for line in build.stdout.splitlines() if line.startswith("{")]
            cls.exe = [e for e in exe if e and e.endswith("smsgw-operator")][-1]
        cls.s = Server("--bookmark-seconds", "1")
        with open(os.path.join(ROOT, "examples", "cluster", "00-secrets.yaml")) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    cls.s.ok("POST", "/api/v1/namespaces/smsgw/secrets", d)
        for name, plural in (("10-links", "smpplinks"), ("20-pools", "esmepools"), ("30-users", "users"),
                             ("40-policies", "contactpolicies"), ("50-routes", "routes")):
            with open(os.path.join(ROOT, "examples", "cluster", f"{name}.yaml")) as f:
                for d in yaml.safe_load_all(f):
                    if d:
                        cls.s.ok("POST", f"{G}/{plural}", d)
        cls.metrics = free_port()
        env = dict(os.environ, KUBECONFIG=cls.s.kubeconfig, RUST_LOG="info")
        cls.log = open(os.path.join(cls.s.dir, "operator.log"), "w+")
        cls.op = subprocess.Popen([cls.exe, "--namespace", "smsgw", "--pod-name", "op-0",
                                   "--grpc-addr", f"127.0.0.1:{free_port()}",
                                   "--metrics-addr", f"127.0.0.1:{cls.metrics}"],
                                  env=env, stdout=cls.log, stderr=subprocess.STDOUT, text=True)

    @classmethod
    def tearDownClass(cls):
        cls.op.send_signal(signal.SIGINT)
        try:
            cls.op.wait(10)
        finally:
            if cls.op.poll() is None:
                cls.op.kill()
        # nothing logged at WARN or above: every API call was answered as the operator expects
        cls.log.seek(0)
        lines = cls.log.read().splitlines()
        bad = [x for x in lines if not x.startswith("{") or json.loads(x).get("level") in ("WARN", "ERROR")]
        assert lines and not bad, "the operator logged:\n" + "\n".join(bad[-20:])
        cls.log.close()
        assert cls.s.stop() == 0

    def eventually(self, what, fn, timeout=30):
        end = time.monotonic() + timeout
        while True:
            got = fn()
            if got:
                return got
            if self.op.poll() is not None:
                self.log.seek(0)
                self.fail(f"operator exited {self.op.returncode}: {self.log.read()[-3000:]}")
            if time.monotonic() > end:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.1)

    def get(self, path):
        code, out = self.s.req("GET", path)
        return out if code == 200 else None

    def test_operator_leads_writes_status_and_follows_changes(self):
        lease = self.eventually("the leader Lease", lambda: self.get(
            "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases/smsgw-operator-leader"))
        self.assertEqual(lease["spec"]["holderIdentity"], "op-0")
        link = self.eventually("SmppLink status", lambda: (lambda o: o if o and o.get("status", {}).get(
            "conditions") else None)(self.get(f"{G}/smpplinks/sim")))
        self.assertEqual(link["status"]["observedGeneration"], 1)
        user = self.eventually("User status with its Secret", lambda: (lambda o: o if o and o.get(
            "status", {}).get("secretName") else None)(self.get(f"{G}/users/bob")))
        secret = self.get(f"/api/v1/namespaces/smsgw/secrets/{user['status']['secretName']}")
        self.assertTrue(secret and {"appId", "appSecret", "password"} <= set(secret["data"]), secret)
        # a spec change reaches the operator through its watch
        self.s.ok("PATCH", f"{G}/smpplinks/sim", {"spec": {"window": 8}}, "application/merge-patch+json")
        self.eventually("observedGeneration 2", lambda: (self.get(f"{G}/smpplinks/sim") or {}).get(
            "status", {}).get("observedGeneration") == 2)
        # the Lease is renewed (a guarded replace with its resourceVersion)
        rv = lease["metadata"]["resourceVersion"]
        self.eventually("a Lease renewal", lambda: self.get(
            "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases/smsgw-operator-leader")["metadata"][
            "resourceVersion"] != rv, timeout=15)


if __name__ == "__main__":
    unittest.main()
