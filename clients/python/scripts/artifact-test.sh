#!/usr/bin/env bash
# The package as a user gets it: `python -m build` makes the sdist and the wheel; the wheel is
# installed into a new virtualenv elsewhere (pip fetches psycopg from the registry), the sdist
# is checked to build too, then the README's example, made whole, runs against a queue of the
# cluster at PGJQ_TEST_URL.
#   bash clients/python/scripts/artifact-test.sh VENV   (VENV: one with `build` installed)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:?usage: artifact-test.sh VENV}
url=${PGJQ_TEST_URL:?PGJQ_TEST_URL names the test cluster}
tmp=$(mktemp -d)
db=pgjq_artifact_py_$$
# The example runs in a database of its own, with the extension (the cluster's default
# database has none), dropped at exit; through the installed psycopg.
admin() {
    "$tmp/app/bin/python" -c 'import os, sys, psycopg
with psycopg.connect(os.environ["PGJQ_TEST_URL"], autocommit=True, dbname=sys.argv[1]) as c:
    c.execute(sys.argv[2])' "$@"
}
trap '[ -x "$tmp/app/bin/python" ] && admin postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$tmp"' EXIT
"$venv/bin/python" -m build --outdir "$tmp/dist" "$here" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; exit 1; }
version=$("$venv/bin/python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$here/pyproject.toml")
wheel=$tmp/dist/pg_jobqueue-$version-py3-none-any.whl
[ -f "$wheel" ] && [ -f "$tmp/dist/pg_jobqueue-$version.tar.gz" ] ||
    { echo "artifact-test: python -m build made: $(ls "$tmp/dist")" >&2; exit 1; }
python3 -m venv "$tmp/app"
"$tmp/app/bin/pip" install --quiet "$wheel[binary]"
cat >"$tmp/example.py" <<'PY'
"""The README's example, whole: a producer that enqueues beside its own write, and a worker."""
import os
import threading

import psycopg
from pg_jobqueue import Worker, enqueue

url = os.environ["DATABASE_URL"]
with psycopg.connect(url, autocommit=True) as admin:
    admin.execute("SELECT job.create_queue('artifact_py')")
    admin.execute("CREATE TABLE IF NOT EXISTS artifact_py_orders (id serial PRIMARY KEY, customer text)")

with psycopg.connect(url) as conn:
    conn.execute("INSERT INTO artifact_py_orders (customer) VALUES (%s)", ("ada",))
    job_id = enqueue(conn, "artifact_py", {"template": "confirmation", "user_id": 7})

done = threading.Event()


def send_email(job):
    done.set()
    return {"message_id": f"m-{job.payload['user_id']}"}


worker = Worker("artifact_py", send_email, conninfo=url, concurrency=8)
worker.start()
assert done.wait(30), "the worker never ran the job"
worker.close()
with psycopg.connect(url, autocommit=True) as admin:
    state, result = admin.execute("SELECT state, result FROM job.jobs WHERE id = %s", (job_id,)).fetchone()
    admin.execute("SELECT job.drop_queue('artifact_py', force => true)")
    admin.execute("DROP TABLE artifact_py_orders")
assert (state, result) == ("completed", {"message_id": "m-7"}), (state, result)
print(f"artifact-test: job {job_id} completed from the built wheel")
PY
admin postgres "CREATE DATABASE $db"
admin "$db" "CREATE EXTENSION pg_jobqueue"
db_url=$("$tmp/app/bin/python" -c 'import sys; from psycopg.conninfo import make_conninfo; print(make_conninfo(sys.argv[1], dbname=sys.argv[2]))' "$url" "$db")
DATABASE_URL=$db_url timeout 60 "$tmp/app/bin/python" "$tmp/example.py"
