"""GitHub review pull requests as an approval source: one watcher for every waiting campaign.

The DAG ``campaign_github_reviews`` (``dags/campaign_review_watch.py``, present when a campaign
names ``approval.github_approvers``) runs this every minute, one task at a time. It takes the review
pull requests the saga ledger knows were made, keeps those whose run waits at the gate, and asks
GitHub with conditional requests whether anything changed. GitHub does not count a 304 answer
against the rate limit, so 1,000 waiting campaigns cost two full answers each once, then only the
pull requests that changed (the ETags live in the ledger's database).

When an allowed reviewer has decided, the watcher asks the decision API to apply it
(``POST /campaigns/api/v1/approvals/{dag_id}/{run_id}/github``). The API reads the reviews from
GitHub again itself: the watcher only notices, it cannot decide anything on its own. Airflow-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from include.orchestrator.approval import rules
from include.orchestrator.domain.ports import Effect
from include.orchestrator.errors import DecisionRefused, error_name
from include.orchestrator.saga.ledger import Ledger

log = logging.getLogger(__name__)

WATCH_DAG_ID = "campaign_github_reviews"
API_CONN_ID = "campaign_airflow_api"  # http: host = the Airflow API's base URL, login/password of the watcher's user


@dataclass
class WatchReport:
    waiting: int = 0  # review pull requests of runs waiting at the gate
    unchanged: int = 0  # ... whose poll was answered 304 on both requests
    decided: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # decided meanwhile by other means, or past the deadline
    errors: list[str] = field(default_factory=list)
    rate_remaining: int | None = None

    def summary(self) -> str:
        return (
            f"{self.waiting} waiting, {self.unchanged} unchanged, {len(self.decided)} decided, "
            f"{len(self.skipped)} skipped, {len(self.errors)} errors; GitHub rate limit left: {self.rate_remaining}"
        )


def watch(
    ledger: Ledger,
    *,
    since: datetime,
    campaign_of: Callable[[str], Any],
    waiting: Callable[[str, list[str]], set[str]],
    open_backend: Callable[[str, str], Any],
    apply: Callable[[str, str], Any],
) -> WatchReport:
    """One round: poll every waiting run's review pull request, apply what allowed reviewers decided.

    ``campaign_of(dag_id)`` gives the campaign (None if gone), ``waiting(dag_id, run_ids)`` the runs
    whose gate waits, ``apply(dag_id, run_id)`` asks the decision API (raises ``DecisionRefused``).
    """
    report = WatchReport()
    tags = ledger.poll_tags()
    backends: dict[str, Any] = {}

    def backend(conn_id: str) -> Any:
        if conn_id not in backends:
            backends[conn_id] = open_backend("review", conn_id)
        return backends[conn_id]

    for dag_id, run_id, effect, approvers in _waiting_reviews(ledger, since, campaign_of, waiting):
        report.waiting += 1
        etag = _watch_one(report, dag_id, run_id, effect, approvers, tags.get((dag_id, run_id)), backend, apply)
        if etag:
            ledger.set_poll_tag(dag_id, run_id, etag)
    log.info("github review watch: %s", report.summary())
    for line in report.decided:
        log.info("decided %s", line)
    for line in report.errors:
        log.warning("could not watch %s", line)
    return report


def _waiting_reviews(
    ledger: Ledger, since: datetime, campaign_of: Callable[[str], Any], waiting: Callable[[str, list[str]], set[str]]
) -> Iterator[tuple[str, str, Effect, list[str]]]:
    """Each review pull request whose run's gate waits and whose campaign lets GitHub reviews decide."""
    runs: dict[str, list[tuple[str, Effect]]] = {}
    for dag_id, run_id, effect in ledger.made_effects("review", "github_pull_request", since):
        runs.setdefault(dag_id, []).append((run_id, effect))
    for dag_id, items in runs.items():
        campaign = campaign_of(dag_id)
        if campaign is None or not campaign.approval.github_approvers:
            continue
        live = waiting(dag_id, [run_id for run_id, _ in items])
        for run_id, effect in items:
            if run_id in live:
                yield dag_id, run_id, effect, list(campaign.approval.github_approvers)


def _watch_one(
    report: WatchReport,
    dag_id: str,
    run_id: str,
    effect: Effect,
    approvers: list[str],
    etag: str | None,
    backend: Callable[[str], Any],
    apply: Callable[[str, str], Any],
) -> str | None:
    """Poll one pull request and apply its decision; the ETag to keep, or None to see it again next round.

    One pull request's trouble never stops the others: it is reported where it happens."""
    where = f"{dag_id}/{run_id}"
    try:
        poll = backend(effect.conn_id).poll_reviews(effect.ref, etag)
    except Exception as exc:
        report.errors.append(f"{where}: {error_name(exc)}: {exc}")
        return None
    if poll.rate_remaining is not None:
        report.rate_remaining = poll.rate_remaining
    if poll.not_modified:
        report.unchanged += 1
        return None
    reviews = [r.model_dump() for r in poll.reviews]
    verdict = rules.github_verdict(approvers, poll.pull_state, reviews, str(effect.ref.get("url", "")))
    if verdict is not None:
        try:
            apply(dag_id, run_id)
            report.decided.append(f"{where}: {verdict.decision} by {verdict.login}")
        except DecisionRefused as exc:
            if exc.status != 409:
                report.errors.append(f"{where}: {exc.status} {exc}")
                return None  # the tag is not kept: the next round sees the change again and retries
            report.skipped.append(f"{where}: {exc}")
        except Exception as exc:
            report.errors.append(f"{where}: {error_name(exc)}: {exc}")
            return None
    return poll.etag or None
