"""Reading one Airflow connection: fetching it, the local folder it names, its boolean extras.

At the package's top level, below every layer that reads a connection: the backends, the
breakers, the asset store and the ledger read theirs through this module, which imports nothing
of the package but its errors (in ``backends/`` it made the breakers and the saga depend on the
backends layer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from include.orchestrator.errors import ConnectionConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # holds dags/ and include/ (the Astro project)


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def local_path(conn_id: str, conn: Any) -> Path:
    """The folder of a local (``fs``) backend: the ``path`` extra, relative to ``$AIRFLOW_HOME`` or,
    with ``"relative_to": "project"``, to the project folder."""
    raw = conn.extra_dejson.get("path") or conn.host
    if not raw:
        raise ConnectionConfigError(f"connection {conn_id!r} (type fs) needs the extra 'path': the folder of its local backend")
    path = Path(raw).expanduser()
    base = PROJECT_ROOT if conn.extra_dejson.get("relative_to") == "project" else airflow_home()
    return path if path.is_absolute() else base / path


def flag(conn: Any, name: str) -> bool:
    """A boolean extra, as JSON or as text ("true", "1", "yes")."""
    value = conn.extra_dejson.get(name, False)
    return value is True or str(value).lower() in ("true", "1", "yes")


def get_connection(conn_id: str) -> Any:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        raise ConnectionConfigError(
            f"connection {conn_id!r} is not defined: add it to airflow_settings.yaml (or set "
            f"AIRFLOW_CONN_{conn_id.upper()}); see the README's connection table"
        ) from None
