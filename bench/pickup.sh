#!/usr/bin/env bash
# `make bench`: pick-up latency, on the cluster bench/run.sh leaves running.  Jobs are
# enqueued one at a time into an idle queue (5-30 ms apart at random, each in a transaction
# of its own), ~200 measured per case after 10 unmeasured:
#   (a) a client worker waiting with LISTEN on channel pg_jobqueue (whose notifications carry
#       the queue's id, job.queues.id): on its queue's wake-up it calls job.dequeue (which
#       also acknowledges its previous job); latency = commit -> dequeue returned the job;
#   (b) an executor of the background worker: latency = commit -> the (SQL) handler is called
#       (clock_timestamp() recorded by the handler).
# "Commit" is the moment the producer's COMMIT returned: the job is then committed and
# visible, and both ends read the same host clock.  The table also gives the latency from
# the server's clock_timestamp() in the producer's last statement before COMMIT, which adds
# the commit itself (its WAL flush).  p50 / p99; aim p50 <= 2 ms, p99 <= 5 ms (reported, not
# enforced).  Every job must be picked up once and completed, or the script fails.
# Appends a section to bench/last-run.md (BENCH_OUT).  Works in a database of its own,
# bench_pickup, dropped afterwards.  bench/pickup.py speaks the wire protocol itself: plain
# python3, no packages.
#
#   bash bench/pickup.sh [PORT]        (PORT: 55434, the bench cluster)
#
# Environment: BENCH_PICKUP_SAMPLES [200], BENCH_OUT [bench/last-run.md], PYTHON [python3]
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
db=bench_pickup
out=${BENCH_OUT:-$root/bench/last-run.md}

require_cluster
scratch_db_with_extension "$db"
section=$("${PYTHON:-python3}" "$root/bench/pickup.py" --port "$port" --dbname "$db" \
    --samples "${BENCH_PICKUP_SAMPLES:-200}")
echo "$section"
echo "$section" >>"$out"
