"""What is approved is what is sent, without Airflow: the run's campaign snapshot, the approval's
pin, and distribution refusing anything that differs from it, naming what changed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from include.orchestrator.approval.rules import Decision, GateState, apply_edits, copy_version, outgoing
from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.domain.model import Campaign, campaign_version, plan_run
from include.orchestrator.domain.ports import Copy, Image
from include.orchestrator.errors import DecisionRefused, NotApproved, NotThisRun
from include.orchestrator.saga import outcome
from include.orchestrator.steps import STEPS, StepContext, approved_copy
from tests.builders.ports import DRAFT, IMAGES

CAMPAIGN = parse_campaign(CAMPAIGNS_DIR / "spring-launch.yaml")


def edited(campaign: Campaign, change: Any) -> Campaign:
    data = campaign.model_dump(mode="json")
    change(data)
    return Campaign.model_validate(data)


def context(current: Campaign, results: dict[str, Any], item: str | None = None) -> StepContext:
    return StepContext(
        current=current,
        dag_id=current.dag_id,
        run_id="manual__1",
        run_date=date(2026, 12, 1),
        conf={},
        pull=results.get,
        open_port=lambda port: None,
        item=item,
    )


def approved_run(snapshot: Campaign, copy: Copy = DRAFT, images: list[Image] = IMAGES) -> dict[str, Any]:
    """The XComs of a run whose campaign was frozen as ``snapshot`` and approved as ``copy``."""
    plan = plan_run(snapshot, snapshot.dag_id, "manual__1", {})
    state = GateState(
        deadline=datetime.now(UTC) + timedelta(hours=1),
        draft=DRAFT.model_dump(),
        draft_version=copy_version(DRAFT),
        channels=plan.channels,
        eligible=["dana"],
        outgoing=outgoing(snapshot, plan.channels, images),
    )
    record = Decision(
        decision="approved",
        by="dana",
        means="rest",
        at=datetime.now(UTC),
        draft_version=state.draft_version,
        copy_version=copy_version(copy),
        edited_copy=copy.model_dump() if copy != DRAFT else None,
        pinned=state.pin(copy),
    )
    return {
        "validate_conf": plan.model_dump(mode="json"),
        "content.write_copy": DRAFT.model_dump(),
        "design.render_image": [i.model_dump() for i in images],
        tasks.GATE: record.model_dump(mode="json"),
    }


def test_validate_conf_freezes_the_campaign_and_later_steps_use_it():
    results = {"validate_conf": STEPS["validate_conf"](context(CAMPAIGN, {})).result}
    assert results["validate_conf"]["campaign_version"] == campaign_version(CAMPAIGN)
    changed = edited(CAMPAIGN, lambda d: d["channels"]["email"].update(sender="spoof@example.net"))
    later = context(changed, results)  # the file was edited: this process parsed the new text
    assert later.campaign == CAMPAIGN and later.campaign.channels.email.sender != "spoof@example.net"
    assert campaign_version(changed) != campaign_version(CAMPAIGN)


def test_a_version_is_the_validated_content_not_the_file_layout():
    assert campaign_version(CAMPAIGN) == campaign_version(Campaign.model_validate(CAMPAIGN.model_dump(mode="json")))


def test_every_channel_sends_what_was_approved_including_an_edit():
    edit = DRAFT.model_copy(update={"email_subject": "Edited by dana"})
    results = approved_run(CAMPAIGN, edit)
    for channel in ("email", "social", "blog"):
        assert approved_copy(context(CAMPAIGN, results, channel), channel) == edit


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["channels"]["email"]["recipients"].append("intruder@example.com"), "email.recipients (2 item(s)"),
        (lambda d: d["channels"]["email"].update(sender="spoof@example.net"), "email.sender (launch@pipewise.example.com"),
        (lambda d: d["channels"]["email"].update(subject_prefix="[Sale] "), "email.subject_prefix"),
    ],
)
def test_email_settings_that_differ_from_the_approval_are_refused_by_name(change, named):
    results = approved_run(CAMPAIGN)
    # What the run would send now, had its snapshot been changed after the approval (a bug, or a hand-edited XCom).
    results["validate_conf"] = plan_run(edited(CAMPAIGN, change), CAMPAIGN.dag_id, "manual__1", {}).model_dump(mode="json")
    with pytest.raises(NotApproved, match="email: not sent, because it differs from what dana approved") as refused:
        approved_copy(context(CAMPAIGN, results, "email"), "email")
    assert named in str(refused.value), refused.value
    # The other channels' settings did not change: they go out.
    assert approved_copy(context(CAMPAIGN, results, "blog"), "blog") == DRAFT


def test_a_changed_image_or_copy_is_refused():
    results = approved_run(CAMPAIGN)
    results["design.render_image"][2]["sha256"] = "f" * 64  # the blog's hero replaced after the approval
    with pytest.raises(NotApproved, match=r"blog: .*image \(blogblog"):
        approved_copy(context(CAMPAIGN, results, "blog"), "blog")
    results = approved_run(CAMPAIGN)
    results["content.write_copy"] = DRAFT.model_copy(update={"blog_body": "Other"}).model_dump()  # draft swapped
    with pytest.raises(NotApproved, match=r"copy\.blog_body"):
        approved_copy(context(CAMPAIGN, results, "blog"), "blog")


def test_a_channel_outside_the_approval_or_a_rejection_sends_nothing():
    only_email = plan_run(CAMPAIGN, CAMPAIGN.dag_id, "manual__1", {"channels": ["email"]})
    results = approved_run(CAMPAIGN)
    results[tasks.GATE]["pinned"] = {"email": results[tasks.GATE]["pinned"]["email"]}
    results["validate_conf"] = only_email.model_dump(mode="json") | {"channels": ["email", "blog"]}
    with pytest.raises(NotApproved, match="blog was not approved: the approval covers email"):
        approved_copy(context(CAMPAIGN, results, "blog"), "blog")
    results[tasks.GATE]["decision"] = "rejected"
    with pytest.raises(NotApproved, match="was not approved"):
        approved_copy(context(CAMPAIGN, results, "email"), "email")


def test_long_settings_are_pinned_by_size_and_hash_and_short_ones_as_they_are():
    pinned = outgoing(CAMPAIGN, ["email", "social"], IMAGES)
    assert pinned["email"]["email.sender"] == "launch@pipewise.example.com"
    assert pinned["email"]["email.recipients"].startswith("2 item(s), sha256 ")
    assert pinned["social"]["image"] == "social" * 8 and "email.sender" not in pinned["social"]


def test_an_email_sent_in_batches_is_one_line_of_the_note_naming_the_uncertain_batches():
    from include.orchestrator.saga.outcome import Line, Report

    def batch(n: int, state: str = "made") -> Line:
        return Line(
            where="distribution.publish_email",
            port="email",
            kind="email",
            key=f"k-email-{n:04d}",
            state=state,
            summary=f"email 'Hi' delivered to 50 recipient(s) via smtp (batch {n})",
            recipients=50,
        )

    blog = Line(where="distribution.publish_blog", port="blog", kind="git_commit", key="k-blog", state="made", summary="post")
    report = Report(
        dag_id="d",
        run_id="r",
        status="completed",
        reason="",
        kept=[blog, batch(1), batch(2, "planned"), batch(3)],
        campaign_version="abc",
    )
    lines = report.summary().splitlines()
    assert lines[0] == "Campaign completed" and lines[2] == "- blog: post" and lines[3] == "- campaign version: abc", lines
    assert lines[1].startswith("- email: 3 batches to 150 recipient(s); first: email 'Hi' delivered"), lines[1]
    assert "1 batch(es), 50 recipient(s), may or may not have been delivered" in lines[1] and "k-email-0002" in lines[1]
    single = Report(dag_id="d", run_id="r", status="completed", reason="", kept=[batch(1)]).summary().splitlines()
    assert single == ["Campaign completed", "- email: email 'Hi' delivered to 50 recipient(s) via smtp (batch 1)"]


def test_a_competitor_url_added_to_the_file_after_the_start_is_not_scraped_by_the_run():
    results = {"validate_conf": STEPS["validate_conf"](context(CAMPAIGN, {})).result}
    added = "https://example.org/new-rival"
    changed = edited(CAMPAIGN, lambda d: d["research"]["competitor_urls"].append(added))
    with pytest.raises(NotThisRun, match="added to the campaign after this run started"):
        STEPS["scrape_competitor"](context(changed, results, item=added))


def test_a_mapped_item_airflow_marks_removed_after_a_reparse_does_not_stop_the_campaign():
    # A zero-length literal mapping's placeholder turns "removed" when the edited file is parsed
    # mid-run (Airflow's verify_integrity): the channels must still go out.
    states = {"research.scrape_competitor": ["removed"], "distribution.publish_blog": ["success"]}
    assert outcome.blocking_failure(CAMPAIGN, states, list(states)) is None
    assert outcome.blocking_failure(CAMPAIGN, {**states, "distribution.publish_blog": ["failed"]}, list(states))


def test_a_social_post_longer_than_its_channel_takes_is_refused_at_the_gate_and_never_cut():
    limit = CAMPAIGN.channels.social.max_length
    plan = plan_run(CAMPAIGN, CAMPAIGN.dag_id, "manual__1", {})
    state = GateState(
        deadline=datetime.now(UTC),
        draft=DRAFT.model_dump(),
        draft_version=copy_version(DRAFT),
        channels=plan.channels,
        eligible=["dana"],
        outgoing=outgoing(CAMPAIGN, plan.channels, IMAGES),
    )
    assert state.limits() == {"social_post": limit}
    fits, edited_fields = apply_edits(DRAFT, plan.channels, {"social_post": "x" * limit}, state.limits())
    assert edited_fields == ["social_post"] and len(fits.social_posts[0]) == limit
    with pytest.raises(DecisionRefused, match=f"edited social_post is {limit + 1} characters; its channel takes at most {limit}"):
        apply_edits(DRAFT, plan.channels, {"social_post": "x" * (limit + 1)}, state.limits())
    # Approved anyway (a writer or a gate that let it through): distribution refuses; it never sends a cut post.
    results = approved_run(CAMPAIGN, DRAFT.model_copy(update={"social_posts": ["y" * (limit + 1)]}))
    with pytest.raises(NotApproved, match=f"social post is {limit + 1} characters; social.max_length is {limit}"):
        STEPS["publish_channel"](context(CAMPAIGN, results, "social"))
