#!/usr/bin/env python3
"""Prints the current definitions of named SQL objects from the concept files in sql/, as an
upgrade script wants them (CREATE OR REPLACE, with the comment block above each), so that a
release's upgrade script copies them instead of retyping them (see sql/README.md).

    python3 scripts/sql-definitions.py job.dequeue job._finish view:job.queue_metrics
"""
import pathlib
import re
import sys

SQL = pathlib.Path(__file__).resolve().parent.parent / "sql"
SOURCES = {p: p.read_text() for p in sorted(SQL.glob("*.sql")) if not p.name.startswith("pg_jobqueue--")}


def with_comment(text: str, start: int) -> int:
    """Where the block of comment lines right above `start` begins."""
    lines = text[:start].split("\n")
    i = len(lines) - 1
    while i > 0 and lines[i - 1].startswith("--"):
        i -= 1
    return len("\n".join(lines[:i])) + (1 if i else 0)


def definition(kind: str, name: str) -> str:
    head = {"function": r"^CREATE FUNCTION %s\(", "view": r"^CREATE VIEW %s AS"}[kind] % re.escape(name)
    for text in SOURCES.values():
        m = re.search(head, text, re.M)
        if not m:
            continue
        start = with_comment(text, m.start())
        if kind == "function":
            end = text.index("$$;", text.index("$$", m.end()) + 2) + 3
            return text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        end = text.index(";\n", m.end()) + 1
        out = text[start:end].replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)
        comment = re.match(r"\n+(COMMENT ON VIEW %s IS .*?;)\n" % re.escape(name), text[end:], re.S)
        return out + ("\n\n" + comment.group(1) if comment else "")
    sys.exit(f"sql-definitions: {name} is not defined in sql/*.sql")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        kind, name = ("view", arg[5:]) if arg.startswith("view:") else ("function", arg)
        print(definition(kind, name))
        print()
