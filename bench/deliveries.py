#!/usr/bin/env python3
"""HTTP deliveries of pg_jobqueue: throughput of the sender and commit-to-arrival latency.

Run by bench/deliveries.sh (which says what is measured and how); standard library only: the
PostgreSQL connection is bench/pickup.py's (wire protocol, trust authentication), the
receiver bench/webhook_sink.py, started here as a child process and stopped at the end.

    python3 bench/deliveries.py --port 55434 --dbname bench_deliveries [--sink-port 55438]

Prints a Markdown section on stdout, progress on stderr; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pickup import Conn, percentile

HERE = os.path.dirname(os.path.abspath(__file__))
AIM_FAST, AIM_SLOW, AIM_P99_MS = 3000, 1000, 20.0


def log(msg: str) -> None:
    print(f"deliveries: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"FAILED: {msg}")
    sys.exit(1)


def group(n: float) -> str:
    return f"{n:,.0f}"


class Sink:
    """bench/webhook_sink.py in a child process."""

    def __init__(self, port: int, secret: str, delay: float) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "webhook_sink.py"),
                "serve",
                "--port",
                str(port),
                "--delay",
                str(delay),
            ],
            env={**os.environ, "WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening" not in line:
            self.proc.wait(5)
            die(f"the receiver did not start on port {port} (exit {self.proc.returncode})")

    def call(self, path: str) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method="POST" if path == "/_reset" else "GET"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


# --- CPU accounting (clock ticks) ------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def proc_ticks(path: str, children: bool = False) -> int:
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    t = int(fields[11]) + int(fields[12])
    return t + (int(fields[13]) + int(fields[14]) if children else 0)


def sender_threads(pid: int) -> dict[str, int]:
    """CPU ticks of the sender's main thread (all its SQL runs there) and its HTTP threads."""
    out = {"main": 0, "http": 0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        ticks = proc_ticks(f"/proc/{pid}/task/{tid}/stat")
        out["main" if int(tid) == pid else "http"] += ticks
    return out


def schedstat(pid: int) -> tuple[int, int]:
    """The main thread's nanoseconds on a CPU and waiting on a run queue (for a CPU)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return 0, 0


class StateSampler(threading.Thread):
    """Samples the sender main thread's state every `every` seconds: R (on a CPU or waiting
    for one), S (asleep: waiting for the latch, a finished request or a lock), D (waiting
    for the disk: the WAL flush of a commit)."""

    def __init__(self, pid: int, every: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/task/{pid}/stat"
        self.every = every
        self.counts: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                with open(self.path) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return
            self.counts[state] = self.counts.get(state, 0) + 1

    def shares(self) -> dict[str, float]:
        total = sum(self.counts.values()) or 1
        return {k: v / total for k, v in sorted(self.counts.items())}


def cluster_ticks(postmaster: int) -> int:
    total = proc_ticks(f"/proc/{postmaster}/stat", children=True)
    try:
        kids = subprocess.run(
            ["pgrep", "-P", str(postmaster)], check=False, capture_output=True, text=True
        ).stdout.split()
    except OSError:
        kids = []
    return total + sum(proc_ticks(f"/proc/{k}/stat") for k in kids)


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


# --- the runs ----------------------------------------------------------------------------------


def throughput(
    args, db: Conn, sink: Sink, name: str, n: int, postmaster: int, sender_pid: int
) -> dict:
    """Enqueues n deliveries to endpoint `name` while it is paused, resumes it, and times how
    long until every one is completed."""
    db.query(f"SELECT job.pause_endpoint('{name}')")
    for lo in range(1, n + 1, args.batch):
        hi = min(lo + args.batch - 1, n)
        db.query(
            f"SELECT count(job.deliver('{name}', jsonb_build_object('n', g, 'event', 'order.paid',"
            f" 'data', jsonb_build_object('order_id', g, 'amount_cents', 4200, 'currency', 'EUR'))))"
            f" FROM generate_series({lo}, {hi}) g"
        )
    db.query("VACUUM (ANALYZE) job.live_jobs, job.finished_jobs")
    db.query("CHECKPOINT")
    sink.call("/_reset")
    cpu0 = (sender_threads(sender_pid), cluster_ticks(postmaster), machine_busy_ticks())
    sched0 = schedstat(sender_pid)
    sampler = StateSampler(sender_pid)
    sampler.start()
    db.query(f"SELECT job.resume_endpoint('{name}')")  # durable commit; then the sender starts
    t0 = time.time()
    deadline = t0 + args.timeout
    while True:  # first the receiver's count (cheap to ask), then the database's
        st = sink.call("/_stats")
        if st["distinct_ids"] >= n:
            break
        if time.time() > deadline:
            die(f"{name}: only {st['distinct_ids']} of {n} deliveries arrived in {args.timeout} s")
        time.sleep(0.02)
    while True:
        left = int(
            db.query(f"SELECT count(*) FROM job.live_jobs WHERE queue = '{name}'")[0][0] or 0
        )
        if left == 0:
            break
        if time.time() > deadline:
            die(f"{name}: {left} deliveries still unfinished after {args.timeout} s")
        time.sleep(0.01)
    t1 = time.time()
    cpu1 = (sender_threads(sender_pid), cluster_ticks(postmaster), machine_busy_ticks())
    sched1 = schedstat(sender_pid)
    sampler.stop.set()
    sampler.join()
    st = sink.call("/_stats")
    seconds = t1 - t0
    states = dict(
        db.query(f"SELECT state, count(*) FROM job.jobs WHERE queue = '{name}' GROUP BY state")
    )
    retried = int(
        db.query(f"SELECT count(*) FROM job.jobs WHERE queue = '{name}' AND attempt > 1")[0][0] or 0
    )
    if states != {"completed": str(n)}:
        die(f"{name}: expected {n} completed deliveries, found {states}")
    if st["bad_signatures"]:
        die(f"{name}: {st['bad_signatures']} requests with a bad signature")
    if st["distinct_ids"] != n:
        die(f"{name}: the receiver saw {st['distinct_ids']} webhook-ids, not {n}")
    main = (cpu1[0]["main"] - cpu0[0]["main"]) / HZ
    http = (cpu1[0]["http"] - cpu0[0]["http"]) / HZ
    cluster = (cpu1[1] - cpu0[1]) / HZ
    busy = (cpu1[2] - cpu0[2]) / HZ
    r = {
        "name": name,
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "arrival_rate": n / max(st["last"] - t0, 1e-9),
        "first_ms": (st["first"] - t0) * 1000,
        "rate_from_first": n / max(t1 - st["first"], 1e-9),
        "peak_in_flight": st["peak_in_flight"],
        "peak_connections": st["peak_connections"],
        "duplicates": st["requests"] - st["distinct_ids"],
        "retried": retried,
        "main_thread": {
            "on a CPU": (sched1[0] - sched0[0]) / 1e9 / seconds,
            "waiting for a CPU": (sched1[1] - sched0[1]) / 1e9 / seconds,
            "states": sampler.shares(),
        },
        "cpu": {
            "sender SQL (main thread)": main / seconds,
            "sender HTTP threads": http / seconds,
            "rest of the cluster": (cluster - main - http) / seconds,
            "receiver": st["cpu_seconds"] / seconds,
            "everything else": (busy - cluster - st["cpu_seconds"]) / seconds,
        },
    }
    log(
        f"{name}: {n} in {seconds:.2f} s = {r['rate']:.0f}/s (arrivals {r['arrival_rate']:.0f}/s;"
        f" first request {r['first_ms']:.0f} ms after the resume, {r['rate_from_first']:.0f}/s from it),"
        f" peak in flight {r['peak_in_flight']} ({r['peak_connections']} connections), duplicates {r['duplicates']}, retried {retried}; CPU (cores) "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items())
        + "; sender main thread: "
        + ", ".join(f"{k} {v:.0%}" for k, v in r["main_thread"].items() if k != "states")
        + ", sampled states "
        + " ".join(f"{k} {v:.0%}" for k, v in r["main_thread"]["states"].items())
    )
    return r


def latency(args, db: Conn, sink: Sink) -> dict[str, list[float]]:
    """Commits one delivery at a time into the idle endpoint `lat`; the receiver stamps each
    arrival with the same clock."""
    commits: dict[str, tuple[float, float]] = {}

    def commit_one(i: int) -> None:
        time.sleep(random.uniform(args.gap_min, args.gap_max))
        rows = db.query(
            f"BEGIN; SELECT job.deliver('lat', '{{\"n\": {i}}}');"
            " SELECT extract(epoch FROM clock_timestamp()); COMMIT;"
        )
        commits[f"msg_{rows[0][0]}"] = (time.time(), float(rows[1][0] or 0))

    def wait_arrivals() -> dict[str, float]:
        deadline = time.time() + 10
        while True:
            arrivals = sink.call("/_stats")["arrivals"]
            if all(k in arrivals for k in commits) or time.time() > deadline:
                return arrivals
            time.sleep(0.05)

    # Unmeasured: the sender's first requests (it builds its HTTP client, with the system's
    # root certificates, on its first claim, and opens the connection).
    sink.call("/_reset")
    for i in range(args.warmup):
        commit_one(i)
    arrivals = wait_arrivals()
    warm = [(arrivals[k] - c) * 1000 for k, (c, _) in commits.items() if k in arrivals]
    log(f"latency: warm-up deliveries took {', '.join(f'{x:.1f}' for x in warm)} ms")
    args.warm = warm
    commits.clear()
    sink.call("/_reset")
    for i in range(args.warmup, args.warmup + args.samples):
        commit_one(i)
    arrivals = wait_arrivals()
    missing = [k for k in commits if k not in arrivals]
    if missing:
        die(f"latency: {len(missing)} deliveries never arrived (e.g. {missing[:3]})")
    left = int(db.query("SELECT count(*) FROM job.live_jobs WHERE queue = 'lat'")[0][0] or 0)
    deadline = time.time() + 10
    while left and time.time() < deadline:
        time.sleep(0.05)
        left = int(db.query("SELECT count(*) FROM job.live_jobs WHERE queue = 'lat'")[0][0] or 0)
    if left:
        die(f"latency: {left} deliveries not completed")
    if args.samples_log:
        with open(args.samples_log, "w") as f:
            f.write("webhook_id committed_at before_commit_at arrived_at ms_after_commit\n")
            f.writelines(
                f"{k} {c:.6f} {b:.6f} {arrivals[k]:.6f} {(arrivals[k] - c) * 1000:.3f}\n"
                for k, (c, b) in commits.items()
            )
    return {
        "after": [(arrivals[k] - c) * 1000 for k, (c, _) in commits.items()],
        "before": [(arrivals[k] - b) * 1000 for k, (_, b) in commits.items()],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=55434)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="bench_deliveries")
    ap.add_argument("--sink-port", type=int, default=55438)
    ap.add_argument("--fast", type=int, default=30000, help="deliveries per fast run")
    ap.add_argument("--slow", type=int, default=10000, help="deliveries for the 100-ms endpoint")
    ap.add_argument(
        "--delay", type=float, default=0.1, help="the slow endpoint's answer time, seconds"
    )
    ap.add_argument(
        "--fast-concurrency", default="16,256", help="comma-separated: one fast run each"
    )
    ap.add_argument("--slow-concurrency", type=int, default=256)
    ap.add_argument("--batch", type=int, default=10000, help="deliveries per enqueue transaction")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap-min", type=float, default=0.010)
    ap.add_argument("--gap-max", type=float, default=0.030)
    ap.add_argument("--samples-log", help="file for each latency sample (commit, arrival)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a throughput run may take")
    args = ap.parse_args()

    db = Conn(args.host, args.port, args.user, args.dbname, "bench-deliveries")
    if db.query("SHOW synchronous_commit")[0][0] != "on":
        die("synchronous_commit is not on")
    max_in_flight = db.query("SHOW pg_jobqueue.http_max_in_flight")[0][0]
    postmaster = int(db.query("SELECT pg_backend_pid()")[0][0])
    with open(f"/proc/{postmaster}/stat") as f:
        postmaster = int(f.read().rsplit(")", 1)[1].split()[1])  # the backend's parent

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    sink = Sink(args.sink_port, secret, args.delay)
    try:
        base = f"http://127.0.0.1:{args.sink_port}"
        fast_runs = [int(c) for c in args.fast_concurrency.split(",") if c]
        endpoints = [(f"fast{c}", "/fast", c) for c in fast_runs]
        endpoints += [("slow", "/slow", args.slow_concurrency), ("lat", "/lat", 16)]
        for name, path, conc in endpoints:
            db.query(f"SELECT job.create_queue('{name}')")
            db.query(
                f"SELECT job.create_endpoint('{name}', '{base}{path}', secret => '{secret}', concurrency => {conc})"
            )
            db.query(f"SELECT job.pause_endpoint('{name}')")
        db.query("SELECT job.resume_endpoint('lat')")
        sender_pid = 0
        for _ in range(100):
            rows = db.query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type LIKE '%sender%'"
            )
            if rows:
                sender_pid = int(rows[0][0])
                break
            time.sleep(0.1)
        if not sender_pid:
            die("no sender process for the database after 10 s")
        log(
            f"sender pid {sender_pid}, receiver on port {args.sink_port}, http_max_in_flight {max_in_flight}"
        )

        lat = latency(args, db, sink)
        runs = [
            throughput(args, db, sink, name, args.fast, postmaster, sender_pid)
            for name, _, _ in endpoints[:-2]
        ]
        runs.append(throughput(args, db, sink, "slow", args.slow, postmaster, sender_pid))
    finally:
        sink.stop()

    load = os.getloadavg()
    out = ["## HTTP deliveries (job.deliver → the sender → a local receiver)", ""]
    out.append(
        "| run | deliveries | endpoint concurrency | deliveries/s | arrivals/s at the receiver"
        " | peak in flight at the receiver (connections) | first request after the resume, ms"
        " | deliveries/s from the first request | aim |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r, (_, _, conc) in zip(runs, endpoints[:-1]):
        if r["name"] == "slow":
            label, aim = f"receiver answers after {args.delay * 1000:.0f} ms", AIM_SLOW
        else:
            label, aim = "receiver answers at once", AIM_FAST
        verdict = "met" if r["rate"] >= aim else "missed"
        out.append(
            f"| {label} | {group(r['n'])} | {conc} | {group(r['rate'])} | {group(r['arrival_rate'])}"
            f" | {r['peak_in_flight']} ({r['peak_connections']}) | {r['first_ms']:.0f}"
            f" | {group(r['rate_from_first'])} | ≥ {group(aim)}/s ({verdict}) |"
        )
    out.append("")
    out.append(
        "Deliveries/s: from the moment `job.resume_endpoint` committed (the deliveries enqueued while the"
        f" endpoint was paused, in transactions of {group(args.batch)}; durable commits) until none was left"
        " unfinished; arrivals/s: until the last request reached the receiver. Every delivery was completed,"
        " once, with a valid signature (checked)."
    )
    out.append("")
    out.append("CPU during each run, in cores (2 in all):")
    out.append("")
    keys = list(runs[0]["cpu"])
    out.append("| run | " + " | ".join(keys) + " |")
    out.append("|---|" + "---:|" * len(keys))
    for r, (_, _, conc) in zip(runs, endpoints[:-1]):
        label = f"{r['name']} (concurrency {conc})"
        out.append(f"| {label} | " + " | ".join(f"{r['cpu'][k]:.2f}" for k in keys) + " |")
    out.append("")
    a, b = lat["after"], lat["before"]
    verdict = "met" if percentile(a, 0.99) <= AIM_P99_MS else "missed"
    out.append(
        "| commit → the request arrives at the receiver (sender idle) | p50 ms | p99 ms | max ms | aim |"
    )
    out.append("|---|---:|---:|---:|---|")
    out.append(
        f"| from COMMIT returning to the client, {len(a)} deliveries | {percentile(a, 0.5):.2f} | {percentile(a, 0.99):.2f}"
        f" | {max(a):.2f} | p99 ≤ {AIM_P99_MS:.0f} ({verdict}) |"
    )
    slow_ones = sorted(x for x in a if x > AIM_P99_MS)
    out.append(
        f"| from `clock_timestamp()` before COMMIT (adds the commit) | {percentile(b, 0.5):.2f} | {percentile(b, 0.99):.2f}"
        f" | {max(b):.2f} | |"
    )
    out.append("")
    out.append(
        f"The {args.warmup} unmeasured deliveries before them (the sender's first requests, just"
        f" after it started) took {', '.join(f'{x:.0f}' for x in args.warm)} ms."
    )
    out.append("")
    if slow_ones:
        out.append(
            f"{len(slow_ones)} of {len(a)} deliveries took longer than {AIM_P99_MS:.0f} ms: "
            + ", ".join(f"{x:.0f}" for x in slow_ones)
            + " ms."
        )
        out.append("")
    out.append(
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end"
        f" {load[0]:.2f}; pg_jobqueue.http_max_in_flight = {max_in_flight}; receiver: bench/webhook_sink.py"
        f" (one asyncio process); one delivery committed every {args.gap_min * 1000:.0f}–{args.gap_max * 1000:.0f} ms"
        f" (random) for the latency, after {args.warmup} unmeasured"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
