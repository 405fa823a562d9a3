#!/bin/bash
# The soak of BENCHMARKS.md ("Memory under sustained load", issue 22): a gateway
# with its built-in simulator, `smsgw bench --duration` at a fixed rate with
# receipts, the gateway's RSS, CPU, throughput and data directory sampled every
# 5 s into a CSV, then a PNG (scripts/soak_plot.py, needs matplotlib: set PYTHON
# to a venv's python that has it).
#
# usage: scripts/soak.sh <label> <duration> <rate> [embedded|redis] [extra gateway flags...]
#   SMSGW_BIN  the gateway binary (default target/release/smsgw)
#   OUT        where the CSV, PNG and logs go (default /tmp/soak-<label>)
#   TTL        --message-ttl of the run (default 5m, so purging shows within the run)
#   EVENTS     --events-retention of the run (default: TTL, so the outbox is purged
#              within the run too; the gateway's default is 24 h, like the TTL's)
#   PORTS      offset added to every port, to run two soaks side by side (default 0)
#   SIM        `builtin` (default: the gateway's --with-simulator) or `external`
#              (`smsgw smsc-sim` as its own process, so the gateway's RSS holds
#              the gateway alone; its RSS is sampled into sim-rss.txt)
#   other-cpu.txt: every 10 s, the Unix time, the machine's idle CPU seconds
#              (all cores, idle + iowait) and the CPU seconds so far of the
#              external simulator and of Redis (those that run), in that order
set -euo pipefail
label=$1 duration=$2 rate=$3 store=${4:-embedded}
shift 3; [ $# -gt 0 ] && shift
bin=${SMSGW_BIN:-target/release/smsgw}
out=${OUT:-/tmp/soak-$label}
ttl=${TTL:-5m}
events=${EVENTS:-$ttl}
python=${PYTHON:-python3}
o=${PORTS:-0}
sim=$((12795 + o)) rest=$((18101 + o)) grpc=$((14065 + o)) rport=$((16395 + o))
rm -rf "$out"; mkdir -p "$out/data"
source "$(dirname "$0")/lib/bench-config.sh"
bench_config "$out/config.yaml" soak-link $sim
store_flags=()
redis=
simpid=
sim_flags=(--with-simulator --simulator-listen 127.0.0.1:$sim)
if [ "${SIM:-builtin}" = external ]; then
  RUST_LOG=warn "$bin" smsc-sim --listen 127.0.0.1:$sim > "$out/sim.log" 2>&1 &
  simpid=$!
  sim_flags=()
  sleep 1
fi
if [ "$store" = redis ]; then
  redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$out" > "$out/redis.log" 2>&1 &
  redis=$!
  sleep 1
  store_flags=(--store redis --redis-url redis://127.0.0.1:$rport)
fi
cleanup() {
  [ -n "${gw:-}" ] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
  [ -n "$redis" ] && kill "$redis" 2>/dev/null || true
  [ -n "$simpid" ] && kill "$simpid" 2>/dev/null || true
}
trap cleanup EXIT
ADMIN_API_KEY=k RUST_LOG=${GATEWAY_LOG:-warn} "$bin" standalone --config "$out/config.yaml" "${sim_flags[@]}" \
  --rest-addr 127.0.0.1:$rest --grpc-addr 127.0.0.1:$grpc \
  --data-dir "$out/data" --message-ttl "$ttl" --events-retention "$events" "${store_flags[@]}" "$@" > "$out/gateway.log" 2>&1 &
gw=$!
sleep 3
# The gateway's own memory gauges every 10 s (which structure holds what), so a
# step in the RSS can be matched to a structure or ruled out as one.
( while kill -0 "$gw" 2>/dev/null; do
    curl -s http://127.0.0.1:$rest/metrics | grep -E '^smsgw_memory_(entries|bytes)' \
      | sed "s/^/$(date +%s) /"
    sleep 10
  done ) > "$out/memory-gauges.txt" 2>/dev/null &
if [ -n "$simpid" ]; then
  ( while kill -0 "$simpid" 2>/dev/null; do
      echo "$(date +%s) $(awk '/VmRSS/{print $2}' /proc/$simpid/status)"
      sleep 10
    done ) > "$out/sim-rss.txt" 2>/dev/null &
fi
# CPU seconds (user + system) of the simulator and Redis every 10 s, when
# they run as processes of their own, so CPU per message can be split
# between the gateway (soak.csv), its store and its SMSC.
( while kill -0 "$gw" 2>/dev/null; do
    line="$(date +%s) $(awk -v t="$(getconf CLK_TCK)" '/^cpu /{printf "%.2f", ($5 + $6) / t; exit}' /proc/stat)"
    for p in "$simpid" "$redis"; do
      [ -n "$p" ] && line="$line $(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' /proc/$p/stat 2>/dev/null)"
    done
    echo "$line"
    sleep 10
  done ) > "$out/other-cpu.txt" 2>/dev/null &
echo "gateway pid $gw, RSS at start: $(awk '/VmRSS/{print $2, $3}' /proc/$gw/status)"
"$bin" bench --rest http://127.0.0.1:$rest --grpc http://127.0.0.1:$grpc \
  --duration "$duration" --rate "$rate" --concurrency 4 --wait-receipts --timeout 600s \
  --soak-csv "$out/soak.csv" --gateway-pid "$gw" --data-dir "$out/data" --sample-every 5s \
  2>&1 | tee "$out/bench.txt"
echo "data directory: $(du -sb "$out/data" | cut -f1) bytes"; ls -l "$out/data"
if [ -n "$redis" ]; then
  redis-cli -p $rport info memory | grep -E '^used_memory:|^used_memory_peak:'
  echo "keys: $(redis-cli -p $rport dbsize)"
  redis-cli -p $rport info commandstats > "$out/redis-commandstats.txt"
fi
curl -s http://127.0.0.1:$rest/metrics | grep -E '^smsgw_memory_(entries|bytes)' || true
"$python" "$(dirname "$0")/soak_plot.py" "$out/soak.csv" "$out/soak.png" \
  --title "smsgw soak: $label, $rate msg/s, $store store" | tee "$out/summary.txt"
