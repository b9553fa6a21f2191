"""Deciding on a waiting run, inside the Airflow API server: the campaign decision API.

Runs where the metadata DB is reachable (the API server, through ``plugins/campaign_approvals``;
or in-process for ``make demo`` and the tests). It checks what Airflow's own Required Actions
endpoint cannot: role approvers, self-approval, the deadline, edited copy. Then it closes the
gate's human-in-the-loop request and ends the gate with the decision record, as marking it
success or failed does, so no worker is needed and distribution can start at once.

``GateListener`` records decisions taken by marking the gate success or failed in the UI: that
needs only the "edit task instance" permission on the DAG, so the record names who did it, from
Airflow's audit log, and a mark of success by someone the campaign does not let approve
(``approval.marks``) fails the gate instead: nothing is published.
"""

import json
from typing import Annotated, Any, Literal

import structlog
from airflow.listeners import hookimpl
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, object_session

from include.orchestrator.approval import records, rules
from include.orchestrator.approval.rules import APPROVE, REJECT, Decision, GateState
from include.orchestrator.domain import tasks
from include.orchestrator.domain.model import RunPlan
from include.orchestrator.domain.ports import Copy
from include.orchestrator.errors import DecisionRefused, Retryable, ServiceError

log = structlog.get_logger(__name__)


class DecisionRequest(BaseModel):
    """The body of ``POST /campaigns/api/v1/approvals/{dag_id}/{run_id}``."""

    decision: Literal["approve", "reject"]
    reason: str = Field("", max_length=2000)
    copy_edits: dict[str, str] = Field(
        default_factory=dict,
        alias="copy",
        description="Edited copy, by form field: headline, email_subject, email_body, social_post, blog_title, blog_body.",
    )
    via: Literal["rest", "cli"] = "rest"

    model_config = {"populate_by_name": True, "extra": "forbid"}


def _campaign(session: Session, ti: Any) -> Any:
    """The campaign the run uses: the snapshot its ``validate_conf`` froze (the file's current text
    must not change who may approve a run already under way), else the file's."""
    from include.orchestrator.domain.loader import campaign_of

    plan = _xcom(session, ti, "return_value", task_id=tasks.PLAN)
    snapshot = RunPlan.model_validate(plan["result"]).snapshot() if isinstance(plan, dict) and plan.get("result") else None
    campaign = snapshot or campaign_of(ti.dag_id)
    if campaign is None:
        raise DecisionRefused(404, f"no campaign file defines {ti.dag_id!r}")
    return campaign


def _xcom(session: Session, ti: Any, key: str, task_id: str | None = None) -> Any:
    """An XCom of the gate, or of another unmapped task of its run."""
    from include.orchestrator.airflow.compat import XComModel

    row = session.scalar(
        select(XComModel.value).where(
            XComModel.dag_id == ti.dag_id,
            XComModel.run_id == ti.run_id,
            XComModel.task_id == (task_id or ti.task_id),
            XComModel.map_index == (ti.map_index if task_id is None else -1),
            XComModel.key == key,
        )
    )
    # Values written through the Execution API are stored as plain JSON, as ``_set_xcom`` does.
    return json.loads(row) if isinstance(row, str) else row


def _set_xcom(session: Session, ti: Any, key: str, value: Any) -> None:
    from include.orchestrator.airflow.compat import XComModel

    XComModel.set(
        key,
        value,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        map_index=ti.map_index,
        serialize=False,
        session=session,
    )


def _gate(session: Session, dag_id: str, run_id: str) -> Any:
    from include.orchestrator.airflow.compat import DagRun, TaskInstance

    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is None:
        raise DecisionRefused(404, f"no run {run_id!r} of DAG {dag_id!r}")
    query = select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == tasks.GATE
    )
    ti = session.scalar(query)
    if ti is None:
        raise DecisionRefused(404, f"run {run_id!r} of {dag_id!r} has no approval gate")
    return ti


def status(session: Session, dag_id: str, run_id: str) -> dict[str, Any]:
    """Where the run's approval stands: waiting (with deadline and who may decide) or decided."""
    ti = _gate(session, dag_id, run_id)
    gate, record = _xcom(session, ti, "gate"), _xcom(session, ti, "return_value")
    waiting = ti.state == "awaiting_input" and record is None
    answer: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "gate_state": ti.state, "waiting": waiting}
    if gate:
        state = GateState.model_validate(gate)
        answer |= {
            "deadline": state.deadline.isoformat(),
            "eligible": state.eligible,
            "draft_version": state.draft_version,
            "editable": rules.form_values(Copy.model_validate(state.draft), state.channels),
        }
    if record:
        answer["decision"] = record
    return answer


def _waiting(session: Session, dag_id: str, run_id: str) -> tuple[Any, Any, GateState, Any]:
    """The campaign, the gate, its published state and its open request, or why the run does not
    wait for a decision (404, 409). Read without locks: :func:`_end` settles which decision wins."""
    from include.orchestrator.airflow.compat import HITLDetail

    if not dag_id.startswith("campaign_"):
        raise DecisionRefused(404, f"{dag_id!r} is not a campaign DAG")
    ti = _gate(session, dag_id, run_id)
    campaign = _campaign(session, ti)
    record = _xcom(session, ti, "return_value")
    if record:
        raise DecisionRefused(409, f"already decided: {Decision.model_validate(record).summary()}")
    if ti.state != "awaiting_input":
        state = ti.state or "not started"
        if state in ("success", "failed", "skipped", "upstream_failed", "removed"):
            raise DecisionRefused(409, f"the approval gate is {state}: the run no longer waits for a decision")
        raise DecisionRefused(409, f"the run has not reached the approval gate yet (gate: {state})")
    gate = GateState.model_validate(_xcom(session, ti, "gate"))
    if rules.now() >= gate.deadline:
        raise DecisionRefused(
            409, f"the approval window closed at {gate.deadline.isoformat(timespec='seconds')}: the run is rejected by timeout"
        )
    detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
    if detail is None or detail.response_received:
        # Each statement sees what is committed when it runs (PostgreSQL's READ COMMITTED): a winner
        # may have committed its record between the read above and this one.
        raise _already_decided(session, ti, "the approval request was already answered")
    return campaign, ti, gate, detail


def _already_decided(session: Session, ti: Any, otherwise: str) -> DecisionRefused:
    """The 409 of a decision that came second: naming the one that won, once its record is readable."""
    earlier = _xcom(session, ti, "return_value")
    return DecisionRefused(409, f"already decided: {Decision.model_validate(earlier).summary()}" if earlier else otherwise)


def decide(
    session: Session,
    *,
    dag_id: str,
    run_id: str,
    user_id: str,
    user_name: str,
    roles: list[str],
    request: DecisionRequest,
    means: rules.Means | None = None,
) -> Decision:
    """Take a decision on a waiting run, or raise :class:`DecisionRefused` saying why not."""
    campaign, ti, gate, detail = _waiting(session, dag_id, run_id)
    why = rules.refusal(campaign.approval, user_id, user_name, roles, gate.triggered_by)
    if why:
        raise DecisionRefused(403, why)
    approve = request.decision == "approve"
    if request.copy_edits and not approve:
        raise DecisionRefused(400, "edited copy comes only with an approval")
    reason = rules.checked_reason(request.reason)
    if not approve and not reason:
        raise DecisionRefused(400, "a rejection needs a reason")
    draft = Copy.model_validate(gate.draft)
    approved, edited = rules.apply_edits(draft, gate.channels, request.copy_edits, gate.limits())
    record = records.from_api(
        gate,
        approve=approve,
        user_id=user_id,
        user_name=user_name,
        reason=reason,
        copy=approved,
        edited=edited,
        means=means or request.via,
    )
    _end(session, ti, detail, record, {"reason": record.reason, **rules.form_values(approved, gate.channels)}, user_id)
    return record


def decide_from_github(session: Session, *, dag_id: str, run_id: str) -> Decision:
    """Apply what the run's review pull request says (asked of GitHub here, never taken from the
    caller), or raise :class:`DecisionRefused`: 409 while no allowed reviewer has decided."""
    from include.orchestrator.backends.registry import open_backend

    campaign, ti, gate, detail = _waiting(session, dag_id, run_id)
    approvers = campaign.approval.github_approvers
    if not approvers:
        raise DecisionRefused(400, f"campaign {campaign.slug!r} names no github_approvers: GitHub reviews do not decide its runs")
    review = _xcom(session, ti, "return_value", task_id=tasks.OPEN_REVIEW) or {}
    effect = next((e for e in review.get("effects", []) if e.get("kind") == "github_pull_request"), None)
    if effect is None:
        raise DecisionRefused(409, "the run's review is not a GitHub pull request (its review connection is not a github one)")
    poll = open_backend("review", effect["conn_id"]).poll_reviews(effect["ref"], None)
    url = str(effect["ref"].get("url") or "")
    verdict = rules.github_verdict(approvers, poll.pull_state, [r.model_dump() for r in poll.reviews], url)
    if verdict is None:
        raise DecisionRefused(409, f"no decision on the review pull request yet {url}: waiting for {', '.join(approvers)}")
    record = records.from_github(gate, verdict)
    _end(session, ti, detail, record, {"reason": record.reason}, None)
    return record


def _end(session: Session, ti: Any, detail: Any, record: Decision, params_input: dict[str, Any], user_id: str | None) -> None:
    """End the gate with the decision, unless another one ended it first (409); close the request."""
    from include.orchestrator.airflow.compat import TaskInstanceState

    # End the gate here, as marking it success or failed does. Resuming it instead would cost a
    # worker run, then a full turn of the scheduler's round of running runs before distribution
    # starts (measured: p95 40 s with 1,000 runs waiting). First write of the transaction: see end_waiting.
    if not end_waiting(session, type(ti), ti, TaskInstanceState.SUCCESS if record.approved else TaskInstanceState.FAILED):
        # The winner's record is committed: the update waited for its transaction.
        raise _already_decided(session, ti, "the approval gate was ended by someone else meanwhile: the run no longer waits")
    _close(detail, record.by_id or record.by, record.by, record.at, record.approved, params_input)
    _keep(session, ti, record, record.summary() if record.approved else f"{record.summary()} -> {record.failure()}", user_id)


def end_waiting(session: Session, model: Any, row: Any, state: str) -> bool:
    """Move ``row`` (of ``model``, a task instance) from ``awaiting_input`` to the finished ``state``;
    False when it was no longer waiting.

    A compare-and-set: one ``UPDATE ... WHERE state = 'awaiting_input'``, whose row count says
    who won. The database settles concurrent decisions: PostgreSQL makes the second update wait
    for the first's row lock and re-checks the condition; SQLite lets one writer at a time and
    the waiting one sees the committed state. A ``SELECT ... FOR UPDATE`` first would not do:
    SQLite ignores it, so every request read "waiting" and every one was answered 200.
    """
    from airflow.sdk import timezone

    ended = timezone.utcnow()
    started = row.start_date or ended
    done = session.execute(
        update(model)
        .where(model.id == row.id, model.state == "awaiting_input")
        .values(
            state=state,
            start_date=started,
            end_date=ended,
            duration=(ended - started).total_seconds(),
            next_method=None,
            next_kwargs=None,
            trigger_timeout=None,
        )
        .execution_options(synchronize_session="evaluate")  # the row read before; no RETURNING: rowcount stays exact
    )
    return done.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult; Session.execute types it Result


def _close(detail: Any, user_id: str, user_name: str, at: Any, approved: bool, params_input: dict[str, Any]) -> None:
    """Answer the gate's request with the decision: a later answer in the form then gets 409."""
    detail.responded_by = {"id": user_id, "name": user_name}
    detail.responded_at = at
    detail.chosen_options = [APPROVE if approved else REJECT]
    detail.params_input = params_input


def _keep(session: Session, ti: Any, record: Decision, note: str | None, user_id: str | None) -> None:
    """Store the record as the gate's result, note it, log it, and have the scheduler look at the run first."""
    _set_xcom(session, ti, "return_value", record.model_dump(mode="json"))
    if note:
        _note(ti, note, user_id)
    _first_in_line(ti)
    # Marking the task bypasses the approvers list: worth a warning.
    (log.warning if record.means.startswith("mark-") else log.info)(
        "campaign decision", dag_id=ti.dag_id, run_id=ti.run_id, means=record.means, summary=record.summary()
    )


def _first_in_line(ti: Any) -> None:
    """Have the scheduler look at the gate's run in its next round: a cleared last_scheduling_decision sorts first."""
    if ti.dag_run is not None:
        ti.dag_run.last_scheduling_decision = None


def _note(ti: Any, text: str, user_id: str | None) -> None:
    text = text[:1000]
    if ti.task_instance_note is None:
        ti.note = (text, user_id)
    else:
        ti.task_instance_note.content = text


def refused(dag_id: str, run_id: str, user_name: str, exc: DecisionRefused, via: str, session: Session | None = None) -> None:
    """Log a refused decision, and keep it in Airflow's audit log (in ``session``'s transaction if given)."""
    from include.orchestrator.airflow.compat import Log, create_session

    log.warning("campaign decision refused", dag_id=dag_id, run_id=run_id, user=user_name, status=exc.status, why=str(exc))
    entry = Log(
        event="campaign_decision_refused",
        owner=user_name,
        dag_id=dag_id,
        run_id=run_id,
        task_id=tasks.GATE,
        extra=json.dumps({"status": exc.status, "why": str(exc), "via": via}),
    )
    if session is not None:
        session.add(entry)
        return
    with create_session() as own:  # its own transaction: the request's is rolled back
        own.add(entry)


def user_roles(user: Any) -> list[str]:
    """The roles of an auth manager's user: one ``role`` (simple auth manager) or ``roles`` (FAB)."""
    role = getattr(user, "role", None)
    names = [role] if isinstance(role, str) else []
    for item in getattr(user, "roles", None) or []:
        name = getattr(item, "name", item)
        if isinstance(name, str):
            names.append(name)
    return names


def record_manual(ti: Any, approved: bool) -> Decision | None:
    """Record a decision taken by marking the gate success or failed in the UI (or its REST call)."""
    from include.orchestrator.airflow.compat import HITLDetail, Log

    session = object_session(ti)
    if session is None or _xcom(session, ti, "return_value") is not None:
        return None
    # The audit log row of this very request names the user; it sits in the same transaction. It
    # is the task's row (the gate marked), or the run's (the whole run marked: a cancellation).
    entry = session.scalar(
        select(Log)
        .where(
            Log.dag_id == ti.dag_id,
            Log.run_id == ti.run_id,
            or_(and_(Log.task_id == ti.task_id, Log.event.like("%task_instance%")), Log.event == "patch_dag_run"),
        )
        .order_by(Log.dttm.desc(), Log.id.desc())
        .limit(1)
    )
    by = entry.owner if entry is not None and entry.owner else "unknown (see the audit log)"
    whole_run = entry is not None and entry.event == "patch_dag_run"
    gate = _xcom(session, ti, "gate")
    state = GateState.model_validate(gate) if gate else None
    detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
    if approved and not whole_run and (why := _mark_refusal(session, ti, by, state)):
        _refuse_mark(session, ti, detail, by, why)
        return None
    note = ti.note or ""
    record = records.from_mark(state, approved=approved, by=by, whole_run=whole_run, note=note)
    if detail is not None and not detail.response_received:
        _close(detail, by, by, record.at, approved, {"reason": record.reason})
    _keep(session, ti, record, None if note else record.summary(), None)
    return record


def _mark_refusal(session: Session, ti: Any, by: str, state: GateState | None) -> str | None:
    """Why marking the gate success by ``by`` must not approve the run, or None when it approves.

    Marking needs only Airflow's permission to edit task instances; unless the campaign opts in
    (``approval.marks: anyone``), it approves only from someone the form and the decision API
    would let approve. Roles are known from config with the simple auth manager only: with
    others, role approvers decide through the form or the API (their marks are refused).
    """
    from include.orchestrator.airflow.runtime import role_members

    try:
        approval = _campaign(session, ti).approval
    except DecisionRefused as exc:  # who may approve is unknown: the mark must not publish
        return f"cannot tell who may approve this run: {exc}"
    if approval.marks == "anyone":
        return None
    roles = [role for role, users in role_members().items() if by in users]
    return rules.refusal(approval, by, by, roles, state.triggered_by if state else None)


def _refuse_mark(session: Session, ti: Any, detail: Any, by: str, why: str) -> None:
    """Turn a mark of success that may not approve into a failed gate: distribution never starts,
    compensation runs, and the run's report gives ``why`` (the gate's XCom ``error``, as for a
    refused answer in the form). The request is closed, and the refusal is in Airflow's audit log."""
    from include.orchestrator.airflow.compat import TaskInstanceState

    message = (
        f"refused the approval by {by}, who marked the approval task success: {why}. "
        "Nothing is published: the campaign is rolled back"
    )
    ti.set_state(TaskInstanceState.FAILED, session=session)  # same transaction: nobody ever sees it succeeded
    _set_xcom(session, ti, "error", message)
    if detail is not None and not detail.response_received:
        _close(detail, by, by, rules.now(), False, {"reason": message})
    _note(ti, message, None)
    _first_in_line(ti)
    # The request's own transaction: a second session would wait on SQLite's lock that this one holds.
    refused(ti.dag_id, ti.run_id, by, DecisionRefused(403, why), "mark-success", session=session)


class GateListener:
    """Airflow listener: a gate marked success/failed by a user (no previous state) is a decision."""

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        if previous_state is None and getattr(task_instance, "task_id", None) == tasks.GATE:
            record_manual(task_instance, approved=True)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        if previous_state is None and getattr(task_instance, "task_id", None) == tasks.GATE:
            record_manual(task_instance, approved=False)


def add_routes(app: Any) -> None:
    """The decision API on the plugin's FastAPI app (``web/app.py``): Airflow's auth guards every route."""
    from fastapi import Body, Depends, HTTPException

    from include.orchestrator.airflow.compat import DagAccessEntity, GetUserDep, SessionDep, requires_access_dag

    path = "/api/v1/approvals/{dag_id}/{run_id}"

    @app.get(path, dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.HITL_DETAIL))])
    def get_approval(dag_id: str, run_id: str, session: SessionDep) -> dict[str, Any]:
        try:
            return status(session, dag_id, run_id)
        except DecisionRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @app.post(path, dependencies=[Depends(requires_access_dag(method="PUT", access_entity=DagAccessEntity.HITL_DETAIL))])
    def post_decision(
        dag_id: str, run_id: str, body: Annotated[DecisionRequest, Body()], user: GetUserDep, session: SessionDep
    ) -> dict[str, Any]:
        user_id, user_name = str(user.get_id()), user.get_name()
        try:
            record = decide(
                session, dag_id=dag_id, run_id=run_id, user_id=user_id, user_name=user_name, roles=user_roles(user), request=body
            )
        except DecisionRefused as exc:
            session.rollback()
            refused(dag_id, run_id, user_name, exc, body.via)
            raise HTTPException(exc.status, str(exc)) from None
        return record.model_dump(mode="json")

    may_decide = [Depends(requires_access_dag(method="PUT", access_entity=DagAccessEntity.HITL_DETAIL))]

    @app.post(f"{path}/github", dependencies=may_decide)
    def post_github_review(dag_id: str, run_id: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        """Apply the run's review pull request: its reviews are read from GitHub here, so whoever
        asks (the review watcher, a user) cannot put words in a reviewer's mouth."""
        try:
            record = decide_from_github(session, dag_id=dag_id, run_id=run_id)
        except DecisionRefused as exc:
            session.rollback()
            raise HTTPException(exc.status, str(exc)) from None
        except ServiceError as exc:
            session.rollback()
            raise HTTPException(503 if isinstance(exc, Retryable) else 502, str(exc)) from None
        return record.model_dump(mode="json")
