"""Notes port, Notion backend: research notes are the pages of one Notion data source (read-only).

Calls, as Notion's public API reference documents them (https://developers.notion.com/reference):

- ``GET /v1/data_sources/{id}`` (https://developers.notion.com/reference/retrieve-a-data-source):
  the schema, to find the property of type ``title`` unless the connection names it;
- ``POST /v1/data_sources/{id}/query`` (https://developers.notion.com/reference/query-a-data-source,
  filters at https://developers.notion.com/reference/filter-data-source-entries): pages whose title
  contains any query word, ``{"or": [{"property": <title>, "title": {"contains": <word>}}, ...]}``,
  most recently edited first;
- ``GET /v1/blocks/{page_id}/children`` (https://developers.notion.com/reference/get-block-children):
  the page's text, paginated with ``start_cursor``/``has_more``.

Every request carries ``Notion-Version`` (https://developers.notion.com/reference/versioning);
the default is 2026-03-11, the newest version. Its breaking changes against 2025-09-03 (``archived``
renamed ``in_trash``, block positioning, ``transcription`` renamed ``meeting_notes``,
https://developers.notion.com/docs/upgrade-guide-2026-03-11) do not touch the reads made here, so
the extra ``notion_version`` may pin 2025-09-03, the first version with data sources.

Ranking: Notion filters but does not rank. One query fetches up to ``CANDIDATES`` matching pages
(``page_size``; at least ``limit``, at most 100), which are ranked here by how many query words
their title contains, then by Notion's order (last edited first); only the best ``limit`` pages are
read. A query that matches nothing returns nothing: there is no fallback to recent pages, because
unrelated pages would reach the copy writer as "research" (the local notes folder does the same).

Page text is bounded (``MAX_BLOCK_PAGES`` pages of 100 top-level blocks, ``MAX_NOTE_CHARS``
characters) and taken from the ``rich_text`` of text blocks (paragraphs, headings, list items, to-dos,
quotes, callouts, toggles); nested blocks are not read. It is data for the writer, never instructions.

Errors are ``{"object": "error", "status", "code", "message"}`` (https://developers.notion.com/reference/status-codes):
400 ``validation_error`` and 404 ``object_not_found`` (often: the data source is not shared with the
integration) fail at once; 429 ``rate_limited`` (with ``Retry-After``) and 5xx are retried.

Connection (type ``http``): host ``https://api.notion.com``, password = the integration token,
extra ``data_source_id`` (required), ``title_property`` (optional), ``notion_version`` (optional).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from include.orchestrator.backends.common.http_api import HttpApi, error_text
from include.orchestrator.backends.common.text import STOPWORDS
from include.orchestrator.domain.ports import Note
from include.orchestrator.errors import ConnectionConfigError, PermanentServiceError

SERVICE = "notion"
NOTION_VERSION = "2026-03-11"
CANDIDATES = 25  # pages fetched per query to rank (page_size; Notion allows up to 100)
MAX_PAGE_SIZE = 100
MAX_TERMS = 10  # filter conditions per query
MAX_BLOCK_PAGES = 5  # pages of block children read per note (100 blocks each)
MAX_NOTE_CHARS = 20_000
_ID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Text blocks and how a line of each reads in the note (markdown-like, for the writer).
_PREFIX = {
    "paragraph": "",
    "heading_1": "# ",
    "heading_2": "## ",
    "heading_3": "### ",
    "bulleted_list_item": "- ",
    "numbered_list_item": "1. ",
    "to_do": "- [ ] ",
    "quote": "> ",
    "callout": "",
    "toggle": "",
}


def describe(response: Any) -> str:
    """Notion's error as ``code: message``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("object") == "error" and body.get("message"):
        return f"{body.get('code') or 'error'}: {body['message']}"[:500]
    return error_text(response)


def query_terms(query: str) -> list[str]:
    """The query's words worth filtering on, in order, at most ``MAX_TERMS``."""
    terms = [w for w in re.findall(r"\w+", query.casefold()) if w not in STOPWORDS and len(w) > 1]
    return list(dict.fromkeys(terms))[:MAX_TERMS]


def plain_text(rich_text: Any) -> str:
    if not isinstance(rich_text, list):
        return ""
    return "".join(str(item.get("plain_text") or "") for item in rich_text if isinstance(item, dict))


def block_line(block: dict[str, Any]) -> str:
    """One text block as a line ('' for other blocks)."""
    kind = block.get("type")
    if kind not in _PREFIX:
        return ""
    data = block.get(kind) or {}
    text = " ".join(plain_text(data.get("rich_text")).split())
    if not text:
        return ""
    prefix = "- [x] " if kind == "to_do" and data.get("checked") else _PREFIX[kind]
    return prefix + text


def page_title(page: dict[str, Any]) -> str:
    """The page's title: the value of its one property of type ``title``."""
    for value in (page.get("properties") or {}).values():
        if isinstance(value, dict) and value.get("type") == "title":
            return " ".join(plain_text(value.get("title")).split())
    return ""


class NotionNotes:
    """:class:`~include.orchestrator.domain.ports.NotesPort` over a Notion data source."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id = conn_id
        self.api = HttpApi(SERVICE, conn_id, conn, describe=describe)  # Bearer <integration token>
        self.data_source_id = str(self.api.setting("data_source_id", required=True))
        if not _ID.match(self.data_source_id):
            raise ConnectionConfigError(
                f"connection {conn_id!r} ({SERVICE}): data_source_id {self.data_source_id!r} is not a Notion id "
                "(32 hex digits, dashes optional; see the database's 'Manage data sources' menu)"
            )
        self.version = str(self.api.setting("notion_version") or NOTION_VERSION)
        if not _VERSION.match(self.version):
            raise ConnectionConfigError(
                f"connection {conn_id!r} ({SERVICE}): notion_version must be a date like {NOTION_VERSION}"
            )
        self._title_property: str | None = self.api.setting("title_property") or None

    def search(self, query: str, limit: int) -> list[Note]:
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        title = self.title_property()
        conditions = [{"property": title, "title": {"contains": term}} for term in terms]
        body = {
            "filter": conditions[0] if len(conditions) == 1 else {"or": conditions},
            "sorts": [{"timestamp": "last_edited_time", "direction": "descending"}],
            "page_size": min(MAX_PAGE_SIZE, max(limit, CANDIDATES)),
        }
        answer = self._call("POST", f"v1/data_sources/{quote(self.data_source_id)}/query", "query the data source", json=body)
        results = answer.get("results") or []
        pages = [p for p in results if isinstance(p, dict) and p.get("object") == "page" and not p.get("in_trash")]
        titled = [(page_title(page), page) for page in pages]
        # Most query words in the title first; sorted() is stable, so ties keep Notion's order (last edited first).
        ranked = sorted(titled, key=lambda item: -sum(term in item[0].casefold() for term in terms))
        return [
            Note(title=name, text=self.page_text(page), source=str(page.get("url") or page.get("id")))
            for name, page in ranked[:limit]
        ]

    def title_property(self) -> str:
        """The name of the data source's title property (from the connection, else from its schema)."""
        if self._title_property is None:
            action = "read the data source's schema"
            answer = self._call("GET", f"v1/data_sources/{quote(self.data_source_id)}", action)
            properties = answer.get("properties") or {}
            names = [name for name, prop in properties.items() if isinstance(prop, dict) and prop.get("type") == "title"]
            if not names:
                raise PermanentServiceError(SERVICE, action, f"data source {self.data_source_id} has no property of type title")
            self._title_property = names[0]
        return self._title_property

    def page_text(self, page: dict[str, Any]) -> str:
        page_id = str(page.get("id") or "")
        if not _ID.match(page_id):
            raise PermanentServiceError(
                SERVICE, "read a page", f"the query answered a page without a valid id ({page_id[:60]!r})"
            )
        lines: list[str] = []
        params: dict[str, Any] = {"page_size": MAX_PAGE_SIZE}
        for _ in range(MAX_BLOCK_PAGES):
            answer = self._call("GET", f"v1/blocks/{quote(page_id)}/children", f"read page {page_id}", params=params)
            lines += [line for block in answer.get("results") or [] if isinstance(block, dict) if (line := block_line(block))]
            if not answer.get("has_more") or not answer.get("next_cursor") or sum(map(len, lines)) >= MAX_NOTE_CHARS:
                break
            params = {"page_size": MAX_PAGE_SIZE, "start_cursor": answer["next_cursor"]}
        return "\n".join(lines)[:MAX_NOTE_CHARS]

    def _call(self, method: str, endpoint: str, action: str, **kwargs: Any) -> dict[str, Any]:
        answer = self.api.call(method, endpoint, action, headers={"Notion-Version": self.version}, **kwargs)
        if not isinstance(answer, dict):
            raise PermanentServiceError(SERVICE, action, f"unexpected answer {str(answer)[:200]!r}")
        return answer
