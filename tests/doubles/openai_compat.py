"""An OpenAI-compatible chat completions double: ``POST {prefix}/chat/completions``.

Checked as the OpenAI API reference defines the call (https://platform.openai.com/docs/api-reference/chat/create):

* ``Content-Type: application/json``; ``Authorization: Bearer <api_key>`` when the double has a key
  (401 ``invalid_api_key`` otherwise, as https://platform.openai.com/docs/guides/error-codes lists;
  such answers are listed in ``auth_failures``, not in ``problems``: the request itself is well formed);
* the body: only documented parameters; ``model`` a non-empty string; ``messages`` a non-empty array
  of ``{"role": "system"|"user"|"assistant", "content": string, "name"?: string}``; ``temperature``
  a number in 0..2; ``max_tokens`` an integer >= 1; ``response_format`` ``{"type": "text"}``,
  ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``; with
  ``json_object`` some message must contain the word "json" (the API answers 400 otherwise).

A refused request gets OpenAI's error object ``{"error": {"message", "type", "param", "code"}}``.
An accepted one gets a ``chat.completion`` object (id, object, created, model, choices[].message,
finish_reason, usage). What the assistant says is set per test: ``reply(content, finish_reason)``
queues answers; with none queued the double answers ``VALID_COPY`` (a complete copy as JSON), so an
end-to-end run works unattended. ``delay`` (seconds) slows every answer, for timeout tests.

Inspection helpers: ``received`` (every accepted request body, in order), ``authorizations`` (their
Authorization headers, None when absent), ``last_messages()`` (the
messages of the last one, ``{role: content}``), ``completions`` (how many answers were given), and
for our prompt's own layout (not the API's): ``data_blocks()`` (the research fenced as data) and
``writer_notes()`` (the notes fenced as instructions, checked to be fenced as the system message says).
The API creates nothing that outlives a call, so there is nothing to clean up after a campaign.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_body, json_response

DOCUMENTED_PARAMS = frozenset(
    "model messages temperature top_p n stream stream_options stop max_tokens max_completion_tokens presence_penalty "
    "frequency_penalty logit_bias logprobs top_logprobs user seed response_format tools tool_choice parallel_tool_calls "
    "store metadata modalities audio prediction reasoning_effort service_tier web_search_options verbosity "
    "safety_identifier prompt_cache_key".split()
)
ROLES = ("system", "user", "assistant")
_DATA_BLOCK = re.compile(r"^<<<DATA ([^\n>]+)>>>\n(.*?)\n<<<END DATA>>>$", re.DOTALL | re.MULTILINE)
_NOTES_NAMED = re.compile(r'"<<<WRITER NOTES ([0-9a-f]{16})>>>"')

VALID_COPY: dict[str, Any] = {
    "headline": "Pipewise 3: see every pipeline before it breaks",
    "email_subject": "Meet Pipewise 3",
    "email_body": (
        "Hello,\n\nPipewise 3 shows data teams every pipeline's health in one place.\n\nStart a free trial.\n\nThe Pipewise team"
    ),
    "social_posts": ["Pipewise 3 is here: pipeline health at a glance. Start a free trial: https://example.com/pipewise"],
    "blog_title": "Introducing Pipewise 3",
    "blog_body": "Pipewise 3 shows every pipeline's health in one place.\n\n## Get started\n\nStart a free trial.",
}


def data_blocks(user: str) -> tuple[list[tuple[str, str]], str]:
    """The (label, content) of every data block of a user message, and the text outside them."""
    return [(m[1], m[2]) for m in _DATA_BLOCK.finditer(user)], _DATA_BLOCK.sub("", user)


def fenced_writer_notes(system: str, user: str) -> str | None:
    """The writer notes of a request, None when it has none; AssertionError unless they are fenced
    as instructions: the system message names the block's code, and the user message holds exactly
    one opening and one closing line with that code, after every data block and outside them, with
    no fence-like text (nor the code) between."""
    named = _NOTES_NAMED.findall(system)
    _, outside = data_blocks(user)
    if not named:
        assert "WRITER NOTES" not in outside, "writer-notes lines in a request whose system message names no code"
        return None
    assert len(set(named)) == 1, f"the system message names several codes: {named}"
    code = named[0]
    opening, closing = f"<<<WRITER NOTES {code}>>>", f"<<<END WRITER NOTES {code}>>>"
    lines = outside.split("\n")
    assert lines.count(opening) == 1 and lines.count(closing) == 1, "not exactly one opening and one closing line"
    start, end = lines.index(opening), lines.index(closing)
    assert start < end, "the closing line comes before the opening one"
    after_data = max((m.end() for m in _DATA_BLOCK.finditer(user)), default=0)
    assert user.index(opening) > after_data, "the notes are inside or before the data"
    content = "\n".join(lines[start + 1 : end])
    assert "<<<" not in content and ">>>" not in content and code not in content, "fence-like text inside the notes"
    return content


@dataclass
class OpenAICompatDouble(ServiceDouble):
    """The chat completions endpoint under ``prefix`` (``/v1``); ``api_key`` None = a local server with no key."""

    name: str = "openai-compatible chat completions"
    api_key: str | None = None
    prefix: str = "/v1"
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    auth_failures: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # the Authorization header of each accepted request
    completions: int = 0

    def __post_init__(self) -> None:
        self._replies: list[tuple[str | None, str, dict[str, Any]]] = []
        super().__post_init__()

    def routes(self) -> None:
        self.route("POST", f"{self.prefix}/chat/completions", self._chat)

    @property
    def base_url(self) -> str:
        """What the connection's host is: the API's base URL with its version path."""
        return self.url + self.prefix

    # --- OpenAI's answers --------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """OpenAI's error object; ``body`` may give message/type/param/code, or be one already."""
        if isinstance(body, dict) and "error" not in body:
            kinds = {
                400: "invalid_request_error",
                401: "invalid_request_error",
                404: "invalid_request_error",
                429: "rate_limit_error",
                500: "server_error",
                503: "server_error",
            }
            body = {
                "error": {
                    "message": body.get("message", json.dumps(body)),
                    "type": body.get("type", kinds.get(status, "api_error")),
                    "param": body.get("param"),
                    "code": body.get("code"),
                }
            }
        return json_response(body, status, headers)

    def reply(self, content: str | None, finish_reason: str = "stop", **message: Any) -> None:
        """Queue what the assistant says next (``content`` None with ``refusal=...`` for a refusal)."""
        self._replies.append((content, finish_reason, message))

    def last_messages(self) -> dict[str, str]:
        return {m["role"]: m["content"] for m in self.received[-1]["messages"]}

    def data_blocks(self) -> tuple[list[tuple[str, str]], str]:
        """The (label, content) of every data block of the last user message, and the text outside them."""
        return data_blocks(self.last_messages()["user"])

    def writer_notes(self) -> str | None:
        """The writer notes of the last request (see ``fenced_writer_notes``)."""
        messages = self.last_messages()
        return fenced_writer_notes(messages["system"], messages["user"])

    # --- the endpoint ------------------------------------------------------------------------
    def _chat(self, request: Request, groups: dict[str, str]) -> Response:
        if self.api_key is not None:
            auth = request.headers.get("Authorization")
            if auth != f"Bearer {self.api_key}":
                reason = "You didn't provide an API key." if auth is None else "Incorrect API key provided."
                # The service's answer to a request that is well formed: listed apart from ``problems``.
                self.auth_failures.append(reason)
                return self.error(401, {"message": reason, "code": "invalid_api_key"})
        body = json_body(self, request)
        self._check(body)
        self.received.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if self.delay:
            time.sleep(self.delay)
        content, finish_reason, extra = self._replies.pop(0) if self._replies else (json.dumps(VALID_COPY), "stop", {})
        self.completions += 1
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        completion_tokens = len((content or "").split())
        return json_response(
            {
                "id": f"chatcmpl-double{self.completions}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_double",  # a field our client does not know: it must be ignored
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None, **extra},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def _bad(self, message: str, param: str | None) -> Exception:
        return self.refuse(message, self.error(400, {"message": message, "param": param}))

    def _check(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise self._bad("The request body must be a JSON object.", None)
        unknown = sorted(set(body) - DOCUMENTED_PARAMS)
        if unknown:
            raise self._bad(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise self._bad("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self._bad("'messages' must be a non-empty array", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise self._bad(f"messages[{i}].role must be one of {ROLES}", f"messages[{i}].role")
            if not isinstance(message.get("content"), str):
                raise self._bad(f"messages[{i}].content must be a string", f"messages[{i}].content")
            if set(message) - {"role", "content", "name"} or not isinstance(message.get("name", ""), str):
                raise self._bad(f"messages[{i}] has unknown or mistyped fields: {sorted(message)}", f"messages[{i}]")
        temperature = body.get("temperature", 1)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            raise self._bad(f"{temperature!r} is not a number between 0 and 2 - 'temperature'", "temperature")
        max_tokens = body.get("max_tokens", 1)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise self._bad(f"{max_tokens!r} is not an integer >= 1 - 'max_tokens'", "max_tokens")
        response_format = body.get("response_format")
        if response_format is not None:
            kind = response_format.get("type") if isinstance(response_format, dict) else None
            if kind not in ("text", "json_object", "json_schema"):
                raise self._bad(f"Invalid value for 'response_format.type': {kind!r}", "response_format.type")
            if kind == "json_schema" and not isinstance(response_format.get("json_schema"), dict):
                raise self._bad("response_format.json_schema is required with type json_schema", "response_format.json_schema")
            if kind == "json_object" and not any("json" in m["content"].lower() for m in messages):
                message = "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
                raise self._bad(message, "messages")
