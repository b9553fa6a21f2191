"""The saga's decisions without Airflow or a ledger DB: how a run ended (verdict), which failure
stops the steps after the channels, where the campaign went live (pivot), and what the report and
the alert say. The same functions run inside compensation.report on a real Airflow
(tests/saga/test_compensation.py, tests/approval/test_gate.py); here each case takes milliseconds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from include.orchestrator.approval.rules import Decision
from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.domain.ports import Effect
from include.orchestrator.saga import compensation, outcome
from include.orchestrator.saga.ledger import Entry

CAMPAIGN = parse_campaign(CAMPAIGNS_DIR / "spring-launch.yaml")  # social continues on failure, blog compensates
ORDER = ["validate_conf", "content.write_copy", tasks.GATE, "distribution.publish_social", "distribution.publish_blog",
         "distribution.publish_email", tasks.DASHBOARD]  # fmt: skip


def states(**by_task: str) -> dict[str, list[str]]:
    done = {task: ["success"] for task in ORDER}
    return done | {task.replace("__", "."): [state] for task, state in by_task.items()}


def entry(n: int, port: str, state: str, undoable: bool = True, error: str = "") -> Entry:
    effect = Effect(port=port, conn_id=f"campaign_{port}", backend="local", kind=port, key=f"k{n}", ref={}, undoable=undoable,
                    summary=f"{port} {n}")  # fmt: skip
    return Entry(id=n, task_id=f"t.{port}", map_index=-1, state=state, effect=effect, error=error)


def test_policies_of_the_campaign_under_test():
    assert CAMPAIGN.channels.social.on_failure == "continue" and CAMPAIGN.channels.blog.on_failure == "compensate"


@pytest.mark.parametrize(
    ("run", "errors", "expected"),
    [
        (states(), {}, ("completed", "")),
        (states(distribution__publish_social="failed"), {"distribution.publish_social": "HTTP 503"},
         ("partially distributed", "social failed (HTTP 503), the other channels went on")),
        (states(distribution__publish_blog="failed", analytics__create_dashboard="skipped"),
         {"distribution.publish_blog": "push refused"}, ("rolled back", "distribution.publish_blog failed: push refused")),
        (states(distribution__publish_blog="failed", analytics__create_dashboard="skipped"), {},
         ("rolled back", "distribution.publish_blog failed: no error recorded: the task was killed, timed out or marked failed")),
        (states(review__approval="failed", analytics__create_dashboard="upstream_failed"), {},
         ("rolled back", "review.approval was stopped before a decision (marked failed or killed)")),
        (states(review__approval="failed", analytics__create_dashboard="upstream_failed"), {tasks.GATE: "eve may not approve"},
         ("rolled back", "review.approval failed: eve may not approve")),
        (states(analytics__create_dashboard="skipped"), {},
         ("rolled back", "cancelled: the run was stopped before it completed")),
    ],
)  # fmt: skip
def test_verdict(run, errors, expected):
    assert outcome.verdict(CAMPAIGN, run, ORDER, None, errors) == expected


def test_a_rejection_is_the_verdict_whatever_the_states_say():
    record = Decision(decision="rejected", by="dana", means="rest", at=datetime.now(UTC), reason="off brand")
    run = states(review__approval="failed", analytics__create_dashboard="upstream_failed")
    gate = record.model_dump(mode="json")
    assert outcome.verdict(CAMPAIGN, run, ORDER, gate, {}) == ("rolled back", "rejected by dana: off brand")


@pytest.mark.parametrize(
    ("upstream_states", "blocked"),
    [
        ({"distribution.publish_social": ["failed"]}, None),  # social's policy: continue
        ({"distribution.publish_social": ["upstream_failed"]}, "distribution.publish_social upstream_failed"),
        ({"distribution.publish_blog": ["failed"]}, "distribution.publish_blog failed"),
        ({"distribution.publish_blog": ["skipped"]}, None),  # a channel this run left out
        ({"research.scrape_competitor": ["success", "removed"]}, None),  # a reparse mapped over fewer URLs
    ],
)
def test_blocking_failure(upstream_states, blocked):
    assert outcome.blocking_failure(CAMPAIGN, upstream_states, list(upstream_states)) == blocked


def test_the_pivot_is_the_first_effect_made_that_cannot_be_undone():
    memory, email = entry(1, "memory", "undone"), entry(2, "email", "made", undoable=False)
    assert compensation.pivot([memory, email]) == email
    # A task that died during the call may have sent it: the pivot; one whose call answered with an error did not.
    assert compensation.pivot([memory, entry(3, "email", "planned", undoable=False)]) is not None
    assert compensation.pivot([memory, entry(4, "email", "planned", undoable=False, error="550 refused")]) is None
    assert compensation.left_open([memory, email]) == []  # past the pivot nothing is left to undo: the campaign is live


def test_the_report_sorts_every_entry_by_what_the_verdict_means_for_it():
    entries = [entry(1, "memory", "undone"), entry(2, "design", "absent"), entry(3, "blog", "failed", error="timeout")]
    result = outcome.report("d", "r", "rolled back", "blog failed", entries, seconds=1.5)
    assert result.status == "cleanup needed" and not result.ok
    assert [line.port for line in result.left] == ["blog"] and len(result.undone) == 1 and len(result.absent) == 1
    alert = outcome.cleanup_alert(CAMPAIGN, "abc", result)
    assert "1 item(s) left to clean up by hand" in alert.text and alert.subject.endswith("cleanup needed")
    assert set(alert.to) == {*CAMPAIGN.approval.approvers, CAMPAIGN.owner}

    clean = outcome.report("d", "r", "rolled back", "rejected", entries[:2])
    assert clean.status == "rolled back" and clean.left == []

    live = outcome.report("d", "r", "rolled back", "dashboard failed", [*entries[:2], entry(4, "email", "made", undoable=False)])
    assert live.status == "failed after going live" and [line.port for line in live.kept] == ["email"]

    done = outcome.report("d", "r", "completed", "", entries[:2])
    assert done.ok and len(done.kept) == 2 and done.left == []


# --- conclude: the report task's work, on a real SQLite ledger -----------------------------------
def run_end(**by_task: str) -> outcome.RunEnd:
    return outcome.RunEnd(dag_id="d", run_id="r", run_key="r", states=states(**by_task), order=ORDER, gate=None,
                          errors={}, seconds=0.1, campaign_version="v1")  # fmt: skip


@pytest.fixture
def ledger(tmp_path):
    from include.orchestrator.saga.ledger import Ledger

    return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


def notifier(sent: list):
    def notify(message):
        sent.append(message)
        return Effect(port="notify", conn_id="campaign_notify", backend="local", kind="message", key=message.key, ref={})

    return notify


def made(ledger, n: int, port: str, undoable: bool = True) -> Effect:
    effect = entry(n, port, "made", undoable).effect
    ledger.planned("d", "r", f"t.{port}", -1, effect)
    ledger.made("d", "r", f"t.{port}", -1, effect)
    return effect


def test_conclude_a_clean_rollback_alerts_nobody_and_frees_the_launch(ledger, caplog):
    assert ledger.claim_launch("d", "spring", "r") is None
    sent = []
    result = outcome.conclude(
        ledger, CAMPAIGN, run_end(analytics__create_dashboard="skipped"), notifier(sent), logging.getLogger("test")
    )
    assert (result.status, result.left, result.campaign_version, sent) == ("rolled back", [], "v1", [])
    assert ledger.claim_launch("d", "spring", "r2") is None  # released: the same launch may run again


def test_conclude_alerts_the_people_when_something_is_left_and_keeps_the_launch(ledger):
    assert ledger.claim_launch("d", "spring", "r") is None
    made(ledger, 1, "blog")  # made and never undone: compensation failed to remove it
    sent = []
    log = logging.getLogger("test")
    result = outcome.conclude(ledger, CAMPAIGN, run_end(analytics__create_dashboard="skipped"), notifier(sent), log)
    assert result.status == "cleanup needed" and [line.key for line in result.left] == ["k1"]
    assert len(sent) == 1 and "1 item(s) left to clean up by hand:\n- [blog] blog blog 1" in sent[0].text
    assert ledger.claim_launch("d", "spring", "r2") is not None  # still held by r: something of it may be out


def test_conclude_reports_truthfully_when_the_alert_cannot_be_sent(ledger, caplog):
    made(ledger, 1, "email", undoable=False)  # live: past the pivot

    def refuse(message):
        raise ConnectionError("notify is down")

    log = logging.getLogger("test")
    with caplog.at_level("INFO"):
        result = outcome.conclude(ledger, CAMPAIGN, run_end(analytics__create_dashboard="skipped"), refuse, log)
    assert result.status == "failed after going live"
    assert "could not send the alert" in caplog.text and "failed after going live" in caplog.text
