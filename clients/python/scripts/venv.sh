#!/usr/bin/env bash
# The virtualenv the Python client's tests, linters and benchmark run in: clients/python/.venv
# (gitignored), with the package installed editable with its test and lint extras.  Quick when
# it is up to date: it installs only when the venv is missing or broken, or pyproject.toml
# changed since the last install.  Prints the venv's directory.
#   bash clients/python/scripts/venv.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=$here/.venv
python=${PYTHON:-python3}
stamp=$venv/.pg_jobqueue-installed
want=$( { sha256sum "$here/pyproject.toml"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c 'import pg_jobqueue' >/dev/null 2>&1; then
    echo "venv.sh: installing pg-jobqueue[test,lint] into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$here[test,lint]" >&2
    echo "$want" >"$stamp"
fi
echo "$venv"
