"""Benchmark of the Python client (bench/client-python.sh runs it).

1. Throughput, no-op handler: the library (8 worker processes x concurrency 4: Worker on
   threads, then AsyncWorker on asyncio) beside a raw SQL loop in Python doing the same work
   its simplest correct way (8 processes, each: dequeue a batch of 4, complete each job with
   its token, again; when a dequeue comes back empty, stop), in the same run, on the same
   database.  jobs/s = jobs / (last finish - first claim), from job.jobs.
   A short unmeasured raw run warms the database up first.
2. Pick-up latency while idle: one worker LISTENing; a job is enqueued (and committed) only
   once the previous one started; latency = handler start - commit, p50/p99.

    python bench.py URL [--jobs 50000] [--rounds 2] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
from typing import Any

import psycopg

from pg_jobqueue import AsyncWorker, Job, Worker, enqueue

QUEUE = "bench_python"
WORKERS = 8
CONCURRENCY = 4


def fill(url: str, jobs: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM job.finished_jobs WHERE queue = %s", (QUEUE,))
        conn.execute("DELETE FROM job.live_jobs WHERE queue = %s", (QUEUE,))
        for start in range(1, jobs + 1, 50_000):
            conn.execute(
                "SELECT count(*) FROM job.enqueue_many(%s, (SELECT array_agg("
                "jsonb_build_object('n', i)) FROM generate_series(%s::int, %s::int) i))",
                (QUEUE, start, min(jobs, start + 49_999)),
            )
        conn.execute("VACUUM (ANALYZE) job.live_jobs")
        conn.execute("VACUUM (ANALYZE) job.finished_jobs")
        conn.execute("CHECKPOINT")


def measure(url: str, jobs: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " extract(epoch FROM max(finished_at) - min(claimed_at))::float8"
            " FROM job.jobs WHERE queue = %s",
            (QUEUE,),
        ).fetchone()
    assert row is not None
    completed, seconds = row
    if completed != jobs:
        raise SystemExit(f"bench: {completed} of {jobs} jobs completed")
    return float(jobs / seconds)


def remaining(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM job.live_jobs WHERE queue = %s", (QUEUE,)
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- the raw loop -------------------------------------------------------------------------


def raw_process(url: str, index: int, go: Any) -> None:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        go.wait()
        while True:
            rows = conn.execute(
                "SELECT id, lease_token FROM job.dequeue(%s, %s, %s)",
                (QUEUE, f"raw-{index}", CONCURRENCY),
            ).fetchall()
            if not rows:
                return
            for job_id, token in rows:
                conn.execute("SELECT job.complete(%s, NULL, %s)", (job_id, token))


# -- the library --------------------------------------------------------------------------


def noop(job: Job) -> None:
    return None


async def anoop(job: Job) -> None:
    return None


def library_process(url: str, kind: str, go: Any, stop: Any) -> None:
    go.wait()
    if kind == "threads":
        worker = Worker(QUEUE, noop, conninfo=url, concurrency=CONCURRENCY)
        worker.start()
        stop.wait()
        worker.close()
    else:

        async def run() -> None:
            aworker = AsyncWorker(QUEUE, anoop, conninfo=url, concurrency=CONCURRENCY)
            await aworker.start()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await aworker.close()

        asyncio.run(run())


def throughput(url: str, kind: str, jobs: int) -> float:
    fill(url, jobs)
    go, stop = mp.Event(), mp.Event()
    if kind == "raw":
        procs = [mp.Process(target=raw_process, args=(url, i, go)) for i in range(WORKERS)]
    else:
        procs = [
            mp.Process(target=library_process, args=(url, kind, go, stop)) for _ in range(WORKERS)
        ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)
    go.set()
    if kind != "raw":
        deadline = time.monotonic() + 900
        while remaining(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
    for proc in procs:
        proc.join(900)
        if proc.exitcode != 0:
            raise SystemExit(f"bench: a {kind} process exited with {proc.exitcode}")
    return measure(url, jobs)


# -- pick-up latency ----------------------------------------------------------------------


def latency_worker(url: str, kind: str, started: Any, ready: Any, stop: Any) -> None:
    def work(job: Job) -> None:
        started.put((job.payload["n"], time.time()))

    async def awork(job: Job) -> None:
        started.put((job.payload["n"], time.time()))

    if kind == "threads":
        with Worker(QUEUE, work, conninfo=url, concurrency=CONCURRENCY, poll_interval=30):
            ready.set()
            stop.wait()
    else:

        async def run() -> None:
            async with AsyncWorker(
                QUEUE, awork, conninfo=url, concurrency=CONCURRENCY, poll_interval=30
            ):
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)

        asyncio.run(run())


def latency(url: str, kind: str, samples: int) -> tuple[float, float]:
    fill(url, 0)
    started: Any = mp.Queue()
    ready, stop = mp.Event(), mp.Event()
    proc = mp.Process(target=latency_worker, args=(url, kind, started, ready, stop))
    proc.start()
    ready.wait(60)
    delays = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for n in range(samples):
            time.sleep(0.02 + (n % 7) * 0.005)  # idle: the worker is waiting on LISTEN
            enqueue(conn, QUEUE, {"n": n})
            committed = time.time()
            got, at = started.get(timeout=30)
            assert got == n
            delays.append((at - committed) * 1000)
    stop.set()
    proc.join(60)
    delays.sort()
    return statistics.median(delays), delays[min(len(delays) - 1, int(len(delays) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute("SELECT job.create_queue(%s)", (QUEUE,))
        settings = conn.execute(
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings"
            " WHERE name IN ('synchronous_commit', 'fsync')"
        ).fetchone()
    rates: dict[str, list[float]] = {"raw": [], "threads": [], "asyncio": []}
    # Unmeasured: the first run on a fresh database is slower whichever side goes first.
    throughput(args.url, "raw", max(1000, args.jobs // 10))
    for round_ in range(args.rounds):
        order = ["raw", "threads", "asyncio"]
        if round_ % 2:
            order.reverse()
        for kind in order:
            rate = throughput(args.url, kind, args.jobs)
            rates[kind].append(rate)
            print(f"  round {round_ + 1} {kind:8}: {rate:8.0f} jobs/s", flush=True)
    lat = {kind: latency(args.url, kind, args.samples) for kind in ("threads", "asyncio")}
    raw = statistics.mean(rates["raw"])
    print()
    print(
        f"Python client, no-op handler, {args.jobs:,} jobs, {WORKERS} processes x concurrency"
        f" {CONCURRENCY}, mean of {args.rounds} round(s) ({settings[0] if settings else ''}):"
    )
    print()
    print("| worker | jobs/s | vs raw loop | pick-up p50 | pick-up p99 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| raw SQL loop (dequeue 4, complete each) | {raw:,.0f} | 1.00x | | |")
    for kind, label in (("threads", "Worker (threads)"), ("asyncio", "AsyncWorker (asyncio)")):
        mean = statistics.mean(rates[kind])
        p50, p99 = lat[kind]
        print(
            f"| {label} | {mean:,.0f} | {mean / raw:.2f}x (aim >= 0.8x) |"
            f" {p50:.1f} ms | {p99:.1f} ms |"
        )


if __name__ == "__main__":
    main()
