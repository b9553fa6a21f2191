"""The Notion notes backend against its double (tests/doubles/notion.py)."""

from __future__ import annotations

import json

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.notion import NotionNotes
from tests.doubles.notion import NotionDouble


def conn(url: str, ds: str, token: str = "test-token", **extra) -> Connection:
    return Connection(
        conn_id="campaign_notes", conn_type="http", host=url, password=token, extra=json.dumps({"data_source_id": ds, **extra})
    )


def notes(double: NotionDouble, ds: str, **kwargs) -> NotionNotes:
    return NotionNotes("campaign_notes", conn(double.url, ds, **kwargs))
