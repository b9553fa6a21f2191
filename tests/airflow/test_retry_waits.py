"""Retries wait at least what the service asked, on a real Airflow, and attempts stay bounded.

Notion's query endpoint (a local double) answers a campaign's ``research.search_notes`` with, in
order: 429 ``Retry-After: 10``, 429 with ``Retry-After`` as an HTTP-date 10 s ahead, 503 without
``Retry-After``, a connection reset and a stall past the client's 2 s timeout. Those five failures
open Notion's circuit breaker; the next try is refused by the breaker without reaching Notion
(``CircuitOpenError`` carries the wait to the breaker's trial) and the one after succeeds. From the
double's arrival time of each call, every gap between two calls must be at least what was asked:
the Retry-After seconds, the date minus the answer time, Airflow's least exponential backoff for the
errors that ask nothing, and the breaker's reset timeout. The asked 10 s are far above the
campaign's 1 s backoff, so the test fails if the retry policy were ignored. Prints the table.

A second campaign with 2 retries is bounded: 503 forever makes exactly 3 calls and fails the run;
a 401 (our mistake, not retryable) makes exactly one call and the run's report names Notion's message.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest
import yaml

from include.orchestrator.dev import localdev
from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.resilience.breakers import build_breakers
from tests.doubles.notion import NotionDouble
from tests.stack import AirflowStack
from tests.worlds import http_connection, local_connections

pytestmark = pytest.mark.integration

WAITS_DAG, BOUNDS_DAG = "campaign_retry-waits", "campaign_retry-bounds"
TASK = "research.search_notes"
ENDED = {"success", "failed", "upstream_failed"}
CLIENT_TIMEOUT = 2  # s, the notes connection's extra "timeout"
STALL = 6  # s before a stalled answer leaves: past the client's timeout
RESET_TIMEOUT = 8  # s Notion's breaker stays open before a trial call
ASKED = 10  # s, both 429s' Retry-After: far above the campaign's 1 s backoff
WAITS_RETRIES = {"count": 6, "delay": "1s", "max_delay": "3s"}
BOUNDS_RETRIES = {"count": 2, "delay": "1s"}


def airflow_least_backoff(failed_try: int, delay: float, max_delay: float) -> float:
    """The shortest wait Airflow's own backoff gives after try ``failed_try`` failed, when no retry
    policy set one: ``TaskInstance.next_retry_datetime`` with ``retry_exponential_backoff=True`` (2.0
    once serialized) waits ceil(delay * 2 ** (try - 1)) plus a hash jitter >= 0, capped at max_delay."""
    return min(max(1, math.ceil(delay * 2 ** (failed_try - 1))), max_delay)


def _campaign(slug: str, retries: dict[str, Any]) -> dict[str, Any]:
    campaign = yaml.safe_load((CAMPAIGNS_DIR / "spring-launch.yaml").read_text())
    campaign |= {"slug": slug, "retries": retries}
    campaign["research"]["competitor_urls"] = []
    campaign["approval"] = {"approvers": ["dana"], "timeout": "1h"}
    return campaign


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("retry")
    conns = local_connections(root / "data")
    (root / "campaigns").mkdir()
    for slug, retries in (("retry-waits", WAITS_RETRIES), ("retry-bounds", BOUNDS_RETRIES)):
        (root / "campaigns" / f"{slug}.yaml").write_text(yaml.safe_dump(_campaign(slug, retries)))
    with contextlib.ExitStack() as stack:
        notion = stack.enter_context(NotionDouble())
        # No pages: a successful query answers none, so every try makes exactly one call (no block reads).
        source = notion.add_data_source()
        # title_property spares the schema read: the query is the only call of a try.
        conns["campaign_notes"] = http_connection(
            notion.url, data_source_id=source, title_property="Name", timeout=CLIENT_TIMEOUT
        )
        conns["campaign_breakers"]["extra"]["services"] = {"Notion": {"fail_max": 5, "reset_timeout": RESET_TIMEOUT}}
        env = {**localdev.connection_env(conns), "CAMPAIGNS_DIR": str(root / "campaigns")}
        airflow = AirflowStack(root / "airflow", env=env)
        try:
            airflow.start()
            airflow.wait_for_dags([WAITS_DAG, BOUNDS_DAG])
            yield {
                "stack": airflow,
                "notion": notion,
                "query": f"/v1/data_sources/{source}/query",
                "sources": dict(notion.data_sources),
                "breakers": conns["campaign_breakers"],
            }
        finally:
            airflow.stop()


@pytest.fixture(autouse=True)
def fresh(world):
    """Each scenario starts from a Notion with no calls or queued faults and a closed breaker,
    whatever ran before (the first scenario leaves the breaker half-open)."""
    from airflow.sdk import Connection

    notion = world["notion"]
    notion.reset()
    notion.data_sources.update(world["sources"])  # reset() forgets them; the connection names this one
    spec = world["breakers"]
    registry = build_breakers(
        "campaign_breakers", Connection(conn_id="campaign_breakers", conn_type=spec["conn_type"], extra=json.dumps(spec["extra"]))
    )
    registry.breaker("Notion").close()
    registry.store.db.conn.close()
    yield


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _task(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    return stack.api("GET", f"{stack.run_path(dag_id, run_id)}/taskInstances/{TASK}").json()


def _stop(stack: AirflowStack, dag_id: str, run_id: str) -> None:
    """Stop following a run whose task under test has ended: it would go on to wait for approval."""
    answer = stack.api("PATCH", stack.run_path(dag_id, run_id), json={"state": "failed"})
    assert answer.status_code == 200, answer.text


def test_every_retry_waits_at_least_what_notion_asked(world):
    stack, notion, query = world["stack"], world["notion"], world["query"]
    dates: list[float] = []

    def retry_after_a_date() -> dict[str, str]:
        # Computed when the answer leaves; an HTTP-date has whole seconds, so the date is (9, 10] s ahead.
        value = email.utils.formatdate(time.time() + ASKED, usegmt=True)
        dates.append(email.utils.parsedate_to_datetime(value).timestamp())
        return {"Retry-After": value}

    notion.fail_next("POST", query, 429, {"message": "You have been rate limited."}, {"Retry-After": str(ASKED)})
    notion.fail_next("POST", query, 429, {"message": "You have been rate limited."}, retry_after_a_date)
    notion.fail_next("POST", query, 503, {"message": "Notion is unavailable, please try again later."})
    notion.reset_next("POST", query)
    notion.stall_next("POST", query, STALL)

    run_id = stack.trigger(WAITS_DAG)
    state = stack.wait_task(WAITS_DAG, run_id, TASK, ENDED, timeout=900)
    ti = _task(stack, WAITS_DAG, run_id)
    tries = stack.api("GET", f"{stack.run_path(WAITS_DAG, run_id)}/taskInstances/{TASK}/tries").json()["task_instances"]
    _stop(stack, WAITS_DAG, run_id)

    times = list(notion.times)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    said = [
        f"429 Retry-After: {ASKED}",
        "429 Retry-After: <HTTP-date>",
        "503, no Retry-After",
        "connection reset",
        f"no answer in {CLIENT_TIMEOUT} s: breaker opens",
        "(breaker open: not called)",
        "200",
    ]
    delay, max_delay = 1, 3
    asked = [
        float(ASKED),
        dates[0] - times[1] if dates and len(times) > 1 else math.nan,
        airflow_least_backoff(3, delay, max_delay),
        airflow_least_backoff(4, delay, max_delay),
        float(RESET_TIMEOUT),
    ]
    why = ["Retry-After", "the date - answer time", "Airflow backoff", "Airflow backoff", "breaker reset_timeout"]
    started = {t["try_number"]: _stamp(t["start_date"]) for t in tries if t.get("start_date")}
    call_of = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 5}  # try -> its call (try 6 made none: shown without one)
    head = f"{'try':>3} {'started':>7} {'call at':>7} {'Notion said':<34} {'asked wait':>10} {'(why)':<22} {'measured gap':>12}"
    lines = [head]
    for number in range(1, 8):
        index = call_of[number]
        start = f"{started[number] - times[0]:7.1f}" if number in started and times else f"{'-':>7}"
        at = f"{times[index] - times[0]:7.1f}" if index < len(times) and number != 6 else f"{'-':>7}"
        if number <= 5:
            wait, reason = f"{asked[index]:10.2f}", why[index]
            gap = f"{gaps[index]:12.2f}" if index < len(gaps) else f"{'-':>12}"
        else:
            wait, reason, gap = f"{'-':>10}", "", f"{'-':>12}"
        lines.append(f"{number:>3} {start} {at} {said[number - 1]:<34} {wait} {reason:<22} {gap}")
    print(
        "\nRetry waits on a real Airflow (s since the first call; a gap runs to the next call that reached Notion)\n"
        + "\n".join(lines)
    )

    assert state == "success" and ti["try_number"] == 7, (state, ti.get("try_number"), stack.home)
    assert len(notion.calls) == 6, notion.calls  # try 6 was refused by the open breaker without a call
    assert notion.problems == [], notion.problems
    assert len(dates) == 1 and dates[0] <= times[1] + ASKED, dates
    for number, (gap, wait) in enumerate(zip(gaps, asked, strict=True), start=1):
        assert gap >= wait, f"the wait after try {number} ({said[number - 1]}) was {gap:.2f} s, asked {wait:.2f} s"


def test_retries_stop_after_the_campaigns_count(world):
    stack, notion, query = world["stack"], world["notion"], world["query"]
    notion.fail_next("POST", query, 503, {"message": "Notion is unavailable, please try again later."}, times=20)
    run_id = stack.trigger(BOUNDS_DAG)
    assert stack.wait_task(BOUNDS_DAG, run_id, TASK, ENDED, timeout=600) == "failed"
    assert _task(stack, BOUNDS_DAG, run_id)["try_number"] == 3
    assert stack.wait_run(BOUNDS_DAG, run_id, timeout=600) == "failed"
    assert len(notion.calls) == 3, notion.calls  # the try and its 2 retries, no more
    assert notion.problems == [], notion.problems
    gaps = [later - earlier for earlier, later in pairwise(notion.times)]
    assert all(gap >= airflow_least_backoff(n, 1, 600) for n, gap in enumerate(gaps, start=1)), gaps


def test_a_refusal_fails_at_once_and_the_report_names_notions_message(world):
    stack, notion, query = world["stack"], world["notion"], world["query"]
    notion.fail_next("POST", query, 401, {"message": "API token is invalid."})
    run_id = stack.trigger(BOUNDS_DAG)
    assert stack.wait_task(BOUNDS_DAG, run_id, TASK, ENDED, timeout=600) == "failed"
    assert _task(stack, BOUNDS_DAG, run_id)["try_number"] == 1
    assert stack.wait_run(BOUNDS_DAG, run_id, timeout=600) == "failed"
    assert len(notion.calls) == 1, notion.calls
    assert notion.problems == [], notion.problems
    report = stack.xcom(BOUNDS_DAG, run_id, "compensation.report")
    print(f"\nThe run's report after a 401 from Notion: {report and report.get('reason')}")
    assert report and TASK in report["reason"] and "API token is invalid." in report["reason"], report
