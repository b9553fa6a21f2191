"""Retries wait at least what a service asked for (Retry-After), through Airflow 3.3's retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from airflow.sdk.definitions.retry_policy import RetryAction

from include.orchestrator.airflow.dags import build_dag
from include.orchestrator.airflow.retry import RetryAfterPolicy
from include.orchestrator.backends.common.http_api import retry_after_seconds
from include.orchestrator.domain.model import Campaign
from include.orchestrator.errors import PermanentServiceError, RetryableServiceError, ServiceError
from tests.builders.campaigns import sample


def policy() -> RetryAfterPolicy:
    return RetryAfterPolicy(timedelta(seconds=10), timedelta(minutes=10))


def test_a_retry_waits_what_the_service_asked_when_that_is_longer_than_the_backoff():
    decision = policy().evaluate(
        RetryableServiceError("SendGrid", "send", "HTTP 429", status=429, retry_after=95), try_number=1, max_tries=3
    )
    assert decision.action == RetryAction.RETRY and decision.retry_delay == timedelta(seconds=95)
    assert "next try in 95 s" in decision.reason


def test_the_backoff_wins_when_the_service_asked_for_less():
    decision = policy().evaluate(
        RetryableServiceError("Slack", "post", "HTTP 503", status=503, retry_after=1), try_number=3, max_tries=4
    )
    assert decision.retry_delay == timedelta(seconds=40)  # 10 s doubled twice


def test_an_http_date_is_honoured_and_a_wrapped_error_is_found():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    asked = retry_after_seconds(when)
    assert asked is not None and 290 < asked <= 300
    try:
        try:
            raise RetryableServiceError("Figma", "export", "HTTP 429", status=429, retry_after=asked)
        except ServiceError as inner:
            raise RuntimeError("step failed") from inner
    except RuntimeError as outer:
        decision = policy().evaluate(outer, try_number=1, max_tries=3)
    assert decision.retry_delay >= timedelta(seconds=290)


def test_errors_without_a_wait_keep_airflows_own_retry_logic():
    assert policy().evaluate(TimeoutError("read timed out"), try_number=1, max_tries=3).action == RetryAction.DEFAULT
    not_retryable = PermanentServiceError("GitHub", "open", "HTTP 422", status=422)
    assert policy().evaluate(not_retryable, try_number=1, max_tries=3).action == RetryAction.DEFAULT


def test_every_campaign_task_carries_the_policy():
    dag = build_dag(Campaign.model_validate(sample()))
    assert all(isinstance(task.retry_policy, RetryAfterPolicy) for task in dag.tasks)
