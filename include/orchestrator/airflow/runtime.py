"""A run as its tasks see it: the campaign it uses, earlier results, links, the step context. Used by the operators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperator

from include.orchestrator.backends.assets import open_assets
from include.orchestrator.backends.registry import open_port
from include.orchestrator.domain import tasks
from include.orchestrator.domain.model import Campaign, RunPlan, launch_name
from include.orchestrator.saga import outcome, recorder
from include.orchestrator.saga.ledger import open_ledger
from include.orchestrator.steps import StepContext


def ui_link(dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """The run's page in the Airflow UI; with a task id, that task's Required Actions page."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    link = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{link}/tasks/{quote(task_id, safe='')}/required_actions" if task_id else link


def review_link(dag_id: str, run_id: str) -> str:
    """The run's reviewer page: the plugin's external view on the run (``campaign-run``)."""
    return f"{ui_link(dag_id, run_id)}/plugin/campaign-run"


def role_members() -> dict[str, list[str]]:
    """Users per role (casefolded), where the auth manager's users are known from config.

    Only the simple auth manager lists its users in config; with others, role approvers decide
    through the campaign decision API, which sees the caller's roles.
    """
    from airflow.sdk.configuration import conf

    if not conf.get("core", "auth_manager", fallback="").endswith("SimpleAuthManager"):
        return {}
    members: dict[str, list[str]] = {}
    for entry in conf.get("core", "simple_auth_manager_users", fallback="").split(","):
        user, _, role = entry.strip().partition(":")
        if user and role:
            members.setdefault(role.strip().casefold(), []).append(user.strip())
    return members


# The campaign behind each DAG built in this process. Tasks look it up by dag id instead of
# holding it: a mapped task's partial arguments are serialized, and the campaign would be stored
# as its full text once per mapped task (measured: -28% serialized size at N=1000).
CAMPAIGNS: dict[str, Campaign] = {}


def pull_result(task: BaseOperator, ti: Any, task_id: str) -> Any:
    """A step's result; for a mapped task, the list of its instances' results."""
    value = ti.xcom_pull(task_ids=task_id)
    if task_id == tasks.GATE:  # the gate returns its decision record, not a step output
        return value
    if task_id in task.dag.task_dict and task.dag.task_dict[task_id].is_mapped:
        # Airflow returns a bare value when a mapped task has one instance, None for none.
        values = [] if value is None else [value] if isinstance(value, dict) else list(value)
        return [v["result"] if v else None for v in values]
    return value["result"] if isinstance(value, dict) else value


def run_campaign(task: BaseOperator, ti: Any) -> Campaign:
    """The campaign a run uses: the snapshot ``validate_conf`` froze at its start, or the file's
    campaign when the run has none (``validate_conf`` failed, or ran before snapshots existed)."""
    plan = pull_result(task, ti, tasks.PLAN)
    return (RunPlan.model_validate(plan).snapshot() if plan else None) or CAMPAIGNS[task.dag_id]


# Runs that stand for an interval of the schedule: each interval is its own launch.
SCHEDULED_RUN_TYPES = ("scheduled", "backfill")  # DagRunType is a str enum: equal to these


def step_context(task: BaseOperator, context: Any, item: str | None = None) -> StepContext:
    ti, run = context["ti"], context["dag_run"]
    campaign = CAMPAIGNS[task.dag_id]
    # Every effect the step makes goes through the saga ledger, planned first, then made, by the
    # run that holds the run's launch.
    journal = recorder.Recorder(
        ti.dag_id,
        ti.run_id,
        ti.task_id,
        ti.map_index if ti.map_index is not None else -1,
        open_ledger,
        launch=lambda: ctx.plan.launch,
        slug=campaign.slug,
    )
    ctx = StepContext(
        current=campaign,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        run_date=(run.run_after or datetime.now(UTC)).date(),
        conf=dict(context["params"]),
        pull=lambda task_id: pull_result(task, ti, task_id),
        open_port=lambda port: journal.wrap(port, open_port(port, ctx.campaign.connections)),
        ui_link=ui_link(ti.dag_id, ti.run_id, tasks.GATE),
        review_link=review_link(ti.dag_id, ti.run_id),
        item=item,
        scheduled_for=run.logical_date if run.run_type in SCHEDULED_RUN_TYPES else None,
        claim_launch=journal.claim,
        open_assets=open_assets,
    )
    return ctx


def task_states(task: BaseOperator, context: Any) -> dict[str, list[str]]:
    """The states of every task instance of this run, per task id."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    return outcome.states_by_task(states, task.dag.task_dict)


def run_label(ctx: StepContext) -> str:
    """What a person recognises a run by: its launch's name when it has one, else the run id."""
    name = launch_name(ctx.plan.launch)
    return f"launch {name}" if name else ctx.run_id


def first_value(value: Any) -> Any:
    """One value of an XCom pull that may be a mapped task's list."""
    if isinstance(value, (str, dict)) or value is None:
        return value
    return next((v for v in value if v), None)
