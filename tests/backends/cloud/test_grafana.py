"""The Grafana analytics backend against the Grafana dashboard API double (tests/doubles/grafana.py).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/grafana.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.grafana import GrafanaApi
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.grafana import BY_UID, SAVE, TITLE, UID, api, conn, dashboard
from tests.doubles.grafana import GrafanaDouble


@pytest.fixture
def grafana() -> Iterator[GrafanaDouble]:
    with GrafanaDouble() as double:
        yield double


# --- the changing call ------------------------------------------------------------------------
def test_create_uploads_the_resolved_model(grafana: GrafanaDouble) -> None:
    effect = api(grafana).create_dashboard(dashboard())

    assert effect.kind == "dashboard" and effect.port == "analytics" and effect.backend == "grafana" and effect.key == UID
    assert effect.ref == {
        "uid": UID,
        "folder_uid": "campaigns",
        "url": f"{grafana.url}/d/{UID}/campaign-spring-launch-2027-r1a2b3c4",
    }
    stored = grafana.dashboards()[UID]
    assert stored["title"] == TITLE and stored["version"] == 1 and isinstance(stored["id"], int)
    assert "__inputs" not in stored and "__requires" not in stored and "${DS_PROMETHEUS}" not in json.dumps(stored)
    datasources = {json.dumps(p["datasource"]) for p in stored["panels"] if p["type"] != "row"}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "prom-main"})}
    assert grafana.folder_of(UID) == "campaigns"
    assert grafana.problems == []


def test_create_twice_creates_once(grafana: GrafanaDouble) -> None:
    first = api(grafana).create_dashboard(dashboard())
    second = api(grafana).create_dashboard(dashboard())  # a retry: new process, new backend

    assert grafana.count("POST", SAVE) == 1 and list(grafana.dashboards()) == [UID]
    assert second.ref == first.ref and "already existed" in second.summary
    assert grafana.problems == []


def test_412_for_our_uid_adopts_it(grafana: GrafanaDouble) -> None:
    # The first try's POST reached Grafana; the retry's lookup raced it (404), so its POST gets 412.
    api(grafana).create_dashboard(dashboard())
    grafana.fail_next("GET", BY_UID, 404, {"message": "Dashboard not found"})

    effect = api(grafana).create_dashboard(dashboard())

    assert grafana.count("POST", SAVE) == 2 and list(grafana.dashboards()) == [UID]
    assert grafana.dashboards()[UID]["version"] == 1  # not overwritten: the 412 was understood
    assert effect.ref["url"].endswith(f"/d/{UID}/campaign-spring-launch-2027-r1a2b3c4")
    assert grafana.problems == []


def test_412_name_exists_fails_fast(grafana: GrafanaDouble) -> None:
    grafana.add_dashboard("someone-elses", TITLE, folder_uid="campaigns")

    with pytest.raises(ServiceError) as raised:
        api(grafana).create_dashboard(dashboard())
    error = raised.value
    assert error.retryable is False and error.status == 412
    assert "name-exists" in str(error) and "A dashboard with the same name in the folder already exists" in str(error)
    assert list(grafana.dashboards()) == ["someone-elses"]
    assert grafana.problems == []


def test_root_folder_when_no_folder_is_configured(grafana: GrafanaDouble) -> None:
    effect = api(grafana, folder_uid=None).create_dashboard(dashboard())

    assert effect.ref["folder_uid"] is None and grafana.folder_of(UID) is None
    assert grafana.problems == []


# --- plan and undo ---------------------------------------------------------------------------------
def test_backend_for_builds_the_grafana_backend(grafana: GrafanaDouble) -> None:
    backend = connections.backend_for("analytics", "grafana_test", conn(grafana.url))

    assert isinstance(backend, GrafanaApi)
    assert backend.undo(backend.create_dashboard(dashboard())) is True
    assert grafana.problems == []


# --- errors ---------------------------------------------------------------------------------------
def test_wrong_token_fails_fast(grafana: GrafanaDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        GrafanaApi("grafana_test", conn(grafana.url, password="expired-token")).create_dashboard(dashboard())
    error = raised.value
    assert error.retryable is False and error.status == 401 and "Unauthorized" in str(error)
    assert "expired-token" not in str(error)
    assert grafana.dashboards() == {}
    assert grafana.problems == []


def test_unknown_folder_fails_fast(grafana: GrafanaDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        api(grafana, folder_uid="no-such-folder").create_dashboard(dashboard())
    assert raised.value.retryable is False and raised.value.status == 400 and "folder not found" in str(raised.value)
    assert grafana.problems == []


def test_access_denied_fails_fast(grafana: GrafanaDouble) -> None:
    grafana.fail_next("DELETE", BY_UID, 403, {"message": "Access denied"})
    backend = api(grafana)

    with pytest.raises(ServiceError) as raised:
        backend.undo(backend.plan(dashboard()))
    assert raised.value.retryable is False and raised.value.status == 403 and "Access denied" in str(raised.value)
    assert grafana.problems == []


# --- configuration and the model -------------------------------------------------------------------
def test_datasource_uid_is_required_before_any_call(grafana: GrafanaDouble) -> None:
    with pytest.raises(ConnectionConfigError, match=r"'grafana_test'.*'datasource_uid'"):
        api(grafana, datasource_uid=None).create_dashboard(dashboard())
    assert grafana.calls == []


@pytest.mark.parametrize(("host", "password", "field"), [("", "test-token", "host"), ("http://grafana:3000", None, "token")])
def test_host_and_token_are_required(host: str, password: str | None, field: str) -> None:
    with pytest.raises(ConnectionConfigError, match=rf"'grafana_test'.*{field}"):
        GrafanaApi("grafana_test", conn(host, password=password))


def test_a_model_with_another_datasource_input_is_refused_before_any_call(grafana: GrafanaDouble) -> None:
    board = dashboard()
    panels = [
        *board.model["panels"],
        {
            **board.model["panels"][1],
            "id": 99,
            "datasource": {"type": "loki", "uid": "${DS_LOKI}"},
            "gridPos": {"h": 8, "w": 24, "x": 0, "y": 100},
        },
    ]
    with pytest.raises(ValueError, match="DS_LOKI"):
        api(grafana).create_dashboard(board.model_copy(update={"model": {**board.model, "panels": panels}}))
    assert grafana.calls == []
