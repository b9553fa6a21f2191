"""The approval gate's rules, without Airflow: who may decide, edits, reminders, the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.orchestrator.approval.decisions import DecisionRequest, user_roles
from include.orchestrator.approval.rules import (
    Decision,
    GateState,
    apply_edits,
    copy_version,
    editable_fields,
    eligible_users,
    form_values,
    github_verdict,
    max_lengths,
    outgoing,
    refusal,
    reminder_delay,
)
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.domain.model import Approval
from include.orchestrator.errors import DecisionRefused
from tests.builders.ports import draft

DRAFT = draft(social_posts=["Post one", "Post two"])


def test_approvers_by_name_or_role_and_no_self_approval_unless_allowed():
    approval = Approval(approvers=["dana"], approver_roles=["Op"])
    assert refusal(approval, "dana", "dana", ["user"], triggered_by="admin") is None
    assert refusal(approval, "olga", "olga", ["op"], triggered_by="admin") is None, "roles compare case-insensitively"
    assert "eve is not an approver" in refusal(approval, "eve", "eve", ["user"], triggered_by="admin")
    assert "does not allow self-approval" in refusal(approval, "dana", "dana", [], triggered_by="dana")
    assert refusal(Approval(approvers=["dana"], allow_self_approval=True), "dana", "dana", [], triggered_by="dana") is None
    # FAB user ids are numbers: a name match is enough
    assert refusal(approval, "42", "dana", [], triggered_by=None) is None


def test_eligible_users_for_the_form_leave_out_whoever_triggered_the_run():
    approval = Approval(approvers=["admin", "dana"], approver_roles=["op"])
    members = {"op": ["olga", "admin"], "user": ["eve"]}
    assert eligible_users(approval, members, triggered_by="admin") == ["dana", "olga"]
    assert eligible_users(approval, members, triggered_by=None) == ["admin", "dana", "olga"]
    assert eligible_users(Approval(approvers=["admin"]), {}, triggered_by="admin") == []


def test_edits_apply_only_to_the_chosen_channels_and_are_named():
    assert editable_fields(["email"]) == ["headline", "email_subject", "email_body"]
    assert form_values(DRAFT, ["social"]) == {"headline": "Pipewise 3", "social_post": "Post one"}
    edited, changed = apply_edits(DRAFT, ["social"], {"social_post": "Better post", "headline": "Pipewise 3"})
    assert changed == ["social_post"] and edited.social_posts == ["Better post", "Post two"]
    assert copy_version(edited) != copy_version(DRAFT) and DRAFT.social_posts[0] == "Post one"
    with pytest.raises(DecisionRefused, match=r"cannot edit \['blog_body'\]"):
        apply_edits(DRAFT, ["email"], {"blog_body": "x"})
    with pytest.raises(DecisionRefused, match="must be non-empty text"):
        apply_edits(DRAFT, ["email"], {"email_body": "  "})


def test_the_reminder_comes_before_the_deadline_but_not_in_the_first_half():
    assert reminder_delay(Approval(approvers=["a"], timeout="24h")) == timedelta(hours=22)
    assert reminder_delay(Approval(approvers=["a"], timeout="1h", remind_before="2h")) == timedelta(minutes=30)


def test_the_record_reads_as_a_sentence_and_a_failure_message():
    at = datetime(2026, 11, 24, 12, tzinfo=UTC)
    record = Decision(decision="rejected", by="dana", means="rest", at=at, reason="off-brand")
    assert record.failure() == "rejected by dana: off-brand"
    assert record.summary() == "Rejected by dana via rest at 2026-11-24T12:00:00+00:00: off-brand"
    edited = Decision(decision="approved", by="olga", means="cli", at=at, edited_fields=["headline"], copy_version="abc")
    assert edited.summary().endswith("(copy edited: headline; version abc)")


def test_decision_requests_are_strict():
    with pytest.raises(ValueError):
        DecisionRequest.model_validate({"decision": "maybe"})
    with pytest.raises(ValueError):
        DecisionRequest.model_validate({"decision": "approve", "by": "someone-else"})
    assert DecisionRequest.model_validate({"decision": "approve", "copy": {"headline": "x"}}).copy_edits == {"headline": "x"}


def test_roles_come_from_either_kind_of_user():
    class Simple:
        role = "op"

    class Role:
        def __init__(self, name):
            self.name = name

    class Fab:
        roles = [Role("Admin"), Role("Reviewer")]

    assert user_roles(Simple()) == ["op"] and user_roles(Fab()) == ["Admin", "Reviewer"]


def test_the_first_decisive_review_by_a_github_approver_decides():
    def review(user, state, at, body=""):
        return {"user": user, "state": state, "submitted_at": f"2026-11-24T10:{at:02d}:00Z", "body": body}

    approvers = ["Dana-GH", "olga"]
    assert github_verdict(approvers, "open", []) is None
    # Comments, and reviews by anyone else, decide nothing; logins compare without case.
    others = [review("mallory", "APPROVED", 1), review("dana-gh", "COMMENTED", 2, "looks ok?")]
    assert github_verdict(approvers, "open", others) is None
    verdict = github_verdict(
        approvers,
        "open",
        [*others, review("olga", "CHANGES_REQUESTED", 4, "fix the  subject"), review("dana-gh", "APPROVED", 3, "Ship it")],
    )
    assert (verdict.decision, verdict.login, verdict.reason) == ("approved", "dana-gh", "Ship it")  # earliest wins
    verdict = github_verdict(approvers, "open", [review("olga", "CHANGES_REQUESTED", 4, "fix the  subject")])
    assert (verdict.decision, verdict.login, verdict.reason) == ("rejected", "olga", "fix the subject")
    # Closing the pull request without approval rejects; a merge alone is not an approval.
    closed = github_verdict(approvers, "closed", others, "https://github.example/pr/7")
    assert (closed.decision, closed.login) == ("rejected", "github") and "closed without approval" in closed.reason
    assert github_verdict(approvers, "merged", others) is None


def test_the_cli_says_what_is_missing_when_it_has_no_password_and_no_terminal():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_PASSWORD"}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]), AIRFLOW_API_URL="http://127.0.0.1:9", AIRFLOW_USER="dana")
    command = [sys.executable, "-m", "include.orchestrator", "approve", "spring-launch", "manual__1"]
    for stdin in ({"stdin": subprocess.DEVNULL}, {"input": ""}):  # no stdin at all; a pipe, no terminal behind it
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, **stdin)
        assert done.returncode == 2, done.stderr
        assert "no password for Airflow user 'dana': set AIRFLOW_PASSWORD, or run in a terminal" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_gate_state_carries_its_length_caps_and_reads_an_older_state_from_its_pin():
    campaign = parse_campaign(CAMPAIGNS_DIR / "spring-launch.yaml")
    cap = campaign.channels.social.max_length
    assert max_lengths(campaign, ["email", "social"]) == {"social_post": cap}
    assert max_lengths(campaign, ["email", "blog"]) == {}
    fields = {
        "deadline": datetime.now(UTC),
        "draft": DRAFT.model_dump(),
        "draft_version": copy_version(DRAFT),
        "channels": ["social"],
        "eligible": ["dana"],
        "outgoing": outgoing(campaign, ["social"], []),
    }
    stored = GateState(**fields, max_lengths=max_lengths(campaign, ["social"])).model_dump(mode="json")
    assert stored["max_lengths"] == {"social_post": cap}
    assert GateState.model_validate(stored).limits() == {"social_post": cap}
    # The typed field is what counts, not the pinned display string.
    assert GateState.model_validate({**stored, "max_lengths": {"social_post": 60}}).limits() == {"social_post": 60}
    assert GateState.model_validate({**stored, "max_lengths": {}}).limits() == {}
    # A state stored in XCom before the field existed (a run waiting across the upgrade) still validates
    # and is capped by its pin.
    older = {name: value for name, value in stored.items() if name != "max_lengths"}
    assert GateState.model_validate(older).max_lengths == {}
    assert GateState.model_validate(older).limits() == {"social_post": cap}
