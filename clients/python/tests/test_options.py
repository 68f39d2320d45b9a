"""Options are checked when a worker is made (no database needed)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import pathlib
import re
from typing import Any

import pytest

import pg_jobqueue
from pg_jobqueue import AsyncWorker, Job, Worker


def sync_handler(job: Job) -> None:
    pass


async def async_handler(job: Job) -> None:
    pass


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"batch": 0}, "batch"),
        ({"lease": 0}, "lease"),
        ({"lease": 2, "heartbeat": 2}, "heartbeat"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"worker_name": "x" * 129}, "worker name"),
        ({"worker_name": "a\nb"}, "control"),
        ({"grace_period": -1}, "grace_period"),
    ],
)
def test_bad_options(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Worker("q", sync_handler, conninfo="", **options)
    with pytest.raises(ValueError, match=error):
        AsyncWorker("q", async_handler, conninfo="", **options)


def test_handler_kinds_and_connections() -> None:
    with pytest.raises(TypeError, match="AsyncWorker"):
        Worker("q", async_handler, conninfo="")
    with pytest.raises(TypeError, match="sync handlers"):
        AsyncWorker("q", sync_handler, conninfo="")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        Worker("q", sync_handler)
    worker = Worker("q", sync_handler, conninfo="", lease=dt.timedelta(seconds=90), batch=2)
    assert worker.settings.lease == 90 and worker.settings.batch == 2
    assert worker.settings.renew_every(90) == 30  # a third of the lease
    assert Worker("q", sync_handler, conninfo="").settings.batch == 4  # = concurrency
    assert len(worker.name) <= 128
    worker.close()  # never started: nothing to do


def test_the_version_is_the_extensions() -> None:
    cargo = (pathlib.Path(__file__).resolve().parents[3] / "Cargo.toml").read_text()
    match = re.search(r'^version = "(.+)"$', cargo, re.M)
    assert match is not None
    assert pg_jobqueue.__version__ == match.group(1)
    assert importlib.metadata.version("pg-jobqueue") == match.group(1)
