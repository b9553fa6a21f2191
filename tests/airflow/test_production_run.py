"""The whole campaign on every production backend, each pointed at its service's local double.

Airflow's own ``dag.test()`` runs the real DAG; every port's connection has its production type
(Slack, GitHub, SendGrid, Buffer, Figma, Notion, Grafana, an OpenAI-compatible LLM, a Qdrant
server), so the production code path runs end to end, ledger and compensation included. The
doubles check every request against the services' docs (``problems`` must stay empty). One run
completes; one fails at its last step and is compensated through the production undo calls.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.orchestrator.approval import review_watch
from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import campaign_of
from include.orchestrator.domain.model import run_key
from include.orchestrator.errors import RetryableServiceError, ServiceError
from tests.doubles.figma import FigmaDouble
from tests.doubles.notion import NotionDouble
from tests.doubles.openai_compat import OpenAICompatDouble
from tests.doubles.qdrant_server import QdrantServerDouble
from tests.s3_server import S3Server
from tests.worlds import (
    TOKEN,
    campaign_world,
    delivery_connections,
    delivery_doubles,
    export,
    http_connection,
    ready_for_reviewer_thread,
    run_campaign,
)

pytestmark = pytest.mark.integration

DAG_ID = "campaign_spring-launch"
FIGMA_FILE = "FiGmAfIlE123"
COMPONENTS = {"email": "Email header", "social": "Social card", "blog": "Blog hero"}


@contextlib.contextmanager
def production_world(root: Path) -> Iterator[dict[str, Any]]:
    """``campaign_world`` with every port but the web fetch on its production backend."""

    def edit(campaign: dict[str, Any]) -> None:
        campaign["retries"] = {"count": 0}
        campaign["approval"]["github_approvers"] = ["dana-gh"]

    with contextlib.ExitStack() as stack:
        world = stack.enter_context(campaign_world(root, edit))
        services = delivery_doubles(stack)
        figma = stack.enter_context(FigmaDouble())
        notion = stack.enter_context(NotionDouble())
        llm = stack.enter_context(OpenAICompatDouble(api_key=TOKEN))
        qdrant = stack.enter_context(QdrantServerDouble(api_key=TOKEN))

        figma.add_file(
            FIGMA_FILE,
            {"Email header": (600, 200, "#0f172a"), "Social card": (1200, 675, "#22d3ee"), "Blog hero": (1600, 900, "#f8fafc")},
        )
        source = notion.add_data_source()
        notion.add_page(
            source,
            "Data pipeline observability interviews",
            ["Teams learn about broken pipelines from their stakeholders.", "Freshness alerts matter most."],
        )
        s3 = stack.enter_context(S3Server())
        bucket = s3.new_bucket()

        world["conns"].update(
            {
                "campaign_memory": {"conn_type": "qdrant", "host": qdrant.url, "password": TOKEN},
                "campaign_notes": http_connection(notion.url, data_source_id=source),
                "campaign_writer": http_connection(llm.base_url, model="gpt-4o-mini"),
                "campaign_design": http_connection(
                    figma.url, file_key=FIGMA_FILE, components=COMPONENTS, allow_private_network=True
                ),
                "campaign_assets": s3.connection(bucket),  # object storage over real HTTP (moto in server mode)
                **delivery_connections(services),
            }
        )
        world["services"] = {**services, "figma": figma, "notion": notion, "llm": llm, "qdrant": qdrant}
        world["images"] = lambda: [key.rsplit("/", 1)[-1] for key in s3.objects(bucket)]
        yield world


def live(world: dict[str, Any], key: str) -> dict[str, list[str]]:
    """What the run with this run key still has in each service (the saga alert aside)."""
    s = world["services"]
    messages = [
        m for m in s["slack"].live_messages() if key in str(m.get("metadata")) and "saga-alert" not in str(m.get("metadata"))
    ]
    return {
        "slack messages": [m["ts"] for m in messages],
        "review pull requests": [str(p["number"]) for p in s["github review"].open_pulls()],
        "review branches": [b for b in s["github review"].branches() if key in b],
        "blog posts": [p for p in s["github blog"].files("main") if p.startswith("_posts/")],
        "single sends": [x["name"] for x in s["sendgrid"].single_sends() if key in x["name"]],
        "contact lists": [x["name"] for x in s["sendgrid"].lists() if key in x["name"]],
        "queued posts": [p["id"] for p in s["buffer"].queued_posts()],
        "images": sorted(name for name in world["images"]() if key in name),
        "dashboards": [uid for uid in s["grafana"].dashboards() if key in uid],
        "memory points": [k for k in s["qdrant"].point_keys() if key in k],
    }


def problems(world: dict[str, Any]) -> dict[str, list[str]]:
    return {name: double.problems for name, double in world["services"].items() if double.problems}


def watch_in_process() -> review_watch.WatchReport:
    """One round of the GitHub review watcher, deciding in-process as the decision API would."""
    from airflow.utils.session import create_session

    from include.orchestrator.approval import decisions
    from include.orchestrator.backends.registry import open_backend
    from include.orchestrator.saga.ledger import open_ledger

    def waiting(dag_id: str, run_ids: list[str]) -> set[str]:
        with create_session() as session:
            return {r for r in run_ids if decisions.status(session, dag_id, r)["waiting"]}

    def apply(dag_id: str, run_id: str) -> Any:
        with create_session() as session:
            return decisions.decide_from_github(session, dag_id=dag_id, run_id=run_id)

    return review_watch.watch(
        open_ledger(),
        since=datetime.now(UTC) - timedelta(days=1),
        campaign_of=campaign_of,
        waiting=waiting,
        open_backend=open_backend,
        apply=apply,
    )


def github_reviewer(world: dict[str, Any]):
    """A reviewer on GitHub: once the run waits, the watcher runs (nothing to apply), dana-gh approves
    the pull request, the watcher runs again (applies it), then once more (nothing changed: 304s)."""

    def start(dag_id: str, done: threading.Event) -> threading.Thread:
        ready_for_reviewer_thread(dag_id)

        def review() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not done.is_set() and not localdev._waiting_run(dag_id):
                time.sleep(0.5)
            if done.is_set() or not localdev._waiting_run(dag_id):
                return
            github = world["services"]["github review"]
            rounds = [watch_in_process()]
            [pull] = github.open_pulls()
            github.add_review(pull["number"], "someone-else", "APPROVED", "not an approver")
            github.add_review(pull["number"], "dana-gh", "APPROVED", "Looks right. Ship it.")
            rounds += [watch_in_process(), watch_in_process()]
            world["watch rounds"] = rounds

        thread = threading.Thread(target=review, daemon=True)
        thread.start()
        return thread

    return start


def _run(world: dict[str, Any], monkeypatch, reviewer=None) -> tuple[Any, dict[str, str], dict[str, Any]]:
    for name, value in export(world).items():
        monkeypatch.setenv(name, value)
    run, (state, rows) = run_campaign({}, reviewer=reviewer)
    states = {r["task"]: r["state"] for r in rows}
    world["values"] = {r["task"]: r["value"] for r in rows}
    return run, states | {"run": state}, world["values"]["compensation.report"]


def test_a_campaign_runs_end_to_end_on_every_production_backend(tmp_path, monkeypatch, airflow_db):
    with production_world(tmp_path) as world:
        run, states, report = _run(world, monkeypatch, reviewer=github_reviewer(world))
        key = run_key(DAG_ID, run.run_id)
        made = live(world, key)
        s = world["services"]
        assert problems(world) == {}
        completion = s["llm"].received[-1]
        sent = s["sendgrid"].scheduled()
    assert states["run"] == "success" and report["status"] == "completed", (states, report)
    # Every service holds what the campaign made, once.
    assert len(made["slack messages"]) == 1 and len(made["review pull requests"]) == 1, made
    assert len(made["blog posts"]) == 1 and len(made["single sends"]) == 1 and len(made["queued posts"]) == 2, made
    assert len(made["images"]) == 3 and len(made["dashboards"]) == 1 and made["memory points"], made
    assert [x["name"] for x in sent] == made["single sends"]
    assert completion["model"] == "gpt-4o-mini"
    # Approved by a GitHub review: first round nothing to apply, then dana-gh's review, then nothing changed.
    first, applied, quiet = world["watch rounds"]
    assert (first.waiting, first.decided, first.errors) == (1, [], []), first
    assert (applied.waiting, len(applied.decided), applied.errors) == (1, 1, []), applied
    assert "approved by dana-gh" in applied.decided[0], applied
    assert (quiet.waiting, quiet.unchanged) == (0, 0), quiet  # decided: the run no longer waits
    decision = world["values"]["review.approval"]
    assert (decision["by"], decision["means"], decision["by_id"]) == ("dana-gh", "github-review", "github:dana-gh"), decision
    assert decision["reason"] == "Looks right. Ship it."
    copy = world["values"]["content.write_copy"]["result"]
    assert copy["writer"] == "llm:gpt-4o-mini" and copy["usage"]["total_tokens"] > 0, copy  # token usage, per run


def _fail_at_the_dashboard(tmp_path, monkeypatch, send_delay: int) -> tuple[dict[str, str], dict[str, Any], dict, list]:
    """Grafana refuses the dashboard: the last step fails after every channel went out."""
    with production_world(tmp_path) as world:
        world["conns"]["campaign_email"]["extra"]["send_delay_seconds"] = send_delay
        world["services"]["grafana"].fail_next("POST", "/api/dashboards/db", 400, {"message": "Dashboard title cannot be empty"})
        run, states, report = _run(world, monkeypatch)
        key = run_key(DAG_ID, run.run_id)
        left = {kind: items for kind, items in live(world, key).items() if items}
        alerts = [m for m in world["services"]["slack"].live_messages() if "saga-alert" in str(m.get("metadata"))]
        assert problems(world) == {}
    assert states["run"] == "failed" and states["analytics.create_dashboard"] == "failed", states
    assert report["status"] == "rolled back" and "Dashboard title cannot be empty" in report["reason"], report
    assert len(report["undone"]) >= 9 and report["left"] == [], report
    return states, report, left, alerts


def test_a_late_failure_is_compensated_through_the_production_undo_calls(tmp_path, monkeypatch, airflow_db):
    _, report, left, alerts = _fail_at_the_dashboard(tmp_path, monkeypatch, send_delay=900)
    assert left == {} and report["kept"] == [], (left, report)
    assert alerts == []  # nothing left, nothing out for good: nobody needs to act


def test_an_email_already_sent_is_reported_out_for_good_and_the_rest_undone(tmp_path, monkeypatch, airflow_db):
    # No undo window: SendGrid sends at once, so the email cannot be taken back.
    _, report, left, alerts = _fail_at_the_dashboard(tmp_path, monkeypatch, send_delay=0)
    [kept] = report["kept"]
    assert kept["port"] == "email" and "cannot be recalled" in kept["error"], kept
    assert set(left) == {"single sends", "contact lists"}, left  # the sent email stays, as SendGrid keeps it
    [alert] = alerts  # the owner hears what went out for good
    assert "could not be taken back" in alert["text"] and "email" in alert["text"], alert["text"]


def test_an_open_circuit_fails_the_step_without_calling_the_service(tmp_path, monkeypatch, airflow_db):
    from include.orchestrator.resilience.breakers import open_breakers

    with production_world(tmp_path) as world:
        # Slack was failing for other runs: five 503s opened its breaker, in the store every worker shares.
        breakers = open_breakers(conn=localdev.sdk_connection("campaign_breakers", world["conns"]["campaign_breakers"]))

        def unwell() -> None:
            raise RetryableServiceError("Slack", "post", "HTTP 503: service_unavailable", status=503)

        for _ in range(5):
            with contextlib.suppress(ServiceError):
                breakers.call("Slack", unwell)
        assert breakers.state("Slack") == "open"
        run, states, report = _run(world, monkeypatch)
        slack = world["services"]["slack"]
        posted = slack.count("POST", r"/api/chat\.postMessage")
        left = {kind: items for kind, items in live(world, run_key(DAG_ID, run.run_id)).items() if items}
        assert problems(world) == {}
    assert states["review.notify_reviewers"] == "failed" and report["status"] == "rolled back", (states, report)
    assert "circuit breaker open" in report["reason"] and "call not made" in report["reason"], report
    assert posted == 0, "the open circuit stopped the call before it reached Slack"
    [never] = [line for line in report["absent"] if line["port"] == "notify"]
    assert "CircuitOpenError" in never["error"], never
    assert left == {}, left  # everything made before it was undone
