"""The GitHub review watcher against the GitHub double: conditional polls keep 1,000 waiting
campaigns inside the rate limit, allowed reviews are applied once, a failed apply is retried.

The watcher's collaborators that reach Airflow (which runs wait, the decision API) are plain
functions here; the whole path, decision API included, runs in ``test_production_run.py``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import Connection

from include.orchestrator.approval.review_watch import watch
from include.orchestrator.backends.cloud.github import GithubReview
from include.orchestrator.domain.model import Approval
from include.orchestrator.domain.ports import Image, ReviewBundle
from include.orchestrator.errors import DecisionRefused
from include.orchestrator.saga.ledger import Ledger
from tests.doubles.github import GithubDouble

DAG_ID = "campaign_spring-launch"
RUNS = 20


def _bundle(tmp_path: Path, n: int) -> ReviewBundle:
    data = b"\x89PNG\r\n\x1a\n" + b"x" * 64  # as read from the asset store
    png = Image(
        channel="email",
        url="s3://assets/images/email.png",
        width=10,
        height=10,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )
    return ReviewBundle(
        key=f"spring-launch-run{n:04d}-review",
        campaign_slug="spring-launch",
        title=f"Review run {n}",
        markdown=f"# Run {n}\n",
        images=[png],
    )


@pytest.fixture
def setup(tmp_path):
    with GithubDouble() as github:
        conn = Connection(
            conn_id="campaign_review",
            conn_type="github",
            host=github.url,
            password="test-token",
            extra=json.dumps({"repository": github.full_name}),
        )
        review = GithubReview("campaign_review", conn)
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        for n in range(RUNS):  # every run opened its review pull request, as the review step does
            effect = review.open_review(_bundle(tmp_path, n))
            ledger.planned(DAG_ID, f"run-{n}", "review.open_review", -1, review.plan(_bundle(tmp_path, n)))
            ledger.made(DAG_ID, f"run-{n}", "review.open_review", -1, effect)
        state = SimpleNamespace(
            github=github, ledger=ledger, waiting=set(f"run-{n}" for n in range(RUNS)), applied=[], refuse=None
        )

        def apply(dag_id: str, run_id: str) -> None:
            if state.refuse:
                raise state.refuse
            state.applied.append(run_id)
            state.waiting.discard(run_id)  # the decision API ended the gate

        campaign = SimpleNamespace(approval=Approval(approvers=["dana"], github_approvers=["dana-gh"]))
        state.round = lambda: watch(
            ledger,
            since=datetime.now(UTC) - timedelta(days=1),
            campaign_of=lambda d: campaign,
            waiting=lambda d, runs: state.waiting & set(runs),
            open_backend=lambda port, conn_id: review,
            apply=apply,
        )
        yield state
        assert github.problems == []


def test_unchanged_pull_requests_cost_no_rate_limit(setup):
    first = setup.round()
    spent = setup.github.rate_limit - first.rate_remaining
    assert (first.waiting, first.unchanged, first.decided, first.errors) == (RUNS, 0, [], [])
    later = [setup.round() for _ in range(5)]
    assert [r.unchanged for r in later] == [RUNS] * 5
    # Only the first round's answers counted (two per pull request); the 304s after it did not.
    assert setup.github.rate_limit - setup.github.rate_remaining == spent
    print(
        f"\n{RUNS} waiting pull requests, 6 rounds: {spent} requests counted against the rate limit, "
        f"{5 * RUNS * 2} conditional requests answered 304 for free"
    )


def test_an_allowed_review_is_applied_once_and_others_are_not(setup):
    setup.round()
    setup.github.add_review(3, "mallory", "APPROVED")  # not an approver: changed, but nothing to apply
    setup.github.add_review(4, "dana-gh", "CHANGES_REQUESTED", "wrong audience")
    report = setup.round()
    assert report.decided == [f"{DAG_ID}/run-3: rejected by dana-gh"] and setup.applied == ["run-3"]
    assert report.unchanged == RUNS - 2
    again = setup.round()
    assert again.waiting == RUNS - 1 and again.unchanged == RUNS - 1 and setup.applied == ["run-3"]


def test_an_apply_that_failed_is_tried_again_next_round(setup):
    setup.round()
    setup.github.add_review(1, "dana-gh", "APPROVED", "ok")
    setup.refuse = DecisionRefused(503, "the API is restarting")
    failed = setup.round()
    assert failed.decided == [] and failed.errors == [f"{DAG_ID}/run-0: 503 the API is restarting"]
    setup.refuse = None
    retried = setup.round()  # the change was not acknowledged: the poll answers in full again
    assert retried.decided == [f"{DAG_ID}/run-0: approved by dana-gh"] and setup.applied == ["run-0"]
    # Decided meanwhile by other means: a 409 is not an error.
    setup.github.add_review(2, "dana-gh", "APPROVED")
    setup.refuse = DecisionRefused(409, "already decided: Approved by admin via rest")
    late = setup.round()
    assert late.errors == [] and late.skipped == [f"{DAG_ID}/run-1: already decided: Approved by admin via rest"]
