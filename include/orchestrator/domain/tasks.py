"""The task ids of a campaign's DAG: the one contract between the DAG the renderer builds
(``airflow/dags.build_dag``, task groups named after the phases) and the Airflow-free code that reads a
run's results by task (steps, saga, approval, the decision API, the Campaigns view).

``tests/airflow/test_dag_integrity.py`` checks that the DAG has exactly these tasks.
"""

from __future__ import annotations

# The task groups of the forward steps, in the order a run goes through them (after PLAN).
PHASES = ("research", "content", "design", "review", "distribution", "analytics")

PLAN = "validate_conf"
SEARCH_NOTES = "research.search_notes"
SCRAPE_COMPETITOR = "research.scrape_competitor"
RECALL_RESEARCH = "research.recall_research"
BRAND_VOICE = "content.load_brand_voice"
WRITE_COPY = "content.write_copy"
STORE_DRAFT = "content.store_draft"
RENDER_IMAGE = "design.render_image"
OPEN_REVIEW = "review.open_review"
NOTIFY_REVIEWERS = "review.notify_reviewers"
GATE = "review.approval"
CHANNEL_PREFIX = "distribution.publish_"
DASHBOARD = "analytics.create_dashboard"  # the last forward step: the campaign completed when it succeeded
UNDO = "compensation.undo"
REPORT = "compensation.report"
COMPENSATION_GROUP = "compensation"


def channel_task(channel: str) -> str:
    """The task that publishes one channel."""
    return f"{CHANNEL_PREFIX}{channel}"


def channel_of(task_id: str) -> str:
    """The channel a publishing task publishes."""
    return task_id.removeprefix(CHANNEL_PREFIX)


def is_compensation(task_id: str) -> bool:
    return task_id.startswith(f"{COMPENSATION_GROUP}.")


def all_tasks(channels: tuple[str, ...]) -> set[str]:
    """Every task of a campaign's DAG, given every channel the package knows."""
    forward = {PLAN, SEARCH_NOTES, SCRAPE_COMPETITOR, RECALL_RESEARCH, BRAND_VOICE, WRITE_COPY, STORE_DRAFT, RENDER_IMAGE}
    return forward | {OPEN_REVIEW, NOTIFY_REVIEWERS, GATE, DASHBOARD, UNDO, REPORT} | {channel_task(c) for c in channels}
