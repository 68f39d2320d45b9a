"""Worker and AsyncWorker against a real preloaded cluster: each test runs for both."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conftest import Database, wait_until
from harness import AsyncHarness, Harness, SyncHarness, handler
from pg_jobqueue import Job, PermanentError, enqueue

# The async variant drains as many jobs as the threaded one (see test_drain_exactly_once).
DRAIN_JOBS = 20_000


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h: Harness = SyncHarness() if request.param == "sync" else AsyncHarness()
    try:
        yield h
    finally:
        h.shutdown()


class Events:
    """What the hooks saw (appended from worker threads or the event loop)."""

    def __init__(self) -> None:
        self.completed: list[int] = []
        self.failed: list[tuple[int, str, BaseException]] = []
        self.lost: list[tuple[int, str]] = []
        self.errors: list[tuple[str, BaseException]] = []

    def hooks(self) -> dict[str, Any]:
        return {
            "on_completed": lambda job, result: self.completed.append(job.id),
            "on_failed": lambda job, exc, state: self.failed.append((job.id, state, exc)),
            "on_lost": lambda job, reason: self.lost.append((job.id, reason)),
            "on_error": lambda exc, context: self.errors.append((context, exc)),
        }


def test_drain_exactly_once(db: Database, harness: Harness) -> None:
    """8 workers x concurrency 4 drain 20,000 jobs: each runs once and is completed once."""
    db.create_queue("drain")
    db.fill("drain", DRAIN_JOBS)
    seen: list[int] = []
    lock = threading.Lock()

    def work(job: Job) -> dict[str, int]:
        with lock:
            seen.append(job.id)
        return {"n": job.payload["n"]}

    async def awork(job: Job) -> dict[str, int]:
        seen.append(job.id)
        return {"n": job.payload["n"]}

    started = time.monotonic()
    workers = [
        harness.start(
            "drain",
            handler(harness.kind, work, awork),
            conninfo=db.url,
            concurrency=4,
            worker_name=f"drain-{i}",
        )
        for i in range(8)
    ]
    wait_until(
        lambda: db.drained("drain", DRAIN_JOBS),
        timeout=300,
        interval=0.2,
        what="20,000 jobs completed",
    )
    elapsed = time.monotonic() - started
    for worker in workers:
        harness.close(worker)
    print(
        f"{harness.kind}: {DRAIN_JOBS} jobs in {elapsed:.1f}s ({DRAIN_JOBS / elapsed:.0f} jobs/s)"
    )
    db.completed_exactly_once("drain", DRAIN_JOBS)
    assert len(seen) == len(set(seen)) == DRAIN_JOBS, "a handler ran twice for one job"
    assert sum(w.stats["completed"] for w in workers) == DRAIN_JOBS
    assert db.one("SELECT count(*) FROM job.jobs WHERE queue = 'drain' AND result IS NULL") == 0
    # Every worker took part.
    assert all(w.stats["completed"] > 0 for w in workers)


class UpstreamError(Exception):
    """Like requests' HTTPError: the status and headers are on ``response``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"upstream said {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers or {}})()


def test_transient_retried_permanent_dead(db: Database, harness: Harness) -> None:
    db.create_queue("flaky", backoff_base="300 milliseconds", jitter=0)
    unavailable = enqueue(db.conn, "flaky", {"kind": "503"})
    missing = enqueue(db.conn, "flaky", {"kind": "404"})
    marked = enqueue(db.conn, "flaky", {"kind": "permanent"})
    limited = enqueue(db.conn, "flaky", {"kind": "429"})
    events = Events()

    def work(job: Job) -> str:
        kind = job.payload["kind"]
        if kind == "503" and job.attempt == 1:
            raise UpstreamError(503)
        if kind == "404":
            raise UpstreamError(404)
        if kind == "permanent":
            raise PermanentError("no such customer")
        if kind == "429" and job.attempt == 1:
            raise UpstreamError(429, {"Retry-After": "2"})
        return "ok"

    async def awork(job: Job) -> str:
        return work(job)

    harness.start("flaky", handler(harness.kind, work, awork), conninfo=db.url, **events.hooks())
    wait_until(
        lambda: (
            db.one(
                "SELECT count(*) FROM job.jobs WHERE queue = 'flaky'"
                " AND state IN ('completed', 'dead')"
            )
            == 4
        ),
        timeout=30,
        what="all four jobs finished",
    )
    rows = {
        r[0]: r[1:]
        for r in db.all("SELECT id, state, attempt, errors FROM job.jobs WHERE queue = 'flaky'")
    }
    state, attempt, errors = rows[unavailable]
    assert (state, attempt) == ("completed", 2)
    assert errors[0]["http_status"] == 503 and not errors[0]["permanent"]
    assert errors[0]["error"].startswith("test_worker.UpstreamError: upstream said 503\n")
    assert "Traceback (most recent call last)" in errors[0]["error"]
    # Backoff: the retry was claimed at least backoff_base after the failure.
    gap = db.one(
        "SELECT extract(epoch FROM claimed_at - (errors -> 0 ->> 'at')::timestamptz)"
        " FROM job.jobs WHERE id = %s",
        (unavailable,),
    )
    assert gap >= 0.3
    state, attempt, errors = rows[missing]
    assert (state, attempt, len(errors)) == ("dead", 1, 1)
    assert errors[0]["http_status"] == 404 and errors[0]["permanent"]
    state, attempt, errors = rows[marked]
    assert (state, attempt) == ("dead", 1) and errors[0]["permanent"]
    assert "no such customer" in errors[0]["error"]
    state, attempt, errors = rows[limited]
    assert (state, attempt) == ("completed", 2) and errors[0]["http_status"] == 429
    gap = db.one(
        "SELECT extract(epoch FROM claimed_at - (errors -> 0 ->> 'at')::timestamptz)"
        " FROM job.jobs WHERE id = %s",
        (limited,),
    )
    assert gap >= 2.0, "Retry-After: 2 replaces the backoff"
    assert sorted((i, s) for i, s, _ in events.failed) == sorted(
        [(unavailable, "scheduled"), (missing, "dead"), (marked, "dead"), (limited, "scheduled")]
    )
    assert not events.lost and not events.errors


def test_heartbeat_keeps_long_job(db: Database, harness: Harness) -> None:
    """Lease 1 s, handler 3 s: renewed automatically, completed on attempt 1."""
    db.create_queue("long")
    job_id = enqueue(db.conn, "long", {})
    events = Events()

    def work(job: Job) -> str:
        time.sleep(3)
        return "done"

    async def awork(job: Job) -> str:
        await asyncio.sleep(3)
        return "done"

    harness.start(
        "long", handler(harness.kind, work, awork), conninfo=db.url, lease=1, **events.hooks()
    )
    wait_until(lambda: db.drained("long", 1), timeout=30, what="the long job")
    state, attempt, errors, result = db.one(
        "SELECT state, attempt, errors, result FROM job.jobs WHERE id = %s", (job_id,)
    )
    assert (state, attempt, errors, result) == ("completed", 1, [], "done")
    assert events.completed == [job_id] and not events.lost


def test_close_during_load_hands_back(db: Database, harness: Harness) -> None:
    """close() under load: nothing is lost and no attempt is spent; a second worker drains."""
    jobs = 600
    db.create_queue("load")
    db.fill("load", jobs)

    def work(job: Job) -> None:
        time.sleep(0.01)

    async def awork(job: Job) -> None:
        await asyncio.sleep(0.01)

    workers = [
        harness.start("load", handler(harness.kind, work, awork), conninfo=db.url, concurrency=4)
        for _ in range(2)
    ]
    wait_until(
        lambda: (
            db.one("SELECT count(*) FROM job.jobs WHERE queue = 'load' AND state = 'completed'")
            >= 50
        ),
        what="some progress",
    )
    for worker in workers:
        harness.close(worker, grace_period=30)
    states = db.states("load")
    assert "running" not in states, states
    assert states.get("completed", 0) < jobs, "closed too late to test anything"
    # Jobs not completed are waiting, with no attempt spent and no error recorded.
    assert (
        db.one(
            "SELECT count(*) FROM job.jobs WHERE queue = 'load' AND state <> 'completed'"
            " AND (state <> 'waiting' OR attempt <> 0 OR errors <> '[]')"
        )
        == 0
    )
    second = harness.start(
        "load", handler(harness.kind, work, awork), conninfo=db.url, concurrency=8
    )
    wait_until(lambda: db.drained("load", jobs), timeout=60, what="the rest drained")
    harness.close(second)
    db.completed_exactly_once("load", jobs)
    print(f"{harness.kind}: released {sum(w.stats['released'] for w in workers)} at close")


def test_stop_hands_back_unstarted(db: Database, harness: Harness) -> None:
    """Jobs claimed but not started when the worker stops go back with release(): no attempt
    spent.  The worker's claim is held up by a table lock so that stop() lands between the
    claim and the start of the handlers."""
    db.create_queue("handback")
    db.fill("handback", 4)
    ran: list[int] = []

    def work(job: Job) -> None:
        ran.append(job.id)

    async def awork(job: Job) -> None:
        ran.append(job.id)

    blocker = psycopg.connect(db.url)
    try:
        blocker.execute("LOCK TABLE job.live_jobs IN EXCLUSIVE MODE")
        worker = harness.start(
            "handback",
            handler(harness.kind, work, awork),
            conninfo=db.url,
            concurrency=4,
            worker_name="handback-worker",
        )
        wait_until(
            lambda: db.one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%job.dequeue%'"
            ),
            what="the worker's dequeue waiting for the lock",
        )
        harness.stop(worker)
        time.sleep(0.2)
    finally:
        blocker.rollback()
        blocker.close()
    harness.close(worker)
    assert ran == []
    assert worker.stats["claimed"] == 4 and worker.stats["released"] == 4
    assert db.states("handback") == {"waiting": 4}
    assert (
        db.one(
            "SELECT count(*) FROM job.jobs WHERE queue = 'handback'"
            " AND attempt = 0 AND errors = '[]' AND claimed_by IS NULL"
        )
        == 4
    )


def test_delayed_and_retry_pickup_latency(db: Database, harness: Harness) -> None:
    """With LISTEN, delayed jobs and retries are claimed within 100 ms of becoming due."""
    db.create_queue("due", backoff_base="1 second", jitter=0)

    def work(job: Job) -> None:
        if job.payload.get("fail") and job.attempt == 1:
            raise RuntimeError("try again")

    async def awork(job: Job) -> None:
        work(job)

    harness.start("due", handler(harness.kind, work, awork), conninfo=db.url, poll_interval=30)
    time.sleep(0.3)  # idle, waiting on LISTEN
    delayed = [enqueue(db.conn, "due", {"i": i}, delay=1 + i * 0.37) for i in range(3)]
    retried = enqueue(db.conn, "due", {"fail": True})
    wait_until(lambda: db.drained("due", 4), timeout=30, what="delayed jobs and the retry")
    late = db.all(
        "SELECT id, extract(epoch FROM claimed_at - run_at) FROM job.jobs"
        " WHERE queue = 'due' ORDER BY id"
    )
    print(f"{harness.kind}: claimed after due by (s): {late}")
    for job_id, lateness in late:
        assert lateness < 0.1, f"job {job_id} claimed {lateness:.3f}s after it was due"
    assert db.one("SELECT attempt FROM job.jobs WHERE id = %s", (retried,)) == 2
    assert len(delayed) == 3


def test_new_job_wakes_idle_worker(db: Database, harness: Harness) -> None:
    """An idle LISTENing worker hears of a new job at once (its poll interval is 30 s)."""
    db.create_queue("wake")
    started: list[float] = []

    def work(job: Job) -> None:
        started.append(time.monotonic())

    async def awork(job: Job) -> None:
        work(job)

    harness.start("wake", handler(harness.kind, work, awork), conninfo=db.url, poll_interval=30)
    for i in range(3):
        time.sleep(0.3)
        sent = time.monotonic()
        enqueue(db.conn, "wake", {"i": i})
        wait_until(lambda i=i: len(started) > i, timeout=10, what="the wake-up")
        assert started[i] - sent < 2.0


def test_stale_worker_cannot_complete(db: Database, harness: Harness) -> None:
    """A worker whose claim was taken back and claimed again cannot complete the job: its
    completion is refused and reported lost; the result stored is the later attempt's.
    (The takeover here is an operator's cancel and retry; test_process.py stalls a worker
    process past its lease for the same check.)"""
    db.create_queue("stale")
    job_id = enqueue(db.conn, "stale", {})
    gate = threading.Event()
    events = Events()

    def first(job: Job) -> str:
        gate.wait(20)
        return "stale result"

    async def afirst(job: Job) -> str:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 20)
        return "stale result"

    stale = harness.start(
        "stale",
        handler(harness.kind, first, afirst),
        conninfo=db.url,
        concurrency=1,
        lease=30,
        heartbeat=25,
        **events.hooks(),
    )
    wait_until(lambda: db.one("SELECT state FROM job.jobs WHERE id = %s", (job_id,)) == "running")
    db.one("SELECT job.cancel(%s)", (job_id,))
    db.one("SELECT job.retry(%s)", (job_id,))
    row = db.one("SELECT lease_token FROM job.dequeue('stale', 'other-worker', 1, '1 minute')")
    assert db.one("SELECT job.complete(%s, '\"fresh result\"', %s)", (job_id, row))
    gate.set()
    wait_until(lambda: events.lost, what="the stale completion reported lost")
    harness.close(stale)
    assert events.lost[0][0] == job_id and "complete refused" in events.lost[0][1]
    assert not events.completed
    assert db.one("SELECT result FROM job.jobs WHERE id = %s", (job_id,)) == "fresh result"


def test_lost_lease_found_by_heartbeat(db: Database, harness: Harness) -> None:
    """A heartbeat that finds the claim gone reports the job lost and sets ``job.lost``."""
    db.create_queue("cancelled")
    job_id = enqueue(db.conn, "cancelled", {})
    seen_lost = threading.Event()
    events = Events()

    def work(job: Job) -> None:
        deadline = time.monotonic() + 20
        while not job.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        if job.lost:
            seen_lost.set()

    async def awork(job: Job) -> None:
        deadline = time.monotonic() + 20
        while not job.lost and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if job.lost:
            seen_lost.set()

    worker = harness.start(
        "cancelled", handler(harness.kind, work, awork), conninfo=db.url, lease=2, **events.hooks()
    )
    wait_until(lambda: db.one("SELECT state FROM job.jobs WHERE id = %s", (job_id,)) == "running")
    db.one("SELECT job.cancel(%s)", (job_id,))
    assert seen_lost.wait(10), "the handler never saw job.lost"
    harness.close(worker)
    assert [i for i, _ in events.lost] == [job_id] and "heartbeat" in events.lost[0][1]
    assert db.one("SELECT state FROM job.jobs WHERE id = %s", (job_id,)) == "cancelled"


def test_unknown_queue_refused_at_start(db: Database, harness: Harness) -> None:
    def work(job: Job) -> None:
        pass

    async def awork(job: Job) -> None:
        pass

    with pytest.raises(psycopg.errors.UndefinedObject):
        harness.start("nope", handler(harness.kind, work, awork), conninfo=db.url)


def test_result_not_json_fails_the_job(db: Database, harness: Harness) -> None:
    db.create_queue("badresult", max_retries=0)
    job_id = enqueue(db.conn, "badresult", {})

    def work(job: Job) -> object:
        return object()

    async def awork(job: Job) -> object:
        return object()

    harness.start("badresult", handler(harness.kind, work, awork), conninfo=db.url)
    wait_until(lambda: db.one("SELECT state FROM job.jobs WHERE id = %s", (job_id,)) == "dead")
    error = db.one("SELECT errors -> 0 ->> 'error' FROM job.jobs WHERE id = %s", (job_id,))
    assert error.startswith("TypeError: Object of type object is not JSON serializable")


def test_grace_period_over_fails_running(db: Database, harness: Harness) -> None:
    """A handler still running when the grace period ends: the attempt is failed (transient,
    saying so) and retried later; what the handler returns afterwards is not recorded."""
    db.create_queue("slow", backoff_base="30 seconds")
    job_id = enqueue(db.conn, "slow", {})
    events = Events()

    def work(job: Job) -> str:
        time.sleep(3)
        return "too late"

    async def awork(job: Job) -> str:
        await asyncio.sleep(3)
        return "too late"

    worker = harness.start(
        "slow", handler(harness.kind, work, awork), conninfo=db.url, **events.hooks()
    )
    wait_until(lambda: db.one("SELECT state FROM job.jobs WHERE id = %s", (job_id,)) == "running")
    started = time.monotonic()
    harness.close(worker, grace_period=0.5)
    assert time.monotonic() - started < 2.5
    state, attempt, errors, result = db.one(
        "SELECT state, attempt, errors, result FROM job.jobs WHERE id = %s", (job_id,)
    )
    assert (state, attempt, result) == ("scheduled", 1, None)
    assert "shut down while the handler was still running" in errors[0]["error"]
    assert not errors[0]["permanent"]
    assert [(i, s) for i, s, _ in events.failed] == [(job_id, "scheduled")]
    time.sleep(3)  # the sync handler thread finishes: still nothing recorded
    assert db.one("SELECT result FROM job.jobs WHERE id = %s", (job_id,)) is None
