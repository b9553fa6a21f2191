"""The SendGrid email backend against its double (tests/doubles/sendgrid.py), and the email it sends."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.sendgrid import SendGridEmail
from tests.builders.ports import email
from tests.doubles.sendgrid import SendGridDouble

EMAIL = email(text="Hello <team>,\n\nIt is here & it is fast.", unsubscribe="mailto:leave@pipewise.example")
EXTRA = {"sender_id": 4321, "suppression_group_id": 77}


def backend(double_or_url: SendGridDouble | str, token: str = "test-token", **extra: Any) -> SendGridEmail:
    host = double_or_url if isinstance(double_or_url, str) else double_or_url.url
    conn = Connection(conn_id="campaign_email", conn_type="http", host=host, password=token, extra=json.dumps({**EXTRA, **extra}))
    return SendGridEmail("campaign_email", conn)
