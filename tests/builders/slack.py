"""The Slack notifier against its double (tests/doubles/slack.py), and a review message."""

from __future__ import annotations

import json

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.slack import SlackNotifier
from include.orchestrator.domain.ports import Message
from tests.doubles.slack import SlackDouble

CHANNEL = "C0REVIEWS1"
HISTORY = r"/api/conversations\.history"
POST = r"/api/chat\.postMessage"
DELETE = r"/api/chat\.delete"


def conn(double: SlackDouble | None = None, *, base_url: str | None = None, **extra: object) -> Connection:
    settings = {"channel": CHANNEL, "base_url": base_url or (double.api_url if double else "http://127.0.0.1:9/api/"), **extra}
    token = double.token if double else "xoxb-test-token"
    return Connection(conn_id="slack_test", conn_type="slack", password=token, extra=json.dumps(settings))


def notifier(double: SlackDouble, **kwargs: object) -> SlackNotifier:
    return SlackNotifier("slack_test", conn(double, **kwargs))


def message(key: str = "spring-launch-r1a2b3-review-request") -> Message:
    return Message(
        key=key,
        to=["dana", "admin"],
        subject="Review needed: Spring <Launch> & more",
        text="Copy says <!channel> and <https://evil.example|click>.\nDecide within 1 day.",
        link="http://localhost:8080/dags/campaign_spring-launch/runs/r1?tab=details&x=1",
    )
