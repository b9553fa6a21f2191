"""A stateful GitHub REST API double: one repository with branches, git objects, files, pull requests, reviews.

Follows https://docs.github.com/en/rest (API version 2022-11-28): git refs (``/git/ref/{ref}``,
``/git/refs``, ``/git/refs/{ref}``), blobs, trees, commits (https://docs.github.com/en/rest/git),
repository contents (https://docs.github.com/en/rest/repos/contents), pulls and pull request reviews
(https://docs.github.com/en/rest/pulls), ``GET /repos/{owner}/{repo}``; errors, rate limits and
conditional requests as in https://docs.github.com/en/rest/using-the-rest-api (troubleshooting,
rate-limits-for-the-rest-api, best-practices: ``If-None-Match`` -> 304, which does not count against
the primary rate limit). Error texts ("Reference already exists", "Reference does not exist", "A pull
request already exists for owner:branch.", "Update is not a fast forward") are the ones GitHub sends.

Served under ``prefix`` (default ``/api/v3``, a GitHub Enterprise base), so ``url`` is the API base URL
to put in a connection's host. Every request must carry ``Authorization: Bearer|token <token>`` (a
wrong token gets GitHub's 401 ``Bad credentials``; a missing or malformed header is a problem), a
``User-Agent`` (GitHub refuses requests without one), ``Accept: application/vnd.github+json`` (the
docs' recommended media type; application/json also passes) and, if sent, a known
``X-GitHub-Api-Version``; bodies must be JSON with the documented fields and types. Every answer has
``x-ratelimit-limit/remaining/reset/used/resource``; ``remaining`` drops on every answer but a 304, and
at 0 the double answers 403 "API rate limit exceeded" as GitHub does. GET answers carry an ``ETag``.

Git objects are real: blob, tree and commit ids are computed as git computes them.

Inspection helpers (for tests, including end-to-end ones checking that compensation left nothing):
``branches()`` -> branch names; ``files(branch)`` -> {path: bytes}; ``commits(branch)`` -> the first-parent
history, newest first, as {sha, message, parents}; ``open_pulls()`` / ``pulls()`` -> pull request JSON;
``reviews(number)``; ``rate_remaining``. Test helpers: ``add_review(number, user, state, body="")``
(APPROVED, CHANGES_REQUESTED, COMMENTED), ``merge_pull(number)``, ``close_pull(number)``,
``commit_file(branch, path, data | None, message)`` (someone else's commit), ``meanwhile(method, path, change)``
(someone else's change just before one of our calls), ``exhaust_rate_limit()``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_body, json_response

DOCS = "https://docs.github.com/rest"
API_VERSIONS = ("2022-11-28", "2026-03-10")
ACCEPTED_MEDIA = ("application/vnd.github+json", "application/vnd.github.v3+json", "application/json")
_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def git_blob_sha(data: bytes) -> str:
    return _sha1(b"blob %d\0" % len(data) + data)


@dataclass
class GithubDouble(ServiceDouble):
    name: str = "GitHub"
    prefix: str = "/api/v3"
    owner: str = "acme"
    repo: str = "campaigns"
    default_branch: str = "main"
    token: str = "test-token"
    rate_limit: int = 5000

    def __post_init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, dict[str, str]] = {}  # root tree sha -> {path: blob sha} (flat, like ls-tree -r)
        self.commit_objects: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, str] = {}  # branch -> commit sha
        self.pull_requests: dict[int, dict[str, Any]] = {}
        self.pull_reviews: dict[int, list[dict[str, Any]]] = {}
        self._tick = 0
        self.rate_remaining = self.rate_limit
        self.rate_reset = int(time.time()) + 3600
        super().__post_init__()
        first = self._make_commit({"README.md": git_blob_sha(self._store(b"# Campaigns\n"))}, [], "Initial commit")
        self.refs[self.default_branch] = first

    # --- addresses ---------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def url(self) -> str:  # the API base URL: a connection's host
        return self.root_url + self.prefix

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def _api(self, suffix: str) -> str:
        return f"{self.url}/repos/{self.full_name}{suffix}"

    def _html(self, suffix: str) -> str:
        return f"{self.root_url}/{self.full_name}{suffix}"

    # --- errors in GitHub's shape --------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        body = dict(body) if isinstance(body, dict) else {"message": str(body)}
        body.setdefault("documentation_url", DOCS)
        body.setdefault("status", str(status))
        return json_response(body, status, headers)

    def not_found(self, what: str = "") -> Response:
        return self.error(404, {"message": "Not Found"})

    def invalid(self, problem: str) -> Response:
        return self.error(422, {"message": "Invalid request.\n\n" + problem})

    def validation_failed(self, resource: str, code: str, field: str = "", message: str = "") -> Response:
        error = {"resource": resource, "code": code}
        error.update({k: v for k, v in (("field", field), ("message", message)) if v})
        return self.error(422, {"message": "Validation Failed", "errors": [error]})

    # --- routes ---------------------------------------------------------------------------------------
    def routes(self) -> None:
        repo = rf"{re.escape(self.prefix)}/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        self.route("GET", repo, self._get_repo)
        self.route("GET", repo + r"/git/ref/heads/(?P<branch>.+)", self._get_ref)
        self.route("POST", repo + r"/git/refs", self._create_ref)
        self.route("PATCH", repo + r"/git/refs/heads/(?P<branch>.+)", self._update_ref)
        self.route("DELETE", repo + r"/git/refs/heads/(?P<branch>.+)", self._delete_ref)
        self.route("POST", repo + r"/git/blobs", self._create_blob)
        self.route("GET", repo + r"/git/trees/(?P<sha>[0-9a-f]{40})", self._get_tree)
        self.route("POST", repo + r"/git/trees", self._create_tree)
        self.route("GET", repo + r"/git/commits/(?P<sha>[0-9a-f]{40})", self._get_commit)
        self.route("POST", repo + r"/git/commits", self._create_commit)
        self.route("GET", repo + r"/contents/(?P<path>.+)", self._get_contents)
        self.route("PUT", repo + r"/contents/(?P<path>.+)", self._put_contents)
        self.route("DELETE", repo + r"/contents/(?P<path>.+)", self._delete_contents)
        self.route("GET", repo + r"/pulls", self._list_pulls)
        self.route("POST", repo + r"/pulls", self._create_pull)
        self.route("GET", repo + r"/pulls/(?P<number>\d+)", self._get_pull)
        self.route("PATCH", repo + r"/pulls/(?P<number>\d+)", self._update_pull)
        self.route("GET", repo + r"/pulls/(?P<number>\d+)/reviews", self._list_reviews)

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            if self.rate_remaining <= 0 and time.time() < self.rate_reset:
                self.calls.append((request.method.upper(), request.path))
                return self._with_rate(
                    self.error(
                        403,
                        {
                            "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
                            "please include the request ID.",
                            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                        },
                    )
                )
        response = super()._dispatch(request)
        with self._lock:
            if response.status_code != 304:  # a 304 does not count against the primary rate limit
                self.rate_remaining = max(0, self.rate_remaining - 1)
            return self._with_rate(response)

    def _with_rate(self, response: Response) -> Response:
        if "x-ratelimit-remaining" not in response.headers:  # an injected answer keeps the headers it was given
            response.headers.update(
                {
                    "x-ratelimit-limit": str(self.rate_limit),
                    "x-ratelimit-remaining": str(self.rate_remaining),
                    "x-ratelimit-reset": str(self.rate_reset),
                    "x-ratelimit-used": str(self.rate_limit - self.rate_remaining),
                    "x-ratelimit-resource": "core",
                }
            )
        return response

    # --- request checks ----------------------------------------------------------------------------------
    def _check(self, request: Request, groups: dict[str, str]) -> Response | None:
        """Headers every call needs; the repository. A response to send instead, or None."""
        auth = request.headers.get("Authorization", "")
        match = re.fullmatch(r"(Bearer|token) (\S+)", auth)
        if not match:
            got = "nothing" if not auth else "another form"
            raise self.refuse(
                f"Authorization must be 'Bearer <token>' or 'token <token>', got {got}",
                self.error(401, {"message": "Requires authentication"}),
            )
        if match.group(2) != self.token:
            return self.error(401, {"message": "Bad credentials"})  # a wrong token is the caller's setting, not a malformed call
        if not request.headers.get("User-Agent"):
            raise self.refuse(
                "User-Agent is required",
                self.error(
                    403,
                    {
                        "message": "Request forbidden by administrative rules. "
                        "Please make sure your request has a User-Agent header"
                    },
                ),
            )
        accept = [part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")]
        if not any(media in ACCEPTED_MEDIA for media in accept):
            raise self.refuse(
                f"Accept should be application/vnd.github+json, got {request.headers.get('Accept')!r}",
                self.error(415, {"message": "Unsupported 'Accept' header"}),
            )
        version = request.headers.get("X-GitHub-Api-Version")
        if version is not None and version not in API_VERSIONS:
            raise self.refuse(
                f"unknown X-GitHub-Api-Version {version!r}",
                self.error(400, {"message": f"API version {version} is not supported."}),
            )
        if (groups.get("owner"), groups.get("repo")) != (self.owner, self.repo):
            return self.not_found()  # an unknown repository (or one the token cannot see): GitHub's 404
        return None

    def _body(self, request: Request, required: dict[str, type], optional: dict[str, type] | None = None) -> dict[str, Any]:
        body = json_body(self, request)
        if not isinstance(body, dict):
            raise self.refuse("the body must be a JSON object", self.error(400, {"message": "Problems parsing JSON"}))
        allowed = {**required, **(optional or {})}
        for name, kind in allowed.items():
            if name in required and name not in body:
                raise self.refuse(f"{name!r} is required", self.invalid(f'"{name}" wasn\'t supplied.'))
            if name in body and body[name] is not None and not isinstance(body[name], kind):
                raise self.refuse(
                    f"{name!r} has the wrong type", self.invalid(f"For '{name}', {body[name]!r} is not of the documented type.")
                )
        unknown = set(body) - set(allowed)
        if unknown:
            raise self.refuse(f"fields the docs do not define: {sorted(unknown)}")
        return body

    def _get_answer(self, request: Request, body: Any) -> Response:
        """A GET answer with an ETag; 304 (no body) when If-None-Match names it."""
        text = json.dumps(body, sort_keys=True)
        etag = f'W/"{hashlib.sha256(text.encode()).hexdigest()}"'
        wanted = [t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",") if t.strip()]
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60", "Vary": "Accept, Authorization, Cookie"}
        if etag.removeprefix("W/") in wanted or "*" in wanted:
            return Response(status=304, headers=headers)
        return json_response(body, 200, headers)

    def _params(self, request: Request, allowed: dict[str, tuple[str, ...] | None]) -> dict[str, str]:
        unknown = set(request.args) - set(allowed)
        if unknown:
            raise self.refuse(f"query parameters the docs do not define: {sorted(unknown)}")
        for name, values in allowed.items():
            value = request.args.get(name)
            if value is not None and values is not None and value not in values:
                raise self.refuse(f"{name}={value!r} is not one of {values}", self.validation_failed("Search", "invalid", name))
        for name in ("per_page", "page"):
            value = request.args.get(name)
            if value is not None and (not value.isdigit() or (name == "per_page" and not 1 <= int(value) <= 100)):
                raise self.refuse(f"{name}={value!r} must be an integer (per_page 1..100)")
        return dict(request.args)

    # --- git objects ---------------------------------------------------------------------------------------
    def _now(self) -> str:
        self._tick += 1
        return (_START + timedelta(seconds=self._tick)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _store(self, data: bytes) -> bytes:
        self.blobs[git_blob_sha(data)] = data
        return data

    def _tree_sha(self, files: dict[str, str]) -> str:
        """The git tree id of a flat {path: blob sha} map (subtrees hashed as git does)."""

        def write(node: dict[str, Any]) -> str:
            entries = []
            for name, value in node.items():
                if isinstance(value, dict):
                    entries.append((name + "/", b"40000 " + name.encode() + b"\0" + bytes.fromhex(write(value))))
                else:
                    entries.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(value)))
            data = b"".join(entry for _, entry in sorted(entries))
            return _sha1(b"tree %d\0" % len(data) + data)

        root: dict[str, Any] = {}
        for path, sha in files.items():
            node = root
            *folders, leaf = path.split("/")
            for folder in folders:
                node = node.setdefault(folder, {})
            node[leaf] = sha
        sha = write(root)
        self.trees[sha] = dict(files)
        return sha

    def _make_commit(self, files: dict[str, str], parents: list[str], message: str) -> str:
        tree = self._tree_sha(files)
        return self._commit_object(tree, parents, message)

    def _commit_object(self, tree: str, parents: list[str], message: str) -> str:
        when = self._now()
        stamp = int(datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        person = f"Campaign Bot <bot@example.com> {stamp} +0000"
        text = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + f"author {person}\ncommitter {person}\n\n{message}"
        sha = _sha1(b"commit %d\0" % len(text.encode()) + text.encode())
        self.commit_objects[sha] = {"tree": tree, "parents": list(parents), "message": message, "date": when}
        return sha

    def _commit_json(self, sha: str) -> dict[str, Any]:
        commit = self.commit_objects[sha]
        person = {"name": "Campaign Bot", "email": "bot@example.com", "date": commit["date"]}
        return {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": self._api(f"/git/commits/{sha}"),
            "html_url": self._html(f"/commit/{sha}"),
            "author": person,
            "committer": person,
            "message": commit["message"],
            "tree": {"sha": commit["tree"], "url": self._api(f"/git/trees/{commit['tree']}")},
            "parents": [
                {"sha": p, "url": self._api(f"/git/commits/{p}"), "html_url": self._html(f"/commit/{p}")}
                for p in commit["parents"]
            ],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None},
        }

    def _ref_json(self, branch: str) -> dict[str, Any]:
        sha = self.refs[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "node_id": f"REF_{branch}",
            "url": self._api(f"/git/refs/heads/{branch}"),
            "object": {"type": "commit", "sha": sha, "url": self._api(f"/git/commits/{sha}")},
        }

    def _ancestors(self, sha: str) -> set[str]:
        seen, todo = set(), [sha]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += self.commit_objects[current]["parents"]
        return seen

    # --- handlers: repository and git data ---------------------------------------------------------------
    def _get_repo(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        self._params(request, {})
        return self._get_answer(
            request,
            {
                "id": 1,
                "node_id": "R_1",
                "name": self.repo,
                "full_name": self.full_name,
                "private": True,
                "owner": {"login": self.owner, "id": 1, "type": "Organization"},
                "html_url": self._html(""),
                "url": self._api(""),
                "default_branch": self.default_branch,
                "visibility": "private",
            },
        )

    def _get_ref(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        if groups["branch"] not in self.refs:
            return self.not_found()
        return self._get_answer(request, self._ref_json(groups["branch"]))

    def _create_ref(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {"ref": str, "sha": str})
        ref: str = body["ref"]
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise self.refuse(
                f"ref {ref!r} must be fully qualified (refs/heads/...)", self.error(422, {"message": "Reference name is invalid"})
            )
        if not ref.startswith("refs/heads/"):
            raise self.refuse(f"this double keeps branches only, got {ref!r}")
        if body["sha"] not in self.commit_objects:
            return self.error(422, {"message": "Object does not exist"})
        branch = ref.removeprefix("refs/heads/")
        if branch in self.refs:
            return self.error(422, {"message": "Reference already exists"})
        self.refs[branch] = body["sha"]
        return json_response(self._ref_json(branch), 201, {"Location": self._api(f"/git/refs/heads/{branch}")})

    def _update_ref(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {"sha": str}, {"force": bool})
        branch = groups["branch"]
        if branch not in self.refs:
            return self.error(422, {"message": "Reference does not exist"})
        if body["sha"] not in self.commit_objects:
            return self.error(422, {"message": "Object does not exist"})
        if not body.get("force") and self.refs[branch] not in self._ancestors(body["sha"]):
            return self.error(422, {"message": "Update is not a fast forward"})
        self.refs[branch] = body["sha"]
        return json_response(self._ref_json(branch))

    def _delete_ref(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        if request.get_data():
            raise self.refuse("DELETE a reference takes no body")
        if groups["branch"] not in self.refs:
            return self.error(422, {"message": "Reference does not exist"})
        del self.refs[groups["branch"]]
        for pull in self.pull_requests.values():  # GitHub closes open pull requests whose head branch is deleted
            if pull["head"]["ref"] == groups["branch"] and pull["state"] == "open":
                pull.update(state="closed", closed_at=self._now(), updated_at=self._now())
        return Response(status=204)

    def _create_blob(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {"content": str}, {"encoding": str})
        encoding = body.get("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            raise self.refuse(
                f"encoding {encoding!r} is not utf-8 or base64", self.validation_failed("Blob", "invalid", "encoding")
            )
        try:
            data = base64.b64decode(body["content"], validate=True) if encoding == "base64" else body["content"].encode()
        except binascii.Error:
            raise self.refuse("content is not valid base64", self.validation_failed("Blob", "invalid", "content")) from None
        sha = git_blob_sha(self._store(data))
        url = self._api(f"/git/blobs/{sha}")
        return json_response({"url": url, "sha": sha}, 201, {"Location": url})

    def _tree_entries(self, files: dict[str, str], recursive: bool) -> list[dict[str, Any]]:
        folders = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})

        def inside(folder: str) -> dict[str, str]:
            return {p[len(folder) + 1 :]: s for p, s in files.items() if p.startswith(folder + "/")}

        entries = [{"path": f, "mode": "040000", "type": "tree", "sha": self._tree_sha(inside(f))} for f in folders]
        entries += [
            {
                "path": p,
                "mode": "100644",
                "type": "blob",
                "sha": s,
                "size": len(self.blobs[s]),
                "url": self._api(f"/git/blobs/{s}"),
            }
            for p, s in files.items()
        ]
        if not recursive:
            entries = [e for e in entries if "/" not in e["path"]]
        return sorted(entries, key=lambda e: e["path"])

    def _get_tree(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        params = self._params(request, {"recursive": None})
        sha = groups["sha"]
        if sha in self.commit_objects:  # a commit names its tree (tree-ish), as on GitHub
            sha = self.commit_objects[sha]["tree"]
        if sha not in self.trees:
            return self.not_found()
        recursive = params.get("recursive") not in (None, "", "0", "false")
        return self._get_answer(
            request,
            {
                "sha": sha,
                "url": self._api(f"/git/trees/{sha}"),
                "tree": self._tree_entries(self.trees[sha], recursive),
                "truncated": False,
            },
        )

    def _create_tree(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {"tree": list}, {"base_tree": str})
        if body.get("base_tree") and body["base_tree"] not in self.trees:
            return self.error(422, {"message": "base_tree is not a valid tree oid"})
        files = dict(self.trees[body["base_tree"]]) if body.get("base_tree") else {}
        for entry in body["tree"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
                raise self.refuse(f"tree entry {entry!r} needs a path", self.validation_failed("Tree", "missing_field", "path"))
            if entry.get("mode") not in ("100644", "100755", "040000", "160000", "120000"):
                raise self.refuse(
                    f"tree entry mode {entry.get('mode')!r} is not a documented mode",
                    self.validation_failed("Tree", "invalid", "mode"),
                )
            if entry.get("type") != "blob" or entry.get("mode") != "100644":
                raise self.refuse("this double keeps regular files (type blob, mode 100644) only")
            if ("sha" in entry) == ("content" in entry):
                raise self.refuse(
                    "a tree entry takes exactly one of sha and content", self.validation_failed("Tree", "invalid", "sha")
                )
            if extra := set(entry) - {"path", "mode", "type", "sha", "content"}:
                raise self.refuse(f"tree entry fields the docs do not define: {sorted(extra)}")
            if "content" in entry:
                files[entry["path"]] = git_blob_sha(self._store(str(entry["content"]).encode()))
            elif entry["sha"] is None:  # the docs: "If the value is null then the file will be deleted."
                if entry["path"] not in files:  # the docs: "Returns an error if you try to delete a file that does not exist."
                    raise self.refuse(
                        f"deleting {entry['path']!r}, which is not in the base tree",
                        self.error(422, {"message": "GitRPC::BadObjectState"}),
                    )
                del files[entry["path"]]
            elif entry["sha"] not in self.blobs:
                return self.validation_failed("Tree", "invalid", "sha", f"tree.sha {entry['sha']} is not a valid blob")
            else:
                files[entry["path"]] = entry["sha"]
        sha = self._tree_sha(files)
        return json_response(
            {"sha": sha, "url": self._api(f"/git/trees/{sha}"), "tree": self._tree_entries(files, False), "truncated": False},
            201,
            {"Location": self._api(f"/git/trees/{sha}")},
        )

    def _get_commit(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        if groups["sha"] not in self.commit_objects:
            return self.not_found()
        return self._get_answer(request, self._commit_json(groups["sha"]))

    def _create_commit(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(
            request, {"message": str, "tree": str}, {"parents": list, "author": dict, "committer": dict, "signature": str}
        )
        if body["tree"] not in self.trees:
            return self.validation_failed("Commit", "invalid", "tree", "Tree SHA does not exist")
        parents = body.get("parents") or []
        if not all(isinstance(p, str) and p in self.commit_objects for p in parents):
            return self.validation_failed("Commit", "invalid", "parents", "Parent SHA does not exist or is not a commit object")
        sha = self._commit_object(body["tree"], parents, body["message"])
        return json_response(self._commit_json(sha), 201, {"Location": self._api(f"/git/commits/{sha}")})

    # --- handlers: contents ------------------------------------------------------------------------------
    def _branch_param(self, name: str | None) -> str | None:
        if name is None:
            return self.default_branch
        branch = name.removeprefix("refs/heads/")
        return branch if branch in self.refs else None

    def _files_at(self, ref: str | None) -> dict[str, str] | None:
        """``ref`` of the contents API: "The name of the commit/branch/tag" (a branch or a commit sha here)."""
        if ref is not None and ref in self.commit_objects:
            return dict(self.trees[self.commit_objects[ref]["tree"]])
        branch = self._branch_param(ref)
        return None if branch is None else self.files_sha(branch)

    def _file_json(self, path: str, sha: str, with_content: bool = True) -> dict[str, Any]:
        data = self.blobs[sha]
        item = {
            "type": "file",
            "encoding": "base64",
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": self._api(f"/contents/{path}"),
            "git_url": self._api(f"/git/blobs/{sha}"),
            "html_url": self._html(f"/blob/{path}"),
            "download_url": f"{self.root_url}/raw/{self.full_name}/{path}",
        }
        if with_content:  # GitHub wraps the base64 text at 60 characters
            encoded = base64.b64encode(data).decode()
            item["content"] = "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))
        item["_links"] = {"self": item["url"], "git": item["git_url"], "html": item["html_url"]}
        return item

    def _get_contents(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        params = self._params(request, {"ref": None})
        files, path = self._files_at(params.get("ref")), groups["path"].strip("/")
        if files is None:
            return self.error(404, {"message": f"No commit found for the ref {params.get('ref')}"})
        if path in files:
            return self._get_answer(request, self._file_json(path, files[path]))
        inside = {p: s for p, s in files.items() if p.startswith(path + "/")}
        if not inside:
            return self.not_found()
        names = sorted({p[len(path) + 1 :].split("/")[0] for p in inside})
        listing = [
            self._file_json(f"{path}/{n}", files[f"{path}/{n}"], False)
            if f"{path}/{n}" in files
            else {"type": "dir", "name": n, "path": f"{path}/{n}"}
            for n in names
        ]
        return self._get_answer(request, listing)

    def _put_contents(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(
            request, {"message": str, "content": str}, {"sha": str, "branch": str, "committer": dict, "author": dict}
        )
        try:
            data = base64.b64decode(body["content"], validate=True)
        except binascii.Error:
            raise self.refuse("content must be base64", self.invalid("content is not valid Base64")) from None
        branch = self._branch_param(body.get("branch"))
        if branch is None:
            return self.error(404, {"message": f"Branch {body.get('branch')} not found"})
        path, files = groups["path"].strip("/"), self.files_sha(branch)
        if path in files and "sha" not in body:
            return self.invalid('"sha" wasn\'t supplied.')
        if "sha" in body and body["sha"] != files.get(path):
            return self.error(409, {"message": f"{path} does not match {body['sha']}"})
        created = path not in files
        files[path] = git_blob_sha(self._store(data))
        commit = self._make_commit(files, [self.refs[branch]], body["message"])
        self.refs[branch] = commit
        return json_response(
            {"content": self._file_json(path, files[path], False), "commit": self._commit_json(commit)}, 201 if created else 200
        )

    def _delete_contents(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {"message": str, "sha": str}, {"branch": str, "committer": dict, "author": dict})
        branch = self._branch_param(body.get("branch"))
        if branch is None:
            return self.error(404, {"message": f"Branch {body.get('branch')} not found"})
        path, files = groups["path"].strip("/"), self.files_sha(branch)
        if path not in files:
            return self.not_found()
        if body["sha"] != files[path]:
            return self.error(409, {"message": f"{path} does not match {body['sha']}"})
        del files[path]
        commit = self._make_commit(files, [self.refs[branch]], body["message"])
        self.refs[branch] = commit
        return json_response({"content": None, "commit": self._commit_json(commit)})

    # --- handlers: pulls and reviews -----------------------------------------------------------------------
    def _pull_json(self, pull: dict[str, Any], full: bool = True) -> dict[str, Any]:
        number = pull["number"]
        item = {k: v for k, v in pull.items() if k not in ("merged",)}
        item.update(
            {
                "url": self._api(f"/pulls/{number}"),
                "html_url": self._html(f"/pull/{number}"),
                "head": {**pull["head"], "sha": self.refs.get(pull["head"]["ref"], pull["head"]["sha"])},
            }
        )
        if full:
            item.update(merged=pull["merged"], mergeable=None, comments=0, review_comments=0, commits=1)
        return item

    def _list_pulls(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        params = self._params(
            request,
            {
                "state": ("open", "closed", "all"),
                "head": None,
                "base": None,
                "sort": None,
                "direction": ("asc", "desc"),
                "per_page": None,
                "page": None,
            },
        )
        head = params.get("head")
        if head is not None and ":" not in head:
            raise self.refuse(f"head must be 'user:ref-name' or 'organization:ref-name', got {head!r}")
        state = params.get("state", "open")
        found = [
            p
            for p in sorted(self.pull_requests.values(), key=lambda p: -p["number"])
            if (state == "all" or p["state"] == state)
            and (head is None or head == f"{self.owner}:{p['head']['ref']}")
            and (params.get("base") is None or params["base"] == p["base"]["ref"])
        ]
        per_page, page = int(params.get("per_page", 30)), int(params.get("page", 1))
        return self._get_answer(request, [self._pull_json(p, False) for p in found[(page - 1) * per_page : page * per_page]])

    def _create_pull(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(
            request,
            {"head": str, "base": str},
            {"title": str, "body": str, "draft": bool, "maintainer_can_modify": bool, "issue": int, "head_repo": str},
        )
        if "title" not in body and "issue" not in body:
            raise self.refuse(
                "title is required unless issue is given", self.validation_failed("PullRequest", "missing_field", "title")
            )
        head = body["head"].split(":", 1)[-1] if body["head"].startswith(f"{self.owner}:") else body["head"]
        if head not in self.refs:
            return self.validation_failed("PullRequest", "invalid", "head")
        if body["base"] not in self.refs:
            return self.validation_failed("PullRequest", "invalid", "base")
        if any(
            p["head"]["ref"] == head and p["base"]["ref"] == body["base"] and p["state"] == "open"
            for p in self.pull_requests.values()
        ):
            return self.validation_failed(
                "PullRequest", "custom", message=f"A pull request already exists for {self.owner}:{head}."
            )
        if self.refs[head] in self._ancestors(self.refs[body["base"]]):
            return self.validation_failed("PullRequest", "custom", message=f"No commits between {body['base']} and {head}")
        number = max(self.pull_requests, default=0) + 1
        now = self._now()
        self.pull_requests[number] = {
            "id": 1000 + number,
            "node_id": f"PR_{number}",
            "number": number,
            "state": "open",
            "locked": False,
            "title": body["title"],
            "body": body.get("body"),
            "user": {"login": "campaign-bot", "id": 7, "type": "User"},
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "draft": bool(body.get("draft", False)),
            "merged": False,
            "head": {"label": f"{self.owner}:{head}", "ref": head, "sha": self.refs[head], "repo": {"full_name": self.full_name}},
            "base": {
                "label": f"{self.owner}:{body['base']}",
                "ref": body["base"],
                "sha": self.refs[body["base"]],
                "repo": {"full_name": self.full_name},
            },
        }
        self.pull_reviews[number] = []
        return json_response(self._pull_json(self.pull_requests[number]), 201, {"Location": self._api(f"/pulls/{number}")})

    def _get_pull(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        pull = self.pull_requests.get(int(groups["number"]))
        return self.not_found() if pull is None else self._get_answer(request, self._pull_json(pull))

    def _update_pull(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        body = self._body(request, {}, {"title": str, "body": str, "state": str, "base": str, "maintainer_can_modify": bool})
        pull = self.pull_requests.get(int(groups["number"]))
        if pull is None:
            return self.not_found()
        if body.get("state") not in (None, "open", "closed"):
            raise self.refuse(
                f"state {body['state']!r} is not open or closed", self.validation_failed("PullRequest", "invalid", "state")
            )
        if body.get("state") == "open" and (pull["merged"] or pull["head"]["ref"] not in self.refs):
            return self.validation_failed(
                "PullRequest", "custom", message="state cannot be changed. The head branch was deleted."
            )
        for name in ("title", "body"):
            if name in body:
                pull[name] = body[name]
        if body.get("state") and body["state"] != pull["state"]:
            pull.update(state=body["state"], closed_at=self._now() if body["state"] == "closed" else None)
        pull["updated_at"] = self._now()
        return json_response(self._pull_json(pull))

    def _list_reviews(self, request: Request, groups: dict[str, str]) -> Response:
        if (answer := self._check(request, groups)) is not None:
            return answer
        params = self._params(request, {"per_page": None, "page": None})
        number = int(groups["number"])
        if number not in self.pull_requests:
            return self.not_found()
        per_page, page = int(params.get("per_page", 30)), int(params.get("page", 1))
        reviews = self.pull_reviews[number]
        answer = self._get_answer(request, reviews[(page - 1) * per_page : page * per_page])
        if page * per_page < len(reviews):
            answer.headers["Link"] = f'<{self._api(f"/pulls/{number}/reviews")}?per_page={per_page}&page={page + 1}>; rel="next"'
        return answer

    # --- inspection and test helpers -------------------------------------------------------------------------
    def branches(self) -> list[str]:
        return sorted(self.refs)

    def files_sha(self, branch: str) -> dict[str, str]:
        return dict(self.trees[self.commit_objects[self.refs[branch]]["tree"]])

    def files(self, branch: str) -> dict[str, bytes]:
        return {path: self.blobs[sha] for path, sha in sorted(self.files_sha(branch).items())}

    def commits(self, branch: str) -> list[dict[str, Any]]:
        history, sha = [], self.refs.get(branch)
        while sha:
            commit = self.commit_objects[sha]
            history.append({"sha": sha, "message": commit["message"], "parents": list(commit["parents"])})
            sha = commit["parents"][0] if commit["parents"] else None
        return history

    def pulls(self) -> list[dict[str, Any]]:
        return [self._pull_json(p) for _, p in sorted(self.pull_requests.items())]

    def open_pulls(self) -> list[dict[str, Any]]:
        return [p for p in self.pulls() if p["state"] == "open"]

    def reviews(self, number: int) -> list[dict[str, Any]]:
        return list(self.pull_reviews[number])

    def add_review(self, number: int, user: str, state: str, body: str = "") -> dict[str, Any]:
        if state not in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED"):
            raise ValueError(f"a submitted review is APPROVED, CHANGES_REQUESTED or COMMENTED, not {state!r}")
        with self._lock:
            pull = self.pull_requests[number]
            review_id = 80000 + sum(len(r) for r in self.pull_reviews.values()) + 1
            review = {
                "id": review_id,
                "node_id": f"PRR_{review_id}",
                "user": {"login": user, "id": 9000 + len(user), "type": "User"},
                "body": body,
                "state": state,
                "html_url": self._html(f"/pull/{number}#pullrequestreview-{review_id}"),
                "pull_request_url": self._api(f"/pulls/{number}"),
                "author_association": "MEMBER",
                "submitted_at": self._now(),
                "commit_id": self.refs.get(pull["head"]["ref"], pull["head"]["sha"]),
            }
            self.pull_reviews[number].append(review)
            pull["updated_at"] = self._now()
            return review

    def merge_pull(self, number: int) -> None:
        with self._lock:
            pull = self.pull_requests[number]
            base, head = pull["base"]["ref"], pull["head"]["ref"]
            merged = self._commit_object(
                self.commit_objects[self.refs[head]]["tree"],
                [self.refs[base], self.refs[head]],
                f"Merge pull request #{number} from {self.owner}/{head}",
            )
            self.refs[base] = merged
            now = self._now()
            pull.update(state="closed", merged=True, merged_at=now, closed_at=now, updated_at=now, merge_commit_sha=merged)

    def close_pull(self, number: int) -> None:
        with self._lock:
            self.pull_requests[number].update(state="closed", closed_at=self._now(), updated_at=self._now())

    def commit_file(self, branch: str, path: str, data: bytes | None, message: str = "Edit by someone else") -> str:
        """Someone else's commit: ``path`` set to ``data`` (None deletes it) on ``branch``."""
        with self._lock:
            files = self.files_sha(branch)
            if data is None:
                files.pop(path, None)
            else:
                files[path] = git_blob_sha(self._store(data))
            self.refs[branch] = self._make_commit(files, [self.refs[branch]], message)
            return self.refs[branch]

    def meanwhile(self, method: str, path: str, change: Any) -> None:
        """Run ``change()`` (e.g. someone else's ``commit_file``) just before the next matching call is
        served: a concurrent writer getting in between two of our calls."""

        def first(request: Request) -> None:
            change()  # outside the double's lock (see ServiceDouble._answer): change may take it

        self._queue(method, path, first, 1)

    def exhaust_rate_limit(self, reset_in: int = 120) -> None:
        with self._lock:
            self.rate_remaining, self.rate_reset = 0, int(time.time()) + reset_in
