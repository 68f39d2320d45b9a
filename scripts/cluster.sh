#!/usr/bin/env bash
# A private scratch cluster with pg_jobqueue preloaded, run by the private copy of PostgreSQL
# that the demo and the tests install into (scripts/private-pg.sh clusters).  PostgreSQL
# refuses to run as root, so the cluster runs as the `postgres` user.
#   scripts/cluster.sh start|stop|status|url NAME PORT
# NAME picks the directory (target/NAME, see scripts/state-dir.sh), so the demo, the tests and
# the benchmark can each have their own cluster.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop|status|url NAME PORT}
name=${2:?cluster name}
port=${3:?port}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(bash "$root/scripts/state-dir.sh")/$name
bin=$(dirname "$(bash "$root/scripts/private-pg.sh" clusters)")
as_pg() { runuser -u postgres -- "$@"; }

case "$cmd" in
start)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        mkdir -p "$dir"
        chown postgres: "$dir"
        as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
        # Settings beyond the defaults: preload (the background worker and the wake-up
        # bookkeeping need it), a private socket directory, and room for the benchmark.
        cat >>"$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_jobqueue'
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = '1GB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
log_min_messages = warning
CONF
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        # Worker slots on every start (also for clusters made before it was needed): per
        # database served, a scheduler, executors and an HTTP sender; the tests serve many.
        # The port too: a cluster made with another one would otherwise listen where the URL
        # printed below does not point.
        if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
                -o "-c max_worker_processes=64 -c port=$port" start >/dev/null; then
            echo "cluster $name: PostgreSQL did not start on port $port; its log ends:" >&2
            tail -n 5 "$dir/postgres.log" >&2
            echo "(another server on port $port? 'make demo-stop' / 'make bench-stop' stop ours)" >&2
            exit 1
        fi
    fi
    echo "cluster $name: postgresql://postgres@127.0.0.1:$port/postgres (log: $dir/postgres.log)"
    ;;
stop)
    if [ -f "$dir/data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
status)
    as_pg "$bin/pg_ctl" -D "$dir/data" status
    ;;
url)
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
*)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
