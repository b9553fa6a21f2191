"""Recording a run's side effects: every backend a step opens is wrapped so that its one changing
call (``ports.CHANGING_CALLS``) is written to the saga ledger as *planned* before it runs and as
*made* after. A task killed in between leaves the planned entry, which names the effect by its
idempotency key, so the undo still finds it. Airflow-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from include.orchestrator.domain.ports import CHANGING_CALLS, Effect
from include.orchestrator.errors import LaunchTaken, MadeNothing, OutcomeUnknown, error_name
from include.orchestrator.saga.ledger import Entry, Ledger


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
                    self._recorder.write("not_made", planned, f"{error_name(exc)}: {exc}")
                    raise
                if isinstance(exc, OutcomeUnknown):  # may have been made: the entry stays planned, as if the task died
                    raise
                # The call answered with an error: per its protocol nothing irreversible happened
                # (an SMTP server that did not say 250 has not taken the message). Kept for the report.
                self._recorder.write("call_failed", planned, f"{error_name(exc)}: {exc}")
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
