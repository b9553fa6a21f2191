"""The approval gate: a human-in-the-loop task that waits for a decision on the run's copy."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput

from include.orchestrator.airflow.compat import upsert_hitl_detail
from include.orchestrator.airflow.runtime import role_members, run_campaign, run_label, step_context
from include.orchestrator.approval import records
from include.orchestrator.approval import rules as gate_rules
from include.orchestrator.approval.rules import APPROVE, REJECT, Decision, GateState
from include.orchestrator.domain.model import MULTI_LINE_PATTERN, at_utc, in_words, launch_name
from include.orchestrator.domain.ports import Copy, Message
from include.orchestrator.errors import DecisionRefused
from include.orchestrator.steps import StepContext


class ApprovalGate(HITLOperator):
    """Wait, holding no worker slot, for a human decision on the run's copy; silence rejects.

    The task parks in ``awaiting_input`` (no trigger, no triggerer). Reviewers answer the
    Required Actions form (Approve/Reject, a reason, the copy to publish), which resumes this task;
    the decision API and marking the task success or failed end it directly (``approval/decisions.py``).
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
            max_lengths=gate_rules.max_lengths(ctx.campaign, plan.channels),
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
        review = ctx.review
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
        return records.from_form(
            state,
            approve=decision == "approved",
            user_id=user["id"],
            user_name=user["name"],
            reason=reason,
            copy=approved,
            edited=edited,
            at=event["responded_at"],
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
        return self._finish(context["ti"], records.on_timeout(state, timeout))

    def _finish(self, ti: Any, record: Decision) -> dict[str, Any]:
        self.log.info("decision: %s", record.summary())
        value = record.model_dump(mode="json")
        if not record.approved:
            ti.xcom_push(key="return_value", value=value)  # kept although the task fails
            raise AirflowFailException(record.failure())
        return value
