"""A worker process for test_process.py: ``python worker_process.py sync|async URL QUEUE
SLEEP LEASE``.  Runs Worker.run() / AsyncWorker.run() (SIGTERM handling built in); prints one
JSON line per event (started, completed, lost, stats) and flushes it."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

from pg_jobqueue import AsyncWorker, Job, Worker

_lock = threading.Lock()


def emit(**event: Any) -> None:
    with _lock:  # handler threads and the worker's thread both report
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def main() -> None:
    kind, url, queue, sleep, lease = sys.argv[1:6]
    pause = float(sleep)
    hooks: dict[str, Any] = {
        "on_completed": lambda job, result: emit(event="completed", id=job.id),
        "on_lost": lambda job, reason: emit(event="lost", id=job.id, reason=reason),
        "on_failed": lambda job, exc, state: emit(event="failed", id=job.id, state=state),
    }
    options: dict[str, Any] = {
        "conninfo": url,
        "concurrency": 2,
        "lease": float(lease),
        "grace_period": 20,
        **hooks,
    }
    if kind == "sync":

        def work(job: Job) -> dict[str, str]:
            emit(event="started", id=job.id)
            time.sleep(pause)
            return {"by": "process"}

        worker = Worker(queue, work, **options)
        emit(event="ready", name=worker.name)
        worker.run()
        emit(event="stats", **worker.stats)
    else:

        async def awork(job: Job) -> dict[str, str]:
            emit(event="started", id=job.id)
            await asyncio.sleep(pause)
            return {"by": "process"}

        async def run() -> None:
            aworker = AsyncWorker(queue, awork, **options)
            emit(event="ready", name=aworker.name)
            await aworker.run()
            emit(event="stats", **aworker.stats)

        asyncio.run(run())


if __name__ == "__main__":
    main()
