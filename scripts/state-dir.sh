#!/usr/bin/env bash
# Where the files the `postgres` user must reach live: clusters, the pgrx test cluster and the
# private PostgreSQL copies.  That is target/ when postgres can reach the checkout; otherwise (a
# checkout under a private home, say) a directory of this checkout's own under /var/tmp.
# Built against another PostgreSQL than the default (PG_CONFIG, see scripts/pg-config.sh), a
# subdirectory per major version: a cluster made by one major cannot be run by another.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/target"
if runuser -u postgres -- test -x "$root/target" 2>/dev/null; then
    dir=$root/target
else
    dir=/var/tmp/pg_jobqueue-$(printf '%s' "$root" | cksum | cut -d' ' -f1)
    mkdir -p "$dir"
    chmod 755 "$dir"
fi
pg_config=$(bash "$root/scripts/pg-config.sh")
if [ "$pg_config" != "$(env -u PG_CONFIG bash "$root/scripts/pg-config.sh")" ] && [ -x "$pg_config" ]; then
    dir=$dir/pg$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    mkdir -p "$dir"
    chmod 755 "$dir"
fi
echo "$dir"
