#!/usr/bin/env bash
# Installs what building and testing pg_jobqueue needs, idempotently: a no-op (a few
# seconds) when everything is already there.  Runs as root on Debian 12.
set -euo pipefail

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PGRX_VERSION=0.18.0
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
          libclang-dev clang pkg-config sudo pgbouncer)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts a default cluster on 5432; this project runs its own clusters and needs none.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster "$PG_MAJOR" main stop 2>/dev/null || true
fi
# Debian's pgbouncer package enables a system service on port 6432; the tests start their own
# pgbouncer (tests/integration/tests/pgbouncer.rs) and need none.
if [ -x /etc/init.d/pgbouncer ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true
    else
        if /etc/init.d/pgbouncer status >/dev/null 2>&1; then
            /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
        fi
        update-rc.d pgbouncer disable >/dev/null 2>&1 || true
    fi
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -q "pg$PG_MAJOR" "$PGRX_HOME/config.toml" 2>/dev/null; then
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi
