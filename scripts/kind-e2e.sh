#!/usr/bin/env bash
# End-to-end run on a throwaway kind cluster: build and load the image,
# install the chart, run the SMSC simulator in the cluster, apply
# examples/cluster/, and send one SMS through the proxy.
#
# Needs docker, kind, kubectl and helm, so it is off unless
# SMSGW_KIND_E2E=1 (it cannot run on machines without a Docker engine).
# SMSGW_KIND_KEEP=1 keeps the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SMSGW_KIND_E2E:-}" != 1 ]; then
    echo "kind e2e skipped (set SMSGW_KIND_E2E=1 to run it; needs docker and kind)"
    exit 0
fi
for tool in docker kind kubectl helm curl; do
    command -v "$tool" >/dev/null || { echo "kind e2e needs $tool" >&2; exit 1; }
done

cluster=smsgw
ns=smsgw
image=smsgw:e2e
log() { printf '\n==> %s\n' "$*"; }
cleanup() {
    if [ "${SMSGW_KIND_KEEP:-}" != 1 ]; then
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    fi
    [ -z "${pf_pid:-}" ] || kill "$pf_pid" 2>/dev/null || true
}
trap cleanup EXIT

log "kind cluster $cluster"
kind get clusters | grep -qx "$cluster" || kind create cluster --config kind-config.yaml --wait 120s
kubectl config use-context "kind-$cluster"

log "image $image"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

log "chart"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install smsgw charts/smsgw --namespace "$ns" \
    --set image.repository="${image%:*}" --set image.tag="${image#*:}" \
    --set image.pullPolicy=Never \
    --set proxy.replicas=2 \
    --set secrets.jwtKeys="k1=$(head -c 32 /dev/urandom | base64)" \
    --wait=false

log "SMSC simulator"
kubectl -n "$ns" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: smsc-sim}
spec:
  selector: {matchLabels: {app: smsc-sim}}
  template:
    metadata: {labels: {app: smsc-sim}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
        - name: sim
          image: $image
          imagePullPolicy: Never
          command: [smsgw, smsc-sim, --listen, "0.0.0.0:2775"]
          ports: [{containerPort: 2775, name: smpp}]
---
apiVersion: v1
kind: Service
metadata: {name: smsc-sim}
spec:
  selector: {app: smsc-sim}
  ports: [{port: 2775, targetPort: smpp, name: smpp}]
YAML

log "resources from examples/cluster"
kubectl -n "$ns" apply -f examples/cluster/
# The examples point at the cluster-in-a-box simulator (127.80.0.2); here
# it is the Service above.
kubectl -n "$ns" patch smpplink sim --type merge -p '{"spec":{"host":"smsc-sim"}}'
kubectl -n "$ns" wait --for=condition=Ready smpplink/sim --timeout=180s
kubectl -n "$ns" rollout status deployment/smsgw-proxy --timeout=180s
kubectl -n "$ns" get smsgw

log "one SMS"
kubectl -n "$ns" port-forward svc/smsgw-proxy 18080:8080 >/dev/null &
pf_pid=$!
for _ in $(seq 30); do curl -fsS localhost:18080/healthy >/dev/null 2>&1 && break; sleep 1; done
creds="$(kubectl -n "$ns" get secret alice-credentials -o jsonpath='{.data.appId}' | base64 -d)"
secret="$(kubectl -n "$ns" get secret alice-credentials -o jsonpath='{.data.appSecret}' | base64 -d)"
token="$(curl -fsS localhost:18080/api/v1/auth/token \
    -H 'content-type: application/json' \
    -d "{\"app_id\":\"$creds\",\"app_secret\":\"$secret\"}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
curl -fsS localhost:18080/api/v1/sms/send \
    -H "authorization: Bearer $token" -H "x-app-id: $creds" \
    -H 'content-type: application/json' \
    -d '{"esme":"default","source":"SHOP","destination":"+33612345678","message":"hello from kind","transaction_id":"kind-1"}'
echo
log "kind e2e passed"
