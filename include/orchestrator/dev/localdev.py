"""Local development: `make demo` and `make up` on the embedded backends.

Connections come from ``airflow_settings.yaml`` (the Astro CLI file) as ``AIRFLOW_CONN_*``
environment variables, so the demo, the UI and Astro all read one definition. The demo starts the
two loopback servers the sample campaign needs (an SMTP server and the competitor pages), seeds
memory, runs ``airflow dags test``, approves the run as a reviewer would once it waits at the
gate, and prints where every artifact went.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from include.orchestrator.backends.registry import backend_for
from include.orchestrator.connections import PROJECT_ROOT, airflow_home
from include.orchestrator.domain import tasks

SETTINGS = PROJECT_ROOT / "airflow_settings.yaml"
DEMO_CAMPAIGN = "spring-launch"
DEMO_SITE = PROJECT_ROOT / "include" / "demo_site"
DEMO_SITE_PORT = 8808
SEED = PROJECT_ROOT / "include" / "memory_seed"


def settings_connections(path: Path = SETTINGS) -> dict[str, dict[str, Any]]:
    """Connections of airflow_settings.yaml in Airflow's JSON connection form, by conn_id."""
    data = yaml.safe_load(path.read_text())
    conns = {}
    for item in data["airflow"]["connections"]:
        conn = {"conn_type": item["conn_type"]}
        for key in ("host", "port", "login", "schema", "description"):
            if item.get(f"conn_{key}") not in (None, ""):
                conn[key] = item[f"conn_{key}"]
        if item.get("conn_extra"):
            conn["extra"] = item["conn_extra"]
        conns[item["conn_id"]] = conn
    return conns


def import_pools(env: dict[str, str], path: Path = SETTINGS) -> None:
    """Create (or resize) the pools of airflow_settings.yaml in the Airflow of ``env``: a task in a
    pool that does not exist is never scheduled."""
    pools = {
        p["pool_name"]: {"slots": p["pool_slot"], "description": p.get("pool_description", ""), "include_deferred": False}
        for p in yaml.safe_load(path.read_text())["airflow"].get("pools") or []
    }
    target = Path(env.get("AIRFLOW_HOME", airflow_home())) / "campaign-pools.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(pools))
    command = [sys.executable, "-m", "airflow", "pools", "import", str(target)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"airflow pools import failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def connection_env(conns: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in conns.items()}


def sdk_connection(conn_id: str, conn: dict[str, Any]) -> Any:
    from airflow.sdk import Connection

    return Connection(
        conn_id=conn_id,
        conn_type=conn["conn_type"],
        host=conn.get("host"),
        port=conn.get("port"),
        extra=json.dumps(conn.get("extra", {})),
    )


def seed_memory(conns: dict[str, dict[str, Any]]) -> int:
    """Remember the brand voices and past research of include/memory_seed (idempotent)."""
    memory = backend_for("memory", "campaign_memory", sdk_connection("campaign_memory", conns["campaign_memory"]))
    return sum(len(memory.seed_from_folder(folder.name, folder)) for folder in sorted(SEED.iterdir()) if folder.is_dir())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the demo output short
        pass


def serve_demo_site(port: int = 0) -> http.server.ThreadingHTTPServer:
    """The demo's competitor pages on 127.0.0.1 (port 0: any free port), served from a thread."""
    site = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_QuietHandler, directory=str(DEMO_SITE)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


@contextlib.contextmanager
def demo_servers(conns: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The loopback SMTP server of campaign_email and the competitor pages, while in the block."""
    from include.orchestrator.dev.smtp_server import LocalSmtpServer

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command

    maildir = airflow_home() / "campaign_data" / "smtp-maildir"
    try:
        site = serve_demo_site(DEMO_SITE_PORT)
    except OSError as exc:
        raise SystemExit(f"cannot serve the demo competitor pages on 127.0.0.1:{DEMO_SITE_PORT}: {exc}") from None
    smtp_port = int(conns["campaign_email"].get("port", 2525))
    try:
        with LocalSmtpServer(maildir, port=smtp_port) as smtp:
            yield {"maildir": maildir, "smtp": smtp, "site": f"http://127.0.0.1:{DEMO_SITE_PORT}/"}
    finally:
        site.shutdown()


def _env() -> dict[str, str]:
    # standalone starts its components as `airflow ...`: this environment's bin comes first.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path}


def _waiting_run(dag_id: str) -> str | None:
    """The newest run of the DAG, once its approval gate waits for input."""
    from include.orchestrator.airflow.compat import DagRun, TaskInstance, create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        if run is None:
            return None
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id, task_id=tasks.GATE).one_or_none()
        return run.run_id if ti is not None and ti.state == "awaiting_input" else None


def record_decision(dag_id: str, run_id: str, decision: str, by: str, reason: str) -> str:
    """Decide in-process, through the same checks as the decision API (``make demo``, dag.test tests)."""
    from include.orchestrator.airflow.compat import create_session
    from include.orchestrator.approval.decisions import DecisionRequest, decide

    with create_session() as session:
        record = decide(
            session,
            dag_id=dag_id,
            run_id=run_id,
            user_id=by,
            user_name=by,
            roles=[],
            request=DecisionRequest(decision=decision, reason=reason),
            means="in-process",
        )
    return record.summary()


def run_summary(dag_id: str, run_id: str) -> tuple[str, list[dict[str, Any]]]:
    """Final state of a run and, per task instance, its state and result (from XCom)."""
    from include.orchestrator.airflow.compat import DagRun, TaskInstance, XComModel, create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        xcoms = {
            (x.task_id, x.map_index): x.value
            for x in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, key="return_value")
        }
        rows = []
        for ti in sorted(tis, key=lambda t: (t.start_date or run.start_date, t.task_id, t.map_index)):
            value = xcoms.get((ti.task_id, ti.map_index))
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            rows.append(
                {
                    "task": ti.task_id + (f"[{ti.rendered_map_index or ti.map_index}]" if ti.map_index >= 0 else ""),
                    "state": str(ti.state),
                    "seconds": round(ti.duration or 0, 2),
                    "value": value,
                }
            )
        return str(run.state), rows


def _describe(row: dict[str, Any]) -> str:
    return " ".join(_result_text(row).split())[:110]


def _result_text(row: dict[str, Any]) -> str:
    value = row["value"] if isinstance(row["value"], dict) else {}
    if "decision" in value:  # the approval gate's decision record
        from include.orchestrator.approval.rules import Decision

        return Decision.model_validate(value).summary()
    if "status" in value and "reason" in value:  # compensation.report: how the run ended
        from include.orchestrator.saga.outcome import Report

        return Report.model_validate(value).summary().splitlines()[0]
    effects = value.get("effects") or []
    if effects:
        return "; ".join(e.get("summary") or json.dumps(e["ref"]) for e in effects)
    result = value.get("result")
    if isinstance(result, list):
        return f"{len(result)} item(s)"
    if isinstance(result, dict):
        return ", ".join(f"{k}={v}" for k, v in list(result.items())[:3])[:160]
    return ""


def demo(slug: str = DEMO_CAMPAIGN, timeout: float = 600) -> int:
    conns = settings_connections()
    dag_id = f"campaign_{slug}"
    log_path = airflow_home() / "demo-dags-test.log"
    started = time.monotonic()
    with demo_servers(conns) as servers:
        os.environ.update(connection_env(conns))
        print(f"Seeded memory with {seed_memory(conns)} brand voice and research entries.")
        # Each demo sends on purpose: a launch of its own (the same conf twice would be refused as a mistake).
        launch = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        print(f"Running {dag_id}, launch {launch!r}, with `airflow dags test` (log: {log_path}) ...")
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow", "dags", "test", "--conf", json.dumps({"launch": launch}), dag_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
            run_id, decided = None, False
            while proc.poll() is None:
                if time.monotonic() - started > timeout:
                    proc.terminate()
                    raise SystemExit(f"the demo run took longer than {timeout} s; see {log_path}")
                waiting = None if decided else _waiting_run(dag_id)
                if waiting:
                    run_id = waiting
                    outbox = Path(conns["campaign_notify"]["extra"]["path"])
                    print(f"Run {run_id} waits for approval; review request in {airflow_home() / outbox}.")
                    print("  " + record_decision(dag_id, run_id, "approve", "admin", "copy and images look good (make demo)"))
                    decided = True
                time.sleep(0.5)
        if proc.returncode != 0 or run_id is None:
            print(log_path.read_text()[-3000:])
            raise SystemExit(f"`airflow dags test {dag_id}` failed (exit {proc.returncode}); full log: {log_path}")
        state, rows = run_summary(dag_id, run_id)
        wall = time.monotonic() - started
        print(f"\nRun {run_id} of {dag_id}: {state.upper()} in {wall:.1f} s\n")
        report = next((r["value"] for r in rows if r["task"] == tasks.REPORT and isinstance(r["value"], dict)), None)
        if report:
            from include.orchestrator.saga.outcome import Report

            print("  " + Report.model_validate(report).summary().replace("\n", "\n  ") + "\n")
        for row in rows:
            task = row["task"] if len(row["task"]) <= 36 else row["task"][:35] + "…"
            print(f"  {task:<36} {row['state']:<8} {row['seconds']:>5.2f}s  {_describe(row)}")
        home = airflow_home()
        print("\nWhere everything is:")
        for conn_id, label in (
            ("campaign_memory", "memory (Qdrant on disk)"),
            ("campaign_assets", "asset store (images, PNG, under images/)"),
            ("campaign_review", "review repository (git, branch review/...)"),
            ("campaign_notify", "notifications outbox"),
            ("campaign_social", "social queue"),
            ("campaign_blog", "blog remote (bare git)"),
            ("campaign_analytics", "Grafana dashboards (JSON, ready to import)"),
            ("campaign_ledger", "saga ledger (SQLite, every effect per run)"),
        ):
            print(f"  {label:<44} {home / conns[conn_id]['extra']['path']}")
        print(f"  {'email (delivered over SMTP to the demo server)':<44} {servers['maildir']}")
        print("\nNext: `make up` starts the Airflow UI at http://localhost:8080 (user admin, password admin)")
        print("to watch and trigger campaigns. A run waiting for approval is decided in its Required Actions")
        print("tab, or from the shell as an approver other than the user who triggered it:")
        print("  AIRFLOW_USER=dana .venv/bin/python -m include.orchestrator approve <campaign> <run_id> --reason '...'")
        return 0 if state == "success" else 1


def up() -> int:
    """Airflow standalone (api-server, scheduler, dag-processor, triggerer) plus the demo servers."""
    conns = settings_connections()
    with demo_servers(conns):
        os.environ.update(connection_env(conns))
        seed_memory(conns)
        # Local development only: known passwords for the users of the Makefile's user list.
        passwords = airflow_home() / "simple_auth_manager_passwords.json.generated"
        if not passwords.exists():
            passwords.write_text(json.dumps({"admin": "admin", "dana": "dana"}))
        import_pools(_env())
        print(f"Starting Airflow at http://localhost:8080 (passwords in {passwords}); Ctrl-C stops it.")
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=_env(), start_new_session=True)

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        # Ctrl-C or a TERM stops standalone's whole process group: it ignores SIGINT itself.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            return 0
