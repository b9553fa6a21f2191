"""The floor of ``bench/executor_bench.py``: for every campaign file, a DAG of the same shape whose
tasks do nothing.

``floor_<slug>`` mirrors ``airflow/dags.build_dag`` task for task: ``validate_conf``, then the groups
research (``search_notes``, ``scrape_competitor`` mapped over the competitor URLs,
``recall_research``), content (three in a row), design (``render_image`` mapped over the
channels), review (``open_review`` -> ``notify_reviewers`` -> ``approval``, here a no-op task
instead of the human gate), distribution (the non-email channels side by side, then
``publish_email``), analytics (``create_dashboard``) and the two compensation teardowns, with the
same dependencies and trigger rules. Every task is a ``PythonOperator`` that returns None (an
``EmptyOperator`` would be finished by the scheduler without a worker), so a run costs what Airflow
itself costs per task: the worker's supervisor, the task process, the parse of this file, the
Execution API calls. The file imports only the Task SDK and yaml, and reads the campaign files
with the C loader; it is never an import of ``include.orchestrator``. Pools are left out (they
change when tasks run, not what each costs).

The campaign files come from ``$CAMPAIGNS_DIR`` (the bench's folder), like ``dags/campaigns.py``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TaskGroup, get_parsing_context

PREFIX = "floor_"
CHANNELS = ("email", "social", "blog")  # model.Channels.enabled order


def nothing(*args: object) -> None:
    return None


def floor_dag(slug: str, competitor_urls: int, channels: list[str]) -> DAG:
    with DAG(
        dag_id=f"{PREFIX}{slug}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=3,
        default_args={"retries": 0},
        tags=["bench", "floor"],
    ) as dag:

        def task(task_id: str, **kwargs: object) -> PythonOperator:
            return PythonOperator(task_id=task_id, python_callable=nothing, **{"trigger_rule": "none_failed", **kwargs})

        def fan_out(task_id: str, items: list[str]) -> object:
            return PythonOperator.partial(task_id=task_id, python_callable=nothing, trigger_rule="none_failed").expand(
                op_args=[[item] for item in items]
            )

        plan = task("validate_conf")
        with TaskGroup("research") as research:
            [
                task("search_notes"),
                fan_out("scrape_competitor", [f"url-{i}" for i in range(competitor_urls)]),
                task("recall_research"),
            ]
        with TaskGroup("content") as content:
            task("load_brand_voice") >> task("write_copy") >> task("store_draft")
        with TaskGroup("design") as design:
            fan_out("render_image", channels)
        with TaskGroup("review") as review:
            task("open_review") >> task("notify_reviewers") >> task("approval", trigger_rule="all_success")
        with TaskGroup("distribution") as distribution:
            first = [task(f"publish_{c}") for c in channels if c != "email"]
            if "email" in channels:
                first >> task("publish_email", trigger_rule="all_done" if first else "none_failed")
        with TaskGroup("analytics") as analytics:
            task("create_dashboard", trigger_rule="all_done")
        plan >> research >> content >> design >> review >> distribution >> analytics
        forward = list(dag.tasks)
        with TaskGroup("compensation"):
            undo = task("undo").as_teardown()
            undo >> task("report").as_teardown(on_failure_fail_dagrun=True)
        forward >> undo
    return dag


def build(target: dict[str, object]) -> None:
    folder = os.environ.get("CAMPAIGNS_DIR")
    if not folder:
        return
    wanted = get_parsing_context().dag_id
    for path in sorted(Path(folder).glob("*.yaml")):
        if wanted and wanted != f"{PREFIX}{path.stem}":
            continue
        campaign = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        channels = [c for c in CHANNELS if c in (campaign.get("channels") or {})]
        urls = len((campaign.get("research") or {}).get("competitor_urls") or [])
        target[f"{PREFIX}{campaign['slug']}"] = floor_dag(campaign["slug"], urls, channels)


build(globals())
