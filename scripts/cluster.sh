#!/usr/bin/env bash
# Cluster in a box: the chart's real topology on this machine, loopback only.
#
#   scripts/cluster.sh up [--proxies N] [--values FILE]... [--set K=V]... [--net 127.A.B] [--s3] [--no-build]
#   scripts/cluster.sh down
#   scripts/cluster.sh status            # the pods (pods.json) and the printed addresses
#   scripts/cluster.sh restart-proxies   # kubectl rollout restart of the proxy Deployment, waits for it
#
# `up` builds smsgw, smsgw-operator and the Services' forwarder (the example
# service-proxy; debug, unless --no-build), starts the
# pod runner (tests/cluster/runner.py) in the background: the Kubernetes API
# stand-in, the SMSC simulator, the chart rendered by `helm template` and
# created in the API, every pod as a local process on its own loopback
# address, every Service as a forwarder. Once every pod is Ready it prints,
# one per line, KUBECONFIG=, NAMESPACE=, REST=, GRPC=, SMSC= (and
# SMSC_STATS=, the simulator's counters) and exits 0; it fails with the
# runner's reason otherwise. `down` stops everything `up` started.
#
# --s3 also runs the S3 stand-in (the tests' s3s-fs server, the example
# s3-server of smsgw-archive) at 127.80.0.3:9000 with a bucket `smsgw` and
# points the chart's journal at it (s3.* values, Secret smsgw-s3); `up`
# then also prints S3=, S3_BUCKET= and S3_ROOT= (the bucket's directory).
#
# Addresses (--net 127.80.0 by default): API 127.80.0.1, SMSC simulator
# 127.80.0.2:2775 (stats on :2776), Services from 127.80.0.10 with their
# own ports (the proxy's REST 8080 and gRPC 44044), pods from 127.80.0.50.
# State (logs, kubeconfig, pods.json) in $SMSGW_CLUSTER_DIR, default
# /tmp/smsgw-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

state="${SMSGW_CLUSTER_DIR:-/tmp/smsgw-cluster}"
target="${CARGO_TARGET_DIR:-$PWD/target}"

die() { echo "cluster.sh: $*" >&2; exit 1; }

runner_alive() {
    [ -f "$state/runner.pid" ] && kill -0 "$(cat "$state/runner.pid")" 2>/dev/null
}

down() {
    if runner_alive; then
        local pid
        pid="$(cat "$state/runner.pid")"
        kill -TERM "$pid"
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    # Whatever a killed runner left behind: the processes it recorded.
    if [ -d "$state/pids" ]; then
        for f in "$state"/pids/*; do
            [ -e "$f" ] || continue
            pid="$(basename "$f")"
            if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$(cat "$f")"; then
                kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            fi
            rm -f "$f"
        done
    fi
    rm -f "$state/runner.pid" "$state/up.env"
}

up() {
    local build=1 s3=0 args=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --proxies) args+=(--proxies "$2"); shift 2 ;;
            --values) args+=(--values "$(realpath "$2")"); shift 2 ;;
            --set) args+=(--set "$2"); shift 2 ;;
            --net) args+=(--net "$2"); shift 2 ;;
            --namespace) args+=(--namespace "$2"); shift 2 ;;
            --no-build) build=0; shift ;;
            --s3) s3=1; shift ;;
            *) die "unknown option $1 (see the top of $0)" ;;
        esac
    done
    runner_alive && die "already up (state $state); run: $0 down"
    command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
    if [ "$build" = 1 ]; then
        cargo build -q -p smsgw -p smsgw-operator >&2 || die "cargo build failed"
        cargo build -q -p smsgw --example service-proxy >&2 || die "cargo build failed"
        if [ "$s3" = 1 ]; then
            cargo build -q -p smsgw-archive --features testing --example s3-server >&2 || die "cargo build failed"
        fi
    fi
    if [ "$s3" = 1 ]; then
        [ -x "$target/debug/examples/s3-server" ] || die "$target/debug/examples/s3-server is missing"
        args+=(--s3-server "$target/debug/examples/s3-server")
    fi
    for b in smsgw smsgw-operator; do
        [ -x "$target/debug/$b" ] || die "$target/debug/$b is missing (cargo build -p smsgw -p smsgw-operator)"
    done
    [ -x "$target/debug/examples/service-proxy" ] ||
        die "$target/debug/examples/service-proxy is missing (cargo build -p smsgw --example service-proxy)"
    local tools
    tools="$(./scripts/k8s-tools.sh)"
    if [ -d "$state" ] && [ -n "$(ls -A "$state")" ] && [ ! -e "$state/logs/runner.log" ]; then
        die "$state exists and is not a cluster state directory; set SMSGW_CLUSTER_DIR"
    fi
    rm -rf "$state"
    mkdir -p "$state/logs"
    local t0=$SECONDS
    setsid python3 tests/cluster/runner.py run --state "$state" \
        --smsgw "$target/debug/smsgw" --operator "$target/debug/smsgw-operator" \
        --service-proxy "$target/debug/examples/service-proxy" \
        --helm "$tools/bin/helm" "${args[@]}" >"$state/logs/runner.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$state/runner.pid"
    for _ in $(seq 1 1200); do
        if [ -s "$state/up.env" ]; then
            cat "$state/up.env"
            echo "cluster up in $((SECONDS - t0)) s (state $state)" >&2
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: the runner stopped: $(cat "$state/failed" 2>/dev/null || tail -5 "$state/logs/runner.log")" >&2
            down
            exit 1
        fi
        sleep 0.1
    done
    echo "cluster.sh: not every pod Ready after 120 s; see $state/logs/" >&2
    down
    exit 1
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status)
        runner_alive || die "not up"
        cat "$state/up.env" 2>/dev/null
        python3 -c 'import json,sys; [print(n, p["ip"], "Ready" if p["ready"] else "NotReady", p["owner"], "restarts=%s" % sum(p["restarts"].values())) for n, p in sorted(json.load(open(sys.argv[1])).items())]' "$state/pods.json"
        ;;
    restart-proxies)
        runner_alive || die "not up"
        # shellcheck disable=SC1091
        . "$state/up.env"
        kubectl="$(./scripts/k8s-tools.sh)/bin/kubectl"
        export KUBECONFIG
        "$kubectl" -n "$NAMESPACE" rollout restart deployment -l app.kubernetes.io/component=proxy
        "$kubectl" -n "$NAMESPACE" rollout status deployment -l app.kubernetes.io/component=proxy --timeout 180s
        ;;
    *) die "usage: $0 up [--proxies N] [--values FILE] | down | status | restart-proxies" ;;
esac
