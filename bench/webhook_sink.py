#!/usr/bin/env python3
"""A fast webhook receiver for bench/deliveries.sh, standard library only.

    python3 bench/webhook_sink.py serve --port 55438 [--delay 0.1] [--secret whsec_...]
    python3 bench/webhook_sink.py load --port 55438 [--connections 64] [--seconds 5] [--path /fast]

serve: one asyncio event loop (asyncio.Protocol, no thread per request), HTTP/1.1 with
keep-alive: a minimal reader of the request line, headers and a Content-Length body (what
pg_jobqueue's sender sends; no chunked bodies).  Answers 200 with `{}`: at once (after the
other requests the same turn of the event loop read), or after --delay seconds when the path
ends in /slow (a timer, so a waiting request holds no thread).
Checks every request's Standard Webhooks signature when --secret (or WEBHOOK_SECRET) is set.
Control requests, answered at once and not counted:
    GET /_stats   counts since the last reset (JSON, below);
    POST /_reset  zeroes them.
Stats: requests, requests by route (the path's last segment), distinct webhook-ids,
bad signatures, in_flight and peak_in_flight (a request is in flight from its last byte
read to its answer written), open connections and their peak, first/last arrival (time.time()), arrivals {webhook-id: time}
of route "lat" (for latency), and the process's CPU seconds (user + system) since the reset.

load: a load test of a running sink (N keep-alive connections, each one request at a time,
in --procs processes); prints requests/s and the sink's CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import sys
import time
import urllib.request

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
BAD = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stats:
    def __init__(self) -> None:
        self.connections = 0  # open now (not reset)
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.routes: dict[str, int] = {}
        self.ids: set[str] = set()
        self.bad_signatures = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_connections = self.connections
        self.first = 0.0
        self.last = 0.0
        self.lat: dict[str, float] = {}
        self.cpu0 = cpu_seconds()

    def json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "routes": self.routes,
                "distinct_ids": len(self.ids),
                "bad_signatures": self.bad_signatures,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "connections": self.connections,
                "peak_connections": self.peak_connections,
                "first": self.first,
                "last": self.last,
                "arrivals": self.lat,
                "cpu_seconds": cpu_seconds() - self.cpu0,
            }
        ).encode()


class Sink(asyncio.Protocol):
    stats = Stats()
    key: bytes | None = None
    delay = 0.1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.busy = False  # an answer is pending: read the next request after it
        self.stats.connections += 1
        self.stats.peak_connections = max(self.stats.peak_connections, self.stats.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.parse()

    def parse(self) -> None:
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.handle(head[0].split(" "), headers, body)

    def handle(self, request_line: list[str], headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        path = request_line[1] if len(request_line) > 1 else "/"
        st = self.stats
        if path.startswith("/_"):
            if path == "/_reset":
                st.reset()
                answer = b"{}"
            else:
                answer = st.json()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(answer)
                + answer
            )
            return
        route = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        msg_id = headers.get("webhook-id", "")
        st.requests += 1
        st.routes[route] = st.routes.get(route, 0) + 1
        st.ids.add(msg_id)
        st.first = st.first or now
        st.last = now
        if route == "lat":
            st.lat[msg_id] = now
        if self.key is not None and not verify(self.key, msg_id, headers, body):
            st.bad_signatures += 1
            self.transport.write(BAD)
            return
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        self.busy = True
        if route == "slow":
            asyncio.get_running_loop().call_later(self.delay, self.answer)
        else:  # after the other requests this turn of the loop read: in flight together
            asyncio.get_running_loop().call_soon(self.answer)

    def answer(self) -> None:
        self.stats.in_flight -= 1
        self.busy = False
        if not self.transport.is_closing():
            self.transport.write(OK)
            self.parse()


def verify(key: bytes, msg_id: str, headers: dict[str, str], body: bytes) -> bool:
    signed = f"{msg_id}.{headers.get('webhook-timestamp', '')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(s[3:].encode(), expected)
        for s in headers.get("webhook-signature", "").split()
        if s.startswith("v1,")
    )


def serve(args: argparse.Namespace) -> None:
    secret = args.secret or os.environ.get("WEBHOOK_SECRET")
    Sink.key = base64.b64decode(secret.removeprefix("whsec_")) if secret else None
    Sink.delay = args.delay

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            Sink, "127.0.0.1", args.port, backlog=1024
        )
        print(f"webhook_sink: listening on http://127.0.0.1:{args.port}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------
# load


def control(port: int, path: str) -> dict:
    method = "POST" if path == "/_reset" else "GET"
    with urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    ) as r:
        return json.loads(r.read())


def load_process(
    port: int, connections: int, seconds: float, path: str, out: multiprocessing.Queue
) -> None:
    body = b'{"n": 1}'
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"webhook-id: msg_load\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def one(deadline: float) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.monotonic() < deadline:
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            n += 1
        writer.close()
        return n

    async def main() -> int:
        deadline = time.monotonic() + seconds
        return sum(await asyncio.gather(*(one(deadline) for _ in range(connections))))

    out.put(asyncio.run(main()))


def load(args: argparse.Namespace) -> None:
    control(args.port, "/_reset")
    out: multiprocessing.Queue = multiprocessing.Queue()
    per = max(1, args.connections // args.procs)
    procs = [
        multiprocessing.Process(
            target=load_process, args=(args.port, per, args.seconds, args.path, out)
        )
        for _ in range(args.procs)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    st = control(args.port, "/_stats")
    print(
        json.dumps(
            {
                "requests": total,
                "seconds": round(elapsed, 2),
                "requests_per_s": round(total / elapsed),
                "sink_cpu_seconds": round(st["cpu_seconds"], 2),
                "sink_cpu_us_per_request": round(st["cpu_seconds"] / max(total, 1) * 1e6, 1),
                "peak_in_flight": st["peak_in_flight"],
                "connections": per * args.procs,
                "path": args.path,
            }
        )
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--delay", type=float, default=0.1)
    s.add_argument("--secret")
    s.set_defaults(func=serve)
    lo = sub.add_parser("load")
    lo.add_argument("--port", type=int, required=True)
    lo.add_argument("--connections", type=int, default=64)
    lo.add_argument("--procs", type=int, default=1)
    lo.add_argument("--seconds", type=float, default=5)
    lo.add_argument("--path", default="/fast")
    lo.set_defaults(func=load)
    a = ap.parse_args()
    try:
        a.func(a)
    except KeyboardInterrupt:
        sys.exit(130)
