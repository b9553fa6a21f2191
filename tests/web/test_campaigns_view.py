"""The Campaigns view's endpoints and pages against a real Airflow (api-server, scheduler,
dag-processor on loopback): auth, the JSON a script reads, and a run in every state.

Campaigns (all triggered by admin, decided by dana):
- ``view-none``: never run.       - ``view-queued``: triggered while paused (queued).
- ``view-wait``: waits for approval.   - ``view-ok``: approved with an edit, completed.
- ``view-reject``: rejected, rolled back.  - ``view-hidden``: a DAG eve may not read.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.stack import AirflowStack
from tests.worlds import campaign_world, export

pytestmark = pytest.mark.integration
HOSTILE = '<img src=x onerror="alert(1)"> {{ 7*7 }}'
NAMES = ["none", "queued", "wait", "ok", "reject", "hidden"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")

    def edit(campaign):
        campaign.update(slug="view-ok", name="View ok")
        campaign["approval"] = {"approvers": ["dana", "admin"], "timeout": "2h"}

    with campaign_world(root, edit) as cw:
        base = cw["campaign"]
        for name in NAMES:
            if name != "ok":
                extra = {"description": f"Campaign {name}. {HOSTILE}"} if name == "wait" else {}
                (cw["campaigns"] / f"view-{name}.yaml").write_text(
                    yaml.safe_dump({**base, "slug": f"view-{name}", "name": f"View {name}", **extra})
                )
        stack = AirflowStack(
            root / "airflow",
            env={
                **export(cw),
                "AIRFLOW__CORE__AUTH_MANAGER": "tests.restricted_auth.RestrictedAuthManager",
                "CAMPAIGN_TEST_HIDDEN": "eve:campaign_view-hidden",
            },
        )
        try:
            stack.start()
            stack.wait_for_dags([f"campaign_view-{n}" for n in NAMES])
            assert stack.api("PATCH", "/api/v2/dags/campaign_view-queued", json={"is_paused": True}).status_code == 200
            runs = {n: stack.trigger(f"campaign_view-{n}") for n in ("queued", "wait", "ok", "reject", "hidden")}
            for name in ("wait", "ok", "reject"):
                stack.wait_task(f"campaign_view-{name}", runs[name], "review.approval", {"awaiting_input"}, timeout=600)
            decide(stack, "ok", runs["ok"], {"decision": "approve", "copy": {"headline": "Edited headline"}})
            decide(stack, "reject", runs["reject"], {"decision": "reject", "reason": "off-brand"})
            for name in ("ok", "reject"):
                stack.wait_run(f"campaign_view-{name}", runs[name], timeout=600)
            yield {"stack": stack, "runs": runs}
        finally:
            stack.stop()


def decide(stack: AirflowStack, name: str, run_id: str, body: dict) -> None:
    answer = stack.api("POST", f"/campaigns/api/v1/approvals/campaign_view-{name}/{quote(run_id, safe='')}", "dana", json=body)
    assert answer.status_code == 200, answer.text


def run_path(name: str, run_id: str) -> str:
    return f"/campaigns/api/v1/runs/campaign_view-{name}/{quote(run_id, safe='')}"


def test_every_endpoint_needs_a_user(world):
    stack, run_id = world["stack"], world["runs"]["wait"]
    for path in [
        "/campaigns/api/v1/campaigns",
        "/campaigns/api/v1/campaigns/campaign_view-wait",
        run_path("wait", run_id),
        f"{run_path('wait', run_id)}/images/email",
        "/campaigns/ui/campaigns",
        f"/campaigns/ui/runs/campaign_view-wait/{quote(run_id, safe='')}",
    ]:
        answer = httpx.get(f"{stack.url}{path}", timeout=30)
        assert answer.status_code == 401, (path, answer.status_code, answer.text[:200])
    page = httpx.get(f"{stack.url}/campaigns/ui/campaigns", timeout=30)
    assert "text/html" in page.headers["content-type"] and "Sign in to Airflow" in page.text


def test_a_user_sees_only_the_dags_the_auth_manager_grants(world):
    stack, run_id = world["stack"], world["runs"]["hidden"]
    listed = stack.api("GET", "/campaigns/api/v1/campaigns", "eve").json()
    assert "campaign_view-hidden" not in {c["dag_id"] for c in listed["campaigns"]}
    assert "campaign_view-wait" in {c["dag_id"] for c in listed["campaigns"]}
    for path in [
        "/campaigns/api/v1/campaigns/campaign_view-hidden",
        run_path("hidden", run_id),
        f"/campaigns/ui/runs/campaign_view-hidden/{quote(run_id, safe='')}",
    ]:
        assert stack.api("GET", path, "eve").status_code == 403, path
        assert stack.api("GET", path, "dana").status_code == 200, path
    assert "campaign_view-hidden" in {
        c["dag_id"] for c in stack.api("GET", "/campaigns/api/v1/campaigns", "dana").json()["campaigns"]
    }


def test_the_campaign_list_shape(world):
    stack, runs = world["stack"], world["runs"]
    answer = stack.api("GET", "/campaigns/api/v1/campaigns", "dana")
    assert answer.status_code == 200
    body = answer.json()
    by_id = {c["dag_id"]: c for c in body["campaigns"]}
    assert [c["name"] for c in body["campaigns"]] == sorted(c["name"] for c in body["campaigns"])
    never = by_id["campaign_view-none"]
    assert never["runs"] == [] and never["waiting"] == 0 and never["name"] == "View none"
    assert never["owner"] == "marketing@pipewise.example.com" or "@" in never["owner"]
    assert set(never["channels"]) == {"email", "social", "blog"} and never["schedule"] and never["file_error"] == ""
    assert by_id["campaign_view-wait"]["waiting"] == 1
    waiting = [r for r in body["waiting"] if r["dag_id"].startswith("campaign_view-")]
    assert {(r["dag_id"], r["run_id"]) for r in waiting} == {(f"campaign_view-{n}", runs[n]) for n in ("wait", "hidden")}
    assert [r["approval"]["deadline"] for r in waiting] == sorted(r["approval"]["deadline"] for r in waiting)
    approval = waiting[0]["approval"]
    assert approval["waiting"] and approval["deadline"] and approval["eligible"] == ["dana"]


def test_a_run_in_every_state(world):
    stack, runs = world["stack"], world["runs"]

    def run(name: str, user: str = "dana") -> dict:
        answer = stack.api("GET", run_path(name, runs[name]), user)
        assert answer.status_code == 200, answer.text
        return answer.json()

    queued = run("queued")
    assert queued["state"] == "queued" and queued["progress"]["phase"] == "queued" and queued["approval"] is None

    waiting = run("wait")
    assert waiting["state"] == "running" and waiting["progress"]["phase"] == "waiting for approval"
    assert 0 < waiting["progress"]["done"] < waiting["progress"]["total"]
    review = waiting["review"]
    assert review["may_decide"] and review["audience"] and set(review["channels"]) == {"email", "social", "blog"}
    assert review["recipients"] >= 1 and review["recipient_sample"] and review["sender"]
    assert {i["channel"] for i in review["images"]} == {"email", "social", "blog"}
    assert review["copy_fields"]["headline"] and review["copy_fields"]["email_body"]
    by_admin = run("wait", "admin")["review"]  # admin triggered it: no self-approval
    assert not by_admin["may_decide"] and "self-approval" in by_admin["why_not"]

    for image in review["images"]:
        answer = stack.api("GET", f"{run_path('wait', runs['wait'])}/images/{image['channel']}", "dana")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert hashlib.sha256(answer.content).hexdigest() == image["sha256"]
    assert stack.api("GET", f"{run_path('wait', runs['wait'])}/images/fax", "dana").status_code == 404

    done = run("ok")
    assert done["state"] == "success" and done["progress"]["phase"] == "finished"
    assert done["approval"]["decision"]["by"] == "dana" and not done["approval"]["waiting"]
    assert done["outcome"]["status"] == "completed"
    assert {p["channel"] for p in done["outcome"]["published"]} == {"email", "social", "blog"}
    assert done["review"]["edits"] == [
        {"field": "headline", "before": done["review"]["edits"][0]["before"], "after": "Edited headline"}
    ]

    rejected = run("reject")
    assert rejected["state"] == "failed" and rejected["outcome"]["status"] == "rolled back"
    assert rejected["outcome"]["left"] == [] and rejected["outcome"]["undone"]
    assert rejected["approval"]["decision"]["decision"] == "rejected"

    assert stack.api("GET", "/campaigns/api/v1/runs/campaign_view-wait/no-such-run", "dana").status_code == 404
    assert stack.api("GET", "/campaigns/api/v1/campaigns/campaign_view-nope", "dana").status_code in (403, 404)
    one = stack.api("GET", "/campaigns/api/v1/campaigns/campaign_view-ok", "dana").json()
    assert [r["run_id"] for r in one["runs"]] == [runs["ok"]] and one["name"] == "View ok"


def test_pages_escape_campaign_text_and_forbid_inline_scripts(world):
    stack, run_id = world["stack"], world["runs"]["wait"]
    page = stack.api("GET", "/campaigns/ui/campaigns", "dana")
    assert page.status_code == 200 and "View wait" in page.text
    assert HOSTILE not in page.text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"] and "<script>" not in page.text
    run_page = stack.api("GET", f"/campaigns/ui/runs/campaign_view-wait/{quote(run_id, safe='')}", "dana")
    assert run_page.status_code == 200 and 'id="decision"' in run_page.text and "<time datetime=" in run_page.text
