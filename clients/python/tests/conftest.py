"""Fixtures: a database of its own per test, on the preloaded cluster PGJQ_TEST_URL names (and
through the PgBouncer PGJQ_BOUNCER_URL names), dropped afterwards."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

TEST_URL = os.environ.get("PGJQ_TEST_URL")
BOUNCER_URL = os.environ.get("PGJQ_BOUNCER_URL")


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Polls ``check`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


class Database:
    """A scratch database with pg_jobqueue, served by the cluster's background worker."""

    def __init__(self, name: str) -> None:
        assert TEST_URL is not None
        self.name = name
        self.url = make_conninfo(TEST_URL, dbname=name)
        self.bouncer_url = make_conninfo(BOUNCER_URL, dbname=name) if BOUNCER_URL else None
        self.conn = psycopg.connect(self.url, autocommit=True)

    def all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0] if len(row) == 1 else row

    def create_queue(self, name: str, **settings: Any) -> None:
        args = "".join(f", {k} => %({k})s" for k in settings)
        self.conn.execute(f"SELECT job.create_queue(%(name)s{args})", {"name": name, **settings})

    def fill(self, queue: str, count: int) -> None:
        """``count`` jobs with payload ``{"n": i}``, 5,000 to a round trip."""
        for start in range(1, count + 1, 5000):
            end = min(count, start + 4999)
            self.conn.execute(
                "SELECT count(*) FROM job.enqueue_many(%s, (SELECT array_agg("
                "jsonb_build_object('n', i)) FROM generate_series(%s::int, %s::int) i))",
                (queue, start, end),
            )

    def states(self, queue: str) -> dict[str, int]:
        return dict(
            self.all("SELECT state, count(*) FROM job.jobs WHERE queue = %s GROUP BY 1", (queue,))
        )

    def completed_exactly_once(self, queue: str, count: int) -> None:
        total, distinct = self.one(
            "SELECT count(*), count(DISTINCT id) FROM job.jobs"
            " WHERE queue = %s AND state = 'completed'",
            (queue,),
        )
        assert (total, distinct) == (count, count), self.states(queue)
        bad = self.one(
            "SELECT count(*) FROM job.jobs WHERE queue = %s"
            " AND (attempt <> 1 OR jsonb_array_length(errors) > 0)",
            (queue,),
        )
        assert bad == 0, "a job ran more than once or recorded an error"

    def drained(self, queue: str, count: int) -> bool:
        return bool(
            self.one(
                "SELECT count(*) FROM job.jobs WHERE queue = %s AND state = 'completed'", (queue,)
            )
            >= count
        )


@pytest.fixture
def db() -> Iterator[Database]:
    if not TEST_URL:
        pytest.skip("PGJQ_TEST_URL is not set (a preloaded pg_jobqueue cluster)")
    name = f"pgjq_py_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(TEST_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    database = Database(name)
    try:
        database.conn.execute("CREATE EXTENSION pg_jobqueue")
        # The background worker (delayed jobs, retries, expired leases) serves it within a second.
        wait_until(
            lambda: database.one(
                "SELECT count(*) FROM job.worker_processes() WHERE kind = 'scheduler'"
            ),
            timeout=30,
            what="the pg_jobqueue scheduler of the test database",
        )
        yield database
    finally:
        database.conn.close()
        with psycopg.connect(TEST_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bouncer_db(db: Database) -> Database:
    if not db.bouncer_url:
        pytest.skip("PGJQ_BOUNCER_URL is not set (PgBouncer in transaction pooling)")
    return db


def dbname_of(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname"))
