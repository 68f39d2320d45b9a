#!/usr/bin/env bash
# Puts every script PostgreSQL needs to install an earlier release or upgrade from one into the
# extension directory DIR, beside the install script pgrx generated there for this version:
#   sql/released/pg_jobqueue--A.sql     past releases' install scripts (CREATE EXTENSION ...
#                                       VERSION 'A'), as they shipped
#   sql/upgrades/pg_jobqueue--A--B.sql  upgrade scripts: as they shipped once frozen (listed in
#                                       sql/released/SHA256SUMS); the release under way's is
#                                       its hand-written part plus the definitions
#                                       scripts/upgrade-script.py generates from DIR's
#                                       install script
# Used by scripts/install.sh (make install, install-private, the PGXN zip) and
# scripts/package.sh (the .deb), so that every way of installing ships the same scripts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: release-scripts.sh EXTENSION_DIR}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
install=$dir/pg_jobqueue--$version.sql
[ -f "$install" ] || { echo "release-scripts: $install is missing (build it first)" >&2; exit 1; }
for f in "$root"/sql/released/pg_jobqueue--*.sql; do
    [ "$(basename "$f")" = "pg_jobqueue--$version.sql" ] || cp "$f" "$dir/"
done
for f in "$root"/sql/upgrades/pg_jobqueue--*--*.sql; do
    if grep -q "  upgrades/$(basename "$f")\$" "$root/sql/released/SHA256SUMS"; then
        cp "$f" "$dir/"
    else
        python3 "$root/scripts/upgrade-script.py" "$f" "$install" >"$dir/$(basename "$f").tmp"
        mv "$dir/$(basename "$f").tmp" "$dir/$(basename "$f")"
    fi
done
