#!/usr/bin/env bash
# `make bench`: pgbench scenarios for pg_jobqueue and, in the same run on the same cluster and
# database, for a plain-SQL FOR UPDATE SKIP LOCKED baseline queue (bench/setup.sql); prints
# jobs/s for both and their ratio as a Markdown table, also written to bench/last-run.md.
#
# Scenarios (bench/pgbench/<side>_<scenario>.sql; BENCH_CLIENTS clients each):
#   enqueue             1 job per transaction
#   enqueue_many        100 jobs per transaction
#   process_one         dequeue 1, then complete it: two round trips and two commits per job
#   process_batch       dequeue 100, then complete_many
#   process_fused       one round trip and one commit per job: dequeue completes the job the
#                       previous call claimed (the baseline: one statement deletes the previous
#                       job and claims the next).  Rated against the baseline's fused rate and
#                       against its unfused process_one rate of the same run (the table's
#                       extra row), since that is what a worker gains by fusing.
#   enqueue_async, process_one_async
#                       the scripts of enqueue and process_one with synchronous_commit off for
#                       pgbench's sessions on both sides (PGOPTIONS): no WAL flush to wait for,
#                       so CPU per job sets the pace.
#
#   bash bench/run.sh [PORT]          (make bench: after `make install`, PORT 55434)
#
# Environment (defaults in brackets):
#   BENCH_SECONDS         length of each measured pgbench run [30]
#   BENCH_BATCH_SECONDS   the same for process_batch, whose backlog must last [min(20, BENCH_SECONDS)]
#   BENCH_ROUNDS          measured runs per scenario and side, which side goes first
#                         alternating; the table shows the mean [2]
#   BENCH_SCENARIOS       which scenarios [enqueue enqueue_many process_one process_batch
#                         process_fused enqueue_async process_one_async]
#   BENCH_CLIENTS, BENCH_THREADS                      pgbench -c / -j [8 / 2]
#   BENCH_ONE_BACKLOG     jobs waiting when process_one and process_fused start [400000]
#   BENCH_ASYNC_BACKLOG   the same for process_one_async [BENCH_ONE_BACKLOG]
#   BENCH_BATCH_BACKLOG   jobs waiting when process_batch starts [1500000]
#   BENCH_OUT             where the table and machine description go [bench/last-run.md]
#
# Every measured run starts alike on both sides: all job tables truncated, the backlog (if
# any) loaded in transactions of 50,000 jobs, VACUUM ANALYZE, CHECKPOINT.  Commits are durable
# (synchronous_commit on, fsync on: the server's defaults, checked) except in the *_async
# scenarios, whose sessions turn synchronous_commit off (checked too).  Each run is checked
# afterwards: pgbench must exit 0 with no failed transactions, and the jobs the tables gained
# or lost must be exactly transactions x jobs per transaction (no empty or short claim,
# nothing left claimed; process_fused: each client ends holding exactly one claimed job, and
# every other job that left the queue was completed).
# The cluster is left running; `make bench-stop` stops it.  pgbench logs go to
# target/bench-logs/<timestamp>/, with results.txt (each scenario's mean jobs/s per side, read
# by bench/worker.sh); target/bench-logs/latest points to the newest.
set -euo pipefail

port=${1:-55434}
. "$(dirname "$0")/lib.sh"

run_seconds=${BENCH_SECONDS:-30}
# The batched baseline can claim 1.5 M jobs in 30 s: its runs are shorter so the backlog lasts.
batch_seconds=${BENCH_BATCH_SECONDS:-$(( run_seconds < 20 ? run_seconds : 20 ))}
rounds=${BENCH_ROUNDS:-2}
scenarios=${BENCH_SCENARIOS:-"enqueue enqueue_many process_one process_batch process_fused enqueue_async process_one_async"}
clients=${BENCH_CLIENTS:-8}
threads=${BENCH_THREADS:-2}
one_backlog=${BENCH_ONE_BACKLOG:-400000}
async_backlog=${BENCH_ASYNC_BACKLOG:-$one_backlog}
batch_backlog=${BENCH_BATCH_BACKLOG:-1500000}
out=${BENCH_OUT:-$here/last-run.md}
logs=$root/target/bench-logs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"

# Per scenario: its pgbench script, jobs per transaction, backlog, label, aim (minimum ratio).
script_of() { echo "${1%_async}"; } # the *_async scenarios run their synchronous twin's script
jobs_per_tx() { case $1 in enqueue_many | process_batch) echo 100 ;; *) echo 1 ;; esac; }
backlog_of() {
    case $1 in
    process_one | process_fused) echo "$one_backlog" ;;
    process_one_async) echo "$async_backlog" ;;
    process_batch) echo "$batch_backlog" ;;
    *) echo 0 ;;
    esac
}
label_of() {
    case $1 in
    enqueue) echo "1. enqueue, 1 job per transaction" ;;
    enqueue_many) echo "2. enqueue_many, 100 jobs per transaction" ;;
    process_one) echo "3. process 1 job per round trip (dequeue 1 + complete)" ;;
    process_batch) echo "4. process in batches of 100 (dequeue 100 + complete_many)" ;;
    process_fused) echo "5. process 1 job per round trip, fused (dequeue completes the previous job)" ;;
    enqueue_async) echo "6. enqueue, 1 job per transaction, synchronous_commit off" ;;
    process_one_async) echo "7. process 1 job per round trip (dequeue 1 + complete), synchronous_commit off" ;;
    esac
}
aim_of() {
    case $1 in
    enqueue | enqueue_many | *_async) echo 0.8 ;;
    process_one | process_fused) echo 1.0 ;;
    process_batch) echo 0.7 ;;
    esac
}
# process_fused's second aim: against the baseline's unfused single-job rate (process_one).
fused_vs_unfused_aim=1.5
# pgbench's extra options per scenario: process_fused carries the previous claim's id and token
# from one transaction to the next (\gset); these start values complete nothing.  The
# baseline's one-statement delete-and-claim deadlocks now and then (2 in 40,000 transactions
# in a 15-second run); a worker would retry, and so does pgbench (both sides alike).
pgbench_vars() {
    case $1 in
    process_fused) echo "-D id=0 -D lease_token=00000000-0000-0000-0000-000000000000 --max-tries 10" ;;
    esac
}
# The *_async scenarios' sessions (pgbench's, on both sides) commit without waiting for the
# WAL flush; the server default stays on (checked below).
pgoptions_of() {
    case $1 in
    *_async) echo "${PGOPTIONS:+$PGOPTIONS }-c synchronous_commit=off" ;;
    *) echo "${PGOPTIONS:-}" ;;
    esac
}
side_name() { case $1 in jobqueue) echo pg_jobqueue ;; baseline) echo baseline ;; esac; }

for s in $scenarios; do
    [ -n "$(label_of "$s")" ] && [ -f "$here/pgbench/jobqueue_$(script_of "$s").sql" ] || die "unknown scenario $s"
done

# ---------------------------------------------------------------------------------------------
# The cluster (restarted so that it loads the library just installed) and a fresh database.
restart_cluster
fresh_db bench
sql -f "$here/setup.sql" >/dev/null

require_durable_commits

# ---------------------------------------------------------------------------------------------
# Machine and setup description.
machine=$(
    machine_description
    cat <<EOF
- pgbench: -c $clients -j $threads -M prepared -n -T $run_seconds (process_batch: -T $batch_seconds), $rounds round(s) per scenario and side; *_async: PGOPTIONS='-c synchronous_commit=off'
EOF
)
echo
echo "$machine"
echo

# ---------------------------------------------------------------------------------------------
# One measured run: prepare, pgbench, check.  Prints "<jobs/s>" on stdout; details to stderr.
measure() {
    local side=$1 scenario=$2 round=$3
    local per_tx backlog log before after
    per_tx=$(jobs_per_tx "$scenario")
    backlog=$(backlog_of "$scenario")
    log=$logs/$scenario.$side.round$round.log

    sql -c 'CALL bench_reset()'
    if [ "$backlog" -gt 0 ]; then
        sql -c "CALL bench_load_$side($backlog)"
    fi
    sql -c 'VACUUM (ANALYZE) job.queues, job.live_jobs, job.finished_jobs, job.idempotency_keys, baseline_jobs'
    sql -c 'CHECKPOINT'
    before=$(sql -F ' ' -c "SELECT ready, claimed, coalesce(done, 0) FROM bench_counts('$side')")
    read -r b_ready b_claimed b_done <<<"$before"
    [ "$b_ready" -eq "$backlog" ] && [ "$b_claimed" -eq 0 ] && [ "$b_done" -eq 0 ] ||
        die "$scenario/$side: expected $backlog ready jobs before the run, found ready/claimed/done = $before"

    local busy0 ours0 busy1 ours1 start end seconds=$run_seconds pgoptions vars
    [ "$scenario" = process_batch ] && seconds=$batch_seconds
    pgoptions=$(pgoptions_of "$scenario")
    read -r -a vars <<<"$(pgbench_vars "$scenario")"
    # The sessions get the commit mode the scenario says (PGOPTIONS reaches pgbench's too).
    local commit_mode
    commit_mode=$(PGOPTIONS=$pgoptions sql -c 'SHOW synchronous_commit')
    case $scenario in
    *_async) [ "$commit_mode" = off ] || die "$scenario/$side: sessions run with synchronous_commit=$commit_mode, not off" ;;
    *) [ "$commit_mode" = on ] || die "$scenario/$side: sessions run with synchronous_commit=$commit_mode, not on" ;;
    esac
    busy0=$(busy_ticks)
    ours0=$(cluster_ticks)
    start=$(now_s)
    if ! PGOPTIONS=$pgoptions /usr/bin/time -f '%U %S' -o "$log.time" \
        "$bin/pgbench" "${conn[@]}" -c "$clients" -j "$threads" -M prepared -n -T "$seconds" -P 5 \
        "${vars[@]}" -f "$here/pgbench/${side}_$(script_of "$scenario").sql" bench >"$log" 2>&1; then
        cat "$log" >&2
        die "$scenario/$side: pgbench failed (log: $log)"
    fi
    sleep 0.3 # let the postmaster reap the exiting backends (their CPU time counts as ours)
    end=$(now_s)
    busy1=$(busy_ticks)
    ours1=$(cluster_ticks)
    # CPU used by anything else on the machine during the run, in % of all CPUs.
    local other
    other=$(awk -v b="$((busy1 - busy0))" -v o="$((ours1 - ours0))" -v t="$(tail -1 "$log.time")" \
        -v s="$start" -v e="$end" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { split(t, p, " "); x = ((b - o) / hz - p[1] - p[2]) / ((e - s) * n) * 100;
                 printf "%.0f", (x < 0 ? 0 : x) }')

    local tx tps lat
    read_pgbench_log "$scenario/$side" "$log"

    # Every transaction moved exactly per_tx jobs, and nothing is left claimed (process_fused:
    # nothing but each client's last claim, which no later call of its acknowledged).
    after=$(sql -F ' ' -c "SELECT ready, claimed, coalesce(done, 0) FROM bench_counts('$side')")
    read -r a_ready a_claimed a_done <<<"$after"
    local expected=$((tx * per_tx)) moved held=0
    [ "$scenario" = process_fused ] && held=$clients
    case $scenario in
    enqueue*)
        moved=$((a_ready - b_ready))
        [ "$a_claimed" -eq 0 ] || die "$scenario/$side: $a_claimed jobs claimed after an enqueue run"
        ;;
    process*)
        moved=$((b_ready - a_ready))
        [ "$a_claimed" -eq "$held" ] ||
            die "$scenario/$side: $a_claimed jobs left claimed, expected $held (claimed but not acknowledged, or acknowledged under the wrong token?)"
        if [ "$side" = jobqueue ] && [ "$a_done" -ne $((moved - held)) ]; then
            die "$scenario/$side: $moved jobs left the queue, $held are still held by the clients, but $a_done were completed"
        fi
        if [ "$a_ready" -lt $((clients * per_tx)) ]; then
            local knob=ONE
            case $scenario in process_batch) knob=BATCH ;; process_one_async) knob=ASYNC ;; esac
            die "$scenario/$side: the backlog ran (nearly) dry: $a_ready jobs left of $backlog; raise BENCH_${knob}_BACKLOG"
        fi
        ;;
    esac
    [ "$moved" -eq "$expected" ] ||
        die "$scenario/$side: $tx transactions of $per_tx jobs should move $expected jobs, but $moved moved (short or empty claims?)"

    local jobs_s
    jobs_s=$(awk -v t="$tps" -v n="$per_tx" 'BEGIN { printf "%.0f", t * n }')
    printf '  %-17s %-11s round %s: %8s jobs/s  (tps %.1f, latency avg %s, %s jobs; other processes used %s%% of the CPUs)\n' \
        "$scenario" "$(side_name "$side")" "$round" "$jobs_s" "$tps" "$lat" "$moved" "$other" | tee -a "$logs/runs.txt" >&2
    echo "$jobs_s"
}

declare -A results
i=0
for scenario in $scenarios; do
    echo "$(label_of "$scenario"):"
    for ((r = 1; r <= rounds; r++)); do
        # Alternate which side goes first, across scenarios and across rounds.
        if (((i + r) % 2 == 1)); then order="jobqueue baseline"; else order="baseline jobqueue"; fi
        for side in $order; do
            results[$scenario.$side]+="$(measure "$side" "$scenario" "$r") "
        done
    done
    i=$((i + 1))
done
sql -c 'CALL bench_reset()'

# ---------------------------------------------------------------------------------------------
# The table: the mean over rounds of each side's jobs/s.
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$1"; }

# The same means for the scripts `make bench` runs next (bench/worker.sh rates the executors
# against the baseline's process_one), one "<scenario> <side> <jobs/s>" per line.
for scenario in $scenarios; do
    for side in jobqueue baseline; do
        echo "$scenario $side $(mean "${results[$scenario.$side]}")"
    done
done >"$logs/results.txt"
ln -sfn "$(basename "$logs")" "$root/target/bench-logs/latest"

row() { # row LABEL JOBQUEUE BASELINE AIM: one line of the table
    local ratio verdict
    ratio=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
    verdict=$(awk -v r="$ratio" -v a="$4" 'BEGIN { print (r >= a ? "met" : "missed") }')
    printf '| %s | %s | %s | %s× | ≥ %s× (%s) |\n' "$1" "$(group "$2")" "$(group "$3")" "$ratio" "$4" "$verdict"
}
table=$(
    echo "| scenario | pg_jobqueue jobs/s | baseline jobs/s | ratio | aim |"
    echo "|---|---:|---:|---:|---|"
    for scenario in $scenarios; do
        jq=$(mean "${results[$scenario.jobqueue]}")
        row "$(label_of "$scenario")" "$jq" "$(mean "${results[$scenario.baseline]}")" "$(aim_of "$scenario")"
        # Fusing is worth what it gains over the unfused loop a worker would otherwise run: the
        # same pg_jobqueue rate against the baseline's process_one rate of this run.
        if [ "$scenario" = process_fused ]; then
            label="5. (the same pg_jobqueue rate) against the baseline's unfused claim + delete (3.)"
            if [ -n "${results[process_one.baseline]:-}" ]; then
                row "$label" "$jq" "$(mean "${results[process_one.baseline]}")" "$fused_vs_unfused_aim"
            else
                printf '| %s | %s | (not run) | – | ≥ %s× (add process_one to BENCH_SCENARIOS) |\n' \
                    "$label" "$(group "$jq")" "$fused_vs_unfused_aim"
            fi
        fi
    done
)

report=$(
    echo "## pg_jobqueue vs plain-SQL SKIP LOCKED baseline"
    echo
    echo "$table"
    echo
    echo "$machine"
    runs_section "$logs/runs.txt"
)
echo
echo "$report"
echo "$report" >"$out"
echo
echo "Written to $out; pgbench logs in $logs."
echo "The bench cluster keeps running on port $port (make bench-stop stops it)."
