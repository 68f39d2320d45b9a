#!/usr/bin/env python3
"""Rewrites every `CREATE OR REPLACE FUNCTION job.x(...)` and `CREATE OR REPLACE VIEW job.v` of
an unreleased upgrade script with the current definition from the concept files (as
scripts/sql-definitions.py prints it), so that the script's copies cannot drift from the
sources while the release is under way; a definition repeated (two changes merged) is kept
only where it last appears.  Rust functions (unqualified names, declared by pgrx) are left as
they are.

    python3 scripts/sync-upgrade.py sql/pg_jobqueue--0.4.0--0.5.0.sql
"""
import importlib.util
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
# The definitions as scripts/sql-definitions.py reads them (one reading of sql/*.sql).
_spec = importlib.util.spec_from_file_location("sql_definitions", HERE / "sql-definitions.py")
sql_definitions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sql_definitions)
HEAD = re.compile(r"^CREATE OR REPLACE (FUNCTION|VIEW) (job\.[a-z_0-9]+)\b", re.M)


def block(text: str, m: re.Match) -> tuple[int, int]:
    """The span of the definition at `m`, with its comment block and, for a view, its
    COMMENT ON VIEW."""
    lines = text[: m.start()].split("\n")
    i = len(lines) - 1
    while i > 0 and lines[i - 1].startswith("--") and not lines[i - 1].startswith("-----"):
        i -= 1
    start = len("\n".join(lines[:i])) + (1 if i else 0)
    if m.group(1) == "FUNCTION":
        end = text.index("$$;", text.index("$$", m.end()) + 2) + 3
    else:
        end = text.index(";\n", m.end()) + 1
        comment = re.match(r"\n+COMMENT ON VIEW %s IS .*?;(?=\n)" % re.escape(m.group(2)), text[end:], re.S)
        if comment:
            end += comment.end()
    return start, end


def current(kind: str, name: str) -> str:
    return sql_definitions.definition(kind.lower(), name).rstrip("\n")


path = pathlib.Path(sys.argv[1])
text = path.read_text()
found = list(HEAD.finditer(text))
last = {}
for m in found:
    last[(m.group(1), m.group(2))] = m.start()
pieces, pos = [], 0
for m in found:
    start, end = block(text, m)
    pieces.append(text[pos:start])
    key = (m.group(1), m.group(2))
    if last[key] == m.start():
        pieces.append(current(*key))
    else:
        # An earlier copy of a definition that appears again below: dropped, with the blank
        # line after it.
        end += 1 if text[end:end + 2] == "\n\n" else 0
    pos = end
pieces.append(text[pos:])
new = "".join(pieces)
if new != text:
    path.write_text(new)
    print(f"sync-upgrade: {path}: {len(found)} definitions, rewritten from sql/*.sql")
else:
    print(f"sync-upgrade: {path}: {len(found)} definitions, all current")
