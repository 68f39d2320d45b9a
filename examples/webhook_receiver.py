#!/usr/bin/env python3
"""A webhook receiver for pg_jobqueue's deliveries, standard library only (run by `make demo`).

    WEBHOOK_SECRET=whsec_... python3 examples/webhook_receiver.py PORT [SECRET]

Listens on 127.0.0.1:PORT, checks each request's Standard Webhooks signature against the
endpoint's secret (job.endpoint_secret('name') hands it out), prints one line per request,
and answers by the path's last segment:
    .../ok       200 with a small JSON body        (the delivery completes)
    .../flaky    503 the first time per webhook-id, then 200   (retried after backoff)
    .../missing  404                                (dead-lettered at once)
A request whose signature does not verify gets 401.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60  # how far webhook-timestamp may be from our clock (replays)


def verify(secret: str, headers, body: bytes) -> bool:
    """Whether the request is signed with `secret` ("whsec_" + base64 key) and recent."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # Space-separated "v1,<base64>" signatures: two of them while the secret rotates.
    return any(
        hmac.compare_digest(sig.removeprefix("v1,").encode(), expected)
        for sig in headers.get("webhook-signature", "").split()
        if sig.startswith("v1,")
    )


SECRET = os.environ.get("WEBHOOK_SECRET") or (sys.argv[2] if len(sys.argv) > 2 else "")
failed_once: set[str] = set()  # webhook-ids /flaky has answered 503 to
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the sender reuses its connections

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        msg_id = self.headers.get("webhook-id", "")
        route = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if not verify(SECRET, self.headers, body):
            status = 401
        elif route == "ok":
            status = 200
        elif route == "flaky":
            with lock:
                first = msg_id not in failed_once
                failed_once.add(msg_id)
            status = 503 if first else 200
        else:
            status = 404
        answer = json.dumps({"received": msg_id} if status == 200 else {"error": status}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        line = (
            f"receiver: {self.command} {self.path} webhook-id={msg_id}"
            f" signature={'ok' if status != 401 else 'BAD'} body={body.decode(errors='replace')}"
            f" -> {status}\n"
        )
        with lock:  # one whole line at a time from the server's threads
            sys.stdout.write(line)
            sys.stdout.flush()

    do_PUT = do_PATCH = do_POST

    def log_message(self, format: str, *args) -> None:  # one line per request is ours
        pass


if __name__ == "__main__":
    if len(sys.argv) < 2 or not SECRET.startswith("whsec_"):
        sys.exit("usage: WEBHOOK_SECRET=whsec_... webhook_receiver.py PORT  (or PORT SECRET)")
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver)
    print(f"receiver: listening on http://127.0.0.1:{sys.argv[1]}", flush=True)
    server.serve_forever()
