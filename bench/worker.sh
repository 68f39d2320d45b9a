#!/usr/bin/env bash
# `make bench`, second part: the background worker, on the cluster bench/run.sh left running.
#   1. executor throughput: a backlog of jobs for a no-op SQL handler, run by the worker's
#      executors (pg_jobqueue.executors = 2, then 8; they run jobs in batches of up to
#      pg_jobqueue.executor_batch, default 100, one commit per batch; the handler's concurrency
#      lets every executor fill its batch), beside the core's
#      single-job numbers (dequeue 1 + complete, 8 clients) from the same `make bench` run, and
#      as a ratio to the baseline's single-job rate (its process_one; aim: 4x).  Those numbers
#      come from bench/run.sh's results.txt (BENCH_RESULTS), whose run the section names;
#   2. schedule lateness: a 1-second schedule on an otherwise idle cluster, fired_at - due_at
#      at p50 / p99 / max.
# Appends a section to bench/last-run.md (BENCH_OUT).
#
#   bash bench/worker.sh [PORT]
#
# Environment: BENCH_EXECUTOR_JOBS [50000], BENCH_EXECUTOR_COUNTS ["2 8"],
#              BENCH_TICK_SECONDS [60], BENCH_OUT [bench/last-run.md],
#              BENCH_RESULTS [target/bench-logs/latest/results.txt, the newest bench/run.sh's]
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
jobs=${BENCH_EXECUTOR_JOBS:-50000}
executor_counts=${BENCH_EXECUTOR_COUNTS:-"2 8"}
tick_seconds=${BENCH_TICK_SECONDS:-60}
out=${BENCH_OUT:-$root/bench/last-run.md}
results=${BENCH_RESULTS:-$root/target/bench-logs/latest/results.txt}
executor_aim=4

wait_for() { # wait_for SECONDS SQL: until SQL returns t
    local deadline=$((SECONDS + $1))
    until [ "$(sql -c "$2")" = t ]; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# 8 executors, a launcher and a scheduler need more than the default 8 worker slots.
if [ "$(sql -c 'SHOW max_worker_processes')" -lt 16 ]; then
    sql -c "ALTER SYSTEM SET max_worker_processes = 16"
    restart_cluster >/dev/null
fi
sql -c 'CALL bench_reset()'
sql <<'SQL'
SELECT job.create_queue('bench_noop', max_retries => 0);
CREATE OR REPLACE FUNCTION bench_noop(payload jsonb) RETURNS void LANGUAGE sql AS '';
SQL

# The core's single-job numbers (process_one) of this `make bench` run, from bench/run.sh's
# results.txt; empty when that run did not measure them.
result_of() { awk -v s="$1" -v d="$2" '$1 == s && $2 == d { print $3 }' "$results" 2>/dev/null || true; }
core_jq=$(result_of process_one jobqueue)
core_base=$(result_of process_one baseline)
core_run=$(basename "$(dirname "$(readlink -f "$results" || echo "$results")")")
[ -n "$core_base" ] || echo "  (no process_one rates in $results: the executors are not rated against the baseline)" >&2

# ---------------------------------------------------------------------------------------------
# 1. Executor throughput.  A handler's concurrency caps the jobs running at once, and a claimed
# batch counts whole, so concurrency => executors would hold every batch to a job or two: it
# is executors x executor_batch (at most 1000, set_handler's limit), what "no limit" means here.
executor_batch=$(sql -c 'SHOW pg_jobqueue.executor_batch')
executor_rows=""
for n in $executor_counts; do
    sql -c "ALTER SYSTEM SET pg_jobqueue.executors = $n" -c "SELECT pg_reload_conf()" >/dev/null
    sql -c "SELECT job.remove_handler('bench_noop')" >/dev/null
    sql -c "DELETE FROM job.finished_jobs WHERE queue = 'bench_noop'"
    sql -c "SELECT count(*) FROM job.enqueue_many('bench_noop',
                (SELECT array_agg(jsonb_build_object('n', i)) FROM generate_series(1, $jobs) i))" >/dev/null
    sql -c 'VACUUM (ANALYZE) job.live_jobs, job.finished_jobs'
    sql -c 'CHECKPOINT'
    concurrency=$((n * executor_batch < 1000 ? n * executor_batch : 1000))
    sql -c "SELECT job.set_handler('bench_noop', 'bench_noop(jsonb)', concurrency => $concurrency)" >/dev/null
    wait_for 600 "SELECT NOT EXISTS (SELECT 1 FROM job.live_jobs WHERE queue = 'bench_noop')" ||
        die "executors ($n) did not finish $jobs jobs in 10 minutes"
    read -r done completed seconds < <(sql -F ' ' -c "
        SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
               extract(epoch FROM max(finished_at) - min(claimed_at))
          FROM job.finished_jobs WHERE queue = 'bench_noop'")
    [ "$done" -eq "$jobs" ] && [ "$completed" -eq "$jobs" ] ||
        die "executors ($n): $completed of $jobs jobs completed, $done finished"
    rate=$(awk -v j="$jobs" -v s="$seconds" 'BEGIN { printf "%.0f", j / s }')
    claims=$(sql -c "SELECT count(DISTINCT (claimed_by, claimed_at)) FROM job.finished_jobs WHERE queue = 'bench_noop'")
    echo "  executors=$n (concurrency $concurrency): $jobs no-op handler jobs in ${seconds}s, $claims batches: $rate jobs/s" >&2
    if [ -n "$core_base" ]; then
        vs_base=$(awk -v a="$rate" -v b="$core_base" -v m="$executor_aim" \
            'BEGIN { r = a / b; printf "%.2f× | ≥ %s× (%s)", r, m, (r >= m ? "met" : "missed") }')
    else
        vs_base="– | ≥ $executor_aim× (no baseline process_one rate)"
    fi
    executor_rows+="| SQL handler (no-op), $n executors (batches of ≤ $executor_batch, $((jobs / claims)) on average) | $rate | $vs_base |"$'\n'
done
sql -c "SELECT job.remove_handler('bench_noop')" -c "ALTER SYSTEM RESET pg_jobqueue.executors" \
    -c "SELECT pg_reload_conf()" >/dev/null

# ---------------------------------------------------------------------------------------------
# 2. Schedule lateness.
sql -c "SELECT job.create_queue('bench_ticks')" \
    -c "SELECT job.schedule('bench_tick', '* * * * * *', 'bench_ticks')" >/dev/null
echo "  schedule lateness: a 1-second schedule for ${tick_seconds}s..." >&2
sleep "$tick_seconds"
sql -c "SELECT job.pause_schedule('bench_tick')" >/dev/null
tick_lateness "job.schedule_runs r JOIN job.jobs j ON j.id = r.job_id WHERE r.schedule = 'bench_tick'"
sql -c "SELECT job.unschedule('bench_tick')" -c "SELECT job.drop_queue('bench_ticks', force => true)" \
    -c 'CALL bench_reset()' >/dev/null

section=$(
    echo
    echo "## The background worker"
    echo
    echo "| scenario | jobs/s | × baseline's single-job clients | aim |"
    echo "|---|---:|---:|---|"
    printf '%s' "$executor_rows"
    if [ -n "$core_base" ]; then
        echo "| (same run) pg_jobqueue, dequeue 1 + complete, 8 clients | $core_jq | | |"
        echo "| (same run) baseline, claim 1 + delete, 8 clients | $core_base | 1.00× | |"
    fi
    echo
    if [ -n "$core_base" ]; then
        echo "The single-job rates are bench/run.sh's process_one of run $core_run (its results.txt)."
    else
        echo "No single-job rates to compare with: bench/run.sh's process_one did not run ($results)."
    fi
    echo
    echo "Schedule lateness (fired_at - due_at) of a 1-second schedule over ${tick_seconds}s, $runs ticks,"
    echo "none missed or fired twice: p50 ${p50} ms, p99 ${p99} ms, max ${worst} ms."
)
echo "$section"
echo "$section" >>"$out"
