"""SMTP delivery against a scripted SMTP server (a real loopback socket speaking RFC 5321): the
whole send has a total deadline, and a batch whose answer never came after the whole message went
out is kept as possibly delivered, never sent again.

The happy path and a server that is down are in tests/backends/local/test_delivery_backends.py
(against the aiosmtpd server of make demo)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from include.orchestrator.backends.cloud.smtp_email import SmtpEmail
from include.orchestrator.domain.ports import Email
from include.orchestrator.errors import OutcomeUnknown, Retryable, SmtpDeliveryError
from include.orchestrator.saga.compensation import pivot
from include.orchestrator.saga.ledger import Ledger
from include.orchestrator.saga.recorder import Recorder
from tests.builders.smtp import smtp_connection

EMAIL = Email(key="spring-launch-r1-email-0001", sender="Pipewise <news@pipewise.example>", to=["a@example.com", "b@example.com"],
              subject="Pipewise 3", text="Body", unsubscribe="https://pipewise.example/unsubscribe")  # fmt: skip


@contextmanager
def scripted_server(after_data: str, stall_at: str = "") -> Iterator[dict]:
    """One-connection SMTP server. ``after_data``: what it does once it has the whole message: ``hang``
    (never answer), ``drop`` (close), or a reply line such as ``451 try later``. ``stall_at="greeting"``
    trickles its greeting one byte every 0.2 s, forever (no single read times out)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict = {"commands": [], "message": b"", "closed": threading.Event()}

    def serve() -> None:
        conn, _ = listener.accept()
        seen["accepted"] = time.monotonic()
        with conn:
            if stall_at == "greeting":
                for byte in b"220 slow.example ESMTP\r\n" * 100:
                    if seen["closed"].is_set():
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:  # the client cut the connection
                        seen["cut"] = time.monotonic()
                        return
                    time.sleep(0.2)
            conn.sendall(b"220 test.example ESMTP\r\n")
            reader = conn.makefile("rb")
            while line := reader.readline():
                command = line.decode().strip().upper()
                seen["commands"].append(command.split(":")[0].split(" ")[0])
                if command.startswith(("EHLO", "HELO", "MAIL", "RCPT", "RSET", "NOOP")):
                    conn.sendall(b"250 OK\r\n")
                elif command == "DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while (part := reader.readline()) not in (b".\r\n", b""):
                        seen["message"] += part
                    if after_data == "hang":
                        seen["closed"].wait(30)
                        return
                    if after_data == "drop":
                        return
                    conn.sendall(after_data.encode() + b"\r\n")
                elif command == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seen["port"] = listener.getsockname()[1]
    try:
        yield seen
    finally:
        seen["closed"].set()
        listener.close()
        thread.join(5)


def backend(monkeypatch: pytest.MonkeyPatch, port: int, **extra: object) -> SmtpEmail:
    monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_connection(port, **extra))
    return SmtpEmail("campaign_email")


def test_a_server_trickling_its_greeting_is_stopped_by_the_total_deadline(monkeypatch):
    with scripted_server("250 OK", stall_at="greeting") as server:
        with pytest.raises(SmtpDeliveryError) as failed:
            backend(monkeypatch, server["port"], timeout=1, deadline=1.5).send(EMAIL)
        waited = time.monotonic()
        while "cut" not in server and time.monotonic() - waited < 3:  # noticed at the server's next byte (every 0.2 s)
            time.sleep(0.05)
    # Each byte came within the 1 s timeout: only the 1.5 s deadline can stop the client (the server trickles for 8 min).
    assert "cut" in server and server["cut"] - server["accepted"] < 3, server
    assert isinstance(failed.value, Retryable) and not isinstance(failed.value, OutcomeUnknown)
    assert "no answer within 1.5 s from 127.0.0.1 (the total deadline" in str(failed.value)
    assert server["message"] == b""


@pytest.mark.parametrize(("after_data", "extra"), [("hang", {"timeout": 1}), ("hang", {"deadline": 1.5}), ("drop", {})])
def test_no_answer_after_the_whole_message_means_maybe_delivered(monkeypatch, after_data, extra):
    with scripted_server(after_data) as server:
        with pytest.raises(SmtpDeliveryError) as failed:
            backend(monkeypatch, server["port"], **extra).send(EMAIL)
    assert isinstance(failed.value, OutcomeUnknown) and isinstance(failed.value, Retryable)
    assert "may have been delivered" in str(failed.value) and "not sent again" in str(failed.value)
    assert b"Subject: Pipewise 3" in server["message"], "the server had the whole message"


@pytest.mark.parametrize(("answer", "retryable"), [("451 try again later", True), ("554 rejected", False)])
def test_an_answer_after_the_message_is_a_plain_failure(monkeypatch, answer, retryable):
    with scripted_server(answer) as server:
        with pytest.raises(SmtpDeliveryError) as failed:
            backend(monkeypatch, server["port"]).send(EMAIL)
    assert not isinstance(failed.value, OutcomeUnknown)  # the server said it did not take it
    assert isinstance(failed.value, Retryable) is retryable and answer.split()[0] in str(failed.value)


def test_the_ledger_keeps_a_maybe_delivered_batch_planned_so_no_retry_sends_it(monkeypatch, tmp_path: Path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    recorder = Recorder("d", "r", "distribution.publish_email", -1, lambda: ledger)
    with scripted_server("drop") as server:
        port = recorder.wrap("email", backend(monkeypatch, server["port"]))
        with pytest.raises(OutcomeUnknown):
            port.send(EMAIL)
    [entry] = ledger.entries("d", "r")
    assert (entry.state, entry.error) == ("planned", "")  # as if the task had died during the send
    assert port.recorded(EMAIL) == entry and pivot([entry]) == entry  # live: compensation undoes nothing after it
