# What the README's examples take from the application around them, so that each compiles on
# its own under mypy --strict (test_typing.py imports the names an example uses but does not
# define).

from collections.abc import Mapping
from typing import Any

import psycopg

from pg_jobqueue import Job

conn: psycopg.Connection[Any]
async_conn: psycopg.AsyncConnection[Any]
url: str
DATABASE_URL: str
PROVIDER_URL: str

class User:
    email: str

def load_user(user_id: int) -> User | None: ...
def smtp_send(to: str, template: str) -> str: ...
async def smtp_send_async(to: str, template: str) -> str: ...
def send_email(job: Job) -> None: ...

class Response:
    status_code: int
    headers: Mapping[str, str]

    def raise_for_status(self) -> None: ...
    def json(self) -> dict[str, Any]: ...

class Http:
    def post(self, url: str, json: object) -> Response: ...

http: Http
