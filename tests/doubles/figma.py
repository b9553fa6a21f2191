"""A Figma REST API double: published components, image exports and the expiring image URLs.

Follows the public docs: https://developers.figma.com/docs/rest-api/ (files and images endpoints),
the OpenAPI spec https://github.com/figma/rest-api-spec (``openapi/openapi.yaml``: parameters of
``GET /v1/images/{file_key}``, ``GetFileComponentsResponse``, the two error shapes
``{"status", "err"}`` and ``{"error": true, "status", "message"}``), errors at
https://developers.figma.com/docs/rest-api/errors and rate limits (429 with ``Retry-After``,
``X-Figma-Plan-Tier``, ``X-Figma-Rate-Limit-Type``) at https://developers.figma.com/docs/rest-api/rate-limits.

Checked on every API call: the ``X-Figma-Token`` header (missing or wrong: 403 ``Invalid token``,
as Figma answers), the file key, and for exports: ``ids`` present and a comma-separated list of
node ids (``1:2``), ``format`` in jpg/png/svg/pdf, ``scale`` a number from 0.01 to 4, no
undocumented parameters. The image URLs point at this same server (``/s3/figma-exports/<uuid>``,
standing in for Figma's S3 bucket); downloading one must NOT carry the Figma token.

State and helpers for tests (``reset()`` forgets all of it, so that one server can serve many tests):

- ``add_file(file_key, components={name: (width, height, "#rrggbb")}, unpublished=...)`` makes a
  file whose components get node ids ``1:1``, ``1:2``, ...; returns {name: node_id};
  ``add_component(file_key, name, size, published=True)`` adds one (names may repeat);
- ``exports``: every export request as (file_key, ids, format, scale); ``downloads``: the URLs
  fetched; ``issued_urls()``: every image URL handed out;
- ``expire_urls(status=404)``: every URL issued so far answers ``status`` from now on (expired);
- ``expire_on_issue = 404``: URLs are expired as soon as they are issued (the download fails);
- ``fail_render(node_id)``: exports of that node answer a ``null`` URL (a failed render).

Figma itself is never changed by the design backend, so nothing here needs cleaning up after
compensation: the stored PNGs are local files.
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_response

TOKEN = "test-token"
IMAGE_PARAMS = frozenset(
    {
        "ids",
        "version",
        "scale",
        "format",
        "svg_outline_text",
        "svg_include_id",
        "svg_include_node_id",
        "svg_simplify_stroke",
        "contents_only",
        "use_absolute_bounds",
    }
)
FORMATS = frozenset({"jpg", "png", "svg", "pdf"})
NODE_ID = re.compile(r"^I?\d+:\d+(;\d+:\d+)*$")
Size = tuple[int, int, str]  # a component's width, height and fill colour


def draw_png(width: int, height: int, colour: str) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).rectangle([0, 0, max(1, width // 4), max(1, height // 4)], fill="#ffffff")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class _Node:
    node_id: str
    name: str
    width: int
    height: int
    colour: str
    published: bool


@dataclass
class _File:
    key: str
    nodes: dict[str, _Node] = field(default_factory=dict)


@dataclass
class FigmaDouble(ServiceDouble):
    name: str = "figma"

    def _clear(self) -> None:
        self.files: dict[str, _File] = {}
        self.exports: list[tuple[str, str, str, str]] = []
        self.downloads: list[str] = []
        self._images: dict[str, bytes] = {}  # token -> PNG bytes
        self._expired: dict[str, int] = {}  # token -> status answered
        self._failing: set[str] = set()
        self.expire_on_issue: int | None = None  # set to a status: URLs are expired as soon as they are issued

    # --- test set-up and inspection ------------------------------------------------------------
    def add_file(self, file_key: str, components: dict[str, Size], unpublished: dict[str, Size] | None = None) -> dict[str, str]:
        ids = {name: self.add_component(file_key, name, size) for name, size in components.items()}
        for name, size in (unpublished or {}).items():
            ids[name] = self.add_component(file_key, name, size, published=False)
        return ids

    def add_component(self, file_key: str, name: str, size: Size, published: bool = True) -> str:
        """One more component (names may repeat, as in Figma); returns its node id."""
        file = self.files.setdefault(file_key, _File(file_key))
        node_id = f"1:{len(file.nodes) + 1}"
        file.nodes[node_id] = _Node(node_id, name, *size, published=published)
        return node_id

    def issued_urls(self) -> list[str]:
        return [f"{self.url}/s3/figma-exports/{token}" for token in self._images]

    def expire_urls(self, status: int = 404) -> None:
        for token in self._images:
            self._expired[token] = status

    def fail_render(self, node_id: str) -> None:
        self._failing.add(node_id)

    # --- the service's answers ----------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """Figma's ``{"status": <code>, "err": "<text>"}`` (bodies already in a Figma shape pass as given)."""
        if isinstance(body, dict) and ("err" in body or "error" in body):
            return json_response({"status": status, **body}, status, headers)
        text = body.get("message", "") if isinstance(body, dict) else str(body)
        return json_response({"status": status, "err": text}, status, headers)

    def routes(self) -> None:
        self.route("GET", r"/v1/files/(?P<key>[^/]+)/components", self._components)
        self.route("GET", r"/v1/images/(?P<key>[^/]+)", self._images_export)
        self.route("GET", r"/s3/figma-exports/(?P<token>[0-9a-f-]+)", self._download)

    def _auth(self, request: Request) -> None:
        got = request.headers.get("X-Figma-Token")
        if got != TOKEN:
            problem = f"X-Figma-Token is {'missing' if got is None else 'wrong'}"
            raise self.refuse(problem, self.error(403, {"err": "Invalid token"}))

    def _file(self, key: str, boolean_404: bool) -> _File:
        if key not in self.files:
            # Not a problem of the request's shape: the file is unknown (a test may ask for this).
            raise _NotFound(
                json_response({"error": True, "status": 404, "message": "Not found"}, 404)
                if boolean_404
                else self.error(404, {"err": "Not found"})
            )
        return self.files[key]

    def _components(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        if request.args:
            raise self.refuse(f"GET /v1/files/:key/components takes no query parameters, got {sorted(request.args)}")
        try:
            file = self._file(groups["key"], boolean_404=True)
        except _NotFound as missing:
            return missing.response
        components = [
            {
                "key": uuid.uuid5(uuid.NAMESPACE_URL, f"{file.key}/{node.node_id}").hex,
                "file_key": file.key,
                "node_id": node.node_id,
                "thumbnail_url": f"{self.url}/s3/thumbnails/{node.node_id}",
                "name": node.name,
                "description": "",
                "created_at": "2026-01-05T10:00:00Z",
                "updated_at": "2026-01-06T10:00:00Z",
                "user": {"id": "1", "handle": "Designer", "img_url": ""},
                "containing_frame": {"nodeId": "0:1", "name": "Campaign", "pageName": "Page 1"},
            }
            for node in file.nodes.values()
            if node.published
        ]
        return json_response({"status": 200, "error": False, "meta": {"components": components}})

    def _images_export(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        args = request.args
        unknown = sorted(set(args) - IMAGE_PARAMS)
        if unknown:
            raise self.refuse(f"GET /v1/images/:key has no parameters {unknown}")
        for name in args:
            if len(args.getlist(name)) > 1:
                raise self.refuse(f"parameter {name!r} given more than once")
        ids = args.get("ids", "")
        if not ids:
            raise self.refuse("the ids parameter is required", self.error(400, {"err": "ids is required"}))
        node_ids = ids.split(",")
        if not all(NODE_ID.match(n) for n in node_ids):
            raise self.refuse(f"ids must be comma-separated node ids like 1:2, got {ids!r}")
        image_format = args.get("format", "png")
        if image_format not in FORMATS:
            raise self.refuse(f"format must be one of {sorted(FORMATS)}, got {image_format!r}")
        scale_text = args.get("scale", "1")
        try:
            scale = float(scale_text)
        except ValueError:
            raise self.refuse(f"scale must be a number, got {scale_text!r}") from None
        if not 0.01 <= scale <= 4:
            raise self.refuse(f"scale must be from 0.01 to 4, got {scale_text!r}")
        try:
            file = self._file(groups["key"], boolean_404=False)
        except _NotFound as missing:
            return missing.response
        self.exports.append((file.key, ids, image_format, scale_text))
        images: dict[str, str | None] = {}
        for node_id in node_ids:
            node = file.nodes.get(node_id)
            if node is None or node_id in self._failing or image_format != "png":
                images[node_id] = None  # documented: a failed render is a null URL (this double renders PNG only)
                continue
            token = str(uuid.uuid4())
            self._images[token] = draw_png(max(1, round(node.width * scale)), max(1, round(node.height * scale)), node.colour)
            images[node_id] = f"{self.url}/s3/figma-exports/{token}"
            if self.expire_on_issue:
                self._expired[token] = self.expire_on_issue
        return json_response({"err": None, "images": images})

    def _download(self, request: Request, groups: dict[str, str]) -> Response:
        if "X-Figma-Token" in request.headers:
            raise self.refuse("the Figma token was sent to the image host", Response(status=400))
        token = groups["token"]
        self.downloads.append(f"{self.url}{request.path}")
        if token not in self._images or token in self._expired:
            status = self._expired.get(token, 404)
            code = "NoSuchKey" if status == 404 else "AccessDenied"
            body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>expired</Message></Error>'
            return Response(body, status=status, content_type="application/xml")
        return Response(self._images[token], status=200, content_type="image/png")


class _NotFound(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("not found")
        self.response = response
