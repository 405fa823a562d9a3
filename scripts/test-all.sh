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
# One target directory, absolute, shared by the workspace and the fuzz
# crate (its own workspace, which would otherwise build into fuzz/target).
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export CARGO_TARGET_DIR="$target"

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
# libfuzzer-sys (the fuzz crate, checked below) builds libFuzzer from C++.
command -v c++ >/dev/null 2>&1 || need+=(g++)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)  # k8s and OpenAPI checks
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# A cold build needs about 5 GB here; a full disk shows up as the linker
# dying of SIGBUS, so say how much there is first.
log "free disk space: $(df -h "$(dirname "$target")" 2>/dev/null | awk 'NR==2 {print $4}') (build directory $target)"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets' entry points sit behind a feature the workspace build
# leaves off: check them too, or a changed type breaks `fuzz/` unseen.
cargo clippy -p smsgw-smpp --features fuzzing --locked -- -D warnings
# The fuzz crate itself is its own workspace (cargo-fuzz builds it): its
# targets call the API, store and config crates directly, so a refactor
# there breaks them unless they are compiled here. Its lock file started as
# a copy of the workspace's; not `--locked`, so a dependency added to a
# workspace crate is added to it instead of failing the run.
cargo clippy --manifest-path fuzz/Cargo.toml --bins -- -D warnings
# Build every test and binary of the workspace once; the checks below use
# these binaries instead of building their packages again (a `-p` build
# unifies features differently and would compile much of the tree twice).
log "cargo test --no-run (build)"
cargo test --workspace --locked --no-run
export SMSGW_BIN="$target/debug/smsgw" SMSGW_OPERATOR_BIN="$target/debug/smsgw-operator"
[ -x "$SMSGW_BIN" ] && [ -x "$SMSGW_OPERATOR_BIN" ] || { echo "binaries missing under $target/debug" >&2; exit 1; }

# Every committed fuzz seed still passes its target (a plain build runs
# inputs without coverage instrumentation; `-runs=0` runs the seeds and
# stops): a change that breaks a target's invariant on a known input fails
# here, not an hour into a fuzzing run. Built after the workspace so most
# dependencies are already compiled.
log "fuzz targets on their committed seeds"
cargo build --manifest-path fuzz/Cargo.toml --bins
for t in fuzz/seeds/*/; do
    t=$(basename "$t")
    if ! "$target/debug/$t" -runs=0 "fuzz/seeds/$t" >"$target/fuzz-seeds-$t.log" 2>&1; then
        tail -n 40 "$target/fuzz-seeds-$t.log" >&2
        echo "fuzz target $t fails on its committed seeds (log: $target/fuzz-seeds-$t.log)" >&2
        exit 1
    fi
    echo "$t: $(ls "fuzz/seeds/$t" | wc -l) seeds pass"
done

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

# ---- Docker Compose file (issue 19) -------------------------------------
# compose.yaml against the Compose specification's JSON schema (PyPI
# check-jsonschema's vendored copy, pinned, cached) and against the binary
# built above (its flags, SMSGW_* variables and configuration).
log "compose.yaml (Compose specification schema, smsgw flags)"
./scripts/check-compose.sh
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
# The Services' forwarder (tests/cluster/runner.py).
cargo build -p smsgw --example service-proxy --locked
log "cluster in a box scenarios"
# `cargo test --workspace` above built smsgw and smsgw-operator from this
# tree (both packages have integration tests); --no-build uses them as
# they are instead of building again.
python3 tests/cluster/scenarios.py --no-build
# -------------------------------------------------------------------------

log "done; build directory size: $(du -sh "$target" 2>/dev/null | cut -f1)"
