"""enqueue / enqueue_many in the application's own transaction: psycopg 3 and SQLAlchemy,
sync and async."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from conftest import Database
from pg_jobqueue import aenqueue, aenqueue_many, enqueue, enqueue_many


def sa_url(conninfo: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    return (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params['host']}:{params['port']}"
        f"/{params['dbname']}"
    )


def count(db: Database, queue: str) -> int:
    return int(db.one("SELECT count(*) FROM job.jobs WHERE queue = %s", (queue,)))


def check_transactional(db: Database, queue: str, produce: Callable[[bool], Any]) -> None:
    """``produce(commit)`` enqueues one job and one batch of two along with an application
    write, then commits or rolls back: rollback leaves nothing, commit everything."""
    db.create_queue(queue)
    db.conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, queue text)")
    produce(False)
    assert count(db, queue) == 0
    assert db.one("SELECT count(*) FROM orders WHERE queue = %s", (queue,)) == 0
    produce(True)
    assert count(db, queue) == 3
    assert db.one("SELECT count(*) FROM orders WHERE queue = %s", (queue,)) == 1
    assert db.all("SELECT payload FROM job.jobs WHERE queue = %s ORDER BY id", (queue,)) == [
        ({"order": 1},),
        ({"n": 1},),
        ({"n": 2},),
    ]


def test_psycopg_connection(db: Database) -> None:
    def produce(commit: bool) -> None:
        with psycopg.connect(db.url) as conn:
            conn.execute("INSERT INTO orders (queue) VALUES ('pg_conn')")
            job_id = enqueue(conn, "pg_conn", {"order": 1})
            ids = enqueue_many(conn, "pg_conn", [{"n": 1}, {"n": 2}])
            assert ids == [job_id + 1, job_id + 2]
            # Not visible to others before commit.
            assert count(db, "pg_conn") == 0
            conn.commit() if commit else conn.rollback()

    check_transactional(db, "pg_conn", produce)


def test_psycopg_cursor(db: Database) -> None:
    def produce(commit: bool) -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (queue) VALUES ('pg_cur')")
            enqueue(cur, "pg_cur", {"order": 1})
            enqueue_many(cur, "pg_cur", [{"n": 1}, {"n": 2}])
            conn.commit() if commit else conn.rollback()

    check_transactional(db, "pg_cur", produce)


def test_sqlalchemy_session(db: Database) -> None:
    engine = sqlalchemy.create_engine(sa_url(db.url))

    def produce(commit: bool) -> None:
        with Session(engine) as session:
            session.execute(sqlalchemy.text("INSERT INTO orders (queue) VALUES ('sa_session')"))
            enqueue(session, "sa_session", {"order": 1})
            enqueue_many(session, "sa_session", [{"n": 1}, {"n": 2}])
            session.commit() if commit else session.rollback()

    try:
        check_transactional(db, "sa_session", produce)
    finally:
        engine.dispose()


def test_sqlalchemy_connection(db: Database) -> None:
    engine = sqlalchemy.create_engine(sa_url(db.url))

    def produce(commit: bool) -> None:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO orders (queue) VALUES ('sa_conn')"))
            enqueue(conn, "sa_conn", {"order": 1})
            enqueue_many(conn, "sa_conn", [{"n": 1}, {"n": 2}])
            conn.commit() if commit else conn.rollback()

    try:
        check_transactional(db, "sa_conn", produce)
        with pytest.raises(TypeError, match="not an Engine"):
            enqueue(engine, "sa_conn", {})
    finally:
        engine.dispose()


def test_async_producers(db: Database) -> None:
    async def with_psycopg(commit: bool) -> None:
        async with await psycopg.AsyncConnection.connect(db.url) as conn:
            await conn.execute("INSERT INTO orders (queue) VALUES ('async_pg')")
            await aenqueue(conn, "async_pg", {"order": 1})
            await aenqueue_many(conn, "async_pg", [{"n": 1}, {"n": 2}])
            await (conn.commit() if commit else conn.rollback())

    check_transactional(db, "async_pg", lambda commit: asyncio.run(with_psycopg(commit)))

    async def with_sqlalchemy(commit: bool) -> None:
        engine = create_async_engine(sa_url(db.url))
        try:
            async with AsyncSession(engine) as session:
                await session.execute(
                    sqlalchemy.text("INSERT INTO orders (queue) VALUES ('async_sa')")
                )
                await aenqueue(session, "async_sa", {"order": 1})
                await aenqueue_many(session, "async_sa", [{"n": 1}, {"n": 2}])
                await (session.commit() if commit else session.rollback())
        finally:
            await engine.dispose()

    check_transactional(db, "async_sa", lambda commit: asyncio.run(with_sqlalchemy(commit)))


def test_options_map_by_name(db: Database) -> None:
    db.create_queue("opts")
    # Within pg_jobqueue.max_delay (365 days by default) of now.
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=100)).replace(microsecond=0)
    with psycopg.connect(db.url, autocommit=True) as conn:
        a = enqueue(
            conn,
            "opts",
            {"a": 1},
            run_at=at,
            priority=7,
            job_type="welcome",
            max_retries=2,
            idempotency_key="key-1",
        )
        again = enqueue(conn, "opts", {"a": 2}, idempotency_key="key-1")
        b = enqueue(conn, "opts", delay=dt.timedelta(minutes=10))
        c = enqueue(conn, "opts", {}, delay=90)
        many = enqueue_many(conn, "opts", [{"m": 1}], priority=3, job_type="bulk")
    assert again == a
    row = db.one(
        "SELECT run_at, priority, job_type, max_retries, idempotency_key, state"
        " FROM job.jobs WHERE id = %s",
        (a,),
    )
    assert row == (at, 7, "welcome", 2, "key-1", "scheduled")
    delay_b, payload_b = db.one(
        "SELECT extract(epoch FROM run_at - enqueued_at), payload FROM job.jobs WHERE id = %s", (b,)
    )
    assert 599 <= delay_b <= 601 and payload_b == {}
    assert (
        89
        <= db.one(
            "SELECT extract(epoch FROM run_at - enqueued_at) FROM job.jobs WHERE id = %s", (c,)
        )
        <= 91
    )
    assert db.one("SELECT priority, job_type FROM job.jobs WHERE id = %s", (many[0],)) == (
        3,
        "bulk",
    )


def test_bad_input(db: Database) -> None:
    db.create_queue("bad")
    with psycopg.connect(db.url, autocommit=True) as conn:
        with pytest.raises(TypeError, match="payload must be a dict"):
            enqueue(conn, "bad", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.UndefinedObject):
            enqueue(conn, "no_such_queue", {})
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            enqueue(conn, "bad", {}, delay=-5)
        with pytest.raises(TypeError, match="psycopg 3 Connection"):
            enqueue(object(), "bad", {})
