"""The Slack notify backend against the Slack Web API double (tests/doubles/slack.py).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/slack.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from airflow.sdk import Connection

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.slack import SlackNotifier
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.slack import CHANNEL, DELETE, HISTORY, POST, conn, message, notifier
from tests.doubles.slack import SlackDouble


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble() as double:
        yield double


def posts(double: SlackDouble) -> int:
    return double.count("POST", POST)


# --- the changing call ------------------------------------------------------------------------
def test_notify_posts_escaped_mrkdwn_with_metadata(slack: SlackDouble) -> None:
    effect = notifier(slack).notify(message())

    [posted] = slack.live_messages(CHANNEL)
    assert effect.kind == "slack_message" and effect.port == "notify" and effect.backend == "slack"
    assert effect.ref == {"channel": CHANNEL, "ts": posted["ts"], "key": message().key}
    assert posted["metadata"] == {"event_type": "campaign_notification", "event_payload": {"key": message().key}}
    text = posted["text"]
    assert text.startswith("*Review needed: Spring &lt;Launch&gt; &amp; more*\n")
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example|click&gt;" in text  # no mention, no link from the copy
    assert "<http://localhost:8080/dags/campaign_spring-launch/runs/r1?tab=details&amp;x=1|Open in Airflow>" in text
    assert text.endswith("For: dana, admin")
    [lookup, post] = slack.received
    assert post["method"] == "chat.postMessage" and post["json"] is True and post["args"]["unfurl_links"] is False
    assert lookup["method"] == "conversations.history" and lookup["args"]["include_all_metadata"] is True
    assert int(lookup["args"]["limit"]) <= 200 and float(lookup["args"]["oldest"]) > time.time() - 8 * 86400
    assert slack.problems == []


def test_notify_twice_posts_once(slack: SlackDouble) -> None:
    first = notifier(slack).notify(message())
    second = notifier(slack).notify(message())  # a retry: a new process, a new backend

    assert posts(slack) == 1 and len(slack.live_messages()) == 1
    assert second.ref == first.ref and second.key == first.key
    assert "already posted" in second.summary
    assert slack.problems == []


def test_lookup_pages_through_history_for_an_earlier_post(slack: SlackDouble) -> None:
    notifier(slack).notify(message())
    for i in range(40):
        slack.add_message(CHANNEL, f"chatter {i}")
    slack.max_page = 15  # Slack may return fewer messages than asked (non-Marketplace apps: 15)

    again = notifier(slack).notify(message())

    assert posts(slack) == 1 and "already posted" in again.summary
    assert slack.count("POST", HISTORY) >= 1 + 3  # the first lookup, then three pages
    assert slack.problems == []


def test_other_keys_are_other_messages(slack: SlackDouble) -> None:
    slack.add_message(CHANNEL, "someone else's", metadata={"event_type": "other_app", "event_payload": {"key": message().key}})
    notifier(slack).notify(message("key-one"))
    notifier(slack).notify(message("key-two"))

    assert posts(slack) == 2 and len(slack.live_messages()) == 3
    assert slack.problems == []


# --- plan and undo ---------------------------------------------------------------------------------
def test_undo_refuses_someone_elses_message(slack: SlackDouble) -> None:
    # Another app's message carrying our key: the bot may not delete it, and a retry cannot change that.
    slack.add_message(
        CHANNEL,
        "not ours",
        user="U0OTHER001",
        metadata={"event_type": "campaign_notification", "event_payload": {"key": message().key}},
    )
    backend = notifier(slack)

    with pytest.raises(ServiceError) as raised:
        backend.undo(backend.plan(message()))
    assert raised.value.retryable is False and "cant_delete_message" in str(raised.value)
    assert len(slack.live_messages()) == 1
    assert slack.problems == []


def test_backend_for_builds_the_slack_notifier(slack: SlackDouble) -> None:
    backend = connections.backend_for("notify", "slack_test", conn(slack))

    assert isinstance(backend, SlackNotifier)
    assert backend.undo(backend.notify(message())) is True
    assert slack.problems == []


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda d: setattr(d, "token", "xoxb-another-token"), "invalid_auth"),
        (lambda d: d.channels.pop(CHANNEL), "channel_not_found"),
        (lambda d: d.not_member.add(CHANNEL), "not_in_channel"),
    ],
    ids=["bad-token", "no-channel", "not-a-member"],
)
def test_slack_refusals_fail_fast_with_the_code(slack: SlackDouble, setup, code: str) -> None:
    backend = notifier(slack)  # holds the token xoxb-test-token
    setup(slack)

    with pytest.raises(ServiceError) as raised:
        backend.notify(message())
    error = raised.value
    assert error.retryable is False and error.status == 200 and code in str(error)
    assert "xoxb-test-token" not in str(error)
    assert posts(slack) == 0
    assert slack.problems == []


def test_error_in_the_changing_call_fails_fast(slack: SlackDouble) -> None:
    slack.fail_next("POST", POST, 200, {"error": "msg_too_long"})

    with pytest.raises(ServiceError) as raised:
        notifier(slack).notify(message())
    assert raised.value.retryable is False and "msg_too_long" in str(raised.value)
    assert slack.live_messages() == []
    assert slack.problems == []


def test_missing_scope_names_the_scope(slack: SlackDouble) -> None:
    slack.fail_next("POST", HISTORY, 200, {"error": "missing_scope", "needed": "channels:history", "provided": "chat:write"})

    with pytest.raises(ServiceError) as raised:
        notifier(slack).notify(message())
    assert raised.value.retryable is False and "missing_scope" in str(raised.value) and "channels:history" in str(raised.value)
    assert slack.problems == []


def test_a_5xx_whose_body_is_not_slacks_json_is_retryable(slack: SlackDouble) -> None:
    # A proxy's plain-text 503 (the JSON one, and the undo's next try, are in tests/backends/test_contract.py).
    from werkzeug import Response

    slack.fail_next("POST", DELETE, 503, Response("upstream unavailable", status=503, headers={"Retry-After": "5"}))
    backend = notifier(slack)
    effect = backend.notify(message())

    with pytest.raises(ServiceError) as raised:
        backend.undo(effect)
    assert raised.value.retryable is True and raised.value.status == 503 and raised.value.retry_after == 5
    assert slack.count("POST", DELETE) == 1  # slack_sdk did not retry on its own
    assert backend.undo(effect) is True  # Airflow's next try
    assert slack.problems == []


def test_transient_slack_code_is_retryable(slack: SlackDouble) -> None:
    slack.fail_next("POST", POST, 200, {"error": "internal_error"})

    with pytest.raises(ServiceError) as raised:
        notifier(slack).notify(message())
    assert raised.value.retryable is True
    assert slack.problems == []


def test_dropped_connection_is_retryable_and_tried_once() -> None:
    # slack_sdk's default handler retries a dropped connection once, after a sleep: the hook must not.
    accepted: list[int] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(5)

        def serve() -> None:
            try:
                while True:
                    peer, _ = server.accept()
                    accepted.append(1)
                    peer.recv(65536)
                    peer.close()  # no status line: RemoteDisconnected
            except OSError:
                return

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        backend = SlackNotifier("slack_test", conn(base_url=f"http://127.0.0.1:{server.getsockname()[1]}/api/"))
        with pytest.raises(ServiceError) as raised:
            backend.notify(message())
        server.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    assert raised.value.retryable is True and "connection failed" in str(raised.value)
    assert len(accepted) == 1


# --- configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("channel", [None, "#reviews", "reviews"])
def test_channel_must_be_a_channel_id(channel: str | None) -> None:
    backend = SlackNotifier("slack_test", conn(channel=channel))
    with pytest.raises(ConnectionConfigError, match=r"'slack_test'.*'channel'"):
        backend.plan(message())


def test_token_is_required() -> None:
    bare = Connection(conn_id="slack_test", conn_type="slack", extra=json.dumps({"channel": CHANNEL}))
    with pytest.raises(ConnectionConfigError, match=r"'slack_test'.*token"):
        SlackNotifier("slack_test", bare)


def test_a_timeout_under_a_second_still_reaches_slack(slack: SlackDouble) -> None:
    """The Slack hook takes whole seconds; 0.3 s used to become 0, a non-blocking socket that failed every call."""
    backend = notifier(slack, timeout=0.3)
    effect = backend.notify(message())
    assert effect.ref["ts"] and posts(slack) == 1
