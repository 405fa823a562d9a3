#!/bin/bash
# Issue 18's benchmark (BENCHMARKS.md, "Notifications"): receipted throughput with and without a webhook receiving every final status,
# and the webhook latency after the receipt. Fresh gateway per pair; order alternates.
set -u
bin=${SMSGW_BIN:-target/release/smsgw}
count=${COUNT:-100000}
pairs=${PAIRS:-3}
out=/tmp/bench18; mkdir -p $out
source "$(dirname "$0")/lib/bench-config.sh"
bench_config $out/config.yaml bench-link 12775
run() { # label, extra bench args
  echo "== $1 (load $(cut -d' ' -f1 /proc/loadavg))"
  "$bin" bench --rest http://127.0.0.1:18081 --grpc http://127.0.0.1:14045 --count $count --concurrency 4 \
    --wait-receipts "${@:2}" 2>&1 | grep -E "mode|delivered|webhook|machine|failed"
}
for p in $(seq 1 $pairs); do
  rm -rf $out/data
  RUST_LOG=warn "$bin" standalone --config $out/config.yaml --with-simulator --simulator-listen 127.0.0.1:12775 \
    --rest-addr 127.0.0.1:18081 --grpc-addr 127.0.0.1:14045 --data-dir $out/data --webhook-allow-private \
    > $out/gw-$p.log 2>&1 &
  gw=$!; sleep 3
  # A gateway left from another run on these ports would be measured instead.
  kill -0 $gw 2>/dev/null || { echo "gateway did not start:"; tail -3 $out/gw-$p.log; exit 1; }
  # warm up: login, caches, a first batch
  "$bin" bench --rest http://127.0.0.1:18081 --grpc http://127.0.0.1:14045 --count 5000 --concurrency 4 --wait-receipts >/dev/null 2>&1
  if [ $((p % 2)) -eq 1 ]; then
    run "pair $p: no webhook"; run "pair $p: webhook, batched" --webhook-listen 127.0.0.1:0
  else
    run "pair $p: webhook, batched" --webhook-listen 127.0.0.1:0; run "pair $p: no webhook"
  fi
  [ "${SINGLE:-}" = 1 ] && run "pair $p: webhook, one event per request" --webhook-listen 127.0.0.1:0 --webhook-single
  kill $gw; wait $gw 2>/dev/null
done
