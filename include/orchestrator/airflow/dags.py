"""Campaigns as Airflow DAGs: the DAG factory, the review watcher's DAG, invalid files as import errors.

One DAG per campaign, six task groups in order (research, content, design, review,
distribution, analytics), then the ``compensation`` group. Every forward task is a
:class:`CampaignStep` (``operators.py``) running one registered step of ``steps.py``;
research and design fan out with dynamic task mapping; the review group ends in
:class:`ApprovalGate` (``gate.py``), a human-in-the-loop task that waits in Airflow's
``awaiting_input`` state. Distribution publishes the undoable channels first and the email last
(the saga's pivot, ``saga/compensation.py``). ``compensation.undo`` and ``compensation.report``
are teardown tasks: Airflow runs them after every forward task is done, whatever happened, even
when a user marks the run failed. Nothing here touches a connection, the network or the metadata
DB while parsing, and no user-supplied text is ever a template: the operators declare no
template fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, get_parsing_context

from include.orchestrator.airflow.gate import ApprovalGate
from include.orchestrator.airflow.operators import CampaignStep, Compensate, ReviewWatch, RunReport
from include.orchestrator.airflow.retry import default_args
from include.orchestrator.airflow.runtime import CAMPAIGNS
from include.orchestrator.domain.loader import load_campaigns
from include.orchestrator.domain.model import CHANNELS, LAUNCH_PATTERN, Campaign, RunOverrides, in_words, text_pattern
from include.orchestrator.errors import CampaignFieldError, CampaignFileError, CampaignFilesInvalid
from include.orchestrator.steps import port_of


def pool_of(step: str, item: str | None = None) -> str:
    """The Airflow pool of a step: its port's (``campaign_<port>``, in airflow_settings.yaml)."""
    port = port_of(step, item)
    return f"campaign_{port}" if port else "default_pool"


def _params(campaign: Campaign) -> dict[str, Param]:
    """The per-run overrides the UI trigger form shows; kept to four (params cost parse time).

    Airflow 3.3's trigger form marks a param required unless its type allows null, and renders an
    array as a multi-select only when the schema lists the choices at its top level (``examples``
    or ``enum``; ``items.enum`` alone gives a free-text box, one value per line). ``items.enum``
    stays for the check Airflow makes of a REST trigger (400 for an unknown channel).
    """
    overrides = RunOverrides.model_fields
    launch_words = overrides["launch"].description
    assert launch_words is not None  # RunOverrides.launch has one
    return {
        # Refused when the run is created (REST answers 400 naming the param): a NUL would otherwise reach
        # PostgreSQL's jsonb conf column, which answers a 422 naming no field, before validate_conf can.
        "audience": Param(
            campaign.audience,
            type="string",
            minLength=1,
            maxLength=200,
            title="Audience",
            pattern=text_pattern(RunOverrides, "audience"),
            description="Who the copy speaks to, in one line. Defaults to the campaign's audience.",
        ),
        "channels": Param(
            campaign.channels.enabled,
            type="array",
            items={"type": "string", "enum": campaign.channels.enabled},
            examples=campaign.channels.enabled,
            minItems=1,
            uniqueItems=True,
            title="Channels",
            description="Where this run publishes: some or all of the campaign's channels. Channels left out are skipped.",
        ),
        "writer_notes": Param(
            None,
            type=["null", "string"],
            maxLength=2000,
            title="Writer notes",
            pattern=text_pattern(RunOverrides, "writer_notes"),
            description=overrides["writer_notes"].description,
        ),
        "launch": Param(
            None,
            type=["null", "string"],
            pattern=LAUNCH_PATTERN,
            title="Launch",
            description="Optional. " + launch_words,
        ),
    }


def _doc(campaign: Campaign) -> str:
    channels = ", ".join(campaign.channels.enabled)
    return (
        f"### {campaign.name}\n\n{campaign.description}\n\n"
        f"- Owner: {campaign.owner}\n- Audience: {campaign.audience}\n- Channels: {channels}\n"
        f"- Approvers: {', '.join(campaign.approval.approvers)} (they have {in_words(campaign.approval.timeout)} to decide: "
        "silence rejects)\n"
    )


START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
MAX_ACTIVE_RUNS = 3


def check_schedule(schedule: str | None) -> None:
    """Raise naming ``schedule`` when Airflow's own timetable code refuses it for a campaign DAG: the
    DAG processor makes the same checks, and would otherwise drop the DAG with an error naming no file."""
    try:
        probe = DAG(
            dag_id="schedule_check",
            schedule=schedule,
            start_date=START_DATE,
            max_active_runs=MAX_ACTIVE_RUNS,
            auto_register=False,
        )
        probe.timetable.validate()
    except Exception as exc:
        raise CampaignFieldError(
            "schedule", f"Airflow refuses it for a campaign DAG (up to {MAX_ACTIVE_RUNS} runs at once): {exc}"
        ) from exc


def build_dag(campaign: Campaign) -> DAG:
    """The DAG of one campaign."""
    CAMPAIGNS[campaign.dag_id] = campaign
    with DAG(
        dag_id=campaign.dag_id,
        dag_display_name=campaign.name,
        description=f"{campaign.name}: {campaign.description}"[:200],
        doc_md=_doc(campaign),
        schedule=campaign.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=MAX_ACTIVE_RUNS,
        default_args=default_args(campaign),
        tags=["campaign", *campaign.tags],
        owner_links={},
        # Registered only through the DAG file's globals: the error-reporting DAG file builds every
        # campaign's DAG too (to find the ones Airflow refuses) and must not register them as its own.
        auto_register=False,
    ) as dag:

        def task(step: str, task_id: str | None = None, **kwargs: Any) -> CampaignStep:
            # none_failed: a fan-out over zero items is skipped, which must not skip what follows.
            defaults = {"trigger_rule": "none_failed", "pool": pool_of(step, kwargs.get("item"))}
            return CampaignStep(task_id=task_id or step, step=step, **{**defaults, **kwargs})

        def fan_out(step: str, items: list[str]) -> Any:
            # Items come from the campaign file; a run leaves channels out by skipping them.
            return CampaignStep.partial(
                task_id=step, step=step, trigger_rule="none_failed", map_index_template="{{ task.item }}", pool=pool_of(step)
            ).expand(item=items)

        # Retried like every step: bad conf and a taken launch fail at once (ValueError), a ledger blip does not.
        plan = task("validate_conf")
        with TaskGroup("research") as research:
            [
                task("search_notes"),
                fan_out("scrape_competitor", [str(u) for u in campaign.research.competitor_urls]),
                task("recall_research"),
            ]
        with TaskGroup("content") as content:
            task("load_brand_voice") >> task("write_copy") >> task("store_draft")
        # Every channel has its tasks, also one the campaign does not configure (skipped then): a
        # run uses the campaign as it stood at its start, so removing a channel from the file must
        # not remove the task that publishes what a reviewer already approved for it.
        with TaskGroup("design") as design:
            fan_out("render_image", list(CHANNELS))
        with TaskGroup("review") as review:
            # No retries: a rejection is final, and a retry would reopen the request.
            gate = ApprovalGate(
                task_id="approval", response_timeout=campaign.approval.timeout, retries=0, execution_timeout=timedelta(minutes=5)
            )
            task("open_review") >> task("notify_reviewers") >> gate
        with TaskGroup("distribution") as distribution:
            # Undoable channels first, side by side; the email, which cannot be recalled once
            # delivered, goes last: the saga's pivot (saga/compensation.py).
            first = [task("publish_channel", f"publish_{c}", item=c) for c in CHANNELS if c != "email"]
            first >> task("publish_channel", "publish_email", item="email", after_channels=True, trigger_rule="all_done")
        with TaskGroup("analytics") as analytics:
            task("create_dashboard", after_channels=True, trigger_rule="all_done")
        plan >> research >> content >> design >> review >> distribution >> analytics
        forward = list(dag.tasks)
        with TaskGroup("compensation"):
            undo = Compensate(task_id="undo").as_teardown()
            undo >> RunReport(task_id="report", retries=0).as_teardown(on_failure_fail_dagrun=True)
        forward >> undo  # compensation starts only when every forward step is done
    # Added after the tasks exist: tasks then carry no copy of the params, which Airflow would
    # serialize and schema-check once per task (serialization measured 67 -> 8 ms per DAG).
    # At run time Airflow merges the DAG's params into every task all the same, and a trigger is
    # validated against them. update() skips a parse-time re-check of defaults the model built.
    dag.params.update(_params(campaign))
    return dag


def checked_dag(campaign: Campaign) -> DAG:
    """The campaign's DAG, checked as the DAG processor will check it before taking it (``DagBag``)."""
    check_schedule(campaign.schedule)
    dag = build_dag(campaign)
    dag.validate()
    return dag


def load_dags(slug: str | None = None, into: dict[str, Any] | None = None) -> tuple[list[Campaign], list[CampaignFileError]]:
    """Load the campaigns and build each one's DAG (into ``into`` when given) inside its file's error handling.

    The DAG file, the error-reporting DAG file and ``validate`` all call this, so they agree on which
    files are bad: a value the model accepts but Airflow refuses is its file's error like any other.
    """

    def build(campaign: Campaign) -> None:
        dag = checked_dag(campaign)
        if into is not None:
            into[campaign.dag_id] = dag

    return load_campaigns(slug=slug, build=build)


def build_dags(target: dict[str, Any]) -> None:
    """Put every valid campaign's DAG into ``target`` (a DAG file's globals).

    A worker running one task parses the file for that DAG only; bad campaign files are left
    to ``report_invalid_campaigns`` so they never hide the good ones.
    """
    wanted = get_parsing_context().dag_id
    slug = wanted.removeprefix("campaign_") if wanted and wanted.startswith("campaign_") else None
    load_dags(slug=slug, into=target)


def review_watch_dag() -> DAG | None:
    """The GitHub review watcher's DAG, when some campaign lets GitHub reviews decide."""
    from include.orchestrator.approval.review_watch import WATCH_DAG_ID

    campaigns, _ = load_campaigns()
    if not any(c.approval.github_approvers for c in campaigns):
        return None
    with DAG(
        dag_id=WATCH_DAG_ID,
        description="Applies GitHub pull-request reviews to campaign runs waiting for approval.",
        schedule=timedelta(minutes=1),
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,  # one watcher at a time: rounds never overlap
        default_args={"retries": 0, "execution_timeout": timedelta(minutes=5)},
        tags=["campaign", "approval"],
    ) as dag:
        ReviewWatch(task_id="watch", pool="campaign_review")
    return dag


class _Reported(Exception):
    """Raised with the invalid campaign files as its cause, so that the cause's text leads the import error."""


class _Lead(Exception):
    """The invalid campaign files, as the first lines of the import error Airflow shows."""


# Printed as "Invalid campaign files: <file>: ..." (a builtins class is shown without its module path).
_Lead.__module__, _Lead.__qualname__ = "builtins", "Invalid campaign files"


def report_invalid_campaigns() -> None:
    """Raise one import error listing every invalid campaign file (shown in the Airflow UI).

    Airflow keeps an import error's traceback as its text (``[core] dagbag_import_error_tracebacks``,
    on by default), and a traceback starts with ``Traceback (most recent call last):`` and the DAG
    file's frames. Python prints an exception's cause before the traceback, so the problems are
    raised as the cause, without a traceback of their own: the UI's text then starts with the file,
    the field and the problem, and the traceback comes after. With tracebacks off, Airflow keeps
    only the message, which is the problems themselves.
    """
    from airflow.sdk.configuration import conf

    _, errors = load_dags()  # builds every DAG (4 ms each), as the DAG file does: the same files are bad
    if not errors:
        return
    problems = CampaignFilesInvalid(errors)
    if not conf.getboolean("core", "dagbag_import_error_tracebacks", fallback=True):
        raise problems
    names = ", ".join(e.path.name for e in errors)
    raise _Reported(f"invalid campaign file(s) {names}: what is wrong is at the top of this message") from _Lead(str(problems))
