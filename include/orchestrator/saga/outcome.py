"""How a run ended: the verdict (completed, rolled back, ...) and why, the report of what went out
and what is left, the alert when something needs a person. Airflow-free:
``airflow/operators.RunReport`` runs :func:`conclude` as the ``compensation.report`` task, and the
run's note, the Campaigns view and ``make demo`` show the :class:`Report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from include.orchestrator.approval.rules import Decision
from include.orchestrator.domain import tasks
from include.orchestrator.domain.model import Campaign
from include.orchestrator.domain.ports import Effect, Message
from include.orchestrator.saga.compensation import left_open, pivot
from include.orchestrator.saga.ledger import OPEN_STATES, Entry, Ledger

FAILED = ("failed", "upstream_failed")

Status = Literal["completed", "partially distributed", "rolled back", "cleanup needed", "failed after going live"]


# The ports whose effects are what a campaign puts out (the others are its own workings:
# memory, images, the review branch, notifications).
OUTWARD_PORTS = ("email", "social", "blog", "analytics")


class Line(BaseModel):
    where: str
    port: str
    kind: str
    key: str
    summary: str
    state: str
    error: str = ""
    link: str = ""  # where a person finds it (the effect's ``url``), when the service gave one
    recipients: int = 0  # an email batch's recipients (the effect's ``to``)

    def text(self) -> str:
        return f"{self.kind} {self.summary or self.key} (from {self.where})" + (f": {self.error}" if self.error else "")

    def out(self) -> str:
        """What went out, as the run's note says it: the channel, what and where."""
        what = self.summary or f"{self.kind} {self.key}"
        return f"- {self.port}: {what}" + (f" ({self.link})" if self.link and self.link not in what else "")


class Report(BaseModel):
    """How a run ended: the verdict, its reason, and what happened to every side effect."""

    dag_id: str
    run_id: str
    status: Status
    reason: str
    undone: list[Line] = []
    absent: list[Line] = []
    kept: list[Line] = []  # live after the pivot, or a campaign that completed
    left: list[Line] = []  # still there and should not be: clean up by hand
    compensation_seconds: float | None = None
    campaign_version: str = ""  # the campaign file's version the run used (``model.campaign_version``)

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "partially distributed")

    def summary(self) -> str:
        """A few lines for the run's note and the logs."""
        head = {
            "completed": "Campaign completed",
            "partially distributed": "Campaign partially distributed",
            "rolled back": "Campaign rolled back",
            "cleanup needed": "Campaign rolled back INCOMPLETELY",
            "failed after going live": "Campaign failed after going live",
        }[self.status]
        lines = [f"{head}: {self.reason}" if self.reason else head]
        if not self.ok:
            counts = (len(self.undone), len(self.absent), len(self.kept), len(self.left))
            # A bullet: the UI renders the note as Markdown, which would join two plain lines into one.
            lines.append("- Undone: {}; never made: {}; kept: {}; left: {}.".format(*counts))
        if self.ok:
            out = [line for line in self.kept if line.port in OUTWARD_PORTS]
            emails = [line for line in out if line.port == "email"]
            if len(emails) > 1:  # an email sent in batches: one line, not one per batch
                lines.append(_emails_out(emails))
            lines += [
                line.out()
                for line in sorted(out, key=lambda line: OUTWARD_PORTS.index(line.port))
                if line.port != "email" or len(emails) == 1
            ]
        lines += [f"- left to clean up by hand: {line.text()}" for line in self.left]
        if self.status == "failed after going live":
            lines += [f"- live: {line.text()}" for line in self.kept]
        if self.campaign_version:
            lines.append(f"- campaign version: {self.campaign_version}")
        return "\n".join(lines)


def _emails_out(batches: list[Line]) -> str:
    """An email sent in batches as one line of the note: how many, to whom, and which batches a
    killed try may or may not have delivered (planned, never confirmed: not sent again)."""
    line = f"- email: {len(batches)} batches to {sum(b.recipients for b in batches)} recipient(s); first: {batches[0].summary}"
    unsure = [b for b in batches if b.state == "planned"]
    if unsure:
        line += (
            f"; {len(unsure)} batch(es), {sum(b.recipients for b in unsure)} recipient(s), may or may not have been "
            f"delivered (their try died during the send; not sent again): {', '.join(b.key for b in unsure)}"
        )
    return line


def _line(entry: Entry) -> Line:
    e = entry.effect
    link = e.ref.get("url") if isinstance(e.ref.get("url"), str) else ""
    to = e.ref.get("to")
    return Line(
        where=entry.where,
        port=e.port,
        kind=e.kind,
        key=e.key,
        summary=e.summary,
        state=entry.state,
        error=entry.error,
        link=link,
        recipients=len(to) if isinstance(to, list) else 0,
    )


def states_by_task(states: dict[str, str | None], task_ids: Iterable[str]) -> dict[str, list[str]]:
    """Airflow's task states (mapped instances keyed ``<task_id>_<index>``) grouped per task."""
    known = set(task_ids)
    grouped: dict[str, list[str]] = {}
    for key, state in states.items():
        task_id = key if key in known else key.rpartition("_")[0]
        if task_id in known:
            grouped.setdefault(task_id, []).append(str(state))
    return grouped


def continuing_channel(campaign: Campaign, task_id: str) -> bool:
    """A distribution task whose channel's policy lets the others go on when it fails."""
    for channel in campaign.channels.enabled:
        if task_id == tasks.channel_task(channel):
            return getattr(campaign.channels, channel).on_failure == "continue"
    return False


def blocking_failure(campaign: Campaign, states: dict[str, list[str]], upstream: Iterable[str]) -> str | None:
    """Why a step after the channels must not run: an upstream failure that the channels'
    failure policies do not excuse; None when it may run."""
    for task_id in upstream:
        # Not "removed": every task is in every version of a campaign's DAG (airflow/dags.build_dag), so
        # Airflow marks one removed only when a newer parse of the file maps over fewer competitor
        # URLs, or over none (its placeholder), while the run's own items were already done.
        bad = [s for s in states.get(task_id, []) if s in FAILED]
        if bad and not (continuing_channel(campaign, task_id) and set(bad) == {"failed"}):
            return f"{task_id} {bad[0]}"
    return None


def verdict(
    campaign: Campaign, states: dict[str, list[str]], order: list[str], gate: dict[str, Any] | None, errors: dict[str, str]
) -> tuple[Status, str]:
    """How the forward steps ended: completed, partially distributed, or the reason it failed.

    ``order`` lists the forward task ids upstream first; ``errors`` holds the error each failed
    step recorded of itself (a killed or marked task records none).
    """
    if states.get(tasks.DASHBOARD) == ["success"]:
        failed = [t for t in order if continuing_channel(campaign, t) and "failed" in states.get(t, [])]
        if failed:
            return "partially distributed", "; ".join(
                f"{tasks.channel_of(t)} failed ({errors.get(t) or 'no error recorded'}), the other channels went on"
                for t in failed
            )
        return "completed", ""
    if gate and gate.get("decision") == "rejected":
        return "rolled back", Decision.model_validate(gate).failure()
    for task_id in order:
        if "failed" in states.get(task_id, []) and not continuing_channel(campaign, task_id):
            if task_id == tasks.GATE:  # the gate records why when it refused an answer
                if why := errors.get(task_id):
                    return "rolled back", f"{task_id} failed: {why}"
                return "rolled back", f"{task_id} was stopped before a decision (marked failed or killed)"
            cause = errors.get(task_id) or "no error recorded: the task was killed, timed out or marked failed"
            return "rolled back", f"{task_id} failed: {cause}"
    return "rolled back", "cancelled: the run was stopped before it completed"


def report(dag_id: str, run_id: str, status: Status, reason: str, entries: list[Entry], seconds: float | None = None) -> Report:
    """Sort every entry into what the verdict means for it."""
    lines = [_line(e) for e in entries]
    if status in ("completed", "partially distributed"):
        return Report(dag_id=dag_id, run_id=run_id, status=status, reason=reason, kept=lines, compensation_seconds=seconds)
    if pivot(entries) is not None:
        live = [line for line in lines if line.state in (*OPEN_STATES, "kept")]
        return Report(
            dag_id=dag_id, run_id=run_id, status="failed after going live", reason=reason, kept=live, compensation_seconds=seconds
        )
    left = [_line(e) for e in left_open(entries)]
    return Report(
        dag_id=dag_id,
        run_id=run_id,
        status="cleanup needed" if left else status,
        reason=reason,
        undone=[line for line in lines if line.state == "undone"],
        absent=[line for line in lines if line.state == "absent"],
        kept=[line for line in lines if line.state == "kept"],
        left=left,
        compensation_seconds=seconds,
    )


def cleanup_alert(campaign: Campaign, run_key: str, result: Report) -> Message:
    """The message naming exactly what is left to clean up (or finish) by hand."""
    items = result.left or result.kept
    what = (
        "left to clean up by hand"
        if result.left
        else "live; finish the run by clearing the failed task"
        if result.status == "failed after going live"
        else "out for good: they could not be taken back"
    )
    return Message(
        key=f"{campaign.slug}-{run_key}-saga-alert",
        to=sorted({*campaign.approval.approvers, campaign.owner}),
        subject=f"Action needed: campaign {campaign.name} run {result.run_id}: {result.status}",
        text=f"{result.summary()}\n\n{len(items)} item(s) {what}:\n"
        + "\n".join(f"- [{line.port}] {line.text()}" for line in items),
    )


@dataclass(frozen=True)
class RunEnd:
    """What the report task gathers of a run from Airflow: its task states and the errors its steps recorded."""

    dag_id: str
    run_id: str
    run_key: str
    states: dict[str, list[str]]
    order: list[str]  # the forward task ids, upstream first
    gate: dict[str, Any] | None  # the gate's decision record when the gate failed
    errors: dict[str, str]
    seconds: float | None  # how long compensation took
    campaign_version: str


def needs_alert(result: Report) -> bool:
    """Something needs a person: left to clean up, live after a failure, or out for good after a rollback."""
    out_for_good = result.status == "rolled back" and bool(result.kept)
    return bool(result.left) or result.status == "failed after going live" or out_for_good


def conclude(
    ledger: Ledger,
    campaign: Campaign,
    run: RunEnd,
    notify: Callable[[Message], Effect],
    log: Any,  # the task's logger (a logging.Logger or Airflow's structlog one)
) -> Report:
    """End a run: its verdict and report, an alert when something needs a person, and the launch
    released when nothing of the run is out (so the same launch may be triggered again)."""
    status, reason = verdict(campaign, run.states, run.order, run.gate, run.errors)
    result = report(run.dag_id, run.run_id, status, reason, ledger.entries(run.dag_id, run.run_id), run.seconds)
    result.campaign_version = run.campaign_version
    for line in result.summary().splitlines():
        (log.info if result.ok else log.error)("%s", line)
    if needs_alert(result):
        message = cleanup_alert(campaign, run.run_key, result)
        try:  # not recorded in the ledger: compensating again must never take the alert back
            effect = notify(message)
            log.warning("alert sent: %s", effect.summary or effect.key)
        except Exception:
            log.exception("could not send the alert; what it says is above")
    if result.status == "rolled back" and not result.kept and ledger.release_launch(run.dag_id, run.run_id):
        log.info("released this run's launch: the campaign can be triggered again with the same conf")
    return result
