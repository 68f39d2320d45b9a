"""The thread worker: sync handlers on a pool of threads, one connection for the queue's calls
and one for LISTEN."""

from __future__ import annotations

import datetime as dt
import inspect
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Generic

import psycopg
from typing_extensions import Self

from . import _core as core
from ._core import DONE, QUEUED, RUNNING, Entry, Job, Outcome, PayloadT, Seconds, logger, now
from .errors import Failure, describe_failure

__all__ = ["Worker"]

ConnectionFactory = Callable[[], "psycopg.Connection[Any]"]

_UNSET: Any = object()


def _open(conninfo: str | None, factory: ConnectionFactory | None) -> psycopg.Connection[Any]:
    if factory is not None:
        conn = factory()
        if not conn.autocommit:
            conn.autocommit = True
        return conn
    assert conninfo is not None
    # No server-side prepared statements: they break behind PgBouncer before 1.21.
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


class Worker(Generic[PayloadT]):
    """Runs ``handler(job)`` for the jobs of ``queue``, up to ``concurrency`` at once on threads.

    ``worker.start()`` returns at once; ``worker.close(grace_period=...)`` stops it;
    ``worker.run()`` does both around a wait for SIGTERM or SIGINT.  See the README for every
    option.
    """

    def __init__(
        self,
        queue: str,
        handler: Callable[[Job[PayloadT]], Any],
        *,
        conninfo: str | None = None,
        connect: ConnectionFactory | None = None,
        listen_conninfo: str | None = None,
        listen_connect: ConnectionFactory | None = None,
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
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - an object's async __call__
        ):
            raise TypeError("Worker runs sync handlers; use AsyncWorker for async def handlers")
        if not callable(handler):
            raise TypeError("handler must be callable")
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

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._listen_ready = threading.Event()
        self._listener_stop = threading.Event()
        self._listen_error: BaseException | None = None
        self._entries: dict[int, Entry] = {}
        self._done: list[Entry] = []
        self._todo: list[Entry | None] = []
        self._todo_ready = threading.Condition(self._lock)
        self._stopping = False
        self._grace_deadline: float | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._queue_id = ""
        self._threads: list[threading.Thread] = []
        self._main: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._started = False
        self._closed = False
        self.stats = {"claimed": 0, "completed": 0, "failed": 0, "lost": 0, "released": 0}

    # ------------------------------------------------------------------------------------
    # Life cycle

    @property
    def name(self) -> str:
        """The worker name ``dequeue`` records (``job.workers``)."""
        return self.settings.worker

    def start(self) -> None:
        """Connects, checks that the queue exists, starts listening and working; returns at
        once.  Raises when the database cannot be reached or the queue does not exist."""
        if self._started:
            raise RuntimeError("worker already started")
        self._started = True
        self._conn = _open(self._conninfo, self._connect)
        try:
            row = self._conn.execute(core.SQL_QUEUE_ID, (self.settings.queue,)).fetchone()
            assert row is not None
            self._queue_id = str(row[0])
            if self.settings.listen:
                self._listener = threading.Thread(
                    target=self._listen_loop, name=f"pg_jobqueue-listen-{self.name}", daemon=True
                )
                self._listener.start()
                self._listen_ready.wait()
                if self._listen_error is not None:
                    raise self._listen_error
        except BaseException:
            self._listener_stop.set()
            self._conn.close()
            raise
        for i in range(self.settings.concurrency):
            thread = threading.Thread(
                target=self._slot, name=f"pg_jobqueue-handler-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._main = threading.Thread(
            target=self._main_loop, name=f"pg_jobqueue-worker-{self.name}", daemon=True
        )
        self._main.start()

    def stop(self, grace_period: Seconds | None = _UNSET) -> None:
        """Asks the worker to shut down and returns at once (safe from a signal handler or a
        handler): it stops claiming, hands back claimed jobs it has not started, and lets
        running handlers finish within the grace period.  ``close()`` waits for all that."""
        grace = (
            self.settings.grace_period
            if grace_period is _UNSET
            else core.seconds(grace_period, "grace_period", allow_zero=True)
        )
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._grace_deadline = None if grace is None else now() + grace
            elif grace_period is not _UNSET:
                deadline = None if grace is None else now() + grace
                if deadline is not None and (
                    self._grace_deadline is None or deadline < self._grace_deadline
                ):
                    self._grace_deadline = deadline
        self._stop_requested.set()
        self._wake.set()

    def close(self, grace_period: Seconds | None = _UNSET) -> None:
        """Stops the worker and waits until it has: no more claims; claimed jobs not started
        are handed back (``job.release``, no attempt spent); running handlers get
        ``grace_period`` seconds (default: the worker's, 30; None: as long as they take) to
        finish and be recorded; any still running then are failed (a transient failure saying
        so, retried with backoff) and left to finish unrecorded.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        self.stop(grace_period)
        if self._main is not None:
            self._main.join()
        self._listener_stop.set()
        with self._lock:
            self._todo.extend([None] * len(self._threads))
            self._todo_ready.notify_all()
        if self._listener is not None:
            self._listener.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=0.1)
        if self._conn is not None:
            self._conn.close()

    def run(
        self, *, install_signal_handlers: bool = True, grace_period: Seconds | None = _UNSET
    ) -> None:
        """Starts, works until ``stop()`` or (with ``install_signal_handlers``, from the main
        thread) SIGTERM or SIGINT, then closes with the grace period.  A second signal during
        the shutdown ends the grace period at once."""
        previous: dict[int, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            while not self._stop_requested.wait(0.25):
                if self._main is not None and not self._main.is_alive():
                    break
            self.close(grace_period)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stop_requested.is_set():
            logger.info("%s: shutting down", signal.Signals(signum).name)
            self.stop()
        else:
            logger.info("%s again: ending the grace period now", signal.Signals(signum).name)
            self.stop(0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------
    # Handler threads

    def _slot(self) -> None:
        while True:
            with self._lock:
                while not self._todo:
                    self._todo_ready.wait()
                entry = self._todo.pop(0)
                if entry is None:
                    return
                if entry.state != QUEUED or self._stopping:
                    continue  # handed back, or about to be
                if entry.job.lost:
                    entry.state = DONE
                    self._done.append(entry)
                    self._wake.set()
                    continue
                entry.state = RUNNING
            outcome = self._call(entry.job)
            with self._lock:
                entry.state = DONE
                entry.outcome = outcome
                self._done.append(entry)
            self._wake.set()

    def _call(self, job: Job[Any]) -> Outcome:
        try:
            result = self.handler(job)
            return Outcome(
                ok=True,
                result=result,
                result_json=core.encode_result(self.settings.json_dumps, result),
            )
        except BaseException as exc:  # a handler's SystemExit too: it ends this attempt only
            if exc.__traceback__ is not None:  # start the traceback at the handler
                exc = exc.with_traceback(exc.__traceback__.tb_next)
            return Outcome(ok=False, exc=exc, failure=describe_failure(exc))

    # ------------------------------------------------------------------------------------
    # LISTEN

    def _listen_loop(self) -> None:
        backoff = 0.0
        while not self._listener_stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = _open(self._listen_conninfo, self._listen_connect)
                conn.execute(f"LISTEN {core.CHANNEL}")
                self._listen_ready.set()
                self._wake.set()  # anything may have come in while not listening
                backoff = 0.0
                while not self._listener_stop.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        if notify.payload == self._queue_id:
                            self._wake.set()
            except Exception as exc:
                if not self._listen_ready.is_set():
                    self._listen_error = exc
                    self._listen_ready.set()
                    return
                if self._listener_stop.is_set():
                    return
                self._report_error(exc, "LISTEN connection (polling until it is back)")
                backoff = min(max(backoff * 2, 0.5), 30.0)
                self._listener_stop.wait(backoff)
            finally:
                if conn is not None:
                    conn.close()

    # ------------------------------------------------------------------------------------
    # The worker's own thread: every query but LISTEN

    def _main_loop(self) -> None:
        backoff = 0.0
        empty = 0
        while True:
            self._wake.clear()
            timeout: float | None = None
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _open(self._conninfo, self._connect)
                self._flush()
                if self._stopping:
                    self._release_unstarted()
                    if not self._entries:
                        break
                    if self._grace_deadline is not None and now() >= self._grace_deadline:
                        self._abandon()
                        break
                self._renew()
                if not self._stopping:
                    free = self.settings.concurrency - sum(
                        1 for e in self._entries.values() if e.state != DONE
                    )
                    if free > 0:
                        if self._claim(min(free, self.settings.batch)):
                            empty = 0
                            continue
                        # Came up empty (so a producer's commit will notify): sleep until the
                        # next job is due, a notification, or the poll interval.
                        empty += 1
                        timeout = self._idle_timeout(self._next_due(), empty)
                backoff = 0.0
            except Exception as exc:
                self._report_error(exc, "worker connection (retrying)")
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._conn.close()
                    self._conn = None
                backoff = min(max(backoff * 2, 0.25), 30.0)
                timeout = backoff
                if self._stopping and self._grace_deadline is not None:
                    timeout = min(timeout, max(0.0, self._grace_deadline - now()))
            self._wake.wait(self._wait_for(timeout))
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _wait_for(self, timeout: float | None) -> float | None:
        """How long to sleep: until ``timeout``, the next lease renewal, or the grace
        deadline, whichever comes first (None: until woken)."""
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
        # Due now, yet our dequeue found nothing (others hold the rows): look again soon.
        return min(0.005 * 2.0 ** min(empty, 10), poll)

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn.execute(sql, params).fetchall()

    def _next_due(self) -> float | None:
        rows = self._execute(core.SQL_NEXT_DUE, (self.settings.queue,))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    def _claim(self, n: int) -> int:
        rows = self._execute(
            core.SQL_DEQUEUE, (self.settings.queue, self.name, n, self.settings.lease_param)
        )
        if not rows:
            return 0
        entries = []
        for row in rows:
            job = Job.from_row(row, self.name)
            entry = core.new_entry(job, float(row[9]), self.settings)
            self._entries[job.id] = entry
            entries.append(entry)
        self.stats["claimed"] += len(entries)
        with self._lock:
            self._todo.extend(entries)
            self._todo_ready.notify(len(entries))
        return len(entries)

    def _renew(self) -> None:
        due = core.renewal_due(self._entries, now())
        for lease, (ids, tokens) in core.group_for_heartbeat(due).items():
            started = now()
            rows = self._execute(core.SQL_HEARTBEAT, (ids, tokens, dt.timedelta(seconds=lease)))
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
                    self._hook(
                        self._on_lost,
                        entry.job,
                        "heartbeat: the claim no longer holds the job (lease taken back"
                        " or job cancelled); its outcome will not be recorded",
                    )

    def _flush(self) -> None:
        """Records what handlers came to: completions in one round trip, failures one each."""
        with self._lock:
            done, self._done = self._done, []
        if not done:
            return
        for entry in done:
            if entry.outcome is None or entry.job.lost:
                # Lost (reported when it was found out) or never started: nothing to record.
                self._entries.pop(entry.job.id, None)
        try:
            completions = sorted(
                (e for e in done if e.job.id in self._entries and e.outcome and e.outcome.ok),
                key=lambda e: e.job.id,
            )
            if completions:
                self._complete(completions)
            for entry in done:
                if entry.job.id in self._entries and entry.outcome and not entry.outcome.ok:
                    self._fail(entry, entry.outcome)
        except BaseException:
            with self._lock:
                self._done[:0] = [e for e in done if e.job.id in self._entries]
            raise

    def _complete(self, entries: list[Entry]) -> None:
        ids = [e.job.id for e in entries]
        results = [e.outcome.result_json if e.outcome else None for e in entries]
        tokens = [e.job.lease_token for e in entries]
        try:
            rows = self._execute(core.SQL_COMPLETE, (ids, results, tokens))
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or self._conn is None or self._conn.broken:
                raise
            if len(entries) > 1:
                # One bad result (say, invalid JSON from a custom json_dumps) must not hold
                # up the others: record them one by one.
                for entry in entries:
                    self._complete([entry])
                return
            entry = entries[0]
            entry.outcome = Outcome(ok=False, exc=exc, failure=describe_failure(exc))
            self._fail(entry, entry.outcome)
            return
        answers = dict(rows)
        for entry in entries:
            self._entries.pop(entry.job.id, None)
            if answers.get(entry.job.id):
                self.stats["completed"] += 1
                self._hook(
                    self._on_completed, entry.job, entry.outcome.result if entry.outcome else None
                )
            else:
                self.stats["lost"] += 1
                self._hook(
                    self._on_lost,
                    entry.job,
                    "complete refused: the claim is no longer the job's current one",
                )

    def _fail(self, entry: Entry, outcome: Outcome) -> None:
        failure = outcome.failure
        assert failure is not None and outcome.exc is not None
        job = entry.job
        try:
            rows = self._execute(
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
            self._hook(self._on_failed, job, outcome.exc, state)
        else:
            self.stats["lost"] += 1
            self._hook(
                self._on_lost, job, "fail refused: the claim is no longer the job's current one"
            )

    def _release_unstarted(self) -> None:
        with self._lock:
            unstarted = [e for e in self._entries.values() if e.state == QUEUED]
            for entry in unstarted:
                entry.state = DONE  # no handler thread will start it now
        if not unstarted:
            return
        unstarted.sort(key=lambda e: e.job.id)
        try:
            rows = self._execute(
                core.SQL_RELEASE,
                ([e.job.id for e in unstarted], [e.job.lease_token for e in unstarted]),
            )
        except BaseException:
            with self._lock:
                for entry in unstarted:
                    entry.state = QUEUED
            raise
        released = {job_id for job_id, ok in rows if ok}
        for entry in unstarted:
            self._entries.pop(entry.job.id, None)
        self.stats["released"] += len(released)
        logger.info("released %d claimed job(s) not started", len(released))

    def _abandon(self) -> None:
        """The grace period is over: fail what still runs (transient: it is retried)."""
        self._flush()  # what finished meanwhile is recorded as usual
        grace = self.settings.grace_period
        message = core.SHUTDOWN_ERROR.format(worker=self.name, grace=grace)
        for entry in list(self._entries.values()):
            entry.job.lost = True  # whatever the handler returns later is not recorded
            if entry.state == RUNNING:
                exc = TimeoutError(message)
                failure = Failure(message, False, None, None)
                self._fail(entry, Outcome(ok=False, exc=exc, failure=failure))
        self._entries.clear()

    def _hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            logger.exception("pg_jobqueue: a hook raised %s", type(exc).__name__)

    def _report_error(self, exc: BaseException, context: str) -> None:
        try:
            self._on_error(exc, context)
        except Exception:
            logger.exception("pg_jobqueue: the on_error hook raised")
