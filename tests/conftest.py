"""Test set-up: a private Airflow home, made before anything imports Airflow."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.stack import PROJECT, project_env

_HOME = Path(tempfile.mkdtemp(prefix="campaign-tests-airflow-"))
os.environ.update(
    {**project_env(_HOME), "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
)
os.environ.pop("CAMPAIGNS_DIR", None)


@pytest.fixture
def no_outside_world(monkeypatch):
    """Parsing must not look up a connection or a variable, nor open a socket (the DAG files' tests)."""

    def refuse(*args, **kwargs):
        raise AssertionError("touched the outside world while parsing")

    from airflow.sdk import Connection, Variable

    monkeypatch.setattr(Connection, "get", refuse)
    monkeypatch.setattr(Variable, "get", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the private Airflow home (for dag.test())."""
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return _HOME
