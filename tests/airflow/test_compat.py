"""Each Airflow internal the package uses (include/orchestrator/airflow/compat.py) still exists as we
use it: the name, the parameters we pass, the columns we query. An Airflow upgrade that moves one
fails here, by name, before a decision or the Campaigns view fails in front of a user."""

from __future__ import annotations

import inspect

import pytest

from include.orchestrator.airflow import compat as airflow_compat


def test_the_installed_airflow_is_the_release_the_internals_were_read_against():
    assert airflow_compat.check_version(), airflow_compat.airflow_version()


@pytest.mark.parametrize("name", sorted(airflow_compat.INTERNALS))
def test_every_internal_resolves(name):
    assert getattr(airflow_compat, name) is not None


def test_a_name_outside_the_table_is_an_attribute_error():
    with pytest.raises(AttributeError):
        airflow_compat.__getattr__("not_an_internal")


# name -> the keyword parameters we call it with (airflow/, approval/decisions.py, web/app.py)
CALLED_WITH = {
    "upsert_hitl_detail": {"ti_id", "options", "subject", "body", "defaults", "multiple", "params", "assigned_users"},
    "requires_access_dag": {"method", "access_entity"},
}


@pytest.mark.parametrize("name", sorted(CALLED_WITH))
def test_functions_take_the_parameters_we_pass(name):
    parameters = set(inspect.signature(getattr(airflow_compat, name)).parameters)
    assert CALLED_WITH[name] <= parameters, CALLED_WITH[name] - parameters


def test_the_auth_manager_checks_we_call_take_our_arguments():
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    assert {"method", "access_entity", "details", "user"} <= set(inspect.signature(BaseAuthManager.is_authorized_dag).parameters)
    assert {"user", "method", "session"} <= set(inspect.signature(BaseAuthManager.get_authorized_dag_ids).parameters)
    assert {"HITL_DETAIL", "RUN"} <= set(airflow_compat.DagAccessEntity.__members__)
    assert {"key", "value", "dag_id", "task_id", "run_id", "map_index", "serialize", "session"} <= set(
        inspect.signature(airflow_compat.XComModel.set).parameters
    )


# model -> the columns and attributes we read or write (approval/decisions, web/campaigns, airflow/run_notes, dev/localdev)
COLUMNS = {
    "DagModel": {"dag_id", "dag_display_name", "owners", "is_paused", "timetable_summary", "description", "is_stale"},
    "DagRun": {"id", "dag_id", "run_id", "_state", "run_type", "triggering_user_name", "queued_at", "start_date", "end_date",
               "run_after", "last_scheduling_decision"},
    "DagRunNote": {"content", "dag_run_id"},
    "TaskInstance": {"id", "dag_id", "run_id", "task_id", "map_index", "state", "note", "dag_run"},
    "XComModel": {"dag_id", "run_id", "dag_run_id", "task_id", "map_index", "key", "value"},
    "HITLDetail": {"ti_id"},
    "Log": {"event", "owner", "dag_id", "run_id", "task_id", "extra"},
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(COLUMNS))
def test_models_have_the_columns_we_use(model):
    cls = getattr(airflow_compat, model)
    missing = {name for name in COLUMNS[model] if not hasattr(cls, name)}
    assert not missing, f"{model} lacks {missing}"


def test_the_states_we_set_exist():
    assert {"AWAITING_INPUT", "SUCCESS", "FAILED"} <= set(airflow_compat.TaskInstanceState.__members__)


def test_the_package_imports_airflow_internals_only_through_the_fence():
    from pathlib import Path

    package = Path(airflow_compat.__file__).parents[1]
    public = (
        "from airflow.sdk",
        "import airflow.sdk",
        "from airflow.providers",
        "from airflow.listeners",
        "from airflow import __version__",
    )
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in package.rglob("*.py")
        if path != Path(airflow_compat.__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip().startswith(("from airflow", "import airflow")) and not line.strip().startswith(public)
    ]
    assert offenders == [], offenders


def test_every_internal_is_exported():
    assert set(airflow_compat.INTERNALS) <= set(airflow_compat.__all__)
