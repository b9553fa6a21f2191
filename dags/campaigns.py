"""Airflow DAG file: one DAG per campaign file in include/campaigns/ (see the README)."""

from include.orchestrator.airflow.dags import build_dags

build_dags(globals())
