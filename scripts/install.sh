#!/usr/bin/env bash
# Builds the extension (release) and installs it into the system PostgreSQL 15.
# Each file is copied beside its destination and renamed into place: a running server keeps
# the library it mapped instead of crashing on a file rewritten underneath it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pg_config=/usr/lib/postgresql/15/bin/pg_config
out=$root/target/package
cd "$root"
mkdir -p target
rm -rf "$out"
if ! cargo pgrx package --pg-config "$pg_config" --out-dir "$out" >"$out.log" 2>&1; then
    cat "$out.log" >&2
    exit 1
fi
(cd "$out" && find . -type f) | while read -r f; do
    dest=/${f#./}
    mkdir -p "$(dirname "$dest")"
    cp "$out/$f" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
done
# Earlier releases' install scripts, so that CREATE EXTENSION ... VERSION can start there (the
# current version's is the one just generated, not a frozen copy).
extdir=$($pg_config --sharedir)/extension
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for f in "$root"/sql/released/*.sql; do
    [ "$(basename "$f")" = "pg_jobqueue--$version.sql" ] && continue
    cp "$f" "$extdir/$(basename "$f").tmp.$$"
    mv -f "$extdir/$(basename "$f").tmp.$$" "$extdir/$(basename "$f")"
done
echo "installed pg_jobqueue $version into $($pg_config --pkglibdir)"
