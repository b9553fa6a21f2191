"""Social port backend: posts queued through Buffer's GraphQL API, one per channel.

Follows the Buffer API docs (https://developers.buffer.com): one endpoint, ``POST
https://api.buffer.com`` with ``Authorization: Bearer <personal API key>``; the ``createPost`` and
``deletePost`` mutations, the ``posts`` and ``post`` queries (guides: posts-and-scheduling,
error-handling, pagination, api-limits). The legacy REST API (api.bufferapp.com/1) is closed to
new apps and is not used. The connection (type ``http``) has host ``https://api.buffer.com``, the
API key as password, and these extras:

- ``channels`` (required): ``{"<profile name in the campaign file>": "<Buffer channel id>"}``;
- ``organization_id`` (required): the ``posts`` query is per organization;
- ``lookback_days`` (default 14): how far back the lookup of our own posts reads (below).

Every post is added to the channel's queue (``schedulingType: automatic, mode: addToQueue``). User
text only ever travels as GraphQL variables, never inside the query document. The local image of
the post is not attached: Buffer takes assets as public URLs, which a local rendering has not.

Errors arrive inside HTTP 200: a mutation answers a union, ``PostActionSuccess`` or a member of
``MutationError`` (``InvalidInputError``, ``LimitReachedError``, ``NotFoundError``, ...) with a
``message``; system problems come as top-level GraphQL ``errors`` with ``extensions.code``. Both
are failures: non-retryable, except ``RATE_LIMIT_EXCEEDED`` (HTTP 429, waiting ``Retry-After`` or
``extensions.retryAfter``) and Buffer's unexpected server errors (``UNEXPECTED``,
``UnexpectedError``, 5xx), which Buffer says to retry after a delay.

Idempotency, and finding a post again from the planned effect: Buffer posts carry no field for an
external id or metadata of ours (``source`` is write-only, tags need tag ids made beforehand). So
"ours" is a post on the same channel, created through the API (``via: api``) in the last
``lookback_days``, whose text equals ours once whitespace is collapsed and links are masked (a
channel with link shortening rewrites URLs). The limitation: two runs putting the same text on the
same channel in that window are taken for one post. The effect keeps a digest of the text, not
the text. A post Buffer has already published (``sending``/``sent``) cannot be recalled through
Buffer (deleting it there leaves it on the network): undo raises a non-retryable error naming it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.http_api import HttpApi, retry_after_seconds
from include.orchestrator.domain.ports import Effect, SocialPost
from include.orchestrator.errors import (
    BufferNotFound,
    ConnectionConfigError,
    IrrevocableServiceError,
    PermanentServiceError,
    ServiceError,
)

log = logging.getLogger(__name__)

SERVICE = "buffer"
PAGE = 50  # posts per page of the lookup
MAX_PAGES = 20  # at most 1000 recent posts per channel are read when looking for ours
PUBLISHED = ("sending", "sent")

# The operations, in one place. Values only ever travel as variables.
CREATE_POST = """
mutation CreatePost($input: CreatePostInput!) {
  createPost(input: $input) {
    __typename
    ... on PostActionSuccess { post { id status channelId dueAt } }
    ... on MutationError { message }
  }
}
"""
DELETE_POST = """
mutation DeletePost($input: DeletePostInput!) {
  deletePost(input: $input) {
    __typename
    ... on DeletePostSuccess { id }
    ... on MutationError { message }
  }
}
"""
GET_POSTS = """
query GetPosts($input: PostsInput!, $first: Int, $after: String) {
  posts(input: $input, first: $first, after: $after) {
    edges { node { id text status via channelId createdAt sentAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
GET_POST = """
query GetPost($input: PostInput!) {
  post(input: $input) { id text status via channelId createdAt sentAt }
}
"""
RETRYABLE_CODES = ("RATE_LIMIT_EXCEEDED", "UNEXPECTED", "INTERNAL_SERVER_ERROR")
RETRYABLE_TYPES = ("UnexpectedError",)


def fingerprint(text: str) -> str:
    """What identifies a post's text: whitespace collapsed, links masked (Buffer may shorten them)."""
    masked = re.sub(r"https?://\S+", "<link>", text)
    return hashlib.sha256(" ".join(masked.split()).encode()).hexdigest()


def _messages(errors: Any) -> str:
    if not isinstance(errors, list):
        return str(errors)[:300]
    parts = []
    for e in errors:
        if isinstance(e, dict):
            code = (e.get("extensions") or {}).get("code")
            parts.append(f"{e.get('message')}{f' ({code})' if code else ''}")
    return "; ".join(parts)[:500] or "no message"


def _errors(response: Any) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("errors") if isinstance(body, dict) else None


def describe(response: Any) -> str:
    """An error answer's GraphQL ``errors``, else its text."""
    errors = _errors(response)
    return _messages(errors) if errors else (response.text or response.reason or "").strip()[:300]


def _wait(headers: Any, errors: Any) -> float | None:
    """Seconds to wait: the ``Retry-After`` header, else the error's ``extensions.retryAfter``."""
    wait = retry_after_seconds(headers.get("Retry-After"))
    if wait is None and isinstance(errors, list):
        for e in errors:
            value = ((e or {}).get("extensions") or {}).get("retryAfter") if isinstance(e, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return wait


class BufferSocial(MakesEffects):
    """Social port: one Buffer post per profile's channel, added to the channel's queue."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    port, backend, kind = "social", "buffer", "social_post"

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id, self.conn = conn_id, conn
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- settings ------------------------------------------------------------------------------
    @cached_property
    def api(self) -> HttpApi:  # built at call time
        return HttpApi(
            SERVICE, self.conn_id, self.conn, describe=describe, wait=lambda response: _wait(response.headers, _errors(response))
        )

    def _channels(self, profiles: list[str]) -> list[tuple[str, str]]:
        """(profile, channel id) of each profile; reads the connection's extra, no I/O."""
        mapping = self.conn.extra_dejson.get("channels")
        if not isinstance(mapping, dict) or not mapping:
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}) needs the extra 'channels': "
                '{"<profile name from the campaign file>": "<Buffer channel id>"}'
            )
        missing = [p for p in profiles if not isinstance(mapping.get(p), str) or not mapping[p]]
        if missing:
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}) has no Buffer channel for the profile(s) "
                f"{', '.join(map(repr, missing))} "
                f"in its extra 'channels' (it has {', '.join(map(repr, mapping)) or 'none'})"
            )
        return [(p, mapping[p]) for p in profiles]

    # --- GraphQL ---------------------------------------------------------------------------------
    def _graphql(self, document: str, operation: str, variables: dict[str, Any], action: str) -> dict[str, Any]:
        """Run one operation; return ``data``. Top-level errors and HTTP errors raise ServiceError."""
        request = {"query": document, "operationName": operation, "variables": variables}
        response = self.api.request("POST", "", action, json=request)  # an HTTP error raises there
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            raise PermanentServiceError(SERVICE, action, f"HTTP {status} without a GraphQL answer: {response.text[:200]!r}")
        if errors:
            codes = {((e.get("extensions") or {}).get("code") if isinstance(e, dict) else None) for e in errors}
            if codes == {"NOT_FOUND"}:
                raise BufferNotFound(SERVICE, action, _messages(errors), status=status)
            retryable = bool(codes & set(RETRYABLE_CODES))
            raise ServiceError.of(
                SERVICE,
                action,
                _messages(errors),
                status=status,
                retryable=retryable,
                retry_after=_wait(response.headers, errors) if retryable else None,
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise PermanentServiceError(SERVICE, action, f"the answer has no data: {response.text[:200]!r}")
        return data

    def _union(self, data: dict[str, Any], field: str, success: str, action: str) -> dict[str, Any]:
        """The success member of a mutation's union; a MutationError member raises (HTTP 200 or not)."""
        result = data.get(field)
        typename = result.get("__typename") if isinstance(result, dict) else None
        if isinstance(result, dict) and typename == success:
            return result
        message = result.get("message") if isinstance(result, dict) else None
        raise ServiceError.of(
            SERVICE,
            action,
            f"{typename or 'no result'}: {message or 'no message'}",
            status=200,
            retryable=typename in RETRYABLE_TYPES,
        )

    def _recent_posts(self, organization_id: str, channel_id: str) -> Iterator[dict[str, Any]]:
        days = self.api.setting("lookback_days", 14)
        if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}): the extra 'lookback_days' must be a positive number, got {days!r}"
            )
        since = (self.now() - timedelta(days=days)).astimezone(UTC)
        variables: dict[str, Any] = {
            "input": {
                "organizationId": organization_id,
                "filter": {"channelIds": [channel_id], "createdAt": {"start": since.strftime("%Y-%m-%dT%H:%M:%SZ")}},
                "sort": [{"field": "createdAt", "direction": "desc"}],
            },
            "first": PAGE,
            "after": None,
        }
        for _ in range(MAX_PAGES):
            page = self._graphql(GET_POSTS, "GetPosts", variables, f"look for our post on channel {channel_id}")["posts"]
            yield from (edge["node"] for edge in page.get("edges") or [])
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            variables["after"] = info["endCursor"]

    def _find_ours(self, organization_id: str, channel_id: str, digest: str) -> dict[str, Any] | None:
        def ours(node: dict[str, Any]) -> bool:
            same_text = fingerprint(node.get("text") or "") == digest
            return node.get("via") == "api" and node.get("channelId") == channel_id and same_text

        return next((node for node in self._recent_posts(organization_id, channel_id) if ours(node)), None)

    def _get_post(self, post_id: str) -> dict[str, Any] | None:
        try:
            return self._graphql(GET_POST, "GetPost", {"input": {"id": post_id}}, f"read post {post_id}")["post"]
        except BufferNotFound:
            return None

    # --- the port ------------------------------------------------------------------------------
    def plan(self, post: SocialPost) -> Effect:
        channels = self._channels(post.profiles)
        return self._effect(
            post.key,
            {
                "profiles": [{"profile": p, "channel_id": c} for p, c in channels],
                "key": post.key,
                "text_sha256": fingerprint(post.text),
            },
            f"Buffer post {post.key} queued for {', '.join(post.profiles)}",
        )

    def post(self, post: SocialPost) -> Effect:
        effect = self.plan(post)
        organization_id = self.api.setting("organization_id", required=True)
        digest = effect.ref["text_sha256"]
        made, adopted = [], []
        for item in effect.ref["profiles"]:
            profile, channel_id = item["profile"], item["channel_id"]
            existing = self._find_ours(organization_id, channel_id, digest)
            if existing is not None:
                post_id = existing["id"]
                adopted.append(profile)
            else:
                action = f"create the post for {profile} (channel {channel_id})"
                variables = {
                    "input": {"text": post.text, "channelId": channel_id, "schedulingType": "automatic", "mode": "addToQueue"}
                }  # the channel's next free slot
                data = self._graphql(CREATE_POST, "CreatePost", variables, action)
                result = self._union(data, "createPost", "PostActionSuccess", action)
                post_id = result["post"]["id"]
            made.append({"profile": profile, "channel_id": channel_id, "post_id": post_id})
            log.info(
                "Buffer post %s for %s (channel %s) %s",
                post_id,
                profile,
                channel_id,
                "adopted" if profile in adopted else "queued",
            )
        note = f" ({', '.join(adopted)} already queued)" if adopted else ""
        return effect.model_copy(
            update={
                "ref": {"posts": made, "key": post.key, "text_sha256": digest},
                "summary": f"Buffer post {post.key} queued for {', '.join(post.profiles)}{note}",
            }
        )

    def undo(self, effect: Effect) -> bool:
        if effect.backend != self.backend or effect.kind != self.kind:
            raise ValueError(f"{SERVICE}: cannot undo a {effect.backend} {effect.kind} effect")
        targets = effect.ref.get("posts") or effect.ref.get("profiles") or []
        organization_id = None
        removed, published = False, []
        for item in targets:
            if item.get("post_id"):
                node = self._get_post(item["post_id"])
            else:  # the planned effect: find the post again
                organization_id = organization_id or self.api.setting("organization_id", required=True)
                node = self._find_ours(organization_id, item["channel_id"], effect.ref["text_sha256"])
            if node is None:
                continue
            if node.get("status") in PUBLISHED:
                when = node.get("sentAt") or "an unknown time"
                published.append(f"{item['profile']} (post {node['id']}, {node.get('status')} at {when})")
                continue
            action = f"delete post {node['id']} for {item['profile']}"
            try:
                self._union(
                    self._graphql(DELETE_POST, "DeletePost", {"input": {"id": node["id"]}}, action),
                    "deletePost",
                    "DeletePostSuccess",
                    action,
                )
            except BufferNotFound:
                continue  # gone between the read and the delete
            removed = True
            log.info("deleted Buffer post %s for %s", node["id"], item["profile"])
        if published:
            raise IrrevocableServiceError(
                SERVICE,
                f"undo post {effect.key}",
                f"published already: {'; '.join(published)}: a published post cannot be recalled through Buffer",
            )
        return removed
