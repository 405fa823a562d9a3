#!/usr/bin/env bash
# Validates the REST API's OpenAPI 3.1 document (as `smsgw openapi` prints
# it, the same one served at /api/v1/openapi.json) with the standard
# validator, PyPI openapi-spec-validator, pinned and cached like the
# Kubernetes tools (default ~/.cache/smsgw-openapi-tools). Needs python3
# with pip; builds the smsgw binary if it is not built yet.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0

source scripts/lib/pip-tool.sh
dir="$(pip_tool smsgw-openapi-tools SMSGW_OPENAPI_TOOLS_DIR "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION")"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# SMSGW_BIN: a smsgw binary built already (test-all.sh passes it).
if [ -n "${SMSGW_BIN:-}" ]; then
    "$SMSGW_BIN" openapi >"$out/openapi.json"
else
    cargo run --quiet --locked -p smsgw -- openapi >"$out/openapi.json"
fi

PYTHONPATH="$dir/py${PYTHONPATH:+:$PYTHONPATH}" python3 - "$out/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

doc = json.load(open(sys.argv[1]))
assert doc["openapi"].startswith("3.1"), f"expected OpenAPI 3.1, got {doc['openapi']}"
validate(doc, cls=OpenAPIV31SpecValidator)
ops = sum(1 for item in doc["paths"].values() for m in item if m in ("get", "put", "post", "patch", "delete"))
print(f"OpenAPI {doc['openapi']} document valid: {len(doc['paths'])} paths, {ops} operations, "
      f"{len(doc['components']['schemas'])} schemas")
PY
