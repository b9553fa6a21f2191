"""A Grafana dashboard HTTP API double: create, get and delete dashboards by uid.

Follows https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/ (the ``/api/dashboards``
endpoints; Grafana 12 calls them legacy):

- ``POST /api/dashboards/db`` ``{"dashboard": {...}, "folderUid", "folderId", "overwrite", "message"}``
  -> 200 ``{"id", "uid", "url": "/d/<uid>/<slug>", "status": "success", "version", "slug"}``;
  412 ``{"message", "status": "version-mismatch"}`` when a dashboard with that uid exists at another
  version and ``overwrite`` is false, 412 ``{"message", "status": "name-exists"}`` when another
  dashboard has the same title in the folder; 400 for an empty title or a bad uid;
- ``GET /api/dashboards/uid/{uid}`` -> ``{"dashboard": {...}, "meta": {"url", "folderUid", "slug", ...}}``;
- ``DELETE /api/dashboards/uid/{uid}`` -> ``{"title", "message": "Dashboard <title> deleted", "id"}``;
- a missing dashboard is 404 ``{"message": "Dashboard not found"}``; errors are ``{"message": ...}``.

Every call needs ``Authorization: Bearer <token>``. A missing or non-Bearer header is a problem
(our code must always send it); a Bearer token other than ``token`` is answered 401
``{"message": "Unauthorized"}`` without being a problem (a test sets that up on purpose).

Also recorded as problems (the real Grafana would store them and draw broken panels, or refuse them):
a body that is not JSON, no ``dashboard`` object, no ``title`` or ``uid`` (we always name our
dashboards), a uid over 40 characters or with other characters than letters, digits, ``-``, ``_``,
an unresolved ``${...}`` data source placeholder or the import-only ``__inputs``/``__requires``
keys, a non-boolean ``overwrite``, a ``folderUid`` that is not a string, ``id`` set on a new dashboard.

Inspection helpers: ``dashboards()`` -> {uid: model as stored}; ``folder_of(uid)``; ``folders``
(the folder uids that exist; an unknown ``folderUid`` is 400 ``{"message": "folder not found"}``).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_body, json_response

_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass
class GrafanaDouble(ServiceDouble):
    name: str = "Grafana"
    token: str = "test-token"
    folders: set[str] = field(default_factory=lambda: {"campaigns"})
    _stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"model", "id", "version", "folder_uid"}

    def __post_init__(self) -> None:
        self._next_id = 1
        super().__post_init__()

    def routes(self) -> None:
        self.route("POST", r"/api/dashboards/db", self._save)
        self.route("GET", r"/api/dashboards/uid/(?P<uid>[^/]+)", self._get)
        self.route("DELETE", r"/api/dashboards/uid/(?P<uid>[^/]+)", self._delete)

    def not_found(self, what: str) -> Response:
        return self.error(404, {"message": "Not found"})

    # --- checks -------------------------------------------------------------------------------
    def _auth(self, request: Request) -> Response | None:
        auth = request.headers.get("Authorization")
        if not auth or not auth.startswith("Bearer "):
            raise self.refuse(
                f"Authorization header is {'missing' if not auth else 'not Bearer'}", self.error(401, {"message": "Unauthorized"})
            )
        if auth != f"Bearer {self.token}":
            return self.error(401, {"message": "Unauthorized"})
        return None

    def _url(self, uid: str, title: str) -> str:
        return f"/d/{uid}/{slugify(title)}"

    # --- endpoints -------------------------------------------------------------------------------
    def _save(self, request: Request, groups: dict[str, str]) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = json_body(self, request)
        bad = lambda problem, status=400: self.refuse(problem, self.error(status, {"message": problem}))  # noqa: E731
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            raise bad("the body needs a dashboard object")
        unknown = sorted(set(body) - {"dashboard", "folderUid", "folderId", "overwrite", "message"})
        if unknown:
            raise bad(f"unknown body fields {unknown}")
        model = body["dashboard"]
        title, uid = model.get("title"), model.get("uid")
        if not isinstance(title, str) or not title.strip():
            raise bad("Dashboard title cannot be empty")
        if not isinstance(uid, str) or not _UID.match(uid):
            raise bad(f"dashboard uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
        if "overwrite" in body and not isinstance(body["overwrite"], bool):
            raise bad("overwrite must be a boolean")
        if "message" in body and not isinstance(body["message"], str):
            raise bad("message must be a string")
        if "folderUid" in body and not isinstance(body["folderUid"], str):
            raise bad("folderUid must be a string")
        if placeholders := sorted(set(_PLACEHOLDER.findall(json.dumps(model)))):
            # ${var} template variables are fine in queries; ${DS_...} data source inputs are not resolved by this endpoint
            if inputs := [p for p in placeholders if p.startswith("${DS_")]:
                raise bad(f"unresolved data source placeholders {inputs}: POST /api/dashboards/db does not resolve inputs")
        if "__inputs" in model or "__requires" in model:
            raise bad("__inputs/__requires belong to exported dashboards (import), not to POST /api/dashboards/db")
        folder = body.get("folderUid") or None
        if folder is not None and folder not in self.folders:
            return self.error(400, {"message": "folder not found"})
        existing = self._stored.get(uid)
        if existing is None and model.get("id") not in (None, 0):
            raise bad(f"id {model.get('id')!r} names no dashboard: use id null to create one", 404)
        overwrite = body.get("overwrite", False)
        if existing is not None and not overwrite and int(model.get("version") or 0) != existing["version"]:
            return self.error(412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"})
        same_title = [
            u
            for u, d in self._stored.items()
            if u != uid and d["folder_uid"] == folder and d["model"]["title"].lower() == title.lower()
        ]
        if same_title and not overwrite:
            message = "A dashboard with the same name in the folder already exists"
            return self.error(412, {"message": message, "status": "name-exists"})
        for other in same_title:  # overwrite replaces the dashboard holding the title
            del self._stored[other]
        if existing is None:
            dashboard_id, version = self._next_id, 1
            self._next_id += 1
        else:
            dashboard_id, version = existing["id"], existing["version"] + 1
        stored = {**copy.deepcopy(model), "id": dashboard_id, "uid": uid, "version": version}
        self._stored[uid] = {"model": stored, "id": dashboard_id, "version": version, "folder_uid": folder}
        return json_response(
            {
                "id": dashboard_id,
                "uid": uid,
                "url": self._url(uid, title),
                "status": "success",
                "version": version,
                "slug": slugify(title),
            }
        )

    def _get(self, request: Request, groups: dict[str, str]) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        found = self._stored.get(groups["uid"])
        if found is None:
            return self.error(404, {"message": "Dashboard not found"})
        model = found["model"]
        meta = {
            "isStarred": False,
            "url": self._url(model["uid"], model["title"]),
            "folderUid": found["folder_uid"] or "",
            "slug": slugify(model["title"]),
            "version": found["version"],
            "canSave": True,
            "canEdit": True,
        }
        return json_response({"dashboard": copy.deepcopy(model), "meta": meta})

    def _delete(self, request: Request, groups: dict[str, str]) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        found = self._stored.pop(groups["uid"], None)
        if found is None:
            return self.error(404, {"message": "Dashboard not found"})
        title = found["model"]["title"]
        return json_response({"title": title, "message": f"Dashboard {title} deleted", "id": found["id"]})

    # --- inspection helpers ------------------------------------------------------------------------
    def dashboards(self) -> dict[str, dict[str, Any]]:
        """The dashboards that exist: uid -> the model as Grafana stores it (with id and version)."""
        with self._lock:
            return {uid: copy.deepcopy(d["model"]) for uid, d in self._stored.items()}

    def folder_of(self, uid: str) -> str | None:
        with self._lock:
            return self._stored[uid]["folder_uid"]

    def add_dashboard(self, uid: str, title: str, folder_uid: str | None = None) -> None:
        """Seed a dashboard made by someone else (e.g. one holding a title we want)."""
        with self._lock:
            self._stored[uid] = {
                "model": {"uid": uid, "title": title, "id": self._next_id, "version": 1, "panels": []},
                "id": self._next_id,
                "version": 1,
                "folder_uid": folder_uid,
            }
            self._next_id += 1
