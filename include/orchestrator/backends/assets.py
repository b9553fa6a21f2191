"""Object storage for what one task writes and another reads (the design images), addressed by URL.

The tasks of one run may run on different hosts that share no disk (Celery or Kubernetes
workers), so nothing travels between tasks as a local path: the design step stores each PNG here
and passes its URL; the review, the social post (and any later reader) fetch it by that URL.

The store is Airflow's own object-storage layer: the fsspec filesystem that ``airflow.sdk.io.get_fs``
builds for a URL scheme from the providers' registrations and an Airflow connection (what
``ObjectStoragePath`` uses underneath). We take the filesystem from it directly, one per store,
rather than through ``ObjectStoragePath``, whose filesystems are cached per process by scheme and
connection id (a process would keep using a changed connection's old endpoint and credentials,
seen in the tests) and which falls back to an unauthenticated filesystem, logged at debug level
only, when the connection cannot be used. Configured by the connection ``campaign_assets``:

- type ``fs``: a folder (extra ``path``, under ``$AIRFLOW_HOME`` unless absolute), read as
  ``file://``. Only one host, or hosts sharing that disk, see it (the embedded default).
- any other type: extra ``url`` (``s3://bucket/prefix``, or any scheme an installed provider
  registers a filesystem for), with the connection itself as the credentials, e.g. an ``aws``
  connection (access key id and secret, extra ``endpoint_url`` for an S3-compatible server).
  Extra ``timeout`` (seconds, default 60): the total deadline of each read, write or delete.

An object store's filesystem (s3fs) does its I/O on fsspec's own event-loop thread, where the
socket deadlines of :mod:`include.orchestrator.resilience.deadlines` cannot see it; fsspec's
``sync`` takes a ``timeout`` and cancels the whole call (every botocore retry included) when it
passes, which we raise as :class:`DeadlineExceeded`.

Names are deterministic (the effect's key), so a retry overwrites the same object and an undo
finds it from the saga ledger's planned entry alone. A missing or misconfigured connection is an
error naming it, never a fall-back to a local folder.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from include.orchestrator.backends.common.folder import OnDisk, write_atomic
from include.orchestrator.connections import get_connection, local_path
from include.orchestrator.domain.ports import Image, checked_bytes
from include.orchestrator.errors import ConnectionConfigError, DeadlineExceeded
from include.orchestrator.resilience.deadlines import host_of

ASSETS_CONN_ID = "campaign_assets"
DEFAULT_DEADLINE = 60.0


class AssetStore:
    """Bytes under deterministic names below one root URL; every URL read or deleted must be under it."""

    needs: ClassVar[str] = "a shared disk"  # for a file:// root; object storage needs nothing

    def __init__(self, conn_id: str, root: str, storage_conn_id: str | None = None, deadline: float = DEFAULT_DEADLINE) -> None:
        self.conn_id, self.root_url = conn_id, root.rstrip("/")
        self._storage_conn_id = storage_conn_id
        self.local = self.root_url.startswith("file://")
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"AssetStore({self.conn_id!r}, {self.root_url!r})"

    @cached_property
    def fs(self) -> Any:
        from airflow.sdk.io import get_fs

        return get_fs(self.root_url.partition("://")[0], self._storage_conn_id)

    def _call(self, method: str, *args: Any) -> Any:
        """``fs.<method>(*args)``, within the store's total deadline when the filesystem is asynchronous."""
        if not getattr(self.fs, "async_impl", False):  # a local disk: no network to wait on
            return getattr(self.fs, method)(*args)
        from fsspec.exceptions import FSTimeoutError

        try:
            return getattr(self.fs, method)(*args, timeout=self.deadline)  # taken by fsspec's sync()
        except FSTimeoutError:
            endpoint = getattr(self.fs, "endpoint_url", None) or self.root_url  # s3fs names its endpoint
            raise DeadlineExceeded(f"asset store {self.conn_id!r}", host_of(str(endpoint)), self.deadline) from None

    def url_of(self, name: str) -> str:
        return f"{self.root_url}/{name}"

    def _checked(self, url: str) -> str:
        """``url`` if it names an object of this store; refused otherwise (URLs come from XCom and the ledger)."""
        if not url.startswith(self.root_url + "/") or ".." in url[len(self.root_url) :].split("/"):
            raise ValueError(f"{url!r} is not in the asset store {self.root_url} (connection {self.conn_id!r})")
        return url

    def _local(self, url: str) -> Path:
        return Path(url.removeprefix("file://"))

    def disk_id(self) -> str:
        """The disk a file:// store lives on (see ``OnDisk``); empty for object storage every host sees."""
        return OnDisk.disk_of(self._local(self.root_url)) if self.local else ""

    def put(self, name: str, data: bytes) -> str:
        url = self._checked(self.url_of(name))
        if self.local:  # readers on this disk see the old file or the new one, never half of one
            write_atomic(self._local(url), data)
        else:  # an object store's PUT is atomic already
            self._call("pipe_file", url, data)
        return url

    def get(self, url: str) -> bytes | None:
        """The bytes stored under ``url``; None if nothing is."""
        try:
            return self._call("cat_file", self._checked(url))
        except FileNotFoundError:
            return None

    def delete(self, url: str) -> bool:
        """Remove the object; False if it was not there (idempotent)."""
        url = self._checked(url)
        self.fs.invalidate_cache()  # existence is asked of the store, not of a listing cached earlier
        if not self._call("exists", url):
            return False
        self._call("rm_file", url)
        return True

    def read_image(self, image: Image) -> Image:
        """``image`` with its bytes, checked against the hash taken when it was rendered."""
        data = self.get(image.url)
        if data is None:
            raise FileNotFoundError(f"image {image.url} is not in the asset store (connection {self.conn_id!r})")
        read = image.model_copy(update={"data": data})
        checked_bytes(read)  # a reviewer must see what was rendered
        return read


def assets_from(conn_id: str, conn: Any) -> AssetStore:
    """The store a connection describes; ConnectionConfigError naming it otherwise."""
    kind = (conn.conn_type or "").lower()
    if kind == "fs":
        return AssetStore(conn_id, local_path(conn_id, conn).resolve().as_uri())
    url = str(conn.extra_dejson.get("url") or "").strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest.strip("/"):
        raise ConnectionConfigError(
            f"connection {conn_id!r} (type {kind or '(none)'}) needs the extra 'url': where the campaign assets go, "
            "e.g. s3://my-bucket/campaign-assets with an aws connection; or make it type fs with the extra 'path'"
        )
    from airflow.sdk.io import has_fs

    if not has_fs(scheme):
        raise ConnectionConfigError(
            f"connection {conn_id!r}: no filesystem is installed for {scheme}:// (for s3://, install "
            "apache-airflow-providers-amazon and s3fs)"
        )
    deadline = conn.extra_dejson.get("timeout", DEFAULT_DEADLINE)
    try:
        deadline = float(deadline)
    except (TypeError, ValueError):
        deadline = 0.0
    if not 0 < deadline <= 3600:
        raise ConnectionConfigError(
            f"connection {conn_id!r}: the extra 'timeout' must be seconds between 0 and 3600 "
            f"(got {conn.extra_dejson.get('timeout')!r})"
        )
    return AssetStore(conn_id, url, storage_conn_id=conn_id, deadline=deadline)


def open_assets(conn_id: str = ASSETS_CONN_ID) -> AssetStore:
    return assets_from(conn_id, get_connection(conn_id))
