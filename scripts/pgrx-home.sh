#!/usr/bin/env bash
# The PGRX_HOME for `cargo pgrx test`: pgrx set up with the private copy `pgrx-test` of
# PostgreSQL (scripts/private-pg.sh), so that the test build it installs never replaces the
# extension of any cluster.  Prints the PGRX_HOME to use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pg_config=$(bash "$root/scripts/private-pg.sh" pgrx-test)
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
pgrx_home=$(bash "$root/scripts/state-dir.sh")/pgrx-home
if ! grep -qsF "\"$pg_config\"" "$pgrx_home/config.toml"; then
    mkdir -p "$pgrx_home"
    PGRX_HOME=$pgrx_home cargo pgrx init --pg"$major" "$pg_config" >/dev/null
fi
echo "$pgrx_home"
