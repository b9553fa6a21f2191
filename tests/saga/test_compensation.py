"""The saga's fault matrix, run by Airflow's own dag.test() on the embedded backends.

Each scenario fails one side-effecting step in the worst place: right after its effect was made,
before the ledger heard it was (the task "crashes" between the two). Compensation must then find
the effect from its planned entry. After each run: the run failed (or ended partially
distributed, by policy), nothing is left behind except what the documented pivot policy keeps,
and compensating a second time changes nothing. The table of injections and leftovers is printed
(``pytest -s``) and written to ``$SAGA_MATRIX_OUT`` when set.

Rejection, the approval timeout, a user cancelling the run and SIGKILL of a task process run on a
real Airflow in ``test_compensation_stack.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from include.orchestrator.backends.registry import backend_for
from include.orchestrator.dev.localdev import sdk_connection
from include.orchestrator.saga import compensation, recorder
from include.orchestrator.saga.ledger import Ledger, ledger_url
from tests.worlds import campaign_world, export, found, leftovers, print_table, run_campaign

pytestmark = pytest.mark.integration

DAG_ID = "campaign_spring-launch"
SENT = {"blog posts", "queued posts", "emails delivered", "images", "notifications", "review branches", "memory points"}
LIVE = SENT | {"dashboards"}


@dataclass
class Scenario:
    name: str
    task_id: str | None = None  # where the crash is injected (after the effect, before its record)
    map_index: int | None = None
    decision: str = "approve"
    edit: dict[str, Any] = field(default_factory=dict)  # campaign changes
    email_outbox: bool = False  # email as .eml files (undoable) instead of SMTP delivery
    status: str = "rolled back"
    kept: set[str] = field(default_factory=set)  # kinds the policy keeps (the campaign is live)


def _channel(channel: str, **changes: Any) -> dict[str, Any]:
    return {"channels": {channel: changes}}


SCENARIOS = [
    Scenario("crash in content.load_brand_voice", "content.load_brand_voice"),
    Scenario("crash in content.store_draft", "content.store_draft"),
    Scenario("crash in design.render_image[blog]", "design.render_image", map_index=2),
    Scenario("crash in review.open_review", "review.open_review"),
    Scenario("crash in review.notify_reviewers", "review.notify_reviewers"),
    Scenario("approval rejected", decision="reject"),
    Scenario("crash in distribution.publish_blog", "distribution.publish_blog"),
    Scenario(
        "crash in publish_social (compensate)", "distribution.publish_social", edit=_channel("social", on_failure="compensate")
    ),
    Scenario("crash in publish_social (continue)", "distribution.publish_social", status="partially distributed", kept=LIVE),
    Scenario("crash in publish_email after SMTP", "distribution.publish_email", status="failed after going live", kept=SENT),
    Scenario("crash in create_dashboard (SMTP)", "analytics.create_dashboard", status="failed after going live", kept=LIVE),
    Scenario("crash in create_dashboard (outbox)", "analytics.create_dashboard", email_outbox=True),
]


def _edit(scenario: Scenario):
    def edit(campaign: dict[str, Any]) -> None:
        campaign["retries"] = {"count": 0}
        campaign["approval"]["approvers"] = ["dana", "admin"]
        for section, changes in scenario.edit.items():
            for name, values in changes.items():
                campaign[section][name].update(values)

    return edit


def _inject(monkeypatch, scenario: Scenario) -> None:
    """The step's task dies between making its effect and recording it as made."""
    write = recorder.Recorder.write

    def crashing(self, what, effect, error=""):
        if what == "made" and self.task_id == scenario.task_id and scenario.map_index in (None, self.map_index):
            raise RuntimeError(f"injected crash after making {effect.kind} {effect.key}")
        return write(self, what, effect, error)

    monkeypatch.setattr(recorder.Recorder, "write", crashing)


def _ledger(world) -> Ledger:
    return Ledger(ledger_url(sdk_connection("campaign_ledger", world["conns"]["campaign_ledger"])))


def _open_backend(world):
    return lambda port, conn_id: backend_for(port, conn_id, sdk_connection(conn_id, world["conns"][conn_id]))


ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    print_table(ROWS, "Saga fault matrix (dag.test)")


def row(
    scenario: Scenario, state: str, report: dict[str, Any], leftovers: list[str], second: str, wall: float | None
) -> dict[str, Any]:
    """A line of the printed table (``print_table``): what a run injected, ended as, undid and left."""
    return {
        "injection": scenario.name,
        "run": state,
        "status": report["status"],
        "undone": len(report["undone"]),
        "kept": len(report["kept"]),
        "leftovers": leftovers,
        "second": second,
        "seconds": report["compensation_seconds"],
        "wall": wall,
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_matrix(scenario: Scenario, tmp_path, monkeypatch, airflow_db):
    with campaign_world(tmp_path, _edit(scenario)) as world:
        if scenario.email_outbox:
            world["conns"]["campaign_email"] = {"conn_type": "fs", "extra": {"path": str(world["data"] / "email-outbox")}}
        for key, value in export(world).items():
            monkeypatch.setenv(key, value)
        if scenario.task_id:
            _inject(monkeypatch, scenario)
        started = time.monotonic()
        run, (state, rows) = run_campaign({}, decision=scenario.decision)
        wall = time.monotonic() - started
        states = {r["task"]: r["state"] for r in rows}
        report = next(r["value"] for r in rows if r["task"] == "compensation.report")
        left = found(leftovers(world))

        # Compensating again changes nothing: same ledger, same world.
        ledger = _ledger(world)
        before = [(e.id, e.state) for e in ledger.entries(DAG_ID, run.run_id)]
        compensation.compensate(ledger, DAG_ID, run.run_id, _open_backend(world))
        second = (
            "no change"
            if ([(e.id, e.state) for e in ledger.entries(DAG_ID, run.run_id)] == before and found(leftovers(world)) == left)
            else "CHANGED"
        )

    ROWS.append(row(scenario, state, report, sorted(set(left) - scenario.kept), second, round(wall, 1)))
    assert report["status"] == scenario.status, (report, states)
    assert state == ("success" if scenario.status == "partially distributed" else "failed"), states
    assert set(left) <= scenario.kept, f"left behind: {left}"
    assert second == "no change"
    if scenario.status == "rolled back":
        assert report["left"] == [] and report["undone"], report
        assert states["compensation.undo"] == "success" and states["compensation.report"] == "failed", states
        assert scenario.task_id is None or scenario.task_id in report["reason"] or "rejected" in report["reason"], report
    if scenario.name == "approval rejected":
        assert report["reason"].startswith("rejected by admin"), report
    if scenario.status == "partially distributed":
        assert states["distribution.publish_social"] == "failed" and states["analytics.create_dashboard"] == "success", states
        assert "social failed" in report["reason"] and "injected crash" in report["reason"], report
        assert states["compensation.undo"] == "skipped", states
    if scenario.status == "failed after going live":
        assert "emails delivered" in left and "blog posts" in left, left  # the pivot: nothing is pulled back
        assert states["compensation.report"] == "failed", states


def test_an_undo_that_keeps_failing_is_named_in_the_report_and_the_alert(tmp_path, monkeypatch, airflow_db):
    """One undo failing does not stop the others; once retries are spent, the alert names it."""
    scenario = Scenario("undo of an image fails", "review.notify_reviewers")
    with campaign_world(tmp_path, _edit(scenario)) as world:
        for key, value in export(world).items():
            monkeypatch.setenv(key, value)
        _inject(monkeypatch, scenario)
        undo = compensation.compensate

        def blocked_image(ledger, dag_id, run_id, open_backend):
            # Someone replaced the blog image by a folder: unlinking it fails, for real.
            for image in (world["data"] / "assets" / "images").glob("*-image-blog.png"):
                image.unlink()
                (image / "kept").mkdir(parents=True)
            return undo(ledger, dag_id, run_id, open_backend)

        monkeypatch.setattr(compensation, "compensate", blocked_image)
        run, (state, rows) = run_campaign({})
        states = {r["task"]: r["state"] for r in rows}
        report = next(r["value"] for r in rows if r["task"] == "compensation.report")
        alerts = [json.loads(p.read_text()) for p in (world["data"] / "notifications").glob("*-saga-alert.json")]
        left = found(leftovers(world))
    assert state == "failed" and states["compensation.undo"] == "failed", states
    assert report["status"] == "cleanup needed", report
    [item] = report["left"]
    assert item["port"] == "design" and "IsADirectoryError" in item["error"], item
    assert len(report["undone"]) >= 4  # the others were undone all the same
    [alert] = alerts
    assert "image-blog.png" in alert["text"] and "left to clean up by hand" in alert["text"], alert
    assert set(alert["to"]) >= {"dana", "admin"}
    assert set(left) == {"images", "notifications"}, left  # the image folder, and the alert itself
    ROWS.append(row(scenario, state, report, ["images (reported)"], "-", None))
