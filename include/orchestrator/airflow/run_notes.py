"""Scheduler side: the run's note says how the campaign ended (``compensation.report``'s report):
what went out where when it completed, the rollback summary when it did not.

An Airflow listener, loaded by the plugin. The scheduler calls it when it sets a run's final
state, inside its own session: the note is written in that transaction, so it lands with the
state. A note someone already wrote is kept; the report then only goes to the task's log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.listeners import hookimpl

from include.orchestrator.domain import tasks

log = logging.getLogger(__name__)
NOTE_LIMIT = 1000  # the length of Airflow's note column


def report_of(session: Any, dag_id: str, run_id: str) -> Any:
    """The run's report, or None when the report task left none (it did not run, or crashed)."""
    from include.orchestrator.airflow.compat import XComModel
    from include.orchestrator.saga.outcome import Report

    where = {"dag_id": dag_id, "run_id": run_id, "task_id": tasks.REPORT, "key": "return_value"}
    row = session.query(XComModel.value).filter_by(**where).first()
    if row is None:
        return None
    value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return Report.model_validate(value)


def note_text(report: Any) -> str:
    text = report.summary()
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - 40].rstrip() + "\n… (full report: compensation.report log)"


class RunNoteListener:
    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @staticmethod
    def _note(dag_run: Any) -> None:
        from sqlalchemy.orm import object_session

        session = object_session(dag_run)
        if session is None or not str(dag_run.dag_id).startswith("campaign_") or dag_run.note:
            return
        try:
            report = report_of(session, dag_run.dag_id, dag_run.run_id)
            if report is not None:
                dag_run.note = note_text(report)
        except Exception:  # a listener must never break the scheduler's loop
            log.exception("could not write the campaign report on the note of run %s", dag_run.run_id)
