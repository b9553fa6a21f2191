"""Analytics port backend: Grafana dashboards as JSON files (the model: ``domain/dashboard.py``).

:class:`GrafanaFolder` writes each dashboard to ``<path>/<uid>.json`` in Grafana's classic
dashboard JSON model, the form Grafana's "Dashboards > New > Import" page accepts as a file or
pasted text (https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/).
Like a dashboard exported "for sharing externally", the model names its data source through the
input ``DS_PROMETHEUS`` (``__inputs``), so the import page asks which Prometheus to use.
Uploading through ``POST /api/dashboards/db`` instead needs ``{"dashboard": model, "overwrite": true}``
and the ``${DS_PROMETHEUS}`` placeholders replaced (or ``POST /api/dashboards/import`` with inputs).

The panels query these Prometheus series, labelled ``campaign`` and ``channel``:
``campaign_deliveries_total`` (messages or posts delivered) and ``campaign_engagements_total``
(with label ``event``: open, click, like, ...). Whatever feeds them is outside this module.
"""

from __future__ import annotations

from pathlib import Path

from include.orchestrator.backends.common.folder import FolderBackend, json_bytes, write_atomic
from include.orchestrator.domain.dashboard import dashboard_problems
from include.orchestrator.domain.ports import Dashboard, Effect


class GrafanaFolder(FolderBackend):
    """Analytics port: dashboards as importable Grafana JSON files in ``<path>/<uid>.json``."""

    port, backend, kind = "analytics", "grafana_folder", "dashboard"

    def plan(self, dashboard: Dashboard) -> Effect:
        target = self._file(dashboard.uid, ".json")
        return self._effect(
            dashboard.uid,
            {"uid": dashboard.uid, "path": str(target)},
            f"Grafana dashboard {dashboard.title!r} written to {target}",
        )

    def create_dashboard(self, dashboard: Dashboard) -> Effect:
        model = {**dashboard.model, "uid": dashboard.uid, "title": dashboard.title}
        if problems := dashboard_problems(model):
            raise ValueError(f"dashboard {dashboard.uid!r} is not a valid Grafana dashboard: {'; '.join(problems)}")
        effect = self.plan(dashboard)
        write_atomic(Path(effect.ref["path"]), json_bytes(model))
        return effect
