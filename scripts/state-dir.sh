#!/usr/bin/env bash
# Where the files the `postgres` user must reach live: clusters, the pgrx test cluster and the
# private PostgreSQL copy.  That is target/ when postgres can reach the checkout; otherwise (a
# checkout under a private home, say) a directory of this checkout's own under /var/tmp.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/target"
if runuser -u postgres -- test -x "$root/target" 2>/dev/null; then
    echo "$root/target"
else
    dir=/var/tmp/pg_jobqueue-$(printf '%s' "$root" | cksum | cut -d' ' -f1)
    mkdir -p "$dir"
    chmod 755 "$dir"
    echo "$dir"
fi
