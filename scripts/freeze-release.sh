#!/usr/bin/env bash
# Freezes the release this tree builds (the version in Cargo.toml): writes its install script,
# as pgrx generates it, to sql/released/pg_jobqueue--VERSION.sql, and records the checksums of
# that script and of the upgrade script that ends at VERSION in sql/released/SHA256SUMS.  Run it
# once, when the release ships; from then on tests/integration/tests/releases.rs fails should
# either script change.  The next release starts with a version bump and a new upgrade script
# (see sql/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install=sql/released/pg_jobqueue--$version.sql
if grep -q "  released/pg_jobqueue--$version.sql$" sql/released/SHA256SUMS; then
    echo "freeze-release: $version is frozen already" >&2
    exit 1
fi
log=$(mktemp)
if ! cargo pgrx schema pg15 --out "$install" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log" "$install"
    exit 1
fi
rm -f "$log"
(
    cd sql
    for upgrade in pg_jobqueue--*--"$version".sql; do
        [ -f "$upgrade" ] && sha256sum "$upgrade"
    done
    sha256sum "released/pg_jobqueue--$version.sql"
) >>sql/released/SHA256SUMS
echo "froze pg_jobqueue $version: $(tail -n 2 sql/released/SHA256SUMS | awk '{ print $2 }' | paste -sd ' ')"
