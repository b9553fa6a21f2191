"""Airflow DAG file: the GitHub review watcher, present when a campaign names github_approvers (README, "Approval")."""

from include.orchestrator.airflow.dags import review_watch_dag

if (dag := review_watch_dag()) is not None:
    campaign_github_reviews = dag
