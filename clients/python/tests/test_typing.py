"""Types, checked by mypy --strict: every Python example of the README (each ```python block
becomes a module; what a fragment takes from the application around it comes from
typing/readme_stubs.py) and typing/expected.py (typed payloads: ``assert_type`` checks, and
``# type: ignore[code]`` lines that must stay errors, under ``--warn-unused-ignores``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent
README = HERE.parent / "README.md"
STUBS = HERE / "typing" / "readme_stubs.pyi"

# Modules, and names of the library, an example may use without importing them.
MODULES = ("psycopg", "sqlalchemy")
LIBRARY = ("AsyncWorker", "Job", "Worker", "aenqueue", "aenqueue_many", "enqueue", "enqueue_many")


def readme_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)


def stub_names() -> list[str]:
    pattern = r"^(?:def |async def |class )(\w+)|^(\w+):"
    return [a or b for a, b in re.findall(pattern, STUBS.read_text(), re.M)]


def defines(code: str, name: str) -> bool:
    return bool(
        re.search(rf"^\s*(?:def|async def|class)\s+{name}\b|^\s*{name}\s*[:=]", code, re.M)
        or re.search(rf"^\s*(?:import\s+{name}\b|from\s+\S+\s+import\s+.*\b{name}\b)", code, re.M)
    )


def uses(code: str, name: str) -> bool:
    return bool(re.search(rf"(?<![.\w\"']){name}\b", code))


def as_module(code: str) -> str:
    """The block as a module: the imports it leaves out, then the block (inside an ``async
    def`` when it awaits at the top level)."""
    head = ["from __future__ import annotations"]
    head += [f"import {m}" for m in MODULES if uses(code, m) and not defines(code, m)]
    for module, names in (("pg_jobqueue", LIBRARY), ("readme_stubs", stub_names())):
        wanted = [n for n in names if uses(code, n) and not defines(code, n)]
        if wanted:
            head.append(f"from {module} import {', '.join(wanted)}")
    if re.search(r"^(?:\w+ = )?await ", code, re.M):
        code = "async def _example() -> None:\n" + "".join(
            f"    {line}" if line.strip() else line for line in code.splitlines(keepends=True)
        )
    return "\n".join(head) + "\n\n" + code


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for both checks: the second reuses the analysis of the library."""
    return tmp_path_factory.mktemp("mypy_cache")


def mypy(*files: Path, cache: Path) -> None:
    stdout, stderr, status = api.run(
        ["--strict", "--warn-unused-ignores", "--cache-dir", str(cache), *map(str, files)]
    )
    assert status == 0, stdout + stderr


def test_readme_examples_type_check(tmp_path: Path, cache: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 7, f"expected the README's examples, found {len(blocks)} blocks"
    shutil.copy(STUBS, tmp_path / STUBS.name)
    files = []
    for i, code in enumerate(blocks, 1):
        path = tmp_path / f"readme_example_{i:02}.py"
        path.write_text(as_module(code))
        files.append(path)
    mypy(*files, cache=cache)


def test_typed_payloads(cache: Path) -> None:
    mypy(HERE / "typing" / "expected.py", cache=cache)
