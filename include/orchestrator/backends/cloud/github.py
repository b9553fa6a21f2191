"""Review and blog ports on GitHub (or GitHub Enterprise Server): a pull request per review bundle, a commit per post.

``GithubReview`` commits a review bundle (the drafts' markdown and the rendered PNGs) on a branch
``campaign-review/<key>`` and opens a pull request for it; reviewers approve or request changes with
pull request reviews, which ``poll_reviews`` reads with conditional requests. ``GithubBlog`` commits a
post and its hero image in one commit on the blog branch. Both follow GitHub's REST API (version 2022-11-28):
https://docs.github.com/en/rest/git/refs, /git/blobs, /git/trees, /git/commits, /repos/contents,
/pulls/pulls, /pulls/reviews, /repos/repos, and for errors, rate limits and ETags
https://docs.github.com/en/rest/using-the-rest-api (troubleshooting, rate-limits-for-the-rest-api,
best-practices-for-using-the-rest-api: conditional requests).

The connection (type ``github``) is the GitHub provider's: ``password`` is the token, ``host`` the
API base URL (empty for github.com, ``https://ghe.example.com/api/v3`` for an Enterprise server or a
test double); the extra holds ``repository`` ("owner/name", required), ``base_branch`` (default: the
repository's default branch), ``branch`` (blog only; default: the base branch) and ``timeout``
(default 30 s: each request's total deadline, connect, headers and body; :mod:`include.orchestrator.resilience.deadlines`).

Calls go through ``GithubHook``'s PyGithub client, built at call time. That client, as the hook makes
it, retries by itself (``GithubRetry``, 10 tries: 403 rate limits after sleeping until
``x-ratelimit-reset``, for ``Retry-After`` or 60 s; 5xx at once, POST included, so a create could be
sent twice) and throttles (0.25 s between requests, 1 s between writes). A task must not sleep there:
Airflow retries it with the campaign's backoff, and each try starts by looking up what exists. So the
client is rebuilt from the hook's own settings (auth, base URL) with ``retry=None`` (urllib3 makes one
try), no throttling and our timeout, and every answer is mapped here onto ``ServiceError``: 4xx fail
at once with GitHub's message; 429, 5xx, rate limits (primary: 403/429 with ``x-ratelimit-remaining:
0``, wait until ``x-ratelimit-reset``; secondary: ``Retry-After`` or at least a minute), timeouts and
connection errors are retryable. Request shapes are written here, sent with the client's requester
(so its auth, base-URL prefix and User-Agent apply), not through PyGithub's object layer, which
would add GETs to complete lazy objects; the requester also sends the polls' ``If-None-Match`` and
hands back a 304 as it is, so polling needs no second HTTP client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Container
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.git_names import safe_name, safe_path
from include.orchestrator.backends.common.http_api import retry_after_seconds
from include.orchestrator.domain.blog_format import described
from include.orchestrator.domain.ports import BlogPost, Effect, ReviewBundle, checked_bytes
from include.orchestrator.errors import (
    ConnectionConfigError,
    DeadlineExceeded,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
)
from include.orchestrator.resilience.deadlines import within

log = logging.getLogger(__name__)

SERVICE = "github"
API_VERSION = "2022-11-28"  # X-GitHub-Api-Version: https://docs.github.com/en/rest/about-the-rest-api/api-versions
ACCEPT = "application/vnd.github+json"
REVIEW_PREFIX = "campaign-review/"
SECONDARY_LIMIT_WAIT = 60.0  # the docs: without retry-after or reset, wait at least one minute
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
# git check-ref-format, simplified: no "..", "//", "@{", no leading "/", no trailing "/", "." or ".lock"
_BRANCH_NAME = re.compile(r"^(?!/)(?!.*(?:\.\.|//|@\{|\.lock$|/$|\.$))[A-Za-z0-9._/-]{1,200}$")


def blob_sha(data: bytes) -> str:
    """The git blob id of ``data``, as GitHub reports it (``sha`` of a file): no I/O."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _message(data: Any) -> str:
    """GitHub's own words from an error body: ``message`` plus the ``errors`` details of a 422."""
    if not isinstance(data, dict):
        return str(data)[:300] if data else ""
    text = str(data.get("message") or "")
    details = []
    for item in data.get("errors") or []:
        if isinstance(item, dict):
            item = item.get("message") or f"{item.get('field', '')} {item.get('code', '')}".strip()
        details.append(str(item))
    return (f"{text} ({'; '.join(d for d in details if d)})" if details else text)[:500]


def service_error(action: str, exc: BaseException, conn_id: str = "") -> ServiceError:
    """A PyGithub or requests exception as a ``ServiceError`` with the brief's retry rules."""
    import requests
    from github import BadCredentialsException, GithubException, RateLimitExceededException, UnknownObjectException

    if isinstance(exc, DeadlineExceeded):
        return RetryableServiceError(SERVICE, action, exc.reason)
    if isinstance(exc, requests.Timeout):
        return RetryableServiceError(SERVICE, action, f"no answer in time ({type(exc).__name__})")
    if isinstance(exc, requests.ConnectionError):
        return RetryableServiceError(SERVICE, action, f"connection failed ({type(exc).__name__})")
    if not isinstance(exc, GithubException):
        return PermanentServiceError(SERVICE, action, f"{type(exc).__name__}: {exc}"[:300])
    status, data = exc.status, exc.data
    headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
    text = _message(data) or f"HTTP {status}"
    if isinstance(exc, BadCredentialsException):
        text += f" (check the token in the password of connection {conn_id!r})"
    elif isinstance(exc, UnknownObjectException):
        text += " (or the token cannot see the repository: GitHub answers 404 for private ones)"
    retry_after: float | None = None
    if status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":  # primary rate limit
        reset = headers.get("x-ratelimit-reset", "")
        retry_after = max(0.0, float(reset) - time.time()) if reset.isdigit() else SECONDARY_LIMIT_WAIT
        retryable = True
    elif status in (403, 429) and "retry-after" in headers:  # secondary rate limit
        retryable, retry_after = True, retry_after_seconds(headers["retry-after"])
    elif status == 403 and isinstance(exc, RateLimitExceededException):  # secondary, without a header
        retryable, retry_after = True, SECONDARY_LIMIT_WAIT
    else:
        retryable = status == 429 or status >= 500
        retry_after = retry_after_seconds(headers.get("retry-after")) if retryable else None
    return ServiceError.of(SERVICE, action, f"HTTP {status}: {text}", status=status, retryable=retryable, retry_after=retry_after)


class GithubApi:
    """One connection's repository, through ``GithubHook``'s client without its retries and sleeps."""

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id, self.conn = conn_id, conn
        extra = dict(conn.extra_dejson or {})
        if not conn.password and not extra.get("app_id"):
            raise ConnectionConfigError(f"connection {conn_id!r} (github) needs its token in the password field")
        if conn.host and not re.match(r"^https?://", conn.host):
            raise ConnectionConfigError(
                f"connection {conn_id!r} (github): host {conn.host!r} must be the API base URL, "
                "e.g. https://ghe.example.com/api/v3"
            )
        self.repository = str(extra.get("repository") or "")
        if not _REPOSITORY.match(self.repository):
            raise ConnectionConfigError(f"connection {conn_id!r} (github) needs the extra 'repository' as 'owner/name'")
        self.owner = self.repository.split("/")[0]
        self.base_branch_setting = self._branch_setting(extra, "base_branch")
        self.branch_setting = self._branch_setting(extra, "branch")
        try:
            self.timeout = max(1, int(float(extra.get("timeout", 30))))  # PyGithub wants whole seconds
        except (TypeError, ValueError):
            raise ConnectionConfigError(f"connection {conn_id!r} (github): extra 'timeout' must be a number of seconds") from None
        self._client: Any = None
        self._default_branch: str | None = None
        self.last_headers: dict[str, str] = {}

    def _branch_setting(self, extra: dict[str, Any], name: str) -> str | None:
        value = extra.get(name)
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not _BRANCH_NAME.match(value):
            raise ConnectionConfigError(f"connection {self.conn_id!r} (github): extra {name!r} is not a branch name: {value!r}")
        return value

    def client(self) -> Any:
        if self._client is None:
            from airflow.providers.github.hooks.github import GithubHook
            from github import Github

            conn = self.conn

            class _Hook(GithubHook):
                def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                    return conn  # the connection we were given (tests, compensation), not a new lookup

            hooked = _Hook(github_conn_id=self.conn_id).get_conn()  # no I/O: PyGithub connects on the first request
            settings = hooked.requester.kwargs  # auth (token or GitHub App) and base URL, as the hook chose them
            hooked.close()
            self._client = Github(
                **{
                    **settings,
                    "retry": None,
                    "seconds_between_requests": None,
                    "seconds_between_writes": None,
                    "timeout": self.timeout,
                    "api_version": API_VERSION,
                }
            )
        return self._client

    def repo_path(self, suffix: str = "") -> str:
        return f"/repos/{self.repository}{suffix}"

    def request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ok: Container[int] = (200, 201, 204),
        absent: Container[int] = (),
    ) -> tuple[int, Any]:
        """One request; ``(status, decoded body)`` when the status is in ``ok`` or ``absent`` (404/422 that
        mean "not there"), a ``ServiceError`` otherwise."""
        import requests
        from github import GithubException
        from github.Requester import Requester

        send = {"Accept": ACCEPT, **(headers or {})}  # a fresh dict: the requester adds the token to it
        try:
            with within(self.timeout, SERVICE, str(self.conn.host or "https://api.github.com")):
                status, answer_headers, output = self.client().requester.requestJson(method, path, params, send, body)
        except (requests.RequestException, GithubException, DeadlineExceeded) as exc:
            raise service_error(action, exc, self.conn_id) from None
        self.last_headers = {str(k).lower(): str(v) for k, v in answer_headers.items()}
        try:
            data = json.loads(output) if output else None
        except ValueError:
            data = {"message": output[:300]}
        if status in ok or status in absent:
            return status, data
        if status >= 400:
            # PyGithub reads output=None (an empty body) as no message; its annotation says dict only.
            raise service_error(action, Requester.createException(status, self.last_headers, data), self.conn_id)  # type: ignore[arg-type]
        raise PermanentServiceError(SERVICE, action, f"unexpected HTTP {status}: {_message(data)}", status=status)

    def default_branch(self, action: str) -> str:
        if self._default_branch is None:
            _, repo = self.request("GET", self.repo_path(), action)
            self._default_branch = str(repo["default_branch"])
        return self._default_branch

    def base_branch(self, action: str) -> str:
        return self.base_branch_setting or self.default_branch(action)

    def blog_branch(self, action: str) -> str:
        return self.branch_setting or self.base_branch(action)

    @staticmethod
    def ref(branch: str) -> str:
        return quote(f"heads/{branch}", safe="/")

    def branch_head(self, branch: str, action: str) -> str | None:
        """The commit ``branch`` points at, None if there is no such branch (``GET /git/ref/heads/{b}``)."""
        status, data = self.request("GET", self.repo_path(f"/git/ref/{self.ref(branch)}"), action, ok=(200,), absent=(404,))
        return None if status == 404 else str(data["object"]["sha"])

    def file(self, path: str, branch: str, action: str) -> dict[str, Any] | None:
        """``GET /contents/{path}?ref=``: the file's JSON, None if absent; a directory there is an error."""
        status, data = self.request(
            "GET", self.repo_path(f"/contents/{quote(path)}"), action, params={"ref": branch}, ok=(200,), absent=(404,)
        )
        if status == 404:
            return None
        if not isinstance(data, dict) or data.get("type") != "file":
            what = "directory" if isinstance(data, list) else "non-file"
            raise PermanentServiceError(SERVICE, action, f"{path} on {branch} is a {what}, not a file")
        return data

    def blobs(self, files: dict[str, bytes], action: str) -> list[dict[str, Any]]:
        """Each file stored as a blob (``POST /git/blobs``), checked against its git id, as a tree entry."""
        entries = []
        for path, data in files.items():
            _, blob = self.request(
                "POST",
                self.repo_path("/git/blobs"),
                action,
                ok=(201,),
                body={"content": base64.b64encode(data).decode(), "encoding": "base64"},
            )
            if blob["sha"] != blob_sha(data):
                raise PermanentServiceError(
                    SERVICE, action, f"GitHub stored {path} as blob {blob['sha']}, expected {blob_sha(data)}"
                )
            entries.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
        return entries

    def commit(self, parent: str, base_tree: str, entries: list[dict[str, Any]], message: str, action: str) -> dict[str, Any]:
        """A commit of ``entries`` on ``base_tree`` whose parent is ``parent`` (``POST /git/trees``, then
        ``POST /git/commits``); no branch points at it yet. GitHub's commit JSON."""
        _, tree = self.request(
            "POST", self.repo_path("/git/trees"), action, ok=(201,), body={"base_tree": base_tree, "tree": entries}
        )
        _, made = self.request(
            "POST",
            self.repo_path("/git/commits"),
            action,
            ok=(201,),
            body={"message": message, "tree": tree["sha"], "parents": [parent]},
        )
        return made

    def fast_forward(self, branch: str, sha: str, action: str) -> tuple[int, Any]:
        """``branch`` moved to ``sha`` if that is a fast forward (``PATCH /git/refs/heads/{b}``, ``force: false``):
        (200, the ref) or (422, GitHub's refusal)."""
        return self.request(
            "PATCH",
            self.repo_path(f"/git/refs/{self.ref(branch)}"),
            action,
            body={"sha": sha, "force": False},
            ok=(200,),
            absent=(422,),
        )

    def pulls_for(self, branch: str, state: str, action: str) -> list[dict[str, Any]]:
        """Pull requests whose head is ``owner:branch`` (``GET /pulls?head=&state=``)."""
        _, data = self.request(
            "GET",
            self.repo_path("/pulls"),
            action,
            params={"head": f"{self.owner}:{branch}", "state": state, "per_page": 100},
            ok=(200,),
        )
        return [p for p in data or [] if p.get("head", {}).get("ref") == branch]


def _repository_of(ref: dict[str, Any], api: GithubApi) -> None:
    if ref.get("repository") and ref["repository"] != api.repository:
        raise ConnectionConfigError(
            f"the effect names repository {ref['repository']!r} but connection {api.conn_id!r} points at {api.repository!r}"
        )


class PullReview(BaseModel):
    user: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED, PENDING
    submitted_at: str | None
    body: str


class ReviewPoll(BaseModel):
    """One poll of a review pull request. ``not_modified``: nothing changed since ``etag`` was handed
    out; then ``reviews`` is empty (keep what the previous answer said) and ``pull_state`` is the last
    known one. ``etag`` is opaque: pass it back on the next poll."""

    not_modified: bool
    etag: str | None
    pull_state: Literal["open", "closed", "merged"]
    reviews: list[PullReview]
    rate_remaining: int | None


class GithubReview(MakesEffects):
    """Review port: the bundle committed on ``campaign-review/<key>`` and a pull request to the base branch.

    The bundle is one commit made with the git data API (blobs, a tree on the branch's tree, a commit,
    then the ref): reviewers see one commit, the branch appears or moves atomically with every file
    (the contents API would make one commit per file and leave a half-written bundle if a try dies
    between them), and a retry finds out whether anything changed from one tree listing, comparing
    git blob ids computed locally, instead of one GET per file. The branch is created last, pointing at
    that commit, whose parent is the base branch's head: branched from the base, in one step.
    """

    port, backend, kind = "review", "github", "github_pull_request"
    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id, self.api = conn_id, GithubApi(conn_id, conn)

    def _files(self, bundle: ReviewBundle) -> dict[str, bytes]:
        folder = f"review/{safe_name(bundle.key, 'review key')}"
        files = {f"{folder}/README.md": bundle.markdown.encode()}
        for image in bundle.images:
            path = f"{folder}/images/{safe_name(image.channel, 'image channel')}.png"
            data = checked_bytes(image)
            if path in files:
                raise ValueError(f"review {bundle.key!r} has two images for channel {image.channel!r}")
            files[path] = data
        return files

    def plan(self, bundle: ReviewBundle) -> Effect:
        branch = REVIEW_PREFIX + safe_name(bundle.key, "review key")
        return self._effect(
            bundle.key,
            {"repository": self.api.repository, "branch": branch},
            f"review pull request from {branch} in {self.api.repository}",
        )

    def open_review(self, bundle: ReviewBundle) -> Effect:
        effect = self.plan(bundle)
        branch, files = effect.ref["branch"], self._files(bundle)
        action = f"open review {branch} in {self.api.repository}"
        base = self.api.base_branch(action)
        commit = self._commit(branch, base, files, f"{bundle.title}\n\nReview bundle {bundle.key}", action)
        pull = self._pull(branch, base, bundle, action)
        ref = {**effect.ref, "base": base, "commit": commit, "number": pull["number"], "url": pull["html_url"]}
        return effect.model_copy(update={"ref": ref, "summary": f"review pull request #{pull['number']} ({pull['html_url']})"})

    def _commit(self, branch: str, base: str, files: dict[str, bytes], message: str, action: str) -> str:
        api, conflict = self.api, None
        for _ in range(2):  # a second round only if a concurrent try moved or created the branch meanwhile
            head = api.branch_head(branch, action)
            parent = head or api.branch_head(base, action)
            if parent is None:
                raise PermanentServiceError(SERVICE, action, f"the base branch {base!r} does not exist in {api.repository}")
            _, commit = api.request("GET", api.repo_path(f"/git/commits/{parent}"), action, ok=(200,))
            tree = commit["tree"]["sha"]
            changed = files
            if head:
                _, listing = api.request("GET", api.repo_path(f"/git/trees/{tree}"), action, params={"recursive": 1}, ok=(200,))
                have = {e["path"]: e["sha"] for e in listing.get("tree", []) if e.get("type") == "blob"}
                changed = {p: d for p, d in files.items() if have.get(p) != blob_sha(d)}
                if not changed and not listing.get("truncated"):
                    return head  # a retry: the branch already holds this bundle, adopt it
            made = api.commit(parent, tree, api.blobs(changed, action), message, action)
            if head:
                status, data = api.fast_forward(branch, made["sha"], action)
            else:
                status, data = api.request(
                    "POST",
                    api.repo_path("/git/refs"),
                    action,
                    body={"ref": f"refs/heads/{branch}", "sha": made["sha"]},
                    ok=(201,),
                    absent=(422,),
                )
            if status != 422:
                return str(made["sha"])
            conflict = _message(data)
            if not any(text in conflict for text in ("Reference already exists", "not a fast forward")):
                raise service_error(action, _github_exception(422, api.last_headers, data), self.conn_id)
            log.warning("%s: the branch changed under us (%s); reading it again", action, conflict)
        raise RetryableServiceError(SERVICE, action, f"branch {branch} kept changing while committing: {conflict}", status=422)

    def _pull(self, branch: str, base: str, bundle: ReviewBundle, action: str) -> dict[str, Any]:
        api = self.api
        for _ in range(2):
            # Adopt an open pull request of this head, or a merged one (the review already ended); one an
            # earlier undo closed is left closed and a new one is opened.
            existing = [p for p in api.pulls_for(branch, "all", action) if p.get("state") == "open" or p.get("merged_at")]
            if existing:
                return sorted(existing, key=lambda p: (p.get("state") != "open", -int(p["number"])))[0]
            images = ", ".join(f"`{i.channel}`" for i in bundle.images) or "none"
            body = (
                f"Review bundle `{bundle.key}` of campaign `{bundle.campaign_slug}`.\n\n"
                f"- Copy: `review/{bundle.key}/README.md`\n- Images: `review/{bundle.key}/images/` ({images})\n\n"
                "Approve, or request changes, with a pull request review: the campaign's approval gate reads the reviews."
            )
            status, data = api.request(
                "POST",
                api.repo_path("/pulls"),
                action,
                ok=(201,),
                absent=(422,),
                body={"title": bundle.title, "head": branch, "base": base, "body": body},
            )
            if status == 201:
                return data
            if "already exists" not in _message(data):
                raise service_error(action, _github_exception(422, api.last_headers, data), self.conn_id)
        raise RetryableServiceError(SERVICE, action, f"a pull request for {branch} exists but could not be found", status=422)

    def undo(self, effect: Effect) -> bool:
        api, branch = self.api, str(effect.ref["branch"])
        _repository_of(effect.ref, api)
        if not branch.startswith(REVIEW_PREFIX):
            raise ValueError(f"{branch!r} is not a review branch: refusing to delete it")
        safe_name(branch.removeprefix(REVIEW_PREFIX), "review branch")
        action = f"undo review {branch} in {api.repository}"
        removed = False
        for pull in api.pulls_for(branch, "open", action):
            api.request("PATCH", api.repo_path(f"/pulls/{pull['number']}"), action, body={"state": "closed"}, ok=(200,))
            removed = True
        status, _ = api.request("DELETE", api.repo_path(f"/git/refs/{api.ref(branch)}"), action, ok=(204,), absent=(404, 422))
        return removed or status == 204  # 422 "Reference does not exist": already gone

    def poll_reviews(self, ref: dict[str, Any], etag: str | None) -> ReviewPoll:
        """The pull request's state and reviews, with conditional requests: two ``GET``s (the pull request,
        its reviews) each with ``If-None-Match``; 304 answers do not count against the primary rate limit.
        No single endpoint gives both, and both can change on their own (a merge, a review)."""
        api = self.api
        _repository_of(ref, api)
        action = f"poll reviews of {ref.get('branch') or ref.get('number')} in {api.repository}"
        number = ref.get("number")
        if not number:  # only the plan was recorded: find the pull request by its head
            found = api.pulls_for(str(ref["branch"]), "all", action)
            if not found:
                raise PermanentServiceError(SERVICE, action, f"no pull request from {ref['branch']} in {api.repository}")
            number = max(int(p["number"]) for p in found)
        known = _parse_token(etag)
        pull_path, reviews_path = api.repo_path(f"/pulls/{int(number)}"), api.repo_path(f"/pulls/{int(number)}/reviews")

        def get(path: str, tag: str | None, params: dict[str, Any] | None = None) -> tuple[int, Any, str | None]:
            status, data = api.request(
                "GET", path, action, params=params, headers={"If-None-Match": tag} if tag else None, ok=(200, 304)
            )
            return status, data, api.last_headers.get("etag") or (tag if status == 304 else None)

        pull_status, pull, pull_tag = get(pull_path, known and known[1])
        reviews_status, page, reviews_tag = get(reviews_path, known and known[2], {"per_page": 100})
        state = known[0] if known and pull_status == 304 else _pull_state(pull)
        if pull_status == 304 and reviews_status == 304:
            return ReviewPoll(
                not_modified=True,
                etag=_token(state, pull_tag, reviews_tag),
                pull_state=state,
                reviews=[],
                rate_remaining=_remaining(api),
            )
        if reviews_status == 304:  # the pull request changed, its reviews did not: they are needed in full
            reviews_status, page, reviews_tag = get(reviews_path, None, {"per_page": 100})
        reviews, number_of_page = list(page or []), 1
        while 'rel="next"' in api.last_headers.get("link", ""):
            # A later page can change while the first stays the same: no conditional token for several pages.
            number_of_page += 1
            reviews_tag = None
            _, more = api.request("GET", reviews_path, action, params={"per_page": 100, "page": number_of_page}, ok=(200,))
            reviews += more or []
        return ReviewPoll(
            not_modified=False,
            etag=_token(state, pull_tag, reviews_tag),
            pull_state=state,
            reviews=[_review(r) for r in reviews],
            rate_remaining=_remaining(api),
        )


def _github_exception(status: int, headers: dict[str, str], data: Any) -> Any:
    from github.Requester import Requester

    return Requester.createException(status, headers, data)


def _pull_state(pull: dict[str, Any]) -> Literal["open", "closed", "merged"]:
    if pull.get("merged") or pull.get("merged_at"):
        return "merged"
    return "open" if pull.get("state") == "open" else "closed"


def _review(item: dict[str, Any]) -> PullReview:
    user = (item.get("user") or {}).get("login") or "ghost"  # a deleted account has no user
    return PullReview(
        user=user, state=str(item.get("state", "")), submitted_at=item.get("submitted_at"), body=item.get("body") or ""
    )


def _remaining(api: GithubApi) -> int | None:
    value = api.last_headers.get("x-ratelimit-remaining", "")
    return int(value) if value.isdigit() else None


# The poll token: ETags never contain spaces (RFC 9110 etagc), so space-separated parts stay apart.
def _token(state: str, pull_tag: str | None, reviews_tag: str | None) -> str:
    return f"gh1 {state} {pull_tag or '-'} {reviews_tag or '-'}"


def _parse_token(token: str | None) -> tuple[Literal["open", "closed", "merged"], str | None, str | None] | None:
    parts = (token or "").split(" ")
    if len(parts) != 4 or parts[0] != "gh1" or parts[1] not in ("open", "closed", "merged"):
        return None
    return parts[1], None if parts[2] == "-" else parts[2], None if parts[3] == "-" else parts[3]  # type: ignore[return-value]


class GithubBlog(MakesEffects):
    """Blog port: each post and its hero image committed together on the blog branch with the git data API.

    One commit (blobs, a tree on the branch head's tree, a commit, then the ref moved with ``force: false``)
    puts both files on the branch at once: readers never get a post whose image is missing, and a try that
    dies before the ref moves has changed nothing visible. A file is ours when its git blob id is the one
    our content has (computed locally, so the plan knows it without I/O): a retry adopts what is there,
    undo deletes only that. A file at one of our paths with other content is someone else's: publishing
    refuses to overwrite it; undo leaves it, and leaves the image too when another post took the post's
    path (that post shows it). The branch head is read once per round and the files at that very commit,
    so a ref update that is not a fast forward means someone committed meanwhile: read again, once.
    """

    port, backend, kind = "blog", "github", "github_file"
    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id, self.api = conn_id, GithubApi(conn_id, conn)

    def plan(self, post: BlogPost) -> Effect:
        path, key = safe_path(post.path), safe_name(post.key, "post key")
        files = post.files()  # the hero's bytes, checked against its rendered sha256: no I/O
        branch = self.api.branch_setting or self.api.base_branch_setting  # None: the default branch, resolved at call time
        ref = {"repository": self.api.repository, "branch": branch, "path": path, "blob_sha": blob_sha(files[path])}
        if post.hero is not None:
            ref |= {"image": safe_path(post.hero_path), "image_blob_sha": blob_sha(files[post.hero_path])}
        return self._effect(key, ref, f"{described(ref)} in {self.api.repository}")

    @staticmethod
    def _ours(ref: dict[str, Any]) -> dict[str, str]:
        """Path -> our blob id; an entry from before hero images names the post alone."""
        ours = {safe_path(str(ref["path"])): str(ref["blob_sha"])}
        if ref.get("image"):
            ours[safe_path(str(ref["image"]))] = str(ref["image_blob_sha"])
        return ours

    def _head(self, branch: str, action: str) -> str:
        head = self.api.branch_head(branch, action)
        if head is None:
            raise PermanentServiceError(
                SERVICE, action, f"HTTP 404: the blog branch {branch!r} does not exist in {self.api.repository}", status=404
            )
        return head

    def _at(self, paths: list[str], head: str, action: str) -> dict[str, dict[str, Any] | None]:
        """Each path's contents JSON at commit ``head`` (``GET /contents/{path}?ref=<sha>``), None if absent."""
        return {path: self.api.file(path, head, action) for path in paths}

    def _commit(
        self, branch: str, head: str, add: dict[str, bytes], remove: list[str], message: str, action: str
    ) -> dict[str, Any] | None:
        """One commit on ``head`` adding and removing files, and the branch moved to it; None when the
        branch moved since ``head`` was read (GitHub: "Update is not a fast forward")."""
        api = self.api
        _, parent = api.request("GET", api.repo_path(f"/git/commits/{head}"), action, ok=(200,))
        entries = api.blobs(add, action)
        # "sha": null deletes the path from the base tree (https://docs.github.com/en/rest/git/trees#create-a-tree).
        entries += [{"path": path, "mode": "100644", "type": "blob", "sha": None} for path in remove]
        made = api.commit(head, parent["tree"]["sha"], entries, message, action)
        status, data = api.fast_forward(branch, made["sha"], action)
        if status == 200:
            return made
        if "not a fast forward" not in _message(data):
            raise service_error(action, _github_exception(422, api.last_headers, data), self.conn_id)
        log.warning("%s: %s moved meanwhile (%s); reading it again", action, branch, _message(data))
        return None

    def publish(self, post: BlogPost) -> Effect:
        effect, files, api = self.plan(post), post.files(), self.api
        path, ours = effect.ref["path"], self._ours(effect.ref)
        action = f"publish {path} in {api.repository}"
        branch = effect.ref["branch"] or api.blog_branch(action)
        message = f"Publish {path} ({effect.key})\n\n{post.title}" + (f"\n\nHero image: {post.hero_path}" if post.hero else "")
        for _ in range(2):
            head = self._head(branch, action)
            now = self._at(list(ours), head, action)
            for p, found in now.items():
                if found is not None and found["sha"] != ours[p]:
                    raise PermanentServiceError(
                        SERVICE,
                        action,
                        f"{p} on {branch} already exists with other content "
                        f"(blob {found['sha']}, ours {ours[p]}): not ours to overwrite",
                    )
            missing = {p: files[p] for p in ours if now[p] is None}
            if not missing:  # published by an earlier try: adopt it
                commit, url = None, (now[path] or {}).get("html_url")
                break
            made = self._commit(branch, head, missing, [], message, action)
            if made is not None:
                # The post at that commit: GitHub's commit page with /blob/ for /commit/ (no request needed).
                commit, url = str(made["sha"]), str(made["html_url"]).rsplit("/commit/", 1)[0] + f"/blob/{made['sha']}/{path}"
                break
        else:
            raise RetryableServiceError(SERVICE, action, f"branch {branch} kept moving while publishing", status=422)
        ref = {**effect.ref, "branch": branch, "commit": commit, "url": url}
        return effect.model_copy(update={"ref": ref, "summary": f"{described(ref)} on {api.repository}:{branch} ({url})"})

    def undo(self, effect: Effect) -> bool:
        api, ours = self.api, self._ours(effect.ref)
        _repository_of(effect.ref, api)
        path, image = safe_path(str(effect.ref["path"])), effect.ref.get("image")
        action = f"unpublish {path} in {api.repository}"
        branch = effect.ref.get("branch") or api.blog_branch(action)
        for _ in range(2):
            head = api.branch_head(branch, action)
            if head is None:
                log.info("%s: branch %s is gone, and %s with it", action, branch, path)
                return False
            now = {p: (found or {}).get("sha") for p, found in self._at(list(ours), head, action).items()}
            post_ours = now[path] == ours[path]
            remove = [path] if post_ours else []
            if image and now[image] == ours[image] and (post_ours or now[path] is None):
                remove.append(image)  # not when another post took the path: that post shows this image
            for p in ours:
                if now[p] is not None and p not in remove:
                    log.warning(
                        "%s: %s on %s holds other content now, or belongs to another post (blob %s, ours %s): left alone",
                        action,
                        p,
                        branch,
                        now[p],
                        ours[p],
                    )
            if not remove:
                log.info("%s: nothing of %s is on %s (never published, already removed or not ours)", action, effect.key, branch)
                return False
            if self._commit(branch, head, {}, remove, f"Unpublish {path} ({effect.key})", action) is not None:
                return True
        raise RetryableServiceError(SERVICE, action, f"branch {branch} kept moving while unpublishing", status=422)
