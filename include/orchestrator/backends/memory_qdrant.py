"""The memory port's local backend: Qdrant in local mode, on disk, with offline embeddings.

Campaign phases remember brand voices, past research and published copy, and recall them by
meaning. Vectors come from :mod:`include.orchestrator.embeddings` (all-MiniLM-L6-v2, 384-d,
unit length), computed before the store is opened.

Collection layout (a Qdrant server backend reuses it unchanged):

* one collection (default ``campaign_memory``), unnamed dense vector of 384 floats, cosine
  distance;
* one point per (namespace, key); its id is ``uuid5(MEMORY_ID_NAMESPACE, json.dumps([namespace,
  key]))``, so remembering a key again overwrites the point instead of adding one;
* payload: ``namespace``, ``key``, ``text`` plus the caller's own fields (``campaign``,
  ``run_key``, front matter of seeded files...). Recall filters on exact payload matches.
  Local mode supports no payload indexes; a server should index ``namespace`` and the ``where``
  fields as keyword.

A path store is locked to one client at a time across processes (qdrant-client takes a
non-blocking lock and fails at once). So every operation opens the store, works and closes
it, and operations queue on an OS file lock beside the store (``<path>.lock``, ``flock``), which
serialises threads and processes alike; waiting longer than ``lock_timeout`` is an error naming
the store.
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

import yaml
from qdrant_client import QdrantClient, models

from include.orchestrator import embeddings
from include.orchestrator.ports import Effect, Recollection

BACKEND = "qdrant_local"
KIND = "memory_points"
RESERVED = ("namespace", "key", "text")
MEMORY_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "campaign-orchestrator/memory")
_FRONT_MATTER = re.compile(r"---\r?\n(?:(.*?)\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class MemoryLockTimeout(TimeoutError):
    """Another process or thread held the memory store for longer than the lock timeout."""


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


class LocalQdrantMemory:
    """Implements the memory port with an on-disk Qdrant store at ``path``."""

    def __init__(self, conn_id: str, path: Path, collection: str = "campaign_memory", lock_timeout: float = 60.0) -> None:
        self.conn_id = conn_id
        self.path = Path(path)
        self.collection = collection
        self.lock_timeout = lock_timeout
        self.lock_path = self.path.with_name(self.path.name + ".lock")

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
    def _client(self) -> Iterator[QdrantClient]:
        """The store, opened for one operation and closed again while still holding the lock."""
        with self._lock():
            client = QdrantClient(path=str(self.path))
            try:
                yield client
            finally:
                client.close()

    def plan(self, namespace: str, key: str, text: str, payload: dict[str, Any] | None = None) -> Effect:
        return Effect(
            port="memory",
            conn_id=self.conn_id,
            backend=BACKEND,
            kind=KIND,
            key=f"{namespace}/{key}",
            ref={"collection": self.collection, "point_ids": [point_id(namespace, key)], "namespace": namespace, "key": key},
            summary=f"remembered {namespace}/{key} ({len(text)} characters) in {self.collection} at {self.path}",
        )

    def remember_many(self, namespace: str, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Effect]:
        """Upsert several (key, text, payload) in one session; one effect per key."""
        for key, _, payload in items:
            clash = sorted(set(RESERVED) & set(payload))
            if clash:
                raise ValueError(f"memory payload of {namespace}/{key} uses reserved fields {clash}")
        if not items:
            return []
        vectors = embeddings.embed([text for _, text, _ in items])  # before locking: the slow part
        points = [
            models.PointStruct(
                id=point_id(namespace, key),
                vector=vector.tolist(),
                payload={**payload, "namespace": namespace, "key": key, "text": text},
            )
            for (key, text, payload), vector in zip(items, vectors, strict=True)
        ]
        with self._client() as client:
            if not client.collection_exists(self.collection):
                client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=embeddings.DIMENSION, distance=models.Distance.COSINE),
                )
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
        with self._client() as client:
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
        if (effect.port, effect.backend, effect.kind) != ("memory", BACKEND, KIND):
            raise ValueError(f"{BACKEND} memory cannot undo a {effect.port}/{effect.backend}/{effect.kind} effect")
        collection, ids = effect.ref["collection"], list(effect.ref["point_ids"])
        with self._client() as client:
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
        with self._client() as client:
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
