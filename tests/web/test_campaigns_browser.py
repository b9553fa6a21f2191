"""The Campaigns view in a real browser (Chromium via Playwright) inside Airflow's UI: the
navigation entry lists the campaigns and the waiting runs with their deadlines; a reviewer opens
the run's Campaign tab, sees the images and the copy, edits, approves without a reason, and the
page then shows what went out where; a rejection shows the rollback.

admin triggers (REST); dana, an approver with the plain ``user`` role, decides. Screenshots:
tests/artifacts/screenshots/<test>/.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import FrameLocator, Locator, Page, expect

from tests.browser import browser, page_as, shot  # noqa: F401 (fixtures)
from tests.worlds import browser_world

pytestmark = pytest.mark.integration
CAMPAIGNS = {"view-approve": ("spring-launch", "View Approve Launch"), "view-reject": ("webinar-invite", "View Reject Webinar")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with browser_world(tmp_path_factory.mktemp("view-browser"), CAMPAIGNS, tuple(CAMPAIGNS)) as started:
        stack = started["stack"]
        for slug, run_id in started["runs"].items():
            stack.wait_task(f"campaign_{slug}", run_id, "review.approval", {"awaiting_input"}, timeout=600)
        yield started


def view(page: Page, title: str) -> FrameLocator:
    """The plugin page Airflow shows in its iframe."""
    return page.frame_locator(f'iframe[title="{title}"]')


def decoded_width(page: Page, image: Locator, timeout: float = 30) -> int:
    """The width of an image once decoded; fails if it never decodes (broken).

    ``decode()`` also rejects when the element is replaced: Airflow may load the frame's page a
    second time after an in-frame link (it mirrors the frame's path in its own URL), so retry.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return image.evaluate("img => img.decode().then(() => img.naturalWidth)")
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(500)


def open_run_tab(page: Page, dag_id: str, run_id: str) -> FrameLocator:
    page.goto(f"/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/campaign-run")
    return view(page, "Campaign")


def test_the_campaigns_view_lists_campaigns_and_waiting_runs(world, page_as):
    stack = world["stack"]
    page = page_as(stack.url, "admin")
    page.get_by_role("link", name="Campaigns").click()
    expect(page).to_have_url(re.compile(r"/plugin/campaigns$"))
    frame = view(page, "Campaigns")
    expect(frame.get_by_role("heading", name="Campaigns", exact=True)).to_be_visible()
    for name in ("View Approve Launch", "View Reject Webinar"):
        expect(frame.locator("#campaigns").get_by_text(name)).to_be_visible()
    waiting = frame.locator("#waiting tbody tr")
    expect(waiting).to_have_count(2)
    deadline = waiting.first.locator("td.deadline time")
    expect(deadline).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(deadline).to_have_attribute("title", re.compile("UTC$"))  # the script ran: the UTC value went to the tooltip
    shot(page, "campaigns-view-utc")
    # A viewer who chose New York in Airflow's time zone menu sees the deadline in New York time.
    page.evaluate("localStorage.setItem('timezone', JSON.stringify('America/New_York'))")
    page.reload()
    expect(view(page, "Campaigns").locator("#waiting td.deadline time").first).to_have_text(re.compile(r"(EST|GMT-5)$"))
    expect(waiting.first.get_by_text("dana")).to_be_visible()
    expect(frame.locator("ul.runs .phase").first).to_have_text("waiting for approval")
    shot(page, "campaigns-view")


def test_a_reviewer_sees_the_images_edits_and_approves_without_a_reason(world, page_as):
    stack, run_id, dag_id = world["stack"], world["runs"]["view-approve"], "campaign_view-approve"
    page = page_as(stack.url, "dana")
    page.goto("/plugin/campaigns")
    view(page, "Campaigns").get_by_role("link", name="Review and decide").and_(
        view(page, "Campaigns").locator(f'a[href*="{dag_id}"]')
    ).click()
    frame = view(page, "Campaigns")  # the run's page, inside the Campaigns view
    expect(frame.get_by_role("heading", name="View Approve Launch")).to_be_visible()
    images = frame.locator(".images img")
    expect(images).to_have_count(3)
    for index in range(3):  # loaded, not broken
        assert decoded_width(page, images.nth(index)) > 0
    expect(frame.locator("#recipients")).to_contain_text("@")
    expect(frame.locator(".deadline time")).to_have_attribute("title", re.compile("UTC$"))
    # The campaign as the run froze it at its start, by version; the file has not moved on since.
    expect(frame.locator("#campaign-version code")).to_have_text(re.compile(r"^[0-9a-f]{12}$"))
    expect(frame.locator("#campaign-version")).not_to_contain_text("edited since")
    shot(page, "review-page")
    headline = frame.locator('#decision input[name="headline"]')
    headline.fill("Ship reliable pipelines, reviewed in the browser")
    frame.get_by_role("button", name="Approve").click()
    expect(frame.locator("#decision-result")).to_contain_text("Recorded: approved by dana")
    shot(page, "approved")
    assert stack.wait_run(dag_id, run_id, timeout=600) == "success"
    frame = open_run_tab(page, dag_id, run_id)
    expect(frame.locator("#outcome")).to_contain_text("completed")
    expect(frame.locator("#published li")).to_have_count(3)
    expect(frame.locator("#edits")).to_contain_text("Ship reliable pipelines, reviewed in the browser")
    shot(page, "completed")


def test_a_rejection_needs_a_reason_and_shows_the_rollback(world, page_as):
    stack, run_id, dag_id = world["stack"], world["runs"]["view-reject"], "campaign_view-reject"
    page = page_as(stack.url, "dana")
    frame = open_run_tab(page, dag_id, run_id)
    frame.get_by_role("button", name="Reject").click()
    expect(frame.locator("#decision-result")).to_have_text("A rejection needs a reason.")
    frame.locator('#decision textarea[name="reason"]').fill("The offer is not approved yet")
    frame.get_by_role("button", name="Reject").click()
    expect(frame.locator("#decision-result")).to_contain_text("Recorded: rejected by dana")
    assert stack.wait_run(dag_id, run_id, timeout=600) == "failed"
    frame = open_run_tab(page, dag_id, run_id)
    expect(frame.locator("#outcome")).to_contain_text("rolled back")
    expect(frame.locator("#nothing-left")).to_be_visible()
    expect(frame.locator("#decided")).to_contain_text("rejected")
    expect(frame.locator("#images-removed")).to_be_visible()  # deleted by the rollback: not shown from a cache
    expect(frame.locator(".images img")).to_have_count(0)
    shot(page, "rolled-back")
