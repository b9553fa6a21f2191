"""The Campaigns view's HTML: the overview and one run's page (review, decision, outcome).

Plain HTML built from the view's models (``campaigns.py``); every value that came from a
campaign file, a run's conf, copy or a reviewer is escaped with :func:`html.escape`, and no
script is inline (the app sends a Content-Security-Policy that forbids it). Times are written
in UTC inside ``<time datetime=...>``; ``static/campaigns.js`` shows them in the viewer's time
zone. The pages live in Airflow's sandboxed iframe, which may not navigate the top window: they
link only to each other (Airflow keeps its address bar in step), and name DAGs instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from include.orchestrator.web.campaigns import CampaignSummary, Outcome, Review, RunSummary

STATE_COLOURS = {
    "success": "#1a7f37",
    "failed": "#cf222e",
    "running": "#0969da",
    "queued": "#8c959f",
    "waiting for approval": "#bf8700",
    "completed": "#1a7f37",
    "partially distributed": "#bf8700",
    "rolled back": "#cf222e",
    "cleanup needed": "#82071e",
    "failed after going live": "#82071e",
    "approved": "#1a7f37",
    "rejected": "#cf222e",
}


def _e(value: Any) -> str:
    return escape(str(value if value is not None else ""), quote=True)


def _q(value: str) -> str:
    return quote(value, safe="")


class Links:
    """Where things are: this app's pages and API (``app``) and Airflow's UI (``airflow``)."""

    def __init__(self, app: str, airflow: str) -> None:
        self.app, self.airflow = app.rstrip("/"), airflow.rstrip("/")

    def run_page(self, dag_id: str, run_id: str) -> str:
        return f"{self.app}/ui/runs/{_q(dag_id)}/{_q(run_id)}"

    def image(self, dag_id: str, run_id: str, channel: str) -> str:
        return f"{self.app}/api/v1/runs/{_q(dag_id)}/{_q(run_id)}/images/{_q(channel)}"

    def decision_api(self, dag_id: str, run_id: str) -> str:
        return f"{self.app}/api/v1/approvals/{_q(dag_id)}/{_q(run_id)}"

    def static(self, name: str) -> str:
        return f"{self.app}/ui/static/{name}"


def _time(value: datetime | None) -> str:
    if value is None:
        return "—"
    utc = value.astimezone(UTC)
    return f'<time datetime="{_e(utc.isoformat())}">{_e(utc.strftime("%Y-%m-%d %H:%M UTC"))}</time>'


def _badge(text: str) -> str:
    colour = STATE_COLOURS.get(text, "#57606a")
    return f'<span class="badge" style="background:{colour}">{_e(text)}</span>'


def _progress(run: RunSummary) -> str:
    p = run.progress
    return (
        f'<span class="phase">{_e(p.phase)}</span> '
        f'<progress max="{p.total or 1}" value="{p.done}" title="{p.done} of {p.total} tasks done"></progress>'
        f" <small>{p.done}/{p.total}</small>"
    )


def _page(title: str, links: Links, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="{_e(links.static("campaigns.css"))}">'
        f'<script defer src="{_e(links.static("campaigns.js"))}"></script></head>'
        f"<body>{body}</body></html>"
    )


def _external(link: str) -> str:
    """A link only for web addresses; anything else (an id, a path) is shown as text."""
    if link.startswith(("https://", "http://")):
        return f'<a href="{_e(link)}" target="_blank" rel="noopener noreferrer">{_e(link)}</a>'
    return f"<code>{_e(link)}</code>" if link else ""


# --- the overview ------------------------------------------------------------------------------
def _waiting_table(waiting: list[RunSummary], names: dict[str, str], links: Links) -> str:
    if not waiting:
        return '<p class="muted" id="no-waiting">No run is waiting for approval.</p>'
    rows = "".join(
        f"<tr><td>{_e(names.get(r.dag_id, r.dag_id))}</td><td><code>{_e(r.run_id)}</code></td>"
        f'<td class="deadline">{_time(r.approval.deadline if r.approval else None)}</td>'
        f"<td>{_e(', '.join(r.approval.eligible if r.approval else []))}</td>"
        f'<td><a class="button" href="{_e(links.run_page(r.dag_id, r.run_id))}">Review and decide</a></td></tr>'
        for r in waiting
    )
    return (
        '<table id="waiting"><thead><tr><th>Campaign</th><th>Run</th><th>Deadline</th><th>Who may decide</th><th></th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _run_line(run: RunSummary, links: Links) -> str:
    outcome = f" — {_badge(run.outcome.status)}" if run.outcome else ""
    return (
        f'<li>{_badge(run.state)} <a href="{_e(links.run_page(run.dag_id, run.run_id))}"><code>{_e(run.run_id)}</code></a>'
        f" {_progress(run)}{outcome}</li>"
    )


def overview(campaigns: list[CampaignSummary], waiting: list[RunSummary], links: Links) -> str:
    names = {c.dag_id: c.name for c in campaigns}
    cards = []
    for c in campaigns:
        runs = "".join(_run_line(r, links) for r in c.runs) or '<li class="muted">No runs yet.</li>'
        paused = ' <span class="badge" style="background:#8c959f">paused</span>' if c.paused else ""
        problem = f'<p class="error">{_e(c.file_error)}</p>' if c.file_error else ""
        cards.append(
            f'<tr class="campaign" data-dag-id="{_e(c.dag_id)}"><td><strong>{_e(c.name)}</strong>{paused}'
            f'<br><small class="muted">DAG <code>{_e(c.dag_id)}</code>. {_e(c.description)}</small>{problem}</td>'
            f"<td>{_e(c.owner)}</td><td>{_e(', '.join(c.channels))}</td><td>{_e(c.schedule)}</td>"
            f'<td><ul class="runs">{runs}</ul></td></tr>'
        )
    table = (
        '<table id="campaigns"><thead><tr><th>Campaign</th><th>Owner</th><th>Channels</th><th>Schedule</th>'
        f"<th>Recent runs</th></tr></thead><tbody>{''.join(cards)}</tbody></table>"
        if cards
        else '<p class="muted">No campaign DAG is visible to you.</p>'
    )
    body = (
        f"<h1>Campaigns</h1><h2>Waiting for approval ({len(waiting)})</h2>{_waiting_table(waiting, names, links)}"
        f"<h2>All campaigns ({len(campaigns)})</h2>{table}"
    )
    return _page("Campaigns", links, body)


# --- one run -----------------------------------------------------------------------------------
def _field_label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _decision_form(run: RunSummary, review: Review, links: Links) -> str:
    fields = []
    for name, value in review.copy_fields.items():
        tag = "textarea" if "\n" in value or len(value) > 120 else "input"
        control = (
            f'<textarea name="{_e(name)}" rows="8" data-original="{_e(value)}">{_e(value)}</textarea>'
            if tag == "textarea"
            else f'<input name="{_e(name)}" value="{_e(value)}" data-original="{_e(value)}">'
        )
        fields.append(f"<label>{_e(_field_label(name))}{control}</label>")
    return (
        f'<form id="decision" data-api="{_e(links.decision_api(run.dag_id, run.run_id))}">'
        '<h3>Your decision</h3><p class="muted">Edit the copy if needed, then approve. A rejection needs a reason.</p>'
        f"{''.join(fields)}"
        '<label>Reason <small class="muted">(optional when approving, required when rejecting)</small>'
        '<textarea name="reason" rows="3" maxlength="2000"></textarea></label>'
        '<div class="actions"><button type="submit" name="decision" value="approve" class="approve">Approve</button>'
        '<button type="submit" name="decision" value="reject" class="reject">Reject</button></div>'
        '<p id="decision-result" role="status"></p></form>'
    )


def _approval(run: RunSummary, review: Review, links: Links) -> str:
    a = run.approval
    if a is None:
        return '<p class="muted">The run has not reached its approval yet.</p>'
    if a.waiting:
        who = f"<p>Who may decide: {_e(', '.join(a.eligible))}</p>"
        deadline = (
            f'<p class="deadline"><strong>Decide by {_time(a.deadline)}</strong>; no decision by then rejects the campaign.</p>'
        )
        action = (
            _decision_form(run, review, links)
            if review.may_decide
            else f'<p class="muted">You cannot decide: {_e(review.why_not)}</p>'
        )
        return deadline + who + action
    record = a.decision or {}
    if not record:
        why = f': <span id="gate-error">{_e(a.error)}</span>' if a.error else ""
        return f"<p>The approval ended without a decision (gate: {_e(a.gate_state)}){why}.</p>"
    edits = ""
    if review.edits:
        rows = "".join(
            f'<tr><td>{_e(_field_label(d["field"]))}</td><td><pre class="before">{_e(d["before"])}</pre></td>'
            f'<td><pre class="after">{_e(d["after"])}</pre></td></tr>'
            for d in review.edits
        )
        head = "<thead><tr><th>Field</th><th>Draft</th><th>Approved</th></tr></thead>"
        edits = f'<h3>Edits</h3><table id="edits">{head}<tbody>{rows}</tbody></table>'
    at = datetime.fromisoformat(str(record.get("at"))) if record.get("at") else None
    return (
        f'<p id="decided">{_badge(str(record.get("decision")))} by <strong>{_e(record.get("by"))}</strong> '
        f"({_e(record.get('means'))}) at {_time(at)}</p>"
        + (f"<p>Reason: {_e(record.get('reason'))}</p>" if record.get("reason") else "")
        + edits
    )


def _outcome(outcome: Outcome | None) -> str:
    if outcome is None:
        return ""
    published = "".join(
        f"<li><strong>{_e(p['channel'])}</strong>: {_e(p['kind'])} {_e(p['summary'])}"
        # a link the summary already names (a blog post's path) is not shown twice
        + (f" {_external(p['link'])}" if p["link"] and p["link"] not in p["summary"] else "")
        + "</li>"
        for p in outcome.published
    )

    def items(title: str, lines: list[str], css: str = "") -> str:
        return f'<h3>{title}</h3><ul class="{css}">{"".join(f"<li>{_e(x)}</li>" for x in lines)}</ul>' if lines else ""

    left = items("Left to clean up by hand", outcome.left, "error")
    nothing_left = (
        '<p id="nothing-left">Nothing is left over.</p>'
        if outcome.status in ("rolled back", "completed") and not outcome.left
        else ""
    )
    return (
        f'<section id="outcome"><h2>Outcome: {_badge(outcome.status)}</h2><pre class="summary">{_e(outcome.summary)}</pre>'
        + (
            f'<h3>What went out where</h3><ul id="published">{published}</ul>'
            if published and outcome.status != "rolled back"
            else ""
        )
        + items("Undone", outcome.undone)
        + left
        + nothing_left
        + "</section>"
    )


def _images(run: RunSummary, review: Review, links: Links) -> str:
    if run.outcome is not None and run.outcome.status not in ("completed", "partially distributed", "failed after going live"):
        # The rollback deletes the rendered images: never show a cached copy as if it still existed.
        names = ", ".join(f"{i['channel']} ({int(i['width'])}×{int(i['height'])})" for i in review.images)
        return f'<p class="muted" id="images-removed">Not shown: the rollback removes the images ({_e(names) or "none"}).</p>'
    return (
        "".join(
            f'<figure><img src="{_e(links.image(run.dag_id, run.run_id, i["channel"]))}" alt="{_e(i["channel"])} image" '
            f'width="{int(i["width"]) // 2}" height="{int(i["height"]) // 2}">'
            f"<figcaption>{_e(i['channel'])} ({int(i['width'])}×{int(i['height'])})</figcaption></figure>"
            for i in review.images
        )
        or '<p class="muted">No images yet.</p>'
    )


def _version(review: Review) -> str:
    """Which version of the campaign file the run uses, and whether the file has moved on since."""
    if not review.campaign_version:
        return ""
    changed = (
        (
            ' <span class="muted">(the file has been edited since this run started: this run keeps the version it '
            "started with; new runs use the edit)</span>"
        )
        if review.file_changed
        else ""
    )
    return f'<dt>Campaign version</dt><dd id="campaign-version"><code>{_e(review.campaign_version)}</code>{changed}</dd>'


def run_page(campaign_name: str, run: RunSummary, review: Review, links: Links) -> str:
    images = _images(run, review, links)
    copy = "".join(f"<dt>{_e(_field_label(k))}</dt><dd><pre>{_e(v)}</pre></dd>" for k, v in review.copy_fields.items())
    recipients = ""
    if review.recipients:
        more = (
            f" and {review.recipients - len(review.recipient_sample)} more"
            if review.recipients > len(review.recipient_sample)
            else ""
        )
        recipients = (
            f'<dt>Email recipients</dt><dd id="recipients">{review.recipients}: '
            f"{_e(', '.join(review.recipient_sample))}{more}</dd><dt>Sender</dt><dd>{_e(review.sender)}</dd>"
        )
    none = '<span class="muted">none</span>'
    facts = (
        f'<dl class="facts"><dt>Audience</dt><dd>{_e(review.audience)}</dd>'
        f"<dt>Writer notes</dt><dd>{_e(review.writer_notes) or none}</dd>"
        f"<dt>Launch</dt><dd>{_e(review.launch) or '—'}</dd><dt>Channels</dt><dd>{_e(', '.join(review.channels))}</dd>"
        f"{recipients}<dt>Review bundle</dt><dd>{_external(review.review_where)}</dd>{_version(review)}</dl>"
    )
    no_copy = '<dd class="muted">No copy yet.</dd>'
    heading = {None: "What goes out", "completed": "What went out", "partially distributed": "What went out"}.get(
        run.outcome.status if run.outcome else None, "What would have gone out"
    )
    body = (
        f'<p><a href="{_e(links.app)}/ui/campaigns">All campaigns</a></p>'
        f"<h1>{_e(campaign_name)}</h1><p>Run <code>{_e(run.run_id)}</code> {_badge(run.state)} {_progress(run)}"
        f" — triggered by {_e(run.triggered_by or run.run_type)}</p>"
        f'<section id="approval"><h2>Approval</h2>{_approval(run, review, links)}</section>'
        f"{_outcome(run.outcome)}"
        f'<section id="review"><h2>{heading}</h2>{facts}<h3>Images</h3><div class="images">{images}</div>'
        f'<h3>Copy</h3><dl class="copy">{copy or no_copy}</dl></section>'
    )
    return _page(f"{campaign_name}: {run.run_id}", links, body)


def problem_page(status: int, detail: str, links: Links) -> str:
    hint = " Sign in to Airflow first." if status == 401 else ""
    return _page("Campaigns", links, f"<h1>{status}</h1><p>{_e(detail)}.{hint}</p>")
