#!/usr/bin/env bash
# The Node client (clients/node): jobs/s of the library (8 workers x concurrency 4, a no-op
# handler) beside a raw SQL loop in Node doing the same work its simplest correct way
# (8 connections, each `dequeue` batch 4 -> `complete_many` with the claim's token), in the
# same run, alternating which goes first; then the pick-up latency (enqueue -> handler start)
# of an idle worker on LISTEN, p50/p99.  Prints a Markdown table and appends it to BENCH_OUT.
#
#   bash bench/client-node.sh [PORT]     (the cluster `make bench` leaves running: 55434)
#
# Environment: BENCH_NODE_JOBS [50000], BENCH_NODE_ROUNDS [2], BENCH_NODE_LATENCY_SAMPLES [200],
#              BENCH_OUT [bench/last-run.md]
# It works in a database of its own (bench_node_<random>, dropped afterwards); commits are
# durable as the cluster has them.  Installs clients/node's dependencies (npm ci) if missing.
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
out=${BENCH_OUT:-$root/bench/last-run.md}
client=$root/clients/node

require_cluster
if [ ! -f "$client/dist/esm/index.js" ] || [ ! -d "$client/node_modules/pg" ]; then
    (cd "$client" && npm ci --no-audit --no-fund >&2)
fi
table=$(cd "$client" && node bench/bench.mjs "postgresql://postgres@127.0.0.1:$port/postgres")
echo "$table"
printf '\n%s\n' "$table" >>"$out"
