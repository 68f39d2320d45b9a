"""Typed payloads as mypy --strict must see them (test_typing.py checks this file with
--warn-unused-ignores: each ``# type: ignore[code]`` line must stay that error)."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

import psycopg
from typing_extensions import NotRequired, assert_type

from pg_jobqueue import AsyncWorker, Job, Worker, aenqueue, enqueue, enqueue_many


class Email(TypedDict):
    to: str
    attempt: int
    cc: NotRequired[list[str]]


def send(job: Job[Email]) -> dict[str, str]:
    assert_type(job.payload, Email)
    assert_type(job.payload["to"], str)
    assert_type(job.id, int)  # an int here, a decimal string in Node
    return {"sent_to": job.payload["to"]}


async def send_async(job: Job[Email]) -> None:
    assert_type(job.payload["attempt"], int)


def untyped(job: Job) -> None:
    # Without a type argument the payload is a JSON object, as before.
    assert_type(job.payload, dict[str, Any])


def on_lost(job: Job[Email], reason: str) -> None: ...


def check(conn: psycopg.Connection[Any], aconn: psycopg.AsyncConnection[Any]) -> None:
    # The worker's payload type comes from its handler.
    assert_type(Worker("emails", send, conninfo="", on_lost=on_lost), Worker[Email])
    assert_type(AsyncWorker("emails", send_async, conninfo=""), AsyncWorker[Email])
    assert_type(Worker("emails", untyped, conninfo=""), Worker[dict[str, Any]])
    Worker[Email]("emails", send, conninfo="")

    # A TypedDict is a payload; so is a plain dict.  Ids are ints.
    email: Email = {"to": "ada@example.com", "attempt": 1}
    assert_type(enqueue(conn, "emails", email), int)
    assert_type(enqueue(conn, "emails", {"any": "thing"}), int)
    assert_type(enqueue_many(conn, "emails", [email, email]), list[int])

    # Mistakes the types catch.
    Worker[Email]("emails", untyped, conninfo="")  # type: ignore[arg-type]
    Worker("emails", send, conninfo="", on_lost=lambda job, reason: job.payload["nope"])  # type: ignore[typeddict-item]
    bad: Email = {"to": "ada@example.com"}  # type: ignore[typeddict-item]
    late: Email = {"to": "x", "attempt": dt.date.today()}  # type: ignore[typeddict-item]
    enqueue(aconn, "emails", email)  # type: ignore[arg-type]
    enqueue(conn, "emails", ["not", "an", "object"])  # type: ignore[arg-type]
    enqueue(conn, 42, email)  # type: ignore[arg-type]
    aenqueue(conn, "emails", email)  # type: ignore[arg-type,unused-coroutine]
    del bad, late


def wrong_handler(job: Job[Email]) -> None:
    job.payload["subject"]  # type: ignore[typeddict-item]
    job.id.upper()  # type: ignore[attr-defined]
