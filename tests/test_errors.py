"""The error hierarchy: what each error's type says a caller must do, and the per-instance families."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.orchestrator import errors
from include.orchestrator.errors import (
    BufferNotFound,
    CircuitOpenError,
    ConnectionConfigError,
    DeadlineExceeded,
    FetchError,
    Irrevocable,
    IrrevocableServiceError,
    MadeNothing,
    MemoryLockTimeout,
    Permanent,
    Retryable,
    ServiceError,
    SmtpDeliveryError,
    UnsafeURLError,
)
from include.orchestrator.resilience.breakers import counts_as_failure


def kinds(exc: BaseException) -> set[str]:
    return {k.__name__ for k in (Retryable, Permanent, Irrevocable, MadeNothing) if isinstance(exc, k)}


def test_errors_module_imports_nothing_from_the_package() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("include")], imported


def test_service_errors_are_the_variant_their_flags_name_and_read_as_before() -> None:
    busy = ServiceError("Slack", "post", "HTTP 503", status=503, retryable=True, retry_after=4)
    assert kinds(busy) == {"Retryable"} and (busy.retryable, busy.retry_after, busy.status) == (True, 4, 503)
    assert str(busy) == "Slack: post failed: HTTP 503 (retryable, retry after 4 s)"
    assert type(busy).__name__ == "ServiceError"  # reports and ledger entries print this
    ours = ServiceError("GitHub", "open", "HTTP 422", status=422)
    assert kinds(ours) == {"Permanent"} and ours.retryable is False and str(ours) == "GitHub: open failed: HTTP 422"
    sent = IrrevocableServiceError("SendGrid", "undo", "sent")
    assert kinds(sent) == {"Permanent", "Irrevocable"}
    assert all(isinstance(e, ServiceError) for e in (busy, ours, sent))
    assert kinds(BufferNotFound("Buffer", "delete", "NOT_FOUND", status=200)) == {"Permanent"}
    with pytest.raises(TypeError):
        IrrevocableServiceError("SendGrid", "undo", "sent", retryable=True)
    with pytest.raises(TypeError):
        BufferNotFound("Buffer", "delete", "NOT_FOUND", retryable=True)


def test_an_open_circuit_is_retryable_and_made_nothing() -> None:
    opened = CircuitOpenError("Slack", 12.5, datetime(2026, 1, 1, tzinfo=UTC))
    assert kinds(opened) == {"Retryable", "MadeNothing"} and isinstance(opened, ServiceError)
    assert opened.retry_after == 12.5 and "tried again at 2026-01-01T00:00:00Z" in str(opened)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FetchError("https://x.test/", "HTTP 503", 503, True, 3.0), {"Retryable"}),
        (FetchError("https://x.test/", "HTTP 404", 404, False, 3.0), {"Permanent"}),
        (FetchError("https://x.test/", "timed out", retryable=True), {"Retryable"}),
        (FetchError("https://x.test/", "not HTML"), {"Permanent"}),
        (SmtpDeliveryError("421 try later", retryable=True), {"Retryable"}),
        (SmtpDeliveryError("550 no such user", retryable=False), {"Permanent"}),
        (DeadlineExceeded("Slack", "slack.com", 3), {"Retryable"}),
        (ConnectionConfigError("no connection"), {"Permanent"}),
        (UnsafeURLError("http://169.254.169.254/", "metadata"), {"Permanent"}),
        (MemoryLockTimeout("held"), set()),  # left to Airflow's retries, not the service's trouble
    ],
)
def test_each_error_says_what_to_do(error: Exception, expected: set[str]) -> None:
    assert kinds(error) == expected
    assert counts_as_failure(error) is ("Retryable" in expected)


def test_builtin_bases_are_kept() -> None:
    assert isinstance(DeadlineExceeded("s", "h", 1), TimeoutError) and isinstance(MemoryLockTimeout("x"), TimeoutError)
    assert isinstance(UnsafeURLError("u", "r"), ValueError)
    fetch = FetchError("https://x.test/", "HTTP 429", 429, True, 7.0)
    assert (fetch.retryable, fetch.retry_after, fetch.status) == (True, 7.0, 429) and str(fetch).endswith("(retryable)")


def test_other_libraries_errors_count_by_their_own_flag() -> None:
    class Flaky(Exception):
        retryable = True

    class Refused(Exception):
        retryable = False

    assert counts_as_failure(Flaky()) and not counts_as_failure(Refused()) and not counts_as_failure(KeyError("k"))
    assert errors.retryable_flag(Refused()) is False and errors.retryable_flag(KeyError("k")) is None
