"""A total deadline for every outbound HTTP and SMTP call: connect, headers and body together.

Every HTTP library here has only per-operation timeouts (requests/urllib3, httpx/httpcore,
urllib/http.client, botocore): each connect or read may take that long, so a peer that sends one
byte just before each read times out is never stopped. A competitor page trickling one header byte
every 0.5 s held a task (and its pool slot) past a 3 s timeout until the task itself was killed.

``with within(seconds, service, url):`` around a call bounds it. A watchdog timer starts with the
block; every socket the calling thread creates or connects inside it is remembered, and at the
deadline the watchdog shuts them down (``shutdown(SHUT_RDWR)`` wakes a blocked ``recv`` or
``connect`` in the other thread at once; closing the fd would not). The block then raises
:class:`DeadlineExceeded`, a retryable error naming the service, the host and the deadline, in
place of whatever the library made of the dead socket (a reset, an EOF, a short body).

The sockets are found through Python's audit events ``socket.__new__`` and ``socket.connect``
(PEP 578), raised by the ``socket`` module whichever library drives it: http.client (slack_sdk),
urllib3 (requests: HttpHook, PyGithub), httpcore (httpx: the page fetch, qdrant-client), smtplib. That is
why one mechanism serves every client, including those whose transport we cannot replace. TLS
sockets are new socket objects wrapping the connected fd, so they are caught by ``__new__``. A
kept-alive socket made under an earlier deadline of the same thread is remembered too, so a pooled
connection (PyGithub, qdrant-client keep theirs) is shut down as well; an idle one is simply
reopened next time.

Not covered: name resolution (``getaddrinfo`` is not interruptible; the system resolver's own
timeouts bound it) and sockets other threads open (e.g. fsspec's event loop for S3, see
``backends/assets.py``).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from include.orchestrator.errors import DeadlineExceeded

_local = threading.local()  # .scope: this thread's innermost open deadline; .sockets: what it made under one
_lock = threading.Lock()  # the watchdog reads a thread's socket set while that thread may add to it
_installed = False


def host_of(url: str) -> str:
    """The host a URL names (what errors show: never the path or query, which may carry tokens)."""
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audit event of the process: keep the common path to two comparisons.
    if event != "socket.__new__" and event != "socket.connect":
        return
    scope = getattr(_local, "scope", None)
    if scope is not None:
        if scope.fired and event == "socket.connect":
            # Past the deadline the watchdog has run: a connection opened now would not be shut, so
            # none is opened (an audit hook's exception aborts the connect).
            raise DeadlineExceeded(scope.service, host_of(scope.url), scope.seconds)
        try:
            with _lock:
                scope.sockets.add(args[0])
        except TypeError:  # not weak-referenceable (a bare _socket.socket): cannot be tracked
            pass


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_audit)  # audit hooks cannot be removed: installed once, idle outside a deadline
            _installed = True


class Deadline:
    """One call's deadline; use :func:`within`. ``url`` may be moved on (a redirect) for the error message."""

    def __init__(self, seconds: float, service: str, url: str) -> None:
        if seconds <= 0:
            raise ValueError(f"{service}: a deadline must be positive, got {seconds!r}")
        self.seconds, self.service, self.url = float(seconds), service, url
        self.fired = False

    def remaining(self) -> float:
        return max(0.0, self.ends_at - time.monotonic())

    def __enter__(self) -> Deadline:
        _install()
        if not hasattr(_local, "sockets"):
            _local.sockets = weakref.WeakSet()
        self.sockets: weakref.WeakSet[Any] = _local.sockets
        self._outer = getattr(_local, "scope", None)
        self.ends_at = time.monotonic() + self.seconds
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        _local.scope = self
        return self

    def _expire(self) -> None:
        self.fired = True
        with _lock:
            sockets = list(self.sockets)
        for sock in sockets:
            try:
                if sock.fileno() != -1:
                    # The base method: SSLSocket.shutdown would also drop its SSL object under the reader's feet.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # not connected (yet), or closed meanwhile
                pass

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self._timer.cancel()
        _local.scope = self._outer
        if isinstance(exc, DeadlineExceeded) or (exc is not None and not isinstance(exc, Exception)):
            return False  # an inner deadline's own error, or KeyboardInterrupt/SystemExit: pass through
        # A library may turn a shut socket into a short "successful" body: the deadline wins either way.
        if self.fired or (exc is not None and time.monotonic() >= self.ends_at):
            raise DeadlineExceeded(self.service, host_of(self.url), self.seconds) from exc
        return False


def within(seconds: float, service: str, url: str) -> Deadline:
    """A total deadline of ``seconds`` for the calls made inside the ``with`` block (see the module docstring)."""
    return Deadline(seconds, service, url)
