#!/usr/bin/env bash
# A private copy of the PostgreSQL behind scripts/pg-config.sh, in this checkout's state
# directory (scripts/state-dir.sh), made on first use and again when that PostgreSQL changes.
# Prints the copy's pg_config.
#   scripts/private-pg.sh clusters    what the demo, test and bench clusters run, and where
#                                     their builds are installed (scripts/install.sh)
#   scripts/private-pg.sh pgrx-test   what `cargo pgrx test` installs its test build into
# The demo and the tests install into and run from these copies, never the PostgreSQL the user
# has (only `make install` writes there), and two checkouts never share one.  PostgreSQL finds
# its share and lib directories relative to its programs, so a copy under another prefix works
# as is.
set -euo pipefail
name=${1:?usage: private-pg.sh clusters|pgrx-test}
root=$(cd "$(dirname "$0")/.." && pwd)
state=$(bash "$root/scripts/state-dir.sh")
source_config=$(bash "$root/scripts/pg-config.sh")
if [ ! -x "$source_config" ]; then
    echo "private-pg: $source_config is not a pg_config (set PG_CONFIG, or run make setup)" >&2
    exit 1
fi
tree=$state/pg-$name
bindir=$("$source_config" --bindir)
# The ctime, not the mtime: unpacking an archive again keeps the mtime (scripts/pg-binaries.sh).
stamp="$("$source_config" --version) $(stat -c %Z "$bindir/postgres") $source_config"
if [ "$(cat "$tree/.copied-from" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$tree"
    for opt in --bindir --pkglibdir --sharedir --includedir --includedir-server; do
        dir=$("$source_config" "$opt")
        [ -e "$tree$dir" ] && continue # nested in a directory copied already
        mkdir -p "$tree$(dirname "$dir")"
        cp -a "$dir" "$tree$(dirname "$dir")/"
    done
    echo "$stamp" >"$tree/.copied-from"
fi
echo "$tree$bindir/pg_config"
