"""An SMTP connection to a server on loopback (the local SMTP server or a scripted one)."""

from __future__ import annotations

import json


def smtp_connection(port: int, **extra: object) -> str:
    """The connection as JSON, for ``AIRFLOW_CONN_<ID>``: plain SMTP (no SSL, no STARTTLS), no retries by the hook."""
    settings = {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0, **extra}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": settings})
