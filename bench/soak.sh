#!/usr/bin/env bash
# `make bench-soak`: what bench/run.sh's runs are too short or too shallow to show, for
# pg_jobqueue and, in the same run on the same cluster, the plain-SQL FOR UPDATE SKIP LOCKED
# baseline of bench/setup.sql.  Every run processes jobs one per round trip exactly as
# bench/run.sh's process_one does (bench/pgbench/<side>_process_one.sql: dequeue 1, then
# complete it with the claim's token / claim 1, then delete it; 8 clients, durable commits).
#
#   1. depth: the single-job rate with BENCH_SOAK_BIG jobs waiting against the rate with
#      BENCH_SOAK_SMALL waiting; aim: big >= 0.9 x small for pg_jobqueue (the baseline's
#      ratio beside it).  A small backlog cannot last a run (30 s take 50,000 jobs or more), so
#      the small run starts with SMALL plus 1.5 x what the same side's big run took: at least
#      about SMALL stay waiting throughout, and the table gives each run's depth at its start
#      and end.  Before each pg_jobqueue run, with nothing else running on the cluster, the
#      CPU that the background worker's processes use over BENCH_SOAK_IDLE_SECONDS (this
#      database's scheduler, and the launcher; utime + stime from /proc/<pid>/stat).
#   2. long transaction: the rate without one (BENCH_SOAK_SECONDS), then BENCH_SOAK_MINUTES
#      of processing while another session holds a REPEATABLE READ snapshot (taken before the
#      run, checked unchanged after it), so that no dead row the run makes can be removed; the
#      rate per BENCH_SOAK_INTERVAL, and the last interval's against the rate without; aim:
#      >= 0.8 x for pg_jobqueue, the baseline's decay beside it.  The long run's backlog is
#      1.25 x what the rate without the transaction would take in that time.
#
# Every run starts as bench/run.sh's do (job tables truncated, the backlog loaded in
# transactions of 50,000 jobs: job.enqueue_many / plain INSERT, VACUUM ANALYZE, CHECKPOINT)
# and is checked as theirs are: pgbench exits 0 with no failed transaction, exactly one job
# left the queue per transaction, none is left claimed, and pg_jobqueue completed them all.
# Restarts the bench cluster (so that it runs the installed library); works in a database of
# its own, bench_soak (emptied at the end, dropped by the next soak).  The cluster is left
# running (make bench-stop).  Report: BENCH_OUT; pgbench logs: target/bench-logs/soak-<timestamp>/.
# The defaults run for most of an hour and need several GB of disk (10 M jobs, their indexes
# and WAL); the short check below takes about 3 minutes.
#
#   bash bench/soak.sh [PORT]          (make bench-soak: after `make install`, PORT 55434)
#
# Environment (defaults in brackets):
#   BENCH_SOAK_PARTS         which parts [depth longtx]
#   BENCH_SOAK_BIG           jobs waiting in the deep run [10000000]
#   BENCH_SOAK_SMALL         jobs waiting (at least, see above) in the shallow run [10000]
#   BENCH_SOAK_SECONDS       length of the depth runs and of the run without a long
#                            transaction [30]
#   BENCH_SOAK_IDLE_SECONDS  how long the background worker's CPU use is watched [30]
#   BENCH_SOAK_MINUTES       how long single-job processing runs beside the long transaction [10]
#   BENCH_SOAK_INTERVAL      seconds per rate reported during it; divides MINUTES x 60 [60]
#   BENCH_SOAK_REF_BACKLOG   jobs waiting when the run without a long transaction starts [400000]
#   BENCH_CLIENTS, BENCH_THREADS   pgbench -c / -j [8 / 2]
#   BENCH_OUT                where the report goes [bench/last-soak.md]
# A short check of the script itself:
#   BENCH_SOAK_BIG=200000 BENCH_SOAK_SECONDS=5 BENCH_SOAK_IDLE_SECONDS=5 BENCH_SOAK_MINUTES=1 \
#   BENCH_SOAK_INTERVAL=20 BENCH_SOAK_REF_BACKLOG=50000 bash bench/soak.sh
set -euo pipefail

port=${1:-55434}
db=bench_soak
. "$(dirname "$0")/lib.sh"

parts=${BENCH_SOAK_PARTS:-"depth longtx"}
big=${BENCH_SOAK_BIG:-10000000}
small=${BENCH_SOAK_SMALL:-10000}
run_seconds=${BENCH_SOAK_SECONDS:-30}
idle_seconds=${BENCH_SOAK_IDLE_SECONDS:-30}
minutes=${BENCH_SOAK_MINUTES:-10}
interval=${BENCH_SOAK_INTERVAL:-60}
ref_backlog=${BENCH_SOAK_REF_BACKLOG:-400000}
clients=${BENCH_CLIENTS:-8}
threads=${BENCH_THREADS:-2}
out=${BENCH_OUT:-$here/last-soak.md}
logs=$root/target/bench-logs/soak-$(date +%Y%m%d-%H%M%S)
holder_app=bench_soak_holder # the long transaction's session (application_name)
depth_aim=0.9
longtx_aim=0.8
mkdir -p "$logs"

die_prefix="soak: "
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v a="$2" 'BEGIN { print (r >= a ? "met" : "missed") }'; }
side_name() { case $1 in jobqueue) echo pg_jobqueue ;; baseline) echo baseline ;; esac; }

for p in $parts; do
    case $p in depth | longtx) ;; *) die "unknown part $p (depth, longtx)" ;; esac
done
[ $((minutes * 60 % interval)) -eq 0 ] || die "BENCH_SOAK_INTERVAL ($interval s) must divide BENCH_SOAK_MINUTES x 60"

# ---------------------------------------------------------------------------------------------
# The cluster (restarted so that it loads the library installed) and a fresh database.
restart_cluster
fresh_db "$db"
sql -f "$here/setup.sql" >/dev/null
require_durable_commits

# Whatever happens, the long transaction does not outlive the script.
holder=""
stop_holder() {
    sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$holder_app'" \
        >/dev/null 2>&1 || true
    if [ -n "$holder" ]; then
        wait "$holder" 2>/dev/null || true
        holder=""
    fi
}
trap stop_holder EXIT

machine=$(
    machine_description autovacuum
    cat <<EOF
- pgbench: -c $clients -j $threads -M prepared -n, bench/pgbench/<side>_process_one.sql
EOF
)
echo
echo "$machine"
echo

# ---------------------------------------------------------------------------------------------
# A side's tables emptied, `backlog` jobs loaded, vacuumed, analyzed and checkpointed.
prepare() {
    local side=$1 backlog=$2
    echo "  $(side_name "$side"): loading $(group "$backlog") jobs..." >&2
    sql -c 'CALL bench_reset()'
    if [ "$backlog" -gt 0 ]; then
        sql -c "CALL bench_load_$side($backlog)"
    fi
    sql -c 'VACUUM (ANALYZE) job.queues, job.live_jobs, job.finished_jobs, job.idempotency_keys, baseline_jobs'
    sql -c 'CHECKPOINT'
}

# Single-job processing for `seconds`, pgbench reporting every `every` seconds; checked as
# bench/run.sh checks its runs.  Prints "<jobs/s> <jobs moved> <ready before> <ready after>"
# and then the jobs/s of each `every`-second interval.
process() {
    local side=$1 tag=$2 seconds=$3 every=$4
    local log=$logs/$tag.$side.log before after tx failed tps
    before=$(sql -F ' ' -c "SELECT ready, claimed, coalesce(done, 0) FROM bench_counts('$side')")
    read -r b_ready b_claimed b_done <<<"$before"
    [ "$b_claimed" -eq 0 ] && [ "$b_done" -eq 0 ] ||
        die "$tag/$side: expected no claimed or completed jobs before the run, found ready/claimed/done = $before"
    if ! "$bin/pgbench" "${conn[@]}" -c "$clients" -j "$threads" -M prepared -n -T "$seconds" -P "$every" \
        -f "$here/pgbench/${side}_process_one.sql" "$db" >"$log" 2>&1; then
        cat "$log" >&2
        die "$tag/$side: pgbench failed (log: $log)"
    fi
    read_pgbench_log "$tag/$side" "$log"

    # Every transaction moved exactly one job, all acknowledged, nothing left claimed.
    after=$(sql -F ' ' -c "SELECT ready, claimed, coalesce(done, 0) FROM bench_counts('$side')")
    read -r a_ready a_claimed a_done <<<"$after"
    local moved=$((b_ready - a_ready))
    [ "$a_claimed" -eq 0 ] || die "$tag/$side: $a_claimed jobs left claimed, not acknowledged"
    [ "$moved" -eq "$tx" ] || die "$tag/$side: $tx transactions should move $tx jobs, but $moved moved"
    if [ "$side" = jobqueue ] && [ "$a_done" -ne "$moved" ]; then
        die "$tag/$side: $moved jobs left the queue but $a_done were completed"
    fi

    # The rate of each interval, from pgbench's progress lines; should the last line be
    # missing (the run ended on the boundary), what the total leaves for it.
    local rates n=$((seconds / every))
    rates=$(sed -n 's/^progress: [0-9.]* s, \([0-9.]*\) tps.*/\1/p' "$log" | head -n "$n" | xargs)
    if [ "$(wc -w <<<"$rates")" -eq $((n - 1)) ]; then
        rates+=" "$(awk -v r="$rates" -v tx="$tx" -v e="$every" \
            'BEGIN { k = split(r, v, " "); for (i = 1; i <= k; i++) tx -= v[i] * e; printf "%.1f", tx / e }')
    fi
    [ "$(wc -w <<<"$rates")" -eq "$n" ] || die "$tag/$side: expected $n progress reports in $log"
    local jobs_s
    jobs_s=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t }')
    printf '  %-11s %-14s %8s jobs/s  (%s jobs, %s -> %s waiting; per %s s: %s)\n' "$(side_name "$side")" "$tag" \
        "$jobs_s" "$moved" "$b_ready" "$a_ready" "$every" "$rates" | tee -a "$logs/runs.txt" >&2
    echo "$jobs_s $moved $b_ready $a_ready $rates"
}

# CPU use of the background worker's processes over `seconds` with nothing else running, in %
# of one CPU: "<this database's scheduler> <launcher>".
worker_cpu() {
    local seconds=$1 sched launcher s0 l0 s1 l1
    sched=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_jobqueue scheduler' AND datname = current_database()")
    launcher=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_jobqueue launcher'")
    [ -n "$sched" ] && [ -n "$launcher" ] || die "no pg_jobqueue scheduler (or launcher) serves $db"
    cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
    s0=$(cpu_ticks "$sched")
    l0=$(cpu_ticks "$launcher")
    sleep "$seconds"
    s1=$(cpu_ticks "$sched") || die "the scheduler (pid $sched) exited while watched"
    l1=$(cpu_ticks "$launcher") || die "the launcher (pid $launcher) exited while watched"
    awk -v s="$((s1 - s0))" -v l="$((l1 - l0))" -v t="$seconds" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f %.2f\n", s / hz / t * 100, l / hz / t * 100 }'
}

report="# pg_jobqueue soak: queue depth and a long transaction"$'\n'

# ---------------------------------------------------------------------------------------------
# 1. Depth.
if [[ " $parts " == *" depth "* ]]; then
    echo "1. depth: $(group "$big") against $(group "$small") jobs waiting:"
    declare -A depth cpu
    for side in jobqueue baseline; do
        prepare "$side" "$big"
        [ "$side" = jobqueue ] && cpu[big]=$(worker_cpu "$idle_seconds")
        depth[$side.big]=$(process "$side" depth-big "$run_seconds" "$run_seconds")
        read -r _ taken _ <<<"${depth[$side.big]}"
        prepare "$side" $((small + (taken * 3 + 1) / 2))
        [ "$side" = jobqueue ] && cpu[small]=$(worker_cpu "$idle_seconds")
        depth[$side.small]=$(process "$side" depth-small "$run_seconds" "$run_seconds")
    done
    sql -c 'CALL bench_reset()'

    cell() { # cell SIDE DEPTH: "jobs/s" and "start -> end" of a run
        local r s e
        read -r r _ s e _ <<<"${depth[$1.$2]}"
        echo "$r|$(group "$s") → $(group "$e")"
    }
    IFS='|' read -r jb jb_span <<<"$(cell jobqueue big)"
    IFS='|' read -r bb bb_span <<<"$(cell baseline big)"
    IFS='|' read -r js js_span <<<"$(cell jobqueue small)"
    IFS='|' read -r bs bs_span <<<"$(cell baseline small)"
    jr=$(ratio "$jb" "$js")
    read -r cpu_big_s cpu_big_l <<<"${cpu[big]}"
    read -r cpu_small_s cpu_small_l <<<"${cpu[small]}"
    report+=$(
        cat <<EOF

## 1. Single-job processing at $(group "$big") jobs waiting against $(group "$small")

| jobs waiting | pg_jobqueue jobs/s | (waiting: start → end) | baseline jobs/s | (waiting: start → end) |
|---|---:|---|---:|---|
| $(group "$big") | $(group "$jb") | $jb_span | $(group "$bb") | $bb_span |
| $(group "$small") and more | $(group "$js") | $js_span | $(group "$bs") | $bs_span |
| rate at $(group "$big") / at $(group "$small") | **${jr}×** (aim ≥ ${depth_aim}×: $(verdict "$jr" "$depth_aim")) | | $(ratio "$bb" "$bs")× | |

dequeue 1 + complete (baseline: claim 1 + delete), $clients clients, ${run_seconds} s per run, durable commits.
A run takes more jobs than $(group "$small"), so the shallow run starts with $(group "$small") plus 1.5 × what
the same side's deep run took: about $(group "$small") or more stay waiting throughout.

Background worker with nothing else running, ${idle_seconds} s, % of one CPU (utime + stime):
at $(group "$big") waiting, scheduler ${cpu_big_s} %, launcher ${cpu_big_l} %; at $(group "$small") and more, scheduler ${cpu_small_s} %, launcher ${cpu_small_l} %.
EOF
    )$'\n'
fi

# ---------------------------------------------------------------------------------------------
# 2. A long transaction.
if [[ " $parts " == *" longtx "* ]]; then
    echo "2. a REPEATABLE READ transaction open for $minutes minute(s):"
    declare -A longtx
    for side in jobqueue baseline; do
        prepare "$side" "$ref_backlog"
        longtx[$side.ref]=$(process "$side" longtx-without "$run_seconds" "$run_seconds")
        read -r rate0 _ <<<"${longtx[$side.ref]}"
        prepare "$side" $(((rate0 * minutes * 60 * 5 + 3) / 4 + clients))

        # The long transaction: its snapshot is taken (SELECT 1) before the run starts, and
        # held until the run has ended (pg_sleep outlasts it; terminated then).
        PGAPPNAME=$holder_app "$bin/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d "$db" >/dev/null 2>&1 <<SQL &
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1;
SELECT pg_sleep($((minutes * 60 + 600)));
COMMIT;
SQL
        holder=$!
        xmin=""
        for _ in $(seq 100); do
            xmin=$(sql -c "SELECT backend_xmin FROM pg_stat_activity
                            WHERE application_name = '$holder_app' AND state = 'active'
                              AND query LIKE 'SELECT pg_sleep%'")
            [ -n "$xmin" ] && break
            sleep 0.1
        done
        [ -n "$xmin" ] || die "the long transaction did not start"

        longtx[$side.run]=$(process "$side" longtx-open "$((minutes * 60))" "$interval")

        now_xmin=$(sql -c "SELECT backend_xmin FROM pg_stat_activity WHERE application_name = '$holder_app'")
        [ "$now_xmin" = "$xmin" ] || die "the long transaction's snapshot (xmin $xmin) did not last the run (now: '$now_xmin')"
        stop_holder
    done
    sql -c 'CALL bench_reset()'

    header="| | without | "
    rule="|---|---:|"
    for ((t = 0; t < minutes * 60; t += interval)); do
        header+="$t–$((t + interval)) s | "
        rule+="---:|"
    done
    header+="last / without | aim |"
    rule+="---:|---|"
    rows=""
    for side in jobqueue baseline; do
        read -r rate0 _ <<<"${longtx[$side.ref]}"
        read -r _ _ _ _ rates <<<"${longtx[$side.run]}"
        last=${rates##* }
        r=$(ratio "$last" "$rate0")
        row="| $(side_name "$side") | $(group "$rate0") | "
        for x in $rates; do row+="$(group "$(printf '%.0f' "$x")") | "; done
        if [ "$side" = jobqueue ]; then
            row+="**${r}×** | ≥ ${longtx_aim}× ($(verdict "$r" "$longtx_aim")) |"
        else
            row+="${r}× | |"
        fi
        rows+="$row"$'\n'
    done
    report+=$(
        cat <<EOF

## 2. Single-job processing beside a transaction open for $minutes minute(s)

Jobs/s without a long transaction (${run_seconds} s, $(group "$ref_backlog") waiting), then per ${interval} s while another
session holds a REPEATABLE READ snapshot (BEGIN; SELECT 1; then idle in pg_sleep), which keeps
every dead row the run leaves:

$header
$rule
$(printf '%s' "$rows")

dequeue 1 + complete (baseline: claim 1 + delete), $clients clients, durable commits; the long run's backlog was
1.25 × what the rate without would take in $minutes minute(s), so it never ran dry.
EOF
    )$'\n'
fi

report+=$'\n'"$machine"$'\n\n'"Runs, in the order they ran:"$'\n\n''```'$'\n'"$(cat "$logs/runs.txt")"$'\n''```'
echo
echo "$report"
echo "$report" >"$out"
echo
echo "Written to $out; pgbench logs in $logs."
echo "The bench cluster keeps running on port $port (make bench-stop stops it)."
