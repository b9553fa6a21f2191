"""The people's side in a real browser (issue 13): Chromium, driven by Playwright, against a real
Airflow (api-server, scheduler, dag-processor on loopback) on the embedded backends.

One stack serves the module; each scenario has its own campaign so their runs go side by side.
admin triggers every run; dana, an approver with the plain ``user`` role, decides (campaigns do
not allow self-approval). Screenshots of every step: tests/artifacts/screenshots/<test>/.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser import browser, page_as, require_chromium, shot  # noqa: F401 (fixtures)
from tests.stack import AirflowStack
from tests.worlds import browser_world

pytestmark = pytest.mark.integration
GATE = "review.approval"


# slug -> (sample campaign it copies, display name)
CAMPAIGNS = {
    "browser-trigger": ("changelog-digest", "Browser Trigger Digest"),  # two channels: the multi-select's defaults
    "browser-approve": ("spring-launch", "Browser Approve Launch"),  # every channel: the note says where each went
    "browser-reject": ("webinar-invite", "Browser Reject Webinar"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_chromium()  # before minutes of Airflow start-up
    with browser_world(tmp_path_factory.mktemp("browser"), CAMPAIGNS, ("browser-approve", "browser-reject")) as started:
        yield started


def run_page(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def waiting(world, slug: str) -> tuple[AirflowStack, str, str]:
    """The scenario's run, once it waits at the approval gate."""
    stack, dag_id, run_id = world["stack"], f"campaign_{slug}", world["runs"][slug]
    state = stack.wait_task(dag_id, run_id, GATE, {"awaiting_input", "failed", "upstream_failed"}, timeout=600)
    assert state == "awaiting_input", f"{dag_id} never reached its approval gate ({GATE} {state}); logs in {stack.home}"
    return stack, dag_id, run_id


def form_field(page: Page, label: str) -> Locator:
    """A field of a Required Actions form, found as a person does: by the label in its row (the
    form's <label for> does not point at its input, so get_by_label finds nothing)."""
    label_pattern = re.compile(rf"^\s*{re.escape(label)}\b")
    return page.get_by_role("group").filter(has=page.locator("label", has_text=label_pattern)).get_by_role("textbox")


def open_required_action(page: Page, dag_id: str, run_id: str, campaign: dict[str, Any]) -> None:
    """The request's page by its address, as linked from the review notification."""
    page.goto(f"{run_page(dag_id, run_id)}/tasks/{GATE}/required_actions")
    expect_request(page, campaign)


def expect_request(page: Page, campaign: dict[str, Any]) -> None:
    expect(page.get_by_text(campaign["name"]).first, "the approval request, naming the campaign").to_be_visible()
    expect(page.get_by_role("button", name="Approve"), "the form's Approve button").to_be_visible()


def open_note_on_run_page(page: Page, dag_id: str, run_id: str, note: str) -> Locator:
    """The run's page shows the note's first line; its pencil opens the whole note (markdown, rendered)."""
    page.goto(run_page(dag_id, run_id))
    expect(page.get_by_role("heading", name=run_id), "the run's page").to_be_visible()
    first_line = note.splitlines()[0]
    expect(page.get_by_text(first_line[:80]).first, f"the run's note on its page: {first_line!r}").to_be_visible()
    page.get_by_role("button", name="Edit note").first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Dag Run Note")
    expect(dialog, "the run's whole note, opened from its pencil").to_be_visible()
    return dialog


def test_trigger_form_with_its_defaults_starts_a_run(world, page_as):
    """admin opens the campaign's DAG, presses Trigger and submits the form untouched."""
    stack, slug = world["stack"], "browser-trigger"
    dag_id, campaign = f"campaign_{slug}", world["campaigns"][slug]
    page = page_as(stack.url, "admin")
    page.goto(f"/dags/{dag_id}")
    trigger = page.get_by_role("button", name="Trigger Dag")
    expect(trigger, "the DAG page's Trigger button").to_be_visible()
    shot(page, "dag-page")
    trigger.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Run Parameters"), "the trigger form's run parameters").to_be_visible()
    shot(page, "trigger-form-defaults")
    submit = dialog.get_by_role("button", name="Trigger", exact=True)
    submit.scroll_into_view_if_needed()
    expect(
        submit,
        "the form's Trigger button with every field at its default: disabled, so an optional "
        "param is shown as required (issue 13: writer_notes, launch)",
    ).to_be_enabled(timeout=10_000)
    submit.click()
    expect(dialog, "the trigger form to close once the run is created").to_be_hidden()
    expect(page.get_by_text("Dag Run Triggered").first, "the UI's confirmation that the run was created").to_be_visible()
    shot(page, "triggered")
    runs = stack.wait(
        lambda: stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"],
        "the run triggered from the form",
        timeout=60,
    )
    assert len(runs) == 1, runs
    run = runs[0]
    conf = run["conf"]
    assert conf["audience"] == campaign["audience"], conf
    assert sorted(conf["channels"]) == sorted(campaign["channels"]), conf
    assert not conf.get("writer_notes") and not conf.get("launch"), conf
    assert run["triggered_by"] == "ui", run
    # The model takes the form's conf: validate_conf passes.
    assert (
        stack.wait_task(dag_id, run["dag_run_id"], "validate_conf", {"success", "failed", "upstream_failed"}, timeout=240)
        == "success"
    )
    page.goto(run_page(dag_id, run["dag_run_id"]))
    expect(page.get_by_role("heading", name=run["dag_run_id"]), "the new run's page").to_be_visible()
    shot(page, "run-page")


EDITED_SUBJECT = "Edited in the browser: Pipewise 3 is here"


def test_reviewer_edits_the_copy_and_approves_without_a_reason(world, page_as):
    stack, dag_id, run_id = waiting(world, "browser-approve")
    campaign = world["campaigns"]["browser-approve"]
    page = page_as(stack.url, "dana")
    # dana finds the request as a reviewer does: Browse > Required Actions, the campaign's row.
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Required Actions").click()
    row = page.get_by_role("row").filter(has_text=run_id)  # the Dag ID column may show the campaign's name
    expect(row, f"the request of {dag_id} run {run_id} in Browse > Required Actions").to_be_visible()
    shot(page, "required-actions-list")
    row.locator(f"a[href$='/tasks/{GATE}/required_actions']").first.click()  # the Subject column (Task ID links there too)
    expect(page, "the request's page").to_have_url(re.compile(rf"/tasks/{re.escape(GATE)}/required_actions$"))
    expect_request(page, campaign)
    shot(page, "request")
    subject = form_field(page, "Email subject")
    expect(subject, "the email subject field, filled with the draft").not_to_have_value("")
    subject.fill(EDITED_SUBJECT)
    approve = page.get_by_role("button", name="Approve")
    shot(page, "subject-edited")
    expect(
        approve,
        "Approve with no reason typed: disabled, so the reason is required for an approval too "
        "(issue 13: only a rejection needs one)",
    ).to_be_enabled(timeout=10_000)
    approve.click()
    expect(page.get_by_text("Response received at"), "the form's answer to be recorded").to_be_visible()
    shot(page, "approved")
    assert stack.wait_run(dag_id, run_id) == "success"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"], record["edited_fields"]) == (
        "approved",
        "dana",
        "airflow-ui",
        ["email_subject"],
    ), record
    mails = [m["Subject"] for m in world["smtp"].messages()]
    assert [s for s in mails if EDITED_SUBJECT in s], f"no email went out with the edited subject: {mails}"
    note = stack.api("GET", stack.run_path(dag_id, run_id)).json()["note"]
    assert note and note.startswith("Campaign completed"), f"the completed run's note: {note!r}"
    missing = [channel for channel in campaign["channels"] if channel not in note.lower()]
    assert not missing, f"the note does not say where {missing} went: {note!r}"
    dialog = open_note_on_run_page(page, dag_id, run_id, note)
    for channel in campaign["channels"]:
        expect(dialog, f"the note in the UI says where {channel} went").to_contain_text(channel)
    shot(page, "run-note")


REJECTION = "Off-brand tone: rewrite the opening"


def test_reviewer_rejects_with_a_reason_and_the_run_rolls_back(world, page_as):
    stack, dag_id, run_id = waiting(world, "browser-reject")
    campaign = world["campaigns"]["browser-reject"]
    page = page_as(stack.url, "dana")
    open_required_action(page, dag_id, run_id, campaign)
    form_field(page, "Reason").fill(REJECTION)
    reject = page.get_by_role("button", name="Reject")
    expect(reject, "Reject with a reason typed").to_be_enabled(timeout=10_000)
    shot(page, "reason-typed")
    reject.click()
    expect(page.get_by_text("Response received at"), "the form's answer to be recorded").to_be_visible()
    shot(page, "rejected")
    assert stack.wait_run(dag_id, run_id) == "failed"
    record = stack.xcom(dag_id, run_id, GATE)
    assert (record["decision"], record["by"], record["means"], record["reason"]) == (
        "rejected",
        "dana",
        "airflow-ui",
        REJECTION,
    ), record
    note = stack.api("GET", stack.run_path(dag_id, run_id)).json()["note"]
    assert note and note.startswith(f"Campaign rolled back: rejected by dana: {REJECTION}"), note
    sent = [m for m in world["smtp"].messages() if campaign["name"] in m.get("Subject", "")]
    assert not sent, "a rejected campaign sends no email"
    dialog = open_note_on_run_page(page, dag_id, run_id, note)
    expect(dialog, "the note in the UI counts what was undone").to_contain_text("Undone:")
    shot(page, "run-note")
