"""A Qdrant server double: the REST endpoints qdrant-client 1.20 calls for the memory port, executed for real.

Each request is checked against Qdrant's REST API (https://api.qdrant.tech/api-reference, pages
collections/collection-exists, collections/get-collection, collections/create-collection,
indexes/create-field-index, points/upsert-points, search/query-points, points/get-points,
points/delete-points, points/count-points, points/scroll-points): method and path, the ``api-key``
header when the double has a key (https://qdrant.tech/documentation/guides/security/: ``api-key:
<KEY>`` or ``Authorization: Bearer <KEY>``; ``/``, ``/healthz``, ``/readyz``, ``/livez`` need none),
``Content-Type: application/json`` on bodies, the query parameters each endpoint declares
(``wait``, ``ordering``, ``timeout``, ``consistency``) and the JSON body against the endpoint's
request schema. The schemas are the pydantic models qdrant-client generates from
Qdrant's published OpenAPI document (``qdrant_client.http.models``: ``CreateCollection``,
``CreateFieldIndex``, ``PointInsertOperations``, ``QueryRequest``, ``PointRequest``,
``PointsSelector``, ``CountRequest``, ``ScrollRequest``; all ``extra="forbid"``), so an unknown or
mistyped field is refused as the server would refuse it (400 "Format error in JSON body").

A valid request is then EXECUTED on a real ``QdrantClient(":memory:")``: filters, scores, upserts
and deletes behave as Qdrant's own local engine makes them behave, nothing is invented. Answers use
Qdrant's envelope ``{"result": ..., "status": "ok", "time": s}``, errors ``{"status": {"error":
"..."}, "time": s}`` with Qdrant's status codes (src/actix/helpers.rs: not found 404, already exists
409, bad input 400, rate limit 429 with Retry-After, internal 500, shard unavailable 503). A
request without a valid api key gets 403 and a plain-text reason, as Qdrant's auth middleware
answers (src/actix/auth.rs, ``HttpResponse::Forbidden().body(e)``; some releases answer 401):
such refusals are listed in ``auth_failures``, not in ``problems`` (the request is well formed).

Inspection helpers (for tests and the end-to-end suite):

* ``collections()``: names of the collections that exist;
* ``points(collection="campaign_memory", namespace=None)``: every stored point as
  ``{"id", "payload"}``, optionally of one namespace (payload field ``namespace``);
* ``point_keys(collection="campaign_memory")``: ``"namespace/key"`` of every point, sorted;
* ``indexes(collection)``: payload indexes created, ``{field: schema}``;
* ``auth_failures``: requests refused for a missing or wrong api key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import TypeAdapter, ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http import models
from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_response

VERSION = "1.19.0"  # the API reference's current version, within one minor of qdrant-client 1.20 (its version check)
_PUBLIC = ("/", "/healthz")
_PUBLIC_PREFIXES = ("/readyz", "/livez")
_COLLECTION = r"/collections/(?P<name>[A-Za-z0-9_.\-]+)"
_WAIT = {"wait": ("true", "false"), "ordering": ("weak", "medium", "strong"), "timeout": None}
_READ = {"consistency": None, "timeout": None}


@dataclass
class QdrantServerDouble(ServiceDouble):
    """Qdrant's REST API on a real in-memory Qdrant engine; ``api_key`` None = an open server."""

    name: str = "qdrant"
    api_key: str | None = None
    auth_failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = QdrantClient(":memory:")
        self._indexes: dict[str, dict[str, Any]] = {}
        super().__post_init__()

    # --- routes ------------------------------------------------------------------------------
    def routes(self) -> None:
        self.route("GET", r"/", self._root)
        self.route("GET", r"/healthz", lambda request, groups: Response("healthz check passed", content_type="text/plain"))
        self.route("GET", f"{_COLLECTION}/exists", self._guarded(self._exists, {}))
        self.route("GET", _COLLECTION, self._guarded(self._get_collection, {}))
        self.route("PUT", _COLLECTION, self._guarded(self._create_collection, {"timeout": None}))
        self.route("PUT", f"{_COLLECTION}/index", self._guarded(self._create_index, _WAIT))
        self.route("PUT", f"{_COLLECTION}/points", self._guarded(self._upsert, _WAIT))
        self.route("POST", f"{_COLLECTION}/points/query", self._guarded(self._query, _READ))
        self.route("POST", f"{_COLLECTION}/points", self._guarded(self._retrieve, _READ))
        self.route("POST", f"{_COLLECTION}/points/delete", self._guarded(self._delete, _WAIT))
        self.route("POST", f"{_COLLECTION}/points/count", self._guarded(self._count, _READ))
        self.route("POST", f"{_COLLECTION}/points/scroll", self._guarded(self._scroll, _READ))

    # --- Qdrant's answers ----------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """Qdrant's error envelope; a body already in that shape (or not a dict) is sent as given."""
        if isinstance(body, dict) and "status" not in body:
            body = {"status": {"error": body.get("message", json.dumps(body))}, "time": 0.0}
        return json_response(body, status, headers)

    def not_found(self, what: str) -> Response:
        return self.error(404, {"message": f"Not found: {what}"})

    @staticmethod
    def ok(result: Any, started: float) -> Response:
        return json_response({"result": result, "status": "ok", "time": round(time.perf_counter() - started, 6)})

    # --- request checks ------------------------------------------------------------------------
    def _guarded(self, handler: Callable[[str, Any], Any], params: dict[str, tuple[str, ...] | None]) -> Callable:
        """Auth, query parameters and body check, then run ``handler(name, body)`` on the engine."""

        def handle(request: Request, groups: dict[str, str]) -> Response:
            started = time.perf_counter()
            refused = self._check_api_key(request)
            if refused is not None:
                return refused
            for key, value in request.args.items(multi=True):
                if key not in params:
                    raise self.refuse(f"unknown query parameter {key!r} (allowed: {sorted(params)})")
                allowed = params[key]
                if allowed is None:
                    if key == "timeout" and not (value.isdigit() and int(value) >= 1):
                        raise self.refuse(f"query parameter timeout must be an integer >= 1, got {value!r}")
                elif value not in allowed:
                    raise self.refuse(f"query parameter {key}={value!r} is not one of {allowed}")
            body = None
            if request.method in ("PUT", "POST"):
                if request.mimetype != "application/json":
                    raise self.refuse(f"Content-Type must be application/json, got {request.content_type!r}")
                try:
                    body = json.loads(request.get_data(as_text=True) or "null")
                except ValueError as exc:
                    raise self.refuse(f"Format error in JSON body: {exc}") from None
            try:
                return self.ok(handler(groups["name"], body), started)
            except ValueError as exc:  # the engine's verdict on a well-formed request: Qdrant's codes
                return self._engine_error(groups["name"], str(exc))

        return handle

    def _check_api_key(self, request: Request) -> Response | None:
        if self.api_key is None or request.path in _PUBLIC or request.path.startswith(_PUBLIC_PREFIXES):
            return None
        bearer = request.headers.get("Authorization", "")
        key = request.headers.get("api-key") or (bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None)
        if key is None:
            reason = "Must provide an API key or an Authorization bearer token"
        elif key != self.api_key:
            reason = "Invalid API key or JWT"
        else:
            return None
        self.auth_failures.append(f"{request.method} {request.path}: {reason}")
        return Response(reason, status=403, content_type="text/plain; charset=utf-8")

    def _parse(self, schema: Any, body: Any) -> Any:
        try:
            return TypeAdapter(schema).validate_python(body)
        except ValidationError as exc:
            raise self.refuse(f"Format error in JSON body: {exc.errors(include_url=False)[:3]}") from None

    def _engine_error(self, name: str, message: str) -> Response:
        if "not found" in message.lower():
            return self.error(404, {"message": f"Not found: Collection `{name}` doesn't exist!"})
        if "already exists" in message:
            return self.error(409, {"message": f"Wrong input: Collection `{name}` already exists!"})
        return self.error(400, {"message": message if message.startswith("Wrong input") else f"Wrong input: {message}"})

    def _need_collection(self, name: str) -> None:
        if not self.engine.collection_exists(name):
            raise ValueError(f"Collection {name} not found")

    # --- handlers ----------------------------------------------------------------------------
    def _root(self, request: Request, groups: dict[str, str]) -> Response:
        return json_response({"title": "qdrant - vector search engine", "version": VERSION})

    def _exists(self, name: str, body: Any) -> Any:
        return {"exists": self.engine.collection_exists(name)}

    def _get_collection(self, name: str, body: Any) -> Any:
        info = self.engine.get_collection(name).model_dump(mode="json", exclude_none=True)
        info["payload_schema"] = {f: {"data_type": s, "points": 0} for f, s in self._indexes.get(name, {}).items()}
        return info

    def _create_collection(self, name: str, body: Any) -> Any:
        request = self._parse(models.CreateCollection, body or {})
        if request.vectors is None:
            raise self.refuse("this double expects the memory collection to declare its vectors")
        self.engine.create_collection(name, vectors_config=request.vectors, sparse_vectors_config=request.sparse_vectors)
        self._indexes[name] = {}
        return True

    def _create_index(self, name: str, body: Any) -> Any:
        request = self._parse(models.CreateFieldIndex, body)
        self._need_collection(name)
        schema = request.field_schema
        # Kept here: the in-memory engine has no payload indexes (it would only warn).
        self._indexes[name][request.field_name] = schema.value if isinstance(schema, Enum) else schema.model_dump(mode="json")
        return {"operation_id": 0, "status": "completed"}

    def _upsert(self, name: str, body: Any) -> Any:
        request = self._parse(models.PointInsertOperations, body)
        if isinstance(request, models.PointsList):
            points = request.points
        else:
            batch = request.batch
            payloads = batch.payloads or [None] * len(batch.ids)
            rows = zip(batch.ids, batch.vectors, payloads, strict=True)
            points = [models.PointStruct(id=i, vector=v, payload=p) for i, v, p in rows]
        return self.engine.upsert(name, points=points, wait=True).model_dump(mode="json", exclude_none=True)

    def _query(self, name: str, body: Any) -> Any:
        request = self._parse(models.QueryRequest, body)
        response = self.engine.query_points(
            name,
            query=request.query,
            using=request.using,
            prefetch=request.prefetch,
            query_filter=request.filter,
            search_params=request.params,
            limit=request.limit if request.limit is not None else 10,  # documented defaults
            offset=request.offset,
            with_payload=request.with_payload if request.with_payload is not None else False,
            with_vectors=request.with_vector if request.with_vector is not None else False,
            score_threshold=request.score_threshold,
        )
        return response.model_dump(mode="json", exclude_none=True)

    def _retrieve(self, name: str, body: Any) -> Any:
        request = self._parse(models.PointRequest, body)
        records = self.engine.retrieve(
            name,
            ids=request.ids,
            with_payload=request.with_payload if request.with_payload is not None else True,
            with_vectors=request.with_vector if request.with_vector is not None else False,
        )
        return [r.model_dump(mode="json", exclude_none=True) for r in records]

    def _delete(self, name: str, body: Any) -> Any:
        selector = self._parse(models.PointsSelector, body)
        return self.engine.delete(name, points_selector=selector, wait=True).model_dump(mode="json", exclude_none=True)

    def _count(self, name: str, body: Any) -> Any:
        request = self._parse(models.CountRequest, body or {})
        exact = request.exact if request.exact is not None else True
        return self.engine.count(name, count_filter=request.filter, exact=exact).model_dump(mode="json")

    def _scroll(self, name: str, body: Any) -> Any:
        request = self._parse(models.ScrollRequest, body or {})
        records, next_offset = self.engine.scroll(
            name,
            scroll_filter=request.filter,
            limit=request.limit if request.limit is not None else 10,
            offset=request.offset,
            with_payload=request.with_payload if request.with_payload is not None else True,
            with_vectors=request.with_vector if request.with_vector is not None else False,
            order_by=request.order_by,
        )
        return {"points": [r.model_dump(mode="json", exclude_none=True) for r in records], "next_page_offset": next_offset}

    # --- inspection --------------------------------------------------------------------------
    def collections(self) -> list[str]:
        with self._lock:
            return sorted(c.name for c in self.engine.get_collections().collections)

    def points(self, collection: str = "campaign_memory", namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if not self.engine.collection_exists(collection):
                return []
            records, _ = self.engine.scroll(collection, limit=100_000, with_payload=True)
        found = [{"id": str(r.id), "payload": dict(r.payload or {})} for r in records]
        return [p for p in found if namespace is None or p["payload"].get("namespace") == namespace]

    def point_keys(self, collection: str = "campaign_memory") -> list[str]:
        return sorted(f"{p['payload'].get('namespace')}/{p['payload'].get('key')}" for p in self.points(collection))

    def indexes(self, collection: str = "campaign_memory") -> dict[str, Any]:
        with self._lock:
            return dict(self._indexes.get(collection, {}))
