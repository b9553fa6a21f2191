"""How a campaign's tasks retry: the campaign's backoff, and never sooner than a service asked (``Retry-After``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

from include.orchestrator.domain.model import Campaign
from include.orchestrator.errors import Retryable, retryable_flag


class RetryAfterPolicy(RetryPolicy):
    """A retry waits at least what the service asked for (``Retry-After``, or an open circuit's
    time to its next trial), and no less than the campaign's exponential backoff."""

    def __init__(self, delay: timedelta, max_delay: timedelta) -> None:
        self.delay, self.max_delay = delay, max_delay

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        asked = _retry_after(exception)
        if asked is None:
            return RetryDecision.default()
        backoff = min(self.delay * 2 ** max(0, try_number - 1), self.max_delay)
        wait = max(timedelta(seconds=asked), backoff)
        return RetryDecision.retry(wait, reason=f"{exception} -> next try in {wait.total_seconds():g} s")


def _retry_after(exc: BaseException | None) -> float | None:
    """The wait a service asked for, from the error or what caused it."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return float(exc.retry_after)
        if retryable_flag(exc) and (asked := getattr(exc, "retry_after", None)) is not None:  # another library's error
            return float(asked)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def default_args(campaign: Campaign) -> dict[str, Any]:
    return {
        "owner": campaign.owner,  # the DAG list shows it
        "retries": campaign.retries.count,
        "retry_delay": campaign.retries.delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": campaign.retries.max_delay,
        "retry_policy": RetryAfterPolicy(campaign.retries.delay, campaign.retries.max_delay),
        "execution_timeout": timedelta(minutes=15),
    }
