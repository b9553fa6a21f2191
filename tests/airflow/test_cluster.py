"""Campaigns on a real CeleryExecutor cluster whose workers share no disk (tests/cluster.py).

One cluster for the module: PostgreSQL metadata DB, Redis broker, api-server, scheduler,
dag-processor, triggerer and two Celery workers, each in its own mount namespace with its own
folder over the Airflow home (two hosts, two disks). Every port that must be seen by both workers
is on a shared service: the saga ledger on PostgreSQL, the breakers on Redis, the images in S3
(moto server on loopback), memory on the Qdrant server double, email through a real SMTP server,
review/notify/social/blog/analytics on the production backends' doubles.

- a. Four campaigns at once, approved through the decision API: all succeed, both workers ran
  tasks, every effect exists exactly once.
- b. A worker SIGKILLed (its whole process tree: the host died) while a distribution task is in
  the middle of its call on it: the scheduler's heartbeat sweep fails the task, Airflow retries it
  on the other worker, it adopts the effect, and the run ends with one of each.
- c. A run rejected after its reviewers' notification was written to the local disk of a worker
  that is then gone: compensation on the other worker cannot see it, so it is reported left
  ("cleanup needed") and an alert goes out, never "absent"; the same scenario on shared stores
  only ends "rolled back" with nothing left.

Run with ``-s`` for the timings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import pytest
import yaml

from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.domain.model import run_key
from tests.cluster import CeleryCluster, shared_services
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

BREAKERS_DB = 12  # the Redis database of this module's circuit breakers (the broker is on 11)
GATE = "review.approval"
GATE_SETTLED = {"awaiting_input", "failed", "upstream_failed"}  # waiting, or never will
APPROVED = [
    ("cluster-alpha", "Alpha Launch"),
    ("cluster-bravo", "Bravo Webinar"),
    ("cluster-charlie", "Charlie Digest"),
    ("cluster-delta", "Delta Preview"),
]
KILLED = ("cluster-kill", "Kilo Release")  # test b
LOCAL_NOTIFY = ("cluster-local-notify", "Lima Outbox")  # test c: its reviewers' notification on a worker's disk
SHARED = ("cluster-shared", "Mike Shared")  # test c: the same, every store shared
OUTBOX = "campaign_data/outbox/notifications"  # campaign_notify_local's folder, under each worker's home
HEARTBEAT_TIMEOUT, DETECTION_INTERVAL, RETRY_DELAY = 30, 5, 2


def dag(slug: str) -> str:
    return f"campaign_{slug}"


def campaign_file(slug: str, name: str, site_port: int, notify: str | None = None) -> dict[str, Any]:
    campaign = yaml.safe_load((CAMPAIGNS_DIR / "spring-launch.yaml").read_text())
    campaign |= {"slug": slug, "name": name, "retries": {"count": 2, "delay": f"{RETRY_DELAY}s"}}
    # Its own product, so its own copy: Buffer takes a post of the same text on the same channel for one post.
    campaign["product"]["description"] = campaign["product"]["description"].replace("Pipewise 3", name)
    campaign["research"]["competitor_urls"] = [f"http://127.0.0.1:{site_port}/flowwatch.html"]
    campaign["approval"] = {"approvers": ["dana"], "timeout": "1h"}
    if notify:
        campaign["connections"] = {"notify": notify}
    return campaign


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    root = tmp_path_factory.mktemp("cluster")
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        site = localdev.serve_demo_site()
        stack.callback(site.shutdown)
        s3 = stack.enter_context(S3Server())
        shared = shared_services(stack, root, s3, BREAKERS_DB)
        services, qdrant, smtp, bucket = shared["doubles"], shared["qdrant"], shared["smtp"], shared["bucket"]
        conns = shared["conns"] | {"campaign_notify_local": {"conn_type": "fs", "extra": {"path": OUTBOX}}}  # a worker's own disk

        campaigns = root / "campaigns"
        campaigns.mkdir()
        port = site.server_address[1]
        files = [campaign_file(s, n, port) for s, n in [*APPROVED, KILLED, SHARED]]
        files.append(campaign_file(*LOCAL_NOTIFY, port, notify="campaign_notify_local"))
        for campaign in files:
            (campaigns / f"{campaign['slug']}.yaml").write_text(yaml.safe_dump(campaign))

        env = {**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(campaigns)}
        cluster = CeleryCluster(
            root / "stack", env=env, heartbeat_timeout=HEARTBEAT_TIMEOUT, detection_interval=DETECTION_INTERVAL
        )
        stack.callback(cluster.stop)
        cluster.start()
        started = time.monotonic()
        cluster.wait_for_dags([dag(c["slug"]) for c in files])
        parsed = time.monotonic()
        # Every run at once: the ones that wait at the gate get there while test a's go through. Test c's
        # runs never get past the gate: one channel (one image) is enough for them.
        rejected = {LOCAL_NOTIFY[0], SHARED[0]}
        runs = {
            c["slug"]: cluster.trigger(dag(c["slug"]), conf={"channels": ["blog"]} if c["slug"] in rejected else {})
            for c in files
        }
        print(f"\ncluster up in {started - began:.1f} s, DAGs parsed {parsed - started:.1f} s later; {len(runs)} runs triggered")
        yield {
            "cluster": cluster,
            "services": services,
            "qdrant": qdrant,
            "smtp": smtp,
            "s3": s3,
            "bucket": bucket,
            "runs": runs,
            "began": began,
        }
        print(f"\ncluster module: {time.monotonic() - began:.1f} s in all")


# --- helpers -------------------------------------------------------------------------------------
def decide(cluster: CeleryCluster, slug: str, run_id: str, decision: str, reason: str) -> None:
    answer = cluster.api(
        "POST", f"/campaigns/api/v1/approvals/{dag(slug)}/{run_id}", "dana", json={"decision": decision, "reason": reason}
    )
    assert answer.status_code == 200, answer.text


def wait_gate(cluster: CeleryCluster, slug: str, run_id: str) -> None:
    state = cluster.wait_task(dag(slug), run_id, GATE, GATE_SETTLED, timeout=600)
    assert state == "awaiting_input", (slug, state, failures(cluster, slug, run_id))


def failures(cluster: CeleryCluster, slug: str, run_id: str) -> dict[str, Any]:
    """What went wrong in a run, for assertion messages: failed tasks with their hosts and errors."""
    bad = [t for t in cluster.task_instances(dag(slug), run_id) if t["state"] in ("failed", "upstream_failed", "up_for_retry")]
    return {
        t["task_id"]: (t["state"], t["hostname"], cluster.xcom(dag(slug), run_id, t["task_id"], "error", t["map_index"]))
        for t in bad
    }


def hosts(cluster: CeleryCluster, slug: str, run_id: str) -> dict[str, str]:
    """Which worker ran each task instance of a run (tasks that ran: the gate and skipped ones did not)."""
    return {
        f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: cluster.worker_of(t["hostname"])
        for t in cluster.task_instances(dag(slug), run_id)
        if t["hostname"] and t["task_id"] != GATE
    }


def effects(world: dict[str, Any], slug: str, name: str, run_id: str) -> dict[str, int]:
    """What the shared services hold of one run, per kind (the saga alert aside)."""
    s, key = world["services"], run_key(dag(slug), run_id)
    post = f"-{slug}.md"
    messages = [
        m for m in s["slack"].live_messages() if key in str(m.get("metadata")) and "saga-alert" not in str(m.get("metadata"))
    ]
    mails = [m for m in world["smtp"].messages() if key in m["Message-ID"]]
    return {
        "review pull requests": len([p for p in s["github review"].open_pulls() if key in json.dumps(p)]),
        "review branches": len([b for b in s["github review"].branches() if key in b]),
        "slack messages": len(messages),
        "blog posts": len([p for p in s["github blog"].files("main") if p.startswith("_posts/") and p.endswith(post)]),
        "blog publish commits": len(
            [c for c in s["github blog"].commits("main") if c.get("message", "").startswith("Publish") and post in c["message"]]
        ),
        "buffer posts": len([p for p in s["buffer"].queued_posts() if name in p["text"]]),
        "emails": len(mails),
        "dashboards": len([uid for uid in s["grafana"].dashboards() if key in uid]),
        "images in S3": len([k for k in world["s3"].objects(world["bucket"]) if key in k]),
        "memory points": len([k for k in world["qdrant"].point_keys() if key in k]),
    }


# One completed campaign: one of each, two social posts (two Buffer channels), three images (three channels).
ONE_CAMPAIGN = {
    "review pull requests": 1,
    "review branches": 1,
    "slack messages": 1,
    "blog posts": 1,
    "blog publish commits": 1,
    "buffer posts": 2,
    "emails": 1,
    "dashboards": 1,
    "images in S3": 3,
}


def made_once(found: dict[str, int]) -> dict[str, int]:
    """``found`` without the memory points (a campaign stores several: its draft and research)."""
    assert found["memory points"] > 0, found
    return {k: v for k, v in found.items() if k != "memory points"}


def problems(world: dict[str, Any]) -> dict[str, list[str]]:
    doubles = {**world["services"], "qdrant": world["qdrant"]}
    return {name: double.problems for name, double in doubles.items() if double.problems}


# --- a ---------------------------------------------------------------------------------------------
def test_campaigns_run_on_both_workers_and_make_each_effect_once(world):
    cluster, runs = world["cluster"], world["runs"]
    began = time.monotonic()
    pending = {slug: runs[slug] for slug, _ in APPROVED}
    gates: dict[str, float] = {}
    while len(gates) < len(pending):  # approve each run as soon as it waits
        for slug, run_id in pending.items():
            if slug not in gates and cluster.task_state(dag(slug), run_id, GATE) in GATE_SETTLED:
                wait_gate(cluster, slug, run_id)
                decide(cluster, slug, run_id, "approve", "ship it")
                gates[slug] = time.monotonic() - world["began"]
        cluster._check_alive()
        assert time.monotonic() - began < 600, f"runs not at the gate: {set(pending) - set(gates)}"
        time.sleep(1)
    states = {slug: cluster.wait_run(dag(slug), run_id, timeout=600) for slug, run_id in pending.items()}
    done = time.monotonic() - world["began"]
    assert states == {slug: "success" for slug in pending}, {s: failures(cluster, s, runs[s]) for s in pending}

    ran = {slug: hosts(cluster, slug, run_id) for slug, run_id in pending.items()}
    per_worker = {w: sum(list(h.values()).count(w) for h in ran.values()) for w in cluster.workers}
    print(
        f"\na. {len(pending)} campaigns: at the gate by {max(gates.values()):.0f} s, all done {done:.0f} s after the "
        f"module began; task instances per worker: {per_worker}"
    )
    assert all(per_worker.values()), per_worker  # both "hosts" worked
    assert all(set(h.values()) <= set(cluster.workers) for h in ran.values()), ran  # every task ran on a worker
    for slug, name in APPROVED:
        report = cluster.xcom(dag(slug), runs[slug], "compensation.report")
        assert report["status"] == "completed" and report["left"] == [], report
        found = effects(world, slug, name, runs[slug])
        assert made_once(found) == ONE_CAMPAIGN, (slug, found)
        [mail] = [m for m in world["smtp"].messages() if run_key(dag(slug), runs[slug]) in m["Message-ID"]]
        assert mail["X-RcptTo"] == "early-access@lists.example.com, customers@lists.example.com", mail["X-RcptTo"]
    assert problems(world) == {}


# --- b ---------------------------------------------------------------------------------------------
def test_a_killed_worker_s_tasks_are_retried_on_the_other_and_nothing_is_made_twice(world):
    cluster, (slug, name) = world["cluster"], KILLED
    run_id, services = world["runs"][slug], world["services"]
    website, buffer = services["github blog"], services["buffer"]
    # Each channel's creating call is made, then its answer held: the task is in the middle of it.
    holds = {
        # The branch update publishes post and hero (its body names only a commit): no other run publishes by now.
        "distribution.publish_blog": website.hold("PATCH", r"/api/v3/repos/acme/website/git/refs/heads/main"),
        "distribution.publish_social": buffer.hold("POST", "/", body_contains=name),
    }
    try:
        wait_gate(cluster, slug, run_id)
        decide(cluster, slug, run_id, "approve", "ship it")
        assert holds["distribution.publish_blog"].held.wait(300), failures(cluster, slug, run_id)
        holds["distribution.publish_social"].held.wait(20)  # side by side: usually in its call too
        victim = cluster.worker_of(cluster.task_instance(dag(slug), run_id, "distribution.publish_blog")["hostname"])
        assert victim, "publish_blog is running on no worker of the cluster"
        running = [
            t
            for t in cluster.task_instances(dag(slug), run_id)
            if t["state"] == "running" and cluster.worker_of(t["hostname"]) == victim
        ]
        killed_at = time.monotonic()
        pids = cluster.kill_worker(victim)
    finally:
        for hold in holds.values():
            hold.release.set()  # the answers go to dead sockets
    survivor = next(w for w in cluster.workers if w != victim)
    social = cluster.task_instance(dag(slug), run_id, "distribution.publish_social")
    print(
        f"\nb. killed {victim} ({len(pids)} processes) while it ran {[t['task_id'] for t in running]}; "
        f"publish_social was on {cluster.worker_of(social['hostname'])}"
    )

    # Each of its tasks: failed by the heartbeat sweep, then its next try running on the survivor.
    timeline: dict[str, dict[str, float | str]] = {}
    watch = {t["task_id"]: t["try_number"] for t in running}
    while len(timeline) < len(watch) or any("running" not in v for v in timeline.values()):
        assert time.monotonic() - killed_at < 180, (timeline, failures(cluster, slug, run_id))
        for task_id, first_try in watch.items():
            ti, seen = cluster.task_instance(dag(slug), run_id, task_id), timeline.setdefault(task_id, {})
            if "failed" not in seen and (ti["try_number"] > first_try or ti["state"] != "running"):
                seen["failed"] = time.monotonic() - killed_at
            if "running" not in seen and ti["try_number"] > first_try and ti["state"] in ("running", "success"):
                seen["running"], seen["host"] = time.monotonic() - killed_at, cluster.worker_of(ti["hostname"])
        time.sleep(0.25)
    cluster.start_worker(victim)  # the host comes back (with its disk) for the next tests
    state = cluster.wait_run(dag(slug), run_id, timeout=600)

    bound = HEARTBEAT_TIMEOUT + DETECTION_INTERVAL + RETRY_DELAY + 15  # + scheduling and task start-up
    for task_id, seen in timeline.items():
        print(
            f"   {task_id}: failed by the heartbeat sweep {seen['failed']:.1f} s after the kill, next try running on "
            f"{seen['host']} {seen['running']:.1f} s after it (bound {bound} s)"
        )
    assert "distribution.publish_blog" in timeline, timeline
    assert all(seen["host"] == survivor for seen in timeline.values()), timeline
    assert all(float(seen["running"]) < bound for seen in timeline.values()), timeline
    report = cluster.xcom(dag(slug), run_id, "compensation.report")
    found = effects(world, slug, name, run_id)
    print(f"   run {state}, report {report['status']}: {found}")
    if state == "success":
        assert report["status"] == "completed", report
        assert made_once(found) == ONE_CAMPAIGN, found  # 0 duplicates
        kept = [line["port"] for line in report["kept"]]  # the report names each effect once
        assert (kept.count("blog"), kept.count("social"), kept.count("email")) == (1, 1, 1), report["kept"]
    else:  # rolled back: the report says so, and nothing of it is left
        assert report["status"] == "rolled back" and report["left"] == [], report
        assert {k: v for k, v in found.items() if k != "emails"} == dict.fromkeys(found.keys() - {"emails"}, 0), found
    assert problems(world) == {}


# --- c ---------------------------------------------------------------------------------------------
def _reject_with_its_notifier_gone(world: dict[str, Any], slugs: dict[str, str]) -> dict[str, str]:
    """For each run (campaign slug -> name): stop the worker that ran ``review.notify_reviewers``, reject
    the run, let the other worker compensate, bring the worker back. Returns the worker that notified."""
    cluster, runs = world["cluster"], world["runs"]
    notifier: dict[str, str] = {}
    for slug, name in slugs.items():
        wait_gate(cluster, slug, runs[slug])
        ti = cluster.task_instance(dag(slug), runs[slug], "review.notify_reviewers")
        notifier[slug] = cluster.worker_of(ti["hostname"])
        assert notifier[slug], ti
        made = effects(world, slug, name, runs[slug])  # what the rollback must take back
        assert (made["images in S3"], made["review pull requests"]) == (1, 1) and made["memory points"], made
    for worker in sorted(set(notifier.values())):
        group = [slug for slug in slugs if notifier[slug] == worker]
        cluster.stop_worker(worker)
        began = time.monotonic()
        for slug in group:
            decide(cluster, slug, runs[slug], "reject", "off-brand")
        ended = {slug: cluster.wait_run(dag(slug), runs[slug], timeout=300) for slug in group}
        print(f"\nc. {worker} stopped; rejected {group}: ended {ended} {time.monotonic() - began:.1f} s later")
        cluster.start_worker(worker)
    return notifier


def test_a_rollback_on_the_other_worker_reports_what_it_cannot_see_as_left(world):
    cluster, runs = world["cluster"], world["runs"]
    (local, local_name), (shared, shared_name) = LOCAL_NOTIFY, SHARED
    notifier = _reject_with_its_notifier_gone(world, dict([LOCAL_NOTIFY, SHARED]))

    # The run whose notification is on a disk compensation could not see: cleanup needed, never absent.
    run_id = runs[local]
    assert cluster.run_state(dag(local), run_id) == "failed"
    undo = {t["task_id"]: t for t in cluster.task_instances(dag(local), run_id)}["compensation.undo"]
    compensator = cluster.worker_of(undo["hostname"])
    assert compensator and compensator != notifier[local], (compensator, notifier[local])
    report = cluster.xcom(dag(local), run_id, "compensation.report")
    print(
        f"   {local}: notified on {notifier[local]}, compensated on {compensator}: {report['status']}; "
        f"left {[line['kind'] + ' ' + line['key'] for line in report['left']]}"
    )
    assert report["status"] == "cleanup needed", report
    [left] = report["left"]
    assert left["port"] == "notify" and "does not see" in left["error"], left
    assert not [line for line in report["absent"] if line["port"] == "notify"], report["absent"]
    note = cluster.api("GET", cluster.run_path(dag(local), run_id)).json()["note"] or ""
    assert "INCOMPLETELY" in note and "left to clean up by hand" in note, note
    key = run_key(dag(local), run_id)
    disk = {name: worker.disk / OUTBOX for name, worker in cluster.workers.items()}
    assert [p.name for p in disk[notifier[local]].glob(f"*{key}*")], "the notification is still where it was made"
    alerts = [p for p in disk[compensator].glob(f"*{key}*saga-alert*")]
    assert alerts, f"no alert in {disk[compensator]}"  # the notify port of this campaign: that worker's outbox
    assert "notify" in json.loads(alerts[0].read_text())["text"], alerts[0].read_text()
    found = effects(world, local, local_name, run_id)
    assert {k: v for k, v in found.items() if v} == {}, found  # everything on shared stores (S3 images too) is gone

    # The same rejection with every store shared: rolled back, nothing left anywhere.
    run_id = runs[shared]
    report = cluster.xcom(dag(shared), run_id, "compensation.report")
    print(
        f"   {shared}: notified on {notifier[shared]}: {report['status']}, undone {len(report['undone'])}, "
        f"left {len(report['left'])}"
    )
    assert report["status"] == "rolled back" and report["left"] == [], report
    assert any(line["port"] == "notify" for line in report["undone"]), report["undone"]
    found = effects(world, shared, shared_name, run_id)
    assert {k: v for k, v in found.items() if v} == {}, found
    alerts = [m for m in world["services"]["slack"].live_messages() if "saga-alert" in str(m.get("metadata"))]
    assert alerts == [], alerts
    assert problems(world) == {}
