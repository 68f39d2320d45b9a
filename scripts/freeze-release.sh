#!/usr/bin/env bash
# Freezes the release this tree builds (the version in Cargo.toml), once, when it ships:
#   * writes its install script, as pgrx generates it, to sql/released/pg_jobqueue--VERSION.sql;
#   * writes the whole upgrade script that ends at VERSION (its hand-written part and the
#     definitions scripts/upgrade-script.py generates) in place of its hand-written part in
#     sql/upgrades/;
#   * records the checksums of both in sql/released/SHA256SUMS.
# From then on tests/integration/tests/releases.rs fails should either script change.  The next
# release starts with a version bump and a new hand-written part (see sql/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install=sql/released/pg_jobqueue--$version.sql
if grep -q "  released/pg_jobqueue--$version.sql$" sql/released/SHA256SUMS; then
    echo "freeze-release: $version is frozen already" >&2
    exit 1
fi
major=$("$(bash scripts/pg-config.sh)" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
log=$(mktemp)
# pgrx configured in this checkout (scripts/pgrx-home.sh), not in the user's ~/.pgrx.
if ! PGRX_HOME=$(bash scripts/pgrx-home.sh) cargo pgrx schema "pg$major" --out "$install" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log" "$install"
    exit 1
fi
rm -f "$log"
for upgrade in sql/upgrades/pg_jobqueue--*--"$version".sql; do
    [ -f "$upgrade" ] || continue
    python3 scripts/upgrade-script.py "$upgrade" "$install" >"$upgrade.whole"
    mv "$upgrade.whole" "$upgrade"
    (cd sql && sha256sum "${upgrade#sql/}") >>sql/released/SHA256SUMS
done
(cd sql && sha256sum "released/pg_jobqueue--$version.sql") >>sql/released/SHA256SUMS
echo "froze pg_jobqueue $version: $(tail -n 2 sql/released/SHA256SUMS | awk '{ print $2 }' | paste -sd ' ')"
