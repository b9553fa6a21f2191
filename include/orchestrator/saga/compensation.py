"""Saga compensation: a run that does not complete has its side effects undone, newest first.

- :func:`compensate` walks the ledger backwards and undoes every open entry, going on past
  failures (they stay open for the next try). Undo is idempotent: a second pass changes nothing.
- **The pivot.** An effect that cannot be undone (an email delivered over SMTP) is the point
  after which the campaign only moves forward: once it is made, or may have been made, nothing
  is pulled back, because the email already points readers at the rest. Distribution sends the
  email last, after every undoable channel has settled, so a failure before it undoes everything.

Airflow-free: ``airflow/operators.Compensate`` runs it as the ``compensation.undo`` task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from include.orchestrator.errors import Irrevocable, NotVisibleHere, error_name
from include.orchestrator.saga.ledger import OPEN_STATES, Entry, Ledger
from include.orchestrator.saga.recorder import disk_of

log = logging.getLogger(__name__)


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
                ledger.settle(entry, "kept", f"{error_name(exc)}: {exc}")
                log.error("cannot undo %s %s (%s): %s", effect.kind, effect.key, entry.where, exc)
                continue
            ledger.settle(entry, "failed", f"{error_name(exc)}: {exc}")
            log.error("could not undo %s %s (%s): %s: %s", effect.kind, effect.key, entry.where, error_name(exc), exc)
            continue
        ledger.settle(entry, "undone" if removed else "absent")
        verb = "undid" if removed else "nothing left of"
        log.info("%s %s %s (made by %s)", verb, effect.kind, effect.summary or effect.key, entry.where)
    return ledger.entries(dag_id, run_id)


def left_open(entries: list[Entry]) -> list[Entry]:
    """What compensation should have removed and has not: nothing past the pivot, where the campaign is live."""
    return [] if pivot(entries) is not None else [e for e in entries if e.state in OPEN_STATES]
