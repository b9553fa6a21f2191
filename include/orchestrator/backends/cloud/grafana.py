"""Analytics port backend: the campaign dashboard created in Grafana through its HTTP API.

Follows Grafana's dashboard HTTP API (https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/,
which Grafana 12 lists as the legacy ``/api/dashboards`` API; it still serves it):

- ``GET /api/dashboards/uid/{uid}`` first: a dashboard with our deterministic uid was made by an
  earlier try of this run (the uid carries the run key), so it is adopted, never created twice;
- ``POST /api/dashboards/db`` with ``{"dashboard": model, "folderUid", "overwrite": false, "message"}``;
  the model goes in with ``id`` null and no ``version`` (a new dashboard), so Grafana never silently
  replaces one that exists. A 412 answer (``status`` ``version-mismatch`` or ``name-exists``) means a
  dashboard with our uid or our title appeared in between: one with our uid is adopted; a different
  dashboard holding our title in the folder is a conflict a retry cannot fix (fails at once);
- ``DELETE /api/dashboards/uid/{uid}`` to undo; 404 means already gone.

The model comes from ``domain/dashboard.campaign_dashboard``, the form Grafana's import page takes: its
data source is the input ``${DS_PROMETHEUS}``. The ``db`` endpoint does not resolve inputs, so the
placeholder is replaced by the uid of the connection's Prometheus data source and the export-only
keys (``__inputs``, ``__requires``, ``__elements``) are dropped.

Connection (type ``http``): ``host`` the Grafana base URL (with its sub-path, if any), ``password``
a service-account token (sent as ``Authorization: Bearer``); extras ``datasource_uid`` (required)
and ``folder_uid`` (optional: the folder to create dashboards in; none = the root level).
Calls go through ``HttpApi``, so errors follow its contract (4xx fail at once, 429/5xx/timeouts retry).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.http_api import OK, HttpApi
from include.orchestrator.domain.dashboard import dashboard_problems
from include.orchestrator.domain.ports import Dashboard, Effect
from include.orchestrator.errors import PermanentServiceError

SERVICE = "Grafana"
PLACEHOLDER = "${DS_PROMETHEUS}"
_UNRESOLVED = re.compile(r"\$\{DS_[A-Za-z0-9_]+\}")
_EXPORT_ONLY = ("__inputs", "__requires", "__elements")


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value


def upload_model(dashboard: Dashboard, datasource_uid: str) -> dict[str, Any]:
    """The model as ``POST /api/dashboards/db`` takes it: our uid and title, a new dashboard (id null,
    no version), the data source placeholder resolved, the import-only keys dropped."""
    model = {k: v for k, v in dashboard.model.items() if k not in _EXPORT_ONLY and k != "version"}
    model = _replace(model, PLACEHOLDER, datasource_uid)
    model.update({"uid": dashboard.uid, "title": dashboard.title, "id": None})
    if problems := dashboard_problems(model):
        raise ValueError(f"dashboard {dashboard.uid!r} is not a valid Grafana dashboard: {'; '.join(problems)}")
    if unresolved := sorted(set(_UNRESOLVED.findall(repr(model)))):
        raise ValueError(f"dashboard {dashboard.uid!r} uses data source inputs this backend cannot resolve: {unresolved}")
    return model


class GrafanaApi(MakesEffects):
    """Analytics port: dashboards created through Grafana's HTTP API; see the module docstring."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    port, backend, kind = "analytics", "grafana", "dashboard"

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id = conn_id
        self.api = HttpApi(SERVICE, conn_id, conn)  # checks host and token; no I/O until a call
        self.base_url = str(conn.host).rstrip("/") + "/"

    @property
    def folder_uid(self) -> str | None:
        return self.api.setting("folder_uid") or None

    def _endpoint(self, uid: str) -> str:
        return f"api/dashboards/uid/{quote(uid, safe='')}"

    def plan(self, dashboard: Dashboard) -> Effect:
        return self._effect(
            dashboard.uid,
            {"uid": dashboard.uid, "folder_uid": self.folder_uid},
            f"Grafana dashboard {dashboard.title!r} ({dashboard.uid})",
        )

    def _existing(self, uid: str, action: str) -> dict[str, Any] | None:
        response = self.api.request("GET", self._endpoint(uid), action, ok=(*OK, 404))
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) and isinstance(body.get("dashboard"), dict) else None

    def _adopt(self, planned: Effect, found: dict[str, Any]) -> Effect:
        meta = found.get("meta") or {}
        ref = {
            **planned.ref,
            "url": urljoin(self.base_url, str(meta.get("url") or f"d/{planned.key}")),
            "folder_uid": meta.get("folderUid") or planned.ref["folder_uid"],
        }
        return planned.model_copy(update={"ref": ref, "summary": planned.summary + " (already existed)"})

    def create_dashboard(self, dashboard: Dashboard) -> Effect:
        planned = self.plan(dashboard)
        model = upload_model(dashboard, str(self.api.setting("datasource_uid", required=True)))
        action = f"create dashboard {dashboard.uid}"
        if (found := self._existing(dashboard.uid, action)) is not None:
            return self._adopt(planned, found)
        body: dict[str, Any] = {
            "dashboard": model,
            "overwrite": False,
            "message": f"created by the campaign orchestrator ({dashboard.uid})",
        }
        if self.folder_uid:
            body["folderUid"] = self.folder_uid
        response = self.api.request("POST", "api/dashboards/db", action, json=body, ok=(*OK, 412))
        answer = response.json() if response.content else {}
        if response.status_code == 412:
            # version-mismatch / name-exists: a dashboard with our uid (adopt it) or with our title (a conflict)
            if (found := self._existing(dashboard.uid, action)) is not None:
                return self._adopt(planned, found)
            why = (
                f": another dashboard is titled {dashboard.title!r} in folder {self.folder_uid or '(root)'}"
                if answer.get("status") == "name-exists"
                else ""
            )
            reason = f"HTTP 412 ({answer.get('status', '')}): {answer.get('message', '')}{why}"
            raise PermanentServiceError(SERVICE, action, reason, status=412)
        if answer.get("uid") not in (None, dashboard.uid):
            raise PermanentServiceError(SERVICE, action, f"Grafana saved it as uid {answer.get('uid')!r}, not {dashboard.uid!r}")
        url = urljoin(self.base_url, str(answer.get("url") or f"d/{dashboard.uid}"))
        return planned.model_copy(update={"ref": {**planned.ref, "url": url}})

    def undo(self, effect: Effect) -> bool:
        if effect.kind != self.kind or not effect.ref.get("uid"):
            raise ValueError(f"grafana: not a dashboard effect: {effect.kind} {effect.ref}")
        uid = str(effect.ref["uid"])
        response = self.api.request("DELETE", self._endpoint(uid), f"delete dashboard {uid}", ok=(*OK, 404))
        return response.status_code != 404
