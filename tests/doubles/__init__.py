"""Test doubles at the network boundary: one real local HTTP server per external service.

A double answers only the calls its service documents, checks each request as the public docs
define it (method, path, headers, body) and answers as the docs say, errors included. Whatever the
docs forbid is written to ``problems`` and answered with the service's own error shape: a test
asserts ``double.problems == []``, so a malformed request fails the test even when our code would
swallow the error. ``fail_next`` queues error answers (401, 404, 422, 429 with Retry-After, 5xx)
for the next matching calls; ``headers`` may be a function called when the answer is sent (a
Retry-After HTTP-date "now + N s"). Faults below HTTP, for the next matching calls too:
``reset_next`` closes the connection with a TCP reset instead of answering; ``stall_next`` answers
as usual but only after some seconds (longer than the client's timeout: the client gives up).
``calls`` lists every call as (method, path) and ``times`` the wall-clock time (``time.time()``)
each one arrived, so a test can measure the waits between a client's tries.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
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
    answer: Callable[[Request], Response | None]  # None: the routes answer as usual


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
    times: list[float] = field(default_factory=list)  # when each of ``calls`` arrived (time.time())

    def __post_init__(self) -> None:
        self._clear()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._failures: list[_Failure] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()  # cuts stalls short when the server stops
        self.server = _Server(host="127.0.0.1", port=0, threaded=True)  # a held answer must not block other calls
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._dispatch)
        self.routes()

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ServiceDouble:
        self._closing.clear()
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
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
            self.times.clear()
            self.problems.clear()
            self._failures.clear()
            self._holds.clear()

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls matching method and path get this error answer instead.
        ``headers`` may be a function: called when the answer is sent (a Retry-After date "now + N s")."""
        if isinstance(body, Response):
            response = body
            self._queue(method, path, lambda request: response, times)
            return

        def answer(request: Request) -> Response:
            return self.error(status, body or {"message": f"injected {status}"}, headers() if callable(headers) else headers)

        self._queue(method, path, answer, times)

    def reset_next(self, method: str, path: str, times: int = 1) -> None:
        """The next ``times`` matching calls get no answer: the connection is closed with a TCP reset."""
        self._queue(method, path, _reset_connection, times)

    def stall_next(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` matching calls are answered as usual, but only after ``seconds``."""

        def stall(request: Request) -> None:
            self._closing.wait(seconds)

        self._queue(method, path, stall, times)

    def _queue(self, method: str, path: str, answer: Callable[[Request], Response | None], times: int) -> None:
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(method.upper(), re.compile(f"^{path}$"), answer))

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
            if (
                hold.method == method
                and hold.pattern.match(path)
                and (hold.body_contains is None or hold.body_contains in request.get_data(as_text=True))
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
            self.times.append(time.time())
            failure = next((f for f in self._failures if f.method == method and f.pattern.match(path)), None)
            if failure is None:
                return self._route(request, method, path)
            self._failures.remove(failure)
        response = failure.answer(request)  # outside the lock: a stall must not hold up other calls
        if response is not None:
            return response
        with self._lock:
            return self._route(request, method, path)

    def _route(self, request: Request, method: str, path: str) -> Response:
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


def _reset_connection(request: Request) -> Response:
    """Abort the request's TCP connection: closing a socket with SO_LINGER 0 sends a reset (RST).

    The descriptor is closed by ``dup2`` of a socket whose peer is already gone onto its number:
    werkzeug, which still holds the number, then fails to write its answer with a broken pipe, which
    it takes quietly as a dropped connection (a closed number would raise EBADF and log a traceback,
    and could meanwhile be handed to another thread's new socket).
    """
    sock = request.environ["werkzeug.socket"]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone, peer = socket.socketpair()
    try:
        os.dup2(gone.fileno(), sock.fileno())
    finally:
        gone.close()
        peer.close()
    return Response(status=500)  # never arrives: the pipe is broken


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


def closed_port() -> int:
    """A loopback port where nothing listens: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there
