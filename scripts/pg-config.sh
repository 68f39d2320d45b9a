#!/usr/bin/env bash
# The pg_config of the PostgreSQL this checkout builds against and `make install` installs into:
# $PG_CONFIG (as PGXS projects take it: `make install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config`),
# else Debian's PostgreSQL 15, which scripts/setup.sh installs.  The one place that names a
# PostgreSQL installation; every script and test finds the programs through it.
set -euo pipefail
echo "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
