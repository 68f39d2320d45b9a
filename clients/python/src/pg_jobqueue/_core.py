"""What the thread worker and the asyncio worker share: jobs, options, SQL, bookkeeping."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic

from typing_extensions import TypeVar

from .errors import Failure

logger = logging.getLogger("pg_jobqueue")

Seconds = float | int | dt.timedelta

#: A payload as it comes out of ``jsonb`` when no type is given: a JSON object.
JsonObject = dict[str, Any]

#: The payload type of a ``Job``, ``Worker`` or ``AsyncWorker``: what the producers enqueue,
#: typically a ``TypedDict``.  It is a promise between producer and handler, not a
#: conversion: the handler gets the decoded JSON object.  Without one it is ``JsonObject``, so
#: code written before ``Job`` was generic type-checks as it did.
PayloadT = TypeVar("PayloadT", default=JsonObject)

CHANNEL = "pg_jobqueue"

# Each query runs in a transaction of its own (autocommit), with parameters on the unnamed
# statement: nothing here needs the session it ran on, so every call also works through
# PgBouncer in transaction pooling.
SQL_QUEUE_ID = "SELECT job.queue_id(%s)"
SQL_DEQUEUE = (
    "SELECT id, queue, job_type, payload, attempt, max_retries, enqueued_at, lease_expires_at,"
    " lease_token, extract(epoch FROM lease_expires_at - now())::float8"
    " FROM job.dequeue(%s, %s, %s, %s::interval)"
)
# Seconds until a dequeue next finds something (<= 0: now), NULL when nothing is due.
SQL_NEXT_DUE = "SELECT extract(epoch FROM job.next_due(%s) - clock_timestamp())::float8"
# Many completions in one round trip and one transaction, each with its own result and token
# and its own answer (true: completed; false: the claim is no longer current).  Ids are sent
# in ascending order so that concurrent batches lock rows in the same order.
SQL_COMPLETE = (
    "SELECT t.id, job.complete(t.id, t.result::jsonb, t.token)"
    " FROM unnest(%s::bigint[], %s::text[], %s::uuid[]) AS t(id, result, token)"
)
# job.fail with a stale token records nothing and returns NULL (from 0.5.0); up to 0.4.0 it
# returned the job's current state, which can look like a state it would have set itself
# ('scheduled', 'waiting', 'dead').  Renewing the lease first, in the same transaction, tells
# the two apart on either version: when the claim still holds the job, its row stays locked
# by this transaction until fail has run.
SQL_FAIL = (
    "SELECT h.held, CASE WHEN h.held THEN job.fail(%s, %s, %s, %s, %s::interval, %s) END"
    " FROM job.heartbeat_many(ARRAY[%s]::bigint[], ARRAY[%s]::uuid[], NULL) AS h"
)
SQL_RELEASE = (
    "SELECT t.id, job.release(t.id, t.token) FROM unnest(%s::bigint[], %s::uuid[]) AS t(id, token)"
)
SQL_HEARTBEAT = (
    "SELECT id, held, lease_expires_at FROM job.heartbeat_many(%s::bigint[], %s::uuid[],"
    " %s::interval)"
)


def seconds(value: Seconds | None, name: str, *, allow_zero: bool = False) -> float | None:
    """An option given as seconds or a timedelta, as seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    result = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if math.isnan(result) or result < 0 or (result == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "positive"
        raise ValueError(f"{name} must be {least}, got {value!r}")
    return result


def default_worker_name() -> str:
    host = "".join(c for c in socket.gethostname() if c.isprintable() and not c.isspace())
    return f"{host or 'host'}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[-128:]


def check_worker_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise ValueError("worker name must be 1 to 128 visible characters")
    if any(not c.isprintable() for c in name):
        raise ValueError("worker name must not contain control characters")
    return name


@dataclass(eq=False)
class Job(Generic[PayloadT]):
    """A claimed job, as the handler sees it: ``Job[Email]`` for a payload of type ``Email``."""

    #: The job's id: a ``bigint`` in PostgreSQL, an ``int`` here (a decimal string in Node).
    id: int
    queue: str
    job_type: str | None
    payload: PayloadT
    attempt: int
    max_retries: int
    enqueued_at: dt.datetime
    lease_expires_at: dt.datetime
    lease_token: uuid.UUID
    worker: str
    #: Set once the worker learns that its claim no longer holds this job (a heartbeat found
    #: it taken back or cancelled): whatever the handler returns will not be recorded.  Long
    #: handlers may check it to stop early.
    lost: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...], worker: str) -> Job[Any]:
        return cls(
            id=row[0],
            queue=row[1],
            job_type=row[2],
            payload=row[3],
            attempt=row[4],
            max_retries=row[5],
            enqueued_at=row[6],
            lease_expires_at=row[7],
            lease_token=row[8],
            worker=worker,
        )


# Hooks.  They run on the worker's own thread (Worker) or event loop (AsyncWorker), must be
# quick, and may raise: their exceptions are logged and otherwise ignored.
OnCompleted = Callable[[Job[PayloadT], Any], object]
OnFailed = Callable[[Job[PayloadT], BaseException, str], object]
OnLost = Callable[[Job[PayloadT], str], object]
OnError = Callable[[BaseException, str], object]


def log_completed(job: Job[Any], result: Any) -> None:
    logger.debug("job %s (%s) completed", job.id, job.queue)


def log_failed(job: Job[Any], exc: BaseException, state: str) -> None:
    logger.warning(
        "job %s (%s) attempt %s failed (now %s): %s: %s",
        job.id,
        job.queue,
        job.attempt,
        state,
        type(exc).__name__,
        exc,
    )


def log_lost(job: Job[Any], reason: str) -> None:
    logger.warning("job %s (%s) attempt %s lost: %s", job.id, job.queue, job.attempt, reason)


def log_error(exc: BaseException, context: str) -> None:
    logger.error("pg_jobqueue worker: %s: %s: %s", context, type(exc).__name__, exc)


# Where a claimed job is in the worker.
QUEUED, RUNNING, DONE = "queued", "running", "done"


@dataclass
class Outcome:
    """What a handler came to: a result to complete with, or an exception to fail with."""

    ok: bool
    result: Any = None
    result_json: str | None = None
    exc: BaseException | None = None
    failure: Failure | None = None


@dataclass(eq=False)
class Entry:
    """A claim the worker holds: its job, the lease it was claimed with, when to renew it."""

    job: Job[Any]
    lease: float
    renew_at: float
    state: str = QUEUED
    outcome: Outcome | None = None
    extra: Any = field(default=None)


class Settings:
    """The options both workers share, checked and normalised."""

    def __init__(
        self,
        queue: str,
        *,
        concurrency: int,
        batch: int | None,
        lease: Seconds | None,
        heartbeat: Seconds | None,
        poll_interval: Seconds,
        listen: bool,
        worker_name: str | None,
        json_dumps: Callable[[Any], str],
        grace_period: Seconds | None,
    ) -> None:
        if not isinstance(queue, str) or not queue:
            raise ValueError("queue must be a queue name")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, got {concurrency!r}")
        if batch is None:
            batch = concurrency
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be 1 or more, got {batch!r}")
        self.queue = queue
        self.concurrency = concurrency
        self.batch = batch
        self.lease = seconds(lease, "lease")
        self.heartbeat = seconds(heartbeat, "heartbeat")
        if self.lease is not None and self.heartbeat is not None and self.heartbeat >= self.lease:
            raise ValueError("heartbeat must be shorter than the lease")
        poll = seconds(poll_interval, "poll_interval")
        assert poll is not None
        self.poll_interval = poll
        self.listen = bool(listen)
        self.worker = check_worker_name(worker_name or default_worker_name())
        self.json_dumps = json_dumps
        self.grace_period = seconds(grace_period, "grace_period", allow_zero=True)

    @property
    def lease_param(self) -> dt.timedelta | None:
        return None if self.lease is None else dt.timedelta(seconds=self.lease)

    def renew_every(self, lease: float) -> float:
        """Seconds between renewals of a claim of ``lease`` seconds: ``heartbeat``, or a third
        of the lease."""
        if self.heartbeat is not None:
            return min(self.heartbeat, lease / 2)
        return lease / 3


def encode_result(dumps: Callable[[Any], str], result: Any) -> str | None:
    """The handler's return value as JSON text (None: SQL NULL)."""
    if result is None:
        return None
    text = dumps(result)
    if not isinstance(text, str):
        raise TypeError("json_dumps must return str")
    return text


def default_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def now() -> float:
    return time.monotonic()


def new_entry(job: Job[Any], lease: float, settings: Settings) -> Entry:
    return Entry(job=job, lease=lease, renew_at=now() + settings.renew_every(lease))


def group_for_heartbeat(
    entries: list[Entry],
) -> dict[float, tuple[list[int], list[uuid.UUID]]]:
    """Claims to renew, grouped by lease length: ids and the distinct tokens."""
    groups: dict[float, tuple[list[int], list[uuid.UUID]]] = {}
    for entry in entries:
        ids, tokens = groups.setdefault(entry.lease, ([], []))
        ids.append(entry.job.id)
        if entry.job.lease_token not in tokens:
            tokens.append(entry.job.lease_token)
    return groups


def renewal_due(entries: dict[int, Entry], at: float) -> list[Entry]:
    """The claims whose renewal is due now or within half a renewal period (renewed together
    so that one heartbeat serves many claims)."""
    due = []
    for entry in entries.values():
        if entry.state == DONE or entry.job.lost:
            continue
        if entry.renew_at <= at:
            due.append(entry)
    if due:
        # Bring forward those that would be due soon anyway.
        horizon = at + min(e.lease for e in due) / 6
        for entry in entries.values():
            if entry.state != DONE and not entry.job.lost and at < entry.renew_at <= horizon:
                due.append(entry)
    return due


def next_renewal(entries: dict[int, Entry]) -> float | None:
    times = [e.renew_at for e in entries.values() if e.state != DONE and not e.job.lost]
    return min(times) if times else None


SHUTDOWN_ERROR = (
    "pg_jobqueue worker {worker} shut down while the handler was still running"
    " (grace period {grace}s)"
)
