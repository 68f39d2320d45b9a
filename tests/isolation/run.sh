#!/usr/bin/env bash
# Runs the isolation specs (pg_isolation_regress, as PostgreSQL and pgmq do) against a running
# cluster that preloads pg_jobqueue and has it installed:
#   tests/isolation/run.sh PORT [SPEC...]        (default: every spec in specs/)
# Every run starts from a fresh database (pg_jobqueue_isolation, dropped and created again), so
# nothing an earlier or interrupted run left can matter.  The specs run one after another: they
# share that database, and each one's setup installs the extension afresh, so that queue and
# job ids start at 1 in every permutation whatever ran before.  Results and diffs go to
# target/isolation (or $ISOLATION_OUT), never into the source tree; the database is dropped
# after a passing run and kept after a failing one.
set -euo pipefail

port=${1:?usage: tests/isolation/run.sh PORT [SPEC...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pg_config=$(bash "$root/scripts/private-pg.sh" clusters)
bindir=$($pg_config --bindir)
regress=$(dirname "$($pg_config --pgxs)")/../test/isolation/pg_isolation_regress
db=pg_jobqueue_isolation
out=${ISOLATION_OUT:-$root/target/isolation}
psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)

if [ ! -x "$regress" ]; then
    echo "pg_isolation_regress not found at $regress (Debian: postgresql-client-NN; make setup installs it)" >&2
    exit 2
fi

if [ $# -eq 0 ]; then
    set -- $(cd "$here/specs" && ls *.spec | sed 's/\.spec$//')
fi

# A fresh database: nothing a previous (maybe interrupted) run left can matter.  FORCE also
# ends the background worker's session in it.  (wakeup_databases.spec makes ${db}_other.)
"${psql[@]}" -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${db}_other WITH (FORCE)" \
    -c "CREATE DATABASE $db"
"${psql[@]}" -d "$db" -c "CREATE EXTENSION pg_jobqueue"

rm -rf "$out"
mkdir -p "$out"
status=0
"$regress" --use-existing --host 127.0.0.1 --port "$port" --user postgres --dbname "$db" \
    --bindir "$bindir" --inputdir "$here" --outputdir "$out" "$@" || status=$?
if [ $status -ne 0 ] && [ -s "$out/regression.diffs" ]; then
    echo "differences: $out/regression.diffs" >&2
fi
if [ $status -eq 0 ]; then
    "${psql[@]}" -d postgres -c "DROP DATABASE $db WITH (FORCE)"
else
    echo "database $db is kept for a look; the next run replaces it" >&2
fi
exit $status
