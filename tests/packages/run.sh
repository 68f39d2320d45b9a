#!/usr/bin/env bash
# The release packages, installed as a user would (`make package-test`, in `make test`):
#   1. META.json is a valid PGXN Meta Spec 1.0.0 document for this version (check_meta.py);
#   2. the .deb installs with apt-get onto Debian's PostgreSQL, a cluster made with Debian's
#      tools preloads it, CREATE EXTENSION works and a job runs through the background worker;
#      removing the package removes every file it installed.  Skipped, saying so, when the
#      system PostgreSQL already has pg_jobqueue files that are not this package's: it never
#      overwrites what it did not put there;
#   3. the PGXN zip, unpacked elsewhere, builds and installs with `make install PG_CONFIG=…`
#      (into a private copy of PostgreSQL, never the system's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
pg_config=$(bash scripts/pg-config.sh)
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=$root/target/packages
name=postgresql-$major-pg-jobqueue
deb=$out/${name}_${version}_$(dpkg --print-architecture).deb
zip=$out/pg_jobqueue-$version.zip
pass=0
fail() { echo "packages: FAILED: $*" >&2; exit 1; }

python3 "$here/check_meta.py" META.json "$version" || fail "META.json"
pass=$((pass + 1))

# 2. The Debian package.
system_lib=$("$pg_config" --pkglibdir)/pg_jobqueue.so
if [ -e "$system_lib" ] && ! dpkg -S "$system_lib" 2>/dev/null | grep -q "^$name:"; then
    echo "packages: skipping the .deb test: $system_lib is there and is not from $name"
elif ! command -v pg_createcluster >/dev/null; then
    echo "packages: skipping the .deb test: no Debian postgresql-common here"
else
    dpkg-deb --field "$deb" Depends | grep -q "postgresql-$major" || fail "the .deb does not depend on postgresql-$major"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null || fail "apt-get install $deb"
    files=$(dpkg -L "$name" | while read -r f; do [ -f "$f" ] && echo "$f"; done)
    [ -f "$system_lib" ] || fail "the .deb did not install $system_lib"
    cluster=pgjq-deb-test
    port=55492
    pg_dropcluster --stop "$major" "$cluster" 2>/dev/null || true
    pg_createcluster "$major" "$cluster" -p "$port" -- -A trust >/dev/null
    cat >>"/etc/postgresql/$major/$cluster/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_jobqueue'
max_worker_processes = 16
pg_jobqueue.scheduler_tick = '200ms'
CONF
    pg_ctlcluster "$major" "$cluster" start
    psql=(runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$port" -d postgres -At)
    status=0
    "${psql[@]}" -c "CREATE EXTENSION pg_jobqueue" \
        -c "CREATE TABLE done (id bigint PRIMARY KEY)" \
        -c "CREATE FUNCTION record(payload jsonb) RETURNS jsonb LANGUAGE sql AS
            \$\$ INSERT INTO done VALUES ((payload->>'n')::bigint) RETURNING jsonb_build_object('ok', true) \$\$" \
        -c "SELECT job.create_queue('deb')" \
        -c "SELECT job.set_handler('deb', 'record(jsonb)')" \
        -c "SELECT job.enqueue('deb', '{\"n\": 42}')" >/dev/null || status=1
    ran=
    for _ in $(seq 100); do
        ran=$("${psql[@]}" -c "SELECT count(*) FROM job.jobs WHERE queue = 'deb' AND state = 'completed'" 2>/dev/null || true)
        [ "$ran" = 1 ] && break
        sleep 0.2
    done
    [ "$ran" = 1 ] || { echo "packages: the background worker did not run the job: $ran" >&2; status=1; }
    pg_dropcluster --stop "$major" "$cluster"
    apt-get remove -y -qq "$name" >/dev/null || fail "apt-get remove $name"
    for f in $files; do
        [ -e "$f" ] && { echo "packages: $f survived the package's removal" >&2; status=1; }
    done
    [ $status -eq 0 ] || fail "the .deb"
    pass=$((pass + 1))
fi

# 3. The PGXN distribution, built where a user would unpack it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m zipfile -e "$zip" "$tmp"
tree=$tmp/pg_jobqueue-$version
[ -f "$tree/META.json" ] && [ -f "$tree/Makefile" ] || fail "the zip has no pg_jobqueue-$version/ with META.json and Makefile"
# Into a private copy of PostgreSQL (never the system's), with a pgrx home of its own; the
# build shares this checkout's cargo target directory, so the dependencies are built once, and
# takes the quick profile (what is tested here is the PGXS-style install, not the code).
target_pg=$(bash scripts/private-pg.sh pgxn-test)
rm -f "$("$target_pg" --pkglibdir)/pg_jobqueue.so"
(cd "$tree" && PGRX_HOME=$tmp/pgrx-home CARGO_TARGET_DIR=$root/target PGJQ_CARGO_PROFILE=release-quick \
    make -s install PG_CONFIG="$target_pg" >"$tmp/make.log" 2>&1) ||
    { cat "$tmp/make.log" >&2; fail "make install from the unpacked PGXN distribution"; }
[ -f "$("$target_pg" --pkglibdir)/pg_jobqueue.so" ] || fail "make install put no pg_jobqueue.so into $("$target_pg" --pkglibdir)"
[ -f "$("$target_pg" --sharedir)/extension/pg_jobqueue--$version.sql" ] || fail "make install put no pg_jobqueue--$version.sql"
pass=$((pass + 1))
echo "packages: $pass passed, 0 failed"
