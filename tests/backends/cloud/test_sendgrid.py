"""The SendGrid email backend against a SendGrid double (a real local HTTP server).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/sendgrid.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.sendgrid import SendGridEmail, single_send_name
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.sendgrid import EMAIL, EXTRA, backend
from tests.doubles.sendgrid import SendGridDouble


@pytest.fixture(scope="module")
def server() -> Iterator[SendGridDouble]:
    with SendGridDouble(page_size_cap=2) as d:  # pages of two: paging is exercised on every lookup
        yield d


@pytest.fixture
def double(server: SendGridDouble) -> SendGridDouble:
    server.reset()  # one server for the module (stopping one takes half a second), fresh state per test
    return server


def test_send_makes_a_list_and_schedules_a_single_send_in_the_undo_window(double: SendGridDouble) -> None:
    before = datetime.now(UTC)
    effect = backend(double).send(EMAIL)
    [send] = double.single_sends()
    [made_list] = double.lists()
    assert (effect.kind, effect.backend, effect.port, effect.key, effect.undoable) == (
        "sendgrid_single_send",
        "sendgrid",
        "email",
        EMAIL.key,
        True,
    )
    assert effect.ref == {
        "single_send_id": send["id"],
        "list_id": made_list["id"],
        "send_at": send["send_at"],
        "name": EMAIL.key,
        "to": EMAIL.to,
    }
    assert made_list["name"] == EMAIL.key and made_list["emails"] == EMAIL.to
    assert send["name"] == EMAIL.key and send["status"] == "scheduled" and send["send_to"]["list_ids"] == [made_list["id"]]
    config = send["email_config"]
    assert (config["subject"], config["sender_id"], config["suppression_group_id"]) == (EMAIL.subject, 4321, 77)
    assert config["plain_content"] == EMAIL.text + "\n\n-- \nTo unsubscribe, email leave@pipewise.example.\n"
    assert config["generate_plain_content"] is False
    html = config["html_content"]
    assert "<p>Hello &lt;team&gt;,</p>\n<p>It is here &amp; it is fast.</p>" in html  # untrusted text escaped
    assert '<a href="mailto:leave@pipewise.example">leave@pipewise.example</a>' in html and "<img" not in html  # no banner here
    send_at = datetime.fromisoformat(send["send_at"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=899) <= send_at <= datetime.now(UTC) + timedelta(seconds=900)
    assert double.problems == []


def test_custom_unsubscribe_url_and_send_delay_are_used(double: SendGridDouble) -> None:
    sendgrid = backend(
        double, suppression_group_id=None, custom_unsubscribe_url="https://pipewise.example/unsubscribe", send_delay_seconds=3600
    )
    sendgrid.now = lambda: datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
    effect = sendgrid.send(EMAIL)
    [send] = double.scheduled()
    assert effect.ref["send_at"] == send["send_at"] == "2031-05-01T10:00:00Z"
    assert send["email_config"]["custom_unsubscribe_url"] == "https://pipewise.example/unsubscribe"
    assert send["email_config"]["suppression_group_id"] is None
    assert double.problems == []


def test_send_twice_adopts_the_list_and_the_single_send(double: SendGridDouble) -> None:
    for other in range(3):  # other Single Sends and lists whose names contain ours: the lookup must page and match exactly
        backend(double).send(EMAIL.model_copy(update={"key": f"{EMAIL.key}-{other}"}))
    first = backend(double).send(EMAIL)
    again = backend(double).send(EMAIL)
    assert again.ref == first.ref and again.key == first.key
    assert [s["name"] for s in double.single_sends()].count(EMAIL.key) == 1
    assert [item["name"] for item in double.lists()].count(EMAIL.key) == 1
    assert double.count("POST", "/v3/marketing/singlesends") == 4
    assert double.count("PUT", r"/v3/marketing/singlesends/.*/schedule") == 4
    assert double.problems == []


def test_a_draft_left_by_a_killed_try_is_scheduled_not_duplicated(double: SendGridDouble) -> None:
    double.fail_next("PUT", r"/v3/marketing/singlesends/[^/]+/schedule", 503, {"message": "unavailable"})
    with pytest.raises(ServiceError) as failed:
        backend(double).send(EMAIL)
    assert failed.value.retryable and [s["status"] for s in double.single_sends()] == ["draft"]
    effect = backend(double).send(EMAIL)
    [send] = double.single_sends()
    assert send["status"] == "scheduled" and effect.ref["single_send_id"] == send["id"]
    assert double.problems == []


def test_long_keys_become_names_of_at_most_100_characters() -> None:
    key = "k" * 150
    assert len(single_send_name(key)) == 100 and single_send_name(key) == single_send_name(key) != single_send_name(key + "x")
    assert single_send_name("short") == "short"


def test_undo_of_a_list_made_before_the_crash_removes_it(double: SendGridDouble) -> None:
    double.fail_next("POST", "/v3/marketing/singlesends", 500, {"message": "internal error"})
    sendgrid = backend(double)
    with pytest.raises(ServiceError):
        sendgrid.send(EMAIL)
    assert double.single_sends() == [] and len(double.lists()) == 1
    assert sendgrid.undo(sendgrid.plan(EMAIL)) is True
    assert double.lists() == []
    assert double.problems == []


def test_undo_removes_every_single_send_of_the_name_two_racing_tries_made(double: SendGridDouble) -> None:
    sendgrid = backend(double)
    effect = sendgrid.send(EMAIL)
    racing = requests.post(
        f"{double.url}/v3/marketing/singlesends",
        headers={"Authorization": "Bearer test-token"},
        timeout=5,
        json={"name": EMAIL.key, "send_to": {"list_ids": [effect.ref["list_id"]]}},
    )
    assert racing.status_code == 201 and len(double.single_sends()) == 2
    assert sendgrid.undo(sendgrid.plan(EMAIL)) is True
    assert double.single_sends() == [] and double.lists() == []
    assert double.problems == []


def test_undo_after_the_send_time_says_the_email_cannot_be_recalled(double: SendGridDouble) -> None:
    sendgrid = backend(double)
    effect = sendgrid.send(EMAIL)
    double.advance(901)  # SendGrid sent it
    assert [s["status"] for s in double.sent()] == ["triggered"]
    for undo_from in (effect, sendgrid.plan(EMAIL)):
        with pytest.raises(ServiceError) as raised:
            sendgrid.undo(undo_from)
        assert raised.value.retryable is False
        assert f"sent at {effect.ref['send_at']}" in str(raised.value)
        assert "a delivered email cannot be recalled" in str(raised.value)
    assert len(double.sent()) == 1 and len(double.lists()) == 1  # nothing pretended away
    assert double.problems == []


def test_undo_refuses_when_the_send_time_has_passed_even_if_still_scheduled(double: SendGridDouble) -> None:
    sendgrid = backend(double)
    effect = sendgrid.send(EMAIL)
    sendgrid.now = lambda: datetime.now(UTC) + timedelta(hours=1)  # our clock is past send_at; SendGrid not yet triggered
    with pytest.raises(ServiceError, match="a delivered email cannot be recalled"):
        sendgrid.undo(effect)
    assert len(double.scheduled()) == 1
    assert double.problems == []


def test_no_send_delay_sends_at_once_and_undo_reports_it(double: SendGridDouble) -> None:
    sendgrid = backend(double, send_delay_seconds=0)
    effect = sendgrid.send(EMAIL)
    assert [s["status"] for s in double.single_sends()] == ["triggered"]
    with pytest.raises(ServiceError, match="a delivered email cannot be recalled") as raised:
        sendgrid.undo(effect)
    assert raised.value.retryable is False
    assert double.problems == []


def test_send_after_the_email_went_out_adopts_it(double: SendGridDouble) -> None:
    first = backend(double).send(EMAIL)
    double.advance(901)
    again = backend(double).send(EMAIL)
    assert again.ref == first.ref and "already sent" in again.summary
    assert len(double.single_sends()) == 1
    assert double.problems == []


def test_through_backend_for(double: SendGridDouble) -> None:
    conn = Connection(conn_id="my_sendgrid", conn_type="http", host=double.url, password="test-token", extra=json.dumps(EXTRA))
    sendgrid = connections.backend_for("email", "my_sendgrid", conn)
    assert isinstance(sendgrid, SendGridEmail)
    effect = sendgrid.send(EMAIL)
    assert effect.conn_id == "my_sendgrid" and sendgrid.undo(effect) is True
    assert double.problems == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"sender_id": None}, "sender_id"),
        ({"sender_id": "abc"}, "sender_id"),
        ({"suppression_group_id": None}, "suppression_group_id"),
    ],
)
def test_missing_settings_name_the_connection_and_field(double: SendGridDouble, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ConnectionConfigError, match=rf"campaign_email.*{field}"):
        backend(double, **extra).send(EMAIL)
    assert double.calls == []


def test_a_bad_key_fails_fast_with_sendgrids_message(double: SendGridDouble) -> None:
    with pytest.raises(ServiceError) as raised:
        backend(double, token="wrong").send(EMAIL)
    assert raised.value.status == 401 and raised.value.retryable is False
    assert "authorization required" in str(raised.value) and "wrong" not in str(raised.value)
    assert double.problems == ["GET /v3/marketing/lists: request: authorization required"]


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_fail_fast_with_the_field_and_message(double: SendGridDouble, status: int) -> None:
    body = {"errors": [{"field": "contacts[0].email", "message": "invalid email"}]}
    double.fail_next("PUT", "/v3/marketing/contacts", status, body)
    with pytest.raises(ServiceError) as raised:
        backend(double).send(EMAIL)
    assert raised.value.status == status and raised.value.retryable is False and raised.value.retry_after is None
    assert "contacts[0].email: invalid email" in str(raised.value)
    assert double.problems == []


def test_429_waits_until_the_documented_rate_limit_reset(double: SendGridDouble) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 60
    headers = {"X-RateLimit-Limit": "150", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    body = {"errors": [{"field": None, "message": "too many requests"}]}
    double.fail_next("POST", "/v3/marketing/singlesends/search", 429, body, headers=headers)
    with pytest.raises(ServiceError) as raised:
        backend(double).send(EMAIL)
    assert raised.value.retryable and 40 < raised.value.retry_after <= 60
    assert double.problems == []
