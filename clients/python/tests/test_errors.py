"""How exceptions map to job.fail's arguments (no database needed)."""

from __future__ import annotations

import datetime as dt
import urllib.error
from email.message import Message
from email.utils import format_datetime
from typing import Any

import pytest

from pg_jobqueue import PermanentError, describe_failure
from pg_jobqueue.errors import parse_retry_after


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


class Resp:
    def __init__(self, status: Any, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}


class HTTPError(Exception):
    def __init__(self, response: Resp) -> None:
        super().__init__("boom")
        self.response = response


def test_http_status_sources() -> None:
    assert describe_failure(HTTPError(Resp(503))).http_status == 503
    assert describe_failure(HTTPError(Resp(None))).http_status is None
    exc = Exception("x")
    exc.status = 404  # type: ignore[attr-defined]
    assert describe_failure(exc).http_status == 404
    exc.status = 700  # type: ignore[attr-defined]  # out of range: ignored
    assert describe_failure(exc).http_status is None
    exc2 = Exception("x")
    exc2.status_code = True  # type: ignore[attr-defined]  # a bool is not a status
    assert describe_failure(exc2).http_status is None
    headers = Message()
    headers["Retry-After"] = "7"
    url_error = urllib.error.HTTPError("http://x", 429, "Too Many", headers, None)
    failure = describe_failure(url_error)
    assert failure.http_status == 429 and failure.retry_after == dt.timedelta(seconds=7)
    assert describe_failure(ValueError("plain")).http_status is None


def test_retry_after() -> None:
    assert describe_failure(HTTPError(Resp(429, {"Retry-After": "120"}))).retry_after == (
        dt.timedelta(seconds=120)
    )
    assert describe_failure(HTTPError(Resp(503, {"retry-after": "3"}))).retry_after == (
        dt.timedelta(seconds=3)
    )
    now = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    later = format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == dt.timedelta(seconds=90)
    assert parse_retry_after(
        format_datetime(now - dt.timedelta(hours=1), usegmt=True), now=now
    ) == dt.timedelta(0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(-3) == dt.timedelta(0)
    assert parse_retry_after(float("nan")) is None
    assert parse_retry_after("99999999999") == dt.timedelta(days=365)
    exc = Exception("limited")
    exc.retry_after = 2.5  # type: ignore[attr-defined]
    assert describe_failure(exc).retry_after == dt.timedelta(seconds=2.5)
    exc.retry_after = dt.timedelta(minutes=1)  # type: ignore[attr-defined]
    assert describe_failure(exc).retry_after == dt.timedelta(minutes=1)


def test_permanent() -> None:
    assert describe_failure(PermanentError("gone")).permanent
    assert describe_failure(PermanentError("gone", http_status=410)).http_status == 410

    class MarkedError(Exception):
        permanent = True

    assert describe_failure(MarkedError()).permanent
    assert not describe_failure(RuntimeError("x")).permanent

    class FalsyError(Exception):
        permanent = "yes"  # only True counts

    assert not describe_failure(FalsyError()).permanent


def test_error_text() -> None:
    def inner() -> None:
        raise KeyError("customer 7")

    def outer() -> None:
        try:
            inner()
        except KeyError as exc:
            raise RuntimeError("could not bill") from exc

    exc = raised_from(outer)
    text = describe_failure(exc).error
    first, rest = text.split("\n", 1)
    assert first == "RuntimeError: could not bill"
    assert "Traceback (most recent call last)" in rest and "in inner" in rest
    assert "KeyError: 'customer 7'" in rest and "direct cause" in rest
    assert describe_failure(raised(PermanentError())).error.startswith(
        "pg_jobqueue.errors.PermanentError\n"
    )
    # The PERMANENT marker counts in the message, not as a chance word of the traceback.
    marked = describe_failure(raised(RuntimeError("PERMANENT: unknown customer"))).error
    assert marked.startswith("RuntimeError: PERMANENT: unknown customer\n")
    assert marked.count("PERMANENT") == 1
    assert "\x00" not in describe_failure(raised(ValueError("nul\x00byte"))).error
    assert len(describe_failure(raised(ValueError("x" * 100_000))).error) == 65_536


def raised_from(fn: Any) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn()
    return info.value
