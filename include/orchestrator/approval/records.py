"""The gate's :class:`~include.orchestrator.approval.rules.Decision` record, one factory per way a
decision arrives, Airflow-free. The callers check the decision (who, the reason, the edits) first;
these only write down what was decided.

Per path (``state`` is the gate's published :class:`GateState`; "draft" is ``state.draft``; the
mark path may have no state: then draft_version is "", triggered_by None and nothing is pinned):

============ ============= ========== =================================== ====================== ==================
factory      means         by_id      copy_version                        edited_fields / _copy  pinned (approvals)
============ ============= ========== =================================== ====================== ==================
from_form    airflow-ui    user id    hash of the copy (the draft on a    the edit, if any       the copy approved
                                      rejection: edits are not applied)
from_api     rest/cli/...  user id    same as from_form                   the edit, if any       the copy approved
from_github  github-review github:who state.draft_version; "" rejected    none                   the draft
from_mark    mark-success, ""         state.draft_version; "" rejected    none                   the draft
             mark-failed,                 (or without a state)
             run-cancelled
on_timeout   timeout       ""         ""                                  none                   (a rejection)
============ ============= ========== =================================== ====================== ==================

Every path: draft_version and triggered_by from ``state``; a rejection pins nothing. ``at`` is the
form's ``responded_at``, else now. The form's reason is cut at 2000 characters (the API's request
already caps it); the mark's reason is the task note, else "<the approval task|the run> was marked
<success|failed> in Airflow"; the timeout's names the wait and the deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from include.orchestrator.approval import rules
from include.orchestrator.approval.rules import Decision, GateState, GithubVerdict, Means
from include.orchestrator.domain.model import at_utc, in_words
from include.orchestrator.domain.ports import Copy


def from_form(
    state: GateState,
    *,
    approve: bool,
    user_id: str,
    user_name: str,
    reason: str,
    copy: Copy,
    edited: list[str],
    at: datetime,
) -> Decision:
    """An answer in the Required Actions form: as :func:`from_api`, its reason cut at 2000 characters
    (the API's request caps it already)."""
    return from_api(
        state,
        approve=approve,
        user_id=user_id,
        user_name=user_name,
        reason=reason[:2000],
        copy=copy,
        edited=edited,
        means="airflow-ui",
        at=at,
    )


def from_api(
    state: GateState,
    *,
    approve: bool,
    user_id: str,
    user_name: str,
    reason: str,
    copy: Copy,
    edited: list[str],
    means: Means,
    at: datetime | None = None,
) -> Decision:
    """A decision through the campaign decision API (REST, the CLI, in-process). ``copy`` is the copy
    approved (the draft with the reviewer's edits applied) or, on a rejection, the draft; ``edited``
    the fields that changed."""
    return _build(
        state,
        approve,
        by=user_name,
        by_id=user_id,
        means=means,
        at=at,
        reason=reason,
        copy=copy,
        copy_version=rules.copy_version(copy),
        edited=edited,
    )


def from_github(state: GateState, verdict: GithubVerdict, at: datetime | None = None) -> Decision:
    """What the review pull request says: an approval of the draft as shown, never edited."""
    return _as_drafted(
        state,
        verdict.decision == "approved",
        by=verdict.login,
        by_id=f"github:{verdict.login}",
        means="github-review",
        at=at,
        reason=verdict.reason,
    )


def from_mark(
    state: GateState | None, *, approved: bool, by: str, whole_run: bool, note: str, at: datetime | None = None
) -> Decision:
    """The gate (or, ``whole_run``, the run) marked success or failed in Airflow by ``by``; ``note``
    is the task's note, the reason when there is one."""
    what = "the run" if whole_run else "the approval task"
    means: Means = "run-cancelled" if whole_run and not approved else "mark-success" if approved else "mark-failed"
    return _as_drafted(
        state,
        approved,
        by=by,
        means=means,
        at=at,
        reason=note or f"{what} was marked {'success' if approved else 'failed'} in Airflow",
    )


def on_timeout(state: GateState, timeout: timedelta, at: datetime | None = None) -> Decision:
    """No decision within the campaign's ``timeout``: silence rejects."""
    return _build(
        state,
        False,
        by="timeout",
        means="timeout",
        at=at,
        reason=f"no decision within {in_words(timeout)} (deadline {at_utc(state.deadline)})",
    )


def _as_drafted(
    state: GateState | None, approve: bool, *, by: str, means: Means, at: datetime | None, reason: str, by_id: str = ""
) -> Decision:
    """A decision on the draft as the reviewers were shown it: an approval pins it and carries its
    version; a rejection (or a decision without a gate state) names no copy."""
    shown = state if approve else None  # the state whose draft an approval lets go out
    return _build(
        state,
        approve,
        by=by,
        by_id=by_id,
        means=means,
        at=at,
        reason=reason,
        copy=Copy.model_validate(shown.draft) if shown else None,
        copy_version=shown.draft_version if shown else "",
    )


def _build(
    state: GateState | None,
    approve: bool,
    *,
    by: str,
    means: Means,
    at: datetime | None,
    reason: str,
    by_id: str = "",
    copy: Copy | None = None,
    copy_version: str = "",
    edited: Sequence[str] = (),
) -> Decision:
    """The one builder: ``copy`` is what an approval lets go out (pinned), None when none is named."""
    return Decision(
        decision="approved" if approve else "rejected",
        by=by,
        by_id=by_id,
        means=means,
        at=rules.now() if at is None else at,
        reason=reason,
        draft_version=state.draft_version if state is not None else "",
        copy_version=copy_version,
        edited_fields=list(edited),
        edited_copy=copy.model_dump() if edited and copy is not None else None,
        triggered_by=state.triggered_by if state is not None else None,
        pinned=state.pin(copy) if approve and state is not None and copy is not None else {},
    )
