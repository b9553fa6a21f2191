"""The gate's decision record, one factory per way a decision arrives, without Airflow: every field
of the record each one builds from a gate state."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.orchestrator.approval import records
from include.orchestrator.approval.rules import GateState, GithubVerdict, apply_edits, copy_version, outgoing
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.domain.model import plan_run
from tests.builders.ports import DRAFT, IMAGES
from tests.stack import PROJECT

CAMPAIGN = parse_campaign(CAMPAIGNS_DIR / "spring-launch.yaml")
AT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)


@pytest.fixture
def state() -> GateState:
    plan = plan_run(CAMPAIGN, CAMPAIGN.dag_id, "manual__1", {})
    gate = GateState(
        deadline=DEADLINE,
        draft=DRAFT.model_dump(),
        draft_version=copy_version(DRAFT),
        channels=plan.channels,
        eligible=["dana", "olga"],
        triggered_by="ops",
        outgoing=outgoing(CAMPAIGN, plan.channels, IMAGES),
    )
    # As the decision API and the gate read it: from the XCom's JSON.
    return GateState.model_validate(gate.model_dump(mode="json"))


def record(**fields: Any) -> dict[str, Any]:
    """A record's fields as a dict, every one of them: those not given at their default."""
    base: dict[str, Any] = {
        "by_id": "",
        "reason": "",
        "draft_version": "",
        "copy_version": "",
        "edited_fields": [],
        "edited_copy": None,
        "triggered_by": None,
        "pinned": {},
    }
    return base | fields


def test_an_approval_in_the_form_pins_the_draft_it_approved(state):
    made = records.from_form(
        state, approve=True, user_id="7", user_name="dana", reason="  fine ", copy=DRAFT, edited=[], at=AT
    ).model_dump()
    assert made == record(
        decision="approved",
        by="dana",
        by_id="7",
        means="airflow-ui",
        at=AT,
        reason="  fine ",  # the gate strips it (checked_reason) before: the record keeps what it is given
        draft_version=copy_version(DRAFT),
        copy_version=copy_version(DRAFT),
        triggered_by="ops",
        pinned=state.pin(DRAFT),
    )
    assert set(made["pinned"]) == {"email", "social", "blog"}
    assert made["pinned"]["email"]["copy.headline"] and made["pinned"]["email"]["image"] == "email" * 8


def test_an_edited_approval_in_the_form_carries_and_pins_the_edited_copy(state):
    edited, fields = apply_edits(DRAFT, state.channels, {"headline": "Pipewise 3 is here", "email_body": "Body"})
    assert fields == ["headline"]
    made = records.from_form(
        state, approve=True, user_id="7", user_name="dana", reason="", copy=edited, edited=fields, at=AT
    ).model_dump()
    assert made == record(
        decision="approved",
        by="dana",
        by_id="7",
        means="airflow-ui",
        at=AT,
        draft_version=copy_version(DRAFT),
        copy_version=copy_version(edited),
        edited_fields=["headline"],
        edited_copy=edited.model_dump(),
        triggered_by="ops",
        pinned=state.pin(edited),
    )
    assert made["copy_version"] != made["draft_version"]
    assert made["edited_copy"]["headline"] == "Pipewise 3 is here"
    assert made["pinned"]["blog"]["copy.headline"] != state.pin(DRAFT)["blog"]["copy.headline"], "the edit is pinned"


def test_a_rejection_in_the_form_carries_the_draft_version_and_pins_nothing(state):
    made = records.from_form(
        state, approve=False, user_id="7", user_name="dana", reason="off brand", copy=DRAFT, edited=[], at=AT
    ).model_dump()
    assert made == record(
        decision="rejected",
        by="dana",
        by_id="7",
        means="airflow-ui",
        at=AT,
        reason="off brand",
        draft_version=copy_version(DRAFT),
        copy_version=copy_version(DRAFT),
        triggered_by="ops",
    )


def test_the_form_reason_is_cut_at_2000_characters(state):
    made = records.from_form(state, approve=False, user_id="7", user_name="dana", reason="x" * 2500, copy=DRAFT, edited=[], at=AT)
    assert made.reason == "x" * 2000


@pytest.mark.parametrize("means", ["rest", "cli", "in-process"])
def test_an_api_approval_is_the_form_record_with_its_own_means_and_now(state, means):
    edited, fields = apply_edits(DRAFT, state.channels, {"social_post": "A new post"})
    before = datetime.now(UTC)
    made = records.from_api(
        state, approve=True, user_id="olga", user_name="Olga", reason="ok", copy=edited, edited=fields, means=means
    ).model_dump()
    assert before <= made.pop("at") <= datetime.now(UTC)
    assert made == record(
        decision="approved",
        by="Olga",
        by_id="olga",
        means=means,
        reason="ok",
        draft_version=copy_version(DRAFT),
        copy_version=copy_version(edited),
        edited_fields=["social_post"],
        edited_copy=edited.model_dump(),
        triggered_by="ops",
        pinned=state.pin(edited),
    )
    assert made["pinned"]["social"]["copy.social_post"] != state.pin(DRAFT)["social"]["copy.social_post"]


def test_an_api_rejection_carries_the_draft_version_as_its_copy_version(state):
    made = records.from_api(
        state, approve=False, user_id="olga", user_name="Olga", reason="no", copy=DRAFT, edited=[], means="rest", at=AT
    ).model_dump()
    assert made == record(
        decision="rejected",
        by="Olga",
        by_id="olga",
        means="rest",
        at=AT,
        reason="no",
        draft_version=copy_version(DRAFT),
        copy_version=copy_version(DRAFT),
        triggered_by="ops",
    )


def test_a_github_approval_approves_and_pins_the_draft_as_shown(state):
    verdict = GithubVerdict(decision="approved", login="octo", reason="LGTM")
    made = records.from_github(state, verdict, at=AT).model_dump()
    assert made == record(
        decision="approved",
        by="octo",
        by_id="github:octo",
        means="github-review",
        at=AT,
        reason="LGTM",
        draft_version=state.draft_version,
        copy_version=state.draft_version,
        triggered_by="ops",
        pinned=state.pin(DRAFT),
    )


def test_a_github_rejection_names_no_copy(state):
    verdict = GithubVerdict(decision="rejected", login="github", reason="the review pull request was closed without approval")
    made = records.from_github(state, verdict, at=AT).model_dump()
    assert made == record(
        decision="rejected",
        by="github",
        by_id="github:github",
        means="github-review",
        at=AT,
        reason="the review pull request was closed without approval",
        draft_version=state.draft_version,
        triggered_by="ops",
    )


@pytest.mark.parametrize(
    ("approved", "whole_run", "means", "reason"),
    [
        (True, False, "mark-success", "the approval task was marked success in Airflow"),
        (False, False, "mark-failed", "the approval task was marked failed in Airflow"),
        (True, True, "mark-success", "the run was marked success in Airflow"),
        (False, True, "run-cancelled", "the run was marked failed in Airflow"),
    ],
)
def test_a_mark_records_who_how_and_pins_the_draft_when_it_approves(state, approved, whole_run, means, reason):
    made = records.from_mark(state, approved=approved, by="admin", whole_run=whole_run, note="", at=AT).model_dump()
    assert made == record(
        decision="approved" if approved else "rejected",
        by="admin",
        means=means,
        at=AT,
        reason=reason,
        draft_version=state.draft_version,
        copy_version=state.draft_version if approved else "",
        triggered_by="ops",
        pinned=state.pin(DRAFT) if approved else {},
    )


def test_a_marks_reason_is_the_task_note_when_there_is_one(state):
    made = records.from_mark(state, approved=False, by="admin", whole_run=False, note="wrong audience", at=AT)
    assert made.reason == "wrong audience" and made.means == "mark-failed"


@pytest.mark.parametrize("approved", [True, False])
def test_a_mark_without_a_gate_state_names_no_draft_and_pins_nothing(approved):
    before = datetime.now(UTC)
    made = records.from_mark(None, approved=approved, by="admin", whole_run=False, note="").model_dump()
    assert before <= made.pop("at") <= datetime.now(UTC)
    assert made == record(
        decision="approved" if approved else "rejected",
        by="admin",
        means="mark-success" if approved else "mark-failed",
        reason=f"the approval task was marked {'success' if approved else 'failed'} in Airflow",
    )


def test_a_timeout_rejects_naming_the_wait_and_the_deadline(state):
    made = records.on_timeout(state, timedelta(hours=11, minutes=30), at=AT).model_dump()
    assert made == record(
        decision="rejected",
        by="timeout",
        means="timeout",
        at=AT,
        reason="no decision within 11 hours 30 minutes (deadline 2026-12-02 22:00 UTC)",
        draft_version=state.draft_version,
        triggered_by="ops",
    )


def test_the_records_module_runs_without_airflow():
    code = (
        "import sys, include.orchestrator.approval.records; print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
