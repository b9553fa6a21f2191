"""A real Airflow on loopback for tests and benchmarks: api-server, scheduler, dag-processor.

Each component is its own process, as in production, sharing a private Airflow home and a
metadata DB (SQLite by default, PostgreSQL when given a URL). Users come from the simple auth
manager with known passwords. No triggerer: the approval gate waits in ``awaiting_input``, which
the scheduler and the API server drive without one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

PROJECT = Path(__file__).resolve().parents[1]
DAGS = PROJECT / "dags"  # the DAG folder Airflow parses
USERS = {"admin": "admin", "dana": "user", "eve": "user", "olga": "op"}  # name -> role; password = name


def project_env(home: Path) -> dict[str, str]:
    """What every Airflow of the tests shares: a private home, this project's DAGs and plugins."""
    return {
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": str(PROJECT),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "HF_HUB_OFFLINE": "1",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowStack:
    # The processes ``start`` runs (subclasses add theirs, e.g. the triggerer of tests/cluster.py).
    COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, env: dict[str, str] | None = None, db_url: str | None = None, parallelism: int = 8) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            **project_env(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "OPENBLAS_NUM_THREADS": "1",
            **(env or {}),
        }
        # SQLite: a writer waits up to 30 s for the lock, not pysqlite's 5 s (seen: a trigger failing
        # with "Database error" while the dag-processor and a dozen fresh runs wrote at once).
        self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = db_url or f"sqlite:///{home / 'airflow.db'}?timeout=30"
        self._tokens: dict[str, str] = {}

    # --- life cycle ----------------------------------------------------------------------
    def start(self, timeout: float = 180) -> AirflowStack:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({u: u for u in USERS}))
        migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, capture_output=True, text=True)
        if migrate.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}")
        from include.orchestrator.dev.localdev import import_pools

        import_pools(self.env)
        for name in self.COMPONENTS:
            log = (self.home / f"{name}.log").open("w")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._launched()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise RuntimeError(f"the api-server did not answer within {timeout} s; see {self.home}/api-server.log")

    def _launched(self) -> None:
        """Called once the components are started, before waiting for the API: subclasses start more here."""

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.home / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- REST ----------------------------------------------------------------------------
    def token(self, user: str) -> str:
        if user not in self._tokens:
            answer = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": user}, timeout=30)
            answer.raise_for_status()
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {d["dag_id"] for d in self.api("GET", "/api/v2/dags", params={"limit": 1000}).json()["dags"]}
            if set(dag_ids) <= found:
                return
            self._check_alive()
            time.sleep(2)
        raise RuntimeError(
            f"DAGs {sorted(set(dag_ids) - found)} not parsed within {timeout} s; see {self.home}/dag-processor.log"
        )

    def trigger(self, dag_id: str, user: str = "admin", conf: dict[str, Any] | None = None) -> str:
        """Trigger a run under a run id chosen here, so that a retry cannot trigger it twice.

        On a stalled machine SQLite's busy timeout can fail a POST with a 500 (seen once in a CI-style
        run, when every process stalled 35 s); the run then either exists or not, and we look first."""
        run_id = f"manual__{datetime.now(UTC).isoformat()}"  # the form Airflow itself generates
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        for attempt in range(3):
            answer = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", user, json=body)
            if answer.status_code == 200:
                return answer.json()["dag_run_id"]
            if answer.status_code < 500 or attempt == 2:
                break
            if self.api("GET", self.run_path(dag_id, run_id), user).status_code == 200:
                return run_id
            time.sleep(5)
        raise AssertionError(f"triggering {dag_id} answered {answer.status_code}: {answer.text}")

    @staticmethod
    def run_path(dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        answer = self.api("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}")
        return answer.json().get("state") if answer.status_code == 200 else None

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", self.run_path(dag_id, run_id)).json()["state"]

    def wait(self, predicate: Any, what: str, timeout: float = 300, interval: float = 1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self._check_alive()
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; logs in {self.home}")

    def wait_task(self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300) -> str:
        return self.wait(
            lambda: (s := self.task_state(dag_id, run_id, task_id)) in states and s, f"{task_id} in {states}", timeout
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        return self.wait(
            lambda: (s := self.run_state(dag_id, run_id)) in ("success", "failed") and s, f"run {run_id} to end", timeout
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        answer = self.api(
            "GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/{key}", params={"map_index": map_index}
        )
        return answer.json().get("value") if answer.status_code == 200 else None
