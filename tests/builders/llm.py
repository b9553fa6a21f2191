"""The chat-completions copy writer against its double (tests/doubles/openai_compat.py), and a brief."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.llm import ChatCompletionsWriter
from include.orchestrator.domain.ports import CopyBrief
from tests.doubles.openai_compat import OpenAICompatDouble

KEY = "test-token"
CHAT = r"/v1/chat/completions"


def connection(host: str, password: str | None = KEY, **extra: Any) -> Connection:
    return Connection(
        conn_id="campaign_writer",
        conn_type="http",
        host=host,
        password=password,
        extra=json.dumps({"model": "gpt-4o-mini", **extra}),
    )


def writer(double: OpenAICompatDouble, password: str | None = KEY, **extra: Any) -> ChatCompletionsWriter:
    return ChatCompletionsWriter("campaign_writer", connection(double.base_url, password, **extra))


def brief(**changes: Any) -> CopyBrief:
    base = {
        "campaign_name": "Spring Launch",
        "product_description": "Pipewise 3 watches every data pipeline and warns before one breaks.",
        "audience": "data engineers",
        "brand_voice": "Warm, direct, no jargon.\nSign-off: The Pipewise team",
        "channels": ["email", "social"],
        "research_headlines": ["FlowWatch: alerts for every DAG", "Datadoggo adds lineage"],
        "research_notes": ["Survey: 62% of teams learn about broken pipelines from users."],
        "writer_notes": "Stress the early warnings.",
        "call_to_action": "Start a free trial",
        "url": "https://example.com/pipewise",
    }
    return CopyBrief(**{**base, **changes})
