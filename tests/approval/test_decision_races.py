"""Decisions that race, and approvals by marking the gate, on a real Airflow (api-server, scheduler,
dag-processor on loopback) with its metadata DB on SQLite and on PostgreSQL (127.0.0.1:5432).

One stack per database serves every scenario; each scenario has its own campaign, triggered by
admin, an approver who may not approve his own runs (no self-approval).
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import pytest
import yaml

from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.domain.model import run_key
from tests.stack import AirflowStack
from tests.worlds import found, leftovers, local_connections

pytestmark = pytest.mark.integration
GATE = "review.approval"
RACERS = 6
SCENARIOS = ("race", "selfmark", "approvermark")
DISTRIBUTION = ("distribution.publish_email", "distribution.publish_social", "distribution.publish_blog")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request, tmp_path_factory):
    from include.orchestrator.dev.smtp_server import LocalSmtpServer
    from tests.cluster import create_database, database_url, drop_database

    root = tmp_path_factory.mktemp(f"races-{request.param}")
    db_name = create_database("campaign_races") if request.param == "postgres" else None
    conns = local_connections(root / "data")
    base = yaml.safe_load((CAMPAIGNS_DIR / "webinar-invite.yaml").read_text())
    campaigns = root / "campaigns"
    campaigns.mkdir()
    for name in SCENARIOS:
        campaign = {**base, "slug": f"races-{name}", "name": f"Races {name}"}
        campaign["approval"] = {"approvers": ["dana", "admin"], "approver_roles": ["op"], "timeout": "1h"}
        if name != "race":  # every channel: an approval by a mark must send on none of them, or on all
            campaign["channels"] = {
                **base["channels"],
                "social": {"profiles": ["mastodon-pipewise"]},
                "blog": {"author": "Pipewise team"},
            }
        (campaigns / f"races-{name}.yaml").write_text(yaml.safe_dump(campaign))
    with LocalSmtpServer(root / "maildir") as smtp:
        conns["campaign_email"]["port"] = smtp.port
        env = {**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(campaigns)}
        stack = AirflowStack(root / "airflow", env=env, db_url=database_url(db_name) if db_name else None)
        try:
            stack.start()
            stack.wait_for_dags([f"campaign_races-{n}" for n in SCENARIOS])
            runs = {name: stack.trigger(f"campaign_races-{name}") for name in SCENARIOS}
            yield {"stack": stack, "runs": runs, "smtp": smtp, "data": root / "data", "env": env, "db": request.param}
        finally:
            stack.stop()
            if db_name:
                drop_database(db_name)


def waiting(world, name: str) -> tuple[AirflowStack, str, str]:
    stack, dag_id, run_id = world["stack"], f"campaign_races-{name}", world["runs"][name]
    stack.wait_task(dag_id, run_id, GATE, {"awaiting_input", "failed", "upstream_failed"}, timeout=600)
    assert stack.task_state(dag_id, run_id, GATE) == "awaiting_input"
    return stack, dag_id, run_id


def audit(stack: AirflowStack, dag_id: str, run_id: str) -> list[dict]:
    """The run's ``campaign_decision_refused`` records in Airflow's audit log."""
    logs = stack.api(
        "GET",
        "/api/v2/eventLogs",
        params={"dag_id": dag_id, "run_id": run_id, "event": "campaign_decision_refused", "limit": 100},
    )
    return [{**e, "extra": json.loads(e["extra"] or "{}")} for e in logs.json()["event_logs"]]


def test_identical_approvals_at_the_same_instant_decide_once(world):
    stack, dag_id, run_id = waiting(world, "race")
    url = f"{stack.url}/campaigns/api/v1/approvals/{dag_id}/{run_id}"
    headers = {"Authorization": f"Bearer {stack.token('dana')}"}
    start = threading.Barrier(RACERS)
    answers: list[httpx.Response] = []

    def approve() -> None:
        with httpx.Client(timeout=120) as client:
            client.get(f"{stack.url}/api/v2/monitor/health")  # connected before the start: the requests leave together
            start.wait()
            answers.append(client.post(url, headers=headers, json={"decision": "approve", "reason": "go"}))

    threads = [threading.Thread(target=approve) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    statuses = Counter(a.status_code for a in answers)
    print(f"\n{world['db']}: {RACERS} identical approvals at once -> {dict(statuses)}")
    assert statuses == {200: 1, 409: RACERS - 1}, [(a.status_code, a.text[:200]) for a in answers]
    [winner] = [a.json() for a in answers if a.status_code == 200]
    for loser in (a for a in answers if a.status_code == 409):
        assert loser.json()["detail"].startswith("already decided: Approved by dana via rest"), loser.text
    assert stack.xcom(dag_id, run_id, GATE) == winner, "the stored decision is the one that was answered 200"
    refusals = audit(stack, dag_id, run_id)
    assert sorted(e["extra"]["status"] for e in refusals) == [409] * (RACERS - 1), refusals
    assert stack.wait_run(dag_id, run_id) == "success"


def test_a_mark_by_the_user_who_triggered_the_run_publishes_nothing(world):
    stack, dag_id, run_id = waiting(world, "selfmark")
    mark = stack.api("PATCH", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}", "admin", json={"new_state": "success"})
    assert mark.status_code == 200, mark.text
    assert stack.wait_run(dag_id, run_id) == "failed"
    assert stack.task_state(dag_id, run_id, GATE) == "failed"
    for task_id in DISTRIBUTION:  # never started (email, the pivot, waits on the others and is skipped)
        assert stack.task_state(dag_id, run_id, task_id) in ("upstream_failed", "skipped"), task_id
    why = "admin triggered this run and the campaign does not allow self-approval"
    report = stack.xcom(dag_id, run_id, "compensation.report")
    assert report["status"] == "rolled back" and "marked the approval task success" in report["reason"], report
    assert why in report["reason"], report
    note = stack.api("GET", stack.run_path(dag_id, run_id)).json()["note"]
    assert note.startswith(f"Campaign rolled back: {report['reason']}"), note
    [entry] = audit(stack, dag_id, run_id)
    assert (entry["owner"], entry["task_id"], entry["extra"]["via"], entry["extra"]["status"]) == (
        "admin",
        GATE,
        "mark-success",
        403,
    ), entry
    assert why in entry["extra"]["why"], entry
    # The reviewer page's data says why the gate ended without a decision.
    answer = stack.api("GET", f"/campaigns/api/v1/runs/{dag_id}/{run_id}", "admin")
    assert answer.status_code == 200, (answer.status_code, answer.text[:500])
    detail = answer.json()
    assert detail["approval"]["decision"] is None and why in detail["approval"]["error"], detail["approval"]
    # Nothing went out, nothing is left; the closed gate refuses a late decision.
    from include.orchestrator.saga.ledger import Ledger, ledger_url

    conn = json.loads(world["env"]["AIRFLOW_CONN_CAMPAIGN_LEDGER"])
    entries = Ledger(ledger_url(localdev.sdk_connection("campaign_ledger", conn))).entries(dag_id, run_id)
    assert entries and not [e for e in entries if e.effect.port in ("email", "social", "blog")], entries
    assert found(leftovers(world, [run_key(dag_id, run_id)])) == {}
    late = stack.api("POST", f"/campaigns/api/v1/approvals/{dag_id}/{run_id}", "dana", json={"decision": "approve"})
    assert late.status_code == 409, late.text


def test_a_mark_by_an_approver_still_approves(world):
    stack, dag_id, run_id = waiting(world, "approvermark")
    mark = stack.api("PATCH", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}", "dana", json={"new_state": "success"})
    assert mark.status_code == 200, mark.text
    assert stack.wait_run(dag_id, run_id) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"]) == ("approved", "dana", "mark-success"), record
    for task_id in DISTRIBUTION:
        assert stack.task_state(dag_id, run_id, task_id) == "success", task_id
    made = found(leftovers(world, [run_key(dag_id, run_id)]))
    assert made.get("emails delivered") and made.get("queued posts") and made.get("blog posts"), made
    assert audit(stack, dag_id, run_id) == []
