#!/usr/bin/env python3
"""Checks META.json against the PGXN Meta Spec 1.0.0 (https://pgxn.org/spec/): the keys it
requires, the forms of their values, and that it describes this release.

    python3 tests/packages/check_meta.py META.json VERSION
"""
import json
import re
import sys

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+)?$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
            "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
            "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay",
            "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown"}
STATUS = {"stable", "testing", "unstable"}


def problems(meta: dict, version: str) -> list[str]:
    found = []
    for key in ("name", "abstract", "maintainer", "license", "provides", "meta-spec", "version"):
        if key not in meta:
            found.append(f"{key} is required")
    if not re.fullmatch(r"[^\s/\\:]{2,}", str(meta.get("name", ""))):
        found.append("name must be at least two characters without spaces, slashes or colons")
    if not SEMVER.match(str(meta.get("version", ""))):
        found.append("version must be a semantic version")
    if meta.get("version") != version:
        found.append(f"version is {meta.get('version')}, the release is {version}")
    if meta.get("meta-spec", {}).get("version") != "1.0.0":
        found.append("meta-spec.version must be 1.0.0")
    lic = meta.get("license")
    names = [lic] if isinstance(lic, str) else list(lic) if isinstance(lic, (list, dict)) else []
    if not names or any(isinstance(n, str) and n not in LICENSES for n in names if isinstance(lic, (str, list))):
        found.append(f"license {lic!r} is not a license name of the spec")
    maintainer = meta.get("maintainer")
    if not (isinstance(maintainer, str) and maintainer) and not (isinstance(maintainer, list) and maintainer):
        found.append("maintainer must be a string or a non-empty list")
    provides = meta.get("provides")
    if not isinstance(provides, dict) or not provides:
        found.append("provides must name at least one extension")
    else:
        for ext, spec in provides.items():
            if not isinstance(spec, dict) or "file" not in spec or "version" not in spec:
                found.append(f"provides.{ext} needs file and version")
            elif not SEMVER.match(spec["version"]):
                found.append(f"provides.{ext}.version must be a semantic version")
    if meta.get("release_status", "stable") not in STATUS:
        found.append("release_status must be stable, testing or unstable")
    for section in meta.get("prereqs", {}).values():
        for relation, needs in section.items():
            if relation not in {"requires", "recommends", "suggests", "conflicts"}:
                found.append(f"prereqs: unknown relation {relation}")
            for prereq, v in needs.items():
                if not SEMVER.match(str(v)) and not re.match(r"^[<>=!]", str(v)) and v != 0:
                    found.append(f"prereqs: {prereq} {v} is not a version")
    return found


if __name__ == "__main__":
    path, version = sys.argv[1], sys.argv[2]
    with open(path) as f:
        meta = json.load(f)
    found = problems(meta, version)
    for p in found:
        print(f"{path}: {p}", file=sys.stderr)
    sys.exit(1 if found else 0)
