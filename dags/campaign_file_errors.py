"""Airflow DAG file that shows every invalid campaign file as an import error, without hiding the valid campaign DAGs."""

from include.orchestrator.airflow.dags import report_invalid_campaigns

report_invalid_campaigns()
