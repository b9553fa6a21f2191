"""Whole campaigns run by Airflow's own dag.test() on the embedded backends, approval included."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.worlds import campaign_world, export, run_campaign

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path, monkeypatch, airflow_db):
    """Competitor pages and an SMTP server on loopback, every port's connection under tmp_path."""
    with campaign_world(tmp_path) as world:
        for key, value in export(world).items():
            monkeypatch.setenv(key, value)
        yield world


def note_of(run) -> str | None:
    """The run's note, as the plugin's listener writes it when the scheduler finishes the run.

    dag.test() does not leave the listener's note on the run (the scheduler does: tests/approval/test_gate.py
    reads it through the REST API), so the listener is called here on the finished run, as the scheduler calls it.
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from include.orchestrator.airflow.run_notes import RunNoteListener

    with create_session() as session:
        finished = session.query(DagRun).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
        if finished.note is None:
            hook = RunNoteListener().on_dag_run_success if finished.state == "success" else RunNoteListener().on_dag_run_failed
            hook(dag_run=finished, msg="")
        return finished.note


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def test_whole_campaign_runs_every_phase_for_real(world):
    run, (state, rows) = run_campaign({})
    states = {r["task"]: r["state"] for r in rows}
    assert state == "success", states
    assert all(s == "success" for t, s in states.items() if t != "compensation.undo"), states
    assert states["compensation.undo"] == "skipped"  # a run that succeeded is never compensated
    data = world["data"]

    # research: both competitor pages scraped for their headlines
    scraped = [r["value"]["result"] for r in rows if r["task"].startswith("research.scrape_competitor")]
    assert {h for page in scraped for h in page["headlines"]} >= {
        "Know when your data pipelines break",
        "Column-level lineage in minutes",
    }
    # design: a real PNG per channel
    pngs = sorted((data / "assets" / "images").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    # review: a branch in the review repository, a notification in the outbox
    assert "review/spring-launch-" in git("-C", str(data / "review-repo"), "branch", "--list")
    assert len(list((data / "notifications").glob("*.json"))) == 1
    # distribution: one email delivered over SMTP, one queued post, one blog commit on the remote
    [message] = world["smtp"].messages()
    # recipients on the envelope only: nobody on the list sees another address
    assert message["Subject"].startswith("[Pipewise] ") and message["To"] == "undisclosed-recipients:;"
    assert set(message["X-RcptTo"].split(", ")) == {"early-access@lists.example.com", "customers@lists.example.com"}
    assert len((data / "social-queue" / "queue.jsonl").read_text().splitlines()) == 1
    posts = git("--git-dir", str(data / "blog.git"), "ls-tree", "-r", "--name-only", "main")
    assert any(p.startswith("_posts/") and p.endswith("-spring-launch.md") for p in posts.splitlines())
    # analytics: a Grafana dashboard model
    [dashboard] = (data / "grafana-dashboards").glob("*.json")
    assert json.loads(dashboard.read_text())["title"].startswith("Campaign Spring Launch 2027")
    # the run's note says what went out where, one line per channel (and the dashboard)
    note = note_of(run)
    assert note and note.startswith("Campaign completed") and len(note) <= 1000, note
    lines = note.splitlines()
    heads = ["- email", "- social", "- blog", "- analytics", "- campaign version"]
    assert [line.split(":")[0] for line in lines[1:]] == heads, note
    email, social, blog, analytics, version = lines[1:]
    plan = next(r["value"]["result"] for r in rows if r["task"] == "validate_conf")
    assert version == f"- campaign version: {plan['campaign_version']}", version
    assert "[Pipewise] " in email and "to 2 recipient(s)" in email, email
    assert "linkedin-pipewise, mastodon-pipewise" in social, social
    assert "blog.git" in blog and "-spring-launch.md" in blog, blog
    assert "dashboard" in analytics, analytics


def test_conf_chooses_channels_and_rejection_fails_the_run(world):
    run, (state, rows) = run_campaign({"channels": ["blog"], "audience": "analytics engineers"}, decision="reject")
    states = {r["task"]: r["state"] for r in rows}
    assert state == "failed"
    assert states["review.approval"] == "failed"
    assert states["design.render_image[email]"] == "skipped" and states["design.render_image[blog]"] == "success"
    assert not any(s == "success" for t, s in states.items() if t.startswith("distribution."))
    assert world["smtp"].messages() == []
    note = note_of(run)
    assert note.startswith("Campaign rolled back: rejected by admin") and "Undone: " in note, note


def test_the_same_trigger_made_twice_sends_once(world):
    """The same campaign and conf is one launch: after a rejection it may run again; once sent, a
    second trigger stops at its first task, makes nothing and says which run sent it."""
    rejected, (state, _) = run_campaign({}, decision="reject")
    assert state == "failed"  # rolled back, nothing of it out: the launch is free again
    sent, (state, _) = run_campaign({})
    assert state == "success"
    again, (state, rows) = run_campaign({})
    states = {r["task"]: r["state"] for r in rows}
    assert state == "failed" and states["validate_conf"] == "failed", states
    assert all(
        s in ("upstream_failed", "skipped")
        for t, s in states.items()
        if t != "validate_conf" and not t.startswith("compensation.")
    ), {t: s for t, s in states.items() if s not in ("upstream_failed", "skipped")}
    report = next(r["value"] for r in rows if r["task"] == "compensation.report")
    assert f"already taken by run {sent.run_id!r}" in report["reason"] and '"launch"' in report["reason"], report
    assert report["undone"] == report["absent"] == report["left"] == [], report
    assert len(world["smtp"].messages()) == 1
    assert len((world["data"] / "social-queue" / "queue.jsonl").read_text().splitlines()) == 1
