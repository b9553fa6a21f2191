"""Saga compensation: every side effect of a run is recorded, and undone in reverse order when
the campaign does not complete. Airflow-free: ``render.py`` runs these functions as tasks.

- **Recording.** :class:`Recorder` wraps each backend a step opens; its one changing call (see
  ``ports.CHANGING_CALLS``) is written to the ledger as *planned* before it runs and as *made*
  after. A task killed in between leaves the planned entry, which names the effect by its
  idempotency key, so the undo still finds it.
- **Compensation.** :func:`compensate` walks the ledger backwards and undoes every open entry,
  going on past failures (they stay open for the next try). Undo is idempotent: a second pass
  changes nothing.
- **The pivot.** An effect that cannot be undone (an email delivered over SMTP) is the point
  after which the campaign only moves forward: once it is made, or may have been made, nothing
  is pulled back, because the email already points readers at the rest. Distribution sends the
  email last, after every undoable channel has settled, so a failure before it undoes everything.
- **Verdict.** :func:`verdict` says how the run ended and why; :class:`Report` is what the run's
  note, the logs and ``make demo`` show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel

from include.orchestrator.approval.rules import Decision
from include.orchestrator.domain import tasks
from include.orchestrator.domain.model import Campaign
from include.orchestrator.domain.ports import CHANGING_CALLS, Effect, Message
from include.orchestrator.errors import Irrevocable, LaunchTaken, MadeNothing, NotVisibleHere
from include.orchestrator.saga.ledger import OPEN_STATES, Entry, Ledger

log = logging.getLogger(__name__)

FAILED = ("failed", "upstream_failed")


# --- recording -------------------------------------------------------------------------------
def disk_of(backend: Any) -> str:
    """The local disk a backend keeps its effects on (``OnDisk.disk_id``); empty when every host sees them."""
    disk_id = getattr(backend, "disk_id", None)
    return disk_id() if callable(disk_id) else ""


class Journaled:
    """A backend whose changing call is written to the ledger before and after it runs."""

    def __init__(self, backend: Any, port: str, recorder: Recorder) -> None:
        self._backend, self._port, self._recorder = backend, port, recorder

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name != CHANGING_CALLS.get(self._port):
            return attr

        def recorded(*args: Any, **kwargs: Any) -> Any:
            disk = disk_of(self._backend)
            planned = self._backend.plan(*args, **kwargs).model_copy(update={"disk": disk})
            self._recorder.write("planned", planned)
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, MadeNothing):  # never called (an open circuit): nothing to undo, ever
                    self._recorder.write("not_made", planned, f"{type(exc).__name__}: {exc}")
                    raise
                # The call answered with an error: per its protocol nothing irreversible happened
                # (an SMTP server that did not say 250 has not taken the message). Kept for the report.
                self._recorder.write("call_failed", planned, f"{type(exc).__name__}: {exc}")
                raise
            made = result if isinstance(result, Effect) else next(r for r in result if isinstance(r, Effect))
            self._recorder.write("made", made.model_copy(update={"disk": disk}))
            return result

        return recorded

    def recorded(self, *args: Any, **kwargs: Any) -> Entry | None:
        """What the ledger knows of the changing call with these arguments (an earlier try's entry), or None."""
        planned = self._backend.plan(*args, **kwargs).model_copy(update={"disk": disk_of(self._backend)})
        return self._recorder.recorded(planned)


@dataclass
class Recorder:
    """Where one task instance records its effects: the run's ledger entries.

    ``launch`` gives the run's launch (``model.launch_of``): before its first effect, the task
    claims it, so a second run of the same launch (the campaign triggered twice by mistake) fails
    before it makes anything.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    open_ledger: Callable[[], Ledger]
    launch: Callable[[], str] = lambda: ""
    slug: str = ""
    _claimed: bool = field(default=False, init=False)

    @cached_property  # opened on the first changing call: read-only steps never touch the ledger
    def ledger(self) -> Ledger:
        return self.open_ledger()

    def claim(self, launch: str) -> None:
        """Hold ``launch`` for this run, or raise :class:`LaunchTaken`; once per task."""
        if self._claimed or not launch:  # an empty launch: a run planned before launches existed
            return
        if taken := self.ledger.claim_launch(self.dag_id, launch, self.run_id):
            raise LaunchTaken(self.slug or self.dag_id, launch, *taken)
        self._claimed = True

    def recorded(self, effect: Effect) -> Entry | None:
        """This run's ledger entry of ``effect`` (same port, connection, key and disk), or None: what an
        earlier try of the step did with it (made, planned and cut off, failed, ...). Read-only."""
        same = (effect.port, effect.conn_id, effect.key, effect.disk)
        return next(
            (
                e
                for e in self.ledger.entries(self.dag_id, self.run_id)
                if (e.effect.port, e.effect.conn_id, e.effect.key, e.effect.disk) == same
            ),
            None,
        )

    def wrap(self, port: str, backend: Any) -> Any:
        return Journaled(backend, port, self) if port in CHANGING_CALLS else backend

    def write(self, what: str, effect: Effect, error: str = "") -> None:
        where = (self.dag_id, self.run_id, self.task_id, self.map_index, effect)
        if what == "planned":
            self.claim(self.launch())
            self.ledger.planned(*where)
        elif what == "made":
            self.ledger.made(*where)
        elif what == "not_made":
            self.ledger.not_made(self.dag_id, self.run_id, effect, error)
        else:
            self.ledger.call_failed(self.dag_id, self.run_id, effect, error)


# --- compensation ----------------------------------------------------------------------------
def pivot(entries: Iterable[Entry]) -> Entry | None:
    """The first effect that cannot be undone and was made, or may have been (its task died
    during the call): from there on the campaign only moves forward."""
    return next(
        (e for e in entries if not e.effect.undoable and (e.state in ("made", "kept") or (e.state == "planned" and not e.error))),
        None,
    )


def compensate(ledger: Ledger, dag_id: str, run_id: str, open_backend: Callable[[str, str], Any]) -> list[Entry]:
    """Undo every open entry of the run, newest first; return the entries as they are now.

    One failing undo does not stop the others: it is recorded as ``failed`` and left open, so
    the next attempt tries it again. Past the pivot nothing is undone.
    """
    entries = ledger.entries(dag_id, run_id)
    live = pivot(entries)
    if live is not None:
        log.warning(
            "not undoing anything: %s (%s) cannot be undone, so the campaign only moves forward",
            live.effect.summary or live.effect.key,
            live.where,
        )
        return entries
    for entry in reversed(entries):
        if entry.state not in OPEN_STATES:
            continue
        effect = entry.effect
        if not effect.undoable:  # never made: its call answered with an error
            ledger.settle(entry, "absent", entry.error or "not made")
            log.info("nothing to undo for %s %s: its call failed (%s)", effect.kind, effect.key, entry.error)
            continue
        try:
            backend = open_backend(effect.port, effect.conn_id)
            if effect.disk and (here := disk_of(backend)) != effect.disk:
                raise NotVisibleHere(effect, here)
            removed = backend.undo(effect)
        except Exception as exc:
            if isinstance(exc, Irrevocable):  # out for good (a scheduled email already sent): report, never retry
                ledger.settle(entry, "kept", f"{type(exc).__name__}: {exc}")
                log.error("cannot undo %s %s (%s): %s", effect.kind, effect.key, entry.where, exc)
                continue
            ledger.settle(entry, "failed", f"{type(exc).__name__}: {exc}")
            log.error("could not undo %s %s (%s): %s: %s", effect.kind, effect.key, entry.where, type(exc).__name__, exc)
            continue
        ledger.settle(entry, "undone" if removed else "absent")
        verb = "undid" if removed else "nothing left of"
        log.info("%s %s %s (made by %s)", verb, effect.kind, effect.summary or effect.key, entry.where)
    return ledger.entries(dag_id, run_id)


def left_open(entries: list[Entry]) -> list[Entry]:
    """What compensation should have removed and has not: nothing past the pivot, where the campaign is live."""
    return [] if pivot(entries) is not None else [e for e in entries if e.state in OPEN_STATES]


# --- verdict and report ----------------------------------------------------------------------
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
        # Not "removed": every task is in every version of a campaign's DAG (render.build_dag), so
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
