#!/usr/bin/env bash
# A private PgBouncer in transaction pooling mode in front of one of our clusters, for the
# client libraries' tests (the Rust integration test starts its own).  It refuses to run as
# root, so it runs as the `postgres` user, like the clusters.
#   scripts/pgbouncer.sh start|stop NAME PORT CLUSTER_PORT [POOL_SIZE]
# Every database of the cluster is reachable through it under its own name.
set -euo pipefail

cmd=${1:?usage: pgbouncer.sh start|stop NAME PORT CLUSTER_PORT [POOL_SIZE]}
name=${2:?name}
port=${3:?port}
cluster_port=${4:-}
pool=${5:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(bash "$root/scripts/state-dir.sh")/pgbouncer-$name
bin=/usr/sbin/pgbouncer
as_pg() { runuser -u postgres -- "$@"; }

case "$cmd" in
start)
    [ -x "$bin" ] || { echo "pgbouncer.sh: $bin missing: run scripts/setup.sh" >&2; exit 1; }
    : "${cluster_port:?CLUSTER_PORT is needed to start}"
    bash "$0" stop "$name" "$port"
    pg_isready=$(dirname "$(bash "$root/scripts/private-pg.sh" clusters)")/pg_isready
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$cluster_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = $pool
reserve_pool_size = 0
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    chown -R postgres: "$dir"
    as_pg "$bin" -d "$dir/pgbouncer.ini"
    for _ in $(seq 100); do
        if "$pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres; then
            echo "pgbouncer $name: postgresql://postgres@127.0.0.1:$port/ (transaction pooling, $pool server connections per database)"
            exit 0
        fi
        sleep 0.1
    done
    echo "pgbouncer $name did not start; its log ends:" >&2
    tail -n 5 "$dir/pgbouncer.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/pgbouncer.pid" ]; then
        pid=$(cat "$dir/pgbouncer.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$dir/pgbouncer.pid"
    fi
    ;;
*)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
