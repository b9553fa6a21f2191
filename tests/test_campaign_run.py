"""Whole campaigns run by Airflow's own dag.test() on the embedded backends, approval included."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from include.orchestrator import localdev
from include.orchestrator.loader import CAMPAIGNS_DIR

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path, monkeypatch, airflow_db):
    """Competitor pages and an SMTP server on loopback, every port's connection under tmp_path."""
    from include.orchestrator.smtp_server import LocalSmtpServer

    site = localdev.serve_demo_site()
    data = tmp_path / "data"
    conns = localdev.settings_connections()
    for conn in conns.values():
        extra = conn.get("extra", {})
        if "path" in extra and extra.get("relative_to") != "project":
            extra["path"] = str(data / Path(extra["path"]).name)
    with LocalSmtpServer(tmp_path / "maildir") as smtp:
        conns["campaign_email"]["port"] = smtp.port
        for key, value in localdev.connection_env(conns).items():
            monkeypatch.setenv(key, value)
        campaign = yaml.safe_load((CAMPAIGNS_DIR / "spring-launch.yaml").read_text())
        port = site.server_address[1]
        campaign["research"]["competitor_urls"] = [f"http://127.0.0.1:{port}/{n}.html" for n in ("flowwatch", "datadoggo")]
        campaigns = tmp_path / "campaigns"
        campaigns.mkdir()
        (campaigns / "spring-launch.yaml").write_text(yaml.safe_dump(campaign))
        monkeypatch.setenv("CAMPAIGNS_DIR", str(campaigns))
        yield {"conns": conns, "data": data, "smtp": smtp}
    site.shutdown()


def decide_when_waiting(dag_id: str, decision: str, by: str = "admin") -> threading.Thread:
    """A reviewer: waits until the run sits at the approval gate, then decides."""
    # Import what the reviewer thread uses here, in the main thread: two threads importing
    # Airflow's ORM models at once can deadlock on SQLAlchemy's mapper configuration.
    from airflow.models.hitl import HITLDetail  # noqa: F401
    from airflow.models.xcom import XComModel  # noqa: F401

    import include.orchestrator.decisions  # noqa: F401

    localdev._waiting_run(dag_id)

    def review():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run_id = localdev._waiting_run(dag_id)
            if run_id:
                localdev.record_decision(dag_id, run_id, decision, by, f"{decision} by the test reviewer")
                return
            time.sleep(0.5)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


def run_campaign(conf: dict, decision: str = "approve"):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=localdev.PROJECT_ROOT / "dags" / "campaigns.py").dags["campaign_spring-launch"]
    reviewer = decide_when_waiting(dag.dag_id, decision)
    run = dag.test(run_conf=conf)
    reviewer.join(timeout=5)
    return run, localdev.run_summary(dag.dag_id, run.run_id)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def test_whole_campaign_runs_every_phase_for_real(world):
    run, (state, rows) = run_campaign({})
    states = {r["task"]: r["state"] for r in rows}
    assert state == "success", states
    assert all(s == "success" for s in states.values()), states
    data = world["data"]

    # research: both competitor pages scraped for their headlines
    scraped = [r["value"]["result"] for r in rows if r["task"].startswith("research.scrape_competitor")]
    assert {h for page in scraped for h in page["headlines"]} >= {"Know when your data pipelines break", "Column-level lineage in minutes"}
    # design: a real PNG per channel
    pngs = sorted((data / "images").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    # review: a branch in the review repository, a notification in the outbox
    assert "review/spring-launch-" in git("-C", str(data / "review-repo"), "branch", "--list")
    assert len(list((data / "notifications").glob("*.json"))) == 1
    # distribution: one email delivered over SMTP, one queued post, one blog commit on the remote
    [message] = world["smtp"].messages()
    assert message["Subject"].startswith("[Pipewise] ") and "early-access@lists.example.com" in message["To"]
    assert len((data / "social-queue" / "queue.jsonl").read_text().splitlines()) == 1
    posts = git("--git-dir", str(data / "blog.git"), "ls-tree", "-r", "--name-only", "main")
    assert any(p.startswith("_posts/") and p.endswith("-spring-launch.md") for p in posts.splitlines())
    # analytics: a Grafana dashboard model
    [dashboard] = (data / "grafana-dashboards").glob("*.json")
    assert json.loads(dashboard.read_text())["title"].startswith("Campaign Spring Launch 2027")


def test_conf_chooses_channels_and_rejection_fails_the_run(world):
    run, (state, rows) = run_campaign({"channels": ["blog"], "audience": "analytics engineers"}, decision="reject")
    states = {r["task"]: r["state"] for r in rows}
    assert state == "failed"
    assert states["review.approval"] == "failed"
    assert states["design.render_image[email]"] == "skipped" and states["design.render_image[blog]"] == "success"
    assert not any(s == "success" for t, s in states.items() if t.startswith("distribution."))
    assert world["smtp"].messages() == []
