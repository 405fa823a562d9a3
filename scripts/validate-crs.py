#!/usr/bin/env python3
"""Validates custom resources (smsgw.io kinds) in YAML files against the
openAPIV3Schema of the committed CRDs, offline, the way the API server
would with `kubectl apply --validate=strict`: types, enums, bounds,
patterns, required fields, and no unknown fields. Other kinds are skipped
(kubernetes-validate covers them). CEL rules are tested in Rust
(crds/tests/crd_schema.rs). Exits 1 listing every problem found.

usage: validate-crs.py CRD_DIR FILE...
"""
import glob
import sys

import jsonschema
import yaml


def to_json_schema(s):
    """OpenAPI v3 (Kubernetes structural) -> JSON Schema: `nullable`
    allows null, objects with properties refuse unknown fields."""
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {p: to_json_schema(sub) for p, sub in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = to_json_schema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(x) for x in v]
        elif k == "format":
            continue  # uint32, int-or-string, ...: not JSON Schema formats
        else:
            out[k] = v
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        out.pop("nullable", None)
    if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def main():
    crd_dir, files = sys.argv[1], sys.argv[2:]
    schemas = {}
    for path in glob.glob(f"{crd_dir}/*.yaml"):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        for v in crd["spec"]["versions"]:
            root = v["schema"]["openAPIV3Schema"]
            root = dict(root)
            props = dict(root.get("properties", {}))
            # metadata is the API server's; apiVersion/kind checked by key.
            props["metadata"] = {"type": "object"}
            props["apiVersion"] = {"type": "string"}
            props["kind"] = {"type": "string"}
            root["properties"] = props
            schemas[(f"{group}/{v['name']}", crd["spec"]["names"]["kind"])] = to_json_schema(root)
    problems, checked = [], 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for i, doc in enumerate(docs, 1):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if not str(key[0]).startswith("smsgw.io/"):
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            schema = schemas.get(key)
            if schema is None:
                problems.append(f"{path} document {i}: no CRD for {key[0]} {key[1]}")
                continue
            checked += 1
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
                where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                problems.append(f"{path} document {i} ({key[1]} {name}), {where}: {e.message}")
    for p in problems:
        print(f"ERROR {p}")
    print(f"{checked} custom resource(s) checked, {len(problems)} problem(s)")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
