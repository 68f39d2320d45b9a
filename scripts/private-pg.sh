#!/usr/bin/env bash
# A private copy of the system PostgreSQL 15 (in scripts/state-dir.sh's directory, normally
# target/), for `cargo pgrx test`.
# cargo pgrx test installs a test build of the extension into the PostgreSQL it runs; pointed
# at this copy, it leaves the system installation (and the clusters running from it: demo,
# benchmark) alone.  PostgreSQL finds its share and lib directories relative to its binaries,
# so a copy of the three trees works as is.  Prints the PGRX_HOME to use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=$(bash "$root/scripts/state-dir.sh")
tree=$state/pg15-private
pgrx_home=$state/pgrx-home
stamp=$tree/.copied-from-$(dpkg-query -W -f='${Version}' postgresql-15)
if [ ! -f "$stamp" ]; then
    rm -rf "$tree"
    for d in /usr/lib/postgresql/15 /usr/share/postgresql/15 /usr/include/postgresql; do
        mkdir -p "$tree$(dirname "$d")"
        cp -a "$d" "$tree$(dirname "$d")/"
    done
    touch "$stamp"
    rm -f "$pgrx_home/config.toml"
fi
if [ ! -f "$pgrx_home/config.toml" ]; then
    mkdir -p "$pgrx_home"
    PGRX_HOME=$pgrx_home cargo pgrx init --pg15 "$tree/usr/lib/postgresql/15/bin/pg_config" >/dev/null
fi
echo "$pgrx_home"
