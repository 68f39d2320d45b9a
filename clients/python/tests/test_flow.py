"""Flow-control options of enqueue / enqueue_many (concurrency, order, singleton and debounce
keys) and rate_limit_pause, sync and async, against the extension's claims."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from conftest import Database
from pg_jobqueue import (
    aenqueue,
    aenqueue_many,
    arate_limit_pause,
    enqueue,
    enqueue_many,
    rate_limit_pause,
)
from test_producer import sa_url


def claim(db: Database, queue: str, batch: int) -> list[int]:
    """The ids one ``job.dequeue`` of ``batch`` hands out, in id order."""
    return sorted(
        row[0] for row in db.all("SELECT id FROM job.dequeue(%s, 'test', %s)", (queue, batch))
    )


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


def test_concurrency_and_order_keys(db: Database) -> None:
    db.create_queue("keyed", key_concurrency=1)
    with psycopg.connect(db.url, autocommit=True) as conn:
        a1 = enqueue(conn, "keyed", {"n": 1}, concurrency_key="a")
        a2 = enqueue(conn, "keyed", {"n": 2}, concurrency_key="a")
        b = enqueue_many(conn, "keyed", [{"n": 3}, {"n": 4}], concurrency_key="b")
        o = enqueue_many(conn, "keyed", [{"n": 5}, {"n": 6}], order_key="o")
        o3 = enqueue(conn, "keyed", {"n": 7}, order_key="o")
    keys = db.all("SELECT concurrency_key FROM job.jobs WHERE queue = 'keyed' ORDER BY id")
    assert [k for (k,) in keys] == ["a", "a", "b", "b", None, None, None]
    # One job per concurrency key at a time, and the order key's oldest job alone.
    assert claim(db, "keyed", 10) == [a1, b[0], o[0]]
    assert claim(db, "keyed", 10) == []
    db.conn.execute("SELECT job.complete(id) FROM unnest(%s::bigint[]) id", ([a1, b[0], o[0]],))
    assert claim(db, "keyed", 10) == [a2, b[1], o[1]]
    assert o3 > o[1]


def test_singleton_and_debounce(db: Database) -> None:
    db.create_queue("merged")
    with psycopg.connect(db.url, autocommit=True) as conn:
        s1 = enqueue(conn, "merged", {"v": 1}, singleton_key="index")
        s2 = enqueue(conn, "merged", {"v": 2}, singleton_key="index")
        d1 = enqueue(
            conn, "merged", {"v": 1}, debounce_key="user-7", debounce=5, debounce_max_wait=60
        )
        d2 = enqueue(
            conn,
            "merged",
            {"v": 2},
            debounce_key="user-7",
            debounce=dt.timedelta(seconds=30),
            debounce_max_wait=dt.timedelta(minutes=1),
        )
    assert s2 == s1 and d2 == d1
    assert db.one("SELECT payload, state FROM job.jobs WHERE id = %s", (s1,)) == (
        {"v": 2},
        "waiting",
    )
    payload, state, wait = db.one(
        "SELECT payload, state, extract(epoch FROM run_at - enqueued_at)::float8"
        " FROM job.jobs WHERE id = %s",
        (d1,),
    )
    assert (payload, state) == ({"v": 2}, "scheduled")
    assert 29 <= wait <= 31  # the last enqueue's debounce, within debounce_max_wait
    assert db.one("SELECT count(*) FROM job.jobs WHERE queue = 'merged'") == 2
    assert claim(db, "merged", 10) == [s1]  # the debounced job is not due yet


def test_rate_limit_pause(db: Database) -> None:
    db.create_queue("held")
    db.create_queue("fair", fair=True)
    with psycopg.connect(db.url, autocommit=True) as conn:
        job_id = enqueue(conn, "held", {})
        rate_limit_pause(conn, "held", until=later(60))
        assert claim(db, "held", 5) == []
        assert db.one("SELECT held_until IS NOT NULL FROM job.queue_settings WHERE queue = 'held'")
        rate_limit_pause(conn, "held")  # until=None lifts it
        assert claim(db, "held", 5) == [job_id]

        x = enqueue(conn, "fair", {}, concurrency_key="x")
        y = enqueue(conn, "fair", {}, concurrency_key="y")
        rate_limit_pause(conn, "fair", key="x", until=later(60))
        assert claim(db, "fair", 5) == [y]
        rate_limit_pause(conn, "fair", "x", None)
        assert claim(db, "fair", 5) == [x]

        # In the caller's transaction: a rollback leaves no hold.
        enqueue(conn, "held", {})
        with conn.transaction(force_rollback=True):
            rate_limit_pause(conn, "held", until=later(60))
        assert len(claim(db, "held", 5)) == 1


async def lift_key(url: str, queue: str, key: str) -> None:
    """Lifts a key's hold in a transaction of an async connection, committed."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await arate_limit_pause(conn, queue, key)
        await conn.commit()


def test_async_and_sqlalchemy(db: Database) -> None:
    db.create_queue("akeys", key_concurrency=1)

    async def produce() -> tuple[int, int, list[int]]:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            first = await aenqueue(conn, "akeys", {"v": 1}, singleton_key="s")
            again = await aenqueue(conn, "akeys", {"v": 2}, singleton_key="s")
            many = await aenqueue_many(conn, "akeys", [{"m": 1}, {"m": 2}], concurrency_key="k")
            await arate_limit_pause(conn, "akeys", key="k", until=later(60))
            return first, again, many

    first, again, many = asyncio.run(produce())
    assert again == first
    assert claim(db, "akeys", 10) == [first]  # key k is held back
    asyncio.run(lift_key(db.url, "akeys", "k"))
    assert claim(db, "akeys", 10) == [many[0]]

    engine = sqlalchemy.create_engine(sa_url(db.url))
    try:
        with Session(engine) as session:
            d1 = enqueue(session, "akeys", {"d": 1}, debounce_key="d", debounce=10)
            d2 = enqueue(session, "akeys", {"d": 2}, debounce_key="d", debounce=10)
            ordered = enqueue_many(session, "akeys", [{"o": 1}, {"o": 2}], order_key="o")
            rate_limit_pause(session, "akeys", until=later(60))
            session.commit()
    finally:
        engine.dispose()
    assert d2 == d1
    assert db.one("SELECT state FROM job.jobs WHERE id = %s", (d1,)) == "scheduled"
    assert claim(db, "akeys", 10) == []  # the whole queue is held back
    db.conn.execute("SELECT job.rate_limit_pause('akeys')")
    assert claim(db, "akeys", 10) == [ordered[0]]


def test_flow_bad_input(db: Database) -> None:
    db.create_queue("plain")
    with psycopg.connect(db.url, autocommit=True) as conn:
        with pytest.raises(TypeError, match="debounce must be"):
            enqueue(conn, "plain", {}, debounce_key="d", debounce=True)
        # A concurrency key on a queue without key limits would do nothing: refused.
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="concurrency_key"):
            enqueue(conn, "plain", {}, concurrency_key="k")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            enqueue(conn, "plain", {}, singleton_key="s", order_key="o")
        with pytest.raises(psycopg.errors.UndefinedObject):
            rate_limit_pause(conn, "no_such_queue", until=later(60))
        with pytest.raises(TypeError, match="rate_limit_pause needs a psycopg 3 Connection"):
            rate_limit_pause(object(), "plain")
