"""Design port, Figma backend: export a named Figma component per channel as a PNG into the asset store.

The design lives in Figma: a designer keeps one component per channel (email, social, blog) in a
file, and this backend exports it as it is. The spec's headline, subline and colours do NOT change
a Figma component, and its size is the component's own (times ``scale``), not the spec's; use the
Pillow backend (``backends/local/images.py``) for cards drawn from the copy.

Calls, as the Figma REST API documents them (https://developers.figma.com/docs/rest-api/, the
OpenAPI spec at https://github.com/figma/rest-api-spec, errors at
https://developers.figma.com/docs/rest-api/errors, rate limits at
https://developers.figma.com/docs/rest-api/rate-limits):

- ``GET /v1/files/{file_key}/components``: the file's published components,
  ``{"status": 200, "error": false, "meta": {"components": [{"node_id", "name", ...}]}}``; a
  component is found by its exact name (a value shaped like a node id, ``1:2``, is used as is);
- ``GET /v1/images/{file_key}?ids=<node id>&format=png&scale=<s>``: ``{"err": null, "images":
  {node_id: url}}``; a ``null`` URL means the render failed;
- the URL itself (an S3 object, expiring), downloaded at once WITHOUT the Figma token, through the
  SSRF guard of :mod:`include.orchestrator.resilience.netguard` (private and metadata addresses refused unless
  the connection sets ``allow_private_network``), checked to be a PNG, stored in the asset store
  (``backends/assets.py``) as ``images/<spec.key>.png``.

Errors answer ``{"status": 403, "err": "Invalid token"}`` (or ``{"error": true, "status": 404,
"message": ...}`` on the components endpoint); 429 carries ``Retry-After`` and the
``X-Figma-Plan-Tier`` / ``X-Figma-Rate-Limit-Type`` headers, which the error text repeats.

Idempotency: the object's name is the spec's key (per run and channel). A valid PNG already stored
under it is adopted without calling Figma: a retry after a crash does not export again, while a
new run (a new key) exports the component as it is then. Figma is only read, so undo deletes the
stored PNG, which works from the planned effect alone.

Connection (type ``http``): host ``https://api.figma.com``, password = a personal access token
(sent as ``X-Figma-Token``), extra ``file_key``, ``components`` ({"email": "<component name>",
...}), ``scale`` (0.01..4, default 1), ``allow_private_network`` (tests only). The PNGs go to the
asset store of the ``campaign_assets`` connection, where every worker reads them.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import quote

from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.common.http_api import Credentials, HttpApi, error_text, retry_after_seconds
from include.orchestrator.backends.common.stored_images import StoredImages
from include.orchestrator.connections import flag
from include.orchestrator.domain.ports import Effect, Image, ImageSpec
from include.orchestrator.errors import (
    ConnectionConfigError,
    DeadlineExceeded,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
    UnsafeURLError,
)

SERVICE = "figma"
FIGMA_TOKEN = Credentials(header="X-Figma-Token", template="{token}")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_SCALE, MAX_SCALE = 0.01, 4.0  # the range GET /v1/images documents
MAX_PNG_BYTES = 128 * 1024 * 1024  # Figma exports up to 32 megapixels: 128 MB even uncompressed RGBA
MAX_REDIRECTS = 3
_FILE_KEY = re.compile(r"^[A-Za-z0-9]{1,128}$")
_NODE_ID = re.compile(r"^I?\d+:\d+(;\d+:\d+)*$")  # "1:2"; instance sublayers are "I1:2;3:4"
# The download URL expired or vanished: a new try exports again and gets a fresh URL.
_GONE = frozenset({403, 404, 410})


def describe(response: Any) -> str:
    """Figma's own words: ``err`` or ``message``, plus the rate-limit headers of a 429."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = str(body.get("err") or body.get("message") or "") if isinstance(body, dict) else ""
    text = text[:500] or error_text(response)
    if response.status_code == 429:
        limits = [
            f"{name} {response.headers[header]}"
            for name, header in (("plan tier", "X-Figma-Plan-Tier"), ("limit type", "X-Figma-Rate-Limit-Type"))
            if response.headers.get(header)
        ]
        text += f" ({', '.join(limits)})" if limits else ""
    return text


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a complete PNG; ValueError when ``data`` is not one."""
    from PIL import Image as PILImage

    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("it does not start with the PNG signature")
    try:
        with PILImage.open(io.BytesIO(data), formats=["PNG"]) as image:
            size = image.size
            image.verify()  # every chunk's CRC, up to IEND: a truncated file fails here
    except Exception as exc:  # Pillow raises many types for broken files (SyntaxError, OSError, ...)
        raise ValueError(f"Pillow cannot read it as a PNG ({type(exc).__name__}: {exc})") from None
    return size


class FigmaDesign(StoredImages):
    """Implements the design port with Figma image exports of one named component per channel."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    backend = "figma"

    def __init__(self, conn_id: str, conn: Any, store: AssetStore) -> None:
        self.api = HttpApi(SERVICE, conn_id, conn, credentials=FIGMA_TOKEN, describe=describe)
        super().__init__(conn_id, store)
        self.file_key = str(self.api.setting("file_key", required=True))
        if not _FILE_KEY.match(self.file_key):
            raise ConnectionConfigError(f"connection {conn_id!r} ({SERVICE}): file_key {self.file_key!r} is not a Figma file key")
        components = self.api.setting("components", required=True)
        if not isinstance(components, dict) or not all(isinstance(v, str) and v.strip() for v in components.values()):
            raise ConnectionConfigError(
                f"connection {conn_id!r} ({SERVICE}): 'components' must map channels to component names, e.g. "
                '{"email": "Email header", "social": "Social card", "blog": "Blog banner"}'
            )
        self.components: dict[str, str] = {str(k): v.strip() for k, v in components.items()}
        try:
            self.scale = float(self.api.setting("scale", 1))
        except (TypeError, ValueError):
            self.scale = -1.0
        if not MIN_SCALE <= self.scale <= MAX_SCALE:
            raise ConnectionConfigError(f"connection {conn_id!r} ({SERVICE}): scale must be a number from 0.01 to 4")
        self.allow_private_network = flag(conn, "allow_private_network")
        self.max_bytes = int(self.api.setting("max_bytes", MAX_PNG_BYTES))
        self._node_ids: dict[str, str] | None = None  # component name -> node id, read once per instance
        self._ambiguous: dict[str, list[str]] = {}  # names several published components share

    # --- the port ------------------------------------------------------------------------------
    def plan(self, spec: ImageSpec) -> Effect:
        return self._planned(spec, f"{spec.channel} image from Figma file {self.file_key}")

    def render(self, spec: ImageSpec) -> tuple[Image, Effect]:
        effect = self.plan(spec)
        name = self.components.get(spec.channel)
        if not name:
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}): 'components' names no component for channel {spec.channel!r} "
                f"(it has: {', '.join(sorted(self.components)) or 'none'})"
            )
        node_id: str | None = None
        stored = self._adoptable(effect.ref["url"])
        if stored is None:  # nothing valid stored under this key yet: export now
            node_id = self._node_id(name)
            data = self._download(self._export(node_id), f"download the export of {name!r}")
            try:
                width, height = png_size(data)
            except ValueError as exc:
                raise PermanentServiceError(SERVICE, f"export {name!r}", f"the downloaded file is not a PNG: {exc}") from None
        else:
            data, (width, height) = stored
        image, effect = self._stored(spec, effect, data, width, height)
        # node_id is None when a PNG stored by an earlier try was adopted (no Figma call was made).
        ref = {**effect.ref, "file_key": self.file_key, "component": name, "node_id": node_id}
        return image, effect.model_copy(update={"ref": ref, "summary": f"{effect.summary} ({width}x{height})"})

    # --- Figma calls -------------------------------------------------------------------------------
    def _adoptable(self, url: str) -> tuple[bytes, tuple[int, int]] | None:
        """The PNG an earlier try stored under this key and its size, if it is complete and valid."""
        data = self.store.get(url)
        try:
            return (data, png_size(data)) if data is not None else None
        except ValueError:
            return None

    def _node_id(self, name: str) -> str:
        if _NODE_ID.match(name):
            return name
        if self._node_ids is None:
            answer = self.api.call("GET", f"v1/files/{quote(self.file_key)}/components", "list the file's published components")
            components = ((answer or {}).get("meta") or {}).get("components")
            if not isinstance(components, list):
                raise PermanentServiceError(
                    SERVICE, "list the file's published components", f"unexpected answer {str(answer)[:200]!r}"
                )
            found: dict[str, list[str]] = {}
            for component in components:
                if isinstance(component, dict) and component.get("name") and component.get("node_id"):
                    found.setdefault(str(component["name"]), []).append(str(component["node_id"]))
            ambiguous = {n: ids for n, ids in found.items() if len(ids) > 1}
            self._node_ids = {n: ids[0] for n, ids in found.items() if n not in ambiguous}
            self._ambiguous = ambiguous
        if name in self._ambiguous:
            ids = ", ".join(self._ambiguous[name])
            reason = f"the name is used by several components ({ids}): name a node id instead"
            raise PermanentServiceError(SERVICE, f"find component {name!r}", reason)
        if name not in self._node_ids:
            known = ", ".join(repr(n) for n in sorted(self._node_ids)[:30]) or "none"
            reason = f"no published component of that name in file {self.file_key} (published: {known})"
            raise PermanentServiceError(SERVICE, f"find component {name!r}", reason)
        return self._node_ids[name]

    def _export(self, node_id: str) -> str:
        action = f"export node {node_id} as PNG"
        params = {"ids": node_id, "format": "png", "scale": f"{self.scale:g}"}
        answer = self.api.call("GET", f"v1/images/{quote(self.file_key)}", action, params=params) or {}
        if answer.get("err"):
            raise PermanentServiceError(SERVICE, action, str(answer["err"])[:500])
        url = (answer.get("images") or {}).get(node_id)
        if not isinstance(url, str) or not url:
            raise PermanentServiceError(
                SERVICE, action, "Figma could not render the node (its image URL is null): is it empty or hidden?"
            )
        return url

    def _download(self, url: str, action: str) -> bytes:
        """The image behind ``url``; every hop checked by the SSRF guard, the body size capped."""
        import httpx

        from include.orchestrator.resilience.deadlines import within
        from include.orchestrator.resilience.netguard import check_url, guarded_transport

        headers = {"Accept": "image/png", "Accept-Encoding": "identity", "User-Agent": "campaign-orchestrator/0.1 (+design)"}
        # One total deadline over every hop (connect, headers and body): see include.orchestrator.resilience.deadlines.
        try:
            with (
                within(self.api.timeout, SERVICE, url) as deadline,
                httpx.Client(
                    transport=guarded_transport(self.allow_private_network),
                    timeout=self.api.timeout,
                    headers=headers,
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
            ):
                current = url
                for _ in range(MAX_REDIRECTS + 1):
                    deadline.url = current  # the host a deadline error names
                    try:
                        check_url(current, self.allow_private_network)
                        with client.stream("GET", current) as response:
                            location = response.headers.get("location")
                            if response.status_code in (301, 302, 303, 307, 308) and location:
                                current = str(response.url.join(location))
                                continue
                            return self._body(response, action)
                    except UnsafeURLError as exc:
                        raise PermanentServiceError(SERVICE, action, str(exc)) from None
                    except httpx.TimeoutException as exc:
                        raise RetryableServiceError(
                            SERVICE, action, f"no answer within {self.api.timeout:g} s ({type(exc).__name__})"
                        ) from None
                    except httpx.TransportError as exc:
                        raise RetryableServiceError(SERVICE, action, f"connection failed ({type(exc).__name__})") from None
        except DeadlineExceeded as exc:
            raise RetryableServiceError(SERVICE, action, exc.reason) from None
        raise PermanentServiceError(SERVICE, action, f"more than {MAX_REDIRECTS} redirects")

    def _body(self, response: Any, action: str) -> bytes:
        status = response.status_code
        if status != 200:
            retryable = status in _GONE or status == 429 or status >= 500
            reason = f"HTTP {status} from the image host"
            if status in _GONE:
                reason += " (the export URL expired or is gone; a new try exports again)"
            retry_after = retry_after_seconds(response.headers.get("Retry-After")) if retryable else None
            raise ServiceError.of(SERVICE, action, reason, status=status, retryable=retryable, retry_after=retry_after)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise PermanentServiceError(SERVICE, action, f"the image is larger than {self.max_bytes} bytes")
        return bytes(body)
