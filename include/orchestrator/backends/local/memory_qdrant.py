"""The memory port's backends: Qdrant in local mode on disk, or a Qdrant server, with offline embeddings.

Campaign phases remember brand voices, past research and published copy, and recall them by
meaning. Vectors come from :mod:`include.orchestrator.backends.local.embeddings` (all-MiniLM-L6-v2, 384-d,
unit length), computed before the store is opened.

Collection layout (both backends, so a store can move from one to the other unchanged):

* one collection (default ``campaign_memory``), unnamed dense vector of 384 floats, cosine
  distance;
* one point per (namespace, key); its id is ``uuid5(MEMORY_ID_NAMESPACE, json.dumps([namespace,
  key]))``, so remembering a key again overwrites the point instead of adding one;
* payload: ``namespace``, ``key``, ``text`` plus the caller's own fields (``campaign``,
  ``run_key``, front matter of seeded files...). Recall filters on exact payload matches.
  Local mode supports no payload indexes; the server backend indexes ``namespace`` and ``key``
  (the fields every recall filters on) as keyword when it creates the collection.

:class:`LocalQdrantMemory` (connection type ``fs``): a path store is locked to one client at a
time across processes (qdrant-client takes a non-blocking lock and fails at once). So every
operation opens the store, works and closes it, and operations queue on an OS file lock beside the
store (``<path>.lock``, ``flock``), which serialises threads and processes alike; waiting longer
than ``lock_timeout`` is an error naming the store.

:class:`ServerQdrantMemory` (connection type ``qdrant``): a Qdrant server through the Qdrant
provider's ``QdrantHook`` (REST only), which serves many clients at once, so no lock. Its errors
follow ``http_api``'s contract: 4xx other than 429 fail at once with Qdrant's message, 429/5xx,
timeouts and refused connections are retryable. Each operation (its few REST calls together) has one
total deadline, the extra ``timeout`` (default 30 s; :mod:`include.orchestrator.resilience.deadlines`). REST API: https://api.qdrant.tech/api-reference
(collections, points, indexes), api-key header: https://qdrant.tech/documentation/guides/security/.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from qdrant_client import QdrantClient, models

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.folder import OnDisk
from include.orchestrator.backends.local import embeddings
from include.orchestrator.domain.ports import Effect, Recollection
from include.orchestrator.errors import (
    ConnectionConfigError,
    DeadlineExceeded,
    MemoryLockTimeout,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
)

BACKEND = "qdrant_local"
SERVER_BACKEND = "qdrant_server"
KIND = "memory_points"
RESERVED = ("namespace", "key", "text")
INDEXED = ("namespace", "key")  # payload fields a server indexes as keyword: every recall filters on them
MEMORY_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "campaign-orchestrator/memory")
_FRONT_MATTER = re.compile(r"---\r?\n(?:(.*?)\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def point_id(namespace: str, key: str) -> str:
    """Deterministic point id of (namespace, key); JSON keeps ("a/b", "c") apart from ("a", "b/c")."""
    return str(uuid.uuid5(MEMORY_ID_NAMESPACE, json.dumps([namespace, key])))


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Optional YAML front matter (between ``---`` lines at the top) and the body after it."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    meta = yaml.safe_load(match[1] or "") or {}
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a mapping")
    # Dates and other YAML types become strings: payloads are JSON.
    return json.loads(json.dumps(meta, default=str)), text[match.end() :].lstrip("\r\n")


class _QdrantMemory(MakesEffects):
    """The memory port on any Qdrant client; subclasses say how a client is opened and where it is."""

    port, kind = "memory", KIND
    collection: str

    @contextmanager
    def _client(self, action: str = "use the memory store") -> Iterator[QdrantClient]:
        raise NotImplementedError

    def _where(self) -> str:
        """Where the store is, for effect summaries (never a secret)."""
        raise NotImplementedError

    def _create_collection(self, client: QdrantClient) -> None:
        client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=embeddings.DIMENSION, distance=models.Distance.COSINE)
        )

    def plan(self, namespace: str, key: str, text: str, payload: dict[str, Any] | None = None) -> Effect:
        return self._effect(
            f"{namespace}/{key}",
            {"collection": self.collection, "point_ids": [point_id(namespace, key)], "namespace": namespace, "key": key},
            f"remembered {namespace}/{key} ({len(text)} characters) in {self.collection} {self._where()}",
        )

    def remember_many(self, namespace: str, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Effect]:
        """Upsert several (key, text, payload) in one session; one effect per key."""
        for key, _, payload in items:
            clash = sorted(set(RESERVED) & set(payload))
            if clash:
                raise ValueError(f"memory payload of {namespace}/{key} uses reserved fields {clash}")
        if not items:
            return []
        vectors = embeddings.embed([text for _, text, _ in items])  # before opening the store: the slow part
        points = [
            models.PointStruct(
                id=point_id(namespace, key),
                vector=vector.tolist(),
                payload={**payload, "namespace": namespace, "key": key, "text": text},
            )
            for (key, text, payload), vector in zip(items, vectors, strict=True)
        ]
        with self._client(f"remember {namespace}/{items[0][0]}") as client:
            if not client.collection_exists(self.collection):
                self._create_collection(client)
            client.upsert(self.collection, points=points, wait=True)
        return [self.plan(namespace, key, text) for key, text, _ in items]

    def remember(self, namespace: str, key: str, text: str, payload: dict[str, Any]) -> Effect:
        return self.remember_many(namespace, [(key, text, payload)])[0]

    def recall(self, namespace: str, query: str, limit: int, where: dict[str, str] | None = None) -> list[Recollection]:
        """The ``limit`` points of ``namespace`` closest to ``query`` whose payload matches ``where``, best first."""
        if limit <= 0:
            return []
        vector = embeddings.embed([query])[0].tolist()
        conditions = [
            models.FieldCondition(key=field, match=models.MatchValue(value=value))
            for field, value in {**(where or {}), "namespace": namespace}.items()
        ]
        with self._client(f"recall from {namespace}") as client:
            if not client.collection_exists(self.collection):
                return []
            hits = client.query_points(
                self.collection, query=vector, query_filter=models.Filter(must=conditions), limit=limit, with_payload=True
            ).points
        recollections = []
        for hit in hits:
            payload = dict(hit.payload or {})
            key, text = payload.pop("key"), payload.pop("text")
            payload.pop("namespace")
            recollections.append(Recollection(key=key, text=text, score=hit.score, payload=payload))
        return recollections

    def undo(self, effect: Effect) -> bool:
        """Delete exactly the effect's points; False when none exists any more (or ever did)."""
        if (effect.port, effect.backend, effect.kind) != ("memory", self.backend, KIND):
            raise ValueError(f"{self.backend} memory cannot undo a {effect.port}/{effect.backend}/{effect.kind} effect")
        collection, ids = effect.ref["collection"], list(effect.ref["point_ids"])
        with self._client(f"undo {effect.key}") as client:
            if not ids or not client.collection_exists(collection):
                return False
            existing = [point.id for point in client.retrieve(collection, ids=ids, with_payload=False)]
            if existing:
                client.delete(collection, points_selector=models.PointIdsList(points=existing), wait=True)
        return bool(existing)

    def count(self, namespace: str | None = None) -> int:
        """Points stored, in one namespace or in all."""
        query_filter = None
        if namespace is not None:
            query_filter = models.Filter(must=[models.FieldCondition(key="namespace", match=models.MatchValue(value=namespace))])
        with self._client("count points") as client:
            if not client.collection_exists(self.collection):
                return 0
            return client.count(self.collection, count_filter=query_filter, exact=True).count

    def seed_from_folder(self, namespace: str, folder: Path) -> list[Effect]:
        """Remember every ``*.md`` of ``folder``: key = file stem, text = body, payload = front matter.

        Used to seed brand voices and past research; seeding again overwrites, never duplicates.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"memory seed folder {folder} does not exist")
        items = []
        for path in sorted(folder.glob("*.md")):
            try:
                meta, body = _front_matter(path.read_text(encoding="utf-8"))
            except (ValueError, yaml.YAMLError) as exc:
                raise ValueError(f"bad front matter in {path}: {exc}") from exc
            items.append((path.stem, body, {**meta, "source": path.name}))
        return self.remember_many(namespace, items)


class LocalQdrantMemory(OnDisk, _QdrantMemory):
    """Implements the memory port with an on-disk Qdrant store at ``path``."""

    needs = "one host"  # Qdrant local mode: an embedded database under a file lock, not for hosts sharing a network disk

    backend = BACKEND

    def __init__(self, conn_id: str, path: Path, collection: str = "campaign_memory", lock_timeout: float = 60.0) -> None:
        self.conn_id = conn_id
        self.path = Path(path)
        self.collection = collection
        self.lock_timeout = lock_timeout
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _where(self) -> str:
        return f"at {self.path}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh open file per acquisition: flock then also excludes other threads of this process.
        with self.lock_path.open("a") as lock_file:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise MemoryLockTimeout(
                            f"memory store {self.path} stayed locked for more than {self.lock_timeout:.0f} s "
                            f"(lock file {self.lock_path}); another task may be stuck using it"
                        ) from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextmanager
    def _client(self, action: str = "use the memory store") -> Iterator[QdrantClient]:
        """The store, opened for one operation and closed again while still holding the lock."""
        with self._lock():
            client = QdrantClient(path=str(self.path))
            try:
                yield client
            finally:
                client.close()


# --- the server backend ------------------------------------------------------------------------

SERVICE = "qdrant"
# The hook's connection extras we pass on (https, url, prefix); gRPC stays off (see _hook_connection).
_HOOK_EXTRAS = ("url", "https", "prefix")


def _hook_connection(conn_id: str, conn: Any) -> Any:
    """The connection as ``QdrantHook.get_conn`` reads it (host, port, password = api key, extra url/https/prefix).

    Two conveniences, so the connection reads like the other services': ``host`` may be a whole
    URL (``https://xyz.cloud.qdrant.io:6333``), which becomes the hook's ``url``; an empty password
    means no api key (the client would otherwise send an empty ``api-key`` header and switch to
    https). ``prefer_gprc`` (the hook's spelling) is forced off: every call goes over REST, whose
    errors this module maps onto ``ServiceError``.
    """
    from airflow.sdk import Connection

    extra = dict(conn.extra_dejson)
    host, port = (conn.host or "").strip() or None, conn.port
    if host and "://" in host:
        if extra.get("url"):
            raise ConnectionConfigError(f"connection {conn_id!r} (qdrant) has a URL in host and in the extra 'url': keep one")
        parts = urlsplit(host)
        netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
        extra["url"], host, port = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), None, None
    if not host and not extra.get("url"):
        raise ConnectionConfigError(
            f"connection {conn_id!r} (qdrant) needs a host (a host name with the port, or the server's URL) or the extra 'url'"
        )
    if host and extra.get("url"):
        raise ConnectionConfigError(f"connection {conn_id!r} (qdrant) has both a host and the extra 'url': keep one")
    settings = {k: extra[k] for k in _HOOK_EXTRAS if extra.get(k) not in (None, "")}
    settings["prefer_gprc"] = False
    return Connection(
        conn_id=conn_id,
        conn_type="qdrant",
        host=host,
        port=port,
        password=conn.password or None,
        extra=json.dumps(settings),
    )


def _qdrant_message(content: bytes | str | None) -> str:
    """Qdrant's own words: ``{"status": {"error": ...}}`` in its JSON envelope, else the text (auth errors are text)."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or "")
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    status = body.get("status") if isinstance(body, dict) else None
    if isinstance(status, dict) and status.get("error"):
        return str(status["error"])[:500]
    return text.strip()[:500]


def service_error(action: str, exc: Exception) -> Exception:
    """qdrant-client's exception as ``errors.ServiceError`` (same retry rules as every HTTP service)."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from include.orchestrator.backends.common.http_api import is_retryable_status, retry_after_seconds

    if isinstance(exc, ResourceExhaustedResponse):  # a 429 with a numeric Retry-After
        wait = float(exc.retry_after_s)
        return RetryableServiceError(SERVICE, action, f"HTTP 429: {exc.message}", status=429, retry_after=wait)
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        retryable = status is None or is_retryable_status(status)
        retry_after = retry_after_seconds(exc.headers.get("Retry-After")) if retryable and exc.headers else None
        reason = f"HTTP {status}: {_qdrant_message(exc.content)}"
        return ServiceError.of(SERVICE, action, reason, status=status, retryable=retryable, retry_after=retry_after)
    if isinstance(exc, ResponseHandlingException):
        import httpx

        source = exc.source
        if isinstance(source, httpx.TimeoutException):
            return RetryableServiceError(SERVICE, action, f"no answer in time ({type(source).__name__})")
        if isinstance(source, httpx.TransportError):
            return RetryableServiceError(SERVICE, action, f"connection failed ({type(source).__name__})")
        # The server answered 200 with a body the client cannot read: not something a retry fixes.
        return PermanentServiceError(SERVICE, action, f"unreadable answer ({type(source).__name__}: {str(source)[:200]})")
    # qdrant-client refuses a 429 whose Retry-After is an HTTP-date; the value is in its message.
    match = re.match(r"Retry-After header value is not a valid integer: (.+)", str(exc))
    if match:
        return RetryableServiceError(
            SERVICE, action, "HTTP 429: rate limited", status=429, retry_after=retry_after_seconds(match[1])
        )
    return exc


class ServerQdrantMemory(_QdrantMemory):
    """Implements the memory port on a Qdrant server (connection type ``qdrant``, read by ``QdrantHook``).

    Connection: ``host`` and ``port`` (default 6333), or a URL in ``host`` or in the extra ``url``;
    ``password`` = the api key (optional); extras ``https`` (with a bare host name; the hook's
    client otherwise picks https exactly when an api key is set), ``prefix`` (a REST path prefix)
    ``collection`` (default ``campaign_memory``) and ``timeout`` (seconds, each operation's total
    deadline, default 30). The client is built at the first call.
    """

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    backend = SERVER_BACKEND

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id = conn_id
        self.conn = conn
        self.collection = str(conn.extra_dejson.get("collection") or "campaign_memory")
        self._hook_conn = _hook_connection(conn_id, conn)  # validates the settings now; no I/O
        try:
            self.timeout = float(conn.extra_dejson.get("timeout") or 30)
        except (TypeError, ValueError):
            raise ConnectionConfigError(f"connection {conn_id!r} (qdrant): extra 'timeout' must be a number of seconds") from None
        hook_extra = json.loads(self._hook_conn.extra or "{}")
        self._url = str(hook_extra.get("url") or self._hook_conn.host)  # what a deadline error names
        self._qdrant: QdrantClient | None = None

    def _where(self) -> str:
        return f"on the Qdrant server of connection {self.conn_id}"

    def _connect(self) -> QdrantClient:
        if self._qdrant is None:
            from airflow.providers.qdrant.hooks.qdrant import QdrantHook

            hook_conn = self._hook_conn

            class _Hook(QdrantHook):
                # The connection object is already in hand: no second lookup through the secrets backends.
                def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                    return hook_conn

            try:
                self._qdrant = _Hook(conn_id=self.conn_id).get_conn()
            except ValueError as exc:  # qdrant-client refuses the combination of settings
                raise ConnectionConfigError(f"connection {self.conn_id!r} (qdrant): {exc}") from None
        return self._qdrant

    @contextmanager
    def _client(self, action: str = "use the memory store") -> Iterator[QdrantClient]:
        """The server's client; its errors become ``ServiceError`` naming the action."""
        from qdrant_client.common.client_exceptions import QdrantException
        from qdrant_client.http.exceptions import ApiException

        from include.orchestrator.resilience.deadlines import within

        client = self._connect()
        try:
            with within(self.timeout, SERVICE, self._url):
                yield client
        except DeadlineExceeded as exc:
            raise RetryableServiceError(SERVICE, action, exc.reason) from None
        except (ApiException, QdrantException) as exc:
            raise service_error(action, exc) from None

    def _create_collection(self, client: QdrantClient) -> None:
        """Create the collection and its keyword indexes; another task creating it first is fine."""
        from qdrant_client.http.exceptions import UnexpectedResponse

        try:
            super()._create_collection(client)
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # 409 Conflict: it already exists (created since we looked): adopt it
                raise
        for field in INDEXED:
            # Idempotent on the server: creating an index that exists changes nothing.
            client.create_payload_index(self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD, wait=True)

    def close(self) -> None:
        if self._qdrant is not None:
            self._qdrant.close()
            self._qdrant = None
