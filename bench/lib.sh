# What the bench scripts share; sourced, not run.  Set `port` (and `db`, the database `sql`
# works in, default bench) first:
#
#   port=${1:-55434}
#   . "$(dirname "$0")/lib.sh"
#
# Sets root (the checkout), here (bench/), bin (the clusters' PostgreSQL: the private copy
# scripts/private-pg.sh makes, where `make install-private` installs the extension) and conn
# (psql's and pgbench's connection options for the bench cluster on $port).
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$root/bench
bin=$(dirname "$(bash "$root/scripts/private-pg.sh" clusters)")
conn=(-h 127.0.0.1 -p "$port" -U postgres)

# die MESSAGE: says what failed (prefixed "bench: ", and $die_prefix) and exits 1.
die() { echo "bench: ${die_prefix:-}$*" >&2; exit 1; }
# sql ARGS...: psql on database $db (default bench), unaligned, tuples only, stopping at the
# first error.
sql() { "$bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 "${conn[@]}" -d "${db:-bench}" "$@"; }
# admin ARGS...: psql on database postgres, stopping at the first error.
admin() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d postgres "$@"; }
now_s() { date +%s.%N; }
# group N: N with thousands separators (1234567 -> 1,234,567).
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# require_cluster: dies unless a cluster answers on $port.
require_cluster() {
    "$bin/pg_isready" -q "${conn[@]}" -d postgres ||
        die "no cluster on port $port (make bench leaves one running on 55434; or bash scripts/cluster.sh start bench $port)"
}

# restart_cluster: stops and starts the bench cluster on $port (starting it if it was not
# running), so that it loads the library just installed.
restart_cluster() {
    bash "$root/scripts/cluster.sh" stop bench "$port"
    bash "$root/scripts/cluster.sh" start bench "$port"
}

# fresh_db NAME: database NAME, dropped first if it exists.
fresh_db() {
    admin -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}

# scratch_db_with_extension NAME: a fresh database NAME with pg_jobqueue, dropped when the
# script exits.
scratch_db_with_extension() {
    fresh_db "$1"
    # shellcheck disable=SC2064 # the name, now
    trap "admin -c 'DROP DATABASE IF EXISTS $1 WITH (FORCE)'" EXIT
    admin -d "$1" -c "CREATE EXTENSION pg_jobqueue"
}

# require_durable_commits: dies unless the server commits durably (synchronous_commit and
# fsync on, its defaults), which every measured run assumes.
require_durable_commits() {
    [ "$(sql -c 'SHOW synchronous_commit')" = on ] || die "synchronous_commit is not on"
    [ "$(sql -c 'SHOW fsync')" = on ] || die "fsync is not on"
}

# CPU time (clock ticks) the whole machine has been busy, and the bench cluster has used
# (the postmaster, its live children, and the children it has reaped).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cluster_ticks() {
    local pm c state
    state=$(bash "$root/scripts/state-dir.sh") # where the bench cluster lives
    pm=$(head -1 "$state/bench/data/postmaster.pid")
    {
        awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
        for c in $(pgrep -P "$pm"); do awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || true; done
    } | awk '{ s += $1 } END { print s }'
}

# machine_description [SETTING...]: the report's first lines (date, machine, PostgreSQL, the
# extension's version and commit, the settings that matter for speed plus SETTING...), as a
# Markdown list, read through `sql` (so in $db).
machine_description() {
    local commit settings names="'shared_buffers', 'synchronous_commit', 'fsync', 'wal_sync_method', 'max_wal_size', 'checkpoint_timeout'" s
    for s in "$@"; do names+=", '$s'"; done
    commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$root" status --porcelain -- src sql 2>/dev/null)" ]; then
        commit="$commit (src/ or sql/ modified)"
    fi
    settings=$(sql -F ' ' -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name)
                               FROM pg_settings WHERE name IN ($names)")
    cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)
- PostgreSQL: $(sql -c 'SELECT version()')
- pg_jobqueue: $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobqueue'"), commit $commit
- settings: $settings
EOF
}

# read_pgbench_log TAG LOG [MORE_LOG...]: pgbench's result in LOG into tx (transactions), tps
# and lat (average latency); dies, showing the logs, when it cannot be read, transactions
# failed, or a client aborted (in LOG or MORE_LOG).
read_pgbench_log() {
    local tag=$1 log=$2 failed
    shift
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log")
    lat=$(sed -n 's/^latency average = \(.*\)$/\1/p' "$log")
    [ -n "$tx" ] && [ -n "$tps" ] || { cat "$log" >&2; die "$tag: cannot read pgbench's result ($log)"; }
    [ "${failed:-0}" -eq 0 ] || { cat "$log" >&2; die "$tag: $failed failed transactions ($log)"; }
    if grep -q 'aborted\|ERROR' "$@"; then
        cat "$@" >&2
        die "$tag: a client aborted ($log)"
    fi
}

# runs_section RUNS_FILE: the report's end: how busy the rest of the machine was (the most of
# any run, from its "other processes used N%" line) and every run's line, in order.
runs_section() {
    local other_max
    other_max=$(sed -n 's/.*other processes used \([0-9]*\)%.*/\1/p' "$1" | sort -n | tail -1)
    echo "- noise: other processes on the machine used up to ${other_max}% of the CPUs during a measured run$(
        [ "$other_max" -gt 10 ] && echo ' (**noisy**: treat the affected runs with care)')"
    echo
    echo "Runs, in the order they ran:"
    echo
    echo '```'
    cat "$1"
    echo '```'
}

# tick_lateness FROM: sets runs, distinct (ticks), p50, p99 and worst: a schedule's lateness
# (fired_at - due_at, ms) over the schedule runs `r` that FROM (the rest of a query after
# FROM) gives; dies when a tick fired twice, or fewer than $tick_seconds - 2 ticks fired.
tick_lateness() {
    read -r runs distinct p50 p99 worst < <(sql -F ' ' -c "
    SELECT count(*), count(DISTINCT tick),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(max(ms)::numeric, 1)
      FROM (SELECT r.tick, 1000 * extract(epoch FROM r.fired_at - r.due_at) AS ms
              FROM $1) t")
    [ "$runs" -eq "$distinct" ] || die "a tick fired twice ($runs runs, $distinct ticks)"
    [ "$runs" -ge $((tick_seconds - 2)) ] || die "only $runs ticks fired in ${tick_seconds}s"
}
