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
    PermanentFetchError,
    PermanentServiceError,
    PermanentSmtpDeliveryError,
    Retryable,
    RetryableFetchError,
    RetryableServiceError,
    RetryableSmtpDeliveryError,
    ServiceError,
    SmtpDeliveryError,
    UncertainSmtpDeliveryError,
    UnsafeURLError,
    error_name,
)
from include.orchestrator.resilience.breakers import counts_as_failure


def kinds(exc: BaseException) -> set[str]:
    return {k.__name__ for k in (Retryable, Permanent, Irrevocable, MadeNothing) if isinstance(exc, k)}


def test_errors_module_imports_nothing_from_the_package() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("include")], imported


def test_service_errors_say_their_kind_by_class_and_read_as_before() -> None:
    busy = RetryableServiceError("Slack", "post", "HTTP 503", status=503, retry_after=4)
    assert kinds(busy) == {"Retryable"} and (busy.retryable, busy.retry_after, busy.status) == (True, 4, 503)
    assert str(busy) == "Slack: post failed: HTTP 503 (retryable, retry after 4 s)"
    ours = PermanentServiceError("GitHub", "open", "HTTP 422", status=422)
    assert kinds(ours) == {"Permanent"} and ours.retryable is False and str(ours) == "GitHub: open failed: HTTP 422"
    sent = IrrevocableServiceError("SendGrid", "undo", "sent")
    assert kinds(sent) == {"Permanent", "Irrevocable"}
    assert all(isinstance(e, ServiceError) for e in (busy, ours, sent))
    assert kinds(BufferNotFound("Buffer", "delete", "NOT_FOUND", status=200)) == {"Permanent"}
    # A raise site that learns the kind from the answer: the family's of().
    asked = ServiceError.of("Slack", "post", "HTTP 503", status=503, retryable=True, retry_after=4)
    assert type(asked) is RetryableServiceError and str(asked) == str(busy) and asked.retry_after == 4
    refused = ServiceError.of("GitHub", "open", "HTTP 422", status=422, retryable=False, code="invalid")
    assert type(refused) is PermanentServiceError and str(refused) == str(ours) and refused.code == "invalid"
    # The kind is the class: no flag to contradict it, and the family itself says no kind, so it is refused.
    with pytest.raises(TypeError):
        IrrevocableServiceError("SendGrid", "undo", "sent", retryable=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        BufferNotFound("Buffer", "delete", "NOT_FOUND", retryable=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="raise its Retryable or Permanent class"):
        ServiceError("Slack", "post", "HTTP 503")
    with pytest.raises(TypeError):
        FetchError("https://x.test/", "HTTP 503")
    with pytest.raises(TypeError):
        SmtpDeliveryError("421 try later")


def test_reports_and_ledger_entries_name_a_variant_by_its_family() -> None:
    """What ``error_name`` gives is what reports, ledger entries, XCom errors and logs print."""
    shown = {
        RetryableServiceError("Slack", "post", "HTTP 503"): "ServiceError",
        PermanentServiceError("Slack", "post", "HTTP 404"): "ServiceError",
        IrrevocableServiceError("SendGrid", "undo", "sent"): "ServiceError",
        RetryableFetchError("https://x.test/", "HTTP 503", 503): "FetchError",
        PermanentFetchError("https://x.test/", "not HTML"): "FetchError",
        RetryableSmtpDeliveryError("421 try later"): "SmtpDeliveryError",
        PermanentSmtpDeliveryError("550 no such user"): "SmtpDeliveryError",
        UncertainSmtpDeliveryError("no answer after DATA"): "SmtpDeliveryError",
        # Subclasses with a name of their own keep it, as they always did.
        CircuitOpenError("Slack", 1.0, datetime(2026, 1, 1, tzinfo=UTC)): "CircuitOpenError",
        BufferNotFound("Buffer", "delete", "NOT_FOUND"): "BufferNotFound",
        DeadlineExceeded("Slack", "slack.com", 3): "DeadlineExceeded",
        KeyError("k"): "KeyError",
    }
    assert {error: error_name(error) for error in shown} == shown
    # Tracebacks and type() still say which variant it is.
    assert type(RetryableServiceError("Slack", "post", "HTTP 503")).__name__ == "RetryableServiceError"


def test_an_open_circuit_is_retryable_and_made_nothing() -> None:
    opened = CircuitOpenError("Slack", 12.5, datetime(2026, 1, 1, tzinfo=UTC))
    assert kinds(opened) == {"Retryable", "MadeNothing"} and isinstance(opened, ServiceError)
    assert opened.retry_after == 12.5 and "tried again at 2026-01-01T00:00:00Z" in str(opened)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FetchError.of("https://x.test/", "HTTP 503", 503, retryable=True, retry_after=3.0), {"Retryable"}),
        (FetchError.of("https://x.test/", "HTTP 404", 404, retryable=False, retry_after=3.0), {"Permanent"}),
        (RetryableFetchError("https://x.test/", "timed out"), {"Retryable"}),
        (PermanentFetchError("https://x.test/", "not HTML"), {"Permanent"}),
        (RetryableSmtpDeliveryError("421 try later"), {"Retryable"}),
        (PermanentSmtpDeliveryError("550 no such user"), {"Permanent"}),
        (SmtpDeliveryError.of("421 try later", retryable=True), {"Retryable"}),
        (SmtpDeliveryError.of("550 no such user", retryable=False), {"Permanent"}),
        (UncertainSmtpDeliveryError("no answer after DATA"), {"Retryable"}),
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
    fetch = RetryableFetchError("https://x.test/", "HTTP 429", 429, retry_after=7.0)
    assert (fetch.retryable, fetch.retry_after, fetch.status) == (True, 7.0, 429) and str(fetch).endswith("(retryable)")
    assert not str(PermanentFetchError("https://x.test/", "HTTP 404", 404)).endswith("(retryable)")


def test_other_libraries_errors_count_by_their_own_flag() -> None:
    class Flaky(Exception):
        retryable = True

    class Refused(Exception):
        retryable = False

    assert counts_as_failure(Flaky()) and not counts_as_failure(Refused()) and not counts_as_failure(KeyError("k"))
    assert errors.retryable_flag(Refused()) is False and errors.retryable_flag(KeyError("k")) is None
