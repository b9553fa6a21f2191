"""Notify port backend: a message in the Slack channel reviewers watch, through the Slack Web API.

Calls go through Airflow's ``SlackHook`` (``slack_sdk.WebClient``), built at call time from the
connection (type ``slack``): the password is the bot token (``xoxb-...``), the extra ``channel`` the
id of the channel (``C0123ABCDEF``; ``conversations.history`` takes ids only), and the hook's own
extras (``base_url``, ``timeout``, ``proxy``) are read by the hook. ``timeout`` (default 30 s) is
also each call's total deadline (:mod:`include.orchestrator.resilience.deadlines`). The client gets an empty list of
retry handlers: it never retries or sleeps on its own (slack_sdk's default retries a failed
connection once). Airflow retries the task, with the campaign's backoff and ``retry_after``.

Methods used, as documented at https://docs.slack.dev/reference/methods/<name>:

- ``chat.postMessage`` (JSON body): the text in Slack mrkdwn, with ``metadata``
  ``{"event_type": "campaign_notification", "event_payload": {"key": ...}}`` so that the message
  can be found again from its idempotency key (https://docs.slack.dev/messaging/message-metadata);
- ``conversations.history`` with ``include_all_metadata``: before posting, and to undo an effect
  recorded before Slack's answer (no ``ts``), the channel's recent history is searched for that key
  (bounded: the last 7 days, at most 200 messages);
- ``chat.delete`` (undo): a bot token deletes only the bot's own messages; ``message_not_found``
  means already gone.

Text from campaigns and LLMs is untrusted: ``&``, ``<`` and ``>`` are escaped as HTML entities, as
https://docs.slack.dev/messaging/formatting-message-text#escaping asks, so nothing in it can become
a mention (``<!channel>``), a link or a user reference.

Errors: Slack answers most failures as HTTP 200 ``{"ok": false, "error": "<code>"}``
(``invalid_auth``, ``not_authed``, ``channel_not_found``, ``not_in_channel``, ``msg_too_long``, ...):
those fail at once (retryable False), with the code in the message. HTTP 429 (``ratelimited``, with
``Retry-After``, https://docs.slack.dev/apis/web-api/rate-limits), 5xx, Slack's own transient
codes, timeouts and connection errors are retryable. Everything becomes ``errors.ServiceError``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.http_api import retry_after_seconds
from include.orchestrator.domain.ports import Effect, Message
from include.orchestrator.errors import (
    ConnectionConfigError,
    DeadlineExceeded,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
)
from include.orchestrator.resilience.deadlines import within

SERVICE = "Slack"
DEFAULT_BASE_URL = "https://slack.com/api/"
EVENT_TYPE = "campaign_notification"
HISTORY_WINDOW_S = 7 * 24 * 3600  # how far back a retry looks for the message an earlier try posted
HISTORY_MAX_MESSAGES = 200  # and how many messages at most (Slack recommends pages of <= 200)
HISTORY_MAX_PAGES = 5
TEXT_LIMIT = 3500  # Slack advises <= 4,000 characters of text; the link carries the rest
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
# "ok": false codes that mean Slack's trouble, not ours (https://docs.slack.dev/apis/web-api/#errors)
_TRANSIENT = {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


def escape(text: str) -> str:
    """Slack's three control characters as HTML entities; nothing else is encoded (Slack decodes only these)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    """``<url|label>``, or the escaped URL as plain text when it is not an http(s) URL."""
    if not re.match(r"^https?://\S+$", url):
        return escape(url)
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def message_text(message: Message) -> str:
    """The mrkdwn text of a notification: subject in bold, text, link, and who it is for."""
    body = message.text if len(message.text) <= TEXT_LIMIT else message.text[: TEXT_LIMIT - 1] + "…"
    lines = [f"*{escape(message.subject)}*", escape(body)]
    if message.link:
        lines.append(_link(message.link, "Open in Airflow"))
    if message.to:
        lines.append(f"For: {escape(', '.join(message.to))}")
    return "\n".join(line for line in lines if line)


def _header(headers: Any, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


def service_error(action: str, exc: Exception, timeout: float | None = None) -> Exception:
    """Map what slack_sdk raises onto ``ServiceError`` (other exceptions are returned unchanged)."""
    import http.client

    from slack_sdk.errors import SlackApiError, SlackClientError

    if isinstance(exc, DeadlineExceeded):
        return RetryableServiceError(SERVICE, action, exc.reason)
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or f"HTTP {status}")[:200]
        detail = ""
        if data.get("needed"):  # missing_scope
            detail = f" (needs scope {data['needed']})"
        elif messages := (data.get("response_metadata") or {}).get("messages"):
            detail = f" ({'; '.join(map(str, messages))[:300]})"
        retryable = status == 429 or status >= 500 or code in _TRANSIENT
        retry_after = retry_after_seconds(_header(response.headers, "Retry-After")) if retryable else None
        return ServiceError.of(
            SERVICE,
            action,
            f"HTTP {status}: {code}{detail}",
            status=status or None,
            retryable=retryable,
            retry_after=retry_after,
            code=code,
        )
    if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
        within = f" within {timeout:g} s" if timeout else ""
        return RetryableServiceError(SERVICE, action, f"no answer{within} ({type(exc).__name__})")
    if isinstance(exc, (OSError, http.client.HTTPException)):  # URLError, refused, reset, bad status line
        return RetryableServiceError(
            SERVICE, action, f"connection failed ({type(exc).__name__}: {getattr(exc, 'reason', '')})"[:300]
        )
    if isinstance(exc, SlackClientError):  # SlackRequestError: a request slack_sdk refuses to send (bad base_url)
        return PermanentServiceError(SERVICE, action, f"{type(exc).__name__}: {str(exc)[:200]}")
    return exc


class SlackNotifier(MakesEffects):
    """Notify port: one message per key in the configured Slack channel; see the module docstring."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    port, backend, kind = "notify", "slack", "slack_message"

    def __init__(self, conn_id: str, conn: Any) -> None:
        if not conn.password:
            raise ConnectionConfigError(f"connection {conn_id!r} (Slack) needs the bot token (xoxb-...) in the password field")
        self.conn_id, self.conn = conn_id, conn
        self.settings: dict[str, Any] = dict(conn.extra_dejson)
        self._client_cache: Any = None

    # --- configuration ---------------------------------------------------------------------
    @property
    def channel(self) -> str:
        channel = str(self.settings.get("channel") or "").strip()
        if not _CHANNEL_ID.match(channel):
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} (Slack) needs the extra 'channel': the id of the reviewers' channel "
                f"(like C0123ABCDEF, from the channel's details), got {channel or '(none)'!r}"
            )
        return channel

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout") or 30)

    def _client(self) -> Any:
        """The WebClient, built on first use: SlackHook reading our connection object, no retry handlers."""
        if self._client_cache is None:
            from airflow.providers.slack.hooks.slack import SlackHook

            conn = self.conn

            class _Hook(SlackHook):
                def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                    return conn  # the connection we were given, not a second lookup

            base_url = str(self.settings.get("base_url") or DEFAULT_BASE_URL)
            # The hook takes whole seconds, and 0 would make the socket non-blocking (every call fails at
            # once): round up. The total deadline (``within``) still holds the call to ``timeout``.
            hook = _Hook(
                slack_conn_id=self.conn_id,
                base_url=base_url.rstrip("/") + "/",
                retry_handlers=[],
                timeout=max(1, math.ceil(self.timeout)),
            )
            self._client_cache = hook.client
        return self._client_cache

    def _call(self, action: str, fn: Callable[[Any], Any]) -> dict[str, Any]:
        try:
            client = self._client()  # no I/O, but the first one imports the SDK: outside the call's deadline
            with within(self.timeout, SERVICE, str(self.settings.get("base_url") or DEFAULT_BASE_URL)):
                response = fn(client)
        except Exception as exc:
            mapped = service_error(action, exc, self.timeout)
            if mapped is exc:
                raise
            raise mapped from None
        return response.data if isinstance(response.data, dict) else {}

    # --- the port ------------------------------------------------------------------------------
    def plan(self, message: Message) -> Effect:
        channel = self.channel
        return self._effect(
            message.key,
            {"channel": channel, "key": message.key},
            f"Slack message {message.subject!r} for {', '.join(message.to) or 'the channel'} in {channel}",
        )

    def notify(self, message: Message) -> Effect:
        planned = self.plan(message)
        channel = planned.ref["channel"]
        found = self._find(channel, message.key)
        if found is not None:  # an earlier try posted it: adopt, never post twice
            return planned.model_copy(
                update={"ref": {**planned.ref, "ts": found["ts"]}, "summary": planned.summary + " (already posted)"}
            )
        data = self._call(
            "chat.postMessage",
            lambda c: c.chat_postMessage(
                channel=channel,
                text=message_text(message),
                mrkdwn=True,
                unfurl_links=False,  # the link is the Airflow UI: no preview fetched by Slack
                unfurl_media=False,
                metadata={"event_type": EVENT_TYPE, "event_payload": {"key": message.key}},
            ),
        )
        ts = data.get("ts")
        if not isinstance(ts, str) or not ts:
            raise RetryableServiceError(SERVICE, "chat.postMessage", "the answer carries no message ts")
        return planned.model_copy(update={"ref": {**planned.ref, "channel": data.get("channel") or channel, "ts": ts}})

    def undo(self, effect: Effect) -> bool:
        if effect.kind != self.kind or "key" not in effect.ref:
            raise ValueError(f"slack: not a Slack message effect: {effect.kind} {effect.ref}")
        channel = str(effect.ref.get("channel") or self.channel)
        ts = effect.ref.get("ts")
        if not ts:  # recorded before Slack answered: find it by its key, if it was posted at all
            found = self._find(channel, effect.ref["key"])
            if found is None:
                return False
            ts = found["ts"]
        try:
            self._call("chat.delete", lambda c: c.chat_delete(channel=channel, ts=ts))
        except ServiceError as exc:
            if getattr(exc, "code", None) == "message_not_found":
                return False
            raise
        return True

    # --- finding a message by its key ----------------------------------------------------------
    def _history(self, channel: str) -> Iterator[dict[str, Any]]:
        oldest = f"{time.time() - HISTORY_WINDOW_S:.6f}"
        cursor, seen = None, 0
        for _ in range(HISTORY_MAX_PAGES):

            def page(c: Any, cursor: str | None = cursor, seen: int = seen) -> Any:
                return c.conversations_history(
                    channel=channel,
                    oldest=oldest,
                    limit=HISTORY_MAX_MESSAGES - seen,
                    include_all_metadata=True,
                    **({"cursor": cursor} if cursor else {}),
                )

            data = self._call("conversations.history", page)
            messages = data.get("messages") or []
            for item in messages:
                if isinstance(item, dict):
                    yield item
            seen += len(messages)
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor or seen >= HISTORY_MAX_MESSAGES:
                return

    def _find(self, channel: str, message_key: str) -> dict[str, Any] | None:
        for item in self._history(channel):
            metadata = item.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if (
                metadata.get("event_type") == EVENT_TYPE
                and isinstance(payload, dict)
                and payload.get("key") == message_key
                and isinstance(item.get("ts"), str)
            ):
                return item
        return None
