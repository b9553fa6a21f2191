"""What a step reads of earlier tasks, typed (``StepContext``): each input is one pull of one task's
result, also when a mapped task had no instance or a page failed to load."""

from __future__ import annotations

from datetime import UTC, date, datetime

from include.orchestrator import steps
from include.orchestrator.approval.rules import Decision
from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign

CAMPAIGN = parse_campaign(CAMPAIGNS_DIR / "spring-launch.yaml")


def context(results: dict) -> tuple[steps.StepContext, list[str]]:
    pulled: list[str] = []

    def pull(task_id: str):
        pulled.append(task_id)
        return results.get(task_id)

    ctx = steps.StepContext(current=CAMPAIGN, dag_id="d", run_id="r", run_date=date(2026, 12, 1), conf={}, pull=pull,
                            open_port=lambda port: None)  # fmt: skip
    return ctx, pulled


def test_research_inputs_skip_what_failed_and_keep_the_order():
    ctx, pulled = context({
        tasks.SCRAPE_COMPETITOR: [{"headlines": ["Fast", "Cheap"]}, None, {"headlines": ["Open"]}],
        tasks.SEARCH_NOTES: [{"text": "note 1"}],
        tasks.RECALL_RESEARCH: [{"text": "recalled 1"}, {"text": "recalled 2"}],
        tasks.BRAND_VOICE: {"reference": "v", "text": "Plain and warm.", "source": "memory"},
    })  # fmt: skip
    assert ctx.research_headlines == ["Fast", "Cheap", "Open"]
    assert ctx.research_notes == ["note 1", "recalled 1", "recalled 2"]
    assert ctx.brand_voice == "Plain and warm."
    assert ctx.research_headlines is ctx.research_headlines  # cached: one pull per task
    assert sorted(pulled) == sorted([tasks.SCRAPE_COMPETITOR, tasks.SEARCH_NOTES, tasks.RECALL_RESEARCH, tasks.BRAND_VOICE])


def test_a_mapped_task_with_no_instance_reads_as_nothing():
    ctx, _ = context({tasks.SCRAPE_COMPETITOR: None, tasks.SEARCH_NOTES: None, tasks.RECALL_RESEARCH: None})
    assert (ctx.research_headlines, ctx.research_notes, ctx.review) == ([], [], {})


def test_the_decision_is_a_record_or_none():
    record = Decision(decision="approved", by="dana", means="rest", at=datetime(2026, 12, 1, tzinfo=UTC))
    assert context({tasks.GATE: record.model_dump(mode="json")})[0].decision == record
    assert context({})[0].decision is None
