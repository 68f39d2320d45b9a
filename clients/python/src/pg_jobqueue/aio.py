"""The asyncio worker: ``async def`` handlers as tasks, one connection for the queue's calls
and one for LISTEN."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Generic

import psycopg
from typing_extensions import Self

from . import _core as core
from ._core import DONE, QUEUED, RUNNING, Entry, Job, Outcome, PayloadT, Seconds, logger, now
from .errors import Failure, describe_failure

__all__ = ["AsyncWorker"]

AsyncConnectionFactory = Callable[[], Awaitable["psycopg.AsyncConnection[Any]"]]

_UNSET: Any = object()


async def _open(
    conninfo: str | None, factory: AsyncConnectionFactory | None
) -> psycopg.AsyncConnection[Any]:
    if factory is not None:
        conn = await factory()
        if not conn.autocommit:
            await conn.set_autocommit(True)
        return conn
    assert conninfo is not None
    # No server-side prepared statements: they break behind PgBouncer before 1.21.
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)


class AsyncWorker(Generic[PayloadT]):
    """Runs ``await handler(job)`` for the jobs of ``queue``, up to ``concurrency`` tasks at
    once, on the running event loop.  Same options as :class:`pg_jobqueue.Worker`, but
    ``connect`` and ``listen_connect`` are async factories; ``await worker.start()``,
    ``await worker.close(grace_period=...)``, ``await worker.run()``."""

    def __init__(
        self,
        queue: str,
        handler: Callable[[Job[PayloadT]], Awaitable[Any]],
        *,
        conninfo: str | None = None,
        connect: AsyncConnectionFactory | None = None,
        listen_conninfo: str | None = None,
        listen_connect: AsyncConnectionFactory | None = None,
        concurrency: int = 4,
        batch: int | None = None,
        lease: Seconds | None = None,
        heartbeat: Seconds | None = None,
        poll_interval: Seconds = 5.0,
        listen: bool = True,
        worker_name: str | None = None,
        grace_period: Seconds | None = 30.0,
        json_dumps: Callable[[Any], str] = core.default_dumps,
        on_completed: core.OnCompleted[PayloadT] | None = None,
        on_failed: core.OnFailed[PayloadT] | None = None,
        on_lost: core.OnLost[PayloadT] | None = None,
        on_error: core.OnError | None = None,
    ) -> None:
        if not (
            inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(getattr(handler, "__call__", None))  # noqa: B004
        ):
            raise TypeError(
                "AsyncWorker runs async def handlers; use Worker (threads) for sync handlers"
            )
        if (conninfo is None) == (connect is None):
            raise ValueError("give exactly one of conninfo and connect")
        if listen_conninfo is not None and listen_connect is not None:
            raise ValueError("give at most one of listen_conninfo and listen_connect")
        self.settings = core.Settings(
            queue,
            concurrency=concurrency,
            batch=batch,
            lease=lease,
            heartbeat=heartbeat,
            poll_interval=poll_interval,
            listen=listen,
            worker_name=worker_name,
            json_dumps=json_dumps,
            grace_period=grace_period,
        )
        self.handler = handler
        self._conninfo = conninfo
        self._connect = connect
        if listen_conninfo is None and listen_connect is None:
            listen_conninfo, listen_connect = conninfo, connect
        self._listen_conninfo = listen_conninfo
        self._listen_connect = listen_connect
        self._on_completed = on_completed or core.log_completed
        self._on_failed = on_failed or core.log_failed
        self._on_lost = on_lost or core.log_lost
        self._on_error = on_error or core.log_error

        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._listening = asyncio.Event()
        self._listen_error: BaseException | None = None
        self._entries: dict[int, Entry] = {}
        self._done: list[Entry] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._closing = False
        self._grace_deadline: float | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._queue_id = ""
        self._main: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.stats = {"claimed": 0, "completed": 0, "failed": 0, "lost": 0, "released": 0}

    # ------------------------------------------------------------------------------------
    # Life cycle

    @property
    def name(self) -> str:
        """The worker name ``dequeue`` records (``job.workers``)."""
        return self.settings.worker

    async def start(self) -> None:
        """Connects, checks that the queue exists, starts listening and working; returns once
        it does.  Raises when the database cannot be reached or the queue does not exist."""
        if self._started:
            raise RuntimeError("worker already started")
        self._started = True
        self._conn = await _open(self._conninfo, self._connect)
        try:
            cur = await self._conn.execute(core.SQL_QUEUE_ID, (self.settings.queue,))
            row = await cur.fetchone()
            assert row is not None
            self._queue_id = str(row[0])
            if self.settings.listen:
                self._listener = asyncio.create_task(self._listen_loop())
                await self._listening.wait()
                if self._listen_error is not None:
                    raise self._listen_error
        except BaseException:
            self._closing = True
            if self._listener is not None:
                self._listener.cancel()
            await self._conn.close()
            raise
        self._main = asyncio.create_task(self._main_loop())

    def stop(self, grace_period: Seconds | None = _UNSET) -> None:
        """Asks the worker to shut down and returns at once (call it on the worker's event
        loop: from a handler, a signal handler installed with ``loop.add_signal_handler``, or
        ``loop.call_soon_threadsafe``).  ``await close()`` waits for the shutdown."""
        grace = (
            self.settings.grace_period
            if grace_period is _UNSET
            else core.seconds(grace_period, "grace_period", allow_zero=True)
        )
        if not self._stopping:
            self._stopping = True
            self._grace_deadline = None if grace is None else now() + grace
        elif grace_period is not _UNSET and grace is not None:
            deadline = now() + grace
            if self._grace_deadline is None or deadline < self._grace_deadline:
                self._grace_deadline = deadline
        self._stop_requested.set()
        self._wake.set()

    async def close(self, grace_period: Seconds | None = _UNSET) -> None:
        """Stops the worker and waits until it has: as :meth:`pg_jobqueue.Worker.close`;
        handlers still running after the grace period are cancelled, then failed (a
        transient failure saying so).  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        self.stop(grace_period)
        try:
            if self._main is not None:
                await self._main
        finally:
            self._closing = True
            if self._listener is not None:
                self._listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._listener
            if self._conn is not None:
                await self._conn.close()

    async def run(
        self, *, install_signal_handlers: bool = True, grace_period: Seconds | None = _UNSET
    ) -> None:
        """Starts, works until ``stop()`` or (with ``install_signal_handlers``) SIGTERM or
        SIGINT, then closes with the grace period.  A second signal during the shutdown ends
        the grace period at once."""
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # not Unix, or not the main thread
                    pass
        try:
            await self.start()
            assert self._main is not None
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait({stop, self._main}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            await self.close(grace_period)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        if not self._stop_requested.is_set():
            logger.info("%s: shutting down", signal.Signals(signum).name)
            self.stop()
        else:
            logger.info("%s again: ending the grace period now", signal.Signals(signum).name)
            self.stop(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------
    # Handler tasks

    async def _run_job(self, entry: Entry) -> None:
        if entry.state != QUEUED or self._stopping:
            return  # handed back, or about to be
        if entry.job.lost:
            entry.state = DONE
            self._done.append(entry)
            self._wake.set()
            return
        entry.state = RUNNING
        try:
            result = await self.handler(entry.job)
            outcome = Outcome(
                ok=True,
                result=result,
                result_json=core.encode_result(self.settings.json_dumps, result),
            )
        except asyncio.CancelledError:
            raise  # the grace period is over: close() fails the job itself
        except Exception as exc:
            if exc.__traceback__ is not None:  # start the traceback at the handler
                exc = exc.with_traceback(exc.__traceback__.tb_next)
            outcome = Outcome(ok=False, exc=exc, failure=describe_failure(exc))
        entry.state = DONE
        entry.outcome = outcome
        self._done.append(entry)
        self._wake.set()

    # ------------------------------------------------------------------------------------
    # LISTEN

    async def _listen_loop(self) -> None:
        backoff = 0.0
        while not self._closing:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await _open(self._listen_conninfo, self._listen_connect)
                await conn.execute(f"LISTEN {core.CHANNEL}")
                self._listening.set()
                self._wake.set()  # anything may have come in while not listening
                backoff = 0.0
                while not self._closing:
                    async for notify in conn.notifies(timeout=1.0):
                        if notify.payload == self._queue_id:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._listening.is_set():
                    self._listen_error = exc
                    self._listening.set()
                    return
                if self._closing:
                    return
                self._report_error(exc, "LISTEN connection (polling until it is back)")
                backoff = min(max(backoff * 2, 0.5), 30.0)
                await asyncio.sleep(backoff)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    # ------------------------------------------------------------------------------------
    # The worker's own task: every query but LISTEN

    async def _main_loop(self) -> None:
        backoff = 0.0
        empty = 0
        while True:
            self._wake.clear()
            timeout: float | None = None
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await _open(self._conninfo, self._connect)
                await self._flush()
                if self._stopping:
                    await self._release_unstarted()
                    if not self._entries:
                        break
                    if self._grace_deadline is not None and now() >= self._grace_deadline:
                        await self._abandon()
                        break
                await self._renew()
                if not self._stopping:
                    free = self.settings.concurrency - sum(
                        1 for e in self._entries.values() if e.state != DONE
                    )
                    if free > 0:
                        if await self._claim(min(free, self.settings.batch)):
                            empty = 0
                            continue
                        empty += 1
                        timeout = self._idle_timeout(await self._next_due(), empty)
                backoff = 0.0
            except Exception as exc:
                self._report_error(exc, "worker connection (retrying)")
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    await self._conn.close()
                    self._conn = None
                backoff = min(max(backoff * 2, 0.25), 30.0)
                timeout = backoff
                if self._stopping and self._grace_deadline is not None:
                    timeout = min(timeout, max(0.0, self._grace_deadline - now()))
            wait = self._wait_for(timeout)
            if wait is None:
                await self._wake.wait()
            elif wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _wait_for(self, timeout: float | None) -> float | None:
        at = now()
        limits = [] if timeout is None else [timeout]
        renewal = core.next_renewal(self._entries)
        if renewal is not None:
            limits.append(max(0.0, renewal - at))
        if self._stopping and self._grace_deadline is not None:
            limits.append(max(0.0, self._grace_deadline - at))
        return min(limits) if limits else None

    def _idle_timeout(self, due_in: float | None, empty: int) -> float:
        poll = self.settings.poll_interval
        if due_in is None:
            return poll
        if due_in > 0:
            return min(due_in, poll)
        return min(0.005 * 2.0 ** min(empty, 10), poll)

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        cur = await self._conn.execute(sql, params)
        return await cur.fetchall()

    async def _next_due(self) -> float | None:
        rows = await self._execute(core.SQL_NEXT_DUE, (self.settings.queue,))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def _claim(self, n: int) -> int:
        rows = await self._execute(
            core.SQL_DEQUEUE, (self.settings.queue, self.name, n, self.settings.lease_param)
        )
        for row in rows:
            job = Job.from_row(row, self.name)
            entry = core.new_entry(job, float(row[9]), self.settings)
            self._entries[job.id] = entry
            task = asyncio.create_task(self._run_job(entry))
            entry.extra = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.stats["claimed"] += len(rows)
        return len(rows)

    async def _renew(self) -> None:
        due = core.renewal_due(self._entries, now())
        for lease, (ids, tokens) in core.group_for_heartbeat(due).items():
            started = now()
            rows = await self._execute(
                core.SQL_HEARTBEAT, (ids, tokens, dt.timedelta(seconds=lease))
            )
            for job_id, held, expires in rows:
                entry = self._entries.get(job_id)
                if entry is None:
                    continue
                if held:
                    entry.renew_at = started + self.settings.renew_every(entry.lease)
                    entry.job.lease_expires_at = expires
                elif not entry.job.lost:
                    entry.job.lost = True
                    self.stats["lost"] += 1
                    await self._hook(
                        self._on_lost,
                        entry.job,
                        "heartbeat: the claim no longer holds the job (lease taken back"
                        " or job cancelled); its outcome will not be recorded",
                    )

    async def _flush(self) -> None:
        done, self._done = self._done, []
        if not done:
            return
        for entry in done:
            if entry.outcome is None or entry.job.lost:
                self._entries.pop(entry.job.id, None)
        try:
            completions = sorted(
                (e for e in done if e.job.id in self._entries and e.outcome and e.outcome.ok),
                key=lambda e: e.job.id,
            )
            if completions:
                await self._complete(completions)
            for entry in done:
                if entry.job.id in self._entries and entry.outcome and not entry.outcome.ok:
                    await self._fail(entry, entry.outcome)
        except BaseException:
            self._done[:0] = [e for e in done if e.job.id in self._entries]
            raise

    async def _complete(self, entries: list[Entry]) -> None:
        ids = [e.job.id for e in entries]
        results = [e.outcome.result_json if e.outcome else None for e in entries]
        tokens = [e.job.lease_token for e in entries]
        try:
            rows = await self._execute(core.SQL_COMPLETE, (ids, results, tokens))
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or self._conn is None or self._conn.broken:
                raise
            if len(entries) > 1:
                for entry in entries:
                    await self._complete([entry])
                return
            entry = entries[0]
            entry.outcome = Outcome(ok=False, exc=exc, failure=describe_failure(exc))
            await self._fail(entry, entry.outcome)
            return
        answers = dict(rows)
        for entry in entries:
            self._entries.pop(entry.job.id, None)
            if answers.get(entry.job.id):
                self.stats["completed"] += 1
                await self._hook(
                    self._on_completed, entry.job, entry.outcome.result if entry.outcome else None
                )
            else:
                self.stats["lost"] += 1
                await self._hook(
                    self._on_lost,
                    entry.job,
                    "complete refused: the claim is no longer the job's current one",
                )

    async def _fail(self, entry: Entry, outcome: Outcome) -> None:
        failure = outcome.failure
        assert failure is not None and outcome.exc is not None
        job = entry.job
        try:
            rows = await self._execute(
                core.SQL_FAIL,
                (
                    job.id,
                    failure.error,
                    failure.permanent,
                    failure.http_status,
                    failure.retry_after,
                    job.lease_token,
                    job.id,
                    job.lease_token,
                ),
            )
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or self._conn is None or self._conn.broken:
                raise
            self._entries.pop(job.id, None)
            self._report_error(exc, f"recording the failure of job {job.id}")
            return
        self._entries.pop(job.id, None)
        held, state = rows[0] if rows else (False, None)
        if held:
            self.stats["failed"] += 1
            await self._hook(self._on_failed, job, outcome.exc, state)
        else:
            self.stats["lost"] += 1
            await self._hook(
                self._on_lost, job, "fail refused: the claim is no longer the job's current one"
            )

    async def _release_unstarted(self) -> None:
        unstarted = sorted(
            (e for e in self._entries.values() if e.state == QUEUED), key=lambda e: e.job.id
        )
        if not unstarted:
            return
        for entry in unstarted:
            entry.state = DONE  # its task will not start it now
        try:
            rows = await self._execute(
                core.SQL_RELEASE,
                ([e.job.id for e in unstarted], [e.job.lease_token for e in unstarted]),
            )
        except BaseException:
            for entry in unstarted:
                entry.state = QUEUED
            raise
        released = {job_id for job_id, ok in rows if ok}
        for entry in unstarted:
            self._entries.pop(entry.job.id, None)
        self.stats["released"] += len(released)
        logger.info("released %d claimed job(s) not started", len(released))

    async def _abandon(self) -> None:
        """The grace period is over: cancel what still runs, and fail it (transient)."""
        await self._flush()
        running = [e for e in self._entries.values() if e.state == RUNNING]
        for entry in running:
            entry.job.lost = True
            if isinstance(entry.extra, asyncio.Task):
                entry.extra.cancel()
        tasks = [e.extra for e in running if isinstance(e.extra, asyncio.Task)]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        message = core.SHUTDOWN_ERROR.format(worker=self.name, grace=self.settings.grace_period)
        for entry in running:
            exc = TimeoutError(message)
            await self._fail(
                entry, Outcome(ok=False, exc=exc, failure=Failure(message, False, None, None))
            )
        self._entries.clear()

    async def _hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.exception("pg_jobqueue: a hook raised %s", type(exc).__name__)

    def _report_error(self, exc: BaseException, context: str) -> None:
        try:
            self._on_error(exc, context)
        except Exception:
            logger.exception("pg_jobqueue: the on_error hook raised")
