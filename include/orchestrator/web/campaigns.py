"""What the Campaigns view shows, read from Airflow's metadata DB: campaigns, their runs, each
run's phase, its approval and its outcome.

Runs in the API server (the plugin's FastAPI app, ``web/app.py``). Every function takes the
request's session and the DAG ids the caller may read, so nobody sees a campaign their auth
manager hides. A handful of queries per call whatever the number of campaigns (measured in
``bench/campaigns_view_bench.py``): the DAG table, the recent runs, their task states, and the
few XComs a summary needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.orm import Session

from include.orchestrator.approval import rules
from include.orchestrator.approval.rules import GateState
from include.orchestrator.domain import tasks
from include.orchestrator.domain.model import Campaign, RunPlan, campaign_version
from include.orchestrator.errors import CampaignFilesInvalid

# Where a run can be, in order: the plan, the forward task groups, compensation.
PHASES = (tasks.PLAN, *tasks.PHASES, tasks.COMPENSATION_GROUP)
PHASE_NAMES = {"validate_conf": "plan"}
DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}
RECENT_RUNS = 5


class Progress(BaseModel):
    phase: str  # the group of the first unfinished task, "waiting for approval", or "finished"
    done: int  # forward task instances finished
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


class Approval(BaseModel):
    """A run's approval: waiting (with its deadline and who may decide) or decided."""

    waiting: bool
    gate_state: str | None = None
    deadline: datetime | None = None
    eligible: list[str] = []
    decision: dict[str, Any] | None = None
    error: str = ""  # why the gate ended without a decision (a refused answer or mark), as the gate recorded it


class Outcome(BaseModel):
    """How a finished run ended (the saga's report) and what went out where."""

    status: str  # the report's status, or the run's state when no report exists
    summary: str = ""
    published: list[dict[str, Any]] = []  # per channel: kind, summary, link or id
    undone: list[str] = []
    left: list[str] = []
    kept: list[str] = []


class RunSummary(BaseModel):
    dag_id: str
    run_id: str
    state: str
    run_type: str
    triggered_by: str | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    note: str | None = None
    progress: Progress
    approval: Approval | None = None
    outcome: Outcome | None = None


class CampaignSummary(BaseModel):
    dag_id: str
    slug: str
    name: str
    owner: str
    description: str = ""
    channels: list[str]
    schedule: str
    paused: bool
    file_error: str = ""  # the campaign file is gone or invalid: what we know comes from Airflow
    runs: list[RunSummary]
    waiting: int  # runs waiting for approval


# --- campaign files (cached: the list page reads every campaign) ------------------------------
_FILES: dict[Path, tuple[tuple[int, int], Campaign | None, str]] = {}
HELD = "its runs in flight wait (Airflow stops scheduling a DAG its file no longer defines)"


def campaign_file(dag_id: str) -> Campaign | None:
    """The campaign behind a DAG from its file, re-read only when the file changed."""
    return _campaign_file(dag_id)[0]


def campaign_file_error(dag_id: str) -> str:
    """What is wrong with a campaign's file, in words naming the file and its fields; "" if nothing."""
    return _campaign_file(dag_id)[1]


def _campaign_file(dag_id: str) -> tuple[Campaign | None, str]:
    from include.orchestrator.domain.loader import campaigns_dir, parse_campaign

    slug = dag_id.removeprefix("campaign_")
    for suffix in (".yaml", ".yml"):
        path = campaigns_dir() / f"{slug}{suffix}"
        try:
            stat = os.stat(path)
        except OSError:
            continue
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _FILES.get(path)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, parse_campaign(path), "")
            except CampaignFilesInvalid as exc:
                problems = "; ".join(p for e in exc.errors for p in e.problems)
                cached = (stamp, None, f"{path.name} is invalid: {problems}. Until it is fixed, {HELD}.")
            _FILES[path] = cached
        return cached[1], cached[2]
    return None, f"its campaign file {slug}.yaml is missing. Until it is back, {HELD}."


# --- reading the metadata DB -------------------------------------------------------------------
def _json(value: Any) -> Any:
    """An XCom value as stored: JSON text when a task pushed it; as it was given when the decision
    API set it (``XComModel.set(serialize=False)``: the record as a dict, a refused mark's error as
    a bare string, which is not JSON text)."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value.decode() if isinstance(value, bytes) else value
    return value


def _xcoms(
    session: Session, runs: Iterable[Any], task_ids: Iterable[str], key: str = "return_value"
) -> dict[tuple[str, str, str, int], Any]:
    """XCom values of some tasks of some runs, by (dag_id, run_id, task_id, map_index).

    ``runs``: (dag_id, run_id) pairs, or DagRun rows, which are read by their ids: one index look-up
    each. Many (dag_id, run_id) pairs are slow on PostgreSQL, which tests every row against every
    pair (measured with 800 runs: 330 ms against 9 ms by id, ``bench/campaigns_view_bench.py``).
    """
    from include.orchestrator.airflow.compat import XComModel

    runs, task_ids = list(runs), list(task_ids)
    if not runs or not task_ids:
        return {}
    if isinstance(runs[0], tuple):
        which = tuple_(XComModel.dag_id, XComModel.run_id).in_(runs)
    else:
        which = XComModel.dag_run_id.in_([run.id for run in runs])
    rows = session.execute(
        select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.value).where(
            which, XComModel.task_id.in_(task_ids), XComModel.key == key
        )
    )
    return {(d, r, t, m): _json(v) for d, r, t, m, v in rows}


def _task_states(session: Session, runs: list[Any]) -> dict[tuple[str, str], list[tuple[str, str | None]]]:
    """Task ids and states of some DagRun rows, by (dag_id, run_id) (found through the runs' ids, as in ``_xcoms``)."""
    from include.orchestrator.airflow.compat import DagRun
    from include.orchestrator.airflow.compat import TaskInstance as TI

    found: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    if not runs:
        return found
    rows = session.execute(
        select(TI.dag_id, TI.run_id, TI.task_id, TI.state)
        .join(DagRun, and_(DagRun.dag_id == TI.dag_id, DagRun.run_id == TI.run_id))
        .where(DagRun.id.in_([run.id for run in runs]))
    )
    for dag_id, run_id, task_id, state in rows:
        found.setdefault((dag_id, run_id), []).append((task_id, str(state) if state is not None else None))
    return found


def progress_of(states: list[tuple[str, str | None]], run_state: str) -> Progress:
    """Where a run is: the phase of its first unfinished forward task, and how many are done."""
    forward = [(task_id, state) for task_id, state in states if not tasks.is_compensation(task_id)]
    done = sum(1 for _, state in forward if state in DONE)
    if run_state in ("success", "failed", "queued"):  # a queued run has task rows, none started
        return Progress(phase="finished" if run_state != "queued" else "queued", done=done, total=len(forward))
    if any(task_id == tasks.GATE and state == "awaiting_input" for task_id, state in forward):
        return Progress(phase="waiting for approval", done=done, total=len(forward))
    unfinished = {task_id.split(".")[0] for task_id, state in states if state not in DONE}
    phase = next((p for p in PHASES if p in unfinished), "finished" if states else "queued")
    return Progress(phase=PHASE_NAMES.get(phase, phase), done=done, total=len(forward))


BRIEF_DECISION = ("decision", "by", "means", "at", "reason")  # a list's record: no copy


def approval_of(gate_ti_state: str | None, gate: Any, record: Any, brief: bool = False, error: Any = None) -> Approval | None:
    if gate is None and record is None and not error:
        return None
    if brief:  # the deadline and who may decide, without validating the draft the gate also holds
        deadline = datetime.fromisoformat(gate["deadline"]) if gate and gate.get("deadline") else None
        eligible = list(gate.get("eligible") or []) if gate else []
        record = {k: record.get(k) for k in BRIEF_DECISION} if record else None
    else:
        state = GateState.model_validate(gate) if gate else None
        deadline, eligible = (state.deadline, state.eligible) if state else (None, [])
    return Approval(
        waiting=gate_ti_state == "awaiting_input" and record is None,
        gate_state=gate_ti_state,
        deadline=deadline,
        eligible=eligible,
        decision=record,
        error=str(error or "") if record is None else "",
    )


def _link(ref: dict[str, Any]) -> str:
    for name in ("url", "html_url", "link", "permalink", "post_url", "message_id", "id", "path", "sha"):
        if ref.get(name):
            return str(ref[name])
    return ""


def outcome_of(run_state: str, report: Any, published: dict[str, Any], brief: bool = False) -> Outcome | None:
    """A finished run's outcome from its report, and what each channel's task says it published.

    ``brief`` (lists): the status and what is left to clean up by hand, nothing else.
    """
    from include.orchestrator.saga.outcome import Line, Report

    if run_state not in ("success", "failed"):
        return None
    if brief:
        if report is None:
            return Outcome(status=run_state, summary="no report: the report task did not run")
        return Outcome(
            status=report.get("status", run_state), left=[Line.model_validate(x).text() for x in report.get("left") or []]
        )
    channels = []
    for task_id, value in sorted(published.items()):
        for effect in (value or {}).get("effects", []):
            channels.append(
                {
                    "channel": tasks.channel_of(task_id),
                    "kind": effect.get("kind", ""),
                    "summary": effect.get("summary", ""),
                    "link": _link(effect.get("ref") or {}),
                }
            )
    if report is None:
        return Outcome(status=run_state, summary="no report: the report task did not run", published=channels)
    result = Report.model_validate(report)
    return Outcome(
        status=result.status,
        summary=result.summary(),
        published=channels,
        undone=[line.text() for line in result.undone],
        left=[line.text() for line in result.left],
        kept=[line.text() for line in result.kept],
    )


def _runs(session: Session, rows: list[Any], brief: bool = False) -> list[RunSummary]:
    """Summaries of some DagRun rows: states, approval and outcome, in a few queries.

    ``brief`` (the lists): what a list shows, i.e. no copy, no per-channel results, the note's first
    line. A list of 1,000 runs was 2.2 MB and most of its time in full (``bench/campaigns_view_bench.py``).
    """
    states = _task_states(session, rows)
    finished = [r for r in rows if str(r.state) in ("success", "failed")]
    gated = [r for r in rows if any(t == tasks.GATE for t, _ in states.get((r.dag_id, r.run_id), []))]
    # A list needs the gate's state (deadline, who may decide: next to the whole draft) only while it waits.
    waiting = [r for r in gated if (tasks.GATE, "awaiting_input") in states.get((r.dag_id, r.run_id), [])]
    gates = _xcoms(session, waiting if brief else gated, [tasks.GATE], "gate")
    values = _xcoms(session, gated, [tasks.GATE])
    refused = [] if brief else [r for r in gated if (tasks.GATE, "failed") in states.get((r.dag_id, r.run_id), [])]
    gate_errors = _xcoms(session, refused, [tasks.GATE], "error")  # why a gate ended without a decision
    channels = [] if brief else [tasks.channel_task(c) for c in ("email", "social", "blog")]
    values |= _xcoms(session, finished, [tasks.REPORT, *channels])
    published_by_run: dict[tuple[str, str], dict[str, Any]] = {}  # grouped once: per run, a scan of every value is quadratic
    for (d, r, t, _), v in values.items():
        if t.startswith(tasks.CHANNEL_PREFIX):
            published_by_run.setdefault((d, r), {})[t] = v
    summaries = []
    for row in rows:
        key, state = (row.dag_id, row.run_id), str(row.state)
        ti_states = states.get(key, [])
        gate_state = next((s for t, s in ti_states if t == tasks.GATE), None)
        published = published_by_run.get(key, {})
        summaries.append(
            RunSummary(
                dag_id=row.dag_id,
                run_id=row.run_id,
                state=state,
                run_type=str(row.run_type),
                triggered_by=row.triggering_user_name,
                queued_at=row.queued_at,
                start_date=row.start_date,
                end_date=row.end_date,
                note=(row.note or "").partition("\n")[0] if brief else row.note,
                progress=progress_of(ti_states, state),
                approval=approval_of(
                    gate_state,
                    gates.get((*key, tasks.GATE, -1)),
                    values.get((*key, tasks.GATE, -1)),
                    brief=brief,
                    error=gate_errors.get((*key, tasks.GATE, -1)),
                ),
                outcome=outcome_of(state, values.get((*key, tasks.REPORT, -1)), published, brief=brief),
            )
        )
    return summaries


def _run_rows() -> Any:
    """The columns a run's summary needs, its note joined: plain rows, no ORM objects to build."""
    from include.orchestrator.airflow.compat import DagRun, DagRunNote

    return select(
        DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun._state.label("state"), DagRun.run_type, DagRun.triggering_user_name,
        DagRun.queued_at, DagRun.start_date, DagRun.end_date, DagRunNote.content.label("note"),
    ).outerjoin(DagRunNote, DagRunNote.dag_run_id == DagRun.id)  # fmt: skip


def _recent_runs(session: Session, dag_ids: list[str], per_dag: int) -> list[Any]:
    from include.orchestrator.airflow.compat import DagRun

    if not dag_ids:
        return []
    rank = func.row_number().over(partition_by=DagRun.dag_id, order_by=(DagRun.run_after.desc(), DagRun.id.desc())).label("rank")
    ranked = select(DagRun.id, rank).where(DagRun.dag_id.in_(dag_ids)).subquery()
    query = _run_rows().join(ranked, and_(ranked.c.id == DagRun.id, ranked.c.rank <= per_dag)).order_by(DagRun.run_after.desc())
    return list(session.execute(query).all())


def _with_runs_in_flight(session: Session, dag_ids: list[str]) -> set[str]:
    from include.orchestrator.airflow.compat import DagRun

    if not dag_ids:
        return set()
    query = select(DagRun.dag_id).where(DagRun.dag_id.in_(dag_ids), DagRun.state.in_(("queued", "running"))).distinct()
    return set(session.scalars(query))


def campaigns(session: Session, readable: set[str], runs_per_campaign: int = RECENT_RUNS) -> list[CampaignSummary]:
    """Every campaign DAG the caller may read, by name, with its recent runs."""
    from include.orchestrator.airflow.compat import DagModel

    dags = session.execute(
        select(  # type: ignore[call-overload]  # Airflow types DagModel.dag_display_name as a plain function (a hybrid property)
            DagModel.dag_id,
            DagModel.dag_display_name,
            DagModel.owners,
            DagModel.is_paused,
            DagModel.timetable_summary,
            DagModel.description,
            DagModel.is_stale,
        ).where(DagModel.dag_id.like("campaign\\_%", escape="\\"))
    ).all()
    dags = [d for d in dags if d.dag_id in readable]
    # A stale DAG (its file gone or invalid) is still a campaign while it has runs in flight: they
    # wait for the file, and who looks for them here must find them, with the file's error.
    held = _with_runs_in_flight(session, [d.dag_id for d in dags if d.is_stale])
    dags = [d for d in dags if not d.is_stale or d.dag_id in held]
    by_dag: dict[str, list[RunSummary]] = {}
    for run in _runs(session, _recent_runs(session, [d.dag_id for d in dags], runs_per_campaign), brief=True):
        by_dag.setdefault(run.dag_id, []).append(run)
    found = []
    for dag in dags:
        campaign = campaign_file(dag.dag_id)
        runs = by_dag.get(dag.dag_id, [])
        found.append(
            CampaignSummary(
                dag_id=dag.dag_id,
                slug=dag.dag_id.removeprefix("campaign_"),
                name=campaign.name if campaign else dag.dag_display_name or dag.dag_id,
                owner=campaign.owner if campaign else dag.owners or "",
                description=campaign.description if campaign else dag.description or "",
                channels=campaign.channels.enabled if campaign else [],
                schedule=dag.timetable_summary if dag.timetable_summary not in (None, "None") else "manual only",
                paused=bool(dag.is_paused),
                file_error="" if campaign else campaign_file_error(dag.dag_id),
                runs=runs,
                waiting=sum(1 for r in runs if r.approval and r.approval.waiting),
            )
        )
    return sorted(found, key=lambda c: c.name.casefold())


def waiting_approvals(session: Session, readable: set[str]) -> list[RunSummary]:
    """Every run waiting at its approval gate, soonest deadline first, whatever its age."""
    from include.orchestrator.airflow.compat import DagRun
    from include.orchestrator.airflow.compat import TaskInstance as TI

    query = (
        _run_rows()
        .join(TI, and_(TI.dag_id == DagRun.dag_id, TI.run_id == DagRun.run_id))
        .where(TI.task_id == tasks.GATE, TI.state == "awaiting_input", DagRun.dag_id.like("campaign\\_%", escape="\\"))
    )
    rows = [r for r in session.execute(query).all() if r.dag_id in readable]
    runs = [r for r in _runs(session, rows, brief=True) if r.approval and r.approval.waiting]

    def soonest(r: RunSummary) -> tuple[bool, datetime]:
        assert r.approval is not None  # kept above: runs with an approval only
        return (r.approval.deadline is None, r.approval.deadline or datetime.max)

    return sorted(runs, key=soonest)


def run(session: Session, dag_id: str, run_id: str) -> RunSummary | None:
    from include.orchestrator.airflow.compat import DagRun

    row = session.execute(_run_rows().where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
    return _runs(session, [row])[0] if row is not None else None


# --- one run, in full: what the reviewer approves -----------------------------------------------
class Review(BaseModel):
    """What a reviewer sees: the plan, the copy per channel, the images and the recipients."""

    audience: str = ""
    writer_notes: str = ""
    launch: str = ""
    channels: list[str] = []
    copy_fields: dict[str, str] = {}  # the editable copy as the form shows it
    images: list[dict[str, Any]] = []  # channel, width, height, sha256
    recipients: int = 0
    recipient_sample: list[str] = []
    sender: str = ""
    review_where: str = ""  # the review bundle: a branch, a pull request
    campaign_version: str = ""  # the campaign file's version the run uses (frozen when it started)
    file_changed: bool = False  # the file has been edited since: only new runs use the edit
    edits: list[dict[str, str]] = []  # after an approval with edits: field, before, after
    may_decide: bool = False
    why_not: str = ""


def review(session: Session, summary: RunSummary, user_id: str, user_name: str, roles: list[str]) -> Review:
    from include.orchestrator.domain.ports import Copy

    key = (summary.dag_id, summary.run_id)
    values = _xcoms(session, [key], [tasks.PLAN, tasks.WRITE_COPY, tasks.RENDER_IMAGE, tasks.OPEN_REVIEW])
    plan = (values.get((*key, tasks.PLAN, -1)) or {}).get("result") or {}
    draft = (values.get((*key, tasks.WRITE_COPY, -1)) or {}).get("result")
    images = sorted(
        ((m, v.get("result")) for (_, _, t, m), v in values.items() if t == tasks.RENDER_IMAGE and v), key=lambda i: i[0]
    )
    bundle = (values.get((*key, tasks.OPEN_REVIEW, -1)) or {}).get("result") or {}
    # The run's own campaign (frozen when it started): what it sends and who may approve it, whatever the file says now.
    current = campaign_file(summary.dag_id)
    campaign = (RunPlan.model_validate(plan).snapshot() if plan else None) or current
    email = campaign.channels.email if campaign else None
    channels = plan.get("channels") or []
    answer = Review(
        audience=plan.get("audience", ""),
        writer_notes=plan.get("writer_notes", ""),
        launch=plan.get("launch", ""),
        channels=channels,
        images=[{k: i[k] for k in ("channel", "width", "height", "sha256")} for _, i in images if i],
        recipients=len(email.recipients) if email and "email" in channels else 0,
        recipient_sample=[str(r) for r in email.recipients[:5]] if email and "email" in channels else [],
        sender=str(email.sender) if email and "email" in channels else "",
        review_where=str(bundle.get("url") or bundle.get("branch") or bundle.get("key") or ""),
        campaign_version=plan.get("campaign_version", ""),
        file_changed=bool(plan.get("campaign_version"))
        and current is not None
        and campaign_version(current) != plan.get("campaign_version"),
    )
    if draft:
        before = rules.form_values(Copy.model_validate(draft), channels)
        answer.copy_fields = before
        decision = summary.approval.decision if summary.approval else None
        if decision and decision.get("edited_copy"):
            after = rules.form_values(Copy.model_validate(decision["edited_copy"]), channels)
            answer.edits = [
                {"field": f, "before": before[f], "after": after.get(f, "")} for f in before if before[f] != after.get(f)
            ]
    if summary.approval and summary.approval.waiting and campaign is not None:
        gate = _xcoms(session, [key], [tasks.GATE], "gate").get((*key, tasks.GATE, -1))
        triggered_by = (gate or {}).get("triggered_by")
        why = rules.refusal(campaign.approval, user_id, user_name, roles, triggered_by)
        answer.may_decide, answer.why_not = why is None, why or ""
        if gate and gate.get("draft"):  # the copy the decision applies to
            answer.copy_fields = rules.form_values(Copy.model_validate(gate["draft"]), gate.get("channels") or channels)
    return answer


def image_url_of(session: Session, dag_id: str, run_id: str, channel: str) -> dict[str, Any] | None:
    """The stored image of one channel of a run (its XCom record: url, sha256), or None."""
    values = _xcoms(session, [(dag_id, run_id)], [tasks.RENDER_IMAGE])
    for value in values.values():
        image = (value or {}).get("result") or {}
        if image.get("channel") == channel:
            return image
    return None
