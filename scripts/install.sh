#!/usr/bin/env bash
# Builds the extension (release) against the PostgreSQL of scripts/pg-config.sh and installs it
# into the PostgreSQL whose pg_config is $1: `make install` gives the user's, the demo and the
# tests give their private copy (scripts/private-pg.sh clusters).
# Each file is copied beside its destination and renamed into place: a running server keeps
# the library it mapped instead of crashing on a file rewritten underneath it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target_config=${1:?usage: install.sh PG_CONFIG_TO_INSTALL_INTO}
build_config=$(bash "$root/scripts/pg-config.sh")
if [ "$("$target_config" --version)" != "$("$build_config" --version)" ]; then
    echo "install: built for $("$build_config" --version), cannot install into $("$target_config" --version)" >&2
    exit 1
fi
out=$root/target/package
cd "$root"
mkdir -p target
# PGJQ_CARGO_PROFILE: another cargo profile than release (make test-all-versions: release-quick).
bash "$root/scripts/pgrx-package.sh" "$build_config" "$out" ${PGJQ_CARGO_PROFILE:+--profile "$PGJQ_CARGO_PROFILE"}
# Earlier releases' install scripts and every upgrade script, beside the one just generated.
bash "$root/scripts/release-scripts.sh" "$out$("$build_config" --sharedir)/extension"
# The package holds the build PostgreSQL's paths; each file goes to the same place in the
# target's.
put() { # put FROM_DIR TO_DIR: every file of the package under FROM_DIR, into TO_DIR
    [ -d "$out$1" ] || return 0
    (cd "$out$1" && find . -type f) | while read -r f; do
        dest=$2/${f#./}
        mkdir -p "$(dirname "$dest")"
        cp "$out$1/$f" "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
    done
}
put "$("$build_config" --pkglibdir)" "$("$target_config" --pkglibdir)"
put "$("$build_config" --sharedir)" "$("$target_config" --sharedir)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
echo "installed pg_jobqueue $version into $("$target_config" --pkglibdir)"
