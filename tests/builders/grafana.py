"""The Grafana dashboard backend against its double (tests/doubles/grafana.py), and a dashboard."""

from __future__ import annotations

import json

from airflow.sdk import Connection

from include.orchestrator.backends.cloud.grafana import GrafanaApi
from include.orchestrator.domain.dashboard import campaign_dashboard
from include.orchestrator.domain.ports import Dashboard
from tests.doubles.grafana import GrafanaDouble

UID = "spring-launch-r1a2b3c4"
TITLE = "Campaign Spring Launch 2027 (r1a2b3c4)"
SAVE = "/api/dashboards/db"
BY_UID = rf"/api/dashboards/uid/{UID}"


def conn(host: str, password: str | None = "test-token", **extra: object) -> Connection:
    settings = {"datasource_uid": "prom-main", "folder_uid": "campaigns", **extra}
    return Connection(
        conn_id="grafana_test",
        conn_type="http",
        host=host,
        password=password,
        extra=json.dumps({k: v for k, v in settings.items() if v is not None}),
    )


def api(double: GrafanaDouble, **extra: object) -> GrafanaApi:
    return GrafanaApi("grafana_test", conn(double.url, **extra))


def dashboard(uid: str = UID, title: str = TITLE) -> Dashboard:
    return Dashboard(uid=uid, title=title, model=campaign_dashboard(uid, title, "spring-launch", ["email", "blog"], ["campaign"]))
