"""No side effect happens twice: on a real Airflow, each side-effecting step's task process is
SIGKILLed right after the service made the effect and before the task heard of it; after Airflow's
retry there is exactly one message, pull request, commit, email, post and dashboard.

The services are the production backends' doubles: each holds back its answer to the step's
creating call (the effect is made; the caller waits), the test kills the process holding the
connection, then lets the answer go to a dead socket. The retry must find and adopt the effect by
its key. Prints the table of kills and duplicates (goal: 0).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from typing import Any

import psutil
import pytest
import yaml

from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.domain.model import run_key
from tests.stack import AirflowStack
from tests.worlds import delivery_connections, delivery_doubles, local_connections

pytestmark = pytest.mark.integration
DAG_ID = "campaign_dup-check"
LAUNCH_DAG_ID = "campaign_dup-launch"


def _kill_caller(double: Any) -> list[int]:
    """SIGKILL every process (but this one) with a connection open to the double."""
    port, killed = double.server.port, []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port and conn.pid and conn.pid != os.getpid() and conn.pid not in killed:
            os.kill(conn.pid, signal.SIGKILL)
            killed.append(conn.pid)
    return killed


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dup")
    conns = local_connections(root / "data")
    campaign = yaml.safe_load((CAMPAIGNS_DIR / "spring-launch.yaml").read_text())
    campaign |= {"slug": "dup-check", "retries": {"count": 1, "delay": "1s"}}
    campaign["research"]["competitor_urls"] = []
    campaign["approval"] = {"approvers": ["dana"], "timeout": "1h"}
    (root / "campaigns").mkdir()
    (root / "campaigns" / "dup-check.yaml").write_text(yaml.safe_dump(campaign))
    # Its own campaign: another blog path and other copy than dup-check's run of the same day.
    launch = campaign | {"slug": "dup-launch", "name": "Launch twice check"}
    # Its own product too: Buffer takes a post of the same text on the same channel for one post.
    launch["product"] = campaign["product"] | {"description": "Launch twice check shows every run's effects once."}
    (root / "campaigns" / "dup-launch.yaml").write_text(yaml.safe_dump(launch))
    with contextlib.ExitStack() as stack:
        services = delivery_doubles(stack)
        conns |= delivery_connections(services)
        slack, review, website = services["slack"], services["github review"], services["github blog"]
        sendgrid, buffer, grafana = services["sendgrid"], services["buffer"], services["grafana"]
        # One creating call per side-effecting step with an external service: its answer is held.
        holds = {
            "review.open_review": (review, review.hold("POST", r"/api/v3/repos/acme/campaign-reviews/pulls")),
            "review.notify_reviewers": (slack, slack.hold("POST", r"/api/chat\.postMessage")),
            "distribution.publish_blog": (website, website.hold("PATCH", r"/api/v3/repos/acme/website/git/refs/heads/main")),
            "distribution.publish_social": (buffer, buffer.hold("POST", "/", body_contains="createPost")),
            "distribution.publish_email": (sendgrid, sendgrid.hold("PUT", r"/v3/marketing/singlesends/[^/]+/schedule")),
            "analytics.create_dashboard": (grafana, grafana.hold("POST", r"/api/dashboards/db")),
        }
        kills: dict[str, list[int]] = {}

        def killer(task_id: str, double: Any, hold: Any) -> None:
            if hold.held.wait(600):
                kills[task_id] = _kill_caller(double)
            hold.release.set()

        threads = [threading.Thread(target=killer, args=(t, d, h), daemon=True) for t, (d, h) in holds.items()]
        for thread in threads:
            thread.start()
        env = {**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(root / "campaigns")}
        airflow = AirflowStack(root / "airflow", env=env)
        try:
            airflow.start()
            airflow.wait_for_dags([DAG_ID, LAUNCH_DAG_ID])
            yield {"stack": airflow, "kills": kills, "services": services}
        finally:
            for _, hold in holds.values():
                hold.release.set()
            airflow.stop()


def effects(services: dict[str, Any], key: str) -> dict[str, int]:
    """What the services hold of one run (by its key), per side-effecting step; the blog commits
    and posts carry no run key: those count every run's."""
    slack, review, website = services["slack"], services["github review"], services["github blog"]
    sendgrid, buffer, grafana = services["sendgrid"], services["buffer"], services["grafana"]
    return {
        "review.open_review": len([p for p in review.pulls() if key in json.dumps(p)]),
        "review.notify_reviewers": len([m for m in slack.live_messages() if key in str(m.get("metadata"))]),
        "distribution.publish_blog": len([c for c in website.commits("main") if "Publish" in c.get("message", "")]),
        "distribution.publish_social": len(buffer.posts()),
        "distribution.publish_email": len([s for s in sendgrid.single_sends() if key in s["name"]]),
        "analytics.create_dashboard": len([uid for uid in grafana.dashboards() if key in uid]),
    }


EFFECT_STEPS = (
    "review.open_review",
    "review.notify_reviewers",
    "distribution.publish_blog",
    "distribution.publish_social",
    "distribution.publish_email",
    "analytics.create_dashboard",
)
UNKEYED = ("distribution.publish_blog", "distribution.publish_social")  # counted over all runs
ONE_LAUNCH = {task: 2 if task == "distribution.publish_social" else 1 for task in EFFECT_STEPS}  # two Buffer channels


def test_a_task_killed_after_its_effect_was_made_does_not_make_it_twice(world):
    stack = world["stack"]
    run_id = stack.trigger(DAG_ID)
    stack.wait_task(DAG_ID, run_id, "review.approval", {"awaiting_input", "failed", "upstream_failed"}, timeout=600)
    answer = stack.api(
        "POST", f"/campaigns/api/v1/approvals/{DAG_ID}/{run_id}", "dana", json={"decision": "approve", "reason": "ship it"}
    )
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(DAG_ID, run_id, timeout=600) == "success"
    services = world["services"]
    made = effects(services, run_key(DAG_ID, run_id))
    tries = {
        task: stack.api("GET", f"{stack.run_path(DAG_ID, run_id)}/taskInstances/{task}").json()["try_number"] for task in made
    }
    lines = [f"{'step':<30} {'killed':>6} {'tries':>5} {'made':>4} {'duplicates':>10}"]
    for task in made:
        lines.append(
            f"{task:<30} {len(world['kills'].get(task, [])):>6} {tries[task]:>5} {made[task]:>4} "
            f"{made[task] - ONE_LAUNCH[task]:>10}"
        )
    print("\nDuplicate delivery after SIGKILL (real Airflow)\n" + "\n".join(lines))
    assert all(world["kills"].get(task) for task in made), world["kills"]  # every step's process was killed once
    assert all(tries[task] == 2 for task in made), tries  # and Airflow retried it
    assert made == ONE_LAUNCH, made
    for name, double in services.items():
        assert double.problems == [], (name, double.problems)


def test_the_same_launch_triggered_twice_at_once_is_sent_once(world):
    """The campaign triggered twice at the same moment with the same (default) conf: one run sends,
    the other stops at its first task and makes nothing; a third trigger after the launch went out
    stops there too."""
    stack, services = world["stack"], world["services"]
    conf: dict[str, Any] = {}
    before = effects(services, "no run key")
    first, second = stack.trigger(LAUNCH_DAG_ID, conf=conf), stack.trigger(LAUNCH_DAG_ID, conf=conf)
    states = {run: stack.wait_task(LAUNCH_DAG_ID, run, "validate_conf", {"success", "failed"}) for run in (first, second)}
    assert sorted(states.values()) == ["failed", "success"], states
    [sender] = [run for run, state in states.items() if state == "success"]
    [refused] = [run for run in states if run != sender]
    stack.wait_task(LAUNCH_DAG_ID, sender, "review.approval", {"awaiting_input"}, timeout=600)
    answer = stack.api(
        "POST",
        f"/campaigns/api/v1/approvals/{LAUNCH_DAG_ID}/{sender}",
        "dana",
        json={"decision": "approve", "reason": "second wave"},
    )
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(LAUNCH_DAG_ID, sender, timeout=600) == "success"
    late = stack.trigger(LAUNCH_DAG_ID, conf=conf)
    assert stack.wait_run(LAUNCH_DAG_ID, refused) == "failed" and stack.wait_run(LAUNCH_DAG_ID, late) == "failed"
    for run in (refused, late):
        report = stack.xcom(LAUNCH_DAG_ID, run, "compensation.report")
        assert f"already taken by run {sender!r}" in report["reason"], report
        assert report["undone"] == report["absent"] == report["left"] == [], report
        made = effects(services, run_key(LAUNCH_DAG_ID, run))
        assert all(made[t] == 0 for t in EFFECT_STEPS if t not in UNKEYED), made
    after = effects(services, run_key(LAUNCH_DAG_ID, sender))
    sent = {t: after[t] - before[t] if t in UNKEYED else after[t] for t in EFFECT_STEPS}  # every run's, counted once
    print(f"\nSame launch triggered 3 times (2 at once): sent by {sender}, refused {refused} and {late}: {sent}")
    assert sent == ONE_LAUNCH, sent
