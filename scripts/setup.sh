#!/usr/bin/env bash
# Installs what building and testing pg_jobqueue needs, idempotently: a no-op (a few
# seconds) when everything is already there.  Runs as root on Debian 12.  It only adds
# packages and tools: it never stops, disables or reconfigures a cluster or service.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=$(bash "$root/scripts/pg-config.sh")
PGRX_VERSION=0.18.0
packages=(libclang-dev clang pkg-config sudo pgbouncer patchelf)
# Debian's PostgreSQL, when that is the one to build against: the server, its headers and
# PGXS, and the client programs (pg_isolation_regress among them).
if [[ $PG_CONFIG =~ ^/usr/lib/postgresql/([0-9]+)/bin/pg_config$ ]]; then
    major=${BASH_REMATCH[1]}
    packages+=(postgresql-$major postgresql-server-dev-$major postgresql-client-$major)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$PG_CONFIG" ]; then
    echo "setup: $PG_CONFIG is not a pg_config: set PG_CONFIG to your PostgreSQL's" >&2
    exit 1
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi
# No `cargo pgrx init`: the builds name their pg_config themselves (scripts/pgrx-package.sh,
# scripts/pgrx-home.sh), and the user's ~/.pgrx is theirs.
