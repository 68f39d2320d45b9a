#!/usr/bin/env python3
"""Pick-up latency of pg_jobqueue: how long a job committed into an idle queue waits.

Run by bench/pickup.sh (which says what is measured and how); standard library only, so it
needs no virtualenv: it speaks the PostgreSQL wire protocol itself (simple queries, trust
authentication, as scripts/cluster.sh's clusters have it).

    python3 bench/pickup.py --port 55434 --dbname bench_pickup [--samples 200]

Prints a Markdown section on stdout, progress on stderr; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import select
import socket
import struct
import sys
import threading
import time

CHANNEL = "pg_jobqueue"  # the extension's wake-up channel; the payload is the queue's id
DONE_CHANNEL = "bench_pickup_done"  # the handler's own notification (see setup)
LISTEN_QUEUE = "bench_pickup"
EXEC_QUEUE = "bench_pickup_exec"
AIM_P50_MS, AIM_P99_MS = 2.0, 5.0


class PgError(Exception):
    pass


class Conn:
    """A minimal PostgreSQL connection: protocol 3, simple queries, trust authentication.

    Notifications (which the server may send between any two messages) are kept in
    `notifies` as (channel, payload, time received)."""

    def __init__(self, host: str, port: int, user: str, dbname: str, appname: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.notifies: list[tuple[str, str, float]] = []
        params = (("user", user), ("database", dbname), ("application_name", appname))
        body = struct.pack("!i", 196608)  # protocol 3.0
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            kind, data = self._message()
            if kind == b"R" and struct.unpack_from("!i", data)[0] != 0:
                raise PgError("the server wants a password; pickup.py speaks trust authentication only")
            if kind == b"E":
                raise PgError(self._error(data))
            if kind == b"Z":
                return

    def _message(self, timeout: float | None = None) -> tuple[bytes, bytes] | None:
        """The next message, or None if none came within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack_from("!i", self.buf, 1)[0]
                if len(self.buf) >= length + 1:
                    kind, data = bytes(self.buf[:1]), bytes(self.buf[5 : length + 1])
                    del self.buf[: length + 1]
                    if kind == b"A":  # NotificationResponse: pid, channel, payload
                        channel, payload = data[4:].split(b"\0")[:2]
                        self.notifies.append((channel.decode(), payload.decode(), time.time()))
                    return kind, data
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    return None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PgError("the server closed the connection")
            self.buf += chunk

    @staticmethod
    def _error(data: bytes) -> str:
        fields = {f[:1]: f[1:].decode(errors="replace") for f in data.split(b"\0") if f}
        return f"{fields.get(b'C', '?')}: {fields.get(b'M', '?')}"

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Runs `sql` (one or more statements); the rows of all of them, as text."""
        q = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)
        rows: list[tuple[str | None, ...]] = []
        error = None
        while True:
            msg = self._message()
            assert msg is not None
            kind, data = msg
            if kind == b"D":
                (ncols,), pos, row = struct.unpack_from("!h", data), 2, []
                for _ in range(ncols):
                    (n,) = struct.unpack_from("!i", data, pos)
                    pos += 4
                    row.append(None if n < 0 else data[pos : pos + n].decode())
                    pos += max(n, 0)
                rows.append(tuple(row))
            elif kind == b"E":
                error = self._error(data)
            elif kind == b"Z":
                break
        if error:
            raise PgError(f"{error}\n  in: {sql}")
        return rows

    def wait_notify(self, channel: str, payload: str | None, timeout: float) -> float | None:
        """Waits for a notification on `channel` (with `payload`, unless None); the time it
        was received, or None after `timeout` seconds.  Others are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (c, p, at) in enumerate(self.notifies):
                if c == channel and (payload is None or p == payload):
                    del self.notifies[: i + 1]
                    return at
            self.notifies.clear()
            left = deadline - time.monotonic()
            if left <= 0 or self._message(left) is None:
                return None

    def close(self) -> None:
        self.sock.sendall(b"X" + struct.pack("!i", 4))
        self.sock.close()


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks, as percentile_cont."""
    v = sorted(values)
    x = (len(v) - 1) * p
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def enqueue(conn: Conn, queue_name: str, n: int) -> tuple[float, float]:
    """Enqueues job n in a transaction of its own.  Returns the server's clock_timestamp()
    (epoch seconds) in the last statement before COMMIT and in the first after it: the same
    query message runs both, so no round trip to the client lies between COMMIT and the
    second; it runs once the commit is durable, visible and its wake-ups are sent."""
    payload = json.dumps({"n": n})
    rows = conn.query(
        f"BEGIN; SELECT job.enqueue('{queue_name}', '{payload}');"
        " SELECT extract(epoch FROM clock_timestamp()); COMMIT;"
        " SELECT extract(epoch FROM clock_timestamp())"
    )
    return float(rows[-2][0] or 0), float(rows[-1][0] or 0)


class Listener(threading.Thread):
    """A client worker the simplest correct way: dequeue (acknowledging the previous job in
    the same call); when that finds nothing, wait for the queue's wake-up on LISTEN, then
    dequeue again.  Reports (n, time the dequeue returned it) on `got`."""

    def __init__(self, args: argparse.Namespace, queue_id: str) -> None:
        super().__init__(daemon=True)
        self.conn = Conn(args.host, args.port, args.user, args.dbname, "bench-pickup-listener")
        self.conn.query(f"LISTEN {CHANNEL}")
        self.queue_id = queue_id
        self.got: queue.Queue[tuple[int, float]] = queue.Queue()
        self.idle = threading.Event()  # found nothing, waiting on LISTEN
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.woken_by_poll = 0  # picked up after a wait timed out: a wake-up went missing

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported by the producer
            self.error = e

    def _loop(self) -> None:
        prev: tuple[str, str] | None = None
        timed_out = False
        while True:
            complete = ""
            if prev:
                complete = f", complete => ARRAY[{prev[0]}]::bigint[], complete_tokens => ARRAY['{prev[1]}']::uuid[]"
            rows = self.conn.query(
                f"SELECT id, lease_token, payload ->> 'n' FROM job.dequeue('{LISTEN_QUEUE}', 'bench-pickup'{complete})"
            )
            at = time.time()
            prev = None
            if rows:
                job_id, token, n = rows[0]
                assert job_id and token and n
                prev = (job_id, token)
                self.woken_by_poll += timed_out
                self.idle.clear()
                self.got.put((int(n), at))
                continue
            if self.stop.is_set():
                return
            self.idle.set()
            # A poll interval, as a worker has: a job found only after it is a lost wake-up.
            timed_out = self.conn.wait_notify(CHANNEL, self.queue_id, 1.0) is None


def measure_listener(args: argparse.Namespace, admin: Conn, producer: Conn) -> dict[str, list[float]]:
    queue_id = admin.query(f"SELECT id FROM job.queues WHERE name = '{LISTEN_QUEUE}'")[0][0]
    assert queue_id
    listener = Listener(args, queue_id)
    listener.start()
    rng = random.Random(1)
    out: dict[str, list[float]] = {"commit": [], "before": [], "flush": []}
    total = args.warmup + args.samples
    for n in range(total):
        if not listener.idle.wait(10):
            raise SystemExit(f"bench: pickup: the listener did not go back to waiting ({listener.error})")
        time.sleep(rng.uniform(args.gap_min, args.gap_max))
        before, committed = enqueue(producer, LISTEN_QUEUE, n)
        try:
            got, at = listener.got.get(timeout=10)
        except queue.Empty:
            raise SystemExit(f"bench: pickup: job {n} not picked up within 10 s ({listener.error})") from None
        if got != n:
            raise SystemExit(f"bench: pickup: the listener got job {got}, expected {n}")
        if n >= args.warmup:
            out["commit"].append((at - committed) * 1000)
            out["before"].append((at - before) * 1000)
            out["flush"].append((committed - before) * 1000)
    # Once waiting again the listener has acknowledged the last job; a wake-up of our own makes
    # it look once more, find nothing and stop.
    if not listener.idle.wait(10):
        raise SystemExit(f"bench: pickup: the listener did not go back to waiting ({listener.error})")
    listener.stop.set()
    admin.query(f"NOTIFY {CHANNEL}, '{queue_id}'")
    listener.join(10)
    if listener.is_alive() or listener.error:
        raise SystemExit(f"bench: pickup: the listener did not stop cleanly ({listener.error})")
    listener.conn.close()
    if listener.got.qsize():
        raise SystemExit("bench: pickup: the listener got a job twice")
    check_finished(admin, LISTEN_QUEUE, total)
    if listener.woken_by_poll:
        print(f"  pickup: {listener.woken_by_poll} jobs were found only by the 1 s poll", file=sys.stderr)
    return out


def measure_executor(args: argparse.Namespace, admin: Conn, producer: Conn) -> dict[str, list[float]]:
    producer.query(f"LISTEN {DONE_CHANNEL}")
    admin.query(
        f"SELECT job.set_handler('{EXEC_QUEUE}', 'bench_pickup_call(jsonb)', concurrency => 1)"
    )
    rng = random.Random(2)
    sent: dict[int, tuple[float, float]] = {}
    total = args.warmup + args.samples
    for n in range(total):
        time.sleep(rng.uniform(args.gap_min, args.gap_max))
        sent[n] = enqueue(producer, EXEC_QUEUE, n)
        # The handler notifies when its batch commits; the executor is idle again soon after
        # (its next claim finds nothing), well within the gap before the next job.
        if producer.wait_notify(DONE_CHANNEL, str(n), 30 if n == 0 else 10) is None:
            raise SystemExit(f"bench: pickup: no executor ran job {n} within {30 if n == 0 else 10} s")
    admin.query(f"SELECT job.remove_handler('{EXEC_QUEUE}')")
    calls = admin.query("SELECT n, extract(epoch FROM called_at) FROM bench_pickup_calls ORDER BY n")
    ns = [int(n or -1) for n, _ in calls]
    if ns != list(range(total)):
        raise SystemExit(f"bench: pickup: the handler ran {len(ns)} times for {total} jobs, or not once each")
    check_finished(admin, EXEC_QUEUE, total)
    out: dict[str, list[float]] = {"commit": [], "before": [], "flush": []}
    for n, at in calls:
        n_, at_ = int(n or 0), float(at or 0)
        if n_ >= args.warmup:
            before, committed = sent[n_]
            out["commit"].append((at_ - committed) * 1000)
            out["before"].append((at_ - before) * 1000)
            out["flush"].append((committed - before) * 1000)
    return out


def check_finished(admin: Conn, queue_name: str, total: int) -> None:
    """Every job of the queue was completed, exactly once, and none is left."""
    live, done = admin.query(
        f"SELECT (SELECT count(*) FROM job.live_jobs WHERE queue = '{queue_name}'),"
        f" (SELECT count(*) FROM job.finished_jobs WHERE queue = '{queue_name}' AND state = 'completed')"
    )[0]
    if int(live or 0) != 0 or int(done or 0) != total:
        raise SystemExit(f"bench: pickup: {queue_name}: {done} of {total} jobs completed, {live} still live")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=55434)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="bench_pickup")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap-min", type=float, default=0.005, help="seconds idle before each job, at least")
    ap.add_argument("--gap-max", type=float, default=0.030, help="seconds idle before each job, at most")
    args = ap.parse_args()

    admin = Conn(args.host, args.port, args.user, args.dbname, "bench-pickup-admin")
    producer = Conn(args.host, args.port, args.user, args.dbname, "bench-pickup-producer")
    admin.query(
        f"""SELECT job.create_queue('{LISTEN_QUEUE}'), job.create_queue('{EXEC_QUEUE}', max_retries => 0);
            CREATE TABLE bench_pickup_calls (n int NOT NULL, called_at timestamptz NOT NULL);
            -- The handler: when it was called, and a word to the producer once its batch commits.
            CREATE FUNCTION bench_pickup_call(payload jsonb) RETURNS void LANGUAGE sql AS $$
                INSERT INTO bench_pickup_calls VALUES ((payload ->> 'n')::int, clock_timestamp());
                SELECT pg_notify('{DONE_CHANNEL}', payload ->> 'n');
            $$;"""
    )
    commit_mode = admin.query("SHOW synchronous_commit")[0][0]

    results = {}
    print(f"  pickup: (a) a LISTENing client, {args.samples} jobs...", file=sys.stderr)
    results["a"] = measure_listener(args, admin, producer)
    print(f"  pickup: (b) an executor, {args.samples} jobs...", file=sys.stderr)
    results["b"] = measure_executor(args, admin, producer)

    labels = {
        "a": "(a) client on LISTEN: commit -> its `job.dequeue` returns the job",
        "b": "(b) executor: commit -> the handler is called",
    }
    lines = [
        "",
        f"## Pick-up latency ({args.samples} jobs each, one at a time into an idle queue)",
        "",
        "| from the producer's commit to | p50 ms | p99 ms | aim | from before COMMIT: p50 / p99 ms |",
        "|---|---:|---:|---|---:|",
    ]
    for key, label in labels.items():
        r = results[key]
        p50, p99 = percentile(r["commit"], 0.5), percentile(r["commit"], 0.99)
        met = p50 <= AIM_P50_MS and p99 <= AIM_P99_MS
        lines.append(
            f"| {label} | {p50:.2f} | {p99:.2f} | p50 ≤ {AIM_P50_MS:g}, p99 ≤ {AIM_P99_MS:g} "
            f"({'met' if met else 'missed'}) | {percentile(r['before'], 0.5):.2f} / {percentile(r['before'], 0.99):.2f} |"
        )
        print(f"  pickup: {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(r['commit']):.2f} ms", file=sys.stderr)
    flush = results["a"]["flush"] + results["b"]["flush"]
    lines += [
        "",
        "Latency runs from the producer's commit, taken as the server's `clock_timestamp()` in the",
        "statement right after COMMIT (sent in the same query message, so it runs as soon as the",
        "commit is durable and visible and its wake-ups are sent, with no round trip between), to",
        "(a) the moment the LISTENing client's `job.dequeue` call returned the job (`time.time()`",
        "in the client, the same host clock), (b) the handler's call (`clock_timestamp()` in the",
        "handler).  The last column measures from `clock_timestamp()` in the producer's last",
        "statement before COMMIT instead, so it also includes the commit itself (its WAL flush;",
        f"synchronous_commit={commit_mode}): p50 {percentile(flush, 0.5):.2f} ms, p99 {percentile(flush, 0.99):.2f} ms here.  Not `enqueued_at`: it is",
        "the transaction's start, which would add the enqueue too.  Before each job the queue was",
        f"idle for {args.gap_min * 1000:g}–{args.gap_max * 1000:g} ms (random), the client waiting on LISTEN, the executor asleep;",
        f"{args.warmup} unmeasured jobs first; every job was picked up once and completed.",
    ]
    print("\n".join(lines))
    admin.query(
        f"SELECT job.drop_queue('{LISTEN_QUEUE}', force => true), job.drop_queue('{EXEC_QUEUE}', force => true)"
    )
    producer.close()
    admin.close()


if __name__ == "__main__":
    main()
