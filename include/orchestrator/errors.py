"""Every error of the package, in one hierarchy whose types say what a caller must do.

The decisions made on errors elsewhere read these types, never attributes (an exception of another
library is still judged by its own ``retryable`` attribute, if it has one: :func:`retryable_flag`):

- :class:`Retryable`: a later try can succeed (timeouts, refused connections, 429, 5xx, an open
  circuit). ``CampaignStep`` (``airflow/operators.py``) lets Airflow retry it,
  ``RetryAfterPolicy`` (``airflow/retry.py``) waits at least its ``retry_after`` (seconds the
  service asked for, or None), and ``breakers`` counts it as a failure of the service (nothing
  else counts).
- :class:`Permanent`: a retry cannot fix it (a 4xx, a refused URL, a missing connection):
  ``CampaignStep`` fails the task at once (so does every ``ValueError``).
- :class:`Irrevocable` (a :class:`Permanent`): an undo refused because the effect is out for good
  (an email sent, a post published): ``saga.compensate`` settles the entry as kept, never retries it.
- :class:`MadeNothing`: the call provably was not made (an open circuit): ``saga.Journaled``
  records the planned effect as not made, so compensation has nothing to undo.

Any other error (a :class:`CampaignError` of none of these kinds, or a foreign exception) is left to
Airflow's retries as configured, and fails compensation's undo of its entry, which stays open.

Three families have one class per kind: :class:`ServiceError` (:class:`RetryableServiceError`,
:class:`PermanentServiceError`, :class:`IrrevocableServiceError`), :class:`FetchError` and
:class:`SmtpDeliveryError` (``Retryable...`` and ``Permanent...``). A raise site names the one it
means; one that learns it from the service's answer calls the family's ``of(..., retryable=...)``.
Readers catch the family and check the kind by type. ``retryable`` remains readable (a class
attribute of :class:`Retryable` and :class:`Permanent`), ``retry_after`` too. Reports, ledger
entries and logs name an error by :func:`error_name`, which calls every variant by its family's
name, as they did before the families were split (``ServiceError: Slack: post failed: ...``).

This module imports nothing from the package: every module (connections, backends, breakers) can
import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

# --- what a caller must do --------------------------------------------------------------------


class CampaignError(Exception):
    """Base of the package's own error classes (it also raises plain ``ValueError``, ``RuntimeError``...)."""


class Retryable(CampaignError):
    """A later try can succeed. ``retry_after``: the seconds the service asked to wait, or None."""

    retryable = True  # the old attribute, for readers of messages and tests; decisions check the type
    retry_after: float | None = None


class Permanent(CampaignError):
    """A retry cannot fix it: the configuration, the input or the request must change first."""

    retryable = False


class Irrevocable(Permanent):
    """An undo refused: the effect happened and cannot be pulled back (an email sent). Report it, never retry."""


class MadeNothing(CampaignError):
    """The call was provably not made: it created nothing, so compensation has nothing to undo."""


class OutcomeUnknown(CampaignError):
    """The request went out whole and its answer never came (a timeout, a dropped connection): the
    effect may have been made. The ledger keeps the entry planned, so no retry makes it again."""


def retryable_flag(exc: BaseException) -> Any:
    """The ``retryable`` attribute of an exception from outside the package, else None.

    The package's errors are judged by their type; an exception of another library (or a test's
    transport) may still say ``retryable = True/False``, which breakers and the operators (``airflow/operators.py``) honour as
    they always have.
    """
    return None if isinstance(exc, CampaignError) else getattr(exc, "retryable", None)


def _kind_of(error: CampaignError) -> None:
    """Refuse to make a family's own class: it would say neither Retryable nor Permanent."""
    if not isinstance(error, Retryable | Permanent):
        raise TypeError(f"{type(error).__name__} is a family: raise its Retryable or Permanent class, or its of()")


# --- connections --------------------------------------------------------------------------------


class ConnectionConfigError(Permanent):
    """A port's connection is missing or configured in a way no backend understands."""


# --- external services (backends/common/http_api.py and every service backend) ---------------------------


class ServiceError(CampaignError):
    """An external service refused a call or did not answer (the family: catch it, never raise it).

    Raise :class:`RetryableServiceError` (a later try can succeed), :class:`PermanentServiceError`,
    or :class:`IrrevocableServiceError` (an undo refused because the effect is out for good, an
    email sent); :meth:`of` when the service's answer decides which.
    """

    def __init__(
        self,
        service: str,
        action: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        _kind_of(self)
        retryable = isinstance(self, Retryable)
        hint = f" (retryable{f', retry after {retry_after:g} s' if retry_after is not None else ''})" if retryable else ""
        super().__init__(f"{service}: {action} failed: {reason}{hint}")
        self.service, self.action, self.reason = service, action, reason
        self.status, self.retry_after = status, retry_after
        self.code = code  # the service's own error code, when it has one (Slack's "channel_not_found")

    @staticmethod
    def of(
        service: str,
        action: str,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> ServiceError:
        """A :class:`RetryableServiceError` when ``retryable``, else a :class:`PermanentServiceError`."""
        kind = RetryableServiceError if retryable else PermanentServiceError
        return kind(service, action, reason, status=status, retry_after=retry_after, code=code)


class RetryableServiceError(ServiceError, Retryable):
    """The service's trouble: a timeout, a refused connection, 429, 5xx (or what a backend knows to be transient)."""


class PermanentServiceError(ServiceError, Permanent):
    """Our mistake as the service sees it (a 4xx other than 429, an answer we cannot use)."""


class IrrevocableServiceError(PermanentServiceError, Irrevocable):
    """An undo the service cannot do: the effect is out for good (a Single Send delivered, a post published)."""


class BufferNotFound(PermanentServiceError):
    """Buffer says the post (or channel) does not exist (``NOT_FOUND``)."""


class CircuitOpenError(RetryableServiceError, MadeNothing):
    """The service's breaker is open: the call was not made. Retryable after ``retry_after`` seconds."""

    def __init__(self, service: str, retry_after: float, retry_at: datetime) -> None:
        when = retry_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(
            service,
            "call",
            f"circuit breaker open after repeated failures, call not made; {service} is tried again at {when}",
            retry_after=retry_after,
        )
        self.retry_at = retry_at


class DeadlineExceeded(Retryable, TimeoutError):
    """A call did not complete (connect, headers and body) within its deadline. Always retryable."""

    def __init__(self, service: str, host: str, seconds: float) -> None:
        self.service, self.host, self.seconds = service, host, seconds
        self.reason = f"no answer within {seconds:g} s from {host} (the total deadline: connect, headers and body together)"
        super().__init__(f"{service}: {self.reason}")


class UnsafeURLError(Permanent, ValueError):
    """A URL or address the guard refuses. Never worth retrying: the answer will not change."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


class FetchError(CampaignError):
    """A page could not be fetched or is not a usable HTML page (the family: catch it, never raise it).

    Raise :class:`RetryableFetchError` (429, 5xx, timeouts, connection failures) or
    :class:`PermanentFetchError`; :meth:`of` when the status decides which.
    """

    def __init__(self, url: str, reason: str, status: int | None = None, *, retry_after: float | None = None) -> None:
        _kind_of(self)
        super().__init__(f"fetching {url!r} failed: {reason}" + (" (retryable)" if isinstance(self, Retryable) else ""))
        self.url = url
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429/503 Retry-After header

    @staticmethod
    def of(url: str, reason: str, status: int | None = None, *, retryable: bool, retry_after: float | None = None) -> FetchError:
        """A :class:`RetryableFetchError` when ``retryable``, else a :class:`PermanentFetchError`."""
        kind = RetryableFetchError if retryable else PermanentFetchError
        return kind(url, reason, status, retry_after=retry_after)


class RetryableFetchError(FetchError, Retryable):
    """The page's server is in trouble (429, 5xx), or did not answer in time or at all."""


class PermanentFetchError(FetchError, Permanent):
    """Not a usable page (another 4xx, not HTML, a redirect loop): fetching again gives the same."""


class SmtpDeliveryError(CampaignError):
    """The SMTP server did not take the email (the family: catch it, never raise it).

    Raise :class:`RetryableSmtpDeliveryError` (a later try can succeed: server down, timeout, 4xx
    answer) or :class:`PermanentSmtpDeliveryError` (the configuration or the message must change
    first); :meth:`of` when the failure decides which.
    """

    def __init__(self, message: str) -> None:
        _kind_of(self)
        super().__init__(message)

    @staticmethod
    def of(message: str, *, retryable: bool) -> SmtpDeliveryError:
        """A :class:`RetryableSmtpDeliveryError` when ``retryable``, else a :class:`PermanentSmtpDeliveryError`."""
        return RetryableSmtpDeliveryError(message) if retryable else PermanentSmtpDeliveryError(message)


class RetryableSmtpDeliveryError(SmtpDeliveryError, Retryable):
    """The server is down, timed out, or answered 4xx: try later."""


class PermanentSmtpDeliveryError(SmtpDeliveryError, Permanent):
    """The server answered 5xx, or TLS/AUTH cannot work: fix the connection or the message."""


class UncertainSmtpDeliveryError(RetryableSmtpDeliveryError, OutcomeUnknown):
    """The server had the whole message and its answer never came: it may have taken it. The task
    is retried for the other batches; this one is not sent again."""


class GitError(CampaignError, RuntimeError):
    """A git command failed; the message carries git's own error output."""


class MemoryLockTimeout(CampaignError, TimeoutError):
    """Another process or thread held the memory store for longer than the lock timeout."""


class EmbeddingModelError(CampaignError, RuntimeError):
    """The bundled model is missing, corrupt, or not the expected all-MiniLM-L6-v2."""


# --- campaign files and values ------------------------------------------------------------------


class CredentialsInUrl(Permanent, ValueError):
    """A URL with a user name or password in it. Its error never repeats the value (it holds a secret)."""


@dataclass(frozen=True)
class CampaignFileError:
    """The problems of one campaign file (one entry of :class:`CampaignFilesInvalid`; not an exception)."""

    path: Path
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}:\n" + "\n".join(f"  - {p}" for p in self.problems)


class CampaignFilesInvalid(CampaignError):
    """Raised by the error-reporting DAG file so Airflow shows every bad campaign file.

    The text starts with the first file, its fields and their problems; how many files are
    invalid comes last.
    """

    def __init__(self, errors: list[CampaignFileError]):
        self.errors = errors
        count = len(errors)
        tail = (
            "1 campaign file is invalid: its DAG is not loaded"
            if count == 1
            else f"{count} campaign files are invalid: their DAGs are not loaded"
        )
        super().__init__("\n".join(str(e) for e in errors) + f"\n({tail}; the other campaigns are.)")


class CampaignFieldError(Permanent, ValueError):
    """A campaign value refused outside the model (e.g. by Airflow when building its DAG), naming the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")


# --- runs: steps, approval, saga ----------------------------------------------------------------


class NotThisRun(CampaignError):
    """This mapped item is not part of the run (a channel left out by the trigger conf)."""


class NotApproved(Permanent, ValueError):
    """What a channel is about to send is not what the approval pinned: nothing is sent (a retry cannot fix it)."""


class DecisionRefused(CampaignError):
    """A decision that may not be taken; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _OnDisk(Protocol):
    @property
    def disk(self) -> str: ...


class NotVisibleHere(CampaignError):
    """The effect lives on a local disk this worker does not have: from here it can be neither removed
    nor proved gone, so it stays open (a retry may run where the disk is) and is reported as left."""

    def __init__(self, effect: _OnDisk, here: str) -> None:
        host = effect.disk.partition("/")[0]
        super().__init__(
            f"made on the local disk {effect.disk} (host {host}), which this worker does not see "
            f"({'its disk is ' + here if here else 'its backend keeps nothing on a local disk'}); "
            f"remove it there by hand, or clear compensation.undo so that it runs on that host"
        )


class LaunchTaken(Permanent, ValueError):
    """Another run of the campaign holds this launch: this run must make nothing (a retry cannot fix it)."""

    def __init__(self, slug: str, launch: str, holder: str, since: datetime) -> None:
        how = (
            "a run with the same conf"
            if launch.startswith("conf ")
            else f"launch {launch.removeprefix('named ')!r}"
            if launch.startswith("named ")
            else launch
        )
        super().__init__(
            f"campaign {slug!r}: {how} is already taken by run {holder!r} (since {since:%Y-%m-%d %H:%M} UTC), so this "
            "run would send the same email, posts and blog post again; it made nothing. The launch is free again "
            'once that run is rolled back; to send the campaign again on purpose, trigger with conf {"launch": "<a new name>"}'
        )
        self.holder = holder


# What reports, ledger entries, XCom errors, review-watch errors and logs call an error (:func:`error_name`):
# a family's variants by the family's name, as before the families were split into classes.
_FAMILY_NAMES: dict[type[BaseException], str] = {
    RetryableServiceError: "ServiceError",
    PermanentServiceError: "ServiceError",
    IrrevocableServiceError: "ServiceError",
    RetryableFetchError: "FetchError",
    PermanentFetchError: "FetchError",
    RetryableSmtpDeliveryError: "SmtpDeliveryError",
    PermanentSmtpDeliveryError: "SmtpDeliveryError",
    UncertainSmtpDeliveryError: "SmtpDeliveryError",
}


def error_name(exc: BaseException) -> str:
    """The name an error is shown by (``ServiceError: Slack: post failed: ...``): its class's, except
    the variants of a family, shown as the family (a subclass with a name of its own, such as
    :class:`CircuitOpenError` or :class:`BufferNotFound`, keeps it)."""
    return _FAMILY_NAMES.get(type(exc), type(exc).__name__)
