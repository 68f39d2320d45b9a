#!/usr/bin/env bash
# `make bench` (and `make bench-flow`): what flow control costs a worker.  The single-job and
# batched processing rates of a queue with per-key concurrency limits and of a rate-limited
# queue, each as a ratio to the same queue without limits, measured in the same run, on the
# cluster bench/run.sh leaves running, in a database of its own (bench_flow, bench/flow_setup.sql).
#
# Variants (FLOW_VARIANTS), each against queue `plain` (no limits) with the same script:
#   keyed_one     queue `keyed`, key_concurrency 1, its backlog round-robin over FLOW_KEYS
#                 keys; dequeue 1 + complete (bench/pgbench/flow_process_one.sql)
#   keyed_batch   the same queue; dequeue 100 + complete_many (flow_process_batch.sql): a
#                 claim takes up to 100 jobs of 100 different keys
#   rated_one     queue `rated`, rate_limit FLOW_RATE per second, so high that it never binds:
#                 the cost of the limiter, not of waiting for it; dequeue 1 + complete
#   rated_batch   the same queue; dequeue 100 + complete_many
# Aim (issue): each at least 0.8x the plain queue's rate.  Reported, not enforced.
# Then one run where a rate limit binds (queue `bound`, FLOW_BIND_RATE per second, single-job,
# a client whose claim comes back empty polls again 10 ms later: flow_poll_one.sql): starts/s
# against the limit (a saturated queue runs at a little under it: src/flow.rs), and no window
# of one second may hold more starts than the limit (checked).
#
#   bash bench/flow.sh [PORT]         (PORT: 55434, the bench cluster)
#
# Environment (defaults in brackets):
#   FLOW_SECONDS         length of each measured pgbench run [20]
#   FLOW_ROUNDS          measured runs per variant and side, which side goes first alternating;
#                        the table shows the mean [2]
#   FLOW_CLIENTS, FLOW_THREADS      pgbench -c / -j [8 / 2]
#   FLOW_VARIANTS        [keyed_one keyed_batch rated_one rated_batch] (empty: only the binding run)
#   FLOW_ONE_BACKLOG     jobs waiting when a single-job run starts [200000]
#   FLOW_BATCH_BACKLOG   the same for batched runs [1000000] (queue keyed's, one job.enqueue
#                        per job, loads at 5,000-15,000 jobs/s here: one to three minutes)
#   FLOW_KEYS            concurrency keys of queue keyed [1000]
#   FLOW_RATE            queue rated's rate_limit per second [1000000]
#   FLOW_BIND_RATE       queue bound's rate_limit per second; 0 skips that run [500]
#   BENCH_OUT            where the section goes (appended) [bench/last-run.md]
#
# Every measured run starts alike on both sides: all job tables truncated and rate windows
# dropped (but 10,000 completed jobs of another queue stay in job.finished_jobs: see
# bench/flow_setup.sql for why), the backlog loaded (keyed: one job.enqueue per job, the keys
# taking turns; the others: enqueue_many, 50,000 jobs per transaction), VACUUM ANALYZE,
# CHECKPOINT, and no transaction open for over 10 s (checked).  Commits are durable
# (synchronous_commit and fsync on: checked).  Each run is checked afterwards, and the script
# fails if a check does: pgbench exits 0 with no failed transaction; nothing is left claimed;
# every job that left the queue was completed, once; transactions x jobs per transaction jobs
# left (no empty or short claim), except in keyed_batch, whose claims may come back short or
# empty (8 clients holding 100 keys each leave about 200 of the 1,000 free, and a key another
# client is claiming is passed over; an empty claim looks again 1 ms later), so the table
# counts the jobs moved and the runs show the mean claim; the backlog did not run dry;
# and the watcher (flow_watch.sql), sampling every 100 ms, never saw a key with more running
# jobs than its limit.  Where the time goes, per variant and side: pgbench's latency per
# statement (-r), the self time per transaction of the functions pgbench's sessions called
# (track_functions = all, on both sides) and the wait events of its busy backends (sampled by
# the watcher).  The database is dropped afterwards, but kept when a check fails, for a look.
# pgbench logs go to target/bench-logs/flow-<timestamp>/.
set -euo pipefail

port=${1:-55434}
db=bench_flow
. "$(dirname "$0")/lib.sh"

seconds=${FLOW_SECONDS:-20}
rounds=${FLOW_ROUNDS:-2}
clients=${FLOW_CLIENTS:-8}
threads=${FLOW_THREADS:-2}
variants=${FLOW_VARIANTS-"keyed_one keyed_batch rated_one rated_batch"}
one_backlog=${FLOW_ONE_BACKLOG:-200000}
batch_backlog=${FLOW_BATCH_BACKLOG:-1000000}
keys=${FLOW_KEYS:-1000}
rate=${FLOW_RATE:-1000000}
bind_rate=${FLOW_BIND_RATE:-500}
aim=0.8
out=${BENCH_OUT:-$here/last-run.md}
logs=$root/target/bench-logs/flow-$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"


queue_of() { echo "${1%_*}"; }  # keyed_one -> keyed
mode_of() { echo "${1##*_}"; }  # keyed_one -> one
per_tx_of() { case $1 in batch) echo 100 ;; *) echo 1 ;; esac; }
backlog_of() { case $1 in batch) echo "$batch_backlog" ;; *) echo "$one_backlog" ;; esac; }
mode_label() {
    case $1 in
    one) echo "1 job per round trip (dequeue 1 + complete)" ;;
    batch) echo "batches of 100 (dequeue 100 + complete_many)" ;;
    esac
}
queue_label() {
    case $1 in
    keyed) echo "key_concurrency 1, $(group "$keys") keys" ;;
    rated) echo "rate_limit $(group "$rate")/s (not binding)" ;;
    plain) echo "no limits" ;;
    esac
}
for v in $variants; do
    case $v in keyed_one | keyed_batch | rated_one | rated_batch) ;; *) die "unknown variant $v" ;; esac
done

# ---------------------------------------------------------------------------------------------
# The database, the queues, and the commit mode.
require_cluster
fresh_db "$db"
sql -v rate="$rate" -v bind_rate="$((bind_rate > 0 ? bind_rate : 1))" -f "$here/flow_setup.sql" >/dev/null
require_durable_commits
# On a failed check the database stays, for a look; on success it goes (at the end).
finished=0
trap '[ $finished = 1 ] || echo "bench: database $db kept for a look (DROP DATABASE $db drops it)" >&2' EXIT

# ---------------------------------------------------------------------------------------------
# Machine and setup description (as bench/run.sh's).
machine=$(
    machine_description
    cat <<EOF
- pgbench: -c $clients -j $threads -M prepared -n -r -T $seconds, $rounds round(s) per variant and side; backlog $(group "$one_backlog") jobs (single-job), $(group "$batch_backlog") (batched); pgbench's sessions with track_functions=all; a watcher client sampling every 100 ms beside each run
EOF
)
echo
echo "$machine"
echo

# ---------------------------------------------------------------------------------------------
# Before a run: empty tables, the backlog, VACUUM ANALYZE, CHECKPOINT; then the counts must
# show exactly the backlog waiting.
prepare() { # prepare QUEUE BACKLOG
    local queue=$1 backlog=$2 counts long
    # TRUNCATE waits for every transaction that touched the tables: not forever.
    if ! sql -c "SET lock_timeout = '2min'" -c 'CALL flow_reset()'; then
        sql -c "SELECT pid, backend_type, now() - xact_start AS in_transaction_for FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL" >&2
        die "$queue: the tables could not be reset within 2 minutes (sessions in a transaction above)"
    fi
    if [ "$queue" = keyed ]; then
        sql -c "CALL flow_load('$queue', $backlog, $keys)"
    else
        sql -c "CALL flow_load('$queue', $backlog)"
    fi
    sql -c 'VACUUM (ANALYZE) job.queues, job.live_jobs, job.finished_jobs, job.idempotency_keys, job.rate_windows'
    sql -c 'CHECKPOINT'
    counts=$(sql -F ' ' -c "SELECT waiting, running, done, other FROM flow_counts('$queue')")
    [ "$counts" = "$backlog 0 0 0" ] ||
        die "$queue: expected $backlog jobs waiting before the run, found waiting/running/done/other = $counts"
    # A transaction left open (by anyone but vacuum) holds back the cleanup of claimed jobs'
    # index entries, which claims then step over: the run would measure that.
    long=$(sql -c "SELECT string_agg(format('pid %s (%s) for %s', pid, backend_type, date_trunc('second', now() - xact_start)), '; ')
                     FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type <> 'autovacuum worker' AND xact_start < now() - interval '10 seconds'")
    [ -z "$long" ] || die "$queue: a transaction is open in $db before the run: $long"
}

# pgbench on QUEUE with SCRIPT for $seconds, and the watcher beside it.  Sets the globals tx,
# tps, lat, dequeue_ms, complete_ms, samples and other (CPU % used by anything else).
run_pgbench() { # run_pgbench QUEUE MODE ROUND SCRIPT LOG
    local queue=$1 mode=$2 round=$3 script=$4 log=$5 key_limit=1000000 watch_pid failed
    [ "$queue" = keyed ] && key_limit=1
    sql -c 'CALL flow_functions_mark()'
    PGAPPNAME=flow-watch "$bin/pgbench" "${conn[@]}" -c 1 -j 1 -M prepared -n -T "$seconds" \
        -D queue="$queue" -D mode="$mode" -D round="$round" -D key_limit="$key_limit" \
        -f "$here/pgbench/flow_watch.sql" "$db" >"$log.watch" 2>&1 &
    watch_pid=$!
    local busy0 ours0 busy1 ours1 start end
    busy0=$(busy_ticks)
    ours0=$(cluster_ticks)
    start=$(now_s)
    if ! PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c track_functions=all" /usr/bin/time -f '%U %S' -o "$log.time" \
        "$bin/pgbench" "${conn[@]}" -c "$clients" -j "$threads" -M prepared -n -r -T "$seconds" -P 5 \
        -D queue="$queue" -f "$here/pgbench/$script" "$db" >"$log" 2>&1; then
        kill "$watch_pid" 2>/dev/null || true
        cat "$log" >&2
        die "$queue/$mode: pgbench failed (log: $log)"
    fi
    if ! wait "$watch_pid"; then
        cat "$log.watch" >&2
        die "$queue/$mode: the watcher failed (log: $log.watch)"
    fi
    sleep 0.3 # let the postmaster reap the exiting backends (their CPU time and function stats count)
    end=$(now_s)
    busy1=$(busy_ticks)
    ours1=$(cluster_ticks)
    other=$(awk -v b="$((busy1 - busy0))" -v o="$((ours1 - ours0))" -v t="$(tail -1 "$log.time")" \
        -v s="$start" -v e="$end" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { split(t, p, " "); x = ((b - o) / hz - p[1] - p[2]) / ((e - s) * n) * 100;
                 printf "%.0f", (x < 0 ? 0 : x) }')

    read_pgbench_log "$queue/$mode" "$log" "$log.watch"
    # pgbench -r: "<latency ms> <failures> <statement's first line>" per statement; each
    # script's first statement is its claim.
    dequeue_ms=$(awk '/^statement latencies/ { s = 1; next } s && $3 == "SELECT" { print $1; exit }' "$log")
    complete_ms=$(awk '/job\.complete(_many)?\(/ { print $1; exit }' "$log")
    samples=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log.watch")
    [ -n "$dequeue_ms" ] && [ -n "$complete_ms" ] && [ -n "$samples" ] ||
        die "$queue/$mode: cannot read pgbench's statement latencies or the watcher's samples ($log)"
    sql -c "CALL flow_functions_since('$queue', '$mode', $round)"
}

# One measured run: prepare, pgbench, check.  Prints "<jobs/s>" on stdout; details to stderr.
measure() { # measure QUEUE MODE ROUND
    local queue=$1 mode=$2 round=$3 per_tx backlog log
    per_tx=$(per_tx_of "$mode")
    backlog=$(backlog_of "$mode")
    log=$logs/$mode.$queue.round$round.log
    prepare "$queue" "$backlog"
    run_pgbench "$queue" "$mode" "$round" "flow_process_$mode.sql" "$log"

    local counts waiting running done done_ids rest moved expected=$((tx * per_tx))
    counts=$(sql -F ' ' -c "SELECT waiting, running, done, done_ids, other FROM flow_counts('$queue')")
    read -r waiting running done done_ids rest <<<"$counts"
    moved=$((backlog - waiting))
    [ "$running" -eq 0 ] ||
        die "$queue/$mode: $running jobs left claimed (claimed but not acknowledged, or acknowledged under the wrong token?)"
    [ "$rest" -eq 0 ] || die "$queue/$mode: $rest jobs neither waiting nor completed (failed, retrying or dead)"
    [ "$done" -eq "$done_ids" ] || die "$queue/$mode: $((done - done_ids)) jobs completed more than once"
    [ "$done" -eq "$moved" ] || die "$queue/$mode: $moved jobs left the queue but $done were completed"
    if [ "$queue/$mode" = keyed/batch ]; then
        [ "$moved" -le "$expected" ] ||
            die "$queue/$mode: $tx claims of 0 to $per_tx jobs cannot move $moved jobs"
    else
        [ "$moved" -eq "$expected" ] ||
            die "$queue/$mode: $tx transactions of $per_tx jobs should move $expected jobs, but $moved moved (short or empty claims?)"
    fi
    [ "$waiting" -ge $((clients * per_tx)) ] ||
        die "$queue/$mode: the backlog ran (nearly) dry: $waiting jobs left of $backlog; raise FLOW_$(tr a-z A-Z <<<"$mode")_BACKLOG"

    local jobs_s per_claim
    jobs_s=$(awk -v t="$tps" -v m="$moved" -v x="$tx" 'BEGIN { printf "%.0f", t * m / x }')
    per_claim=$(awk -v m="$moved" -v x="$tx" 'BEGIN { printf "%.1f", m / x }')
    sql -c "INSERT INTO flow_runs VALUES ('$queue', '$mode', $round, $tx, $moved, $jobs_s, $dequeue_ms, $complete_ms)"
    printf '  %-6s %-5s round %s: %8s jobs/s  (tps %.1f, latency avg %s: dequeue %s ms, complete %s ms; %s jobs, %s per claim; %s watcher samples; other processes used %s%% of the CPUs)\n' \
        "$queue" "$mode" "$round" "$jobs_s" "$tps" "$lat" "$dequeue_ms" "$complete_ms" "$moved" "$per_claim" "$samples" "$other" |
        tee -a "$logs/runs.txt" >&2
    echo "$jobs_s"
}

declare -A results
i=0
for variant in $variants; do
    queue=$(queue_of "$variant")
    mode=$(mode_of "$variant")
    echo "$(queue_label "$queue"), $(mode_label "$mode"):"
    for ((r = 1; r <= rounds; r++)); do
        # Alternate which side goes first, across variants and across rounds.
        if (((i + r) % 2 == 1)); then order="$queue plain"; else order="plain $queue"; fi
        for side in $order; do
            # Each variant has plain runs of its own, next to its limited ones in time.
            results[$variant.$side]+="$(measure "$side" "$mode" "$r") "
        done
    done
    i=$((i + 1))
done

# ---------------------------------------------------------------------------------------------
# A rate limit that binds: starts/s against it, and the busiest second.
bind_line=""
if [ "$bind_rate" -gt 0 ]; then
    echo "rate_limit $(group "$bind_rate")/s (binding), 1 job per round trip, polling 10 ms after an empty claim:"
    # The limit caps the run at bind_rate per second: twice that is plenty.
    bind_backlog=$((bind_rate * (seconds + 2) * 2))
    log=$logs/one.bound.log
    prepare bound "$bind_backlog"
    run_pgbench bound one 1 flow_poll_one.sql "$log"
    counts=$(sql -F ' ' -c "SELECT waiting, running, done, done_ids, other FROM flow_counts('bound')")
    read -r waiting running done done_ids rest <<<"$counts"
    [ "$running" -eq 0 ] && [ "$rest" -eq 0 ] || die "bound: $running jobs left claimed, $rest neither waiting nor completed"
    [ "$done" -eq "$done_ids" ] || die "bound: $((done - done_ids)) jobs completed more than once"
    [ "$done" -eq $((bind_backlog - waiting)) ] || die "bound: $((bind_backlog - waiting)) jobs left the queue but $done were completed"
    [ "$waiting" -gt 0 ] || die "bound: the backlog ran dry (the limit did not hold?)"
    busiest=$(sql -c "SELECT flow_busiest_second('bound')")
    [ "$busiest" -le "$bind_rate" ] ||
        die "bound: $busiest jobs started within one second, over the limit of $bind_rate"
    starts_s=$(awk -v n="$done" -v t="$seconds" 'BEGIN { printf "%.0f", n / t }')
    # Its where-the-time-goes line counts per claim attempt, the empty ones included.
    sql -c "INSERT INTO flow_runs VALUES ('bound', 'one', 1, $tx, $done, $starts_s, $dequeue_ms, $complete_ms)"
    bind_line="rate_limit $(group "$bind_rate")/s, binding (1 job per round trip, $clients clients polling again 10 ms after an empty claim, $seconds s): $(group "$done") starts, $(group "$starts_s")/s ($(awk -v a="$starts_s" -v b="$bind_rate" 'BEGIN { printf "%.2f", a / b }')× the limit), $(group "$tx") claims of which $(group "$((tx - done))") came back empty; the busiest 1-second window held $(group "$busiest") starts (at most $(group "$bind_rate"): checked); $samples watcher samples; other processes used ${other}% of the CPUs."
    printf '  bound  one   round 1: %s\n' "$bind_line" | tee -a "$logs/runs.txt" >&2
fi

# ---------------------------------------------------------------------------------------------
# The table: the mean over rounds of each side's jobs/s; then where the time went.
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$1"; }
table=$(
    [ -n "$variants" ] || exit 0
    echo "| variant | limited jobs/s | plain jobs/s | ratio | aim | met? |"
    echo "|---|---:|---:|---:|---:|---|"
    for variant in $variants; do
        limited=$(mean "${results[$variant.$(queue_of "$variant")]}")
        plain=$(mean "${results[$variant.plain]}")
        ratio=$(awk -v a="$limited" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')
        met=$(awk -v r="$ratio" -v a="$aim" 'BEGIN { print (r >= a ? "met" : "**missed**") }')
        printf '| %s, %s | %s | %s | %s× | ≥ %s× | %s |\n' "$(queue_label "$(queue_of "$variant")")" \
            "$(mode_label "$(mode_of "$variant")")" "$(group "$limited")" "$(group "$plain")" "$ratio" "$aim" "$met"
    done
)
where=$(
    for variant in $variants; do
        queue=$(queue_of "$variant")
        mode=$(mode_of "$variant")
        echo "- $queue, $(mode_label "$mode"): $(sql -c "SELECT flow_where('$queue', '$mode')")"
    done
    for mode in one batch; do
        if [[ " $variants " == *"_$mode "* ]]; then
            echo "- plain, $(mode_label "$mode"): $(sql -c "SELECT flow_where('plain', '$mode')")"
        fi
    done
    if [ -n "$bind_line" ]; then
        echo "- bound (binding), per claim attempt, the empty ones included: $(sql -c "SELECT flow_where('bound', 'one')")"
    fi
)

report=$(
    echo
    echo "## Flow control: limited queues against the same queue without limits"
    echo
    if [ -n "$table" ]; then
        echo "$table"
        echo
    fi
    if [ -n "$bind_line" ]; then
        echo "$bind_line"
        echo
    fi
    echo "Where the time goes (means over the runs; self time: of each function, without the functions it calls):"
    echo
    echo "$where"
    echo
    echo "$machine"
    runs_section "$logs/runs.txt"
)
echo "$report"
echo "$report" >>"$out"
admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
finished=1
echo
echo "Appended to $out; pgbench logs in $logs."
