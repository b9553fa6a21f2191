"""A Slack Web API double: chat.postMessage, conversations.history and chat.delete.

Follows the method reference at https://docs.slack.dev/reference/methods/chat.postMessage,
https://docs.slack.dev/reference/methods/conversations.history and
https://docs.slack.dev/reference/methods/chat.delete (also api.slack.com/methods/...), message
metadata at https://docs.slack.dev/messaging/message-metadata and rate limits at
https://docs.slack.dev/apis/web-api/rate-limits.

As Slack does, every method is served at ``/api/<method>`` for POST (and GET for the read method
``conversations.history``), with arguments in the query string, a form body
(``application/x-www-form-urlencoded`` / ``multipart/form-data``) or a JSON body (``application/json``,
token in the ``Authorization: Bearer`` header only). Errors are HTTP 200 ``{"ok": false, "error": code}``.

Two kinds of refusal:

- a request the docs do not allow is recorded in ``problems`` and answered with Slack's code: no
  token (``not_authed``), a token in a JSON body, a body that is not form or JSON
  (``invalid_form_data``/``invalid_json``), an unknown argument name (``invalid_arg_name``), a
  missing or mistyped argument (``invalid_arguments``), metadata without ``event_type`` and an
  object ``event_payload`` (``invalid_metadata_format``), a malformed ``ts``, ``limit`` or ``cursor``;
- a well-formed request that the workspace's state refuses is answered as Slack would and is NOT a
  problem (tests set these states up on purpose): a token other than ``token`` (``invalid_auth``),
  an unknown channel (``channel_not_found``), a channel the bot is not in (``not_in_channel``), a
  text longer than 40,000 characters (``msg_too_long``), no text (``no_text``), deleting a message
  of someone else (``cant_delete_message``) or one that does not exist (``message_not_found``).

``conversations.history`` returns messages newest first, between ``oldest`` and ``latest``, pages of
``limit`` (1-999) with ``response_metadata.next_cursor``; ``metadata`` only with
``include_all_metadata``. Stored messages look like the ones Slack returns for a bot token
(``type``, ``user``, ``bot_id``, ``app_id``, ``text``, ``ts``, ``metadata``).

Inspection helpers (for end-to-end tests):

- ``live_messages(channel=None)``: the messages not deleted, in posting order, of one channel or all;
- ``deleted_messages()``: the messages removed by ``chat.delete``;
- ``received``: the arguments of every authorised call (``{"method", "args", "json"}``, token removed);
- ``add_message(channel, text, user=..., metadata=None)``: seeds a message (by another user by default).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_response

_TS = re.compile(r"^\d{10}\.\d{6}$")
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_TEXT_MAX = 40_000  # chat.postMessage: "msg_too_long" beyond this
_COMMON_ARGS = {"token"}
POST_MESSAGE_ARGS = {
    "channel",
    "text",
    "as_user",
    "attachments",
    "blocks",
    "icon_emoji",
    "icon_url",
    "link_names",
    "markdown_text",
    "metadata",
    "mrkdwn",
    "parse",
    "reply_broadcast",
    "thread_ts",
    "unfurl_links",
    "unfurl_media",
    "username",
    "current_draft_last_updated_ts",
}
HISTORY_ARGS = {"channel", "cursor", "include_all_metadata", "inclusive", "latest", "limit", "oldest"}
DELETE_ARGS = {"channel", "ts", "as_user"}
_BOOLEAN_ARGS = {
    "as_user",
    "link_names",
    "mrkdwn",
    "reply_broadcast",
    "unfurl_links",
    "unfurl_media",
    "include_all_metadata",
    "inclusive",
}


@dataclass
class SlackDouble(ServiceDouble):
    """Slack Web API at ``<url>/api/`` (pass ``api_url`` as the connection's ``base_url``)."""

    name: str = "Slack"
    token: str = "xoxb-test-token"
    team: str = "T0TEAM0001"
    bot_user: str = "U0BOT00001"
    bot_id: str = "B0BOT00001"
    app_id: str = "A0APP00001"
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"C0REVIEWS1": []})
    not_member: set[str] = field(default_factory=set)  # channels that exist but the bot has not joined
    max_page: int = 999  # Slack may return fewer items than `limit` (non-Marketplace apps: at most 15)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)  # {"method", "args" (token removed), "json"} per authorised call

    def __post_init__(self) -> None:
        self._last_us = 0
        super().__post_init__()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def routes(self) -> None:
        self.route("POST", r"/api/chat\.postMessage", self._post_message)
        self.route("POST", r"/api/conversations\.history", self._history)
        self.route("GET", r"/api/conversations\.history", self._history)
        self.route("POST", r"/api/chat\.delete", self._delete)

    # --- Slack's answers -------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """Slack's error shape: ``{"ok": false, "error": "<code>"}`` (HTTP 200 for method errors)."""
        if isinstance(body, dict):
            code = body.get("error") or body.get("message") or f"http_{status}"
            body = {**{k: v for k, v in body.items() if k != "message"}, "ok": False, "error": code}
        return json_response(body, status, headers)

    def not_found(self, what: str) -> Response:
        return self.error(404, {"error": "unknown_method"})

    def _fail(self, code: str, problem: str | None = None) -> Exception:
        """``raise self._fail(code)``: Slack's answer; with ``problem``, also recorded as a violation."""
        response = self.error(200, {"error": code})
        if problem:
            return self.refuse(f"{code}: {problem}", response)
        return _Answer(response)

    # --- request parsing ---------------------------------------------------------------------
    def _args(self, request: Request, allowed: set[str]) -> tuple[dict[str, Any], bool]:
        """The method's arguments (query string + form or JSON body) and whether the body was JSON;
        checks the token the way Slack does."""
        args: dict[str, Any] = dict(request.args.items())
        is_json = False
        if request.method == "POST" and request.get_data():
            if request.mimetype == "application/json":
                is_json = True
                try:
                    body = json.loads(request.get_data(as_text=True))
                except ValueError:
                    raise self._fail("invalid_json", "the JSON body does not parse") from None
                if not isinstance(body, dict):
                    raise self._fail("json_not_object", "the JSON body is not an object")
                if "token" in body:
                    raise self._fail("not_authed", "a JSON body cannot carry the token: send Authorization: Bearer")
                args.update(body)
            elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                args.update(request.form.items())
            else:
                raise self._fail("invalid_form_data", f"Content-Type {request.content_type!r} is neither a form nor JSON")
        unknown = sorted(set(args) - allowed - _COMMON_ARGS)
        if unknown:
            raise self._fail("invalid_arg_name", f"arguments not documented for this method: {unknown}")
        auth = request.headers.get("Authorization")
        token = auth[len("Bearer ") :] if auth and auth.startswith("Bearer ") else args.pop("token", None)
        args.pop("token", None)
        if auth and not auth.startswith("Bearer "):
            raise self._fail("not_authed", "the Authorization header is not 'Bearer <token>'")
        if not token:
            raise self._fail("not_authed", "no token: neither Authorization: Bearer nor a token argument")
        if token != self.token:
            raise self._fail("invalid_auth")
        for name in _BOOLEAN_ARGS & set(args):
            args[name] = self._boolean(name, args[name], is_json)
        self.received.append({"method": request.path.rsplit("/", 1)[-1], "args": copy.deepcopy(args), "json": is_json})
        return args, is_json

    def _boolean(self, name: str, value: Any, is_json: bool) -> bool:
        if isinstance(value, bool):
            return value
        if not is_json and str(value).lower() in ("1", "true", "0", "false"):
            return str(value).lower() in ("1", "true")
        raise self._fail("invalid_arguments", f"{name} must be a boolean, got {value!r}")

    def _channel(self, args: dict[str, Any]) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise self._fail("channel_not_found", "the required argument channel is missing")
        if channel not in self.channels:
            raise self._fail("channel_not_found")
        if channel in self.not_member:
            raise self._fail("not_in_channel")
        return channel

    def _next_ts(self) -> str:
        us = max(int(time.time() * 1_000_000), self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    # --- methods -------------------------------------------------------------------------------
    def _post_message(self, request: Request, groups: dict[str, str]) -> Response:
        try:
            args, is_json = self._args(request, POST_MESSAGE_ARGS)
            channel = self._channel(args)
            text = args.get("text")
            if text is not None and not isinstance(text, str):
                raise self._fail("invalid_arguments", f"text must be a string, got {type(text).__name__}")
            if not text and not args.get("blocks") and not args.get("attachments") and not args.get("markdown_text"):
                raise self._fail("no_text")
            if text and len(text) > _TEXT_MAX:
                raise self._fail("msg_too_long")
            metadata = self._metadata(args.get("metadata"), is_json) if "metadata" in args else None
        except _Answer as answer:
            return answer.response
        ts = self._next_ts()
        message = {
            "type": "message",
            "user": self.bot_user,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text or "",
            "ts": ts,
            "team": self.team,
        }
        if metadata is not None:
            message["metadata"] = metadata
        self.channels[channel].append(message)
        return json_response({"ok": True, "channel": channel, "ts": ts, "message": copy.deepcopy(message)})

    def _metadata(self, value: Any, is_json: bool) -> dict[str, Any]:
        if isinstance(value, str) and not is_json:  # form bodies carry it "presented as a URL-encoded string"
            try:
                value = json.loads(value)
            except ValueError:
                raise self._fail("invalid_metadata_format", "metadata is not JSON") from None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("event_type"), str)
            or not _EVENT_TYPE.match(value["event_type"])
            or not isinstance(value.get("event_payload"), dict)
        ):
            problem = f"metadata needs an alphanumeric event_type and an object event_payload: {value!r}"
            raise self._fail("invalid_metadata_format", problem)
        return {"event_type": value["event_type"], "event_payload": copy.deepcopy(value["event_payload"])}

    def _history(self, request: Request, groups: dict[str, str]) -> Response:
        try:
            args, _ = self._args(request, HISTORY_ARGS)
            channel = self._channel(args)
            limit = self._int(args.get("limit", 100), "limit", 1, 999)
            oldest = self._ts_arg(args.get("oldest", "0"), "invalid_ts_oldest")
            latest = self._ts_arg(args.get("latest", f"{time.time() + 1:.6f}"), "invalid_ts_latest")
            offset = self._cursor(args.get("cursor"))
        except _Answer as answer:
            return answer.response
        inclusive = args.get("inclusive", False)

        def within(ts: float) -> bool:
            return oldest <= ts <= latest if inclusive else oldest < ts < latest

        newest_first = [m for m in reversed(self.channels[channel]) if within(float(m["ts"]))]
        limit = min(limit, self.max_page)
        page = newest_first[offset : offset + limit]
        more = offset + limit < len(newest_first)
        with_metadata = args.get("include_all_metadata", False)
        messages = [
            copy.deepcopy(m) if with_metadata else {k: v for k, v in copy.deepcopy(m).items() if k != "metadata"} for m in page
        ]
        cursor = base64.b64encode(f"offset:{offset + limit}".encode()).decode() if more else ""
        return json_response(
            {"ok": True, "messages": messages, "has_more": more, "pin_count": 0, "response_metadata": {"next_cursor": cursor}}
        )

    def _delete(self, request: Request, groups: dict[str, str]) -> Response:
        try:
            args, _ = self._args(request, DELETE_ARGS)
            channel = self._channel(args)
            ts = args.get("ts")
            if not isinstance(ts, str) or not _TS.match(ts):
                raise self._fail("message_not_found", f"ts must look like 1405894322.002768, got {ts!r}")
            message = next((m for m in self.channels[channel] if m["ts"] == ts), None)
            if message is None:
                raise self._fail("message_not_found")
            if message.get("user") != self.bot_user:  # a bot token deletes only the bot's own messages
                raise self._fail("cant_delete_message")
        except _Answer as answer:
            return answer.response
        self.channels[channel].remove(message)
        self.deleted.append({**message, "channel": channel})
        return json_response({"ok": True, "channel": channel, "ts": ts})

    # --- argument checks ---------------------------------------------------------------------------
    def _int(self, value: Any, name: str, low: int, high: int) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self._fail("invalid_arguments", f"{name} must be an integer, got {value!r}") from None
        if not low <= number <= high:
            raise self._fail("invalid_limit", f"{name} must be within {low}..{high}, got {number}")
        return number

    def _ts_arg(self, value: Any, code: str) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise self._fail(code, f"not a Unix timestamp: {value!r}") from None

    def _cursor(self, value: Any) -> int:
        if not value:
            return 0
        try:
            kind, _, number = base64.b64decode(str(value)).decode().partition(":")
            if kind == "offset":
                return int(number)
        except ValueError:
            pass
        raise self._fail("invalid_cursor", f"not a cursor this double handed out: {value!r}")

    # --- inspection helpers -------------------------------------------------------------------------
    def add_message(self, channel: str, text: str, user: str = "U0HUMAN001", metadata: dict[str, Any] | None = None) -> str:
        """Seed a message as if someone else posted it; returns its ts."""
        with self._lock:
            ts = self._next_ts()
            message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts, "team": self.team}
            if metadata is not None:
                message["metadata"] = copy.deepcopy(metadata)
            self.channels.setdefault(channel, []).append(message)
        return ts

    def live_messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The messages still in Slack (not deleted), oldest first, each with its ``channel``."""
        with self._lock:
            return [
                {**copy.deepcopy(m), "channel": c}
                for c, messages in self.channels.items()
                if channel is None or c == channel
                for m in messages
            ]

    def deleted_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.deleted)


class _Answer(Exception):
    """A documented error answer that is not a problem of the request (see the module docstring)."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered")
        self.response = response
