#!/usr/bin/env bash
# `make bench` (and `make bench-deliveries`): HTTP deliveries, on the cluster bench/run.sh
# leaves running, to a local receiver (bench/webhook_sink.py: one asyncio process, keep-alive,
# checks every signature).  bench/deliveries.py runs, in a database of its own
# (bench_deliveries, dropped afterwards):
#   throughput  N deliveries enqueued with job.deliver while their endpoint is paused (in
#               transactions of 10,000; durable commits), then job.resume_endpoint; timed
#               from the resume's commit until none is left unfinished.  Runs: a receiver
#               that answers at once (30,000 deliveries, endpoint concurrency 16, the default,
#               then 256), and one whose every answer takes 100 ms (10,000, concurrency 256).
#               Reports deliveries/s, the receiver's arrivals/s and the peak of requests in
#               flight it saw, and the CPU the sender's main thread (its SQL), its HTTP
#               threads, the rest of the cluster and the receiver used.  Aims: >= 3,000/s
#               at once, >= 1,000/s at 100 ms (reported, not enforced).
#   latency     one delivery committed at a time into an idle endpoint (10-30 ms apart at
#               random, 200 after 10 unmeasured): from the moment COMMIT returned to the
#               client to the request's arrival at the receiver (both time.time() on this
#               host).  p50 / p99; aim p99 <= 20 ms.
# Every delivery must be completed once with a valid signature, or the script fails.
# Appends a section to bench/last-run.md (BENCH_OUT); each latency sample goes to
# target/bench-logs/deliveries-<timestamp>/latency.txt.
#
#   bash bench/deliveries.sh [PORT]        (PORT: 55434, the bench cluster)
#
# Environment: BENCH_DELIVERIES_FAST [30000], BENCH_DELIVERIES_SLOW [10000],
#   BENCH_DELIVERIES_FAST_CONCURRENCY [16,256: one fast run each],
#   BENCH_DELIVERIES_SAMPLES [200], BENCH_SINK_PORT [55438], BENCH_OUT [bench/last-run.md],
#   PYTHON [python3]
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
db=bench_deliveries
out=${BENCH_OUT:-$root/bench/last-run.md}
logs=$root/target/bench-logs/deliveries-$(date +%Y%m%d-%H%M%S) # each latency sample
mkdir -p "$logs"

require_cluster
scratch_db_with_extension "$db"
section=$("${PYTHON:-python3}" "$root/bench/deliveries.py" --port "$port" --dbname "$db" \
    --sink-port "${BENCH_SINK_PORT:-55438}" \
    --fast "${BENCH_DELIVERIES_FAST:-30000}" --slow "${BENCH_DELIVERIES_SLOW:-10000}" \
    --fast-concurrency "${BENCH_DELIVERIES_FAST_CONCURRENCY:-16,256}" \
    --samples "${BENCH_DELIVERIES_SAMPLES:-200}" --samples-log "$logs/latency.txt")
echo "$section"
echo "$section" >>"$out"
