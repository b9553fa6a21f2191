"""Test doubles at the network boundary: one real local HTTP server per external service.

A double answers only the calls its service documents, checks each request as the public docs
define it (method, path, headers, body) and answers as the docs say, errors included. Whatever the
docs forbid is written to ``problems`` and answered with the service's own error shape: a test
asserts ``double.problems == []``, so a malformed request fails the test even when our code would
swallow the error. ``fail_next`` queues error answers (401, 404, 422, 429 with Retry-After, 5xx)
for the next matching calls.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Handler = Callable[[Request, dict[str, str]], Response]


class _Server(HTTPServer):
    """pytest-httpserver's server, stopping in milliseconds (its loop polls for shutdown every 0.5 s)."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.01)


class Refused(Exception):
    """A request the docs do not allow; ``response`` is what the real service would answer."""

    def __init__(self, problem: str, response: Response) -> None:
        super().__init__(problem)
        self.response = response


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    response: Response


@dataclass
class Hold:
    """A call whose answer is held back: ``held`` is set once the service has made its effect;
    the answer goes out when ``release`` is set (or after a minute)."""

    method: str
    pattern: re.Pattern[str]
    body_contains: str | None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class ServiceDouble:
    """Routes by method and path pattern; subclasses add routes in ``routes()``."""

    name: str = "service"
    problems: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._clear()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._failures: list[_Failure] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self.server = _Server(host="127.0.0.1", port=0, threaded=True)  # a held answer must not block other calls
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._dispatch)
        self.routes()

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ServiceDouble:
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    # --- for subclasses ----------------------------------------------------------------------
    def routes(self) -> None:
        """Register handlers with ``self.route(method, path_regex, handler)``."""

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{path}$"), handler))

    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """The service's error answer (subclasses override to use the service's error shape)."""
        return json_response(body, status, headers)

    def refuse(self, problem: str, response: Response | None = None) -> Refused:
        """Record a request the docs forbid; raise the result: ``raise self.refuse(...)``."""
        return Refused(problem, response or self.error(400, {"message": problem}))

    def not_found(self, what: str) -> Response:
        return self.error(404, {"message": f"{what} not found"})

    def _clear(self) -> None:
        """Forget the service's own state (subclasses that keep some); ``reset`` calls it."""

    # --- for tests -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the service's state, the calls, problems, queued failures and holds: one server
        can then serve a whole test module (starting and stopping one per test costs time)."""
        with self._lock:
            self._clear()
            self.calls.clear()
            self.problems.clear()
            self._failures.clear()
            self._holds.clear()

    def fail_next(
        self, method: str, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """The next ``times`` calls matching method and path get this error answer instead."""
        response = body if isinstance(body, Response) else self.error(status, body or {"message": f"injected {status}"}, headers)
        for _ in range(times):
            self._failures.append(_Failure(method.upper(), re.compile(f"^{path}$"), response))

    def hold(self, method: str, path: str, body_contains: str | None = None) -> Hold:
        """The next matching call is served as usual, but its answer waits for ``release``: the
        service has made the effect and the caller has not heard of it (a test kills the caller then)."""
        hold = Hold(method.upper(), re.compile(f"^{path}$"), body_contains)
        self._holds.append(hold)
        return hold

    def count(self, method: str, path: str) -> int:
        pattern = re.compile(f"^{path}$")
        return sum(1 for m, p in self.calls if m == method.upper() and pattern.match(p))

    # --- dispatch --------------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> Response:
        response = self._answer(request)
        method, path = request.method.upper(), request.path
        for hold in list(self._holds):
            if hold.method == method and hold.pattern.match(path) and (
                hold.body_contains is None or hold.body_contains in request.get_data(as_text=True)
            ):
                self._holds.remove(hold)
                hold.held.set()
                hold.release.wait(60)
                break
        return response

    def _answer(self, request: Request) -> Response:
        method, path = request.method.upper(), request.path
        with self._lock:
            self.calls.append((method, path))
            for failure in self._failures:
                if failure.method == method and failure.pattern.match(path):
                    self._failures.remove(failure)
                    return failure.response
            for route_method, pattern, handler in self._routes:
                match = pattern.match(path)
                if route_method == method and match:
                    try:
                        return handler(request, match.groupdict())
                    except Refused as refused:
                        self.problems.append(f"{method} {path}: {refused}")
                        return refused.response
            self.problems.append(f"{method} {path}: not an endpoint of {self.name}")
            return self.not_found(f"{method} {path}")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


def json_body(double: ServiceDouble, request: Request) -> Any:
    """The request's JSON body; a missing or wrong Content-Type, or a body that is not JSON, is refused."""
    if request.mimetype != "application/json":
        raise double.refuse(f"Content-Type must be application/json, got {request.content_type!r}")
    try:
        return json.loads(request.get_data(as_text=True))
    except ValueError:
        raise double.refuse("the body is not JSON") from None


def require_header(double: ServiceDouble, request: Request, name: str, value: str, status: int = 401, body: Any = None) -> None:
    """A header the docs require (a token, an API version); missing or wrong -> the service's answer."""
    got = request.headers.get(name)
    if got != value:
        problem = f"header {name} is {'missing' if got is None else 'wrong'}"
        raise double.refuse(problem, double.error(status, body or {"message": problem}))
