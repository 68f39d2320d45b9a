"""Enqueueing in the application's own transaction: psycopg 3 or SQLAlchemy.  Also
``rate_limit_pause``, which a handler calls (on a connection of its own) to hold back a queue
or a concurrency key after a 429."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg

from ._core import Seconds

if TYPE_CHECKING:  # SQLAlchemy is optional: only its types are needed here
    import sqlalchemy
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm

#: Where ``enqueue`` and ``rate_limit_pause`` run: the application's own transaction.
Transaction: TypeAlias = (
    "psycopg.Connection[Any] | psycopg.Cursor[Any] | sqlalchemy.orm.Session"
    " | sqlalchemy.orm.scoped_session[Any] | sqlalchemy.engine.Connection"
)
#: The same for ``aenqueue`` and ``arate_limit_pause``.
AsyncTransaction: TypeAlias = (
    "psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any]"
    " | sqlalchemy.ext.asyncio.AsyncSession | sqlalchemy.ext.asyncio.async_scoped_session[Any]"
    " | sqlalchemy.ext.asyncio.AsyncConnection"
)
#: A payload as ``enqueue`` takes it: a ``dict``, a ``TypedDict``, any mapping to JSON values.
Payload: TypeAlias = Mapping[str, Any]

__all__ = [
    "aenqueue",
    "aenqueue_many",
    "arate_limit_pause",
    "enqueue",
    "enqueue_many",
    "rate_limit_pause",
]

# Option name -> the SQL type its value is cast to.  Only options given are passed (in named
# notation), so job.enqueue's own defaults apply to the others.
_ENQUEUE_OPTIONS = {
    "run_at": "timestamptz",
    "delay": "interval",
    "priority": "int",
    "idempotency_key": "text",
    "max_retries": "int",
    "job_type": "text",
    "concurrency_key": "text",
    "order_key": "text",
    "singleton_key": "text",
    "debounce_key": "text",
    "debounce": "interval",
    "debounce_max_wait": "interval",
}
_MANY_OPTIONS = {
    "priority": "int",
    "job_type": "text",
    "concurrency_key": "text",
    "order_key": "text",
}
# Options given as seconds or a timedelta (sent as an interval).
_DURATIONS = ("delay", "debounce", "debounce_max_wait")


def _payload_json(payload: Any, dumps: Callable[[Any], str]) -> str:
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        # job.enqueue refuses it too (22023); saying so here names the Python value.
        raise TypeError(f"a payload must be a dict (a JSON object), got {type(payload).__name__}")
    return dumps(dict(payload))


def _interval(name: str, value: Seconds | None) -> dt.timedelta | None:
    """A duration option (seconds or a timedelta) as a timedelta; the extension checks its
    range."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds or a timedelta")
    return dt.timedelta(seconds=float(value))


def _call(
    function: str,
    fixed: Sequence[tuple[str, str, Any]],
    options: dict[str, Any],
    types: dict[str, str],
) -> tuple[str, dict[str, Any]]:
    """``job.function(name => CAST(:name AS type), ...)`` with SQLAlchemy-style ``:name``
    placeholders, and its parameters."""
    args = []
    params: dict[str, Any] = {}
    for name, sql_type, value in fixed:
        args.append(f"{name} => CAST(:{name} AS {sql_type})")
        params[name] = value
    for name, value in options.items():
        if value is None:
            continue
        args.append(f"{name} => CAST(:{name} AS {types[name]})")
        params[name] = value
    return f"job.{function}({', '.join(args)})", params


def _enqueue_sql(
    queue: str, payload: Any, dumps: Callable[[Any], str], options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    options = dict(options)
    for name in _DURATIONS:
        options[name] = _interval(name, options.get(name))
    call, params = _call(
        "enqueue",
        [("queue", "text", queue), ("payload", "jsonb", _payload_json(payload, dumps))],
        options,
        _ENQUEUE_OPTIONS,
    )
    return f"SELECT {call}", params


def _enqueue_many_sql(
    queue: str, payloads: Iterable[Any], dumps: Callable[[Any], str], options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    texts = [_payload_json(p, dumps) for p in payloads]
    call, params = _call(
        "enqueue_many",
        [("queue", "text", queue), ("payloads", "text[]", texts)],
        options,
        _MANY_OPTIONS,
    )
    call = call.replace("CAST(:payloads AS text[])", "CAST(CAST(:payloads AS text[]) AS jsonb[])")
    return f"SELECT t.id FROM {call} WITH ORDINALITY AS t(id, n) ORDER BY t.n", params


def _rate_limit_pause_sql(
    queue: str, key: str | None, until: dt.datetime | None
) -> tuple[str, dict[str, Any]]:
    call, params = _call(
        "rate_limit_pause",
        [("queue", "text", queue)],
        {"key": key, "until": until},
        {"key": "text", "until": "timestamptz"},
    )
    return f"SELECT {call}", params


def _pyformat(sql: str, params: dict[str, Any]) -> str:
    for name in params:
        sql = sql.replace(f":{name} ", f"%({name})s ")
    return sql


def _is_sqlalchemy(target: Any) -> bool:
    return type(target).__module__.split(".")[0] == "sqlalchemy"


def _check_sqlalchemy(target: Any) -> None:
    if type(target).__name__ in ("Engine", "AsyncEngine"):
        raise TypeError(
            "pass a SQLAlchemy Connection or Session, not an Engine: the job is enqueued in"
            " that transaction and commits (or rolls back) with it"
        )


def _sqlalchemy_text(sql: str) -> Any:
    from sqlalchemy import text  # optional dependency: imported only when used  # noqa: PLC0415

    return text(sql)


def _run(target: Any, sql: str, params: dict[str, Any], what: str = "enqueue") -> list[Any]:
    if _is_sqlalchemy(target):
        _check_sqlalchemy(target)
        result = target.execute(_sqlalchemy_text(sql), params)
        return [row[0] for row in result]
    if isinstance(target, psycopg.Connection):
        return [row[0] for row in target.execute(_pyformat(sql, params), params).fetchall()]
    if isinstance(target, psycopg.Cursor):
        target.execute(_pyformat(sql, params), params)
        return [row[0] for row in target.fetchall()]
    if isinstance(target, (psycopg.AsyncConnection, psycopg.AsyncCursor)) or _is_async_sa(target):
        asynchronous = "aenqueue / aenqueue_many" if what == "enqueue" else f"a{what}"
        raise TypeError(f"an async connection or session: use {asynchronous}")
    raise TypeError(
        f"{what} needs a psycopg 3 Connection or Cursor, or a SQLAlchemy Session or Connection;"
        f" got {type(target).__name__}"
    )


def _is_async_sa(target: Any) -> bool:
    return _is_sqlalchemy(target) and type(target).__name__ in ("AsyncSession", "AsyncConnection")


async def _arun(target: Any, sql: str, params: dict[str, Any], what: str = "aenqueue") -> list[Any]:
    if _is_async_sa(target):
        result = await target.execute(_sqlalchemy_text(sql), params)
        return [row[0] for row in result]
    if isinstance(target, psycopg.AsyncConnection):
        cur = await target.execute(_pyformat(sql, params), params)
        return [row[0] for row in await cur.fetchall()]
    if isinstance(target, psycopg.AsyncCursor):
        await target.execute(_pyformat(sql, params), params)
        return [row[0] for row in await target.fetchall()]
    raise TypeError(
        f"{what} needs a psycopg 3 AsyncConnection or AsyncCursor, or a SQLAlchemy"
        f" AsyncSession or AsyncConnection; got {type(target).__name__}"
    )


def enqueue(
    conn: Transaction,
    queue: str,
    payload: Payload | None = None,
    *,
    run_at: dt.datetime | None = None,
    delay: Seconds | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    max_retries: int | None = None,
    job_type: str | None = None,
    concurrency_key: str | None = None,
    order_key: str | None = None,
    singleton_key: str | None = None,
    debounce_key: str | None = None,
    debounce: Seconds | None = None,
    debounce_max_wait: Seconds | None = None,
    json_dumps: Callable[[Any], str] = json.dumps,
) -> int:
    """Enqueues one job in ``conn``'s current transaction (``job.enqueue``) and returns its
    id.  ``conn``: a psycopg 3 ``Connection`` or ``Cursor``, or a SQLAlchemy ``Session`` or
    ``Connection``.  The job becomes visible to workers when that transaction commits, and
    vanishes with it on rollback.  Options left as None take the SQL function's defaults.

    Flow-control keys (the queue's limits decide what they do): ``concurrency_key`` (per-key
    concurrency, rate limits and fair turns), ``order_key`` (the key's jobs run one at a time,
    oldest first), ``singleton_key`` (one job of the key waits, one runs), ``debounce_key``
    with ``debounce`` (seconds or a timedelta: the job starts once no enqueue of the key came
    for that long) and ``debounce_max_wait`` (but no later than that after the first).  For a
    singleton or debounce key whose job has not started yet, that job takes this payload and
    its id is returned."""
    sql, params = _enqueue_sql(
        queue,
        payload,
        json_dumps,
        {
            "run_at": run_at,
            "delay": delay,
            "priority": priority,
            "idempotency_key": idempotency_key,
            "max_retries": max_retries,
            "job_type": job_type,
            "concurrency_key": concurrency_key,
            "order_key": order_key,
            "singleton_key": singleton_key,
            "debounce_key": debounce_key,
            "debounce": debounce,
            "debounce_max_wait": debounce_max_wait,
        },
    )
    return int(_run(conn, sql, params)[0])


def enqueue_many(
    conn: Transaction,
    queue: str,
    payloads: Iterable[Payload],
    *,
    priority: int | None = None,
    job_type: str | None = None,
    concurrency_key: str | None = None,
    order_key: str | None = None,
    json_dumps: Callable[[Any], str] = json.dumps,
) -> list[int]:
    """Enqueues many jobs in one round trip (``job.enqueue_many``) in ``conn``'s current
    transaction; returns their ids in payload order.  ``concurrency_key`` and ``order_key``
    apply to every job (an order key runs them in payload order)."""
    sql, params = _enqueue_many_sql(
        queue,
        payloads,
        json_dumps,
        {
            "priority": priority,
            "job_type": job_type,
            "concurrency_key": concurrency_key,
            "order_key": order_key,
        },
    )
    return [int(i) for i in _run(conn, sql, params)]


async def aenqueue(
    conn: AsyncTransaction,
    queue: str,
    payload: Payload | None = None,
    *,
    run_at: dt.datetime | None = None,
    delay: Seconds | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    max_retries: int | None = None,
    job_type: str | None = None,
    concurrency_key: str | None = None,
    order_key: str | None = None,
    singleton_key: str | None = None,
    debounce_key: str | None = None,
    debounce: Seconds | None = None,
    debounce_max_wait: Seconds | None = None,
    json_dumps: Callable[[Any], str] = json.dumps,
) -> int:
    """:func:`enqueue` for a psycopg ``AsyncConnection``/``AsyncCursor`` or a SQLAlchemy
    ``AsyncSession``/``AsyncConnection``."""
    sql, params = _enqueue_sql(
        queue,
        payload,
        json_dumps,
        {
            "run_at": run_at,
            "delay": delay,
            "priority": priority,
            "idempotency_key": idempotency_key,
            "max_retries": max_retries,
            "job_type": job_type,
            "concurrency_key": concurrency_key,
            "order_key": order_key,
            "singleton_key": singleton_key,
            "debounce_key": debounce_key,
            "debounce": debounce,
            "debounce_max_wait": debounce_max_wait,
        },
    )
    return int((await _arun(conn, sql, params))[0])


async def aenqueue_many(
    conn: AsyncTransaction,
    queue: str,
    payloads: Iterable[Payload],
    *,
    priority: int | None = None,
    job_type: str | None = None,
    concurrency_key: str | None = None,
    order_key: str | None = None,
    json_dumps: Callable[[Any], str] = json.dumps,
) -> list[int]:
    """:func:`enqueue_many` for async connections and sessions."""
    sql, params = _enqueue_many_sql(
        queue,
        payloads,
        json_dumps,
        {
            "priority": priority,
            "job_type": job_type,
            "concurrency_key": concurrency_key,
            "order_key": order_key,
        },
    )
    return [int(i) for i in await _arun(conn, sql, params)]


def rate_limit_pause(
    conn: Transaction,
    queue: str,
    key: str | None = None,
    until: dt.datetime | None = None,
) -> None:
    """Holds back ``queue``, or only its jobs of concurrency key ``key``, until ``until`` (an
    aware ``datetime``): claims hand out none of them before then; running jobs go on
    (``job.rate_limit_pause``).  ``until=None`` (or a past time) lifts the hold; a later call
    replaces it.  What a handler does when the service it calls answers 429 (then raise, with
    ``retry_after``, to retry the job).  Runs in ``conn``'s current transaction, like
    :func:`enqueue`: it takes effect when that commits."""
    sql, params = _rate_limit_pause_sql(queue, key, until)
    _run(conn, sql, params, "rate_limit_pause")


async def arate_limit_pause(
    conn: AsyncTransaction,
    queue: str,
    key: str | None = None,
    until: dt.datetime | None = None,
) -> None:
    """:func:`rate_limit_pause` for async connections and sessions."""
    sql, params = _rate_limit_pause_sql(queue, key, until)
    await _arun(conn, sql, params, "arate_limit_pause")
