#!/usr/bin/env bash
# Checks compose.yaml offline (no Docker engine can run here):
#   - against the Compose specification's JSON schema, the one PyPI
#     check-jsonschema vendors (`--builtin-schema vendor.compose-spec`),
#     pinned and cached like the other tools (default
#     ~/.cache/smsgw-compose-tools); a deliberately broken copy must fail
#     it, so the check is seen to bite;
#   - against what it runs: every `smsgw` flag of the gateway's command and
#     every SMSGW_* variable of its environment is one the binary reads
#     (its --help), the mounted configuration passes `smsgw check-config`,
#     the files it mounts exist, the MCP URLs are the flow's routes, every
#     image is pinned to a tag, the gateway's default image is the chart's.
# Needs python3 with pip; builds the smsgw binary if SMSGW_BIN is not set.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0

source scripts/lib/pip-tool.sh
dir="$(pip_tool smsgw-compose-tools SMSGW_COMPOSE_TOOLS_DIR "check-jsonschema==$CHECK_JSONSCHEMA_VERSION")"
export PYTHONPATH="$dir/py${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "${SMSGW_BIN:-}" ]; then
    cargo build --quiet --locked -p smsgw
    SMSGW_BIN="${CARGO_TARGET_DIR:-target}/debug/smsgw"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The Compose specification's schema.
python3 -m check_jsonschema --builtin-schema vendor.compose-spec compose.yaml
python3 - compose.yaml "$work/broken.yaml" <<'PY'
import sys
from ruamel.yaml import YAML
yaml = YAML()
doc = yaml.load(open(sys.argv[1]))
doc["services"]["smsgw"]["depends_on"]["redis"]["condition"] = "service_ready"
yaml.dump(doc, open(sys.argv[2], "w"))
PY
if python3 -m check_jsonschema --builtin-schema vendor.compose-spec "$work/broken.yaml" >"$work/broken.log" 2>&1; then
    echo "check-compose: the schema check accepted a broken compose file" >&2
    exit 1
fi

# 2. What the file runs.
"$SMSGW_BIN" --help >"$work/help.txt"
"$SMSGW_BIN" standalone --help >>"$work/help.txt"
"$SMSGW_BIN" check-config examples/standalone.yaml >/dev/null
python3 - compose.yaml "$work/help.txt" <<'PY'
import json, os, re, sys
from ruamel.yaml import YAML

doc = YAML(typ="safe").load(open(sys.argv[1]))
help_text = open(sys.argv[2]).read()
problems = []
services = doc["services"]
for name in ("smsgw", "redis", "minio", "mcp"):
    if name not in services:
        problems.append(f"no service {name!r}")

gw = services["smsgw"]
command = gw["command"]
if command[0] != "smsgw" or "standalone" not in command:
    problems.append(f"the gateway does not run `smsgw … standalone`: {command}")
for arg in command:
    if arg.startswith("--") and not re.search(re.escape(arg) + r"(?![\w-])", help_text):
        problems.append(f"smsgw has no flag {arg}")
for key in gw["environment"]:
    if key.startswith("SMSGW_") or key == "ADMIN_API_KEY":
        if f"[env: {key}" not in help_text:
            problems.append(f"smsgw reads no variable {key}")

# Files mounted from the repository exist; the configuration is the one
# `smsgw check-config` passed above.
for svc_name, svc in services.items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("./") and not os.path.exists(src):
            problems.append(f"{svc_name} mounts {src}, which does not exist")
config = command[command.index("--config") + 1] if "--config" in command else None
mounts = {v.split(":")[1]: v.split(":")[0] for v in gw["volumes"] if v.startswith("./")}
if config is None or mounts.get(config) != "./examples/standalone.yaml":
    problems.append(f"--config {config} is not the mounted examples/standalone.yaml")

# The MCP endpoints are the flow's routes.
routes = {n.get("url") for n in json.load(open("mcp/flows.json")) if n.get("type") == "http in"}
mcp_url = gw["environment"]["SMSGW_MCP_URL"]
if not mcp_url.startswith("http://mcp:") or mcp_url.split("1880", 1)[-1] not in routes:
    problems.append(f"SMSGW_MCP_URL {mcp_url} is not a route of mcp/flows.json ({routes})")
health = " ".join(services["mcp"]["healthcheck"]["test"])
if "/api/v1/health" not in health or "/api/v1/health" not in routes:
    problems.append("the MCP health check is not the flow's /api/v1/health")

# Images pinned; the gateway's default is the chart's image and appVersion.
for svc_name, svc in services.items():
    image = svc["image"]
    default = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", image)
    tag = default.rsplit(":", 1)[-1] if ":" in default.split("/")[-1] else ""
    if not tag or tag == "latest":
        problems.append(f"{svc_name}: image {image} is not pinned to a tag")
chart = open("charts/smsgw/Chart.yaml").read()
app_version = re.search(r'^appVersion:\s*"?([^"\n]+)"?', chart, re.M).group(1)
values = open("charts/smsgw/values.yaml").read()
repository = re.search(r"^  repository:\s*(\S+)", values, re.M).group(1)
gw_default = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", gw["image"])
if gw_default != f"{repository}:{app_version}":
    problems.append(f"the gateway image {gw_default} is not the chart's {repository}:{app_version}")

if problems:
    print("compose.yaml:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"compose.yaml valid: {len(services)} services ({', '.join(services)}), "
      f"{sum(1 for a in command if a.startswith('--'))} flags and "
      f"{sum(1 for k in gw['environment'] if k.startswith('SMSGW_'))} SMSGW_* variables known to smsgw")
PY
