#!/usr/bin/env bash
# `make package`: the release packages of the PostgreSQL of scripts/pg-config.sh, in
# target/packages/:
#   postgresql-NN-pg-jobqueue_VERSION_amd64.deb   for Debian's postgresql-NN (its paths, its
#                                                 Depends), built with cargo pgrx package and
#                                                 dpkg-deb
#   pg_jobqueue-VERSION.zip                       the PGXN distribution: the source tree of
#                                                 HEAD under pg_jobqueue-VERSION/, with
#                                                 META.json; `make install PG_CONFIG=…`
#                                                 builds and installs it
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
pg_config=$(bash scripts/pg-config.sh)
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out=$root/target/packages
mkdir -p "$out"

# The build, as cargo pgrx package lays it out under the build PostgreSQL's own paths.
raw=$root/target/package-raw
bash scripts/pgrx-package.sh "$pg_config" "$raw"

# The Debian package: Debian's paths for postgresql-NN, whichever PostgreSQL built it (the
# server ABI is the major's).
name=postgresql-$major-pg-jobqueue
deb=$root/target/deb/$name
rm -rf "$deb"
lib=$deb/usr/lib/postgresql/$major/lib
ext=$deb/usr/share/postgresql/$major/extension
doc=$deb/usr/share/doc/$name
mkdir -p "$lib" "$ext" "$doc" "$deb/DEBIAN"
install -m 0644 "$raw$("$pg_config" --pkglibdir)/pg_jobqueue.so" "$lib/"
# Earlier releases' install scripts and every upgrade script, beside the one just generated.
bash scripts/release-scripts.sh "$raw$("$pg_config" --sharedir)/extension"
install -m 0644 "$raw$("$pg_config" --sharedir)"/extension/pg_jobqueue* "$ext/"
install -m 0644 README.md CHANGELOG.md "$doc/"
install -m 0644 LICENSE "$doc/copyright"
size=$(du -sk "$deb" | cut -f1)
cat >"$deb/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: pg_jobqueue developers <pg_jobqueue@localhost>
Installed-Size: $size
Depends: postgresql-$major, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Homepage: https://pgxn.org/dist/pg_jobqueue/
Description: background jobs inside PostgreSQL $major
 Queues claimed with FOR UPDATE SKIP LOCKED, retries with backoff and jitter,
 dead letters, idempotency keys, leases with fencing tokens, cron schedules with
 time zones, flow control, and a background worker that fires schedules, runs
 SQL handlers and sends signed webhooks.  Add pg_jobqueue to
 shared_preload_libraries, restart, then CREATE EXTENSION pg_jobqueue.
CONTROL
dpkg-deb --root-owner-group --build "$deb" "$out/${name}_${version}_$arch.deb" >/dev/null
echo "package: $out/${name}_${version}_$arch.deb"

# The PGXN distribution: what HEAD holds (uncommitted changes are not released).
rm -f "$out/pg_jobqueue-$version.zip"
git archive --format=zip --prefix="pg_jobqueue-$version/" -o "$out/pg_jobqueue-$version.zip" HEAD
echo "package: $out/pg_jobqueue-$version.zip"
