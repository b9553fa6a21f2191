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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from include.orchestrator.approval import rules
from include.orchestrator.domain.ports import Effect
from include.orchestrator.errors import DecisionRefused
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


def watch(  # noqa: C901 -- one polling round; each pull request's failure is caught and reported where it happens
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
    runs: dict[str, list[tuple[str, Effect]]] = {}
    for dag_id, run_id, effect in ledger.made_effects("review", "github_pull_request", since):
        runs.setdefault(dag_id, []).append((run_id, effect))
    tags = ledger.poll_tags()
    backends: dict[str, Any] = {}
    for dag_id, items in runs.items():
        campaign = campaign_of(dag_id)
        if campaign is None or not campaign.approval.github_approvers:
            continue
        live = waiting(dag_id, [run_id for run_id, _ in items])
        for run_id, effect in items:
            if run_id not in live:
                continue
            report.waiting += 1
            where = f"{dag_id}/{run_id}"
            try:
                if effect.conn_id not in backends:
                    backends[effect.conn_id] = open_backend("review", effect.conn_id)
                poll = backends[effect.conn_id].poll_reviews(effect.ref, tags.get((dag_id, run_id)))
            except Exception as exc:  # one pull request's trouble must not stop the others
                report.errors.append(f"{where}: {type(exc).__name__}: {exc}")
                continue
            if poll.rate_remaining is not None:
                report.rate_remaining = poll.rate_remaining
            if poll.not_modified:
                report.unchanged += 1
                continue
            reviews = [r.model_dump() for r in poll.reviews]
            url = str(effect.ref.get("url", ""))
            verdict = rules.github_verdict(campaign.approval.github_approvers, poll.pull_state, reviews, url)
            if verdict is not None:
                try:
                    apply(dag_id, run_id)
                    report.decided.append(f"{where}: {verdict.decision} by {verdict.login}")
                except DecisionRefused as exc:
                    if exc.status != 409:
                        report.errors.append(f"{where}: {exc.status} {exc}")
                        continue  # the tag is not kept: the next round sees the change again and retries
                    report.skipped.append(f"{where}: {exc}")
                except Exception as exc:
                    report.errors.append(f"{where}: {type(exc).__name__}: {exc}")
                    continue
            if poll.etag:
                ledger.set_poll_tag(dag_id, run_id, poll.etag)
    log.info("github review watch: %s", report.summary())
    for line in report.decided:
        log.info("decided %s", line)
    for line in report.errors:
        log.warning("could not watch %s", line)
    return report
