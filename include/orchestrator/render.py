"""Render campaigns as Airflow DAGs: the only module that knows operators.

One DAG per campaign, six task groups in order (research, content, design, review,
distribution, analytics). Every task is a :class:`CampaignStep` running one registered step of
``steps.py``; research, design and distribution fan out with dynamic task mapping; the review
group ends in :class:`ApprovalSensor`. Nothing here touches a connection, the network or the
metadata DB while parsing, and no user-supplied text is ever a template: the operators declare
no template fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from airflow.sdk import DAG, BaseOperator, BaseSensorOperator, Param, TaskGroup, Variable, get_parsing_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.orchestrator.approval import Decision, decision_key
from include.orchestrator.connections import ConnectionConfigError, open_port
from include.orchestrator.loader import CampaignFilesInvalid, load_campaigns
from include.orchestrator.model import Campaign
from include.orchestrator.steps import STEPS, NotThisRun, StepContext

DEFAULT_ARGS: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=15),
}
# Errors that retrying cannot fix: fail at once with the message.
_PERMANENT = (ValueError, ConnectionConfigError)


def ui_link(dag_id: str, run_id: str) -> str:
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


# The campaign behind each DAG built in this process. Tasks look it up by dag id instead of
# holding it: a mapped task's partial arguments are serialized, and the campaign would be stored
# as its full text once per mapped task (measured: -28% serialized size at N=1000).
CAMPAIGNS: dict[str, Campaign] = {}


class CampaignStep(BaseOperator):
    """Run one registered step (see ``steps.STEPS``) of a campaign and return its result and effects."""

    ui_color = "#e8f1fb"

    def __init__(self, *, step: str, item: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known steps: {sorted(STEPS)}")
        self.step, self.item = step, item

    @property
    def campaign(self) -> Campaign:
        return CAMPAIGNS[self.dag_id]

    def _pull(self, ti: Any, task_id: str) -> Any:
        value = ti.xcom_pull(task_ids=task_id)
        if task_id in self.dag.task_dict and self.dag.task_dict[task_id].is_mapped:
            # Airflow returns a bare value when a mapped task has one instance, None for none.
            values = [] if value is None else [value] if isinstance(value, dict) else list(value)
            return [v["result"] if v else None for v in values]
        return value["result"] if isinstance(value, dict) else value

    def execute(self, context: Any) -> dict[str, Any]:
        ti, run = context["ti"], context["dag_run"]
        ctx = StepContext(
            campaign=self.campaign,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            run_date=(run.run_after or datetime.now(UTC)).date(),
            conf=dict(context["params"]),
            pull=lambda task_id: self._pull(ti, task_id),
            open_port=lambda port: open_port(port, self.campaign.connections),
            ui_link=ui_link(ti.dag_id, ti.run_id),
            item=self.item,
        )
        try:
            output = STEPS[self.step](ctx)
        except NotThisRun as exc:
            raise AirflowSkipException(str(exc)) from None
        except Exception as exc:
            # Backends flag what a retry cannot fix (a 404, a refused URL, a rejected address).
            if isinstance(exc, _PERMANENT) or getattr(exc, "retryable", True) is False:
                raise AirflowFailException(f"{self.step}: {exc}") from exc
            raise
        for effect in output.effects:
            self.log.info("created %s: %s", effect.kind, effect.summary or effect.ref)
        return output.to_xcom()


class ApprovalSensor(BaseSensorOperator):
    """Wait for the run's approval decision. Rejection fails the run; so does the timeout."""

    ui_color = "#fff4d6"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mode="reschedule", soft_fail=False, **kwargs)

    def poke(self, context: Any) -> bool:
        ti = context["ti"]
        raw = Variable.get(decision_key(ti.dag_id, ti.run_id), default=None)
        if raw is None:
            return False
        decision = Decision.model_validate_json(raw)
        if decision.decision == "approved":
            self.log.info("approved by %s via %s at %s: %s", decision.by, decision.means, decision.at, decision.reason)
            return True
        raise AirflowFailException(f"rejected by {decision.by}: {decision.reason}")


def _params(campaign: Campaign) -> dict[str, Param]:
    """The per-run overrides the UI trigger form shows; kept to three (params cost parse time)."""
    return {
        "audience": Param(campaign.audience, type="string", minLength=1, maxLength=200, description="Who the copy speaks to."),
        "channels": Param(
            campaign.channels.enabled,
            type="array",
            items={"type": "string", "enum": campaign.channels.enabled},
            minItems=1,
            uniqueItems=True,
            description="A subset of the campaign's channels.",
        ),
        "writer_notes": Param("", type="string", maxLength=2000, description="Notes for the copy writer."),
    }


def _doc(campaign: Campaign) -> str:
    channels = ", ".join(campaign.channels.enabled)
    return (
        f"### {campaign.name}\n\n{campaign.description}\n\n"
        f"- Owner: {campaign.owner}\n- Audience: {campaign.audience}\n- Channels: {channels}\n"
        f"- Approvers: {', '.join(campaign.approval.approvers)} (timeout {campaign.approval.timeout}: silence rejects)\n"
    )


def build_dag(campaign: Campaign) -> DAG:
    """The DAG of one campaign."""
    CAMPAIGNS[campaign.dag_id] = campaign
    with DAG(
        dag_id=campaign.dag_id,
        description=f"{campaign.name}: {campaign.description}"[:200],
        doc_md=_doc(campaign),
        schedule=campaign.schedule,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=3,
        default_args=DEFAULT_ARGS,
        tags=["campaign", *campaign.tags],
        owner_links={},
    ) as dag:

        def task(step: str, task_id: str | None = None, **kwargs: Any) -> CampaignStep:
            # none_failed: a fan-out over zero items is skipped, which must not skip what follows.
            return CampaignStep(task_id=task_id or step, step=step, trigger_rule="none_failed", **kwargs)

        def fan_out(step: str, items: list[str]) -> Any:
            # Items come from the campaign file; a run leaves channels out by skipping them.
            return CampaignStep.partial(
                task_id=step, step=step, trigger_rule="none_failed", map_index_template="{{ task.item }}"
            ).expand(item=items)

        plan = task("validate_conf", retries=0)
        with TaskGroup("research") as research:
            [task("search_notes"), fan_out("scrape_competitor", [str(u) for u in campaign.research.competitor_urls]), task("recall_research")]
        with TaskGroup("content") as content:
            task("load_brand_voice") >> task("write_copy") >> task("store_draft")
        with TaskGroup("design") as design:
            fan_out("render_image", campaign.channels.enabled)
        with TaskGroup("review") as review:
            wait = ApprovalSensor(
                task_id="wait_for_approval",
                timeout=campaign.approval.timeout,
                poke_interval=campaign.approval.poll_interval,
                retries=0,
                execution_timeout=None,
            )
            task("open_review") >> task("notify_reviewers") >> wait
        with TaskGroup("distribution") as distribution:
            fan_out("publish_channel", campaign.channels.enabled)
        with TaskGroup("analytics") as analytics:
            task("create_dashboard")
        plan >> research >> content >> design >> review >> distribution >> analytics
    # Added after the tasks exist: tasks then carry no copy of the params, which Airflow would
    # serialize and schema-check once per task (serialization measured 67 -> 8 ms per DAG).
    # At run time Airflow merges the DAG's params into every task all the same, and a trigger is
    # validated against them. update() skips a parse-time re-check of defaults the model built.
    dag.params.update(_params(campaign))
    return dag


def build_dags(target: dict[str, Any]) -> None:
    """Put every valid campaign's DAG into ``target`` (a DAG file's globals).

    A worker running one task parses the file for that DAG only; bad campaign files are left
    to ``report_invalid_campaigns`` so they never hide the good ones.
    """
    wanted = get_parsing_context().dag_id
    slug = wanted.removeprefix("campaign_") if wanted and wanted.startswith("campaign_") else None
    campaigns, _ = load_campaigns(slug=slug)
    for campaign in campaigns:
        target[campaign.dag_id] = build_dag(campaign)


def report_invalid_campaigns() -> None:
    """Raise one import error listing every invalid campaign file (shown in the Airflow UI)."""
    _, errors = load_campaigns()
    if errors:
        raise CampaignFilesInvalid(errors)

