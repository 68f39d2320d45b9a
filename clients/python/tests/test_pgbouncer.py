"""Through PgBouncer in transaction pooling (4 server connections): LISTEN does not work
there, so the workers poll with job.next_due, or LISTEN on a direct connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from conftest import Database, wait_until
from harness import AsyncHarness, Harness, SyncHarness, handler
from pg_jobqueue import Job, aenqueue, enqueue, enqueue_many
from test_producer import check_transactional, sa_url


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h: Harness = SyncHarness() if request.param == "sync" else AsyncHarness()
    try:
        yield h
    finally:
        h.shutdown()


def noop(job: Job) -> dict[str, int]:
    return {"n": job.payload["n"]}


async def anoop(job: Job) -> dict[str, int]:
    return {"n": job.payload["n"]}


def test_drain_polling(bouncer_db: Database, harness: Harness) -> None:
    db = bouncer_db
    jobs = 2000
    db.create_queue("bounced")
    db.fill("bounced", jobs)
    workers = [
        harness.start(
            "bounced",
            handler(harness.kind, noop, anoop),
            conninfo=db.bouncer_url,
            listen=False,
            poll_interval=0.5,
            concurrency=4,
        )
        for _ in range(4)
    ]
    wait_until(
        lambda: db.drained("bounced", jobs),
        timeout=120,
        interval=0.2,
        what="2,000 jobs through PgBouncer",
    )
    for worker in workers:
        harness.close(worker)
    db.completed_exactly_once("bounced", jobs)
    assert sum(w.stats["completed"] for w in workers) == jobs


def test_polling_sleeps_until_next_due(bouncer_db: Database, harness: Harness) -> None:
    """Without LISTEN a worker sleeps until job.next_due, not a whole poll interval."""
    db = bouncer_db
    db.create_queue("bounced_due")
    harness.start(
        "bounced_due",
        handler(harness.kind, noop, anoop),
        conninfo=db.bouncer_url,
        listen=False,
        poll_interval=3,
    )
    time.sleep(0.3)
    # Enqueued while the worker sleeps its poll interval: found at the next look (<= 3 s).
    job_id = enqueue(db.conn, "bounced_due", {"n": 1}, delay=1)
    wait_until(lambda: db.drained("bounced_due", 1), timeout=30, what="the delayed job")
    # Now idle: the worker sleeps until this one is due.
    time.sleep(0.3)
    delayed = enqueue(db.conn, "bounced_due", {"n": 2}, delay=4)
    # The worker learns of it only at its next look; it then sleeps until it is due.
    wait_until(lambda: db.drained("bounced_due", 2), timeout=60, what="the second delayed job")
    lateness = db.one(
        "SELECT extract(epoch FROM claimed_at - run_at) FROM job.jobs WHERE id = %s", (delayed,)
    )
    print(f"{harness.kind}: polling worker claimed a delayed job {lateness}s after it was due")
    assert lateness < 0.5
    assert job_id


def test_listen_direct_work_through_bouncer(bouncer_db: Database, harness: Harness) -> None:
    """The recommended setup: LISTEN on a direct connection, everything else pooled."""
    db = bouncer_db
    db.create_queue("bounced_listen")
    started: list[float] = []

    def work(job: Job) -> None:
        started.append(time.monotonic())

    async def awork(job: Job) -> None:
        started.append(time.monotonic())

    harness.start(
        "bounced_listen",
        handler(harness.kind, work, awork),
        conninfo=db.bouncer_url,
        listen_conninfo=db.url,
        poll_interval=30,
    )
    for i in range(3):
        time.sleep(0.3)
        sent = time.monotonic()
        enqueue(db.conn, "bounced_listen", {"n": i})
        wait_until(lambda i=i: len(started) > i, timeout=20, what="the wake-up")
        assert started[i] - sent < 2.0, "woken by polling, not by the notification"


def test_producer_through_bouncer(bouncer_db: Database) -> None:
    db = bouncer_db
    assert db.bouncer_url is not None
    url = db.bouncer_url

    def with_psycopg(commit: bool) -> None:
        with psycopg.connect(url, prepare_threshold=None) as conn:
            conn.execute("INSERT INTO orders (queue) VALUES ('bounced_pg')")
            enqueue(conn, "bounced_pg", {"order": 1})
            enqueue_many(conn, "bounced_pg", [{"n": 1}, {"n": 2}])
            conn.commit() if commit else conn.rollback()

    check_transactional(db, "bounced_pg", with_psycopg)

    engine = sqlalchemy.create_engine(
        sa_url(url), connect_args={"prepare_threshold": None}, poolclass=sqlalchemy.NullPool
    )

    def with_sqlalchemy(commit: bool) -> None:
        with Session(engine) as session:
            session.execute(sqlalchemy.text("INSERT INTO orders (queue) VALUES ('bounced_sa')"))
            enqueue(session, "bounced_sa", {"order": 1})
            enqueue_many(session, "bounced_sa", [{"n": 1}, {"n": 2}])
            session.commit() if commit else session.rollback()

    try:
        check_transactional(db, "bounced_sa", with_sqlalchemy)
    finally:
        engine.dispose()

    # Many enqueues on one pooled connection: with psycopg's default prepare_threshold the
    # sixth would be a server-side prepared statement, which breaks below PgBouncer 1.21.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for i in range(20):
            enqueue(conn, "bounced_pg", {"i": i})
    assert db.one("SELECT count(*) FROM job.jobs WHERE queue = 'bounced_pg'") == 23


def test_async_producer_through_bouncer(bouncer_db: Database) -> None:
    db = bouncer_db
    assert db.bouncer_url is not None
    url = db.bouncer_url
    db.create_queue("bounced_async")

    async def produce() -> None:
        async with await psycopg.AsyncConnection.connect(url, prepare_threshold=None) as conn:
            for i in range(10):
                await aenqueue(conn, "bounced_async", {"i": i})
            await conn.commit()

    asyncio.run(produce())
    assert db.one("SELECT count(*) FROM job.jobs WHERE queue = 'bounced_async'") == 10
