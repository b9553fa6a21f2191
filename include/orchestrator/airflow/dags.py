"""Render campaigns as Airflow DAGs: the only module that knows operators.

One DAG per campaign, six task groups in order (research, content, design, review,
distribution, analytics), then the ``compensation`` group. Every forward task is a
:class:`CampaignStep` running one registered step of ``steps.py``; research and design fan out
with dynamic task mapping; the review group ends in :class:`ApprovalGate`, a human-in-the-loop
task that waits in Airflow's ``awaiting_input`` state. Distribution publishes the undoable channels
first and the email last (the saga's pivot, ``saga.py``). ``compensation.undo`` and
``compensation.report`` are teardown tasks: Airflow runs them after every forward task is done,
whatever happened, even when a user marks the run failed. Nothing here touches a connection, the
network or the metadata DB while parsing, and no user-supplied text is ever a template: the
operators declare no template fields.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup, get_parsing_context
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskAwaitingInput

from include.orchestrator.airflow.compat import upsert_hitl_detail
from include.orchestrator.approval import rules as gate_rules
from include.orchestrator.approval.rules import APPROVE, REJECT, Decision, GateState
from include.orchestrator.backends.assets import open_assets
from include.orchestrator.backends.registry import open_backend, open_port
from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import campaign_of, load_campaigns
from include.orchestrator.domain.model import (
    CHANNELS,
    LAUNCH_PATTERN,
    MULTI_LINE_PATTERN,
    Campaign,
    RunOverrides,
    RunPlan,
    at_utc,
    in_words,
    launch_name,
    run_key,
    text_pattern,
)
from include.orchestrator.domain.ports import Copy, Message
from include.orchestrator.domain.steps import STEPS, StepContext, port_of
from include.orchestrator.errors import (
    CampaignFieldError,
    CampaignFileError,
    CampaignFilesInvalid,
    ConnectionConfigError,
    DecisionRefused,
    NotThisRun,
    Permanent,
    Retryable,
    retryable_flag,
)
from include.orchestrator.saga import compensation as saga
from include.orchestrator.saga.ledger import open_ledger


class RetryAfterPolicy(RetryPolicy):
    """A retry waits at least what the service asked for (``Retry-After``, or an open circuit's
    time to its next trial), and no less than the campaign's exponential backoff."""

    def __init__(self, delay: timedelta, max_delay: timedelta) -> None:
        self.delay, self.max_delay = delay, max_delay

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        asked = _retry_after(exception)
        if asked is None:
            return RetryDecision.default()
        backoff = min(self.delay * 2 ** max(0, try_number - 1), self.max_delay)
        wait = max(timedelta(seconds=asked), backoff)
        return RetryDecision.retry(wait, reason=f"{exception} -> next try in {wait.total_seconds():g} s")


def _retry_after(exc: BaseException | None) -> float | None:
    """The wait a service asked for, from the error or what caused it."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return float(exc.retry_after)
        if retryable_flag(exc) and (asked := getattr(exc, "retry_after", None)) is not None:  # another library's error
            return float(asked)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def pool_of(step: str, item: str | None = None) -> str:
    """The Airflow pool of a step: its port's (``campaign_<port>``, in airflow_settings.yaml)."""
    port = port_of(step, item)
    return f"campaign_{port}" if port else "default_pool"


def default_args(campaign: Campaign) -> dict[str, Any]:
    return {
        "owner": campaign.owner,  # the DAG list shows it
        "retries": campaign.retries.count,
        "retry_delay": campaign.retries.delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": campaign.retries.max_delay,
        "retry_policy": RetryAfterPolicy(campaign.retries.delay, campaign.retries.max_delay),
        "execution_timeout": timedelta(minutes=15),
    }


# Errors that retrying cannot fix: fail at once with the message.
_PERMANENT = (ValueError, Permanent)


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


def _pull(task: BaseOperator, ti: Any, task_id: str) -> Any:
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
    plan = _pull(task, ti, tasks.PLAN)
    return (RunPlan.model_validate(plan).snapshot() if plan else None) or CAMPAIGNS[task.dag_id]


# Runs that stand for an interval of the schedule: each interval is its own launch.
SCHEDULED_RUN_TYPES = ("scheduled", "backfill")  # DagRunType is a str enum: equal to these


def step_context(task: BaseOperator, context: Any, item: str | None = None) -> StepContext:
    ti, run = context["ti"], context["dag_run"]
    campaign = CAMPAIGNS[task.dag_id]
    # Every effect the step makes goes through the saga ledger, planned first, then made, by the
    # run that holds the run's launch.
    recorder = saga.Recorder(
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
        pull=lambda task_id: _pull(task, ti, task_id),
        open_port=lambda port: recorder.wrap(port, open_port(port, ctx.campaign.connections)),
        ui_link=ui_link(ti.dag_id, ti.run_id, tasks.GATE),
        review_link=review_link(ti.dag_id, ti.run_id),
        item=item,
        scheduled_for=run.logical_date if run.run_type in SCHEDULED_RUN_TYPES else None,
        claim_launch=recorder.claim,
        open_assets=open_assets,
    )
    return ctx


def task_states(task: BaseOperator, context: Any) -> dict[str, list[str]]:
    """The states of every task instance of this run, per task id."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    return saga.states_by_task(states, task.dag.task_dict)


class CampaignStep(BaseOperator):
    """Run one registered step (see ``steps.STEPS``) of a campaign and return its result and effects.

    With ``after_channels``, the step runs once every channel has settled (trigger rule
    ``all_done``) and only if no failure upstream is one the channels' failure policies let the
    campaign go on after; otherwise it is skipped and compensation takes over.
    """

    ui_color = "#e8f1fb"

    def __init__(self, *, step: str, item: str | None = None, after_channels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known steps: {sorted(STEPS)}")
        self.step, self.item, self.after_channels = step, item, after_channels

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = step_context(self, context, self.item)
        if self.after_channels:
            # Not ctx.campaign: a run whose validate_conf failed has no snapshot, and must be skipped, not fail.
            campaign = run_campaign(self, context["ti"])
            blocked = saga.blocking_failure(campaign, task_states(self, context), self.get_flat_relative_ids(upstream=True))
            if blocked:
                raise AirflowSkipException(f"not run: the campaign is failing ({blocked})")
        try:
            output = STEPS[self.step](ctx)
        except NotThisRun as exc:
            raise AirflowSkipException(str(exc)) from None
        except Exception as exc:
            # Kept for the run's report: the XCom of a failed try survives it.
            context["ti"].xcom_push(key="error", value=f"{type(exc).__name__}: {exc}"[:1000])
            # Backends raise Permanent errors for what a retry cannot fix (a 404, a refused URL, a rejected address).
            if isinstance(exc, _PERMANENT) or retryable_flag(exc) is False:
                raise AirflowFailException(f"{self.step}: {exc}") from exc
            raise
        for effect in output.effects:
            self.log.info("created %s: %s", effect.kind, effect.summary or effect.ref)
        return output.to_xcom()


def run_label(ctx: StepContext) -> str:
    """What a person recognises a run by: its launch's name when it has one, else the run id."""
    name = launch_name(ctx.plan.launch)
    return f"launch {name}" if name else ctx.run_id


class ApprovalGate(HITLOperator):
    """Wait, holding no worker slot, for a human decision on the run's copy; silence rejects.

    The task parks in ``awaiting_input`` (no trigger, no triggerer). Reviewers answer the
    Required Actions form (Approve/Reject, a reason, the copy to publish), which resumes this task;
    the decision API and marking the task success or failed end it directly (``decisions.py``).
    It wakes once before the deadline to send a reminder; at the deadline the scheduler answers
    with the default, Reject, which closes the request and fails the run. It returns the
    :class:`Decision` record.
    """

    template_fields = ()  # the form shows LLM output and user text: never render it as a template
    ui_color = "#fff4d6"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(subject="Campaign approval", options=[APPROVE, REJECT], defaults=REJECT, multiple=False, **kwargs)

    def execute(self, context: Any) -> None:
        ti, ctx = context["ti"], step_context(self, context)
        approval, plan = ctx.campaign.approval, ctx.plan
        draft = ctx.draft
        triggered_by = context["dag_run"].triggering_user_name
        eligible = gate_rules.eligible_users(approval, role_members(), triggered_by)
        if not eligible:
            raise AirflowFailException(
                f"nobody may approve this run: {triggered_by} triggered it, the campaign does not allow "
                "self-approval and names no other approver"
            )
        state = GateState(
            deadline=gate_rules.now() + approval.timeout,
            draft=draft.model_dump(),
            draft_version=gate_rules.copy_version(draft),
            channels=plan.channels,
            eligible=eligible,
            triggered_by=triggered_by,
            outgoing=gate_rules.outgoing(ctx.campaign, plan.channels, ctx.images),
        )
        ti.xcom_push(key="gate", value=state.model_dump(mode="json"))
        self._open(ctx, ti, state)
        self.log.info("waiting for a decision by %s until %s", ", ".join(eligible), state.deadline.isoformat())
        raise TaskAwaitingInput(
            method_name="execute_complete",
            kwargs={"reminded": False},
            timeout=gate_rules.reminder_delay(approval),
        )

    def _open(self, ctx: StepContext, ti: Any, state: GateState) -> None:
        """Publish the request (the Required Actions form); again after the reminder, to reopen it."""
        self.params = ParamsDict(self._form(Copy.model_validate(state.draft), state.channels))
        upsert_hitl_detail(
            ti_id=ti.id,
            options=self.options,
            subject=f"Approve {ctx.campaign.name}: {run_label(ctx)}?",
            body=self._body(ctx, state),
            # On timeout the scheduler writes the default as the answer: Reject, so silence rejects
            # and the closed request refuses late answers (409).
            defaults=[REJECT],
            multiple=False,
            params=self.serialized_params,
            assigned_users=[{"id": user, "name": user} for user in state.eligible],
        )

    @staticmethod
    def _form(draft: Copy, channels: list[str]) -> dict[str, Param]:
        # Nullable, no minLength: the form then neither requires a reason to approve nor shows an
        # error before anyone typed. A rejection's reason and non-empty copy are checked when the
        # answer comes back (``_record``).
        reason = Param(
            None,
            type=["null", "string"],
            maxLength=2000,
            pattern=MULTI_LINE_PATTERN,
            title="Reason",
            description="Why. Optional to approve; a rejection needs one.",
        )
        fields = {"reason": reason}
        for name, value in gate_rules.form_values(draft, channels).items():
            extra: dict[str, Any] = {"format": "multiline"} if name in gate_rules.MULTILINE else {}
            if pattern := gate_rules.form_pattern(name):  # the form refuses, as one types, what the gate would
                extra["pattern"] = pattern
            fields[name] = Param(
                value,
                type="string",
                maxLength=20_000,
                title=name.replace("_", " ").capitalize(),
                description="Published as written here when you approve; may not be empty.",
                **extra,
            )
        return fields

    @staticmethod
    def _body(ctx: StepContext, state: GateState) -> str:
        review = ctx.pull(tasks.OPEN_REVIEW) or {}
        where = review.get("branch") or review.get("key") or "the review bundle"
        plan, campaign = ctx.plan, ctx.campaign
        notes = " ".join(plan.writer_notes.split())
        lines = [
            f"Review the drafts and the images on the reviewer page: {ctx.review_link}",
            "Edit the copy below if needed, then approve or reject (a rejection needs a reason).",
            "",
            f"- Campaign: {campaign.name} (`{campaign.slug}`), run `{ctx.run_id}`",
            f"- Audience: {plan.audience}",
            f"- Writer notes: {notes[:300] + ('…' if len(notes) > 300 else '') if notes else 'none'}",
            f"- Launch: {launch_name(plan.launch) or 'not named'}",
            f"- Channels: {', '.join(state.channels)}",
        ]
        if "email" in state.channels and campaign.channels.email:
            recipients = campaign.channels.email.recipients
            sample = ", ".join(recipients[:3]) + (", …" if len(recipients) > 3 else "")
            lines.append(f"- Email recipients: {len(recipients)} ({sample})")
        lines += [
            f"- Deadline: {at_utc(state.deadline)} (in {in_words(campaign.approval.timeout)}). "
            "No decision by then rejects the campaign.",
            f"- Review bundle: {where}",
            f"- Draft version: `{state.draft_version}`",
        ]
        return "\n".join(lines) + "\n"

    def execute_complete(self, context: Any, event: dict[str, Any], reminded: bool = False, **_: Any) -> dict[str, Any]:
        ti = context["ti"]
        state = GateState.model_validate(ti.xcom_pull(task_ids=self.task_id, key="gate"))
        if "error" in event:
            raise AirflowFailException(f"approval failed: {event.get('error')}")
        if event.get("timedout"):  # the scheduler's timeout sweep answered with the default
            if reminded or gate_rules.now() >= state.deadline:
                return self._timed_out(context, state)
            ctx = step_context(self, context)
            self._remind(ctx, ti, state)
            self._open(ctx, ti, state)  # clears the default answer: the request is open again
            raise TaskAwaitingInput(
                method_name="execute_complete", kwargs={"reminded": True}, timeout=state.deadline - gate_rules.now()
            )
        if isinstance(event["responded_at"], str):
            event = {**event, "responded_at": datetime.fromisoformat(event["responded_at"])}
        if event["responded_at"] > state.deadline:  # answered in the form after the deadline, before the sweep
            user = (event.get("responded_by_user") or {}).get("name", "someone")
            self.log.warning("refused the decision of %s: it came at %s, after the deadline", user, event["responded_at"])
            return self._timed_out(context, state)
        return self._finish(ti, self._record(ti, state, event))

    @staticmethod
    def _refuse(ti: Any, message: str) -> AirflowFailException:
        """Fail the gate with ``message``, kept (XCom ``error``) for the run's report."""
        ti.xcom_push(key="error", value=message[:1000])
        return AirflowFailException(message)

    def _record(self, ti: Any, state: GateState, event: dict[str, Any]) -> Decision:
        chosen, params_input = event["chosen_options"], dict(event["params_input"] or {})
        user = event["responded_by_user"] or {"id": "", "name": "unknown"}
        decision = "approved" if chosen == [APPROVE] else "rejected"
        try:
            reason = gate_rules.checked_reason(str(params_input.pop("reason", "") or ""))
        except DecisionRefused as exc:
            raise self._refuse(
                ti,
                f"refused the decision by {user['name']} in the Required Actions form: {exc}. "
                "Nothing is published: the campaign is rolled back",
            ) from None
        approved = Copy.model_validate(state.draft)
        edited: list[str] = []
        if decision == "rejected" and not reason:
            raise self._refuse(
                ti,
                f"refused the rejection by {user['name']} in the Required Actions form: it gives no "
                "reason, and a rejection needs one. Nothing is published: the campaign is rolled back",
            )
        if decision == "approved":  # a rejection publishes nothing: the form's copy fields do not matter
            emptied = [
                name
                for name in gate_rules.editable_fields(state.channels)
                if name in params_input and not str(params_input[name] or "").strip()
            ]
            if emptied:
                raise self._refuse(
                    ti,
                    f"refused the approval by {user['name']}: it leaves {', '.join(emptied)} empty, "
                    "and empty copy is never published. The campaign is rolled back",
                )
            try:
                approved, edited = gate_rules.apply_edits(approved, state.channels, params_input, state.limits())
            except DecisionRefused as exc:
                raise self._refuse(ti, f"refused the approval by {user['name']}: its copy cannot be used: {exc}") from None
        return Decision(
            decision=decision,
            by=user["name"],
            by_id=user["id"],
            means="airflow-ui",
            at=event["responded_at"],
            reason=reason[:2000],
            draft_version=state.draft_version,
            copy_version=gate_rules.copy_version(approved),
            edited_fields=edited,
            edited_copy=approved.model_dump() if edited else None,
            triggered_by=state.triggered_by,
            pinned=state.pin(approved) if decision == "approved" else {},
        )

    def _remind(self, ctx: StepContext, ti: Any, state: GateState) -> None:
        left = max(state.deadline - gate_rules.now(), timedelta(0))
        message = Message(
            key=ctx.plan.key("review-reminder"),
            to=list(ctx.campaign.approval.approvers),
            subject=f"Reminder: {ctx.campaign.name} ({run_label(ctx)}) needs a decision by {at_utc(state.deadline)}",
            text=(
                f"Campaign {ctx.campaign.name!r} ({ctx.campaign.slug}) is still waiting for approval.\n"
                f"Without a decision by {at_utc(state.deadline)} (in {in_words(left)}) it is rejected.\n"
                f"Review it: {ctx.review_link}\n"
                f"Decide: {ctx.ui_link}\n"
                f"Run: dag {ctx.dag_id}, run {ctx.run_id}"
            ),
            link=ctx.ui_link,
        )
        effect = ctx.open_port("notify").notify(message)  # recorded in the saga ledger, like every step's effects
        self.log.info("reminder sent: %s", effect.summary or effect.ref)

    def _timed_out(self, context: Any, state: GateState) -> dict[str, Any]:
        timeout = run_campaign(self, context["ti"]).approval.timeout
        record = Decision(
            decision="rejected",
            by="timeout",
            means="timeout",
            at=gate_rules.now(),
            reason=f"no decision within {in_words(timeout)} (deadline {at_utc(state.deadline)})",
            draft_version=state.draft_version,
            triggered_by=state.triggered_by,
        )
        return self._finish(context["ti"], record)

    def _finish(self, ti: Any, record: Decision) -> dict[str, Any]:
        self.log.info("decision: %s", record.summary())
        value = record.model_dump(mode="json")
        if not record.approved:
            ti.xcom_push(key="return_value", value=value)  # kept although the task fails
            raise AirflowFailException(record.failure())
        return value


def _first(value: Any) -> Any:
    """One value of an XCom pull that may be a mapped task's list."""
    if isinstance(value, (str, dict)) or value is None:
        return value
    return next((v for v in value if v), None)


class Compensate(BaseOperator):
    """``compensation.undo``: undo every side effect of a run that did not complete, newest first.

    A teardown: Airflow runs it once every forward task is done, also when a user marks the run
    failed, and retries it with backoff while an undo fails (each try resumes from the ledger).
    A run whose campaign completed is never compensated: the task skips.
    """

    ui_color = "#fde2e1"

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        if task_states(self, context).get(tasks.DASHBOARD) == ["success"]:
            raise AirflowSkipException("the campaign completed: nothing to undo")
        started = time.monotonic()
        entries = saga.compensate(open_ledger(), ti.dag_id, ti.run_id, open_backend)
        seconds = round(time.monotonic() - started, 3)
        ti.xcom_push(key="seconds", value=seconds)
        if left := saga.left_open(entries):  # retried: an undo that failed may succeed later
            what = "; ".join(f"{e.effect.kind} {e.effect.key} ({e.error})" for e in left)
            raise RuntimeError(f"{len(left)} effect(s) not undone yet: {what}")
        return {"seconds": seconds, "entries": len(entries)}


class RunReport(BaseOperator):
    """``compensation.report``: the run's verdict and report; fails the run when the campaign did not complete.

    A teardown with ``on_failure_fail_dagrun``: whatever stopped the campaign (a failed step, a
    rejection, a timeout, a user marking the run failed), this task fails with the reason and the
    run ends failed. It alerts the owner and approvers when something is left to clean up by hand.
    """

    ui_color = "#fde2e1"

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        campaign = run_campaign(self, ti)
        states = task_states(self, context)
        order = [t for t in self.dag.task_dict if not tasks.is_compensation(t)]
        errors = {t: _first(ti.xcom_pull(task_ids=t, key="error")) for t in order if "failed" in states.get(t, [])}
        gate = ti.xcom_pull(task_ids=tasks.GATE) if "failed" in states.get(tasks.GATE, []) else None
        status, reason = saga.verdict(campaign, states, order, gate, {t: e for t, e in errors.items() if e})
        seconds = ti.xcom_pull(task_ids=tasks.UNDO, key="seconds")
        result = saga.report(ti.dag_id, ti.run_id, status, reason, open_ledger().entries(ti.dag_id, ti.run_id), seconds)
        plan = _pull(self, ti, tasks.PLAN)
        result.campaign_version = plan.get("campaign_version", "") if isinstance(plan, dict) else ""
        for line in result.summary().splitlines():
            (self.log.info if result.ok else self.log.error)("%s", line)
        # Alert when something is left, live, or out for good after a rollback (an email already sent).
        out_for_good = result.status == "rolled back" and result.kept
        if result.left or result.status == "failed after going live" or out_for_good:
            self._alert(campaign, result)
        if result.status == "rolled back" and not result.kept:  # nothing of it is out: it may be launched again
            if open_ledger().release_launch(ti.dag_id, ti.run_id):
                self.log.info("released this run's launch: the campaign can be triggered again with the same conf")
        if not result.ok:
            ti.xcom_push(key="return_value", value=result.model_dump(mode="json"))  # the run's note reads it
            raise AirflowFailException(result.summary())
        return result.model_dump(mode="json")

    def _alert(self, campaign: Campaign, result: saga.Report) -> None:
        message = saga.cleanup_alert(campaign, run_key(self.dag_id, result.run_id), result)
        try:  # not recorded in the ledger: compensating again must never take the alert back
            effect = open_port("notify", campaign.connections).notify(message)
            self.log.warning("alert sent: %s", effect.summary or effect.key)
        except Exception:
            self.log.exception("could not send the alert; what it says is above")


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
            # delivered, goes last: the saga's pivot (saga.py).
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


class ReviewWatch(BaseOperator):
    """One round of the GitHub review watcher (``review_watch.py``) over every waiting campaign."""

    ui_color = "#e8f0fe"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.orchestrator.approval import review_watch
        from include.orchestrator.backends.connection import get_connection

        ti = context["ti"]
        api = get_connection(review_watch.API_CONN_ID)
        if not (api.host and api.login and api.password):
            raise ConnectionConfigError(
                f"connection {review_watch.API_CONN_ID!r} needs host (the Airflow API base URL), login and password: "
                "the user the watcher asks the decision API as"
            )

        def waiting(dag_id: str, run_ids: list[str]) -> set[str]:
            states = ti.get_task_states(dag_id=dag_id, run_ids=run_ids)
            return {run_id for run_id, by_task in states.items() if by_task.get(tasks.GATE) == "awaiting_input"}

        def apply(dag_id: str, run_id: str) -> Any:
            path = f"/campaigns/api/v1/approvals/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/github"
            return gate_rules.call_api(api.host, api.login, api.password, "POST", path)

        report = review_watch.watch(
            open_ledger(),
            since=datetime.now(UTC) - timedelta(days=30),  # no gate waits that long (the model's longest timeout)
            campaign_of=campaign_of,
            waiting=waiting,
            open_backend=open_backend,
            apply=apply,
        )
        if report.errors and len(report.errors) == report.waiting:  # nothing worked: show it red in the UI
            raise AirflowFailException(f"every watched pull request failed; first: {report.errors[0]}")
        return {"summary": report.summary(), "decided": report.decided, "errors": report.errors}


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
