#!/usr/bin/env bash
# The Python client's benchmark (clients/python), on the bench cluster `make bench` leaves
# running: jobs/s for a no-op handler with the library (8 worker processes x concurrency 4,
# threads and asyncio) beside a raw SQL loop in Python doing the same work its simplest
# correct way (8 processes: dequeue batch 4, complete each with its token), in the same run;
# then pick-up latency p50/p99 (enqueue commit -> handler start, idle worker, LISTEN).
# Prints a Markdown table.  Runs in its own database, bench_client_python, dropped afterwards.
#
#   bash bench/client-python.sh [PORT]        (PORT: 55434, the bench cluster)
#
# Environment: BENCH_PY_JOBS [50000], BENCH_PY_ROUNDS [2], BENCH_PY_SAMPLES [200]
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
db=bench_client_python

require_cluster
venv=$(bash "$root/clients/python/scripts/venv.sh")
scratch_db_with_extension "$db"
"$venv/bin/python" "$root/clients/python/bench/bench.py" \
    "postgresql://postgres@127.0.0.1:$port/$db" \
    --jobs "${BENCH_PY_JOBS:-50000}" --rounds "${BENCH_PY_ROUNDS:-2}" \
    --samples "${BENCH_PY_SAMPLES:-200}"
