#!/usr/bin/env python3
"""Writes the upgrade script of the release under way: its hand-written part, then every
definition that release's install script holds and the previous release's does not.

    python3 scripts/upgrade-script.py sql/upgrades/pg_jobqueue--A--B.sql INSTALL_B.sql > OUT
    python3 scripts/upgrade-script.py --unhandled sql/upgrades/pg_jobqueue--A--B.sql INSTALL_B.sql

INSTALL_B.sql is the install script pgrx generates for B (`cargo pgrx package` or `cargo pgrx
schema`); the previous release's is sql/released/pg_jobqueue--A.sql.  The hand-written part
(sql/upgrades/, see sql/README.md) holds what the definitions cannot do: changes to tables,
indexes and types that exist already, data moves, DROPs of functions whose arguments or result
change.  The generated part, in the
install script's order so that everything comes after what it uses:

  * each table, type, index, sequence and statistics object A lacks, as B's install script
    creates it (and marks it for pg_dump), but those the hand-written part renames into being
    (ALTER TABLE|INDEX ... RENAME TO);
  * CREATE OR REPLACE of each function, aggregate and view B defines otherwise than A (compared
    without comments and blank space), or that A lacks;
  * what the hand-written part drops, created anew even where its text is A's;
  * for each function B has with arguments A's did not (or dropped and created anew), REVOKE
    EXECUTE FROM PUBLIC, as the install script's REVOKE ... ON ALL FUNCTIONS does on a fresh
    install (that statement is not re-run: it would also take back what an administrator
    granted to PUBLIC since);
  * every COMMENT and GRANT of B (re-running them changes nothing that was right), and each
    REVOKE that A's install script lacks;
  * B's top-level SELECTs but pg_extension_config_dump: what the install script does once
    everything stands (job._request_service(): the worker declines a database at another
    version than its library's, so the update must ask for service again).

--unhandled lists B's other statements that A's install script lacks (changed tables, ...):
each needs its counterpart in the hand-written part, which the upgrade test checks.
Freezing the release (scripts/freeze-release.sh) writes the whole script in place of its
hand-written part, once.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPLACEABLE = re.compile(r"CREATE\s+(FUNCTION|VIEW|AGGREGATE)\s+((?:\w+\.)?\"?\w+\"?)", re.I)
# Objects a statement brings into being that cannot be replaced: new ones are created as the
# install script creates them.
CREATED = re.compile(r"CREATE\s+(?:UNIQUE\s+)?(TABLE|TYPE|INDEX|SEQUENCE|STATISTICS)\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)", re.I)
DUMPED = re.compile(r"SELECT\s+pg_catalog\.pg_extension_config_dump\('([\w.]+)'", re.I)


def statements(text: str) -> list[tuple[str, str]]:
    """The top-level statements of a SQL script, each as (the comment lines right above it,
    the statement up to its semicolon); quotes, dollar quotes and comments are respected."""
    out, i, n, start = [], 0, len(text), 0
    while i < n:
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while depth and i < n:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif text[i] == "'":
            i += 1
            while i < n and not (text[i] == "'" and text[i + 1:i + 2] != "'"):
                i += 2 if text[i] == "'" else 1
            i += 1
        elif text[i] == '"':
            i = text.index('"', i + 1) + 1
        elif text[i] == "$" and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r"\$(?:[A-Za-z_]\w*)?\$", text[i:])
            i = text.index(m.group(0), i + len(m.group(0))) + len(m.group(0)) if m else i + 1
        elif text[i] == ";":
            out.append(split_comment(text[start:i + 1]))
            start = i = i + 1
        else:
            i += 1
    return out


def split_comment(chunk: str) -> tuple[str, str]:
    """(the `--` lines right above the statement, the statement): block comments (pgrx's
    connected-object markers), pgrx's location lines, and comments a blank line separates from
    the statement are dropped."""
    i, head = 0, []
    while True:
        while i < len(chunk) and chunk[i] in " \t\n":
            if chunk.startswith("\n\n", i):
                head = []
            i += 1
        if chunk.startswith("/*", i):
            i = chunk.index("*/", i) + 2
            head = []
        elif chunk.startswith("--", i):
            end = chunk.find("\n", i)
            end = len(chunk) if end < 0 else end
            line = chunk[i:end]
            if not re.match(r"-- (src/\S+:\d+|bootstrap|finalize|requires:)", line):
                head.append(line)
            i = end
        else:
            return "\n".join(head), chunk[i:]


def key(statement: str) -> str:
    """A statement without comments outside its body, and with blank space collapsed."""
    bare = re.sub(r"/\*.*?\*/", " ", statement, flags=re.S)
    bare = re.sub(r"(?m)--[^'\n$]*$", " ", bare)
    return " ".join(bare.split())


def qualified(name: str) -> str:
    """pgrx declares Rust functions unqualified, in the extension's schema."""
    return name if "." in name else "job." + name


def signature(statement: str, kind: str) -> str:
    """`job.f(arg types)` of a CREATE FUNCTION or AGGREGATE, its defaults left out."""
    m = REPLACEABLE.match(statement)
    i = statement.index("(", m.end()) + 1
    args, piece, depth = [], "", 1
    while depth:
        c = statement[i]
        depth += {"(": 1, ")": -1}.get(c, 0)
        if (c == "," and depth == 1) or depth == 0:
            args.append(piece)
            piece = ""
        else:
            piece += c
        i += 1
    cleaned = []
    for arg in args:
        arg = key(arg)
        arg = re.split(r"\s+DEFAULT\s+|\s*=\s*", arg, maxsplit=1, flags=re.I)[0].strip()
        if arg:
            cleaned.append(arg)
    return "%s(%s)" % (qualified(m.group(2).replace('"', "")), ", ".join(cleaned))


def replaceable(statement: str) -> tuple[str, str] | None:
    m = REPLACEABLE.match(statement)
    return (m.group(1).upper(), m.group(2)) if m else None


def created(statement: str) -> str | None:
    """The table, type, index, sequence or statistics a statement creates, or a table it
    marks for pg_dump (created with it)."""
    m = CREATED.match(key(statement)) or DUMPED.match(key(statement))
    return m.group(m.lastindex).lower() if m else None


def generate(part_path: pathlib.Path, new_install: str, old_install: str) -> str:
    old = [s for _, s in statements(old_install)]
    old_keys = {key(s) for s in old}
    old_objects = {c for s in old if (c := created(s))}
    old_signatures = {signature(s, r[0]) for s in old if (r := replaceable(s)) and r[0] != "VIEW"}
    part = part_path.read_text()
    part_keys = [key(s) for _, s in statements(part)]
    part_objects = {c for _, s in statements(part) if (c := created(s))}
    # A table or index the hand-written part renames into being is the old one, rows and all:
    # not created again.
    renamed = {f"{m.group(1) or ''}{m.group(2)}".lower() for _, s in statements(part)
               if (m := re.match(r"ALTER\s+(?:TABLE|INDEX)\s+(?:IF\s+EXISTS\s+)?(\w+\.)?\w+\s+RENAME\s+TO\s+(\w+)",
                                 key(s), re.I))}
    # What the hand-written part drops is created anew, with a new function's privileges.
    dropped = {qualified(m.group(1).replace('"', "")).lower() for _, s in statements(part)
               if (m := re.match(r"DROP\s+(?:FUNCTION|ROUTINE|AGGREGATE|VIEW)\s+(?:IF\s+EXISTS\s+)?([\w.\"]+)",
                                 key(s), re.I))}
    generated, unhandled = [], []
    for comment, statement in statements(new_install):
        k = key(statement)
        found = replaceable(statement)
        verb = k.split(" ", 1)[0].upper()
        if found:
            kind, name = found
            anew = qualified(name.replace('"', "")).lower() in dropped
            if k in old_keys and not anew:
                continue
            text = re.sub(r"^CREATE\s+", "CREATE OR REPLACE ", statement, count=1, flags=re.I)
            for hand in part_keys:
                if hand == key(text):
                    sys.exit(f"upgrade-script: {part_path} repeats a definition the generated part "
                             f"writes ({' '.join(k.split()[:4])} ...): remove it from the hand-written part")
            generated.append((comment, text))
            if kind != "VIEW" and (anew or signature(statement, kind) not in old_signatures):
                generated.append(("", "REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC;" % signature(statement, kind)))
        elif verb in ("COMMENT", "GRANT") or (verb == "REVOKE" and k not in old_keys):
            generated.append(("", statement))
        elif verb == "SELECT" and not DUMPED.match(k):
            # What the install script does once it stands (job._request_service(): the worker
            # serves a database only at the library's version, so the update must ask again).
            generated.append((comment, statement))
        elif (c := created(statement)) and c not in old_objects:
            if c in renamed:
                continue
            if c in part_objects:
                sys.exit(f"upgrade-script: {part_path} creates {c}, which the previous release "
                         f"lacks: the generated part creates it; remove it from the hand-written part")
            generated.append((comment, statement))
        elif k not in old_keys and verb != "REVOKE":
            unhandled.append(" ".join(k.split()[:6]))
    return part, generated, unhandled


def main() -> None:
    args = sys.argv[1:]
    list_unhandled = args[:1] == ["--unhandled"]
    if list_unhandled:
        args = args[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    part_path, new_path = pathlib.Path(args[0]), pathlib.Path(args[1])
    m = re.fullmatch(r"pg_jobqueue--(.+)--(.+)\.sql", part_path.name)
    if not m:
        sys.exit(f"upgrade-script: {part_path} is not named pg_jobqueue--FROM--TO.sql")
    old_path = ROOT / "sql" / "released" / f"pg_jobqueue--{m.group(1)}.sql"
    part, generated, unhandled = generate(part_path, new_path.read_text(), old_path.read_text())
    if list_unhandled:
        print("\n".join(unhandled))
        return
    out = [part.rstrip("\n"), "",
           "-" * 93,
           f"-- Generated by scripts/upgrade-script.py from {m.group(2)}'s install script: what it",
           f"-- defines otherwise than {m.group(1)}'s, its comments and its grants.",
           "-" * 93]
    for comment, statement in generated:
        out.append("")
        if comment:
            out.append(comment)
        out.append(statement)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
