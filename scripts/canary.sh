#!/usr/bin/env bash
# A check that `make test` leaves the machine's own PostgreSQL alone: before the suites, a
# cluster made with Debian's tools (as a user's system cluster is) and Debian's PgBouncer
# service run, and what the system PostgreSQL has of pg_jobqueue is noted; afterwards they
# must still run (the same processes) and those files be unchanged.  Only what this script
# started is stopped and removed.  Without Debian's postgresql-common it checks nothing.
#   scripts/canary.sh start|check
set -euo pipefail
cmd=${1:?usage: canary.sh start|check}
root=$(cd "$(dirname "$0")/.." && pwd)
state=$(env -u PG_CONFIG bash "$root/scripts/state-dir.sh")/canary
pg_config=$(env -u PG_CONFIG bash "$root/scripts/pg-config.sh")
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
name=pgjq-canary
port=55490

if ! command -v pg_createcluster >/dev/null; then
    echo "canary: no Debian postgresql-common here; nothing to check"
    exit 0
fi
postmaster_pid() { head -1 "/var/lib/postgresql/$major/$name/postmaster.pid" 2>/dev/null || true; }
bouncer_pid() { cat /var/run/postgresql/pgbouncer.pid 2>/dev/null || true; }
# The system installation's pg_jobqueue files (none, or the user's own), with sizes and times.
system_files() {
    ls -l --time-style=+%s "$("$pg_config" --pkglibdir)"/pg_jobqueue* \
        "$("$pg_config" --sharedir)"/extension/pg_jobqueue* 2>/dev/null || true
}

case "$cmd" in
start)
    mkdir -p "$state"
    if ! pg_lsclusters -h | awk -v n="$name" '$2 == n' | grep -q .; then
        pg_createcluster "$major" "$name" -p "$port" >/dev/null
    fi
    pg_ctlcluster "$major" "$name" start 2>/dev/null || true
    postmaster_pid >"$state/cluster.pid"
    rm -f "$state/bouncer-started"
    if [ -x /etc/init.d/pgbouncer ] && ! kill -0 "$(bouncer_pid)" 2>/dev/null; then
        /etc/init.d/pgbouncer start >/dev/null 2>&1 && touch "$state/bouncer-started"
    fi
    bouncer_pid >"$state/bouncer.pid"
    system_files >"$state/system-files"
    echo "canary: cluster $major/$name (pid $(cat "$state/cluster.pid")) and pgbouncer (pid $(cat "$state/bouncer.pid")) running"
    ;;
check)
    status=0
    if [ ! -s "$state/cluster.pid" ]; then
        echo "canary: not started" >&2
        exit 1
    fi
    if [ "$(postmaster_pid)" != "$(cat "$state/cluster.pid")" ] || ! kill -0 "$(postmaster_pid)" 2>/dev/null; then
        echo "canary: the system cluster $major/$name was stopped or restarted" >&2
        status=1
    fi
    if [ -s "$state/bouncer.pid" ] && { [ "$(bouncer_pid)" != "$(cat "$state/bouncer.pid")" ] || ! kill -0 "$(bouncer_pid)" 2>/dev/null; }; then
        echo "canary: the PgBouncer service was stopped or restarted" >&2
        status=1
    fi
    if ! system_files | diff "$state/system-files" - >&2; then
        echo "canary: the system PostgreSQL's pg_jobqueue files changed" >&2
        status=1
    fi
    pg_dropcluster --stop "$major" "$name"
    if [ -f "$state/bouncer-started" ]; then
        /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
    fi
    rm -rf "$state"
    [ $status -eq 0 ] && echo "canary: the system cluster, the PgBouncer service and the system's extension files are as they were"
    exit $status
    ;;
esac
