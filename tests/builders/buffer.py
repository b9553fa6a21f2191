"""The Buffer social backend against its double (tests/doubles/buffer.py), and the post it sends."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.buffer import BufferSocial
from include.orchestrator.domain.ports import SocialPost
from tests.doubles.buffer import BufferDouble

POST = SocialPost(
    key="spring-launch-3f2a9c1b0d4e-social",
    profiles=["pipewise-x", "pipewise-linkedin"],
    text='Pipewise 3 is out: "observability" for data teams. https://pipewise.example/launch',
)
EXTRA = {"channels": {"pipewise-x": "chan-x", "pipewise-linkedin": "chan-li"}, "organization_id": "org-1"}


def backend(double_or_url: BufferDouble | str, token: str = "test-token", **extra: Any) -> BufferSocial:
    host = double_or_url if isinstance(double_or_url, str) else double_or_url.url
    conn = Connection(
        conn_id="campaign_social", conn_type="http", host=host, password=token, extra=json.dumps({**EXTRA, **extra})
    )
    return BufferSocial("campaign_social", conn)
