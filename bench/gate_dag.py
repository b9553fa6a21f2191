"""The DAG of ``bench/approval_bench.py``: the approval gate between the steps it needs.

``validate_conf`` -> ``content.write_copy`` (a fixed draft: the bench measures waiting, not
writing) -> ``review.approval`` -> ``distribution.publish_email`` (real SMTP delivery).
``BENCH_GATE`` picks the gate: ``hitl`` is ours (``airflow/gate.ApprovalGate``); ``reschedule`` is the
classic baseline, a reschedule-mode sensor that polls an Airflow Variable every minute.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseSensorOperator, TaskGroup, Variable

from include.orchestrator.airflow.gate import ApprovalGate
from include.orchestrator.airflow.operators import CampaignStep
from include.orchestrator.airflow.retry import default_args
from include.orchestrator.airflow.runtime import CAMPAIGNS
from include.orchestrator.domain.loader import load_campaigns
from include.orchestrator.domain.model import run_key

SLUG = "bench-gate"
DRAFT = {
    "headline": "Pipewise 3 is here",
    "email_subject": "Pipewise 3: every pipeline's freshness, cost and failures",
    "email_body": "Pipewise 3 shows freshness, cost and failures for every pipeline.\n\nThe Pipewise team",
    "social_posts": ["Pipewise 3 is here."],
    "blog_title": "Pipewise 3",
    "blog_body": "Pipewise 3 is here.",
    "writer": "bench fixed draft",
}


def variable_key(dag_id: str, run_id: str) -> str:
    return f"bench_decision__{run_key(dag_id, run_id)}"


def fixed_draft() -> dict[str, Any]:
    return {"result": DRAFT}


class PollingGate(BaseSensorOperator):
    """Baseline: wait for a Variable, rescheduling between pokes (the pre-HITL way)."""

    def poke(self, context: Any) -> bool:
        ti = context["ti"]
        return Variable.get(variable_key(ti.dag_id, ti.run_id), default=None) is not None


def build(target: dict[str, Any]) -> None:
    [campaign], _ = load_campaigns(slug=SLUG)
    CAMPAIGNS[campaign.dag_id] = campaign
    timeout = campaign.approval.timeout
    with DAG(
        dag_id=campaign.dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=int(os.environ.get("BENCH_MAX_RUNS", "2000")),
        max_active_tasks=int(os.environ.get("BENCH_MAX_RUNS", "2000")),
        default_args=default_args(campaign),
    ) as dag:
        plan = CampaignStep(task_id="validate_conf", step="validate_conf", retries=0)
        with TaskGroup("content"):
            write_copy = PythonOperator(task_id="write_copy", python_callable=fixed_draft)
        with TaskGroup("review"):
            if os.environ.get("BENCH_GATE", "hitl") == "hitl":
                gate = ApprovalGate(task_id="approval", response_timeout=timeout, retries=0)
            else:
                gate = PollingGate(task_id="approval", mode="reschedule", poke_interval=60, timeout=timeout, retries=0)
        with TaskGroup("distribution"):
            publish = CampaignStep(task_id="publish_email", step="publish_channel", item="email")
        plan >> write_copy >> gate >> publish
    target[dag.dag_id] = dag
