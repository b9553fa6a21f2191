"""The Qdrant server memory backend's connection to its double (tests/doubles/qdrant_server.py)."""

from __future__ import annotations

import json

from airflow.sdk import Connection

KEY = "test-token"
EXISTS = r"/collections/campaign_memory/exists"


def connection(host: str, password: str | None = KEY, **extra: object) -> Connection:
    return Connection(conn_id="campaign_memory", conn_type="qdrant", host=host, password=password, extra=json.dumps(extra))
