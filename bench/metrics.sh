#!/usr/bin/env bash
# `make bench`, third part: reading metrics stays cheap however much history is kept.
# Loads BENCH_METRICS_FINISHED finished jobs [10,000,000] (and 10,000 live ones, two hours of
# full metric buckets for 20 queue/job-type pairs) into a database of its own on the bench
# cluster, then times every metric read 20 times, beside job.queue_stats, which counts rows.
# Appends a section to bench/last-run.md (BENCH_OUT); fails if a metric read takes 50 ms or more.
#
#   bash bench/metrics.sh [PORT]
set -euo pipefail

port=${1:-55434}
db=bench_metrics
. "$(dirname "$0")/lib.sh"
finished=${BENCH_METRICS_FINISHED:-10000000}
out=${BENCH_OUT:-$root/bench/last-run.md}

fresh_db "$db"
echo "  metrics: loading $finished finished jobs..." >&2
sql -o /dev/null <<SQL
CREATE EXTENSION pg_jobqueue;
SELECT job.create_queue('q' || i) FROM generate_series(1, 10) i;
-- History: what 10 queues leave behind, 90 % completed, 10 % dead.
INSERT INTO job.finished_jobs (id, run_at, enqueued_at, claimed_at, finished_at, priority, attempt,
                               max_retries, state, queue, job_type, claimed_by, payload, errors)
SELECT i, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
       now() - make_interval(secs => i % 86400), 0, 1, 5,
       CASE WHEN i % 10 = 0 THEN 'dead' ELSE 'completed' END,
       'q' || (i % 10 + 1), CASE WHEN i % 2 = 0 THEN 'email' END, 'worker-' || (i % 50),
       jsonb_build_object('order_id', i), '[]'
  FROM generate_series(1, $finished) i;
INSERT INTO job.queue_counters SELECT queue, count(*) FROM job.finished_jobs WHERE state = 'dead' GROUP BY queue;
SELECT setval('job.job_id_seq', $finished);
SELECT job.enqueue_many('q' || (i % 10 + 1), array_fill('{}'::jsonb, ARRAY[1000])) FROM generate_series(1, 10) i;
SELECT count(*) FROM generate_series(1, 20) i, LATERAL job.dequeue('q1', 'worker-' || i, 10);
-- Two hours of buckets, every shard written, for 10 queues x 2 job types.
INSERT INTO job.metric_buckets
SELECT date_trunc('minute', now()) - make_interval(mins => m), 'q' || (q % 10 + 1), t, s, 100, 5, 1, 1,
       job._hist_add(job._hist_of(0.05), job._hist_of(2)), 10.0, job._hist_of(0.3), 3.0
  FROM generate_series(0, 119) m, generate_series(0, 9) q, unnest(ARRAY['', 'email']) t, generate_series(0, 31) s;
INSERT INTO job.workers_seen SELECT 'worker-' || i, now(), now() FROM generate_series(0, 49) i
ON CONFLICT DO NOTHING;
SELECT job._count_queue_depth();
SELECT job._compact_metric_buckets(10000000);  -- what the worker does every few seconds
VACUUM ANALYZE;
SQL

time_ms() { # time_ms SQL: median and maximum of 20 runs in one session (after a warm-up run), in ms
    { echo '\timing on'; for _ in $(seq 21); do echo "$1;"; done; } |
        sql -o /dev/null |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 20 | sort -n |
        awk '{ v[NR] = $1 } END { if (NR != 20) exit 1; printf "%.1f %.1f\n", v[int((NR + 1) / 2)], v[NR] }'
}
rows=""
worst=0
for read in "SELECT * FROM job.metrics" "SELECT * FROM job.queue_metrics" "SELECT * FROM job.workers" \
    "SELECT job.prometheus_metrics()" "SELECT * FROM job.queue_stats"; do
    read -r median max < <(time_ms "$read")
    echo "  metrics: $read: median $median ms, max $max ms" >&2
    rows+="| \`$read\` | $median | $max |"$'\n'
    if [ "$read" != "SELECT * FROM job.queue_stats" ]; then
        worst=$(awk -v a="$worst" -v b="$max" 'BEGIN { print (b > a ? b : a) }')
    fi
done
history=$(sql -c "SELECT pg_size_pretty(pg_total_relation_size('job.finished_jobs'))")
"$bin/psql" -X -q "${conn[@]}" -d postgres -c "DROP DATABASE bench_metrics WITH (FORCE)"

section=$(
    echo
    echo "## Reading metrics with $(sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$finished") finished jobs retained ($history)"
    echo
    echo "| read | median ms | max ms (of 20) |"
    echo "|---|---:|---:|"
    printf '%s' "$rows"
    echo
    echo "10,000 live jobs, 10 queues, 2 hours of minute buckets for 20 queue/job-type pairs (every"
    echo "writer shard), 50 workers. \`job.queue_stats\` (0.1.0's view, kept) counts rows, for comparison."
)
echo "$section"
echo "$section" >>"$out"
awk -v w="$worst" 'BEGIN { exit !(w < 50) }' || { echo "bench: a metric read took $worst ms (limit 50)" >&2; exit 1; }
