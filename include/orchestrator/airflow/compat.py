"""Every name this package takes from Airflow's internals, in one place.

The task SDK (``airflow.sdk``), the provider operators and hooks are Airflow's public interface. What
is not (the metadata DB's ORM models, the API server's security dependencies, the task runner's HITL
upsert) may move in any release: it is imported only from here, so an upgrade has one module to
check, and ``tests/airflow/test_compat.py`` checks each name and the parameters we call it with.

Names resolve on first use (PEP 562), not at import: the DAG file and the task processes that do not
touch the metadata DB never load the ORM.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real types, for mypy and readers; at run time names resolve lazily below
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun, DagRunNote
    from airflow.models.hitl import HITLDetail
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail
    from airflow.sdk.observability.stats import Stats
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

# The Airflow release these internals were read against (see ../../../shared/reference/airflow-3.3-facts.md).
TESTED = (3, 3)

# name -> (module, what we use it for)
INTERNALS: dict[str, tuple[str, str]] = {
    # The metadata DB, read and written by the decision API, the Campaigns view and `make up`.
    "DagModel": ("airflow.models.dag", "which campaign DAGs exist (the Campaigns view)"),
    "DagRun": ("airflow.models.dagrun", "runs, their notes and last_scheduling_decision (decisions, view)"),
    "DagRunNote": ("airflow.models.dagrun", "the run's note as the view shows it"),
    "TaskInstance": ("airflow.models.taskinstance", "the gate's state, set by a decision (compare-and-set)"),
    "XComModel": ("airflow.models.xcom", "the gate's state and decision record, read and written by the API"),
    "HITLDetail": ("airflow.models.hitl", "the Required Actions request a decision answers"),
    "Log": ("airflow.models.log", "the audit log entry of a decision or a refused mark"),
    "create_session": ("airflow.utils.session", "a metadata DB session outside a request"),
    "TaskInstanceState": ("airflow.utils.state", "task states the decision API sets and checks"),
    # The API server: our FastAPI apps authorise like Airflow's own routes.
    "get_auth_manager": ("airflow.api_fastapi.app", "who may see which DAG (the Campaigns view)"),
    "DagAccessEntity": ("airflow.api_fastapi.auth.managers.models.resource_details", "access checks on runs"),
    "DagDetails": ("airflow.api_fastapi.auth.managers.models.resource_details", "access checks on DAGs"),
    "SessionDep": ("airflow.api_fastapi.common.db.common", "the request's DB session"),
    "GetUserDep": ("airflow.api_fastapi.core_api.security", "the signed-in user"),
    "requires_access_dag": ("airflow.api_fastapi.core_api.security", "Airflow's DAG permission check"),
    # The task runner.
    "upsert_hitl_detail": ("airflow.sdk.execution_time.hitl", "the gate publishes its Required Actions request"),
    "Stats": ("airflow.sdk.observability.stats", "the breakers' metrics, through Airflow's configured backend"),
}

_log = logging.getLogger(__name__)
_checked = False


def airflow_version() -> tuple[int, ...]:
    from airflow import __version__

    return tuple(int(part) for part in __version__.split(".")[:2] if part.isdigit())


def check_version() -> bool:
    """Whether the running Airflow is the release these internals were read against; logs once if not."""
    global _checked
    tested = airflow_version() == TESTED
    if not tested and not _checked:
        _log.warning(
            "campaign orchestrator: tested with Airflow %s.x, running %s; if a decision, the Campaigns view or "
            "the approval gate fails, check include/orchestrator/airflow/compat.py first",
            ".".join(map(str, TESTED)),
            ".".join(map(str, airflow_version())),
        )
    _checked = True
    return tested


def __getattr__(name: str) -> Any:
    if name not in INTERNALS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    check_version()
    value = getattr(importlib.import_module(INTERNALS[name][0]), name)
    globals()[name] = value  # resolved once per process
    return value


# Listed by name (not built from INTERNALS) so linters and type checkers see the names exported.
__all__ = [
    "DagAccessEntity",
    "DagDetails",
    "DagModel",
    "DagRun",
    "DagRunNote",
    "GetUserDep",
    "HITLDetail",
    "Log",
    "SessionDep",
    "Stats",
    "TaskInstance",
    "TaskInstanceState",
    "XComModel",
    "create_session",
    "get_auth_manager",
    "requires_access_dag",
    "upsert_hitl_detail",
    "TESTED",
    "airflow_version",
    "check_version",
]
