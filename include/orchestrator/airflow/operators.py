"""The operators of a campaign DAG (besides the approval gate, ``gate.py``): a step, the undo, the report, the review watcher."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.orchestrator.airflow.runtime import first_value, pull_result, run_campaign, step_context, task_states
from include.orchestrator.approval import rules as gate_rules
from include.orchestrator.backends.registry import open_backend, open_port
from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import campaign_of
from include.orchestrator.domain.model import run_key
from include.orchestrator.errors import ConnectionConfigError, NotThisRun, Permanent, error_name, retryable_flag
from include.orchestrator.saga import compensation, outcome
from include.orchestrator.saga.ledger import open_ledger
from include.orchestrator.steps import STEPS

# Errors that retrying cannot fix: fail at once with the message.
_PERMANENT = (ValueError, Permanent)


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
            blocked = outcome.blocking_failure(campaign, task_states(self, context), self.get_flat_relative_ids(upstream=True))
            if blocked:
                raise AirflowSkipException(f"not run: the campaign is failing ({blocked})")
        try:
            output = STEPS[self.step](ctx)
        except NotThisRun as exc:
            raise AirflowSkipException(str(exc)) from None
        except Exception as exc:
            # Kept for the run's report: the XCom of a failed try survives it.
            context["ti"].xcom_push(key="error", value=f"{error_name(exc)}: {exc}"[:1000])
            # Backends raise Permanent errors for what a retry cannot fix (a 404, a refused URL, a rejected address).
            if isinstance(exc, _PERMANENT) or retryable_flag(exc) is False:
                raise AirflowFailException(f"{self.step}: {exc}") from exc
            raise
        for effect in output.effects:
            self.log.info("created %s: %s", effect.kind, effect.summary or effect.ref)
        return output.to_xcom()


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
        entries = compensation.compensate(open_ledger(), ti.dag_id, ti.run_id, open_backend)
        seconds = round(time.monotonic() - started, 3)
        ti.xcom_push(key="seconds", value=seconds)
        if left := compensation.left_open(entries):  # retried: an undo that failed may succeed later
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
        errors = {t: first_value(ti.xcom_pull(task_ids=t, key="error")) for t in order if "failed" in states.get(t, [])}
        plan = pull_result(self, ti, tasks.PLAN)
        run = outcome.RunEnd(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            run_key=run_key(ti.dag_id, ti.run_id),
            states=states,
            order=order,
            gate=ti.xcom_pull(task_ids=tasks.GATE) if "failed" in states.get(tasks.GATE, []) else None,
            errors={t: e for t, e in errors.items() if e},
            seconds=ti.xcom_pull(task_ids=tasks.UNDO, key="seconds"),
            campaign_version=plan.get("campaign_version", "") if isinstance(plan, dict) else "",
        )
        result = outcome.conclude(
            open_ledger(), campaign, run, lambda message: open_port("notify", campaign.connections).notify(message), self.log
        )
        if not result.ok:
            ti.xcom_push(key="return_value", value=result.model_dump(mode="json"))  # the run's note reads it
            raise AirflowFailException(result.summary())
        return result.model_dump(mode="json")


class ReviewWatch(BaseOperator):
    """One round of the GitHub review watcher (``approval/review_watch.py``) over every waiting campaign."""

    ui_color = "#e8f0fe"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.orchestrator.approval import review_watch
        from include.orchestrator.connections import get_connection

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
