"""Worker processes: SIGTERM shuts a worker down cleanly; a process stalled past its lease
cannot complete the job another worker then did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import Database, wait_until
from pg_jobqueue import Job, Worker, enqueue

SCRIPT = Path(__file__).with_name("worker_process.py")


class Process:
    """A worker process whose JSON-line events are collected as they come."""

    def __init__(self, kind: str, url: str, queue: str, sleep: float, lease: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), kind, url, queue, str(sleep), str(lease)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(5)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_hands_back_and_exits(db: Database, kind: str) -> None:
    jobs = 40
    db.create_queue("term")
    db.fill("term", jobs)
    process = Process(kind, db.url, "term", sleep=0.3, lease=30)
    try:
        wait_until(lambda: len(process.of("completed")) >= 4, timeout=60, what="some completed")
        process.proc.send_signal(signal.SIGTERM)
        status = process.finish(timeout=60)
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
    assert process.proc.stderr is not None
    stderr = process.proc.stderr.read()
    assert status == 0, stderr
    (stats,) = process.of("stats")
    started = {e["id"] for e in process.of("started")}
    completed = {e["id"] for e in process.of("completed")}
    # Whatever had started was let finish (within the grace period) and recorded.
    assert started == completed and stats["completed"] == len(completed) < jobs
    assert stats["lost"] == stats["failed"] == 0
    states = db.states("term")
    assert states == {"completed": len(completed), "waiting": jobs - len(completed)}, states
    assert db.one(
        "SELECT count(*) FROM job.jobs WHERE queue = 'term' AND state = 'waiting'"
        " AND attempt = 0 AND errors = '[]'"
    ) == jobs - len(completed)
    # A second worker drains the rest: each job completed exactly once.
    with Worker("term", lambda job: None, conninfo=db.url, concurrency=8):
        wait_until(lambda: db.drained("term", jobs), timeout=60, what="the rest drained")
    db.completed_exactly_once("term", jobs)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stalled_process_loses_its_lease(db: Database, kind: str) -> None:
    """SIGSTOP a worker process mid-job past its 1 s lease: the background worker takes the
    job back, another worker completes it; resumed, the stalled one is refused (reported
    lost) and the stored result is the later attempt's."""
    db.create_queue("stall", backoff_base="10 milliseconds")
    job_id = enqueue(db.conn, "stall", {})
    process = Process(kind, db.url, "stall", sleep=3, lease=1)
    try:
        wait_until(lambda: process.of("started"), timeout=30, what="the job started")
        os.kill(process.proc.pid, signal.SIGSTOP)
        # Taken back once its lease ran out (the attempt counts as a stalled failure).
        wait_until(
            lambda: db.one("SELECT state <> 'running' FROM job.jobs WHERE id = %s", (job_id,)),
            timeout=30,
            what="the lease taken back",
        )

        def later(job: Job) -> dict[str, str]:
            return {"by": "later"}

        with Worker("stall", later, conninfo=db.url):
            wait_until(lambda: db.drained("stall", 1), timeout=30, what="the later attempt")
        os.kill(process.proc.pid, signal.SIGCONT)
        wait_until(lambda: process.of("lost"), timeout=30, what="the stale claim reported lost")
        process.proc.send_signal(signal.SIGTERM)
        assert process.finish(timeout=60) == 0
    finally:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)
            process.proc.kill()
    result, attempt, errors = db.one(
        "SELECT result, attempt, errors FROM job.jobs WHERE id = %s", (job_id,)
    )
    assert result == {"by": "later"} and attempt == 2
    assert errors[0].get("stalled") is True
    assert not process.of("completed")
    assert process.of("lost")[0]["id"] == job_id


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_releases_claimed_unstarted(db: Database, kind: str) -> None:
    """SIGTERM lands while the process's claim is held up by a table lock: the jobs it then
    gets are handed back unstarted (release: no attempt spent) and the process exits 0."""
    db.create_queue("termclaim")
    db.fill("termclaim", 10)
    blocker = psycopg.connect(db.url)
    process: Process | None = None
    try:
        blocker.execute("LOCK TABLE job.live_jobs IN EXCLUSIVE MODE")
        process = Process(kind, db.url, "termclaim", sleep=0.1, lease=30)
        wait_until(
            lambda: db.one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%job.dequeue%'"
            ),
            timeout=60,
            what="the process's dequeue waiting for the lock",
        )
        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        blocker.rollback()
        status = process.finish(timeout=60)
    finally:
        blocker.close()
        if process is not None and process.proc.poll() is None:
            process.proc.kill()
    assert process.proc.stderr is not None
    assert status == 0, process.proc.stderr.read()
    (stats,) = process.of("stats")
    assert not process.of("started")
    assert stats["claimed"] == stats["released"] == 2  # concurrency 2: a batch of 2
    assert db.states("termclaim") == {"waiting": 10}
    assert (
        db.one(
            "SELECT count(*) FROM job.jobs WHERE queue = 'termclaim'"
            " AND attempt = 0 AND errors = '[]'"
        )
        == 10
    )
