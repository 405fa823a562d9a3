#!/bin/bash
# Runs the end-to-end benchmark of BENCHMARKS.md once: a release gateway with its
# built-in simulator, 30,000 messages over gRPC streams until every receipt, then
# the limiter statistics. Needs /tmp/smsgw-rel (cp target/release/smsgw) and /tmp/bench.yaml (BENCHMARKS.md).
# usage: scripts/bench-e2e.sh <label> [extra gateway flags...]
label=$1; shift
rm -rf /tmp/benchdata; 
ADMIN_API_KEY=k RUST_LOG=warn /tmp/smsgw-rel standalone --config /tmp/bench.yaml --with-simulator \
  --simulator-listen 127.0.0.1:12775 --rest-addr 127.0.0.1:18081 --grpc-addr 127.0.0.1:14045 \
  --data-dir /tmp/benchdata "$@" > /tmp/bench-gw.log 2>&1 &
gw=$!
sleep 3
/tmp/smsgw-rel bench --rest http://127.0.0.1:18081 --grpc http://127.0.0.1:14045 --count 30000 --concurrency 4 --wait-receipts 2>&1 | tail -8
curl -s -H 'x-admin-key: k' http://127.0.0.1:18081/api/v1/admin/stats | python3 -c "import json,sys; print('$label limiter', json.load(sys.stdin)['limiter'])"
kill $gw; wait $gw
