"""The approval gate, and how a run ends, against a real Airflow (api-server, scheduler,
dag-processor on loopback).

One stack serves every scenario: each gets its own campaign (so runs proceed side by side), all
triggered by admin, who may therefore not approve them (no self-approval). The saga's scenarios
that need a real Airflow run here too: rejection, timeout, marking the gate failed, a user
cancelling the run, and SIGKILL of a task process; each must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from include.orchestrator.approval.review_watch import WATCH_DAG_ID
from include.orchestrator.approval.rules import Decision
from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from tests.doubles.github import GithubDouble
from tests.stack import PROJECT, AirflowStack
from tests.worlds import local_connections, print_table

pytestmark = pytest.mark.integration
GATE = "review.approval"
SCENARIOS = [
    "cli",
    "rest",
    "form",
    "formreject",
    "mark",
    "markfail",
    "reject",
    "cancel",
    "sigkill",
    "github",
    "edited",
    "broken",
    "timeout",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from include.orchestrator.dev.smtp_server import LocalSmtpServer

    root = tmp_path_factory.mktemp("gate")
    conns = local_connections(root / "data")
    base = yaml.safe_load((CAMPAIGNS_DIR / "webinar-invite.yaml").read_text())
    campaigns = root / "campaigns"
    campaigns.mkdir()
    for name in SCENARIOS:
        campaign = {**base, "slug": f"gate-{name}", "name": f"Gate {name}"}
        campaign["approval"] = {"approvers": ["dana", "admin"], "approver_roles": ["op"], "timeout": "1h"}
        if name == "timeout":
            # The scheduler sweeps timeouts every 15 s, and a loaded machine resumes the gate late: a
            # reminder due at 45 s is sent by ~60 s, well before the 90 s deadline (after it, none is sent).
            campaign["approval"] = {"approvers": ["dana"], "timeout": "90s", "remind_before": "45s"}
        if name == "mark":  # eve, no approver, marks the gate success: it approves only because the campaign opts in
            campaign["approval"]["marks"] = "anyone"
        if name == "github":  # decided by a review of its pull request on (the double of) GitHub
            campaign["approval"]["github_approvers"] = ["dana-gh"]
            campaign["connections"] = {"review": "campaign_review_github"}
        if name == "sigkill":  # a social channel to kill a task in; tried twice, killed twice
            campaign["channels"] = {**base["channels"], "social": {"profiles": ["mastodon-pipewise"], "on_failure": "compensate"}}
            campaign["retries"] = {"count": 1, "delay": "1s"}
        if name == "edited":  # every channel: its file is edited while the run waits for approval
            campaign["channels"] = {
                **base["channels"],
                "social": {"profiles": ["mastodon-pipewise"]},
                "blog": {"author": "Pipewise team"},
            }
        (campaigns / f"gate-{name}.yaml").write_text(yaml.safe_dump(campaign))
    with LocalSmtpServer(root / "maildir") as smtp, GithubDouble() as github:
        conns["campaign_email"]["port"] = smtp.port
        conns["campaign_review_github"] = {
            "conn_type": "github",
            "host": github.url,
            "password": "test-token",
            "extra": {"repository": github.full_name},
        }
        env = {**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(campaigns)}
        stack = AirflowStack(root / "airflow", env=env)
        # The review watcher asks the decision API as olga (an approver by role).
        stack.env["AIRFLOW_CONN_CAMPAIGN_AIRFLOW_API"] = json.dumps(
            {"conn_type": "http", "host": stack.url, "login": "olga", "password": "olga"}
        )
        try:
            stack.start()
            dag_ids = [f"campaign_gate-{n}" for n in SCENARIOS]
            stack.wait_for_dags(dag_ids)
            # The form run is triggered as the trigger form sends its defaults: optional fields left empty are null.
            form_defaults = {"audience": base["audience"], "channels": ["email"], "writer_notes": None, "launch": None}
            runs = {
                name: stack.trigger(f"campaign_gate-{name}", conf=form_defaults if name == "form" else None) for name in SCENARIOS
            }
            yield {
                "stack": stack,
                "runs": runs,
                "smtp": smtp,
                "data": root / "data",
                "env": env,
                "github": github,
                "campaigns": campaigns,
            }
        finally:
            stack.stop()


def waiting(world, name: str) -> tuple[AirflowStack, str, str]:
    stack, dag_id, run_id = world["stack"], f"campaign_gate-{name}", world["runs"][name]
    stack.wait_task(dag_id, run_id, GATE, {"awaiting_input", "failed", "upstream_failed"}, timeout=600)
    assert stack.task_state(dag_id, run_id, GATE) == "awaiting_input"
    return stack, dag_id, run_id


def decision_path(dag_id: str, run_id: str) -> str:
    return f"/campaigns/api/v1/approvals/{dag_id}/{run_id}"


def cli(stack: AirflowStack, *args: str, user: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_API_URL": stack.url, "AIRFLOW_USER": user, "AIRFLOW_PASSWORD": user, "PYTHONPATH": str(PROJECT)}
    return subprocess.run(
        [sys.executable, "-m", "include.orchestrator", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_gate_holds_no_worker_and_publishes_its_request(world):
    stack, dag_id, run_id = waiting(world, "cli")
    for name in SCENARIOS[:-1]:  # every run but the timeout one, which wakes up on its own
        waiting(world, name)
    busy = stack.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"state": ["running", "queued", "deferred"]}).json()
    # Left out: the watcher's minutely round, and the timeout run, whose gate wakes by design to send its reminder.
    busy = [ti for ti in busy["task_instances"] if ti["dag_id"] not in (WATCH_DAG_ID, "campaign_gate-timeout")]
    assert busy == [], "runs waiting at the gate hold no worker slot and no trigger"
    detail = stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}/-1/hitlDetails").json()
    assert detail["options"] == ["Approve", "Reject"] and not detail["response_received"]
    assert {u["id"] for u in detail["assigned_users"]} == {"dana", "olga"}, "dana, and olga by role; admin triggered the run"
    # The request says what is approved: no opaque run key; audience, notes, launch, recipients, deadline, reviewer page.
    review_page = f"{stack.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/campaign-run"
    assert detail["subject"] == f"Approve Gate cli: {run_id}?", detail["subject"]
    body = detail["body"]
    for expected in (
        review_page,
        "- Audience: ",
        "- Writer notes: none",
        "- Launch: not named",
        "- Channels: email",
        "- Email recipients: 1 (customers@lists.example.com)",
        " UTC (in 1 hour)",
    ):
        assert expected in body, (expected, body)
    # The form: approving needs no reason (nullable), and no field is in an error state at start (no minLength).
    params = detail["params"]
    assert "null" in params["reason"]["schema"]["type"] and params["reason"]["value"] is None, params["reason"]
    assert not any("minLength" in p["schema"] for p in params.values()), params
    status = stack.api("GET", decision_path(dag_id, run_id), "dana").json()
    assert status["waiting"] and set(status["editable"]) == {"headline", "email_subject", "email_body"}
    # the review request went out with a link to the Required Actions page
    outbox = world["data"] / "notifications"
    texts = [json.loads(p.read_text()) for p in outbox.glob("*.json")]
    link = f"{stack.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/{GATE}/required_actions"
    assert link in [t["link"] for t in texts]
    [request] = [t for t in texts if t["link"] == link]
    assert review_page in request["text"] and "Decide within 1 hour" in request["text"] and " UTC" in request["text"], request


def test_cli_approval_with_edited_copy_reaches_distribution(world, tmp_path):
    stack, dag_id, run_id = waiting(world, "cli")
    refused = cli(stack, "approve", "gate-cli", run_id, "--reason", "mine", user="admin")
    assert refused.returncode == 1 and "does not allow self-approval" in refused.stderr
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps({"email_subject": "Edited by Dana: save your seat"}))
    done = cli(stack, "approve", "gate-cli", run_id, "--reason", "tightened the subject", "--copy", str(edits), user="dana")
    assert done.returncode == 0, done.stderr
    assert "Approved by dana via cli" in done.stdout and "copy edited: email_subject" in done.stdout
    assert stack.wait_run(dag_id, run_id) == "success"
    mails = [m for m in world["smtp"].messages() if "Edited by Dana" in m["Subject"]]
    assert len(mails) == 1, [m["Subject"] for m in world["smtp"].messages()]
    record = stack.xcom(dag_id, run_id, GATE)
    assert set(record) == set(Decision.model_fields) and all(record.values()), "every field of the record is filled"
    assert record["by"] == "dana" and record["means"] == "cli" and record["triggered_by"] == "admin"
    assert record["reason"] == "tightened the subject" and record["edited_copy"]["email_subject"].startswith("Edited by Dana")
    assert record["edited_fields"] == ["email_subject"] and record["copy_version"] != record["draft_version"]
    note = stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}").json()["note"]
    assert note.startswith("Approved by dana via cli at ") and "tightened the subject" in note
    again = cli(stack, "reject", "gate-cli", run_id, "--reason", "too late", user="dana")
    assert again.returncode == 1 and "already decided" in again.stderr


def test_what_was_approved_is_sent_although_the_file_changed_after_the_run_started(world):
    """The campaign file is edited while the run waits (a recipient added, the sender changed, the
    blog channel removed, eve made an approver): the run goes on with the campaign as it stood at
    its start, and what goes out is exactly what dana approved; only new runs see the edit."""
    stack, dag_id, run_id = waiting(world, "edited")
    path = world["campaigns"] / "gate-edited.yaml"
    campaign = yaml.safe_load(path.read_text())
    approved_email = dict(campaign["channels"]["email"])
    campaign["channels"]["email"] |= {
        "recipients": [*approved_email["recipients"], "intruder@example.com"],
        "sender": "spoof@example.net",
    }
    del campaign["channels"]["blog"]
    campaign["approval"]["approvers"].append("eve")
    path.write_text(yaml.safe_dump(campaign))

    def reparsed() -> bool:  # the DAG as the file now stands: its trigger form offers no blog any more
        params = stack.api("GET", f"/api/v2/dags/{dag_id}/details").json()["params"]
        return "blog" not in params["channels"]["value"]

    stack.wait(reparsed, "the dag-processor to parse the edited file", timeout=120)
    eve = stack.api("POST", decision_path(dag_id, run_id), "eve", json={"decision": "approve", "reason": "me too"})
    assert eve.status_code == 403, eve.text  # the run's approvers are the ones it started with
    answer = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "approve", "reason": "ok"})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(dag_id, run_id) == "success", stack.xcom(dag_id, run_id, "compensation.report")
    record = stack.xcom(dag_id, run_id, GATE)
    assert set(record["pinned"]) == {"email", "social", "blog"}, record["pinned"]
    assert record["pinned"]["email"]["email.sender"] == approved_email["sender"]
    # Message-IDs derive from the run's keys, which begin with the campaign's slug.
    mails = [m for m in world["smtp"].messages() if "<gate-edited-" in m.get("Message-ID", "")]
    assert mails, [m.get("Message-ID") for m in world["smtp"].messages()]
    envelope = {r.strip() for m in mails for r in m["X-RcptTo"].split(",")}
    assert envelope == set(approved_email["recipients"]), envelope
    assert {m["X-MailFrom"] for m in mails} == {approved_email["sender"]}
    assert "intruder@example.com" not in str([m.as_string() for m in mails])
    states = {t: stack.task_state(dag_id, run_id, f"distribution.publish_{t}") for t in ("email", "social", "blog")}
    assert states == {"email": "success", "social": "success", "blog": "success"}, states
    blog = subprocess.run(
        ["git", "--git-dir", str(world["data"] / "blog.git"), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-gate-edited.md" in blog, blog
    plan = stack.xcom(dag_id, run_id, "validate_conf")["result"]
    assert plan["campaign"]["channels"]["email"]["sender"] == approved_email["sender"] and plan["campaign_version"]
    # A new run uses the file as it is now: two recipients, the new sender, no blog.
    new_run = stack.trigger(dag_id)
    stack.wait_task(dag_id, new_run, "validate_conf", {"success", "failed"})
    fresh = stack.xcom(dag_id, new_run, "validate_conf")["result"]
    assert fresh["campaign_version"] != plan["campaign_version"] and fresh["channels"] == ["email", "social"]
    assert fresh["campaign"]["channels"]["email"]["sender"] == "spoof@example.net"
    stack.api("PATCH", stack.run_path(dag_id, new_run), "admin", json={"state": "failed"})


def test_a_run_holds_while_its_campaign_file_is_invalid_and_goes_on_once_it_is_fixed(world):
    """An invalid edit while a run waits for approval: the file no longer defines the DAG, so Airflow
    marks it stale and its scheduler leaves the run where it is (an approval is still recorded, nothing
    is published, nothing is undone or lost); the Campaigns view names the file's error. Once the file
    is valid again the run goes on, with the campaign it started with."""
    stack, dag_id, run_id = waiting(world, "broken")
    path = world["campaigns"] / "gate-broken.yaml"
    good = path.read_text()
    path.write_text(re.sub(r"^owner: .*$", "owner: bob@", good, count=1, flags=re.MULTILINE))

    def dag_stale() -> bool:
        return bool(stack.api("GET", f"/api/v2/dags/{dag_id}").json().get("is_stale"))

    stack.wait(dag_stale, "Airflow to mark the DAG of the invalid file stale", timeout=300, interval=5)
    view = stack.api("GET", f"/campaigns/api/v1/campaigns/{dag_id}").json()
    assert "gate-broken.yaml" in view["file_error"] and "owner" in view["file_error"], view["file_error"]
    answer = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "approve", "reason": "ok"})
    assert answer.status_code == 200, answer.text
    held = stack.wait(lambda: stack.task_state(dag_id, run_id, GATE) == "success", "the approval to be recorded")
    assert held and stack.run_state(dag_id, run_id) == "running"
    for task_id in ("distribution.publish_email", "distribution.publish_social", "distribution.publish_blog"):
        assert stack.task_state(dag_id, run_id, task_id) in (None, "scheduled"), task_id  # not started: held
    assert not [m for m in world["smtp"].messages() if "<gate-broken-" in m.get("Message-ID", "")]
    path.write_text(good)
    stack.wait(lambda: not dag_stale(), "the fixed file to define the DAG again", timeout=180, interval=5)
    assert stack.wait_run(dag_id, run_id) == "success", stack.xcom(dag_id, run_id, "compensation.report")
    mails = [m for m in world["smtp"].messages() if "<gate-broken-" in m.get("Message-ID", "")]
    assert mails and stack.xcom(dag_id, run_id, "compensation.report")["status"] == "completed"


def test_rest_refuses_non_approvers_and_self_approval_and_accepts_a_role_approver(world):
    stack, dag_id, run_id = waiting(world, "rest")
    path = decision_path(dag_id, run_id)
    status = cli(stack, "approval-status", dag_id, run_id, user="eve")
    assert status.returncode == 0 and json.loads(status.stdout)["eligible"] == ["dana", "olga"]
    eve = stack.api("POST", path, "eve", json={"decision": "approve"})
    assert eve.status_code == 403 and "eve is not an approver" in eve.json()["detail"]
    admin = stack.api("POST", path, "admin", json={"decision": "approve"})
    assert admin.status_code == 403 and "self-approval" in admin.json()["detail"]
    bad = stack.api("POST", path, "dana", json={"decision": "approve", "copy": {"blog_body": "x"}})
    assert bad.status_code == 400 and "cannot edit ['blog_body']" in bad.json()["detail"]
    assert stack.task_state(dag_id, run_id, GATE) == "awaiting_input", "refusals leave the run waiting"
    olga = stack.api("POST", path, "olga", json={"decision": "approve", "reason": "ops on call"})
    assert olga.status_code == 200, olga.text
    assert stack.wait_run(dag_id, run_id) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["by"], record["means"], record["reason"], record["edited_fields"]) == ("olga", "rest", "ops on call", [])
    ti = stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}").json()
    assert ti["note"].startswith("Approved by olga via rest")
    # refused attempts are in Airflow's audit log
    logs = stack.api("GET", "/api/v2/eventLogs", params={"dag_id": dag_id, "event": "campaign_decision_refused"}).json()
    assert {e["owner"] for e in logs["event_logs"]} >= {"eve", "admin"}


def test_required_actions_form_answer_approves(world):
    stack, dag_id, run_id = waiting(world, "form")
    form = f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}/-1/hitlDetails"
    status = stack.api("GET", decision_path(dag_id, run_id), "dana").json()
    # As the form sends it: the reason left empty (null), one field edited.
    params = {"reason": None, **status["editable"], "headline": "A better headline"}
    assert stack.api("PATCH", form, "eve", json={"chosen_options": ["Approve"], "params_input": params}).status_code == 403
    answer = stack.api("PATCH", form, "dana", json={"chosen_options": ["Approve"], "params_input": params})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(dag_id, run_id) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["by"], record["means"], record["edited_fields"], record["reason"]) == ("dana", "airflow-ui", ["headline"], "")
    # The finished run's note says what went out where.
    note = stack.api("GET", stack.run_path(dag_id, run_id)).json()["note"]
    assert note.startswith("Campaign completed\n- email: email ") and "1 recipient" in note, note
    assert "\n- analytics: Grafana dashboard" in note and len(note) <= 1000, note
    log = stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}/logs/1", params={"full_content": True})
    assert "decision: Approved by dana via airflow-ui" in log.text


def test_a_rejection_in_the_form_needs_a_reason(world):
    stack, dag_id, run_id = waiting(world, "formreject")
    form = f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}/-1/hitlDetails"
    answer = stack.api("PATCH", form, "dana", json={"chosen_options": ["Reject"], "params_input": {"reason": None}})
    assert answer.status_code == 200, answer.text
    why = "refused the rejection by dana in the Required Actions form: it gives no reason"
    report = assert_rolled_back(world, "formreject", why)
    assert "a rejection needs one" in report["reason"]


def test_an_approval_that_empties_a_copy_field_is_refused_by_name():
    from airflow.sdk.exceptions import AirflowFailException

    from include.orchestrator.airflow.gate import ApprovalGate
    from include.orchestrator.approval.rules import GateState
    from include.orchestrator.domain.ports import Copy

    class Ti:
        def __init__(self):
            self.pushed = {}

        def xcom_push(self, key, value):
            self.pushed[key] = value

    draft = Copy(headline="H", email_subject="S", email_body="B", social_posts=["P"], blog_title="T", blog_body="BB", writer="t")
    state = GateState(
        deadline="2030-01-01T00:00:00Z", draft=draft.model_dump(), draft_version="v", channels=["email"], eligible=["dana"]
    )
    answer = {"reason": None, "headline": "H", "email_body": "  ", "email_subject": None}
    event = {
        "chosen_options": ["Approve"],
        "params_input": answer,
        "responded_by_user": {"id": "dana", "name": "dana"},
        "responded_at": "2029-01-01T00:00:00Z",
    }
    ti = Ti()
    with pytest.raises(AirflowFailException, match="refused the approval by dana: it leaves email_subject, email_body empty"):
        ApprovalGate(task_id="approval")._record(ti, state, event)
    assert ti.pushed["error"].startswith("refused the approval by dana"), "kept for the run's report"


def test_marking_the_gate_success_approves_and_records_who(world):
    stack, dag_id, run_id = waiting(world, "mark")
    answer = stack.api("PATCH", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}", "eve", json={"new_state": "success"})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(dag_id, run_id) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"]) == ("approved", "eve", "mark-success")
    late = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "reject", "reason": "no"})
    assert late.status_code == 409 and "already decided" in late.json()["detail"]


def test_marking_the_gate_failed_rejects(world):
    stack, dag_id, run_id = waiting(world, "markfail")
    body = {"new_state": "failed", "note": "not this quarter"}
    assert stack.api("PATCH", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}", "dana", json=body).status_code == 200
    assert stack.wait_run(dag_id, run_id) == "failed"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"], record["reason"]) == (
        "rejected",
        "dana",
        "mark-failed",
        "not this quarter",
    )
    assert_rolled_back(world, "markfail", "rejected by dana")


def test_rejection_fails_the_run_with_who_and_why(world):
    stack, dag_id, run_id = waiting(world, "reject")
    no_reason = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "reject"})
    assert no_reason.status_code == 400
    answer = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "reject", "reason": "off-brand tone"})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(dag_id, run_id) == "failed"
    assert stack.task_state(dag_id, run_id, GATE) == "failed"
    assert stack.task_state(dag_id, run_id, "distribution.publish_email") in ("upstream_failed", "skipped", None)
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["reason"]) == ("rejected", "dana", "off-brand tone")
    note = stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}").json()["note"]
    assert note.endswith("-> rejected by dana: off-brand tone")
    assert_rolled_back(world, "reject", "rejected by dana: off-brand tone")


def test_silence_is_a_rejection_after_a_reminder_and_late_decisions_are_refused(world):
    stack, dag_id, run_id = world["stack"], "campaign_gate-timeout", world["runs"]["timeout"]
    assert stack.wait_run(dag_id, run_id, timeout=300) == "failed"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"]) == ("rejected", "timeout", "timeout")
    # The reminder went out, and compensation took it back with the rest.
    reminders = [e for e in ledger(world).entries(dag_id, run_id) if e.effect.key.endswith("review-reminder")]
    assert [e.state for e in reminders] == ["undone"], reminders
    assert_rolled_back(world, "timeout", "rejected by timeout: no decision within 1 minute 30 seconds (deadline 20")
    late = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "approve"})
    assert late.status_code == 409 and "already decided" in late.json()["detail"]
    form = f"{stack.run_path(dag_id, run_id)}/taskInstances/{GATE}/-1/hitlDetails"
    late_form = stack.api("PATCH", form, "dana", json={"chosen_options": ["Approve"], "params_input": {}})
    assert late_form.status_code == 409
    assert not [m for m in world["smtp"].messages() if "Gate timeout" in m.get("Subject", "")]


def test_an_approving_github_review_is_applied_by_the_watcher(world):
    stack, dag_id, run_id = waiting(world, "github")
    github = world["github"]
    [pull] = github.open_pulls()
    github.add_review(pull["number"], "mallory", "APPROVED", "not an approver")
    nothing = stack.api("POST", f"{decision_path(dag_id, run_id)}/github", "dana")
    assert nothing.status_code == 409 and "no decision on the review pull request yet" in nothing.json()["detail"]
    github.add_review(pull["number"], "dana-gh", "APPROVED", "Reviewed on GitHub: ship it")
    # Nobody calls anything now: the watcher DAG's next minutely round applies it.
    assert stack.wait_run(dag_id, run_id, timeout=240) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["by"], record["means"], record["reason"]) == ("dana-gh", "github-review", "Reviewed on GitHub: ship it")
    rounds = stack.api("GET", f"/api/v2/dags/{WATCH_DAG_ID}/dagRuns", params={"state": ["success"]}).json()
    assert rounds["total_entries"] >= 1
    assert github.problems == []


def test_unknown_runs_get_a_clear_answer(world):
    stack = world["stack"]
    missing = stack.api("POST", decision_path("campaign_gate-rest", "no-such-run"), "dana", json={"decision": "approve"})
    assert missing.status_code == 404 and "no run 'no-such-run'" in missing.json()["detail"]
    cli_missing = cli(stack, "approve", "gate-rest", "no-such-run", user="dana")
    assert cli_missing.returncode == 1 and "404" in cli_missing.stderr
    body = {"logical_date": None, "conf": {"channels": ["fax"]}}
    unknown = stack.api("POST", "/api/v2/dags/campaign_gate-rest/dagRuns", json=body)
    assert unknown.status_code == 400 and "fax" in unknown.text, unknown.text
    fresh = stack.trigger("campaign_gate-rest", conf={"launch": "fresh"})  # its gate is minutes of work away
    early = cli(stack, "approve", "gate-rest", fresh, user="dana")
    assert early.returncode == 1 and "409" in early.stderr and "has not reached the approval gate yet" in early.stderr


# --- how runs end: compensation on a real Airflow ------------------------------------------------
ENDINGS: list[dict] = []


def ledger(world):
    from include.orchestrator.saga.ledger import Ledger, ledger_url

    conn = json.loads(world["env"]["AIRFLOW_CONN_CAMPAIGN_LEDGER"])
    return Ledger(ledger_url(localdev.sdk_connection("campaign_ledger", conn)))


def assert_rolled_back(world, name: str, reason: str) -> dict:
    """The run failed with ``reason`` on its note; every effect it made is gone; compensating again changes nothing."""
    from include.orchestrator.backends.registry import backend_for
    from include.orchestrator.domain.model import run_key
    from include.orchestrator.saga import compensation
    from tests.worlds import found, leftovers

    stack, dag_id, run_id = world["stack"], f"campaign_gate-{name}", world["runs"][name]
    assert stack.wait_run(dag_id, run_id, timeout=300) == "failed"
    assert stack.task_state(dag_id, run_id, "compensation.undo") == "success"
    assert stack.task_state(dag_id, run_id, "compensation.report") == "failed"
    report = stack.xcom(dag_id, run_id, "compensation.report")
    assert report["status"] == "rolled back" and reason in report["reason"], report
    note = stack.api("GET", stack.run_path(dag_id, run_id)).json()["note"]
    assert note.startswith(f"Campaign rolled back: {report['reason']}"), note
    keys = [run_key(dag_id, run_id)]
    left = found(leftovers(world, keys))
    entries = ledger(world).entries(dag_id, run_id)
    assert entries and {e.state for e in entries} <= {"undone", "absent"}, entries

    def open_backend(port: str, conn_id: str):
        conn = json.loads(world["env"][f"AIRFLOW_CONN_{conn_id.upper()}"])
        return backend_for(port, conn_id, localdev.sdk_connection(conn_id, conn))

    compensation.compensate(ledger(world), dag_id, run_id, open_backend)
    again = [(e.id, e.state) for e in ledger(world).entries(dag_id, run_id)] == [(e.id, e.state) for e in entries]
    ENDINGS.append(
        {
            "injection": name,
            "run": "failed",
            "status": report["status"],
            "undone": len(report["undone"]),
            "kept": len(report["kept"]),
            "leftovers": sorted(left),
            "second": "no change" if again else "CHANGED",
            "seconds": report["compensation_seconds"],
        }
    )
    assert left == {}, left
    assert again and found(leftovers(world, keys)) == left
    return report


@pytest.fixture(scope="module", autouse=True)
def endings_table():
    yield
    print_table(ENDINGS, "Saga endings on a real Airflow")


def test_a_user_cancelling_the_run_rolls_the_campaign_back(world):
    stack, dag_id, run_id = waiting(world, "cancel")
    answer = stack.api("PATCH", stack.run_path(dag_id, run_id), "admin", json={"state": "failed"})
    assert answer.status_code == 200, answer.text
    report = assert_rolled_back(world, "cancel", "rejected by admin: the run was marked failed in Airflow")
    assert report["undone"], report
    assert stack.xcom(dag_id, run_id, GATE)["means"] == "run-cancelled"


def _holders(path: Path) -> list[int]:
    """Processes, other than this one, that have ``path`` open."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == str(path) for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_sigkill_of_a_task_process_rolls_the_campaign_back(world):
    """The social post's task is killed (SIGKILL) in both its tries; Airflow fails it; nothing stays."""
    import fcntl
    import signal
    import time

    stack, dag_id, run_id = waiting(world, "sigkill")
    lock_path = world["data"] / "social-queue" / ".queue.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    killed = []
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the task blocks on the queue's lock, mid-task
        answer = stack.api("POST", decision_path(dag_id, run_id), "dana", json={"decision": "approve", "reason": "go"})
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 240
        while len(killed) < 2 and time.monotonic() < deadline:
            for pid in _holders(lock_path):
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.2)
    assert len(killed) == 2, killed
    report = assert_rolled_back(world, "sigkill", "distribution.publish_social failed: no error recorded")
    assert stack.task_state(dag_id, run_id, "distribution.publish_social") == "failed"
    assert stack.task_state(dag_id, run_id, "distribution.publish_email") == "skipped"  # the pivot is never reached
    assert not [m for m in world["smtp"].messages() if "Gate sigkill" in m.get("Subject", "")]
    social = [e for e in ledger(world).entries(dag_id, run_id) if e.effect.port == "social"]
    assert [e.state for e in social] == ["absent"], social  # planned, never made: its undo found nothing
    assert report["absent"]
