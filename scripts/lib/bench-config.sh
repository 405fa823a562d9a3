# Sourced by the benchmark scripts (soak.sh, bench-webhook.sh): the gateway
# configuration they measure with, written to a file.
#
# bench_config FILE LINK PORT: one SmppLink named LINK to the built-in
# simulator on 127.0.0.1:PORT (4 sessions, window 64) and the pool `default`
# over it.
bench_config() {
  cat > "$1" <<YAML
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: $2}
spec: {host: 127.0.0.1, port: $3, systemId: smsgw, password: secret,
       sessions: 4, window: 64, responseTimeout: 5s, enquireLinkInterval: 10s,
       messageIdFormat: hex}
---
apiVersion: smsgw.io/v1alpha1
kind: EsmePool
metadata: {name: default}
spec: {members: [{link: $2, weight: 1}]}
YAML
}
