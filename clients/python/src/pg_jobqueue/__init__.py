"""pg_jobqueue: workers and producers for background jobs inside PostgreSQL.

>>> from pg_jobqueue import Worker
>>> def send_email(job):
...     return {"sent_to": job.payload["to"]}
>>> Worker("emails", send_email, conninfo="postgresql:///app").run()  # doctest: +SKIP
"""

from ._core import Job, JsonObject
from .aio import AsyncWorker
from .errors import Failure, PermanentError, describe_failure
from .producer import (
    aenqueue,
    aenqueue_many,
    arate_limit_pause,
    enqueue,
    enqueue_many,
    rate_limit_pause,
)
from .worker import Worker

__version__ = "0.5.0"

__all__ = [
    "AsyncWorker",
    "Failure",
    "Job",
    "JsonObject",
    "PermanentError",
    "Worker",
    "__version__",
    "aenqueue",
    "aenqueue_many",
    "arate_limit_pause",
    "describe_failure",
    "enqueue",
    "enqueue_many",
    "rate_limit_pause",
]
