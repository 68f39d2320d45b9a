"""Runs the thread worker and the asyncio worker behind one interface, so that each test is
written once for both: AsyncWorkers live on an event loop in a thread of their own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pg_jobqueue import AsyncWorker, Job, Worker

SyncHandler = Callable[[Job], Any]
AsyncHandler = Callable[[Job], Awaitable[Any]]


class Harness:
    kind = ""

    def __init__(self) -> None:
        self.workers: list[Any] = []

    def start(self, queue: str, handler: SyncHandler | AsyncHandler, **options: Any) -> Any:
        raise NotImplementedError

    def close(self, worker: Any, grace_period: float | None = 30.0) -> None:
        raise NotImplementedError

    def stop(self, worker: Any) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        for worker in self.workers:
            self.close(worker)


class SyncHarness(Harness):
    kind = "sync"

    def start(self, queue: str, handler: Any, **options: Any) -> Worker:
        worker = Worker(queue, handler, **options)
        worker.start()
        self.workers.append(worker)
        return worker

    def close(self, worker: Any, grace_period: float | None = 30.0) -> None:
        worker.close(grace_period=grace_period)

    def stop(self, worker: Any) -> None:
        worker.stop()


class AsyncHarness(Harness):
    kind = "async"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Awaitable[Any], timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def start(self, queue: str, handler: Any, **options: Any) -> AsyncWorker:
        async def make() -> AsyncWorker:
            worker = AsyncWorker(queue, handler, **options)
            await worker.start()
            return worker

        worker: AsyncWorker = self.call(make())
        self.workers.append(worker)
        return worker

    def close(self, worker: Any, grace_period: float | None = 30.0) -> None:
        self.call(worker.close(grace_period=grace_period))

    def stop(self, worker: Any) -> None:
        self.loop.call_soon_threadsafe(worker.stop)

    def shutdown(self) -> None:
        super().shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def handler(kind: str, sync: SyncHandler, asynchronous: AsyncHandler) -> Any:
    return sync if kind == "sync" else asynchronous
