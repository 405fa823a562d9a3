#!/usr/bin/env python3
"""A Kubernetes API server stand-in for the cluster in a box (issue 16).

Usage:
    python3 tests/cluster/apiserver.py --listen 127.0.0.1:0 \\
        --crds charts/smsgw/crds --kubeconfig-out PATH [--namespace smsgw]

Serves plain HTTP on loopback, writes a kubeconfig (server, a token user,
the namespace as the context's namespace) to PATH, then prints exactly one
line `READY http://host:port` to stdout; stops on SIGTERM/SIGINT.
Needs PyYAML and cel-python (`celpy`): scripts/k8s-tools.sh installs them
(pinned) into its cache directory, which this file adds to sys.path.

What it does: discovery (/api, /apis, /version, /openapi/v3 per
group-version with the CRD schemas), the built-in kinds below as plain
stored objects, CRDs (from --crds and created through the API) with
structural schema pruning/defaulting/validation and their
x-kubernetes-validations CEL rules (422 Invalid as the real server words
it), resourceVersion (one global counter), 409 on stale update and
existing names, generation, label/field selectors, watches from a
resourceVersion with bookmarks and 410 Gone past a bounded history,
merge / strategic (by `name` keys) / JSON / apply (a merge, create on
apply) patches, /status and /scale subresources, finalizers, Table output
for `kubectl get`, TokenRequest + TokenReview.

Notes for clients: as on a real server, `status` sent on create or with
the main resource is ignored for kinds with a status subresource (Pods,
Deployments, CRDs with `status`): write it through `.../status`. Bodies
are JSON (YAML for apply patches); protobuf bodies are decoded only for
the kinds Go clients send that way here (Secret, ConfigMap, Namespace,
ServiceAccount, TokenRequest, DeleteOptions: `helm install/upgrade/
uninstall`, `kubectl create token|namespace|secret|configmap`), others get
415 (use `kubectl apply -f`); answers are always JSON. Namespaces default, kube-system, kube-public and
--namespace exist at start; every namespace gets a `default`
ServiceAccount when created.

Any bearer token (or none) is accepted for API calls: there is no
authentication nor authorization (no RBAC enforcement). TokenReview only
authenticates tokens issued by TokenRequest here.

NOT enforced, compared with a real API server: RBAC/admission (webhooks,
quotas, limit ranges, Pod security), built-in kinds' schemas and defaults
(stored as sent), controllers (no Deployment -> Pod, no garbage
collection by ownerReferences, no namespace finalization beyond deleting
its objects), real server-side apply (managedFields, field ownership,
conflicts: apply is a merge), strategic merge patch beyond lists merged by
`name`, CEL messageExpression / cost limits / Kubernetes CEL libraries,
OpenAPI `format`s, CRD conversion (one served version each), watch cache
semantics for resourceVersionMatch, pagination (`limit` returns
everything), protobuf beyond the kinds above, Secret/ConfigMap
immutability and data validation, name rules per kind (DNS subdomain
for all but RBAC's path segments), immutable fields (Pod spec, selectors),
exact wording of schema (not CEL) violations, `generation` is kept on every kind; core/v1 and
events.k8s.io Events share no storage.
"""
import argparse
import base64
import copy
import datetime
import json
import os
import random
import re
import secrets
import signal
import socket
import string
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_tools = os.environ.get("SMSGW_K8S_TOOLS_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smsgw-k8s-tools")
if os.path.isdir(os.path.join(_tools, "py")):
    sys.path.insert(0, os.path.join(_tools, "py"))
import celpy  # noqa: E402  (cel-python, pinned in scripts/k8s-tools.sh)
import yaml  # noqa: E402

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there: 10x faster
HISTORY = 20000  # watch events kept (--history); older resourceVersions answer 410
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answered as a Status object."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


# ---------------------------------------------------------------- kinds

class Kind:
    """One served resource: names, scope, subresources, and for CRDs the
    schema and compiled CEL rules."""

    def __init__(self, group, version, plural, kind, namespaced, short=(), status=False,
                 scale=None, schema=None, columns=(), categories=(), singular=None, verbs=VERBS):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short, self.status, self.scale = namespaced, list(short), status, scale
        self.schema, self.columns, self.categories = schema, list(columns), list(categories)
        self.singular = singular or kind.lower()
        self.verbs = verbs
        self.crd = schema is not None
        self.rules = {}  # id(schema node) -> [(rule dict, program, uses oldSelf)]
        if self.crd:
            compile_rules(schema, self.rules)

    @property
    def gv(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self):  # as in error messages: pods, smpplinks.smsgw.io
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTIN = [
    # group, version, plural, kind, namespaced, shortNames, status subresource
    ("", "v1", "namespaces", "Namespace", False, ["ns"], True),
    ("", "v1", "secrets", "Secret", True, [], False),
    ("", "v1", "configmaps", "ConfigMap", True, ["cm"], False),
    ("", "v1", "pods", "Pod", True, ["po"], True),
    ("", "v1", "services", "Service", True, ["svc"], True),
    ("", "v1", "endpoints", "Endpoints", True, ["ep"], False),
    ("", "v1", "events", "Event", True, ["ev"], False),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], False),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], True),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, [], False),
    ("events.k8s.io", "v1", "events", "Event", True, ["ev"], False),
    ("apps", "v1", "deployments", "Deployment", True, ["deploy"], True),
    ("apps", "v1", "statefulsets", "StatefulSet", True, ["sts"], True),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, [], False),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, [], False),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, [], False),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, [], False),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"], True),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ["netpol"], False),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", True, ["ing"], True),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"], True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
     ["crd", "crds"], True),
]
WORKLOAD_SCALE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
CREATE_ON_UPDATE = {"leases", "endpoints", "events"}


def compile_rules(schema, out):
    env = celpy.Environment()

    def walk(s):
        if not isinstance(s, dict):
            return
        rules = []
        for r in s.get("x-kubernetes-validations", []):
            try:
                prog = env.program(env.compile(r["rule"]))
            except Exception as e:  # noqa: BLE001 - celpy raises several kinds
                raise ApiError(422, "Invalid", f"compilation failed for rule {r['rule']!r}: {e}")
            rules.append((r, prog, "oldSelf" in r["rule"]))
        if rules:
            out[id(s)] = rules
        for p in (s.get("properties") or {}).values():
            walk(p)
        for k in ("items", "additionalProperties"):
            walk(s.get(k))
    walk(schema)


def crd_kind(crd):
    """The Kind a CustomResourceDefinition object defines (first served version)."""
    spec, names = crd["spec"], crd["spec"]["names"]
    v = next(v for v in spec["versions"] if v.get("served", True))
    sub = v.get("subresources") or {}
    cols = v.get("additionalPrinterColumns") or []
    return Kind(spec["group"], v["name"], names["plural"], names["kind"],
                spec.get("scope", "Namespaced") == "Namespaced", names.get("shortNames", []),
                "status" in sub, sub.get("scale"), v["schema"]["openAPIV3Schema"], cols,
                names.get("categories", []), names.get("singular"))


# ---------------------------------------------------------------- schema

def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def type_ok(want, v):
    t = type_name(v)
    return t == want or (want == "number" and t == "integer")


def prune_default(s, v, path, unknown):
    """Drops fields the schema does not declare (recording them in
    `unknown`) and fills in defaults, in place, as the API server does."""
    if not isinstance(s, dict):
        return v
    if isinstance(v, dict) and s.get("type") == "object" or isinstance(v, dict) and "properties" in s:
        props = s.get("properties")
        if props is not None and not s.get("x-kubernetes-preserve-unknown-fields"):
            for k in list(v):
                if k not in props and not (path == "" and k in ("apiVersion", "kind", "metadata")):
                    unknown.append(f"{path}.{k}".lstrip("."))
                    del v[k]
        for k, ps in (props or {}).items():
            if (k not in v or (v[k] is None and not ps.get("nullable"))) and "default" in ps:
                v[k] = copy.deepcopy(ps["default"])
            if k in v:
                v[k] = prune_default(ps, v[k], f"{path}.{k}", unknown)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k in v:
                v[k] = prune_default(ap, v[k], f"{path}[{k}]", unknown)
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        for i in range(len(v)):
            v[i] = prune_default(s["items"], v[i], f"{path}[{i}]", unknown)
    return v


def fmt_value(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(type_name(v))


def validate(s, v, path, errs):
    """Structural OpenAPI validation; appends (field, message) pairs."""
    if v is None:
        if not s.get("nullable"):
            if s.get("type"):
                errs.append((path, f'Invalid value: "null": {path} in body must be of type {s["type"]}: "null"'))
        return
    t = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        if type_name(v) not in ("integer", "string"):
            errs.append((path, f"Invalid value: {fmt_value(v)}: {path} in body must be of type integer,string: "
                               f'"{type_name(v)}"'))
            return
    elif t and not type_ok(t, v):
        errs.append((path, f'Invalid value: "{type_name(v)}": {path} in body must be of type {t}: "{type_name(v)}"'))
        return
    if "enum" in s and v not in s["enum"]:
        errs.append((path, f"Unsupported value: {fmt_value(v)}: supported values: "
                           + ", ".join(fmt_value(e) for e in s["enum"])))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "maximum" in s and (v > s["maximum"] or (s.get("exclusiveMaximum") and v == s["maximum"])):
            op = "less than" if s.get("exclusiveMaximum") else "less than or equal to"
            errs.append((path, f"Invalid value: {v}: {path} in body should be {op} {s['maximum']}"))
        if "minimum" in s and (v < s["minimum"] or (s.get("exclusiveMinimum") and v == s["minimum"])):
            op = "greater than" if s.get("exclusiveMinimum") else "greater than or equal to"
            errs.append((path, f"Invalid value: {v}: {path} in body should be {op} {s['minimum']}"))
        if "multipleOf" in s and v % s["multipleOf"]:
            errs.append((path, f"Invalid value: {v}: {path} in body should be a multiple of {s['multipleOf']}"))
    if isinstance(v, str):
        if "maxLength" in s and len(v) > s["maxLength"]:
            errs.append((path, f"Too long: may not be more than {s['maxLength']} bytes"))
        if "minLength" in s and len(v) < s["minLength"]:
            errs.append((path, f"Invalid value: {fmt_value(v)}: {path} in body should be at least "
                               f"{s['minLength']} chars long"))
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append((path, f"Invalid value: {fmt_value(v)}: {path} in body should match '{s['pattern']}'"))
    if isinstance(v, list):
        if "maxItems" in s and len(v) > s["maxItems"]:
            errs.append((path, f"Too many: {len(v)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(v) < s["minItems"]:
            errs.append((path, f"Invalid value: {len(v)}: {path} in body should have at least "
                               f"{s['minItems']} items"))
        lt = s.get("x-kubernetes-list-type")
        keys = s.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for i, item in enumerate(v):
            key = json.dumps([item.get(k) for k in keys] if lt == "map" and isinstance(item, dict) else item,
                             sort_keys=True)
            if lt in ("set", "map") and key in seen:
                errs.append((f"{path}[{i}]", f"Duplicate value: {json.dumps(item, sort_keys=True)}"))
            seen.add(key)
            if isinstance(s.get("items"), dict):
                validate(s["items"], item, f"{path}[{i}]", errs)
    if isinstance(v, dict):
        for r in s.get("required", []):
            if r not in v:
                errs.append((f"{path}.{r}".lstrip("."), "Required value"))
        if "maxProperties" in s and len(v) > s["maxProperties"]:
            errs.append((path, f"Too many: {len(v)}: must have at most {s['maxProperties']} items"))
        if "minProperties" in s and len(v) < s["minProperties"]:
            errs.append((path, f"Invalid value: {len(v)}: {path} in body should have at least "
                               f"{s['minProperties']} properties"))
        props = s.get("properties") or {}
        for k, ps in props.items():
            if k in v:
                validate(ps, v[k], f"{path}.{k}".lstrip("."), errs)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k, item in v.items():
                validate(ap, item, f"{path}[{k}]", errs)


def check_cel(kind, s, v, old, path, errs):
    """Evaluates the x-kubernetes-validations rules under `s` against `v`
    (`old`: the previous value at the same place, or None)."""
    if v is None or not isinstance(s, dict):
        return
    cel_self = cel_old = None
    for rule, prog, transition in kind.rules.get(id(s), []):
        if transition and old is None:
            continue
        if not transition and old is not None and old == v:
            continue  # ratcheting: an unchanged value is not checked again
        cel_self = cel_self if cel_self is not None else celpy.json_to_cel(v)
        act = {"self": cel_self}
        if transition:
            cel_old = cel_old if cel_old is not None else celpy.json_to_cel(old)
            act["oldSelf"] = cel_old
        try:
            res = prog.evaluate(act)
            ok = not isinstance(res, celpy.CELEvalError) and bool(res)
            msg = rule.get("message") or f"failed rule: {rule['rule']}"
            if isinstance(res, celpy.CELEvalError):
                msg = f"{msg}: {res}"
        except Exception as e:  # noqa: BLE001
            ok, msg = False, f"{rule.get('message') or rule['rule']}: {e}"
        if not ok:
            field = path + (rule.get("fieldPath") or "")
            errs.append((field.lstrip("."), f"Invalid value: {json.dumps(s.get('type') or type_name(v))}: {msg}"))
    if isinstance(v, dict):
        for k, ps in (s.get("properties") or {}).items():
            if k in v:
                check_cel(kind, ps, v[k], old.get(k) if isinstance(old, dict) else None, f"{path}.{k}", errs)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k in v:
                check_cel(kind, ap, v[k], old.get(k) if isinstance(old, dict) else None, f"{path}[{k}]", errs)
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        keys = s.get("x-kubernetes-list-map-keys") if s.get("x-kubernetes-list-type") == "map" else None
        olds = {}
        if keys and isinstance(old, list):
            olds = {json.dumps([o.get(k) for k in keys]): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(v):
            o = olds.get(json.dumps([item.get(k) for k in keys])) if keys and isinstance(item, dict) else None
            check_cel(kind, s["items"], item, o, f"{path}[{i}]", errs)


NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def invalid(kind, name, errs):
    causes = [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in errs]
    parts = [f"{f}: {m}" if f else m for f, m in errs]
    body = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qual = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    return ApiError(422, "Invalid", f'{qual} "{name}" is invalid: {body}',
                    {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes})


# ---------------------------------------------------------------- selectors

def parse_label_selector(sel):
    terms = []
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", sel or ""):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            terms.append((m[1], m[2], {x.strip() for x in m[3].split(",") if x.strip()}))
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", part)
        if m:
            terms.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
            continue
        m = re.fullmatch(r"(!?)\s*([\w./-]+)", part)
        if m:
            terms.append((m[2], "!" if m[1] else "exists", None))
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label selector: {part!r}")
    return terms


def labels_match(terms, labels):
    for key, op, val in terms:
        have = labels.get(key)
        if ((op == "=" and have != val) or (op == "!=" and have == val)
                or (op == "in" and have not in val) or (op == "notin" and have in val)
                or (op == "exists" and key not in labels) or (op == "!" and key in labels)):
            return False
    return True


def parse_field_selector(sel):
    terms = []
    for part in filter(None, (p.strip() for p in (sel or "").split(","))):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
        terms.append((m[1], m[2] == "!=", m[3]))
    return terms


def fields_match(terms, obj):
    for path, neg, want in terms:
        v = obj
        for p in path.split("."):
            v = v.get(p) if isinstance(v, dict) else None
        have = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        if (have == want) == neg:
            return False
    return True


def get_path(obj, path):
    v = obj
    for p in path.strip(".").split("."):
        v = v.get(p) if isinstance(v, dict) else None
    return v


def set_path(obj, path, value):
    parts = path.strip(".").split(".")
    for p in parts[:-1]:
        obj = obj.setdefault(p, {})
    obj[parts[-1]] = value


def jsonpath(obj, path):
    """The small part of kubectl's JSONPath printer columns use:
    .a.b, [*], [N], [?(@.k=="v")]."""
    vals = [obj]
    for tok in re.findall(r"\.([^.\[]+)|\[([^\]]+)\]", path):
        name, idx = tok
        nxt = []
        for v in vals:
            if name:
                if isinstance(v, dict) and name in v:
                    nxt.append(v[name])
            elif idx == "*":
                nxt.extend(v if isinstance(v, list) else (v.values() if isinstance(v, dict) else []))
            elif idx.startswith("?("):
                m = re.fullmatch(r"\?\(@\.([\w.]+)\s*==\s*[\"']?([^\"')]*)[\"']?\)", idx)
                if m and isinstance(v, list):
                    nxt.extend(x for x in v if isinstance(x, dict) and str(get_path(x, m[1])) == m[2])
            elif idx.lstrip("-").isdigit() and isinstance(v, list) and -len(v) <= int(idx) < len(v):
                nxt.append(v[int(idx)])
        vals = nxt
    return vals


# ---------------------------------------------------------------- patches

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge(target, patch):
    """Merge patch, but lists of objects that all carry `name` merge by
    name (containers, env, ports, volumes...); `$patch: delete|replace`,
    `$retainKeys` and `$deleteFromPrimitiveList` honoured,
    `$setElementOrder` ignored."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            key = k.split("/", 1)[1]
            out[key] = [x for x in out.get(key) or [] if x not in v]
        elif v is None:
            out.pop(k, None)
        elif (isinstance(v, list) and isinstance(out.get(k), list) and v
              and all(isinstance(x, dict) and "name" in x for x in v + out[k])):
            merged = list(out[k])
            for item in v:
                i = next((i for i, x in enumerate(merged) if x["name"] == item["name"]), None)
                if item.get("$patch") == "delete":
                    if i is not None:
                        merged.pop(i)
                elif i is None:
                    merged.append(strategic_merge({}, item))
                else:
                    merged[i] = strategic_merge(merged[i], item)
            out[k] = merged
        else:
            out[k] = strategic_merge(out.get(k), v)
    if isinstance(patch.get("$retainKeys"), list):
        out = {k: v for k, v in out.items() if k in patch["$retainKeys"]}
    return out


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)

    def walk(path):
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        return parent, parts[-1]

    def get(path):
        parent, key = walk(path)
        return parent[int(key)] if isinstance(parent, list) else parent[key]

    def remove(path):
        parent, key = walk(path)
        return parent.pop(int(key)) if isinstance(parent, list) else parent.pop(key)

    def add(path, value):
        parent, key = walk(path)
        if isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), value)
        else:
            parent[key] = value
    try:
        for op in ops:
            o, path = op["op"], op["path"]
            if o == "add":
                add(path, copy.deepcopy(op["value"]))
            elif o == "remove":
                remove(path)
            elif o == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif o == "move":
                add(path, remove(op["from"]))
            elif o == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif o == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"the test operation failed at {path}")
            else:
                raise ApiError(400, "BadRequest", f"unknown json patch op {o!r}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the json patch cannot be applied: {e!r}")
    return doc


# ---------------------------------------------------------------- protobuf

# The few kinds that Go clients (helm's release storage, `kubectl create
# token|namespace|secret|configmap`) send as protobuf: field number ->
# (JSON name, type, repeated). Types: s string, b bool, i integer, B bytes
# (base64 in JSON), ms/mB map of strings/bytes, or a message name here.
PB = {
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 5: ("uid", "s"),
                   6: ("resourceVersion", "s"), 11: ("labels", "ms"), 12: ("annotations", "ms"),
                   13: ("ownerReferences", "OwnerReference", True), 14: ("finalizers", "s", True)},
    "OwnerReference": {1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"), 5: ("apiVersion", "s"),
                       6: ("controller", "b"), 7: ("blockOwnerDeletion", "b")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "mB"), 3: ("type", "s"), 4: ("stringData", "ms"),
               5: ("immutable", "b")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "ms"), 3: ("binaryData", "mB"), 4: ("immutable", "b")},
    "Namespace": {1: ("metadata", "ObjectMeta")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 4: ("automountServiceAccountToken", "b")},
    "TokenRequest": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenRequestSpec")},
    "TokenRequestSpec": {1: ("audiences", "s", True), 3: ("boundObjectRef", "BoundObjectReference"),
                         4: ("expirationSeconds", "i")},
    "BoundObjectReference": {1: ("kind", "s"), 2: ("apiVersion", "s"), 3: ("name", "s"), 4: ("uid", "s")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "i"), 2: ("preconditions", "Preconditions"),
                      4: ("propagationPolicy", "s"), 5: ("dryRun", "s", True)},
    "Preconditions": {1: ("uid", "s"), 2: ("resourceVersion", "s")},
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "raw")},
    "TypeMeta": {1: ("apiVersion", "s"), 2: ("kind", "s")},
}


def pb_decode(buf, msg):
    out = {}
    i = 0

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v
    while i < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            val = varint()
        elif wire == 2:
            n = varint()
            val, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            continue
        else:
            raise ValueError(f"protobuf wire type {wire}")
        spec = PB[msg].get(field)
        if spec is None:
            continue
        name, typ, rep = (spec + (False,))[:3]
        if typ in ("ms", "mB"):
            entry = pb_decode(val, "MapEntry" + typ[1])
            out.setdefault(name, {})[entry.get("k", "")] = entry.get("v", "")
            continue
        v = {"s": lambda: val.decode(), "b": lambda: bool(val), "i": lambda: val, "raw": lambda: val,
             "B": lambda: base64.b64encode(val).decode()}.get(typ, lambda: pb_decode(val, typ))()
        if rep:
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    return out


PB["MapEntrys"] = {1: ("k", "s"), 2: ("v", "s")}
PB["MapEntryB"] = {1: ("k", "s"), 2: ("v", "B")}


def from_protobuf(raw):
    """A Kubernetes protobuf body (k8s\\0 + runtime.Unknown) as JSON, for the kinds in PB."""
    if not raw.startswith(b"k8s\x00"):
        raise ValueError("no k8s protobuf envelope")
    env = pb_decode(raw[4:], "Unknown")
    tm = env.get("typeMeta") or {}
    kind = tm.get("kind") or ""
    if kind not in PB or kind in ("Unknown", "TypeMeta") or kind.startswith("MapEntry"):
        raise ValueError(f"{kind or 'this kind'} is not decoded from protobuf here: send JSON")
    obj = pb_decode(env.get("raw") or b"", kind)
    obj.update({"apiVersion": tm.get("apiVersion"), "kind": kind})
    return obj


# ---------------------------------------------------------------- store

def strip_meta_status(o):
    return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def same_ignoring_rv(a, b):
    a, b = dict(a), dict(b)
    a["metadata"] = {k: v for k, v in a["metadata"].items() if k != "resourceVersion"}
    b["metadata"] = {k: v for k, v in b["metadata"].items() if k != "resourceVersion"}
    return a == b


class Store:
    """Every object, the watch history and the issued tokens, behind one
    lock (a Condition that wakes the watches)."""

    history_size = HISTORY

    def __init__(self):
        self.lock = threading.RLock()  # guards everything below
        self.cond = threading.Condition(self.lock)
        self.wakeups = {}  # (group, plural) -> Condition on the same lock: watches of that kind
        self.rv = 1
        self.kinds = {}  # (group, plural) -> Kind
        self.objs = {}  # (group, plural) -> {(namespace, name): object}
        self.history = []  # (rv, (group, plural), type, object, previous object)
        self.compacted = 0  # newest resourceVersion no longer in history
        self.tokens = {}  # issued token -> (namespace, serviceaccount, uid, audiences, expiry, bound Pod ref or None)
        self.stopping = False
        for g, v, p, k, nsd, short, st in BUILTIN:
            self.register(Kind(g, v, p, k, nsd, short, st, WORKLOAD_SCALE if p in (
                "deployments", "statefulsets") else None))
        self.register(Kind("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False,
                           verbs=["create"]))

    def register(self, kind):
        self.kinds[(kind.group, kind.plural)] = kind
        self.objs.setdefault((kind.group, kind.plural), {})

    def find(self, group, version, plural):
        k = self.kinds.get((group, plural))
        if k is None or k.version != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return k

    def record(self, kind, typ, obj, old=None):
        self.history.append((int(obj["metadata"]["resourceVersion"]), (kind.group, kind.plural), typ, obj, old))
        if len(self.history) > 2 * self.history_size:
            drop = len(self.history) - self.history_size
            self.compacted = self.history[drop - 1][0]
            del self.history[:drop]
        self.wakeup(kind.group, kind.plural).notify_all()

    def wakeup(self, group, plural):
        """The Condition that watches of one kind wait on (the store's lock)."""
        return self.wakeups.setdefault((group, plural), threading.Condition(self.lock))

    def stop(self):
        with self.cond:
            self.stopping = True
            for c in self.wakeups.values():
                c.notify_all()

    def get(self, kind, ns, name):
        o = self.objs[(kind.group, kind.plural)].get((ns or "", name))
        if o is None:
            raise ApiError(404, "NotFound", f'{kind.resource} "{name}" not found',
                           {"name": name, "group": kind.group, "kind": kind.plural})
        return o

    def list(self, kind, ns, lsel=None, fsel=None):
        items = self.objs[(kind.group, kind.plural)]
        return [o for (ons, _), o in sorted(items.items())
                if (ns is None or ons == ns) and labels_match(lsel or [], o["metadata"].get("labels") or {})
                and fields_match(fsel or [], o)]

    def commit(self, kind, ns, new, old, sub=None, dry=False, strict=None, warnings=None):
        """Validates and stores `new` (replacing `old`, None on create);
        returns the stored object. `sub`: "status" for a status write."""
        new = copy.deepcopy(new)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata is required")
        name = meta.get("name")
        if ns and meta.get("namespace") not in (None, "", ns):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                              "namespace sent on the request")
        if old is not None and name != old["metadata"]["name"]:
            raise ApiError(400, "BadRequest", f'the name of the object ({name}) does not match the name on '
                                              f'the URL ({old["metadata"]["name"]})')
        want_rv = meta.get("resourceVersion")
        if old is not None and want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the '
                                            f'object has been modified; please apply your changes to the latest '
                                            f'version and try again', {"name": name, "group": kind.group,
                                                                       "kind": kind.plural})
        if old is not None and sub == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new.pop("status", None)
            if status is not None:
                new["status"] = status
            meta = new["metadata"]
        elif kind.status:
            new.pop("status", None)
            if old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        new["apiVersion"], new["kind"] = kind.gv, kind.kind
        meta.pop("managedFields", None)
        if kind.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if old is None:
            if not name and meta.get("generateName"):
                name = meta["name"] = meta["generateName"] + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5))
            if not name:
                raise invalid(kind, "", [("metadata.name", "Required value: name or generateName is required")])
            if kind.group == "rbac.authorization.k8s.io":  # path-segment names ("system:...") allowed
                if name in (".", "..") or "/" in name or "%" in name:
                    raise invalid(kind, name, [("metadata.name", f'Invalid value: "{name}": may not contain '
                                                                 "'/' or '%', nor be '.' or '..'")])
            elif not NAME_RE.match(name) or len(name) > 253:
                raise invalid(kind, name, [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                                            "subdomain must consist of lower case alphanumeric characters, '-' "
                                            "or '.', and must start and end with an alphanumeric character")])
            if (ns or "", name) in self.objs[(kind.group, kind.plural)]:
                raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists',
                               {"name": name, "group": kind.group, "kind": kind.plural})
            if kind.namespaced and ("", ns) not in self.objs[("", "namespaces")]:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                               {"name": ns, "kind": "namespaces"})
            meta["uid"] = f"{random.getrandbits(128):032x}"
            meta["uid"] = "-".join((meta["uid"][:8], meta["uid"][8:12], meta["uid"][12:16], meta["uid"][16:20],
                                    meta["uid"][20:]))
            meta["creationTimestamp"] = now_iso()
            meta["generation"] = 1
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            if kind.plural == "namespaces":
                new["status"] = {"phase": "Active"}
        else:
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            if strip_meta_status(new) != strip_meta_status(old):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"] if old else "0"
        if kind.plural == "secrets" and kind.group == "" and isinstance(new.get("stringData"), dict):
            new["data"] = dict(new.get("data") or {}, **{k: base64.b64encode(str(v).encode()).decode()
                                                         for k, v in new.pop("stringData").items()})
        crd = None
        if kind.crd:
            unknown = []
            prune_default(kind.schema, new, "", unknown)
            if unknown and strict == "Strict":
                raise ApiError(400, "BadRequest", f'{kind.kind} in version "{kind.version}" cannot be handled as '
                                                  f'a {kind.kind}: strict decoding error: '
                               + ", ".join(f'unknown field "{u}"' for u in unknown))
            if unknown and warnings is not None and strict != "Ignore":
                warnings.extend(f'unknown field "{u}"' for u in unknown)
            errs = []
            body = {k: v for k, v in new.items() if k != "metadata"}
            validate(kind.schema, body, "", errs)
            check_cel(kind, kind.schema, body, old, "", errs)
            if errs:
                raise invalid(kind, name, errs)
        if kind.plural == "customresourcedefinitions":
            crd = crd_kind(new)  # 422 when a rule does not compile
            if name != f"{crd.plural}.{crd.group}":
                raise invalid(kind, name, [("metadata.name", f'Invalid value: "{name}": must be spec.names.plural'
                                                             f'+"."+spec.group')])
            new["status"] = {"acceptedNames": new["spec"]["names"], "storedVersions": [crd.version],
                             "conditions": [{"type": t, "status": "True", "reason": r, "message": "",
                                             "lastTransitionTime": meta["creationTimestamp"]}
                                            for t, r in (("NamesAccepted", "NoConflicts"),
                                                         ("Established", "InitialNamesAccepted"))]}
        if old is not None and same_ignoring_rv(new, old):
            return old
        if dry:
            return new
        key = (ns or "", name)
        if old is not None and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self.remove(kind, key, old)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objs[(kind.group, kind.plural)][key] = new
        self.record(kind, "MODIFIED" if old else "ADDED", new, old)
        if crd:
            self.register(crd)
        if kind.plural == "namespaces" and old is None:  # as the ServiceAccount controller does
            self.commit(self.kinds[("", "serviceaccounts")], name, {"metadata": {"name": "default"}}, None)
        return new

    def remove(self, kind, key, obj):
        del self.objs[(kind.group, kind.plural)][key]
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self.record(kind, "DELETED", gone)
        if kind.plural == "namespaces":
            for k in list(self.kinds.values()):
                if k.namespaced:
                    for (ons, n), o in list(self.objs[(k.group, k.plural)].items()):
                        if ons == key[1]:
                            self.remove(k, (ons, n), o)
        if kind.plural == "customresourcedefinitions":
            k = self.kinds.pop((obj["spec"]["group"], obj["spec"]["names"]["plural"]), None)
            for okey, o in list(self.objs.pop((k.group, k.plural), {}).items()) if k else []:
                self.rv += 1
                self.record(k, "DELETED", dict(o, metadata=dict(o["metadata"], resourceVersion=str(self.rv))))
        return gone

    def delete(self, kind, ns, name, opts, dry=False):
        obj = self.get(kind, ns, name)
        pre = opts.get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"] or (
                pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the '
                                            f'precondition for the delete does not match')
        if dry:
            return obj
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.objs[(kind.group, kind.plural)][(ns or "", name)] = new
            self.record(kind, "MODIFIED", new, obj)
            return new
        return self.remove(kind, (ns or "", name), obj)

    def issue_token(self, ns, sa, body):
        acct = self.get(self.kinds[("", "serviceaccounts")], ns, sa)
        spec = body.get("spec") or {}
        aud = spec.get("audiences") or ["https://kubernetes.default.svc"]
        secs = int(spec.get("expirationSeconds") or 3600)
        tok = "smsgw-sa." + secrets.token_urlsafe(32)
        exp = time.time() + secs
        bound = spec.get("boundObjectRef") or None
        if bound and bound.get("kind") != "Pod":
            bound = None  # only Pod-bound tokens carry the pod's identity here
        self.tokens[tok] = (ns, sa, acct["metadata"]["uid"], aud, exp, bound)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa, "namespace": ns, "creationTimestamp": None},
                "spec": {"audiences": aud, "expirationSeconds": secs, "boundObjectRef": spec.get("boundObjectRef")},
                "status": {"token": tok, "expirationTimestamp": datetime.datetime.fromtimestamp(
                    exp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def review_token(self, body):
        spec = body.get("spec") or {}
        want = spec.get("audiences") or ["https://kubernetes.default.svc"]
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec}
        t = self.tokens.get(spec.get("token") or "")
        acct = t and self.objs[("", "serviceaccounts")].get((t[0], t[1]))
        if not t or time.time() > t[4] or not acct or acct["metadata"]["uid"] != t[2]:
            out["status"] = {"authenticated": False, "user": {}, "error": "invalid bearer token"}
            return out
        aud = [a for a in want if a in t[3]]
        if not aud:
            out["status"] = {"authenticated": False, "user": {},
                             "error": "token audiences {} is invalid for the target audiences {}".format(t[3], want)}
            return out
        ns, sa, bound = t[0], t[1], t[5]
        user = {
            "username": f"system:serviceaccount:{ns}:{sa}", "uid": t[2],
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]}
        if bound:
            # A token bound to a pod dies with it, and names it.
            pod = self.objs[("", "pods")].get((ns, bound.get("name")))
            if not pod or (bound.get("uid") and pod["metadata"].get("uid") != bound["uid"]):
                out["status"] = {"authenticated": False, "user": {}, "error": "the pod the token is bound to is gone"}
                return out
            user["extra"] = {"authentication.kubernetes.io/pod-name": [bound["name"]],
                             "authentication.kubernetes.io/pod-uid": [pod["metadata"].get("uid", "")]}
        out["status"] = {"authenticated": True, "audiences": aud, "user": user}
        return out


# ---------------------------------------------------------------- discovery

def resource_list(store, group, version):
    res = []
    for k in store.kinds.values():
        if k.group != group or k.version != version:
            continue
        r = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
             "verbs": k.verbs}
        if k.short:
            r["shortNames"] = k.short
        if k.categories:
            r["categories"] = k.categories
        res.append(r)
        if k.status:
            res.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                        "kind": k.kind, "verbs": ["get", "patch", "update"]})
        if k.scale:
            res.append({"name": f"{k.plural}/scale", "singularName": "", "namespaced": k.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        if k.plural == "serviceaccounts":
            res.append({"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                        "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                        "verbs": ["create"]})
    if not res:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": res}


def group_list(store):
    groups = {}
    for k in store.kinds.values():
        if k.group:
            groups.setdefault(k.group, k.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
         "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in sorted(groups.items())]}


def openapi_gv(store, group, version):
    """OpenAPI v3 of one group-version: the CRD schemas (for `kubectl
    explain`) and PATCH operations that declare `fieldValidation` (so
    kubectl leaves validation to this server)."""
    schemas, paths = {}, {}
    for k in store.kinds.values():
        if k.group != group or k.version != version:
            continue
        gvk = {"group": k.group, "version": k.version, "kind": k.kind}
        name = ".".join(reversed(k.group.split("."))) + f".{k.version}.{k.kind}" if k.group else \
            f"io.k8s.api.core.{k.version}.{k.kind}"
        sch = copy.deepcopy(k.schema) if k.crd else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        sch.setdefault("properties", {}).update({
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this "
                                                            "representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource "
                                                      "this object represents."},
            "metadata": {"type": "object", "description": "Standard object's metadata."}})
        sch["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = sch
        base = "/api/v1" if not k.group else f"/apis/{k.group}/{k.version}"
        item = f"{base}/namespaces/{{namespace}}/{k.plural}/{{name}}" if k.namespaced else f"{base}/{k.plural}/{{name}}"
        ok = {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{name}"}}}}}
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths[item] = {
            "get": {"operationId": f"read{k.kind}", "responses": ok, "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk},
            "put": {"operationId": f"replace{k.kind}", "responses": ok, "parameters": params[:3],
                    "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
            "patch": {"operationId": f"patch{k.kind}", "responses": ok, "parameters": params,
                      "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths,
            "components": {"schemas": schemas}}


def human_age(ts):
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    for unit, size, limit in (("s", 1, 120), ("m", 60, 10800), ("h", 3600, 172800)):
        if s < limit:
            return f"{s // size}{unit}"
    return f"{s // 86400}d"


def table(kind, objs, rv, include):
    cols = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."}]
    specs = kind.columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    cols += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
              "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in specs]
    rows = []
    for o in objs:
        cells = [o["metadata"]["name"]]
        for c in specs:
            vals = jsonpath(o, c["jsonPath"])
            if not vals:
                cells.append(None)
            elif c.get("type") == "date":
                cells.append(human_age(vals[0]))
            elif len(vals) == 1:
                cells.append(vals[0] if isinstance(vals[0], (int, float, str, bool)) else json.dumps(vals[0]))
            else:
                cells.append(",".join(v if isinstance(v, str) else json.dumps(v) for v in vals))
        row = {"cells": cells}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": cols, "rows": rows}


def scale_of(kind, obj):
    sc = kind.scale
    st = {"replicas": get_path(obj, sc["statusReplicasPath"]) or 0} if sc.get("statusReplicasPath") else {}
    if kind.plural in ("deployments", "statefulsets"):
        ml = get_path(obj, ".spec.selector.matchLabels") or {}
        st["selector"] = ",".join(f"{k}={v}" for k, v in sorted(ml.items()))
    elif sc.get("labelSelectorPath") and get_path(obj, sc["labelSelectorPath"]):
        st["selector"] = get_path(obj, sc["labelSelectorPath"])
    m = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in m},
            "spec": {"replicas": get_path(obj, sc["specReplicasPath"]) or 0}, "status": st}


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smsgw-apiserver"
    store: Store = None
    bookmark_seconds = 5.0
    verbose = False

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("apiserver: " + (fmt % args) + "\n")

    def send_json(self, code, obj, headers=()):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for h in headers:
            self.send_header(*h)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if "protobuf" in ctype:
            try:
                return from_protobuf(raw)
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise ApiError(415, "UnsupportedMediaType", f"cannot decode this protobuf body ({e}); "
                                                            f"accepted media types include: application/json")
        try:
            if ctype.endswith("yaml"):
                return yaml.load(raw, Loader=YAML_LOADER)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"cannot decode the request body: {e}")

    def do_GET(self):
        self.handle_req("GET")

    def do_POST(self):
        self.handle_req("POST")

    def do_PUT(self):
        self.handle_req("PUT")

    def do_PATCH(self):
        self.handle_req("PATCH")

    def do_DELETE(self):
        self.handle_req("DELETE")

    def handle_req(self, method):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        warnings = []
        try:
            body = self.body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
            code, out = self.route(method, url.path, q, body, warnings)
        except ApiError as e:
            code, out = e.code, e.status()
        except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection
            import traceback
            traceback.print_exc()
            code, out = 500, ApiError(500, "InternalError", f"internal error: {e!r}").status()
        if code is None:
            return  # a watch, already answered
        self.send_json(code, out, [("Warning", f'299 - "{w}"') for w in warnings])

    def route(self, method, path, q, body, warnings):
        st = self.store
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "GET":
            if path == "/version":
                return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-smsgw-standin",
                             "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc"}
            if path in ("/healthz", "/readyz", "/livez"):
                return 200, "ok"
            if path == "/api":
                return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "%s:%d" % self.server.server_address[:2]}]}
            if path == "/apis":
                with st.cond:
                    return 200, group_list(st)
            if parts and parts[0] in ("api", "apis") and len(parts) == (2 if parts[0] == "api" else 3):
                with st.cond:
                    return 200, resource_list(st, "" if parts[0] == "api" else parts[1], parts[-1])
            if path == "/openapi/v3":
                with st.cond:
                    gvs = sorted({("api/v1" if not k.group else f"apis/{k.group}/{k.version}")
                                  for k in st.kinds.values()})
                    rv = st.rv
                return 200, {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={rv:016X}"}
                                       for gv in gvs}}
            if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
                with st.cond:
                    doc = openapi_gv(st, "" if parts[2] == "api" else parts[3], parts[-1])
                if not doc["paths"]:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return 200, doc
        if not parts or parts[0] not in ("api", "apis") or len(parts) < (3 if parts[0] == "api" else 4):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural, name, sub = (rest + [None, None])[:3]
        with st.cond:
            kind = st.find(group, version, plural)
        if kind.plural == "tokenreviews" and method == "POST" and not name:
            with st.cond:
                return 201, st.review_token(body or {})
        if ns and not kind.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if kind.namespaced and ns is None and (name or method not in ("GET",)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "token" and kind.plural == "serviceaccounts" and method == "POST":
            with st.cond:
                return 201, st.issue_token(ns, name, body or {})
        if sub and not ((sub == "status" and kind.status) or (sub == "scale" and kind.scale)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry = q.get("dryRun") == "All"
        strict = q.get("fieldValidation")
        if method == "GET" and not name:
            if q.get("watch") in ("true", "1", ""):
                self.watch(kind, ns, q)
                return None, None
            lsel = parse_label_selector(q.get("labelSelector"))
            fsel = parse_field_selector(q.get("fieldSelector"))
            with st.cond:
                items, rv = st.list(kind, ns, lsel, fsel), st.rv
            if "as=Table" in (self.headers.get("Accept") or ""):
                return 200, table(kind, items, rv, q.get("includeObject"))
            return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.gv,
                         "metadata": {"resourceVersion": str(rv)}, "items": items}
        if method == "GET":
            with st.cond:
                o = st.get(kind, ns, name)
                rv = st.rv
            if sub == "scale":
                return 200, scale_of(kind, o)
            if "as=Table" in (self.headers.get("Accept") or ""):
                return 200, table(kind, [o], rv, q.get("includeObject"))
            return 200, o
        if method == "POST" and not name:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            with st.cond:
                return 201, st.commit(kind, ns, body, None, dry=dry, strict=strict, warnings=warnings)
        if method == "PUT" and name:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            with st.cond:
                old = st.objs[(kind.group, kind.plural)].get((ns or "", name))
                if old is None and kind.plural in CREATE_ON_UPDATE:
                    body.setdefault("metadata", {}).pop("resourceVersion", None)
                    return 201, st.commit(kind, ns, body, None, dry=dry, strict=strict, warnings=warnings)
                old = st.get(kind, ns, name)
                if sub == "scale":
                    return 200, self.write_scale(kind, ns, old, body, dry)
                return 200, st.commit(kind, ns, body, old, sub, dry, strict, warnings)
        if method == "PATCH" and name:
            return self.patch(kind, ns, name, sub, body, dry, strict, warnings, q)
        if method == "DELETE" and name and not sub:
            with st.cond:
                return 200, st.delete(kind, ns, name, body or {}, dry or "All" in ((body or {}).get("dryRun") or []))
        if method == "DELETE" and not name:
            lsel = parse_label_selector(q.get("labelSelector"))
            fsel = parse_field_selector(q.get("fieldSelector"))
            with st.cond:
                gone = [st.delete(kind, o["metadata"].get("namespace"), o["metadata"]["name"], {}, dry)
                        for o in st.list(kind, ns, lsel, fsel)]
                return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.gv,
                             "metadata": {"resourceVersion": str(st.rv)}, "items": gone}
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def write_scale(self, kind, ns, old, scale, dry):
        if not isinstance(scale, dict) or not isinstance(scale.get("spec"), dict):
            raise ApiError(400, "BadRequest", "a Scale object with spec.replicas is needed")
        new = copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion") or \
            old["metadata"]["resourceVersion"]
        set_path(new, kind.scale["specReplicasPath"], scale["spec"].get("replicas"))
        return scale_of(kind, self.store.commit(kind, ns, new, old, dry=dry))

    def patch(self, kind, ns, name, sub, body, dry, strict, warnings, q):
        st = self.store
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                         "application/json-patch+json", "application/apply-patch+yaml"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                        "accepted media types include: application/json-patch+json, "
                                                        "application/merge-patch+json, application/apply-patch+yaml")
        if ctype == "application/json-patch+json" and not isinstance(body, list) or \
                ctype != "application/json-patch+json" and not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the patch body does not fit its content type")
        with st.cond:
            old = st.objs[(kind.group, kind.plural)].get((ns or "", name))
            if old is None:
                if ctype == "application/apply-patch+yaml" and not sub:
                    if (body.get("metadata") or {}).get("name") not in (None, name):
                        raise ApiError(400, "BadRequest", "the name in the body does not match the URL")
                    body.setdefault("metadata", {})["name"] = name
                    return 201, st.commit(kind, ns, body, None, dry=dry, strict=strict, warnings=warnings)
                st.get(kind, ns, name)  # 404
            base = scale_of(kind, old) if sub == "scale" else old
            if ctype == "application/json-patch+json":
                new = json_patch(base, body)
            elif ctype == "application/strategic-merge-patch+json" and not kind.crd:
                new = strategic_merge(base, body)
            else:
                if ctype == "application/apply-patch+yaml":
                    body = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
                new = merge_patch(base, body)
            if sub == "scale":
                return 200, self.write_scale(kind, ns, old, new, dry)
            return 200, st.commit(kind, ns, new, old, sub, dry, strict, warnings)

    # ------------------------------------------------------------ watch

    def watch(self, kind, ns, q):
        st = self.store
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        key = self.watch_key = (kind.group, kind.plural)
        with st.cond:
            wakeup = st.wakeup(*key)

        def match(o):
            return o is not None and (ns is None or o["metadata"].get("namespace") == ns) and labels_match(
                lsel, o["metadata"].get("labels") or {}) and fields_match(fsel, o)
        rv = q.get("resourceVersion") or ""
        initial = []
        with st.cond:
            if rv in ("", "0") or q.get("sendInitialEvents") == "true":
                initial = [{"type": "ADDED", "object": o} for o in st.list(kind, ns, lsel, fsel)]
                last = st.rv
                if q.get("sendInitialEvents") == "true":
                    initial.append(self.bookmark(kind, last, True))
            else:
                try:
                    last = int(rv)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv!r}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        next_bookmark = time.monotonic() + self.bookmark_seconds
        try:
            self.send_events(initial)
            while True:
                out = []
                with st.cond:
                    if last < st.compacted:
                        gone = ApiError(410, "Expired", f"too old resource version: {last} ({st.compacted + 1})")
                        self.send_events([{"type": "ERROR", "object": gone.status()}])
                        break
                    i = len(st.history)
                    while i > 0 and st.history[i - 1][0] > last:
                        i -= 1
                    for erv, ekey, typ, o, prev in st.history[i:]:
                        if ekey != key:
                            continue
                        now_in, was_in = match(o), match(prev)
                        if typ == "MODIFIED" and now_in != was_in:
                            typ = "ADDED" if now_in else "DELETED"
                        if now_in or (typ == "DELETED" and was_in):
                            out.append({"type": typ, "object": o})
                    last = max(last, st.rv)
                    t = time.monotonic()
                    if not out and bookmarks and t >= next_bookmark:
                        out.append(self.bookmark(kind, last))
                        next_bookmark = t + self.bookmark_seconds
                    if not out:
                        if st.stopping or t >= deadline:
                            break
                        wakeup.wait(min(deadline, next_bookmark if bookmarks else deadline) - t)
                        continue
                self.send_events(out)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    @staticmethod
    def bookmark(kind, rv, initial_end=False):
        meta = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.gv, "metadata": meta}}

    def send_events(self, events):
        if not events:
            return
        if "as=Table" in (self.headers.get("Accept") or ""):  # kubectl get -w
            with self.store.cond:
                kind = self.store.kinds.get(self.watch_key)
            events = [dict(e, object=table(kind, [e["object"]], e["object"]["metadata"]["resourceVersion"], None))
                      if kind and e["type"] in ("ADDED", "MODIFIED", "DELETED") else e for e in events]
        data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free port)")
    ap.add_argument("--crds", help="directory of CustomResourceDefinition YAML files registered at start")
    ap.add_argument("--kubeconfig-out", required=True, help="where to write the kubeconfig")
    ap.add_argument("--namespace", default="smsgw", help="namespace created at start, the context's namespace")
    ap.add_argument("--bookmark-seconds", type=float, default=5.0, help="period of watch BOOKMARK events")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ap.add_argument("--history", type=int, default=HISTORY, help="watch events kept for resuming watches")
    args = ap.parse_args()
    Store.history_size = max(1, args.history)
    host, _, port = args.listen.rpartition(":")
    store = Store()
    with store.cond:
        for n in sorted({"default", "kube-system", "kube-public", args.namespace}):
            store.commit(store.kinds[("", "namespaces")], None, {"metadata": {"name": n}}, None)
        for f in sorted(os.listdir(args.crds)) if args.crds else []:
            if f.endswith((".yaml", ".yml", ".json")):
                with open(os.path.join(args.crds, f)) as fh:
                    for doc in yaml.load_all(fh, Loader=YAML_LOADER):
                        if doc:
                            store.commit(store.kinds[("apiextensions.k8s.io", "customresourcedefinitions")],
                                         None, doc, None)
    Handler.store, Handler.bookmark_seconds, Handler.verbose = store, args.bookmark_seconds, args.verbose
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((host, int(port)), Handler)
    url = "http://%s:%d" % server.server_address[:2]
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "smsgw", "preferences": {},
           "clusters": [{"name": "smsgw", "cluster": {"server": url}}],
           "users": [{"name": "admin", "user": {"token": "admin." + secrets.token_urlsafe(16)}}],
           "contexts": [{"name": "smsgw", "context": {"cluster": "smsgw", "user": "admin",
                                                      "namespace": args.namespace}}]}
    tmp = args.kubeconfig_out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(cfg, fh, indent=1)
    os.replace(tmp, args.kubeconfig_out)

    def stop(*_):
        store.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY {url}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
