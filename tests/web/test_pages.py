"""The Campaigns view's HTML, without Airflow: escaping, what a reviewer may do, what a rollback hides."""

from __future__ import annotations

from datetime import UTC, datetime

from include.orchestrator.web.campaigns import Approval, CampaignSummary, Outcome, Progress, Review, RunSummary, progress_of
from include.orchestrator.web.pages import Links, overview, run_page

HOSTILE = '<script>alert("x")</script>{{ 7*7 }}'
LINKS = Links("/campaigns", "")
DEADLINE = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def run(**kwargs) -> RunSummary:
    base = {
        "dag_id": "campaign_x",
        "run_id": "manual__1",
        "state": "running",
        "run_type": "manual",
        "progress": Progress(phase="waiting for approval", done=10, total=17),
        "approval": Approval(waiting=True, gate_state="awaiting_input", deadline=DEADLINE, eligible=["dana"]),
    }
    return RunSummary(**{**base, **kwargs})


def review(**kwargs) -> Review:
    base = {
        "audience": HOSTILE,
        "channels": ["email"],
        "copy_fields": {"headline": HOSTILE},
        "images": [{"channel": "email", "width": 1200, "height": 400, "sha256": "ab"}],
        "may_decide": True,
    }
    return Review(**{**base, **kwargs})


def test_campaign_text_and_copy_are_escaped_everywhere():
    campaign = CampaignSummary(
        dag_id="campaign_x",
        slug="x",
        name=HOSTILE,
        owner=HOSTILE,
        description=HOSTILE,
        channels=["email"],
        schedule="@daily",
        paused=False,
        runs=[run()],
        waiting=1,
    )
    for page in (overview([campaign], [run()], LINKS), run_page(HOSTILE, run(note=HOSTILE), review(), LINKS)):
        assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
        assert "<script defer src=" in page and page.count("<script") == 1  # only the app's own file


def test_the_deadline_is_an_absolute_time_and_the_form_is_only_for_who_may_decide():
    page = run_page("X", run(), review(), LINKS)
    assert '<time datetime="2026-12-02T09:30:00+00:00">2026-12-02 09:30 UTC</time>' in page
    assert 'id="decision"' in page and 'data-api="/campaigns/api/v1/approvals/campaign_x/manual__1"' in page
    refused = run_page("X", run(), review(may_decide=False, why_not="admin triggered this run"), LINKS)
    assert 'id="decision"' not in refused and "You cannot decide: admin triggered this run" in refused


def test_images_are_shown_until_a_rollback_deletes_them():
    assert '<img src="/campaigns/api/v1/runs/campaign_x/manual__1/images/email"' in run_page("X", run(), review(), LINKS)
    rolled_back = run(state="failed", approval=None, outcome=Outcome(status="rolled back", undone=["stored_image email"]))
    page = run_page("X", rolled_back, review(), LINKS)
    assert "<img" not in page and 'id="images-removed"' in page and 'id="nothing-left"' in page
    live = run(state="failed", approval=None, outcome=Outcome(status="failed after going live", kept=["email"]))
    assert "<img" in run_page("X", live, review(), LINKS)


def test_progress_names_the_phase():
    states = [
        ("validate_conf", "success"),
        ("research.search_notes", "success"),
        ("content.write_copy", "running"),
        ("design.render_image", None),
        ("compensation.undo", None),
    ]
    assert progress_of(states, "running") == Progress(phase="content", done=2, total=4)
    assert progress_of([("review.approval", "awaiting_input")], "running").phase == "waiting for approval"
    assert progress_of([("validate_conf", None)], "queued").phase == "queued"
    assert progress_of(states, "failed").phase == "finished"


def test_what_went_out_where_names_each_place_once():
    published = [
        {
            "channel": "blog",
            "kind": "git_commit",
            "summary": "blog post _posts/2026-12-02-x.md on origin:main",
            "link": "_posts/2026-12-02-x.md",
        },
        {"channel": "email", "kind": "smtp_batch", "summary": "2 emails", "link": "<id@x>"},
        {"channel": "social", "kind": "social_post", "summary": "post", "link": "https://social.example/p/1"},
    ]
    page = run_page(
        "X", run(state="success", approval=None, outcome=Outcome(status="completed", published=published)), review(), LINKS
    )
    assert page.count("_posts/2026-12-02-x.md") == 1, "the blog post's path is in its summary: not repeated as a link"
    assert "<code>&lt;id@x&gt;</code>" in page
    assert '<a href="https://social.example/p/1"' in page


def test_an_approval_without_a_decision_says_why_the_gate_ended():
    """A mark of success the campaign refuses fails the gate with no record: the page gives the gate's reason."""
    from include.orchestrator.web.campaigns import approval_of

    why = "refused the approval by <eve>, who marked the approval task success: eve triggered this run"
    approval = approval_of("failed", None, None, error=why)
    assert approval is not None and approval.error == why
    page = run_page("X", run(state="failed", approval=approval), review(), LINKS)
    assert "without a decision (gate: failed)" in page
    assert '<span id="gate-error">refused the approval by &lt;eve&gt;, who marked' in page
    decided = approval_of("success", None, {"decision": "approved", "by": "dana"}, error="stale")
    assert decided is not None and decided.error == "", "a decided gate shows its record, not an error"


def test_a_gate_error_reads_the_same_whoever_stored_it():
    """The gate pushes its error as JSON text; the decision API sets a refused mark's as a bare string."""
    from include.orchestrator.web.campaigns import _json, approval_of

    def error(stored):
        approval = approval_of("failed", None, None, error=_json(stored))
        return approval.error if approval else ""

    assert error('"refused: late"') == "refused: late" == error("refused: late") == error(b"refused: late")
    assert error("refused: 3 {x}") == "refused: 3 {x}" and error(None) == ""
