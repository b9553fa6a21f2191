"""One external HTTP API behind an Airflow connection: the hook, the credentials, what an error means.

Every production backend that speaks HTTP (SendGrid, Buffer, Figma, Notion, Grafana, the LLM)
calls its service through :class:`HttpApi`, so all of them fail alike:

- a 4xx other than 429 is our mistake (bad token, bad request): it fails at once, with the
  service's own message, because retrying cannot fix it;
- 429, 5xx, timeouts and connection errors are the service's trouble: retryable, carrying the
  wait the service asked for (``Retry-After``, seconds or HTTP-date);
- every call has one total deadline, the connection's ``timeout`` (connect, headers and body
  together; :mod:`include.orchestrator.resilience.deadlines`), so a server trickling bytes cannot hold a task.

The hook is Airflow's ``HttpHook``, built at call time from the connection: ``host`` is the API's
base URL (so a GitHub Enterprise, a self-hosted Grafana or a test server is just another host), the
``password`` is the token. The connection's ``extra`` holds the service's settings (a sender id, a
folder uid); only the keys a service declares as ``headers`` are sent as HTTP headers. Tokens go
into a header built here and are never logged, put in XCom or in an error message.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

from include.orchestrator.errors import (
    ConnectionConfigError,
    DeadlineExceeded,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
)
from include.orchestrator.resilience.deadlines import within

OK = range(200, 300)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: either form of RFC 9110 (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def error_text(response: Any) -> str:
    """The service's own words from an error answer, shortened; common JSON shapes understood."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:500]
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "errors", "detail"):
            if body.get(key):
                value = body[key]
                return (value if isinstance(value, str) else json.dumps(value))[:500]
    return json.dumps(body)[:500]


def retry_after_header(response: Any) -> float | None:
    """The wait an error answer asks for in its ``Retry-After`` header (the default of ``HttpApi``)."""
    return retry_after_seconds(response.headers.get("Retry-After"))


@dataclass(frozen=True)
class Credentials:
    """How a service wants its token: header name and value template (``{token}``)."""

    header: str = "Authorization"
    template: str = "Bearer {token}"

    def headers(self, token: str) -> dict[str, str]:
        return {self.header: self.template.format(token=token)}


BEARER = Credentials()


class HttpApi:
    """Calls to one service through ``HttpHook``; see the module docstring for the error contract."""

    def __init__(
        self,
        service: str,
        conn_id: str,
        conn: Any,
        *,
        credentials: Credentials | None = BEARER,
        headers: Iterable[str] = (),
        describe: Callable[[Any], str] = error_text,
        wait: Callable[[Any], float | None] = retry_after_header,
        timeout: float = 30.0,
    ) -> None:
        if not conn.host:
            raise ConnectionConfigError(f"connection {conn_id!r} ({service}) needs a host: the API's base URL")
        if credentials is not None and not conn.password:
            raise ConnectionConfigError(f"connection {conn_id!r} ({service}) needs its API token in the password field")
        self.service, self.conn_id, self.conn = service, conn_id, conn
        self.settings: dict[str, Any] = dict(conn.extra_dejson)
        self._headers = {k: str(self.settings[k]) for k in headers if k in self.settings}
        if credentials is not None:
            self._headers.update(credentials.headers(conn.password))
        self._describe, self._wait = describe, wait  # a service's own error text and rate-limit headers
        self.timeout = float(self.settings.get("timeout", timeout))

    def setting(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        value = self.settings.get(name, default)
        if required and value in (None, "", [], {}):
            raise ConnectionConfigError(f"connection {self.conn_id!r} ({self.service}) needs the extra {name!r}")
        return value

    def _hook(self, method: str) -> Any:
        from airflow.providers.http.hooks.http import HttpHook

        conn = self.conn

        class _Hook(HttpHook):
            # The extra is ours (settings), not a list of headers: hand HttpHook a copy without it.
            def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                return _without_extra(conn)

        return _Hook(method=method, http_conn_id=self.conn_id)

    def request(
        self,
        method: str,
        endpoint: str,
        action: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: Container[int] = OK,
    ) -> Any:
        """Send one request; return the ``requests.Response`` when its status is in ``ok``."""
        import requests

        hook = self._hook(method)
        extra = {"check_response": False, "timeout": self.timeout, "allow_redirects": False}
        try:
            with within(self.timeout, self.service, str(self.conn.host)):
                response = hook.run(
                    endpoint,
                    data=params if method.upper() in ("GET", "HEAD") else None,
                    headers={**self._headers, **(headers or {})},
                    extra_options=extra,
                    **({"json": json} if json is not None else {}),
                    **({"params": params} if params and method.upper() not in ("GET", "HEAD") else {}),
                )
        except DeadlineExceeded as exc:
            raise RetryableServiceError(self.service, action, exc.reason) from None
        except requests.Timeout as exc:
            reason = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
            raise RetryableServiceError(self.service, action, reason) from None
        except requests.ConnectionError as exc:
            raise RetryableServiceError(self.service, action, f"connection failed ({type(exc).__name__})") from None
        if response.status_code in ok:
            return response
        retryable = is_retryable_status(response.status_code)
        raise ServiceError.of(
            self.service,
            action,
            f"HTTP {response.status_code}: {self._describe(response)}",
            status=response.status_code,
            retryable=retryable,
            retry_after=self._wait(response) if retryable else None,
        )

    def call(self, method: str, endpoint: str, action: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON answer (``None`` for an empty one)."""
        return self.decode(self.request(method, endpoint, action, **kwargs), action)

    def decode(self, response: Any, action: str) -> Any:
        """The JSON answer of a successful response (``None`` for an empty one)."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PermanentServiceError(
                self.service, action, f"HTTP {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
            ) from None


def _without_extra(conn: Any) -> Any:
    from airflow.sdk import Connection

    return Connection(
        conn_id=conn.conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        schema=conn.schema,
        port=conn.port,
        login=None,  # credentials travel in the header HttpApi builds, never as basic auth
        password=None,
    )
