"""The Buffer social backend against a Buffer GraphQL double (a real local HTTP server).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/buffer.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.buffer import CREATE_POST, BufferSocial
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.buffer import EXTRA, POST, backend
from tests.doubles.buffer import BufferDouble


@pytest.fixture(scope="module")
def server() -> Iterator[BufferDouble]:
    with BufferDouble(page_cap=2) as d:  # pages of two: the lookup pages through every channel
        yield d


@pytest.fixture
def double(server: BufferDouble) -> BufferDouble:
    server.reset()
    return server


def test_post_queues_one_post_per_channel(double: BufferDouble) -> None:
    effect = backend(double).post(POST)
    [on_x], [on_li] = double.queued_posts("chan-x"), double.queued_posts("chan-li")
    assert (effect.kind, effect.backend, effect.port, effect.key, effect.undoable) == (
        "social_post",
        "buffer",
        "social",
        POST.key,
        True,
    )
    assert effect.ref["posts"] == [
        {"profile": "pipewise-x", "channel_id": "chan-x", "post_id": on_x["id"]},
        {"profile": "pipewise-linkedin", "channel_id": "chan-li", "post_id": on_li["id"]},
    ]
    assert on_x["text"] == on_li["text"] == POST.text  # the quotes travelled as variables, not in the document
    assert (on_x["via"], on_x["status"], on_x["shareMode"], on_x["schedulingType"]) == (
        "api",
        "scheduled",
        "addToQueue",
        "automatic",
    )
    assert double.count("POST", "/") == 4  # per channel: one lookup, one createPost
    assert double.problems == []


def test_post_twice_adopts_the_queued_posts(double: BufferDouble) -> None:
    for n in range(3):  # other posts on the channels: the lookup pages past them
        double.add_post("chan-x", f"another post {n}", via="api")
    first = backend(double).post(POST)
    again = backend(double).post(POST)
    assert again.ref == first.ref and "already queued" in again.summary
    assert [p["text"] for p in double.posts()].count(POST.text) == 2  # one per channel
    assert double.problems == []


def test_a_post_whose_link_buffer_shortened_is_still_ours(double: BufferDouble) -> None:
    shortened = POST.text.replace("https://pipewise.example/launch", "https://buff.ly/3xYz")
    existing = double.add_post("chan-x", shortened, via="api")
    effect = backend(double).post(POST)
    assert effect.ref["posts"][0]["post_id"] == existing
    assert len(double.queued_posts("chan-x")) == 1
    assert double.problems == []


@pytest.mark.parametrize(("via", "age_days"), [("buffer", 0), ("api", 30)])
def test_the_same_text_made_in_the_app_or_long_ago_is_not_ours(double: BufferDouble, via: str, age_days: float) -> None:
    foreign = double.add_post("chan-x", POST.text, via=via, age_days=age_days)
    effect = backend(double).post(POST)
    assert effect.ref["posts"][0]["post_id"] != foreign and len(double.queued_posts("chan-x")) == 2
    assert backend(double).undo(backend(double).plan(POST)) is True
    assert [p["id"] for p in double.queued_posts("chan-x")] == [foreign]  # the foreign post is left alone
    assert double.problems == []


def test_a_profile_without_a_channel_is_a_configuration_error_naming_it(double: BufferDouble) -> None:
    post = POST.model_copy(update={"profiles": ["pipewise-x", "pipewise-mastodon"]})
    with pytest.raises(ConnectionConfigError, match=r"campaign_social.*'pipewise-mastodon'"):
        backend(double).plan(post)
    with pytest.raises(ConnectionConfigError, match="needs the extra 'channels'"):
        backend(double, channels={}).post(POST)
    with pytest.raises(ConnectionConfigError, match="organization_id"):
        backend(double, organization_id=None).post(POST)
    assert double.calls == []


def test_a_mutation_error_in_a_200_is_a_failure_and_the_first_post_is_undone_from_the_plan(double: BufferDouble) -> None:
    social = backend(double, channels={**EXTRA["channels"], "pipewise-linkedin": "chan-gone"})
    with pytest.raises(ServiceError) as raised:
        social.post(POST)
    assert raised.value.retryable is False and raised.value.status == 200
    assert "NotFoundError: Channel chan-gone not found" in str(raised.value)
    assert len(double.queued_posts("chan-x")) == 1
    assert social.undo(social.plan(POST)) is True
    assert double.posts() == []
    assert double.problems == []


def test_text_too_long_fails_fast_with_buffers_message(double: BufferDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        backend(double).post(POST.model_copy(update={"text": "x" * 281}))
    assert raised.value.retryable is False
    assert "InvalidInputError: Text is too long: 281 characters, at most 280" in str(raised.value)
    assert double.posts() == []
    assert double.problems == []


def test_undo_of_a_published_post_says_it_cannot_be_recalled(double: BufferDouble) -> None:
    social = backend(double)
    effect = social.post(POST)
    x_post = effect.ref["posts"][0]["post_id"]
    double.publish(x_post)
    for undo_from in (effect, social.plan(POST)):
        with pytest.raises(ServiceError) as raised:
            social.undo(undo_from)
        assert raised.value.retryable is False
        assert f"pipewise-x (post {x_post}, sent at" in str(raised.value) and "cannot be recalled" in str(raised.value)
    assert [p["id"] for p in double.posts()] == [x_post]  # the queued LinkedIn post was deleted, the sent one left
    assert double.problems == []


def test_through_backend_for(double: BufferDouble) -> None:
    conn = Connection(conn_id="my_buffer", conn_type="http", host=double.url, password="test-token", extra=json.dumps(EXTRA))
    social = connections.backend_for("social", "my_buffer", conn)
    assert isinstance(social, BufferSocial)
    effect = social.post(POST)
    assert effect.conn_id == "my_buffer" and social.undo(effect) is True
    assert double.problems == []


def test_a_bad_key_fails_fast(double: BufferDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        backend(double, token="wrong-key").post(POST)
    assert raised.value.status == 401 and raised.value.retryable is False
    assert "An authentication JWT or Access Token is required (UNAUTHENTICATED)" in str(raised.value)
    assert "wrong-key" not in str(raised.value)
    assert double.problems == ["POST /: missing or invalid API key"]


def test_a_top_level_error_in_a_200_fails_fast(double: BufferDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        backend(double, organization_id="org-of-someone-else").post(POST)
    assert raised.value.retryable is False and "You do not have access to this organization (FORBIDDEN)" in str(raised.value)
    assert double.posts() == []
    assert double.problems == []


def test_rate_limit_waits_for_retry_after(double: BufferDouble) -> None:
    double.rate_limited(retry_after=900)
    with pytest.raises(ServiceError) as raised:
        backend(double).post(POST)
    assert raised.value.status == 429 and raised.value.retryable and raised.value.retry_after == 900
    assert "RATE_LIMIT_EXCEEDED" in str(raised.value)
    assert double.problems == []


def test_rate_limit_without_the_header_uses_extensions_retry_after(double: BufferDouble) -> None:
    double.rate_limited(retry_after=120, header=False)
    with pytest.raises(ServiceError) as raised:
        backend(double).post(POST)
    assert raised.value.retryable and raised.value.retry_after == 120
    assert double.problems == []


def test_an_unexpected_error_in_a_200_is_retryable(double: BufferDouble) -> None:
    # HTTP 5xx: tests/backends/test_contract.py
    unexpected = {"data": None, "errors": [{"message": "Something went wrong", "extensions": {"code": "UNEXPECTED"}}]}
    double.fail_next("POST", "/", 200, unexpected)
    with pytest.raises(ServiceError) as raised:
        backend(double).post(POST)
    assert raised.value.retryable and "Something went wrong (UNEXPECTED)" in str(raised.value)
    assert double.problems == []


# --- the double itself refuses what Buffer's docs do not allow ------------------------------------
def _raw(double: BufferDouble, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.post(
        double.url, json={"query": query, "variables": variables or {}}, headers={"Authorization": "Bearer test-token"}, timeout=5
    )
    assert response.status_code == 200
    return response.json()


def test_the_double_refuses_user_text_interpolated_into_the_document(double: BufferDouble) -> None:
    interpolated = (
        'mutation CreatePost { createPost(input: {text: "hi", channelId: "chan-x", schedulingType: automatic, '
        "mode: addToQueue}) { __typename ... on MutationError { message } } }"
    )
    assert "errors" in _raw(double, interpolated)
    assert double.posts() == [] and len(double.problems) == 1 and "variables" in double.problems[0]


def test_the_double_refuses_a_mutation_that_cannot_see_its_errors(double: BufferDouble) -> None:
    blind = (
        "mutation CreatePost($input: CreatePostInput!) { createPost(input: $input) { ... on PostActionSuccess { post { id } } } }"
    )
    variables = {"input": {"text": "hi", "channelId": "chan-x", "schedulingType": "automatic", "mode": "addToQueue"}}
    assert _raw(double, blind, variables)["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert double.posts() == [] and "MutationError" in double.problems[0]


def test_the_double_checks_variable_types_and_enums(double: BufferDouble) -> None:
    wrong_type = CREATE_POST.replace("CreatePostInput!", "CreatePostInput")
    variables = {"input": {"text": "hi", "channelId": "chan-x", "schedulingType": "automatic", "mode": "addToQueue"}}
    assert "errors" in _raw(double, wrong_type, variables)
    assert "errors" in _raw(double, CREATE_POST, {"input": {**variables["input"], "mode": "queue"}})
    assert "errors" in _raw(double, CREATE_POST, {"input": {**variables["input"], "profileId": "p"}})
    assert double.posts() == [] and len(double.problems) == 3
