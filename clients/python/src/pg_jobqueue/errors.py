"""How a handler's exception becomes the arguments of ``job.fail``."""

from __future__ import annotations

import datetime as dt
import math
import traceback
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["Failure", "PermanentError", "describe_failure", "parse_retry_after"]

# The extension keeps 8,192 characters of an error text (and records the whole length); a
# little more than that is sent so that the recorded length says how long the text was.
MAX_ERROR_CHARS = 65_536
# job.fail refuses intervals over 100 years; a Retry-After beyond a year is clamped to a year.
MAX_RETRY_AFTER = dt.timedelta(days=365)


class PermanentError(Exception):
    """Raise (or subclass) this in a handler to dead-letter the job at once: ``permanent => true``.

    Any exception with an attribute ``permanent = True`` counts the same.  ``http_status`` and
    ``retry_after`` may be given too; they are recorded with the attempt.
    """

    permanent = True

    def __init__(
        self,
        message: str = "",
        *,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        if http_status is not None:
            self.status = http_status


@dataclass(frozen=True)
class Failure:
    """The arguments ``job.fail`` gets for one exception."""

    error: str
    permanent: bool
    http_status: int | None
    retry_after: dt.timedelta | None


def _status_from(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value) if 100 <= value <= 599 else None


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries: ``status``, ``status_code``, ``code`` (urllib), or
    its ``response``'s ``status_code`` / ``status`` (requests, httpx, aiohttp); 100..599 only."""
    for name in ("status", "status_code"):
        status = _status_from(getattr(exc, name, None))
        if status is not None:
            return status
    response = getattr(exc, "response", None)
    if response is not None:
        for name in ("status_code", "status"):
            status = _status_from(getattr(response, name, None))
            if status is not None:
                return status
    # urllib.error.HTTPError carries `code` (and `headers`).
    if getattr(exc, "headers", None) is not None:
        return _status_from(getattr(exc, "code", None))
    return None


def parse_retry_after(  # noqa: PLR0911 - one return per form
    value: Any, now: dt.datetime | None = None
) -> dt.timedelta | None:
    """A Retry-After as a delay: delta-seconds (``"120"``, ``120``, ``1.5``), an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), a ``timedelta`` or an aware ``datetime``.  Dates in
    the past give zero; anything unreadable gives ``None``; delays are capped at a year."""
    delay: dt.timedelta | None = None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, dt.timedelta):
        delay = value
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        delay = dt.timedelta(seconds=min(float(value), MAX_RETRY_AFTER.total_seconds()))
    elif isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return None
        delay = value - (now or dt.datetime.now(dt.timezone.utc))
    elif isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        text = text.strip()
        if text.isdigit():
            return min(dt.timedelta(seconds=int(text[:12])), MAX_RETRY_AFTER)
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # pragma: no cover - older Pythons
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        delay = when - (now or dt.datetime.now(dt.timezone.utc))
    else:
        return None
    if delay < dt.timedelta(0):
        return dt.timedelta(0)
    return min(delay, MAX_RETRY_AFTER)


def _header(headers: Any, name: str) -> Any:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    try:
        value = getter(name)
        if value is None:
            value = getter(name.lower())
    except Exception:  # headers of an unknown kind
        return None
    return value


def retry_after_of(exc: BaseException) -> dt.timedelta | None:
    """The exception's ``retry_after`` attribute, else a ``Retry-After`` header of its
    ``response`` (requests, httpx) or of the exception itself (urllib, aiohttp)."""
    explicit = getattr(exc, "retry_after", None)
    if explicit is not None:
        return parse_retry_after(explicit)
    response = getattr(exc, "response", None)
    for holder in (response, exc):
        value = _header(getattr(holder, "headers", None), "Retry-After")
        if value is not None:
            return parse_retry_after(value)
    return None


def is_permanent(exc: BaseException) -> bool:
    """A :class:`PermanentError`, or an exception with ``permanent = True``."""
    return isinstance(exc, PermanentError) or getattr(exc, "permanent", False) is True


def error_text(exc: BaseException) -> str:
    """``Type: message`` on the first line (what the extension's first 8,192 characters keep
    whatever the traceback's length), then the traceback with its chained exceptions.

    The extension dead-letters any error text that contains ``PERMANENT`` (a marker a message
    may carry on purpose); inside the traceback, where it would only be a chance word of the
    source, it is written ``PERM_ANENT``.
    """
    kind = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        kind = f"{module}.{kind}"
    message = str(exc)
    head = f"{kind}: {message}" if message else kind
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    trace = trace.replace("PERMANENT", "PERM_ANENT")
    text = f"{head}\n\n{trace}".replace("\x00", "\\x00")
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS]
    return text


def describe_failure(exc: BaseException) -> Failure:
    """What ``job.fail`` is told about ``exc``."""
    return Failure(
        error=error_text(exc),
        permanent=is_permanent(exc),
        http_status=http_status_of(exc),
        retry_after=retry_after_of(exc),
    )
