#!/bin/bash
# Two gateway builds measured side by side, loaded at the same time, so both
# see the same machine: on a VM whose speed drifts ±20 % from one minute to
# the next, runs one after the other cannot tell a 5 % change from noise.
# Each gets a fresh standalone gateway (built-in simulator, embedded store,
# --webhook-allow-private), a 5,000-message warm-up, then ROUNDS paced runs
# of RATE msg/s for SECS s each, both at once. Prints each gateway's CPU
# (user + system, /proc) per message and its load tool's webhook latency.
#
#   scripts/bench-side-by-side.sh BIN_A BIN_B [RATE] [SECS] [ROUNDS] [bench args...]
#   e.g. scripts/bench-side-by-side.sh /tmp/old/smsgw target/release/smsgw 6000 10 3 --webhook-listen 127.0.0.1:0
#
# Swap the two binaries for a second run: the first-started gateway may be
# favoured.
set -u
[ $# -ge 2 ] || { sed -n 2,14p "$0"; exit 2; }
A=$1; B=$2; rate=${3:-6000}; secs=${4:-10}; rounds=${5:-3}; shift $(( $# < 5 ? $# : 5 ))
out=/tmp/bench-side-by-side; mkdir -p $out/A $out/B
source "$(dirname "$0")/lib/bench-config.sh"
bench_config $out/A/config.yaml bench-link 12785
bench_config $out/B/config.yaml bench-link 12786
pids=()
start() { # dir bin digit
  rm -rf $out/$1/data
  RUST_LOG=warn "$2" standalone --config $out/$1/config.yaml --with-simulator --simulator-listen 127.0.0.1:1278$3 \
    --rest-addr 127.0.0.1:1808$3 --grpc-addr 127.0.0.1:1404$3 --data-dir $out/$1/data --webhook-allow-private \
    > $out/$1/gw.log 2>&1 &
  pids+=($!)
}
stop() {
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
trap stop EXIT
echo "A = $A, B = $B; $rounds rounds of $rate msg/s each for $secs s"
start A "$A" 5; start B "$B" 6; sleep 3
for p in "${pids[@]}"; do
  kill -0 $p 2>/dev/null || { echo "a gateway did not start:"; tail -3 $out/A/gw.log $out/B/gw.log; exit 1; }
done
load() { # digit count [args]
  "$A" bench --rest http://127.0.0.1:1808$1 --grpc http://127.0.0.1:1404$1 --concurrency 4 --wait-receipts --count $2 "${@:3}"
}
load 5 5000 >/dev/null 2>&1; load 6 5000 >/dev/null 2>&1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
for r in $(seq 1 $rounds); do
  a0=$(cpu ${pids[0]}); b0=$(cpu ${pids[1]})
  load 5 $((rate*secs)) --rate $rate "$@" > $out/A/bench.out 2>&1 & l1=$!
  load 6 $((rate*secs)) --rate $rate "$@" > $out/B/bench.out 2>&1 & l2=$!
  wait $l1 $l2
  a1=$(cpu ${pids[0]}); b1=$(cpu ${pids[1]})
  lat() { grep -E "latency after" $1 | sed 's/.*receipt: //'; }
  echo "round $r: A $(( (a1-a0)*1000000/hz/(rate*secs) )) µs CPU a message [$(lat $out/A/bench.out)]" \
       " B $(( (b1-b0)*1000000/hz/(rate*secs) )) µs [$(lat $out/B/bench.out)]"
done
