"""Tests of the local delivery backends: outbox files, the social queue, SMTP delivery to a real
loopback server, and Grafana dashboard files. Everything runs on tmp_path and 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path

import pytest

from include.orchestrator.backends.cloud.smtp_email import SmtpEmail
from include.orchestrator.backends.local.dashboards import GrafanaFolder
from include.orchestrator.backends.local.outbox import LocalSocialQueue, OutboxEmail, OutboxNotifier
from include.orchestrator.dev.smtp_server import LocalSmtpServer, free_port
from include.orchestrator.domain.dashboard import campaign_dashboard, dashboard_problems
from include.orchestrator.domain.ports import Dashboard, Message, SocialPost
from include.orchestrator.errors import SmtpDeliveryError
from tests.builders.ports import email
from tests.builders.smtp import smtp_connection

EMAIL = email()


def test_notifier_writes_a_json_record_named_after_the_key(tmp_path: Path) -> None:
    notifier = OutboxNotifier("campaign_notify", tmp_path)
    effect = notifier.notify(
        Message(key="spring-review", to=["lead@example.com"], subject="Review", text="Please look", link="http://x/y")
    )
    record = json.loads(Path(effect.ref["path"]).read_text())
    assert Path(effect.ref["path"]) == tmp_path / "spring-review.json"
    assert (effect.kind, record["to"], record["subject"], record["link"]) == (
        "notification",
        ["lead@example.com"],
        "Review",
        "http://x/y",
    )
    assert record["created_at"]  # undo (twice, from the plan): tests/backends/test_contract.py


def test_outbox_email_is_a_parseable_eml_with_deterministic_message_id(tmp_path: Path) -> None:
    outbox = OutboxEmail("campaign_email", tmp_path)
    effect = outbox.send(EMAIL)
    again = outbox.send(EMAIL)  # a retry rewrites the same file with the same id
    assert effect.ref == again.ref and effect.undoable and effect.kind == "email"
    assert [p.name for p in tmp_path.iterdir()] == [f"{EMAIL.key}.eml"]
    msg = BytesParser(policy=policy.default).parse(Path(effect.ref["path"]).open("rb"))
    assert msg["Message-ID"] == effect.ref["message_id"] == f"<{EMAIL.key}@pipewise.example>"
    assert msg["Subject"] == EMAIL.subject and msg["From"] == EMAIL.sender and msg["Date"]
    # The recipients are the envelope's (kept beside the message), never in To:.
    assert msg["To"] == "undisclosed-recipients:;" and effect.ref["to"] == EMAIL.to
    assert [a for _, a in getaddresses([msg["X-Envelope-To"]])] == EMAIL.to
    assert msg.get_content_type() == "multipart/alternative"
    assert (
        msg.get_body(("plain",))
        .get_content()
        .startswith(EMAIL.text + "\n\n-- \nTo unsubscribe: https://pipewise.example/unsubscribe")
    )


def test_keys_that_are_not_file_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not usable as a file name"):
        OutboxNotifier("n", tmp_path).notify(Message(key="../escape", to=["a@b.c"], subject="s", text="t"))


def test_undo_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    notifier = OutboxNotifier("n", tmp_path / "outbox")
    effect = notifier.notify(Message(key="k", to=["a@b.c"], subject="s", text="t"))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with pytest.raises(ValueError, match="outside the folder"):
        notifier.undo(effect.model_copy(update={"ref": {"path": str(victim)}}))
    assert victim.exists()


def _lines(queue: LocalSocialQueue) -> list[dict]:
    return [json.loads(line) for line in queue.queue.read_text().splitlines()]


def test_social_queue_is_idempotent_and_undo_removes_only_that_post(tmp_path: Path) -> None:
    queue = LocalSocialQueue("campaign_social", tmp_path)
    first = queue.post(SocialPost(key="a", profiles=["x"], text="first", image_url="s3://campaign-assets/images/a.png"))
    again = queue.post(SocialPost(key="a", profiles=["x"], text="first"))
    other = queue.post(SocialPost(key="b", profiles=["x", "y"], text="second"))
    assert first.ref == again.ref == {"path": str(queue.queue), "key": "a"} and first.kind == "social_post"
    assert [r["key"] for r in _lines(queue)] == ["a", "b"]
    assert _lines(queue)[0]["image_url"] == "s3://campaign-assets/images/a.png" and _lines(queue)[0]["queued_at"]
    assert queue.undo(first) is True
    assert queue.undo(first) is False
    assert [r["key"] for r in _lines(queue)] == ["b"]
    assert queue.undo(other) is True and queue.queue.read_text() == ""


def test_social_queue_two_processes_append_without_losing_lines(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from include.orchestrator.backends.local.outbox import LocalSocialQueue\n"
        "from include.orchestrator.domain.ports import SocialPost\n"
        "q = LocalSocialQueue('s', sys.argv[1])\n"
        "for i in range(50):\n"
        "    q.post(SocialPost(key=f'{sys.argv[2]}-{i}', profiles=['p'], text='x' * 2000))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name], env=env) for name in ("p1", "p2")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    records = _lines(LocalSocialQueue("s", tmp_path))
    assert len(records) == 100
    assert {r["key"] for r in records} == {f"{n}-{i}" for n in ("p1", "p2") for i in range(50)}


def _smtp_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, port: int) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", smtp_connection(port, from_email="airflow@pipewise.example"))


def test_smtp_email_is_delivered_to_the_loopback_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalSmtpServer(tmp_path / "maildir") as server:
        _smtp_conn(monkeypatch, "campaign_email", server.port)
        backend = SmtpEmail("campaign_email")
        effect = backend.send(EMAIL)
        [msg] = server.messages()
    assert (effect.kind, effect.undoable) == ("email", False)
    assert effect.ref == {"message_id": f"<{EMAIL.key}@pipewise.example>", "to": EMAIL.to, "smtp_host": "127.0.0.1"}
    assert msg["Message-ID"] == effect.ref["message_id"]
    assert msg["Subject"] == EMAIL.subject and msg["From"] == EMAIL.sender
    assert msg["To"] == "undisclosed-recipients:;"  # the recipients are in the envelope only
    assert msg["X-RcptTo"] == ", ".join(EMAIL.to)  # the SMTP envelope, added by the server
    assert msg["List-Unsubscribe"] == "<https://pipewise.example/unsubscribe>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<p>It is here.</p>" in msg.get_body(("html",)).get_content()
    assert msg.get_body(("plain",)).get_content().startswith("Hello,\n\nIt is here.\n")
    assert backend.undo(effect) is False  # delivered mail cannot be recalled


def test_smtp_server_down_is_a_clear_retryable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port("127.0.0.1")  # nothing listens there
    _smtp_conn(monkeypatch, "campaign_email", port)
    with pytest.raises(SmtpDeliveryError, match=f"campaign_email.*127.0.0.1:{port}.*retry later") as err:
        SmtpEmail("campaign_email").send(EMAIL)
    assert err.value.retryable is True


def test_local_smtp_server_refuses_non_loopback_addresses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalSmtpServer(tmp_path, host="0.0.0.0")


def test_campaign_dashboard_is_a_well_formed_grafana_model() -> None:
    model = campaign_dashboard(
        "spring-launch-3f2a9c1b0d4e",
        "Campaign Spring (3f2a)",
        "spring-launch",
        ["email", "social", "blog"],
        ["campaign", "launch"],
    )
    assert dashboard_problems(model) == []
    assert model["schemaVersion"] >= 39 and model["tags"] == ["campaign", "launch"]
    assert model["__inputs"][0]["name"] == "DS_PROMETHEUS"
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Channel: email", "Channel: social", "Channel: blog"]
    queries = [p for p in model["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"][0]["refId"] == "A" for p in queries)
    assert all('campaign="$campaign"' in p["targets"][0]["expr"] for p in queries)
    assert model["templating"]["list"][0]["query"] == "spring-launch"
    with pytest.raises(ValueError, match="uid"):
        campaign_dashboard("x" * 41, "t", "s", ["email"], [])


def test_dashboard_problems_catch_overlaps_and_duplicate_ids() -> None:
    model = campaign_dashboard("u", "t", "s", ["email"], [])
    model["panels"][1]["id"] = model["panels"][0]["id"]
    model["panels"][2]["gridPos"] = dict(model["panels"][1]["gridPos"])
    problems = dashboard_problems(model)
    assert any("unique" in p for p in problems) and any("overlaps" in p for p in problems)


def test_grafana_folder_writes_importable_json_and_refuses_a_broken_model(tmp_path: Path) -> None:
    folder = GrafanaFolder("campaign_analytics", tmp_path)
    model = campaign_dashboard("spring-3f2a", "Spring", "spring", ["email"], ["campaign"])
    effect = folder.create_dashboard(Dashboard(uid="spring-3f2a", title="Spring", model=model))
    assert effect.kind == "dashboard" and effect.ref == {"uid": "spring-3f2a", "path": str(tmp_path / "spring-3f2a.json")}
    saved = json.loads(Path(effect.ref["path"]).read_text())
    assert saved == model and dashboard_problems(saved) == []  # undo: tests/backends/test_contract.py
    with pytest.raises(ValueError, match="not a valid Grafana dashboard"):
        folder.create_dashboard(Dashboard(uid="bad", title="Bad", model={"panels": "no"}))
