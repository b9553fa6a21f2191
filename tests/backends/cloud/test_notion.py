"""The Notion notes backend against the Notion double (a real local HTTP server).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/notion.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.notion import MAX_NOTE_CHARS, NOTION_VERSION, NotionNotes
from include.orchestrator.domain.ports import Note
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.notion import conn, notes
from tests.doubles.notion import NotionDouble

PIPELINE_BLOCKS = [
    ("heading_1", "Why pipelines break"),
    "Most incidents start upstream.",
    ("bulleted_list_item", "schema drift"),
    ("numbered_list_item", "late data"),
    ("to_do", "interview three data teams"),
    ("quote", "We found out from the CFO."),
    ("image", ""),
    ("divider", ""),
    ("callout", "  Budget   season is Q4  "),
]


@pytest.fixture(scope="module")
def server() -> Iterator[NotionDouble]:
    with NotionDouble() as double:  # one server for the module: stopping one takes half a second
        yield double


@pytest.fixture
def notion(server: NotionDouble) -> NotionDouble:
    server.reset()
    return server


@pytest.fixture
def source(notion: NotionDouble) -> str:
    ds = notion.add_data_source()
    notion.add_page(ds, "Data pipeline observability trends", PIPELINE_BLOCKS, edited="2026-02-01T00:00:00.000Z")
    notion.add_page(ds, "Observability buyers survey", ["Buyers want one page."], edited="2026-03-01T00:00:00.000Z")
    notion.add_page(ds, "Office party", ["Cake at four."], edited="2026-04-01T00:00:00.000Z")
    notion.add_page(ds, "Observability, trashed", ["Old."], edited="2026-05-01T00:00:00.000Z", in_trash=True)
    return ds


def failure(call) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        call()
    assert "test-token" not in str(info.value)
    return info.value


# --- search ------------------------------------------------------------------------------------
def test_search_returns_matching_pages_with_their_text(notion, source):
    found = notes(notion, source).search("data pipeline observability", limit=5)
    assert [n.title for n in found] == ["Data pipeline observability trends", "Observability buyers survey"]
    assert found[0].text.splitlines() == [
        "# Why pipelines break",
        "Most incidents start upstream.",
        "- schema drift",
        "1. late data",
        "- [ ] interview three data teams",
        "> We found out from the CFO.",
        "Budget season is Q4",
    ]
    assert found[1] == Note(title="Observability buyers survey", text="Buyers want one page.", source=found[1].source)
    assert all(n.source.startswith("https://www.notion.so/") and n.source.endswith(n.source[-32:]) for n in found)
    assert notion.queries == [
        {
            "filter": {"or": [{"property": "Name", "title": {"contains": w}} for w in ("data", "pipeline", "observability")]},
            "sorts": [{"timestamp": "last_edited_time", "direction": "descending"}],
            "page_size": 25,
        }
    ]
    assert notion.count("GET", r"/v1/data_sources/[^/]+") == 1  # the schema, for the title property
    assert notion.problems == []


def test_ranking_prefers_more_title_words_then_recent_edits(notion):
    ds = notion.add_data_source()
    old = notion.add_page(ds, "Launch pipeline", ["a"], edited="2026-01-01T00:00:00.000Z")
    notion.add_page(ds, "Launch notes", ["b"], edited="2026-02-01T00:00:00.000Z")
    newer = notion.add_page(ds, "Pipeline costs", ["c"], edited="2026-03-01T00:00:00.000Z")
    found = notes(notion, ds).search("launch pipeline", limit=2)
    assert [n.title for n in found] == ["Launch pipeline", "Pipeline costs"]
    assert notion.block_reads == [old, newer]  # only the pages returned are read
    assert notion.problems == []


def test_a_single_word_is_a_plain_property_filter_and_the_title_property_can_be_named(notion):
    ds = notion.add_data_source(title_property="Topic")
    notion.add_page(ds, "Churn interviews", ["Ten calls."])
    found = notes(notion, ds, title_property="Topic").search("the churn", limit=3)
    assert [n.title for n in found] == ["Churn interviews"]
    assert notion.queries[0]["filter"] == {"property": "Topic", "title": {"contains": "churn"}}
    assert notion.count("GET", r"/v1/data_sources/[^/]+") == 0  # named in the connection: no schema read
    assert notion.problems == []


def test_the_title_property_is_found_in_the_schema(notion):
    ds = notion.add_data_source(title_property="Headline")
    notion.add_page(ds, "Pricing research", ["Three tiers."])
    assert [n.title for n in notes(notion, ds).search("pricing", limit=1)] == ["Pricing research"]
    assert notion.queries[0]["filter"]["property"] == "Headline"
    assert notion.problems == []


def test_nothing_found_means_no_notes_and_no_fallback(notion, source):
    assert notes(notion, source).search("kubernetes", limit=5) == []
    assert len(notion.queries) == 1 and notion.block_reads == []
    assert notion.problems == []


def test_trashed_pages_are_never_returned(notion, source):
    assert "Observability, trashed" not in [n.title for n in notes(notion, source).search("observability", limit=10)]
    assert notion.problems == []


@pytest.mark.parametrize(("query", "limit"), [("the and of", 5), ("", 5), ("observability", 0)])
def test_no_terms_or_no_limit_asks_nothing(notion, source, query, limit):
    assert notes(notion, source).search(query, limit) == []
    assert notion.calls == []


def test_the_page_size_is_at_least_the_limit_and_at_most_100(notion, source):
    backend = notes(notion, source)
    backend.search("observability", limit=40)
    backend.search("observability", limit=500)
    assert [q["page_size"] for q in notion.queries] == [40, 100]
    assert notion.problems == []


def test_block_children_are_paginated(notion):
    ds = notion.add_data_source()
    page = notion.add_page(ds, "Long note", [f"line {i}" for i in range(5)])
    notion.page_limit = 2  # the double answers 2 blocks per page: 3 requests
    found = notes(notion, ds).search("long", limit=1)
    assert found[0].text.splitlines() == [f"line {i}" for i in range(5)]
    assert notion.block_reads == [page] * 3
    assert notion.problems == []


def test_reading_a_page_is_bounded(notion):
    ds = notion.add_data_source()
    notion.add_page(ds, "Endless note", [f"line {i}" for i in range(9)])
    notion.page_limit = 1
    assert notes(notion, ds).search("endless", limit=1)[0].text.splitlines() == [f"line {i}" for i in range(5)]
    notion.add_page(ds, "Huge note", ["x" * 30_000])
    assert len(notes(notion, ds).search("huge", limit=1)[0].text) == MAX_NOTE_CHARS
    assert notion.problems == []


@pytest.mark.parametrize("version", ["2025-09-03", "2026-03-11"])
def test_both_data_source_versions_work(notion, source, version):
    assert len(notes(notion, source, notion_version=version).search("observability", limit=5)) == 2
    assert notion.problems == []


def test_the_default_version_is_sent(notion, source):
    assert NOTION_VERSION == "2026-03-11"
    notes(notion, source).search("observability", limit=1)
    assert notion.problems == []


def test_backend_for_builds_notion_from_an_http_connection(notion, source):
    backend = connections.backend_for("notes", "campaign_notes", conn(notion.url, source))
    assert isinstance(backend, NotionNotes)
    assert [n.title for n in backend.search("survey", limit=5)] == ["Observability buyers survey"]
    assert notion.problems == []


# --- the double's own checks -------------------------------------------------------------------
def test_the_double_refuses_a_request_without_notion_version(notion, source):
    url = f"{notion.url}/v1/data_sources/{source}/query"
    answer = requests.post(url, json={}, headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["code"] == "missing_version" and answer.json()["object"] == "error"
    assert notion.problems == [f"POST /v1/data_sources/{source}/query: Notion-Version is missing"]


def test_the_double_refuses_a_page_size_over_100_and_an_unknown_property(notion, source):
    headers = {"Authorization": "Bearer test-token", "Notion-Version": NOTION_VERSION}
    url = f"{notion.url}/v1/data_sources/{source}/query"
    assert requests.post(url, json={"page_size": 101}, headers=headers, timeout=5).json()["code"] == "validation_error"
    bad = {"filter": {"property": "Nope", "title": {"contains": "x"}}}
    assert requests.post(url, json=bad, headers=headers, timeout=5).status_code == 400
    assert len(notion.problems) == 2 and "page_size" in notion.problems[0] and "Nope" in notion.problems[1]


# --- errors ------------------------------------------------------------------------------------
def test_a_wrong_token_fails_fast_with_notions_message(notion, source):
    error = failure(lambda: notes(notion, source, token="wrong-token").search("observability", limit=5))
    assert error.status == 401 and error.retryable is False and "unauthorized: API token is invalid." in str(error)
    assert len(notion.problems) == 1 and "Authorization" in notion.problems[0]


def test_an_unshared_data_source_fails_fast(notion, source):
    missing = "0f0e0d0c-0b0a-4908-8706-050403020100"
    error = failure(lambda: notes(notion, missing, title_property="Name").search("observability", limit=5))
    assert error.status == 404 and error.retryable is False and "object_not_found" in str(error)
    assert "shared with your integration" in str(error)
    assert notion.problems == []


def test_a_version_without_data_sources_fails_fast(notion, source):
    error = failure(lambda: notes(notion, source, notion_version="2022-06-28").search("observability", limit=5))
    assert error.status == 400 and error.retryable is False and "validation_error" in str(error)


def test_a_validation_error_fails_fast(notion, source):
    body = {"code": "validation_error", "message": "body failed validation: body.filter.or should be defined"}
    notion.fail_next("POST", r"/v1/data_sources/.*/query", 400, body)
    error = failure(lambda: notes(notion, source).search("observability", limit=5))
    assert error.retryable is False and "validation_error: body failed validation" in str(error)


@pytest.mark.parametrize(
    ("extra", "password", "field"),
    [
        ({}, "test-token", "data_source_id"),
        ({"data_source_id": "../pages"}, "test-token", "data_source_id"),
        ({"data_source_id": "0" * 32, "notion_version": "latest"}, "test-token", "notion_version"),
        ({"data_source_id": "0" * 32}, None, "token"),
    ],
)
def test_bad_settings_name_the_field(extra, password, field):
    connection = Connection(
        conn_id="campaign_notes", conn_type="http", host="https://api.notion.com", password=password, extra=json.dumps(extra)
    )
    with pytest.raises(ConnectionConfigError, match=field):
        NotionNotes("campaign_notes", connection)
