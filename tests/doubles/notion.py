"""A Notion API double: data sources, their pages and the pages' blocks (reads only).

Follows the public reference (https://developers.notion.com/reference): Retrieve a data source
(``GET /v1/data_sources/{id}``), Query a data source (``POST /v1/data_sources/{id}/query``, filters
as in https://developers.notion.com/reference/filter-data-source-entries, sorts as in
https://developers.notion.com/reference/sort-data-source-entries), Retrieve block children
(``GET /v1/blocks/{id}/children``), pagination (https://developers.notion.com/reference/intro#pagination:
``object: "list"``, ``results``, ``next_cursor``, ``has_more``; ``page_size`` at most 100), the page,
block, rich text and data source objects, errors as ``{"object": "error", "status", "code",
"message", "request_id"}`` (https://developers.notion.com/reference/status-codes) and versioning
(https://developers.notion.com/reference/versioning, upgrade guides for 2025-09-03 and 2026-03-11).

Checked on every call: ``Authorization: Bearer test-token`` (else 401 ``unauthorized``),
``Notion-Version`` present (else 400 ``missing_version``) and one with data sources (2025-09-03 or
2026-03-11; only 2025-09-03 answers still carry ``archived``). Query bodies: JSON, only documented
keys, ``page_size`` an integer 1..100, ``start_cursor`` one this server issued, ``sorts`` of
property or timestamp sorts, and filters: a property filter (the property exists, its type key
matches the property type, one text condition with a string, or ``true`` for is_empty) or an
``and``/``or`` compound of them, nested at most two levels. Timestamp filters are documented but not
implemented here: they are reported as a problem so that a test notices.

State and helpers for tests (``reset()`` forgets all of it, so one server can serve many tests):

- ``add_data_source(title_property="Name", name=...)`` -> data source id;
- ``add_page(ds_id, title, blocks=[str | (type, text)], edited="2026-01-01T00:00:00.000Z", in_trash=False)``
  -> page id; a string block is a paragraph;
- ``page_limit``: at most this many results per answer (Notion may answer fewer than page_size),
  to exercise pagination with few blocks;
- ``queries``: every query body received; ``block_reads``: the block ids whose children were read.

The notes port only reads, so nothing here needs cleaning up after compensation.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_body, json_response

TOKEN = "test-token"
VERSIONS = frozenset({"2025-09-03", "2026-03-11"})  # the versions that have data sources
CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "restricted_resource",
    404: "object_not_found",
    409: "conflict_error",
    429: "rate_limited",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
QUERY_KEYS = frozenset({"filter", "sorts", "start_cursor", "page_size", "archived", "in_trash", "result_type"})
TEXT_CONDITIONS = frozenset({"equals", "does_not_equal", "contains", "does_not_contain", "starts_with", "ends_with"})
EMPTY_CONDITIONS = frozenset({"is_empty", "is_not_empty"})
TEXT_TYPES = frozenset({"title", "rich_text"})
TIMESTAMPS = frozenset({"created_time", "last_edited_time"})
USER = {"object": "user", "id": "4a5b6c7d-0000-4000-8000-000000000001"}


def rich_text(text: str) -> list[dict[str, Any]]:
    annotations = {"bold": False, "italic": False, "strikethrough": False, "underline": False, "code": False, "color": "default"}
    text_object = {"content": text, "link": None}
    return [{"type": "text", "text": text_object, "annotations": annotations, "plain_text": text, "href": None}]


def _norm(notion_id: str) -> str:
    return notion_id.replace("-", "").lower()


@dataclass
class NotionDouble(ServiceDouble):
    name: str = "notion"

    def _clear(self) -> None:
        self.data_sources: dict[str, dict[str, Any]] = {}  # normalised id -> data source object
        self.pages: dict[str, dict[str, Any]] = {}  # normalised id -> page object (without "archived")
        self.children: dict[str, list[dict[str, Any]]] = {}  # normalised block id -> child blocks
        self.page_limit = 100
        self.queries: list[dict[str, Any]] = []
        self.block_reads: list[str] = []
        self._cursors: dict[str, int] = {}  # cursor -> offset of the next result

    # --- test set-up -------------------------------------------------------------------------------
    def add_data_source(self, title_property: str = "Name", name: str = "Research notes") -> str:
        ds_id, db_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.data_sources[_norm(ds_id)] = {
            "object": "data_source",
            "id": ds_id,
            "created_time": "2026-01-01T00:00:00.000Z",
            "last_edited_time": "2026-01-01T00:00:00.000Z",
            "created_by": USER,
            "last_edited_by": USER,
            "title": rich_text(name),
            "description": [],
            "icon": None,
            "cover": None,
            "properties": {
                title_property: {"id": "title", "name": title_property, "type": "title", "title": {}},
                "Tags": {"id": "tG%3D%3D", "name": "Tags", "type": "multi_select", "multi_select": {"options": []}},
            },
            "parent": {"type": "database_id", "database_id": db_id},
            "database_parent": {"type": "workspace", "workspace": True},
            "is_inline": False,
            "in_trash": False,
            "url": f"https://www.notion.so/{_norm(db_id)}",
            "public_url": None,
        }
        return ds_id

    def add_page(
        self,
        ds_id: str,
        title: str,
        blocks: Sequence[str | tuple[str, str]] = (),
        edited: str = "2026-01-01T00:00:00.000Z",
        in_trash: bool = False,
    ) -> str:
        source = self.data_sources[_norm(ds_id)]
        title_property = next(n for n, p in source["properties"].items() if p["type"] == "title")
        page_id = str(uuid.uuid4())
        slug = "-".join(title.split()) or "Untitled"
        self.pages[_norm(page_id)] = {
            "object": "page",
            "id": page_id,
            "created_time": "2026-01-01T00:00:00.000Z",
            "last_edited_time": edited,
            "created_by": USER,
            "last_edited_by": USER,
            "cover": None,
            "icon": None,
            "parent": {"type": "data_source_id", "data_source_id": source["id"], "database_id": source["parent"]["database_id"]},
            "in_trash": in_trash,
            "is_locked": False,
            "properties": {
                title_property: {"id": "title", "type": "title", "title": rich_text(title)},
                "Tags": {"id": "tG%3D%3D", "type": "multi_select", "multi_select": []},
            },
            "url": f"https://www.notion.so/{slug}-{_norm(page_id)}",
            "public_url": None,
        }
        self.children[_norm(page_id)] = [self._block(page_id, b if isinstance(b, tuple) else ("paragraph", b)) for b in blocks]
        return page_id

    @staticmethod
    def _block(parent_id: str, kind_text: tuple[str, str]) -> dict[str, Any]:
        kind, text = kind_text
        data: dict[str, Any] = {"rich_text": rich_text(text), "color": "default"}
        if kind == "to_do":
            data["checked"] = False
        if kind.startswith("heading_"):
            data["is_toggleable"] = False
        if kind in ("image", "divider"):
            image = {"type": "external", "external": {"url": "https://example.com/x.png"}, "caption": []}
            data = {} if kind == "divider" else image
        return {
            "object": "block",
            "id": str(uuid.uuid4()),
            "parent": {"type": "page_id", "page_id": parent_id},
            "created_time": "2026-01-01T00:00:00.000Z",
            "last_edited_time": "2026-01-01T00:00:00.000Z",
            "created_by": USER,
            "last_edited_by": USER,
            "has_children": False,
            "in_trash": False,
            "type": kind,
            kind: data,
        }

    # --- the service's answers ------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        body = body if isinstance(body, dict) else {"message": str(body)}
        answer = {
            "object": "error",
            "status": status,
            "code": body.get("code") or CODES.get(status, "internal_server_error"),
            "message": body.get("message") or "error",
            "request_id": str(uuid.uuid4()),
        }
        return json_response(answer, status, headers)

    def routes(self) -> None:
        self.route("GET", r"/v1/data_sources/(?P<id>[^/]+)", self._retrieve)
        self.route("POST", r"/v1/data_sources/(?P<id>[^/]+)/query", self._query)
        self.route("GET", r"/v1/blocks/(?P<id>[^/]+)/children", self._children)

    def _check(self, request: Request) -> str:
        """Authorization and Notion-Version as documented; returns the version."""
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise self.refuse("Authorization is missing or wrong", self.error(401, {"message": "API token is invalid."}))
        version = request.headers.get("Notion-Version")
        if version is None:
            message = "Notion-Version header failed validation: Notion-Version header should be defined, instead was `undefined`."
            raise self.refuse("Notion-Version is missing", self.error(400, {"code": "missing_version", "message": message}))
        if version not in VERSIONS:
            raise self.refuse(f"Notion-Version {version!r} has no data sources (use one of {sorted(VERSIONS)})")
        return version

    def _not_found(self, kind: str, object_id: str) -> Response:
        message = (
            f"Could not find {kind} with ID: {object_id}. "
            "Make sure the relevant pages and databases are shared with your integration."
        )
        return self.error(404, {"message": message})

    def _retrieve(self, request: Request, groups: dict[str, str]) -> Response:
        self._check(request)
        source = self.data_sources.get(_norm(groups["id"]))
        return json_response(source) if source else self._not_found("data_source", groups["id"])

    def _query(self, request: Request, groups: dict[str, str]) -> Response:
        version = self._check(request)
        body = json_body(self, request)
        if not isinstance(body, dict):
            raise self.refuse("body failed validation: body should be an object")
        self.queries.append(body)
        unknown = sorted(set(body) - QUERY_KEYS)
        if unknown:
            raise self.refuse(f"body failed validation: {unknown} are not documented keys")
        source = self.data_sources.get(_norm(groups["id"]))
        if source is None:
            return self._not_found("data_source", groups["id"])
        size = self._page_size(body.get("page_size", 100), "body.page_size")
        sorts = body.get("sorts", [])
        self._check_sorts(sorts, source)
        if "filter" in body:
            self._check_filter(body["filter"], source, depth=0)
        pages = [
            p
            for p in self.pages.values()
            if p["parent"]["data_source_id"] == source["id"] and p["in_trash"] == bool(body.get("in_trash", False))
        ]
        if "filter" in body:
            pages = [p for p in pages if self._matches(body["filter"], p)]
        for sort in reversed(sorts or [{"timestamp": "created_time", "direction": "descending"}]):
            pages.sort(key=lambda p, s=sort: self._sort_value(p, s), reverse=sort["direction"] == "descending")
        results = [self._versioned(p, version) for p in pages]
        return json_response(
            {
                **self._paginate(results, body.get("start_cursor"), size),
                "type": "page_or_data_source",
                "page_or_data_source": {},
                "request_id": str(uuid.uuid4()),
            }
        )

    def _children(self, request: Request, groups: dict[str, str]) -> Response:
        version = self._check(request)
        unknown = sorted(set(request.args) - {"start_cursor", "page_size"})
        if unknown:
            raise self.refuse(f"GET /v1/blocks/:id/children has no parameters {unknown}")
        blocks = self.children.get(_norm(groups["id"]))
        if blocks is None:
            return self._not_found("block", groups["id"])
        self.block_reads.append(groups["id"])
        raw = request.args.get("page_size", "100")
        if not raw.isdigit():
            raise self.refuse(f"page_size should be a number, got {raw!r}")
        size = self._page_size(int(raw), "page_size")
        results = [self._versioned(b, version) for b in blocks]
        return json_response(
            {
                **self._paginate(results, request.args.get("start_cursor"), size),
                "type": "block",
                "block": {},
                "request_id": str(uuid.uuid4()),
            }
        )

    # --- checks and evaluation -----------------------------------------------------------------------
    def _page_size(self, value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
            raise self.refuse(f"{where} should be an integer from 1 to 100, got {value!r}")
        return value

    def _paginate(self, results: list[dict[str, Any]], cursor: Any, size: int) -> dict[str, Any]:
        start = 0
        if cursor is not None:
            if not isinstance(cursor, str) or cursor not in self._cursors:
                raise self.refuse(f"start_cursor {cursor!r} was not issued by a previous answer")
            start = self._cursors[cursor]
        end = start + min(size, self.page_limit)
        next_cursor = None
        if end < len(results):
            next_cursor = str(uuid.uuid4())
            self._cursors[next_cursor] = end
        return {"object": "list", "results": results[start:end], "next_cursor": next_cursor, "has_more": next_cursor is not None}

    @staticmethod
    def _versioned(obj: dict[str, Any], version: str) -> dict[str, Any]:
        # 2026-03-11 renamed archived to in_trash; older versions answer both.
        return {**obj, "archived": obj["in_trash"]} if version == "2025-09-03" else obj

    def _check_sorts(self, sorts: Any, source: dict[str, Any]) -> None:
        if not isinstance(sorts, list):
            raise self.refuse("body.sorts should be an array")
        for sort in sorts:
            if not isinstance(sort, dict) or sort.get("direction") not in ("ascending", "descending"):
                raise self.refuse(f"a sort needs direction ascending or descending: {sort!r}")
            keys = set(sort) - {"direction"}
            if keys == {"timestamp"} and sort["timestamp"] in TIMESTAMPS:
                continue
            if keys == {"property"} and sort["property"] in source["properties"]:
                continue
            raise self.refuse(f"a sort is a property of the data source or a timestamp ({sorted(TIMESTAMPS)}): {sort!r}")

    def _check_filter(self, node: Any, source: dict[str, Any], depth: int) -> None:
        if not isinstance(node, dict):
            raise self.refuse(f"a filter should be an object, got {node!r}")
        compound = set(node) & {"and", "or"}
        if compound:
            if len(node) != 1 or not isinstance(node[next(iter(compound))], list):
                raise self.refuse(f"a compound filter is exactly one of and/or with an array: {node!r}")
            if depth >= 2:
                raise self.refuse("compound filters nest at most two levels deep")
            for item in node[next(iter(compound))]:
                self._check_filter(item, source, depth + 1)
            return
        if "timestamp" in node:
            raise self.refuse("timestamp filters are documented but this double does not implement them")
        prop = node.get("property")
        if prop not in source["properties"]:
            raise self.refuse(f"Could not find property with name or id: {prop}")
        prop_type = source["properties"][prop]["type"]
        types = set(node) - {"property"}
        allowed = TEXT_TYPES if prop_type == "title" else {prop_type}
        if len(types) != 1 or not types <= allowed:
            raise self.refuse(
                f"property {prop!r} is of type {prop_type}: filter it with one of {sorted(allowed)}, got {sorted(types)}"
            )
        condition = node[types.pop()]
        if not isinstance(condition, dict) or len(condition) != 1:
            raise self.refuse(f"a filter condition is an object with one operator: {condition!r}")
        ((operator, value),) = condition.items()
        if prop_type == "title" and operator in TEXT_CONDITIONS and isinstance(value, str):
            return
        if prop_type == "title" and operator in EMPTY_CONDITIONS and value is True:
            return
        if prop_type != "title":
            raise self.refuse(f"this double filters title properties only, got {prop_type}")
        raise self.refuse(f"{operator!r} with {value!r} is not a text filter condition")

    def _matches(self, node: dict[str, Any], page: dict[str, Any]) -> bool:
        if "or" in node:
            return any(self._matches(item, page) for item in node["or"])
        if "and" in node:
            return all(self._matches(item, page) for item in node["and"])
        value = "".join(t["plain_text"] for t in page["properties"][node["property"]]["title"]).casefold()
        ((operator, wanted),) = next(v for k, v in node.items() if k != "property").items()
        wanted = wanted.casefold() if isinstance(wanted, str) else wanted
        return {
            "equals": lambda: value == wanted,
            "does_not_equal": lambda: value != wanted,
            "contains": lambda: wanted in value,
            "does_not_contain": lambda: wanted not in value,
            "starts_with": lambda: value.startswith(wanted),
            "ends_with": lambda: value.endswith(wanted),
            "is_empty": lambda: not value,
            "is_not_empty": lambda: bool(value),
        }[operator]()

    @staticmethod
    def _sort_value(page: dict[str, Any], sort: dict[str, Any]) -> str:
        if "timestamp" in sort:
            return page[sort["timestamp"]]
        prop = page["properties"].get(sort["property"], {})
        return "".join(t["plain_text"] for t in prop.get("title", [])).casefold()
