"""A Buffer GraphQL API double: posts on channels, created, queried and deleted as the docs define.

Checked against the Buffer API docs (https://developers.buffer.com): guides/getting-started
(endpoint, Bearer key), guides/posts-and-scheduling and examples/create-scheduled-post (createPost,
``schedulingType``, ``mode``), guides/error-handling (typed ``MutationError`` members in a 200,
top-level ``errors`` with ``extensions.code``), guides/pagination and examples/get-paginated-posts
(``posts(input, first, after)``, edges/node/pageInfo), guides/api-limits (429 with
``RATE_LIMIT_EXCEEDED`` and ``retryAfter``), and the published schema (``CreatePostInput``,
``DeletePostInput``, ``PostsInput``, ``PostInput``, the ``PostActionPayload`` and
``DeletePostPayload`` unions, ``PostStatus``, ``ShareMode``, ``SchedulingType``).

GraphQL is parsed only as far as needed to check our client: one named operation, its variable
definitions, one root field whose arguments are all variables, and flat selections.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.doubles import Refused, ServiceDouble, json_body, json_response

OPERATION = re.compile(r"^\s*(query|mutation)\s+([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?\s*\{(.*)\}\s*$", re.S)
ROOT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?\s*\{", re.S)
MUTATION_ERROR = re.compile(r"\.\.\.\s*on\s+MutationError\s*\{[^}]*\bmessage\b")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

# Root fields: operation type, argument -> GraphQL type (from the schema's Query and Mutation types).
FIELDS = {
    "createPost": ("mutation", {"input": "CreatePostInput!"}),
    "deletePost": ("mutation", {"input": "DeletePostInput!"}),
    "posts": ("query", {"input": "PostsInput!", "first": "Int", "after": "String"}),
    "post": ("query", {"input": "PostInput!"}),
}
POST_FIELDS = {
    "id",
    "ideaId",
    "status",
    "via",
    "schedulingType",
    "isCustomScheduled",
    "createdAt",
    "updatedAt",
    "dueAt",
    "sentAt",
    "text",
    "externalLink",
    "channelId",
    "channelService",
    "sharedNow",
    "shareMode",
    "__typename",
}
STATUSES = ("draft", "needs_approval", "scheduled", "sending", "sent", "error")
QUEUED = ("draft", "needs_approval", "scheduled")
SHARE_MODES = ("addToQueue", "shareNow", "shareNext", "customScheduled")
SCHEDULING_TYPES = ("automatic", "notification")
CREATE_FIELDS = {
    "ideaId",
    "draftId",
    "schedulingType",
    "dueAt",
    "text",
    "metadata",
    "channelId",
    "tagIds",
    "assets",
    "mode",
    "source",
    "aiAssisted",
    "saveToDraft",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class BufferDouble(ServiceDouble):
    """Stateful Buffer: channels of one organization and their posts.

    ``POST /`` only, ``Authorization: Bearer <token>`` required (else HTTP 401 ``UNAUTHENTICATED``),
    JSON ``{"query", "variables", "operationName"}``. The query document must be a named operation
    whose root field takes its arguments as declared variables of the documented types (a string
    literal in the document means user text was interpolated: refused), mutations must select
    ``__typename`` and ``... on MutationError { message }``, and only fields that exist may be
    selected. Malformed or invalid operations get top-level ``errors`` (``GRAPHQL_VALIDATION_FAILED``
    / ``BAD_USER_INPUT``) in a 200, and are problems. Business errors are not problems: an unknown
    channel answers ``NotFoundError``, empty or too long text ``InvalidInputError`` (the union member
    with ``__typename`` and ``message``, HTTP 200); an unknown post id, top-level ``NOT_FOUND``; a
    foreign organization, ``FORBIDDEN``.

    Helpers for tests: ``queued_posts(channel_id=None)`` (posts waiting in a queue: draft,
    needs_approval, scheduled), ``posts()`` (all, any status), ``publish(post_id=None)`` (Buffer
    sends it: status ``sent``), ``add_post(channel_id, text, via=...)`` (a post made elsewhere, e.g.
    in the Buffer app), ``rate_limited(retry_after)`` (the documented 429 answer for the next call), ``reset()``.
    """

    def __init__(
        self,
        token: str = "test-token",
        organization_id: str = "org-1",
        channels: dict[str, int] | None = None,
        page_cap: int | None = None,
    ) -> None:
        self.token, self.organization_id = token, organization_id
        self.channels = dict(channels or {"chan-x": 280, "chan-li": 3000})  # channel id -> text limit of its network
        self.page_cap = page_cap
        self._posts: dict[str, dict[str, Any]] = {}
        super().__init__(name="Buffer")

    def _clear(self) -> None:
        self._posts.clear()

    # --- inspection -------------------------------------------------------------------------------
    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._posts.values()]

    def queued_posts(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.posts() if p["status"] in QUEUED and channel_id in (None, p["channelId"])]

    def publish(self, post_id: str | None = None) -> None:
        """Buffer sends the post (every queued one when no id is given)."""
        with self._lock:
            for post in self._posts.values():
                if post_id in (None, post["id"]) and post["status"] in QUEUED:
                    post["status"], post["sentAt"] = "sent", _iso(datetime.now(UTC))

    def add_post(self, channel_id: str, text: str, *, via: str = "buffer", status: str = "scheduled", age_days: float = 0) -> str:
        with self._lock:
            created = datetime.now(UTC) - timedelta(days=age_days)
            return self._new_post(channel_id, text, via=via, status=status, created=created)["id"]

    def rate_limited(self, retry_after: int = 900, header: bool = True) -> None:
        body = {
            "errors": [
                {
                    "message": "Too many requests from this client. Please try again later.",
                    "extensions": {"code": "RATE_LIMIT_EXCEEDED", "limitType": "CLIENT_ACCOUNT", "retryAfter": retry_after},
                }
            ]
        }
        self.fail_next("POST", "/", 429, json_response(body, 429, {"Retry-After": str(retry_after)} if header else None))

    # --- shapes -------------------------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        if isinstance(body, dict) and "errors" not in body:
            code = body.get("code", "BAD_REQUEST")
            body = {"errors": [{"message": body.get("message", "error"), "extensions": {"code": code}}]}
        return json_response(body, status, headers)

    def _errors(self, message: str, code: str, status: int = 200) -> Response:
        return json_response({"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}, status)

    def _invalid(self, problem: str, code: str = "GRAPHQL_VALIDATION_FAILED") -> Refused:
        return self.refuse(problem, self._errors(problem, code))

    def routes(self) -> None:
        self.route("POST", r"/", self._graphql)

    def _new_post(
        self,
        channel_id: str,
        text: str,
        *,
        via: str,
        status: str,
        created: datetime,
        mode: str = "addToQueue",
        scheduling: str = "automatic",
        due: str | None = None,
    ) -> dict[str, Any]:
        queued = sum(1 for p in self._posts.values() if p["channelId"] == channel_id and p["status"] == "scheduled")
        post = {
            "id": uuid.uuid4().hex[:24],
            "text": text,
            "status": status,
            "via": via,
            "channelId": channel_id,
            "channelService": "twitter" if self.channels.get(channel_id, 0) <= 280 else "linkedin",
            "schedulingType": scheduling,
            "shareMode": mode,
            "isCustomScheduled": mode == "customScheduled",
            "sharedNow": False,
            "createdAt": _iso(created),
            "updatedAt": _iso(created),
            "dueAt": due or _iso(created + timedelta(hours=queued + 1)),
            "sentAt": None,
            "ideaId": None,
            "externalLink": None,
        }
        self._posts[post["id"]] = post
        return post

    # --- the endpoint ------------------------------------------------------------------------------
    def _graphql(self, request: Request, groups: dict[str, str]) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise self.refuse(
                "missing or invalid API key",
                self._errors("An authentication JWT or Access Token is required", "UNAUTHENTICATED", 401),
            )
        body = json_body(self, request)
        shape = isinstance(body, dict) and isinstance(body.get("query"), str)
        if not shape or set(body) - {"query", "variables", "operationName"}:
            raise self._invalid('the body must be {"query": "...", "variables": {...}, "operationName": "..."}', "BAD_REQUEST")
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise self._invalid("variables must be an object", "BAD_REQUEST")
        document = re.sub(r"#[^\n]*", "", body["query"])
        match = OPERATION.match(document)
        if not match:
            raise self._invalid("Syntax Error: expected one named query or mutation", "GRAPHQL_PARSE_FAILED")
        kind, name, definitions, selection = match.groups()
        if body.get("operationName") not in (None, name):
            raise self._invalid(f'Unknown operation named "{body.get("operationName")}".')
        if '"' in document:
            raise self._invalid("a string literal in the document: user text must travel as variables, never in the query")
        declared = dict(re.findall(r"\$(\w+)\s*:\s*([\w!\[\]]+)", definitions or ""))
        root = ROOT.match(selection)
        if not root or root.group(1) not in FIELDS:
            asked = root.group(1) if root else selection.strip()[:30]
            raise self._invalid(f'Cannot query field "{asked}" on type "{kind.title()}".')
        field, arguments = root.group(1), root.group(2) or ""
        expected_kind, types = FIELDS[field]
        if kind != expected_kind:
            raise self._invalid(f'Cannot query field "{field}" on type "{kind.title()}".')
        passed: dict[str, str] = {}
        for part in (p.strip() for p in arguments.split(",") if p.strip()):
            arg = re.fullmatch(r"(\w+)\s*:\s*\$(\w+)", part)
            if not arg:
                raise self._invalid(f"argument {part!r} of {field} is not a variable: send values as variables")
            if arg.group(1) not in types:
                raise self._invalid(f'Unknown argument "{arg.group(1)}" on field "{field}".')
            if declared.get(arg.group(2)) != types[arg.group(1)]:
                raise self._invalid(f'Variable "${arg.group(2)}" must be declared as {types[arg.group(1)]}.')
            passed[arg.group(1)] = arg.group(2)
        for arg, kind_of in types.items():
            if kind_of.endswith("!") and (arg not in passed or variables.get(passed[arg]) is None):
                raise self._invalid(f'Field "{field}" argument "{arg}" of type "{kind_of}" is required.', "BAD_USER_INPUT")
        if unknown := set(variables) - set(declared):
            raise self._invalid(f"variables {sorted(unknown)} are not declared by the operation", "BAD_USER_INPUT")
        values = {arg: variables.get(var) for arg, var in passed.items()}
        sees_errors = re.search(r"\b__typename\b", selection) and re.search(MUTATION_ERROR, selection)
        if kind == "mutation" and not sees_errors:
            raise self._invalid("mutations must select __typename and `... on MutationError { message }` (error-handling guide)")
        handlers = {
            "createPost": self._create_post,
            "deletePost": self._delete_post,
            "post": self._post,
            "posts": self._posts_query,
        }
        handler = handlers[field]
        return handler(values, selection)

    def _selected(self, selection: str, parent: str) -> list[str]:
        found = re.search(rf"\b{parent}\s*(?:\([^)]*\))?\s*\{{([^{{}}]*)\}}", selection)
        if not found:
            raise self._invalid(f"no selection for {parent}")
        fields = found.group(1).split()
        if unknown := [f for f in fields if f not in POST_FIELDS]:
            raise self._invalid(f'Cannot query field "{unknown[0]}" on type "Post".')
        return fields

    def _check(self, value: dict[str, Any], allowed: set[str], type_name: str) -> None:
        if not isinstance(value, dict):
            raise self._invalid(f'Variable "$input" of type "{type_name}!" must be an object.', "BAD_USER_INPUT")
        if unknown := set(value) - allowed:
            raise self._invalid(f'Field "{sorted(unknown)[0]}" is not defined by type "{type_name}".', "BAD_USER_INPUT")

    # --- operations --------------------------------------------------------------------------------
    def _create_post(self, values: dict[str, Any], selection: str) -> Response:
        data = values["input"]
        self._check(data, CREATE_FIELDS, "CreatePostInput")
        for key, allowed in (("schedulingType", SCHEDULING_TYPES), ("mode", SHARE_MODES)):
            if data.get(key) not in allowed:
                raise self._invalid(f'Variable "$input" got invalid value {data.get(key)!r} at "input.{key}"', "BAD_USER_INPUT")
        if not isinstance(data.get("channelId"), str):
            raise self._invalid('"input.channelId" of type "ChannelId!" is required', "BAD_USER_INPUT")
        if "text" in data and data["text"] is not None and not isinstance(data["text"], str):
            raise self._invalid('"input.text" must be a String', "BAD_USER_INPUT")
        if data["mode"] == "customScheduled" and not (isinstance(data.get("dueAt"), str) and ISO.match(data["dueAt"])):
            raise self._invalid("customScheduled needs dueAt, an ISO 8601 date-time", "BAD_USER_INPUT")
        fields = self._selected(selection, "post")
        text, channel = data.get("text") or "", data["channelId"]
        if channel not in self.channels:
            return self._payload("createPost", {"__typename": "NotFoundError", "message": f"Channel {channel} not found"})
        if not text.strip():
            return self._payload("createPost", {"__typename": "InvalidInputError", "message": "Text is required"})
        if len(text) > self.channels[channel]:
            return self._payload(
                "createPost",
                {
                    "__typename": "InvalidInputError",
                    "message": f"Text is too long: {len(text)} characters, at most {self.channels[channel]}",
                },
            )
        status = "draft" if data.get("saveToDraft") else ("sent" if data["mode"] == "shareNow" else "scheduled")
        post = self._new_post(
            channel,
            text,
            via="api",
            status=status,
            created=datetime.now(UTC),
            mode=data["mode"],
            scheduling=data["schedulingType"],
            due=data.get("dueAt"),
        )
        return self._payload("createPost", {"__typename": "PostActionSuccess", "post": {f: post.get(f) for f in fields}})

    def _delete_post(self, values: dict[str, Any], selection: str) -> Response:
        data = values["input"]
        self._check(data, {"id"}, "DeletePostInput")
        if not isinstance(data.get("id"), str):
            raise self._invalid('"input.id" of type "PostId!" is required', "BAD_USER_INPUT")
        if self._posts.pop(data["id"], None) is None:
            return self._errors(f"Post {data['id']} not found", "NOT_FOUND")
        return self._payload("deletePost", {"__typename": "DeletePostSuccess", "id": data["id"]})

    def _post(self, values: dict[str, Any], selection: str) -> Response:
        data = values["input"]
        self._check(data, {"id"}, "PostInput")
        fields = self._selected(selection, "post")
        post = self._posts.get(data.get("id"))
        if post is None:
            return self._errors(f"Post {data.get('id')} not found", "NOT_FOUND")
        return self._payload("post", {f: post.get(f) for f in fields})

    def _posts_query(self, values: dict[str, Any], selection: str) -> Response:
        data, first, after = values["input"], values.get("first"), values.get("after")
        self._check(data, {"organizationId", "filter", "sort"}, "PostsInput")
        filters, sort = data.get("filter") or {}, data.get("sort") or []
        self._check(filters, {"channelIds", "status", "tags", "dueAt", "createdAt"}, "PostsFiltersInput")
        if first is not None and (not isinstance(first, int) or isinstance(first, bool) or first < 1):
            raise self._invalid('"first" must be a positive Int', "BAD_USER_INPUT")
        if after is not None and not isinstance(after, str):
            raise self._invalid('"after" must be a String', "BAD_USER_INPUT")
        if any(s not in STATUSES for s in filters.get("status") or []):
            raise self._invalid(f'"filter.status" takes {", ".join(STATUSES)}', "BAD_USER_INPUT")
        if not all(
            isinstance(s, dict) and s.get("field") in ("dueAt", "createdAt") and s.get("direction") in ("asc", "desc")
            for s in sort
        ):
            raise self._invalid('"sort" takes [{field: dueAt|createdAt, direction: asc|desc}]', "BAD_USER_INPUT")
        window = filters.get("createdAt") or {}
        self._check(window, {"start", "end"}, "DateTimeComparator")
        if any(not (isinstance(v, str) and ISO.match(v)) for v in window.values() if v is not None):
            raise self._invalid('"createdAt" bounds must be ISO 8601 DateTime', "BAD_USER_INPUT")
        fields = self._selected(selection, "node")
        if data.get("organizationId") != self.organization_id:
            return self._errors("You do not have access to this organization", "FORBIDDEN")
        found = [
            p
            for p in self._posts.values()
            if (filters.get("channelIds") is None or p["channelId"] in filters["channelIds"])
            and (filters.get("status") is None or p["status"] in filters["status"])
            and (window.get("start") is None or _time(p["createdAt"]) >= _time(window["start"]))
            and (window.get("end") is None or _time(p["createdAt"]) <= _time(window["end"]))
        ]
        for rule in reversed(sort):
            found.sort(key=lambda p, f=rule["field"]: p[f] or "", reverse=rule["direction"] == "desc")
        start = int(after) if after and after.isdigit() else 0
        size = min(first or 20, self.page_cap or first or 20)
        page = found[start : start + size]
        edges = [{"node": {f: p.get(f) for f in fields}, "cursor": str(start + i + 1)} for i, p in enumerate(page)]
        info = {
            "hasNextPage": start + size < len(found),
            "endCursor": edges[-1]["cursor"] if edges else None,
            "startCursor": edges[0]["cursor"] if edges else None,
            "hasPreviousPage": False,
        }
        return json_response({"data": {"posts": {"edges": edges, "pageInfo": info}}})

    def _payload(self, field: str, value: Any) -> Response:
        return json_response({"data": {field: value}})
