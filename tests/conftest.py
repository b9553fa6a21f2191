"""Test set-up: a private Airflow home, made before anything imports Airflow."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the private Airflow home (for dag.test())."""
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return _HOME
