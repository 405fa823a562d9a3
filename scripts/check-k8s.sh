#!/usr/bin/env bash
# Offline checks of the Kubernetes packaging: the CRDs, the rendered Helm
# chart (default values and every option on) and the example resources are
# validated against the Kubernetes 1.33 schemas and the CRDs' own schemas.
# No cluster needed; tools come from scripts/k8s-tools.sh (pinned).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0
tools="$(./scripts/k8s-tools.sh)"
helm="$tools/bin/helm"
validate=("$tools/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet)
export PYTHONPATH="$tools/py${PYTHONPATH:+:$PYTHONPATH}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "CRDs: the chart's copy matches crds/"
for f in crds/*.yaml; do
    cmp -s "$f" "charts/smsgw/crds/$(basename "$f")" ||
        { echo "charts/smsgw/crds/$(basename "$f") differs from $f; run cargo run -p smsgw-crds --bin crdgen" >&2; exit 1; }
done

echo "CRDs: valid apiextensions.k8s.io/v1 objects"
"${validate[@]}" crds/*.yaml

echo "chart: helm lint"
"$helm" lint --strict --quiet charts/smsgw
"$helm" lint --strict --quiet charts/smsgw -f charts/smsgw/ci/all-features-values.yaml

echo "chart: rendered manifests, default values"
"$helm" template smsgw charts/smsgw --namespace smsgw --include-crds >"$out/default.yaml"
"${validate[@]}" "$out/default.yaml"
# The Grafana dashboard ConfigMap renders (on by default), carries the
# sidecar's label and holds the dashboard JSON unchanged.
python3 - "$out/default.yaml" charts/smsgw/dashboards/smsgw.json <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-grafana-dashboard")]
assert len(cms) == 1, "no Grafana dashboard ConfigMap rendered"
cm = cms[0]
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", cm["metadata"]["labels"]
assert json.loads(cm["data"]["smsgw.json"]) == json.load(open(sys.argv[2])), "dashboard JSON altered"
PY
"$helm" template smsgw charts/smsgw --namespace smsgw --set grafanaDashboard.enabled=false |
    { ! grep -q 'grafana-dashboard'; } || { echo "grafanaDashboard.enabled=false still renders the ConfigMap" >&2; exit 1; }

echo "chart: rendered manifests, every option on"
"$helm" template smsgw charts/smsgw --namespace smsgw -f charts/smsgw/ci/all-features-values.yaml \
    >"$out/all.yaml"
grep -q 'kind: HorizontalPodAutoscaler' "$out/all.yaml"
grep -q 'kind: ServiceMonitor' "$out/all.yaml"
# ServiceMonitor is the Prometheus Operator's CRD, unknown to the core
# schemas: check the rest.
python3 - "$out/all.yaml" "$out/all-core.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(core, open(sys.argv[2], "w"))
PY
"${validate[@]}" "$out/all-core.yaml"

echo "chart: secured snapshot stream and NetworkPolicies (default values)"
python3 - "$out/default.yaml" <<'PY'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
def container(name):
    return by[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]
def env(c):
    return {e["name"]: e.get("value") for e in c["env"]}
op, px = env(container("smsgw-operator")), env(container("smsgw-proxy"))
assert op["SMSGW_OPERATOR_PROXY_SERVICE_ACCOUNT"] == "smsgw-proxy", op
assert op["SMSGW_OPERATOR_TOKEN_AUDIENCE"] == "smsgw-config", op
assert op["SMSGW_OPERATOR_TLS_CERT"].endswith("tls.crt") and op["SMSGW_OPERATOR_TLS_KEY"].endswith("tls.key"), op
assert px["SMSGW_CONFIG_SERVER"].startswith("https://smsgw-operator.smsgw.svc:"), px
assert px["SMSGW_CONFIG_SERVER_CA"].endswith("ca.crt") and px["SMSGW_CONFIG_TOKEN_FILE"], px
# The proxies get the CA only, never the operator's key; their token is
# projected with the audience the operator checks.
vols = {v["name"]: v for v in by[("Deployment", "smsgw-proxy")]["spec"]["template"]["spec"]["volumes"]}
assert [i["key"] for i in vols["config-ca"]["secret"]["items"]] == ["ca.crt"], vols["config-ca"]
tok = vols["config-token"]["projected"]["sources"][0]["serviceAccountToken"]
assert tok["audience"] == "smsgw-config", tok
sec = by[("Secret", "smsgw-operator-config-tls")]["data"]
for k in ("tls.crt", "tls.key", "ca.crt"):
    assert base64.b64decode(sec[k]).startswith(b"-----BEGIN"), k
crb = by[("ClusterRoleBinding", "smsgw-operator-smsgw-auth-delegator")]
assert crb["roleRef"]["name"] == "system:auth-delegator", crb
npol = by[("NetworkPolicy", "smsgw-operator")]["spec"]["ingress"][0]
assert npol["ports"] == [{"port": 50051, "protocol": "TCP"}], npol
assert npol["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy", npol
assert ("NetworkPolicy", "smsgw-proxy") in by and ("NetworkPolicy", "smsgw-redis") in by
# Cross-pod dispatch: the proxies' dispatch port is open to the release's
# proxies only, and the port the pods listen on is the one the rule opens.
pin = by[("NetworkPolicy", "smsgw-proxy")]["spec"]["ingress"]
disp = [r for r in pin if {"port": 44045, "protocol": "TCP"} in r["ports"]]
assert len(disp) == 1 and disp[0]["from"] == [{"podSelector": {"matchLabels": {
    "app.kubernetes.io/name": "smsgw", "app.kubernetes.io/instance": "smsgw",
    "app.kubernetes.io/component": "proxy"}}}], pin
assert all(44045 not in [p["port"] for p in r["ports"]] for r in pin if r is not disp[0]), pin
assert px["SMSGW_DISPATCH_LISTEN"] == "0.0.0.0:44045", px
PY
"$helm" template smsgw charts/smsgw --namespace smsgw --set networkPolicy.enabled=false |
    { ! grep -q 'kind: NetworkPolicy'; } || { echo "networkPolicy.enabled=false still renders NetworkPolicies" >&2; exit 1; }

echo "chart: Ingress, Gateway API routes, TLS in the pods, cert-manager"
# cert-manager and Gateway API kinds are CRDs unknown to the core schemas:
# the core objects are validated by kubernetes-validate, the others
# against their CRDs' schemas (scripts/validate-crd-kinds.mjs), and the
# shape of both is checked here.
for f in ingress gateway-api; do
    "$helm" lint --strict --quiet charts/smsgw -f "charts/smsgw/ci/$f-values.yaml"
    "$helm" template smsgw charts/smsgw --namespace smsgw -f "charts/smsgw/ci/$f-values.yaml" >"$out/$f.yaml"
    python3 - "$out/$f.yaml" "$out/$f-core.yaml" "$f" "$out/$f-crd-kinds.json" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
other = ("cert-manager.io/", "gateway.networking.k8s.io/")
yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith(other)], open(sys.argv[2], "w"))
json.dump([d for d in docs if d["apiVersion"].startswith(other)], open(sys.argv[4], "w"))
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
proxy = by[("Deployment", "smsgw-proxy")]["spec"]["template"]["spec"]
c = proxy["containers"][0]
env = {e["name"]: e.get("value") for e in c["env"]}
assert env["SMSGW_TLS_CERT"] and env["SMSGW_TLS_KEY"], env
assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS", c["readinessProbe"]
for kind in ("Certificate",):
    for (k, n), d in by.items():
        if k == kind:
            assert d["apiVersion"] == "cert-manager.io/v1", d
            assert d["spec"]["secretName"] and d["spec"]["issuerRef"]["name"] and d["spec"]["dnsNames"], d
if sys.argv[3] == "ingress":
    assert env["SMSGW_TLS_CLIENT_CA"], env
    rest, grpc = by[("Ingress", "smsgw-proxy")], by[("Ingress", "smsgw-proxy-grpc")]
    a = grpc["metadata"]["annotations"]
    assert a["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS", a
    assert a["traefik.ingress.kubernetes.io/service.serversscheme"] == "https", a
    assert a["cert-manager.io/cluster-issuer"] == "letsencrypt", a
    assert rest["spec"]["ingressClassName"] == "nginx" and rest["spec"]["tls"][0]["secretName"], rest
    # The pods serve TLS: the REST Ingress speaks HTTPS to them.
    ra = rest["metadata"]["annotations"]
    assert ra["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS", ra
    assert ra["cert-manager.io/cluster-issuer"] == "letsencrypt", ra
    # Clients restricted: the scrapers still reach /metrics on the REST port.
    pin = by[("NetworkPolicy", "smsgw-proxy")]["spec"]["ingress"]
    assert any(r["ports"] == [{"port": 8080, "protocol": "TCP"}] and "monitoring" in str(r["from"]) for r in pin), pin
    assert grpc["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"] == "grpc", grpc
    assert ("Certificate", "smsgw-operator-config-tls") in by and ("Secret", "smsgw-operator-config-tls") not in by
else:
    h, g = by[("HTTPRoute", "smsgw-proxy")], by[("GRPCRoute", "smsgw-proxy")]
    for r, port in ((h, 8080), (g, 44044)):
        assert r["apiVersion"] == "gateway.networking.k8s.io/v1", r
        assert r["spec"]["parentRefs"][0]["name"] == "public", r
        assert r["spec"]["rules"][0]["backendRefs"] == [{"name": "smsgw-proxy", "port": port}], r
    assert not any(k == "Ingress" for k, _ in by)
    # The pods serve TLS: the Gateway speaks TLS to them and verifies them.
    b = by[("BackendTLSPolicy", "smsgw-proxy")]["spec"]
    assert b["targetRefs"] == [{"group": "", "kind": "Service", "name": "smsgw-proxy"}], b
    assert b["validation"]["hostname"] and b["validation"]["caCertificateRefs"], b
PY
    "${validate[@]}" "$out/$f-core.yaml"
    node scripts/validate-crd-kinds.mjs "$tools" "$out/$f-crd-kinds.json"
done

echo "chart: bad value combinations fail the render with what to set"
refuses() { # expected message part, then helm args
    local want="$1" err; shift
    if err="$("$helm" template smsgw charts/smsgw --namespace smsgw "$@" 2>&1 >/dev/null)"; then
        echo "helm template $* rendered; expected a failure mentioning: $want" >&2; exit 1
    fi
    grep -qF -- "$want" <<<"$err" || { echo "helm template $*: expected '$want', got: $err" >&2; exit 1; }
}
refuses "redis.url (or redis.existingSecret) is required" --set redis.enabled=false
refuses "set redis.enabled=false with them" --set redis.url=redis://r:6379
refuses "store.type must be redis or aerospike" --set store.type=embedded
refuses "store.aerospike.hosts is required" --set store.type=aerospike
refuses "contactPolicy.mcp.url is required" --set contactPolicy.engine=mcp
refuses "s3.bucket is required" --set s3.enabled=true
refuses "rateLimit.failMode must be open or closed" --set rateLimit.failMode=maybe
refuses "proxy.tls.enabled needs proxy.tls.existingSecret" --set proxy.tls.enabled=true
refuses "choose one" --set ingress.enabled=true,gatewayApi.enabled=true
refuses "needs gatewayApi.backendTLS.hostname" --set gatewayApi.enabled=true,proxy.tls.enabled=true,proxy.tls.existingSecret=t
refuses "set clusterIssuer or issuer, not both" --set ingress.enabled=true,ingress.certManager.clusterIssuer=a,ingress.certManager.issuer=b
refuses "secrets.jwtPrivateKeyIds is required" --set secrets.existingJwtPrivateKeySecret=jwt
refuses "issuerRef.name is required" --set operator.configStream.tls.certManager.enabled=true
# Default values: the shipped Redis backs users, store, limits and policies.
"$helm" template smsgw charts/smsgw --namespace smsgw | python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
assert ("StatefulSet", "smsgw-redis") in kinds and ("Service", "smsgw-redis") in kinds, kinds
proxy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "smsgw-proxy")
env = {e["name"]: e.get("value") for e in proxy["spec"]["template"]["spec"]["containers"][0]["env"]}
url = "redis://smsgw-redis.smsgw.svc:6379"
for k, v in {"SMSGW_REDIS_URL": url, "SMSGW_RATE_LIMIT_REDIS_URL": url, "SMSGW_STORE": "redis", "SMSGW_POLICY_ENGINE": "redis"}.items():
    assert env.get(k) == v, (k, env.get(k))
'

echo "examples: Secrets valid, custom resources valid against the CRDs"
python3 - examples/cluster/*.yaml "$out/core-examples.yaml" <<'PY'
import sys, yaml
docs = [d for f in sys.argv[1:-1] for d in yaml.safe_load_all(open(f)) if d]
yaml.safe_dump_all([d for d in docs if d["apiVersion"] == "v1"], open(sys.argv[-1], "w"))
PY
"${validate[@]}" "$out/core-examples.yaml"
python3 scripts/validate-crs.py crds examples/cluster/*.yaml examples/standalone.yaml

if [ -n "${SMSGW_BIN:-}" ] && [ -x "$SMSGW_BIN" ]; then
    # Every value maps to a flag the binary reads: each env var the chart
    # gives the proxy (with Aerospike, the MCP, the S3 journal and TLS on,
    # the options the cluster box does not run) is one `smsgw serve` lists.
    echo "chart: every proxy env var, every option on, is read by smsgw serve"
    "$helm" template smsgw charts/smsgw --namespace smsgw \
        --set store.type=aerospike --set store.aerospike.hosts=aero:3000 \
        --set contactPolicy.engine=mcp --set contactPolicy.mcp.url=http://mcp:1880 \
        --set s3.enabled=true --set s3.bucket=journal --set s3.endpoint=http://s3:9000 --set s3.existingSecret=s3 \
        --set secrets.existingJwtPrivateKeySecret=jwt --set 'secrets.jwtPrivateKeyIds={k2,k1}' \
        >"$out/all-options.yaml"
    "$SMSGW_BIN" serve --help >"$out/serve-help.txt"
    python3 - "$out/all-options.yaml" "$out/serve-help.txt" <<'PY'
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "smsgw-proxy")
names = {e["name"] for c in dep["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
known = set(re.findall(r"\[env: ([A-Z0-9_]+)", open(sys.argv[2]).read())) | {"RUST_LOG"}
unknown = sorted(names - known)
assert not unknown, f"the chart sets env vars smsgw serve does not read: {unknown}"
for want in ("SMSGW_AEROSPIKE_HOSTS", "SMSGW_MCP_URL", "SMSGW_JOURNAL_BUCKET", "SMSGW_JWT_PRIVATE_KEYS"):
    assert any(n.startswith(want.rsplit("_", 1)[0]) for n in names), (want, sorted(names))
print(f"  {len(names)} env vars, all read by smsgw serve")
PY
fi

echo "Kubernetes packaging: all checks passed"
