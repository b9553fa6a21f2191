"""A campaign's whole world on this machine, for tests: every port's backend under one folder,
the competitor pages and an SMTP server on loopback (or sample campaigns on a started Airflow, for
the browser tests); and what that world still holds afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from tests.stack import AirflowStack


def local_connections(data: Path) -> dict[str, dict[str, Any]]:
    """The connections of airflow_settings.yaml, every local backend's folder moved under ``data``."""
    conns = localdev.settings_connections()
    for conn in conns.values():
        extra = conn.get("extra", {})
        if "path" in extra and extra.get("relative_to") != "project":
            extra["path"] = str(data / Path(extra["path"]).name)
    return conns


@contextlib.contextmanager
def campaign_world(
    root: Path, edit: Callable[[dict[str, Any]], None] = lambda campaign: None, slug: str = "spring-launch"
) -> Iterator[dict[str, Any]]:
    """The sample campaign ``slug`` (changed by ``edit``) with all connections under ``root``.

    Yields the connections, the data folder, the SMTP server and the campaigns folder; the
    caller exports them (``export``) where its Airflow runs.
    """
    from include.orchestrator.dev.smtp_server import LocalSmtpServer

    site = localdev.serve_demo_site()
    data = root / "data"
    conns = local_connections(data)
    try:
        with LocalSmtpServer(root / "maildir") as smtp:
            conns["campaign_email"]["port"] = smtp.port
            campaign = yaml.safe_load((CAMPAIGNS_DIR / f"{slug}.yaml").read_text())
            port = site.server_address[1]
            campaign["research"]["competitor_urls"] = [f"http://127.0.0.1:{port}/{n}.html" for n in ("flowwatch", "datadoggo")]
            edit(campaign)
            campaigns = root / "campaigns"
            campaigns.mkdir(exist_ok=True)
            (campaigns / f"{campaign['slug']}.yaml").write_text(yaml.safe_dump(campaign))
            yield {"conns": conns, "data": data, "smtp": smtp, "campaigns": campaigns, "campaign": campaign}
    finally:
        site.shutdown()


def export(world: dict[str, Any]) -> dict[str, str]:
    """The environment that points an Airflow at this world."""
    return {**localdev.connection_env(world["conns"]), "CAMPAIGNS_DIR": str(world["campaigns"])}


def ready_for_reviewer_thread(dag_id: str) -> None:
    """Import what a reviewer thread uses here, in the main thread: two threads importing Airflow's
    ORM models at once can deadlock on SQLAlchemy's mapper configuration."""
    from airflow.models.hitl import HITLDetail  # noqa: F401
    from airflow.models.xcom import XComModel  # noqa: F401

    import include.orchestrator.approval.decisions  # noqa: F401

    localdev._waiting_run(dag_id)


def decide_when_waiting(dag_id: str, decision: str, done: threading.Event, by: str = "admin") -> threading.Thread:
    """A reviewer: waits until the run sits at the approval gate, then decides; gives up once ``done``."""
    ready_for_reviewer_thread(dag_id)

    def review():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not done.is_set():
            run_id = localdev._waiting_run(dag_id)
            if run_id:
                localdev.record_decision(dag_id, run_id, decision, by, f"{decision} by the test reviewer")
                return
            time.sleep(0.5)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


def run_campaign(
    conf: dict,
    decision: str = "approve",
    slug: str = "spring-launch",
    reviewer: Callable[[str, threading.Event], threading.Thread] | None = None,
):
    """Run the campaign with ``dag.test``; ``reviewer(dag_id, done)`` decides (default: in-process ``decision``)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=localdev.PROJECT_ROOT / "dags" / "campaigns.py").dags[f"campaign_{slug}"]
    done = threading.Event()
    reviewer = (reviewer or (lambda dag_id, done: decide_when_waiting(dag_id, decision, done)))(dag.dag_id, done)
    try:
        run = dag.test(run_conf=conf)
    finally:
        done.set()
        reviewer.join(timeout=5)
    return run, localdev.run_summary(dag.dag_id, run.run_id)


def _git(*args: str) -> list[str]:
    import subprocess

    result = subprocess.run(["git", *args], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def leftovers(world: dict[str, Any], run_keys: list[str] | None = None) -> dict[str, list[str]]:
    """Everything a run made that still exists, per kind (only the given runs' when ``run_keys``)."""
    from include.orchestrator.backends.local.memory_qdrant import LocalQdrantMemory

    data = world["data"]

    def mine(name: str) -> bool:
        return run_keys is None or any(key in name for key in run_keys)

    def files(folder: str, pattern: str) -> list[str]:
        return sorted(p.name for p in (data / folder).glob(pattern) if mine(p.name))

    def points() -> list[str]:
        if not (data / "qdrant").exists():
            return []
        with LocalQdrantMemory("campaign_memory", data / "qdrant")._client() as client:
            if not client.collection_exists("campaign_memory"):
                return []
            found, _ = client.scroll("campaign_memory", limit=10_000, with_payload=True)
        return [f"{p.payload['namespace']}/{p.payload['key']}" for p in found if mine(p.payload["key"])]

    def blog_posts() -> list[str]:  # a post and its hero
        blog = ["--git-dir", str(data / "blog.git")]
        paths = [
            p for p in _git(*blog, "ls-tree", "-r", "--name-only", "main") if p.startswith("_posts/") or p.endswith("-hero.png")
        ]
        # Their names carry the campaign, not the run: the commit that published them names the run's key.
        return [p for p in paths if run_keys is None or mine(" ".join(_git(*blog, "log", "-1", "--format=%s", "main", "--", p)))]

    queue = data / "social-queue" / "queue.jsonl"
    return {
        "memory points": points(),
        "images": files("assets/images", "*.png"),
        "notifications": files("notifications", "*.json"),
        "review branches": [
            b for b in _git("-C", str(data / "review-repo"), "branch", "--format=%(refname:short)") if b != "main" and mine(b)
        ],
        "blog posts": blog_posts(),
        "queued posts": [line for line in (queue.read_text().splitlines() if queue.exists() else []) if mine(line)],
        "dashboards": files("grafana-dashboards", "*.json"),
        "emails delivered": [m["Message-ID"] for m in world["smtp"].messages() if mine(m["Message-ID"])],
        "emails in outbox": files("email-outbox", "*.eml"),
    }


def found(left: dict[str, list[str]]) -> dict[str, list[str]]:
    return {kind: items for kind, items in left.items() if items}


# --- the production services a campaign delivers through, as local doubles --------------------
TOKEN = "test-token"
SOCIAL_CHANNELS = {"linkedin-pipewise": "chan-li", "mastodon-pipewise": "chan-x"}  # profile -> Buffer channel


def http_connection(host: str, **extra: Any) -> dict[str, Any]:
    return {"conn_type": "http", "host": host, "password": TOKEN, "extra": extra}


def delivery_doubles(stack: contextlib.ExitStack) -> dict[str, Any]:
    """Started on ``stack``: Slack, GitHub (review repository and website), SendGrid, Buffer, Grafana."""
    from tests.doubles.buffer import BufferDouble
    from tests.doubles.github import GithubDouble
    from tests.doubles.grafana import GrafanaDouble
    from tests.doubles.sendgrid import SendGridDouble
    from tests.doubles.slack import SlackDouble

    return {
        "slack": stack.enter_context(SlackDouble()),
        "github review": stack.enter_context(GithubDouble(repo="campaign-reviews")),
        "github blog": stack.enter_context(GithubDouble(repo="website")),
        "sendgrid": stack.enter_context(SendGridDouble(token=TOKEN)),
        "buffer": stack.enter_context(BufferDouble(token=TOKEN, channels={"chan-li": 3000, "chan-x": 280})),
        "grafana": stack.enter_context(GrafanaDouble()),
    }


def delivery_connections(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The review, notify, channel and analytics connections, pointed at ``delivery_doubles``."""
    slack, review, website = services["slack"], services["github review"], services["github blog"]
    return {
        "campaign_review": {
            "conn_type": "github",
            "host": review.url,
            "password": TOKEN,
            "extra": {"repository": review.full_name},
        },
        "campaign_notify": {
            "conn_type": "slack",
            "password": slack.token,
            "extra": {"channel": "C0REVIEWS1", "base_url": slack.api_url},
        },
        "campaign_email": http_connection(
            services["sendgrid"].url,
            sender_id=4321,
            suppression_group_id=77,
            send_delay_seconds=900,
            public_assets_url="https://cdn.pipewise.example/campaign-assets",
        ),
        "campaign_social": http_connection(
            services["buffer"].url, channels=SOCIAL_CHANNELS, organization_id=services["buffer"].organization_id
        ),
        "campaign_blog": {
            "conn_type": "github",
            "host": website.url,
            "password": TOKEN,
            "extra": {"repository": website.full_name, "branch": "main"},
        },
        "campaign_analytics": http_connection(services["grafana"].url, datasource_uid="prometheus-main", folder_uid="campaigns"),
    }


def _browser_campaign(source: str, slug: str, name: str) -> dict[str, Any]:
    campaign = yaml.safe_load((CAMPAIGNS_DIR / f"{source}.yaml").read_text())
    campaign |= {"slug": slug, "name": name, "retries": {"count": 1, "delay": "1s"}}
    campaign["research"].pop("competitor_urls", None)  # no competitor site to scrape here
    campaign["approval"] = {"approvers": ["dana"], "timeout": "1h"}
    campaign.pop("schedule", None)
    return campaign


@contextlib.contextmanager
def browser_world(
    root: Path,
    campaigns_made: dict[str, tuple[str, str]],
    triggered: tuple[str, ...],
) -> Iterator[dict[str, Any]]:
    """The campaigns (slug -> sample, name) on a started stack; those ``triggered`` run, triggered by admin (REST).

    For the browser tests: each campaign copies a sample with one approver, dana, and no competitor site.
    """
    from include.orchestrator.dev.smtp_server import LocalSmtpServer

    conns = local_connections(root / "data")
    campaigns = root / "campaigns"
    campaigns.mkdir(parents=True)
    for slug, (source, name) in campaigns_made.items():
        (campaigns / f"{slug}.yaml").write_text(yaml.safe_dump(_browser_campaign(source, slug, name)))
    with LocalSmtpServer(root / "maildir") as smtp:
        conns["campaign_email"]["port"] = smtp.port
        stack = AirflowStack(root / "airflow", env={**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(campaigns)})
        try:
            stack.start()
            stack.wait_for_dags([f"campaign_{slug}" for slug in campaigns_made])
            runs = {slug: stack.trigger(f"campaign_{slug}") for slug in triggered}
            yield {
                "stack": stack,
                "runs": runs,
                "smtp": smtp,
                "data": root / "data",
                "campaigns": {slug: yaml.safe_load((campaigns / f"{slug}.yaml").read_text()) for slug in campaigns_made},
            }
        finally:
            stack.stop()


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """The saga tests' table of runs (injection, verdict, what was undone and left), printed and added to ``$SAGA_MATRIX_OUT``."""
    if not rows:
        return
    head = (
        f"{'injection':<40} {'run':<8} {'verdict':<24} {'undone':>6} {'kept':>5} {'leftovers':<10} {'2nd pass':<9} {'undo s':>6}"
    )
    lines = [title, head]
    for r in rows:
        lines.append(
            f"{r['injection']:<40} {r['run']:<8} {r['status']:<24} {r['undone']:>6} {r['kept']:>5} "
            f"{(', '.join(r['leftovers']) or 'none'):<10} {r['second']:<9} {r['seconds'] if r['seconds'] is not None else '-':>6}"
        )
    print("\n" + "\n".join(lines))
    if out := os.environ.get("SAGA_MATRIX_OUT"):
        with open(out, "a") as f:
            f.write(json.dumps({"title": title, "rows": rows}) + "\n")
