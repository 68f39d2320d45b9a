#!/usr/bin/env bash
# `cargo pgrx package` against the PostgreSQL of PG_CONFIG, into OUT_DIR (its log beside it,
# OUT_DIR.log, printed on failure):
#     scripts/pgrx-package.sh PG_CONFIG OUT_DIR [--profile P]
# pgrx reads the PostgreSQL to build against from PGRX_PG_CONFIG_PATH, and its own
# configuration from a PGRX_HOME inside this checkout (empty: nothing is read from it), never
# from the user's ~/.pgrx.  (setup.sh used to `cargo pgrx init` into ~/.pgrx: it pointed there
# at pg_configs inside a checkout, and once that checkout was gone every pgrx build on the
# machine failed in pgrx-pg-sys with "the specified pg_config binary … does not exist".)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${1:?usage: pgrx-package.sh PG_CONFIG OUT_DIR [--profile P]}
out=${2:?usage: pgrx-package.sh PG_CONFIG OUT_DIR [--profile P]}
shift 2
export PGRX_HOME=$root/target/pgrx-build-home PGRX_PG_CONFIG_PATH=$pg_config
mkdir -p "$PGRX_HOME"
rm -rf "$out"
if ! (cd "$root" && cargo pgrx package --pg-config "$pg_config" --out-dir "$out" "$@") >"$out.log" 2>&1; then
    cat "$out.log" >&2
    exit 1
fi
