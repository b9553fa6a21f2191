"""The approval gate's rules, Airflow-free: who may decide, what a decision records, edited copy.

The gate (``airflow/gate.ApprovalGate``) waits in Airflow's ``awaiting_input`` state; decisions reach
it through Airflow's Required Actions form, the campaign decision API (``approval/decisions.py``, used by
``python -m include.orchestrator approve|reject``) or by marking the gate success or failed. All
of them end in the same :class:`Decision` record, the gate task's XCom ``return_value``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from include.orchestrator.domain.model import Approval, Campaign, folded, lines, text_pattern
from include.orchestrator.domain.ports import Copy, Image
from include.orchestrator.errors import DecisionRefused

APPROVE, REJECT = "Approve", "Reject"
# The copy a reviewer may edit, per channel: form field -> (Copy field, index into a list field).
EDITABLE: dict[str, tuple[str | None, str, int | None]] = {
    "headline": (None, "headline", None),
    "email_subject": ("email", "email_subject", None),
    "email_body": ("email", "email_body", None),
    "social_post": ("social", "social_posts", 0),
    "blog_title": ("blog", "blog_title", None),
    "blog_body": ("blog", "blog_body", None),
}
MULTILINE = {"email_body", "blog_body"}


def form_pattern(name: str) -> str | None:
    """The JSON-schema pattern of an editable field, from the copy's own rules (a form then refuses as
    one types what :func:`apply_edits` would refuse)."""
    return text_pattern(Copy, EDITABLE[name][1])


Means = Literal[
    "airflow-ui", "rest", "cli", "mark-success", "mark-failed", "run-cancelled", "timeout", "in-process", "github-review"
]


class Decision(BaseModel):
    """What was decided on one run: who, when, how, why, and which copy was approved."""

    model_config = ConfigDict(frozen=True)

    decision: Literal["approved", "rejected"]
    by: str = Field(min_length=1, max_length=200, description='A user name, or "timeout".')
    by_id: str = ""
    means: Means
    at: datetime
    reason: str = Field("", max_length=2000)
    draft_version: str = Field("", description="Hash of the copy the reviewers were shown.")
    copy_version: str = Field("", description="Hash of the copy approved (differs when edited).")
    edited_fields: list[str] = Field(default_factory=list)
    edited_copy: dict[str, Any] | None = Field(None, description="The approved copy when a reviewer edited it.")
    triggered_by: str | None = None
    pinned: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="What the approval lets go out, per channel (see :func:`pin`): distribution sends nothing else.",
    )

    @property
    def approved(self) -> bool:
        return self.decision == "approved"

    def summary(self) -> str:
        """One line for task notes and logs."""
        line = f"{self.decision.capitalize()} by {self.by} via {self.means} at {self.at.isoformat(timespec='seconds')}"
        if self.reason:
            line += f": {self.reason}"
        if self.edited_fields:
            line += f" (copy edited: {', '.join(self.edited_fields)}; version {self.copy_version})"
        elif self.copy_version:
            line += f" (copy version {self.copy_version})"
        return line

    def failure(self) -> str:
        """The message a rejected run fails with."""
        return f"rejected by {self.by}: {self.reason or 'no reason given'}"


class GateState(BaseModel):
    """What the gate publishes when it starts waiting (XCom ``gate``): the decision API reads it."""

    deadline: datetime
    draft: dict[str, Any]
    draft_version: str
    channels: list[str]
    eligible: list[str] = Field(description="User ids the Required Actions form accepts.")
    triggered_by: str | None = None
    outgoing: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per channel, what goes out besides the copy (settings, image): see :func:`outgoing`."
    )
    max_lengths: dict[str, int] = Field(
        default_factory=dict, description="Form fields whose length their channel caps: see :func:`max_lengths`."
    )

    def pin(self, approved: Copy) -> dict[str, dict[str, str]]:
        """What an approval of ``approved`` (the draft, or the reviewer's edit of it) lets go out."""
        return {channel: {**fields, **copy_pin(approved, channel)} for channel, fields in self.outgoing.items()}

    def limits(self) -> dict[str, int]:
        """Form fields whose length a channel caps (:attr:`max_lengths`), for :func:`apply_edits`.

        A state published before ``max_lengths`` existed (a run that was waiting at the gate when the
        package was upgraded; it may wait as long as the approval's timeout) has no such field: its cap
        is read back from the pinned setting, so such a run still refuses an over-long post at the gate
        instead of approving it and failing at distribution.
        """
        if "max_lengths" in self.model_fields_set:
            return dict(self.max_lengths)
        social = self.outgoing.get("social", {}).get("social.max_length")
        return {"social_post": int(social)} if social else {}


def max_lengths(campaign: Campaign, channels: Sequence[str]) -> dict[str, int]:
    """Form fields whose length a channel of this run caps: the social post, at the campaign's
    ``max_length`` (an approval of a longer one could not go out as approved)."""
    social = campaign.channels.social
    return {"social_post": social.max_length} if "social" in channels and social is not None else {}


# --- the pin: what an approval lets go out ---------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _pinned_value(value: Any) -> str:
    """A setting as the pin keeps it: short values as they are (the refusal can then show them), lists
    and long text as their size and a hash (1,000 recipients would not help anyone reading it)."""
    if isinstance(value, list):
        return f"{len(value)} item(s), sha256 {_digest(value)}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else f"{len(text)} characters, sha256 {_digest(text)}"


def outgoing(campaign: Campaign, channels: Sequence[str], images: list[Image]) -> dict[str, dict[str, str]]:
    """Per channel, what goes out besides the copy: every setting of the channel (sender,
    recipients, profiles, author...) and its image by content hash."""
    shas = {image.channel: image.sha256 for image in images}
    pinned = {}
    for channel in channels:
        settings = getattr(campaign.channels, channel)
        fields = {} if settings is None else settings.model_dump(mode="json", exclude={"on_failure"})
        pinned[channel] = {f"{channel}.{name}": _pinned_value(value) for name, value in sorted(fields.items())}
        pinned[channel]["image"] = shas.get(channel, "none")
    return pinned


def copy_pin(copy: Copy, channel: str) -> dict[str, str]:
    """The copy one channel publishes, by hash: the headline (drawn on its image) and its own fields."""
    data = copy.model_dump()
    fields = {}
    for name, (owner, attr, index) in EDITABLE.items():
        if owner in (None, channel):
            value = data[attr] if index is None else (data[attr][index : index + 1] or [""])[0]
            fields[f"copy.{name}"] = _digest(value)
    return fields


def differences(approved: dict[str, str], sending: dict[str, str]) -> list[str]:
    """What differs between what was approved and what is about to go out, one phrase each."""
    changed = []
    for name in sorted(set(approved) | set(sending)):
        before, now = approved.get(name, "(none)"), sending.get(name, "(none)")
        if before != now:
            changed.append(f"{name} ({before} approved, {now} now)")
    return changed


def copy_version(copy: Copy | dict[str, Any]) -> str:
    data = copy.model_dump() if isinstance(copy, Copy) else copy
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def editable_fields(channels: list[str]) -> list[str]:
    return [name for name, (channel, _, _) in EDITABLE.items() if channel is None or channel in channels]


def form_values(copy: Copy, channels: list[str]) -> dict[str, str]:
    """The draft as the review form shows it, one field per editable part of the chosen channels."""
    data = copy.model_dump()
    values = {}
    for name in editable_fields(channels):
        _, attr, index = EDITABLE[name]
        value = data[attr]
        values[name] = value[index] if index is not None else value
    return values


def apply_edits(
    draft: Copy, channels: list[str], edits: dict[str, Any], limits: dict[str, int] | None = None
) -> tuple[Copy, list[str]]:
    """The copy with a reviewer's edits applied, and the fields that changed.

    Unknown or off-channel fields, non-text values, text the copy may not hold (a line break or
    a control character in a subject...) and text longer than its channel takes (``limits``, see
    :meth:`GateState.limits`) are refused by name: an edit that cannot be applied must not be lost
    silently, nor be cut or fail the send after other channels went out.
    """
    allowed = editable_fields(channels)
    unknown = sorted(set(edits) - set(allowed))
    if unknown:
        raise DecisionRefused(400, f"cannot edit {unknown}; editable fields for this run: {allowed}")
    data = draft.model_dump()
    for name, value in edits.items():
        if not isinstance(value, str) or not value.strip():
            raise DecisionRefused(400, f"edited {name} must be non-empty text")
        if len(value) > 20_000:
            raise DecisionRefused(400, f"edited {name} is longer than 20000 characters")
        _, attr, index = EDITABLE[name]
        if index is not None:
            data[attr] = [*data[attr]]
            data[attr][index] = value
        else:
            data[attr] = value
    try:
        approved = Copy.model_validate(data)  # the copy's own rules: one definition of each field's text
    except ValidationError as exc:
        raise DecisionRefused(400, "; ".join(_edit_problems(exc))) from None
    before, after = form_values(draft, channels), form_values(approved, channels)
    for name, limit in (limits or {}).items():
        if name in edits and len(after[name]) > limit:
            raise DecisionRefused(400, f"edited {name} is {len(after[name])} characters; its channel takes at most {limit}")
    return approved, [name for name in edits if after[name] != before[name]]


def _edit_problems(error: ValidationError) -> list[str]:
    """The copy's validation errors named by the form field the reviewer edited."""
    field_of: dict[tuple[str, int | str | None], str] = {(attr, index): name for name, (_, attr, index) in EDITABLE.items()}
    problems = []
    for item in error.errors(include_url=False):
        attr, index = str(item["loc"][0]), (item["loc"][1:2] or [None])[0]
        name = field_of.get((attr, index), ".".join(str(part) for part in item["loc"]))
        problems.append(f"edited {name}: {item['msg'].removeprefix('Value error, ')}")
    return problems


def checked_reason(reason: str) -> str:
    """A decision's reason as recorded: several lines may be, control characters may not (PostgreSQL
    refuses a NUL in the task note and the record), refused by name."""
    try:
        return lines(reason).strip()
    except ValueError as exc:
        raise DecisionRefused(400, f"reason: {exc}") from None


def refusal(approval: Approval, user_id: str, user_name: str, roles: list[str], triggered_by: str | None) -> str | None:
    """Why this user may not decide on this run, or None when they may."""
    names = {user_id, user_name} - {""}
    wanted_roles = {r.casefold() for r in approval.approver_roles}
    if not (names & set(approval.approvers) or wanted_roles & {r.casefold() for r in roles}):
        roles_text = f" or a user with role {', '.join(approval.approver_roles)}" if approval.approver_roles else ""
        return f"{user_name} is not an approver of this campaign (approvers: {', '.join(approval.approvers)}{roles_text})"
    if triggered_by and triggered_by in names and not approval.allow_self_approval:
        return f"{user_name} triggered this run and the campaign does not allow self-approval"
    return None


class GithubVerdict(BaseModel):
    """What the review pull request says about the run: who decided, how, and why."""

    decision: Literal["approved", "rejected"]
    login: str  # the GitHub user; "github" when the pull request was closed
    reason: str


def github_verdict(approvers: list[str], pull_state: str, reviews: list[dict[str, Any]], url: str = "") -> GithubVerdict | None:
    """The decision the review pull request carries, or None while it carries none.

    The first review, in time, by one of the campaign's ``github_approvers`` that approves or
    requests changes decides (later reviews cannot take it back: the gate is closed by then).
    Comments decide nothing; reviews by anyone else count for nothing. A pull request closed
    without such a review rejects; a merge alone decides nothing (merging is not approving).
    """
    allowed = {login.casefold() for login in approvers}
    where = f" ({url})" if url else ""
    for review in sorted(reviews, key=lambda r: r.get("submitted_at") or ""):
        login, state = str(review.get("user") or ""), review.get("state")
        if login.casefold() not in allowed or state not in ("APPROVED", "CHANGES_REQUESTED"):
            continue
        # A reviewer's words on GitHub cannot be refused back to them: made one line, controls dropped.
        body = folded(str(review.get("body") or ""))[:1500]
        if state == "APPROVED":
            return GithubVerdict(decision="approved", login=login, reason=body or f"approving review on GitHub{where}")
        return GithubVerdict(decision="rejected", login=login, reason=body or f"changes requested on GitHub{where}")
    if pull_state == "closed":
        reason = f"the review pull request was closed without approval{where}"
        return GithubVerdict(decision="rejected", login="github", reason=reason)
    return None


def eligible_users(approval: Approval, role_members: dict[str, list[str]], triggered_by: str | None) -> list[str]:
    """The user ids who may answer the Required Actions form: named approvers and role members."""
    users = list(approval.approvers)
    for role in approval.approver_roles:
        users += role_members.get(role.casefold(), [])
    if triggered_by and not approval.allow_self_approval:
        users = [u for u in users if u != triggered_by]
    return sorted(set(users))


def reminder_delay(approval: Approval) -> timedelta:
    """How long after the gate opens the reminder goes out: ``remind_before`` the deadline, but
    never in the first half of the wait (a reminder right after the request is noise)."""
    return max(approval.timeout - approval.remind_before, approval.timeout / 2)


def now() -> datetime:
    return datetime.now(UTC)


def call_api(api_url: str, user: str, password: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the Airflow API as ``user`` (token from ``/auth/token``); raise DecisionRefused on an error answer."""
    import httpx

    from include.orchestrator.resilience.deadlines import within

    # Both requests within one total deadline: a trickling server must not hold the watcher's task.
    with within(30, "Airflow API", api_url), httpx.Client(base_url=api_url.rstrip("/"), timeout=30) as client:
        token = client.post("/auth/token", json={"username": user, "password": password})
        if token.status_code >= 400:
            raise DecisionRefused(token.status_code, f"Airflow refused the login of {user!r}: {_detail(token)}")
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        answer = client.request(method, path, json=body, headers=headers)
    if answer.status_code >= 400:
        raise DecisionRefused(answer.status_code, _detail(answer))
    return answer.json()


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return detail if isinstance(detail, str) else json.dumps(detail)
