"""The campaign dashboard: a Grafana dashboard model (classic JSON, schema 39), and its checks. Airflow-free.

The analytics step builds it; the Grafana folder backend writes it as a file and the Grafana API
backend creates it (``backends/local/dashboards.py``, ``backends/cloud/grafana.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 39  # Grafana 10.4/11.x; newer Grafana migrates older schema versions when it loads them


GRID_COLUMNS = 24


_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # Grafana dashboard uids: at most 40 of these characters


DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


INPUTS = [
    {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": "",
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
]


REQUIRES = [
    {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.0.0"},
    {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
    {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
]


BUILTIN_ANNOTATIONS = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def _target(expr: str, legend: str = "__auto") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": "A"}


def _stat(title: str, expr: str, unit: str = "short") -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "targets": [_target(expr)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def _timeseries(title: str, expr: str, legend: str, unit: str) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "targets": [_target(expr, legend)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def _row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def campaign_dashboard(uid: str, title: str, campaign_slug: str, channels: Sequence[str], tags: list[str]) -> dict[str, Any]:
    """The Grafana dashboard model of one campaign run: an overview row, then one row per channel
    with its deliveries (stat) and engagement over time (time series)."""
    if not _UID.match(uid):
        raise ValueError(f"Grafana dashboard uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
    sel = 'campaign="$campaign"'
    # (panel, width, height) per grid line; rows are full width and 1 high, as Grafana draws them.
    lines: list[list[tuple[dict[str, Any], int, int]]] = [
        [(_row("Overview"), GRID_COLUMNS, 1)],
        [
            (_stat("Deliveries, all channels", f"sum(increase(campaign_deliveries_total{{{sel}}}[$__range]))"), 8, 8),
            (
                _timeseries(
                    "Deliveries per channel",
                    f"sum by (channel) (rate(campaign_deliveries_total{{{sel}}}[$__rate_interval]))",
                    "{{channel}}",
                    "ops",
                ),
                16,
                8,
            ),
        ],
    ]
    for channel in channels:
        ch = f'{sel},channel="{channel}"'
        lines += [
            [(_row(f"Channel: {channel}"), GRID_COLUMNS, 1)],
            [
                (_stat(f"{channel}: delivered", f"sum(increase(campaign_deliveries_total{{{ch}}}[$__range]))"), 6, 8),
                (
                    _timeseries(
                        f"{channel}: engagement",
                        f"sum by (event) (rate(campaign_engagements_total{{{ch}}}[$__rate_interval]))",
                        "{{event}}",
                        "ops",
                    ),
                    18,
                    8,
                ),
            ],
        ]
    panels: list[dict[str, Any]] = []
    y = 0
    for line in lines:
        x = 0
        for panel, w, h in line:
            panels.append({**panel, "id": len(panels) + 1, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
            x += w
        y += max(h for _, _, h in line)
    return {
        "__inputs": INPUTS,
        "__elements": {},
        "__requires": REQUIRES,
        "annotations": {"list": [BUILTIN_ANNOTATIONS]},
        "description": f"Deliveries and engagement of campaign {campaign_slug}, per channel.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "5m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(tags),
        "templating": {
            "list": [
                {
                    "type": "constant",
                    "name": "campaign",
                    "label": "Campaign",
                    "hide": 2,
                    "query": campaign_slug,
                    "current": {"selected": False, "text": campaign_slug, "value": campaign_slug},
                    "options": [{"selected": True, "text": campaign_slug, "value": campaign_slug}],
                    "skipUrlSync": False,
                }
            ]
        },
        "time": {"from": "now-7d", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def dashboard_problems(model: dict[str, Any]) -> list[str]:
    """What keeps ``model`` from being a well-formed classic dashboard (empty list: none)."""
    problems = []
    if not _UID.match(str(model.get("uid", ""))):
        problems.append(f"uid {model.get('uid')!r} is not 1-40 letters, digits, '-' or '_'")
    if not str(model.get("title", "")).strip():
        problems.append("title is empty")
    if not isinstance(model.get("schemaVersion"), int):
        problems.append("schemaVersion is not an integer")
    if not {"from", "to"} <= set(model.get("time") or {}):
        problems.append("time needs from and to")
    panels = model.get("panels")
    if not isinstance(panels, list):
        return [*problems, "panels is not a list"]
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) and i > 0 for i in ids):
        problems.append(f"panel ids must be unique positive integers: {ids}")
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p.get("gridPos") or {}
        if (
            not all(isinstance(g.get(k), int) for k in "hwxy")
            or g["h"] < 1
            or g["w"] < 1
            or g["x"] < 0
            or g["y"] < 0
            or g["x"] + g["w"] > GRID_COLUMNS
        ):
            problems.append(f"panel {p.get('id')} has an invalid gridPos {g}")
            continue
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        if mine & cells:
            problems.append(f"panel {p.get('id')} overlaps another panel")
        cells |= mine
    return problems
