#!/usr/bin/env bash
# `make bench`: schedule lateness under load, on the cluster bench/run.sh left running.  A
# 1-second schedule fires for BENCH_TICK_SECONDS while 8 pgbench clients enqueue and process
# jobs one at a time (bench/pgbench/jobqueue_enqueue.sql and jobqueue_process_one.sql, half
# the clients each) and 2 executors run a handler that sleeps 5 ms per job (a backlog that
# outlasts the run keeps them busy).  Lateness is fired_at - due_at of every tick: p50, p99 and
# max; aim p99 <= 5 ms.  Appends a section to bench/last-run.md (BENCH_OUT).
#
#   bash bench/ticks.sh [PORT]
#
# Environment: BENCH_TICK_SECONDS [60], BENCH_CLIENTS [8], BENCH_OUT [bench/last-run.md]
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"
tick_seconds=${BENCH_TICK_SECONDS:-60}
clients=${BENCH_CLIENTS:-8}
out=${BENCH_OUT:-$here/last-run.md}
aim=5


sql -c 'CALL bench_reset()'
# The executors' work: 5 ms per job, enough jobs for twice the run at 2 x 200 jobs/s.
sql <<SQL >/dev/null
SELECT job.create_queue('bench_busy', max_retries => 0);
CREATE OR REPLACE FUNCTION bench_busy(payload jsonb) RETURNS void LANGUAGE sql AS 'SELECT pg_sleep(0.005)';
SELECT count(*) FROM job.enqueue_many('bench_busy',
    (SELECT array_agg(jsonb_build_object('n', i)) FROM generate_series(1, $((tick_seconds * 800))) i));
SELECT job.set_handler('bench_busy', 'bench_busy(jsonb)', concurrency => 2);
-- The clients' queue starts with a backlog, so the processing half never runs dry.
CALL bench_load_jobqueue(200000);
SQL
sql -c "ALTER SYSTEM SET pg_jobqueue.executors = 2" -c "SELECT pg_reload_conf()" >/dev/null

logs=$root/target/bench-logs/ticks-$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"
echo "  schedule lateness under load: a 1-second schedule for ${tick_seconds}s beside $clients clients and 2 busy executors..." >&2
"$bin/pgbench" "${conn[@]}" -c "$clients" -j 2 -M prepared -n -T $((tick_seconds + 10)) \
    -f "$here/pgbench/jobqueue_enqueue.sql" -f "$here/pgbench/jobqueue_process_one.sql" bench \
    >"$logs/pgbench.log" 2>&1 &
load=$!
sleep 5
sql -c "SELECT job.create_queue('bench_ticks')" \
    -c "SELECT job.schedule('bench_tick', '* * * * * *', 'bench_ticks')" >/dev/null
sleep "$tick_seconds"
sql -c "SELECT job.pause_schedule('bench_tick')" >/dev/null
wait "$load" || { cat "$logs/pgbench.log" >&2; die "the load's pgbench failed ($logs/pgbench.log)"; }
busy_done=$(sql -c "SELECT count(*) FROM job.finished_jobs WHERE queue = 'bench_busy'")
[ "$busy_done" -gt 0 ] || die "the executors ran no job during the run"
tick_lateness "job.schedule_runs r WHERE r.schedule = 'bench_tick'"
load_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$logs/pgbench.log")
verdict=$(awk -v p="$p99" -v a="$aim" 'BEGIN { print (p <= a ? "met" : "missed") }')
sql -c "SELECT job.unschedule('bench_tick')" -c "SELECT job.drop_queue('bench_ticks', force => true)" \
    -c "SELECT job.remove_handler('bench_busy')" -c "SELECT job.drop_queue('bench_busy', force => true)" \
    -c "ALTER SYSTEM RESET pg_jobqueue.executors" -c "SELECT pg_reload_conf()" -c 'CALL bench_reset()' >/dev/null

section=$(
    echo
    echo "Schedule lateness under load (fired_at - due_at), a 1-second schedule over ${tick_seconds}s, $runs ticks,"
    echo "none missed or fired twice, beside $clients pgbench clients enqueueing and processing (${load_tps} transactions/s)"
    echo "and 2 executors running $busy_done 5-ms handler jobs: p50 ${p50} ms, p99 ${p99} ms, max ${worst} ms"
    echo "(aim p99 ≤ ${aim} ms: ${verdict})."
)
echo "$section"
echo "$section" >>"$out"
