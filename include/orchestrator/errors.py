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

Three families decide per instance, from the status a service answered: :class:`ServiceError`,
:class:`FetchError` and :class:`SmtpDeliveryError` keep their ``retryable=`` constructor flag, and
constructing the family's class returns the subclass the flag names (``ServiceError(...,
retryable=True)`` is a :class:`RetryableServiceError`), so raise sites pass what they computed and
readers check the type. ``retryable`` remains readable (a class attribute of :class:`Retryable` and
:class:`Permanent`), ``retry_after`` too. An undo refused for good raises
:class:`IrrevocableServiceError` itself.

This module imports nothing from the package: every module (connections, backends, breakers) can
import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

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


_E = TypeVar("_E", bound=CampaignError)


def _variant(cls: type[_E], family: type[CampaignError], chosen: type[CampaignError], flags: dict[str, Any]) -> type[_E]:
    """The class to instantiate: the one the flags name when the family's own class is called;
    otherwise ``cls`` itself, refusing flags that contradict it."""
    if cls is family:
        return chosen  # type: ignore[return-value]
    if "retryable" in flags and bool(flags["retryable"]) != issubclass(cls, Retryable):
        raise TypeError(f"{cls.__name__} is {'' if issubclass(cls, Retryable) else 'not '}retryable")
    return cls


# --- connections --------------------------------------------------------------------------------


class ConnectionConfigError(Permanent):
    """A port's connection is missing or configured in a way no backend understands."""


# --- external services (backends/common/http_api.py and every service backend) ---------------------------


class ServiceError(CampaignError):
    """An external service refused a call or did not answer. ``retryable``: a later try can succeed.

    ``ServiceError(...)`` returns a :class:`RetryableServiceError` when ``retryable`` is true, else a
    :class:`PermanentServiceError`. An undo refused because the effect is out for good (an email
    sent) raises :class:`IrrevocableServiceError` itself.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ServiceError:
        chosen = RetryableServiceError if kwargs.get("retryable") else PermanentServiceError
        return super().__new__(_variant(cls, ServiceError, chosen, kwargs), *args)

    def __init__(
        self,
        service: str,
        action: str,
        reason: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        retryable = isinstance(self, Retryable)  # what __new__ chose from the flag
        hint = f" (retryable{f', retry after {retry_after:g} s' if retry_after is not None else ''})" if retryable else ""
        super().__init__(f"{service}: {action} failed: {reason}{hint}")
        self.service, self.action, self.reason = service, action, reason
        self.status, self.retry_after = status, retry_after
        self.code = code  # the service's own error code, when it has one (Slack's "channel_not_found")


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
            retryable=True,
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
    """A page could not be fetched or is not a usable HTML page.

    ``FetchError(...)`` returns a :class:`RetryableFetchError` when ``retryable`` is true (429, 5xx,
    timeouts, connection failures), else a :class:`PermanentFetchError`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> FetchError:
        flags = {"retryable": args[3]} if len(args) > 3 else kwargs  # retryable is the 4th parameter
        chosen = RetryableFetchError if flags.get("retryable") else PermanentFetchError
        return super().__new__(_variant(cls, FetchError, chosen, flags), *args)

    def __init__(
        self, url: str, reason: str, status: int | None = None, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"fetching {url!r} failed: {reason}" + (" (retryable)" if isinstance(self, Retryable) else ""))
        self.url = url
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429/503 Retry-After header


class RetryableFetchError(FetchError, Retryable):
    """The page's server is in trouble (429, 5xx), or did not answer in time or at all."""


class PermanentFetchError(FetchError, Permanent):
    """Not a usable page (another 4xx, not HTML, a redirect loop): fetching again gives the same."""


class SmtpDeliveryError(CampaignError):
    """The SMTP server did not take the email. ``retryable``: a later try can succeed (server
    down, timeout, 4xx answer); otherwise the configuration or the message must change first.

    ``SmtpDeliveryError(message, retryable=...)`` returns a :class:`RetryableSmtpDeliveryError` or a
    :class:`PermanentSmtpDeliveryError`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> SmtpDeliveryError:
        chosen = RetryableSmtpDeliveryError if kwargs.get("retryable") else PermanentSmtpDeliveryError
        return super().__new__(_variant(cls, SmtpDeliveryError, chosen, kwargs), *args)

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)


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


# A variant is named as its family (``ServiceError: Slack: post failed: ...``), as before the split, since
# reports, ledger entries, XCom errors and review-watch errors print ``type(exc).__name__``; its
# ``__qualname__`` stays its own, so ``type(exc)`` and tracebacks say which variant it is.
for _variant_class, _family in (
    (RetryableServiceError, ServiceError),
    (PermanentServiceError, ServiceError),
    (IrrevocableServiceError, ServiceError),
    (RetryableFetchError, FetchError),
    (PermanentFetchError, FetchError),
    (RetryableSmtpDeliveryError, SmtpDeliveryError),
    (PermanentSmtpDeliveryError, SmtpDeliveryError),
    (UncertainSmtpDeliveryError, SmtpDeliveryError),
):
    _variant_class.__name__ = _family.__name__
del _variant_class, _family
