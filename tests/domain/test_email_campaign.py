"""Campaign email end to end on the step path: batches, the banner, unsubscribe, the saga ledger.

Everything runs for real on this machine: the loopback SMTP server (aiosmtpd), Airflow's SMTP hook,
the SQLite saga ledger, the Pillow banner in a file:// asset store, the .eml outbox. SendGrid, which
this machine cannot reach, is its double (``tests/doubles/sendgrid.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from airflow.sdk import Connection
from PIL import Image as PILImage
from pydantic import ValidationError

from include.orchestrator import steps
from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.cloud.sendgrid import SendGridEmail
from include.orchestrator.backends.cloud.smtp_email import SmtpEmail
from include.orchestrator.backends.local.images import PillowDesign
from include.orchestrator.backends.local.outbox import OutboxEmail
from include.orchestrator.dev.smtp_server import LocalSmtpServer
from include.orchestrator.domain import mail
from include.orchestrator.domain.model import Campaign, EmailChannel, plan_run
from include.orchestrator.domain.ports import Banner, Copy, ImageSpec
from include.orchestrator.errors import ConnectionConfigError, SmtpDeliveryError
from include.orchestrator.saga import compensation
from include.orchestrator.saga.ledger import Ledger
from include.orchestrator.saga.recorder import Recorder
from tests.builders.smtp import smtp_connection
from tests.doubles.sendgrid import SendGridDouble

PROJECT = Path(__file__).resolve().parents[2]
DAG_ID, RUN_ID = "campaign_spring-launch", "manual__2026-12-01T08:00:00+00:00"
AUDIENCE = "audience.example.org"  # every recipient's domain: no header of a sent message may name it
SERVER_HEADERS = ("X-Peer", "X-MailFrom", "X-RcptTo")  # what the loopback server's Maildir adds: the envelope
# Built past validation: Copy refuses a subject with a line break (test_control_characters), and mail
# composition must still fold one rather than let it make a header.
COPY = Copy.model_construct(
    headline='Pipewise 3: "every" pipeline <on one page>',
    email_subject="Ship faster\nBcc: everyone@evil.example",  # a line break must not make a header
    email_body="Hello <team> & friends,\n\nPipewise 3 is here. <script>alert(1)</script>\nSee you soon.",
    social_posts=["post"],
    blog_title="t",
    blog_body="b",
    writer="test",
)


def recipients(count: int) -> list[str]:
    return [f"person{i:04d}@{AUDIENCE}" for i in range(count)]


UNSUBSCRIBE = "https://pipewise.example.com/unsubscribe?c=spring"


def campaign(count: int, batch_size: int = 50, unsubscribe: str = UNSUBSCRIBE) -> Campaign:
    data = yaml.safe_load((PROJECT / "include/campaigns/spring-launch.yaml").read_text())
    data["channels"]["email"].update(recipients=recipients(count), batch_size=batch_size, unsubscribe=unsubscribe)
    return Campaign.model_validate(data)


def banner(folder: Path) -> tuple[AssetStore, dict[str, Any]]:
    """The design phase's email image, rendered by Pillow into a file:// asset store."""
    store = AssetStore("campaign_assets", (folder / "assets").resolve().as_uri())
    width, height = steps.IMAGE_SIZES["email"]
    spec = ImageSpec(
        key="spring-launch-abc-image-email",
        channel="email",
        width=width,
        height=height,
        headline=COPY.headline,
        background="#0f172a",
        foreground="#f8fafc",
    )
    image, _ = PillowDesign("campaign_design", store).render(spec)
    return store, image.model_dump(mode="json")


def context(folder: Path, the_campaign: Campaign, backend: Any, ledger_url: str | None = None) -> steps.StepContext:
    """A publish_email task's context: the run plan, the rendered banner, the email port journaled in a real ledger."""
    store, image = banner(folder)
    plan = plan_run(the_campaign, DAG_ID, RUN_ID, {}).model_dump(mode="json")
    results = {"validate_conf": plan, "design.render_image": [image]}
    ledger = Ledger(ledger_url or f"sqlite:///{folder / 'ledger.sqlite3'}")
    recorder = Recorder(DAG_ID, RUN_ID, "distribution.publish_email", -1, lambda: ledger)
    return steps.StepContext(
        current=the_campaign,
        dag_id=DAG_ID,
        run_id=RUN_ID,
        run_date=date(2026, 12, 1),
        conf={},
        pull=results.get,
        open_port=lambda port: recorder.wrap(port, backend),
        open_assets=lambda: store,
    )


def smtp_conn(port: int) -> str:
    return smtp_connection(port, from_email="airflow@pipewise.example", timeout=10)


def publish_over_smtp(folder: str, count: int, batch_size: int) -> dict[str, Any]:
    """The step's email send to ``count`` recipients over the SMTP connection ``campaign_email`` (also run as a subprocess)."""
    effect = steps._publish_email(context(Path(folder), campaign(count, batch_size), SmtpEmail("campaign_email")), COPY)
    return effect.model_dump(mode="json")


def entries(folder: Path) -> list[Any]:
    return Ledger(f"sqlite:///{folder / 'ledger.sqlite3'}").entries(DAG_ID, RUN_ID)


def envelope(msg: EmailMessage) -> list[str]:
    return [a for _, a in getaddresses([msg["X-RcptTo"]])]


def sent_headers(msg: EmailMessage) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in msg.items() if k not in SERVER_HEADERS]


def parts(msg: EmailMessage) -> tuple[str, str, EmailMessage]:
    """(text, html, banner part) of a campaign message, checking its MIME structure on the way."""
    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.get_payload()
    assert plain.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html_part, image_part = related.get_payload()
    assert html_part.get_content_type() == "text/html" and image_part.get_content_type() == "image/png"
    assert image_part.get_content_disposition() == "inline"
    return plain.get_content(), html_part.get_content(), image_part


# --- the campaign file -----------------------------------------------------------------------
def test_unsubscribe_is_required_and_must_be_https_or_mailto() -> None:
    base = {"sender": "news@pipewise.example.com", "recipients": ["a@b.example"]}
    with pytest.raises(ValidationError, match="unsubscribe\n  Field required"):
        EmailChannel.model_validate(base)
    for bad in (
        "http://pipewise.example.com/u",
        "javascript:alert(1)",
        "mailto:nobody",
        'https://x.example/"><img src=x>',
        "https://x.example/a b",
    ):
        with pytest.raises(ValidationError, match="unsubscribe"):
            EmailChannel.model_validate({**base, "unsubscribe": bad})
    assert EmailChannel.model_validate({**base, "unsubscribe": "mailto:leave@pipewise.example.com"}).batch_size == 50
    for size in (0, 101):  # RFC 5321: servers must take 100 recipients per message, not more
        with pytest.raises(ValidationError, match="batch_size"):
            EmailChannel.model_validate({**base, "unsubscribe": "https://x.example/u", "batch_size": size})


# --- 1,000 recipients over SMTP ----------------------------------------------------------------
def test_a_thousand_recipients_over_smtp_each_once_undisclosed_with_banner_and_unsubscribe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalSmtpServer(tmp_path / "maildir") as server:
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_conn(server.port))
        started = time.monotonic()
        result = publish_over_smtp(str(tmp_path), 1000, 50)
        seconds = time.monotonic() - started
        again = publish_over_smtp(str(tmp_path), 1000, 50)  # an Airflow retry of the task: nothing is sent twice
        received = server.messages()
    print(f"\n1,000 recipients in 20 SMTP transactions over loopback: {seconds:.2f} s")

    assert len(received) == 20 and len({m["Message-ID"] for m in received}) == 20
    delivered = Counter(a for m in received for a in envelope(m))
    assert delivered == Counter(recipients(1000))  # everyone, exactly once
    assert all(len(envelope(m)) == 50 for m in received)
    png = None
    for msg in received:
        for name, value in sent_headers(msg):  # nobody learns who else got it
            assert AUDIENCE not in value, (name, value)
        assert msg["To"] == "undisclosed-recipients:;" and msg["Bcc"] is None and msg["Cc"] is None
        assert msg["Subject"] == "[Pipewise] Ship faster Bcc: everyone@evil.example"  # one line: no header smuggled in
        assert msg["List-Unsubscribe"] == "<https://pipewise.example.com/unsubscribe?c=spring>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html, image = parts(msg)
        assert text.startswith(COPY.email_body) and "To unsubscribe: https://pipewise.example.com/unsubscribe?c=spring" in text
        cid = image["Content-ID"].strip("<>")
        assert f'<img src="cid:{cid}" alt="Pipewise 3: &quot;every&quot; pipeline &lt;on one page&gt;"' in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
        assert "Hello &lt;team&gt; &amp; friends," in html
        assert '<a href="https://pipewise.example.com/unsubscribe?c=spring">' in html
        png = image.get_content()
    decoded = PILImage.open(io.BytesIO(png))
    decoded.load()
    assert (decoded.format, decoded.size) == ("PNG", steps.IMAGE_SIZES["email"])
    assert hashlib.sha256(png).hexdigest() == banner_sha(tmp_path)  # the very bytes the design phase rendered

    made = entries(tmp_path)
    assert [e.effect.key for e in made] == [f"spring-launch-{campaign_plan_key()}-email-{n:04d}" for n in range(1, 21)]
    assert all(e.state == "made" and len(e.effect.ref["to"]) == 50 and not e.effect.undoable for e in made)
    assert compensation.pivot(made) is made[0]  # the first batch out is the point of no return
    assert "20 batch(es), 1000 recipient(s) sent" in result["summary"]
    assert "20 batch(es), 1000 recipient(s) sent by an earlier try" in again["summary"]
    assert [b["state"] for b in again["ref"]["batches"]] == ["sent by an earlier try"] * 20


def banner_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "assets/images/spring-launch-abc-image-email.png").read_bytes()).hexdigest()


def campaign_plan_key() -> str:
    return plan_run(campaign(1), DAG_ID, RUN_ID, {}).run_key


def test_a_mailto_unsubscribe_has_no_one_click_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalSmtpServer(tmp_path / "maildir") as server:
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_conn(server.port))
        the_campaign = campaign(3, unsubscribe="mailto:leave@pipewise.example.com?subject=unsubscribe")
        steps._publish_email(context(tmp_path, the_campaign, SmtpEmail("campaign_email")), COPY)
        [msg] = server.messages()
    assert msg["List-Unsubscribe"] == "<mailto:leave@pipewise.example.com?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] is None  # RFC 8058 one-click is a POST to an https URL only
    text, html, _ = parts(msg)
    assert "To unsubscribe, email leave@pipewise.example.com" in text
    assert '<a href="mailto:leave@pipewise.example.com?subject=unsubscribe">leave@pipewise.example.com</a>' in html


# --- retries and the ledger --------------------------------------------------------------------
class FlakyMailbox(Mailbox):
    """Answers 451 (try again later) to the DATA of the batches named in ``refuse``, once each."""

    def __init__(self, maildir: Path, refuse: set[str]) -> None:
        super().__init__(maildir)
        self.refuse = refuse

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = re.search(rb"Message-ID: <([^@>]+)@", envelope.content)
        key = found[1].decode() if found else ""
        if key in self.refuse:
            self.refuse.discard(key)
            return "451 4.3.0 try again later"
        return await super().handle_DATA(server, session, envelope)


def test_a_batch_refused_for_now_is_sent_on_retry_and_the_others_are_not_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"spring-launch-{campaign_plan_key()}-email-0003"
    server = LocalSmtpServer(tmp_path / "maildir")
    server._controller = Controller(FlakyMailbox(server.maildir, {key}), hostname=server.host, port=server.port)
    with server:
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_conn(server.port))
        with pytest.raises(SmtpDeliveryError, match="451") as refused:
            publish_over_smtp(str(tmp_path), 230, 50)
        assert refused.value.retryable
        first = entries(tmp_path)
        assert [(e.state, bool(e.error)) for e in first] == [("made", False), ("made", False), ("planned", True)]
        assert compensation.pivot(first) is first[0]
        result = publish_over_smtp(str(tmp_path), 230, 50)  # the retry
        received = server.messages()
    assert Counter(a for m in received for a in envelope(m)) == Counter(recipients(230))
    assert [b["state"] for b in result["ref"]["batches"]] == ["sent by an earlier try"] * 2 + ["sent"] * 3
    assert [len(envelope(m)) for m in received] == [50, 50, 50, 50, 30]


def test_pivot_is_the_first_batch_out_not_a_refused_one(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    recorder = Recorder(DAG_ID, RUN_ID, "distribution.publish_email", -1, lambda: ledger)
    smtp = SmtpEmail("campaign_email")
    batches = [
        smtp.plan(
            steps.Email(
                key=f"k-email-{n:04d}",
                sender="a@b.example",
                to=[f"p{n}@c.example"],
                subject="s",
                text="t",
                unsubscribe="https://x.example/u",
            )
        )
        for n in (1, 2)
    ]
    recorder.write("planned", batches[0])
    recorder.write("call_failed", batches[0], "SMTPDataError: (554, b'rejected')")  # not delivered
    assert compensation.pivot(ledger.entries(DAG_ID, RUN_ID)) is None
    recorder.write("planned", batches[1])  # the task died during this one: it may be out
    [_, maybe] = ledger.entries(DAG_ID, RUN_ID)
    assert compensation.pivot(ledger.entries(DAG_ID, RUN_ID)) == maybe
    assert recorder.recorded(batches[1]) == maybe and recorder.recorded(batches[0]).error


def test_a_batch_left_planned_is_reported_not_resent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalSmtpServer(tmp_path / "maildir") as server:
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_conn(server.port))
        ctx = context(tmp_path, campaign(120), SmtpEmail("campaign_email"))
        # An earlier try wrote batch 2 as planned and died in the call (no error recorded): it may have gone out.
        second = steps.Email(
            key=ctx.plan.key("email", "0002"),
            sender="launch@pipewise.example.com",
            to=recipients(120)[50:100],
            subject="s",
            text="t",
            unsubscribe="https://x.example/u",
        )
        earlier = Recorder(
            DAG_ID, RUN_ID, "distribution.publish_email", -1, lambda: Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        )
        earlier.write("planned", SmtpEmail("campaign_email").plan(second))
        result = steps._publish_email(ctx, COPY)
        received = server.messages()
    assert [b["state"] for b in result.ref["batches"]] == ["sent", "may or may not have been delivered", "sent"]
    assert "1 batch(es), 50 recipient(s) may or may not have been delivered" in result.summary
    assert ctx.plan.key("email", "0002") in result.summary
    assert sorted(a for m in received for a in envelope(m)) == sorted(recipients(120)[:50] + recipients(120)[100:])


# --- SIGKILL in the middle of a send -----------------------------------------------------------
class SlowMailbox(Mailbox):
    """Takes ``delay`` seconds over each message it has read, before it keeps it (``keep_first`` False) or after it kept it
    and before it answers 250 (True); its sender waits meanwhile. Counts the messages it began, kept and answered."""

    def __init__(self, maildir: Path, delay: float, keep_first: bool) -> None:
        super().__init__(maildir)
        self.delay, self.keep_first = delay, keep_first
        self.taking = self.answered = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.taking += 1
        if self.keep_first:
            answer = await super().handle_DATA(server, session, envelope)
            await asyncio.sleep(self.delay)
        else:
            await asyncio.sleep(self.delay)
            answer = await super().handle_DATA(server, session, envelope)
        self.answered += 1
        return answer


SEND = (
    "import json, sys\nfrom tests.domain.test_email_campaign import publish_over_smtp\n"
    "print(json.dumps(publish_over_smtp(sys.argv[1], 1000, 50)))\n"
)


@pytest.mark.integration  # SIGKILLs a sending process: several processes, about 25 s each
@pytest.mark.parametrize("kept", [False, True], ids=["server-had-not-kept-it", "server-had-kept-it"])
def test_sigkill_mid_send_then_retry_sends_no_batch_twice(tmp_path: Path, kept: bool) -> None:
    server = LocalSmtpServer(tmp_path / "maildir")
    handler = SlowMailbox(server.maildir, 0.5, keep_first=kept)
    server._controller = Controller(handler, hostname=server.host, port=server.port)
    env = {**os.environ, "AIRFLOW_CONN_CAMPAIGN_EMAIL": smtp_conn(server.port)}
    with server:
        proc = subprocess.Popen(
            [sys.executable, "-c", SEND, str(tmp_path)], env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        # Kill the task once 5 batches are in and the server has read a 6th whose sender waits for its 250: the
        # send is cut off inside the SMTP transaction, the worst moment (the server may take what the task never hears of).
        while not (handler.answered >= 5 and handler.taking > handler.answered):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the send did not get going"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        time.sleep(2 * handler.delay)  # whatever the server does with the message it was taking is done by now
        before = server.messages()
        killed = entries(tmp_path)
        retry = subprocess.run(
            [sys.executable, "-c", SEND, str(tmp_path)], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300
        )
        assert retry.returncode == 0, retry.stderr[-3000:]
        after = server.messages()
    result = json.loads(retry.stdout.strip().splitlines()[-1])
    uncertain = [b["key"] for b in result["ref"]["batches"] if b["state"] == "may or may not have been delivered"]
    print(
        f"\nSIGKILL with 5 message(s) answered and 1 read but not answered; the server kept {len(before)}; ledger then: "
        f"{dict(Counter(e.state for e in killed))}; retry: {result['summary']}"
    )

    ids = [m["Message-ID"] for m in after]
    assert len(ids) == len(set(ids))  # no batch the server took was taken twice
    assert {m["Message-ID"] for m in before} <= set(ids) and len(before) == 5 + kept
    # The batch the killed try left planned (no error) is reported and not sent again; the others are all out, once.
    [left] = [e.effect.key for e in killed if e.state == "planned" and not e.error]
    assert [e.state for e in killed] == ["made"] * 5 + ["planned"] and uncertain == [left]
    in_doubt = set(next(e.effect.ref["to"] for e in killed if e.effect.key == left))
    delivered = Counter(a for m in after for a in envelope(m))
    assert len(in_doubt) == 50 and all(delivered[a] == kept for a in in_doubt)  # at most once: here once, or never
    assert {a: n for a, n in delivered.items() if a not in in_doubt} == {a: 1 for a in recipients(1000) if a not in in_doubt}
    assert len(after) == 19 + (len(before) - 5)  # the 14 batches after it went out on the retry
    assert [e.state for e in entries(tmp_path)] == ["made"] * 5 + ["planned"] + ["made"] * 14


# --- the outbox writes the same MIME -----------------------------------------------------------
def test_the_outbox_eml_is_the_message_smtp_sends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = tmp_path / "outbox"
    result = steps._publish_email(context(tmp_path / "a", campaign(120), OutboxEmail("campaign_email", outbox)), COPY)
    files = sorted(outbox.glob("*.eml"))
    assert [f.name for f in files] == [f"{b['key']}.eml" for b in result.ref["batches"]] and len(files) == 3
    with LocalSmtpServer(tmp_path / "maildir") as server:
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_conn(server.port))
        steps._publish_email(context(tmp_path / "b", campaign(120), SmtpEmail("campaign_email")), COPY)
        received = server.messages()
    for path, sent in zip(files, received, strict=True):
        eml = BytesParser(policy=policy.default).parse(path.open("rb"))
        assert [a for _, a in getaddresses([eml["X-Envelope-To"]])] == envelope(sent)  # the envelope, kept beside it

        # Every header alike but the date and the MIME boundary (random per composition); the parts below.
        def same(msg):
            return [(k, str(v)) for k, v in msg.items() if k not in (*SERVER_HEADERS, "X-Envelope-To", "Date", "Content-Type")]

        assert same(eml) == same(sent)
        assert [k for k, _ in same(sent)] == [
            "Message-ID",
            "From",
            "To",
            "Subject",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "MIME-Version",
        ]
        assert [p.get_content_type() for p in eml.walk()] == [p.get_content_type() for p in sent.walk()]
        for (t1, h1, i1), (t2, h2, i2) in [(parts(eml), parts(sent))]:
            assert (t1, h1, i1.get_content(), i1["Content-ID"]) == (t2, h2, i2.get_content(), i2["Content-ID"])


# --- SendGrid ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sendgrid_server() -> Any:
    with SendGridDouble() as double:
        yield double


def sendgrid(double: SendGridDouble, **extra: Any) -> SendGridEmail:
    settings = {
        "sender_id": 4321,
        "suppression_group_id": 77,
        "public_assets_url": "https://cdn.pipewise.example/assets/",
        **extra,
    }
    conn = Connection(
        conn_id="campaign_email",
        conn_type="http",
        host=double.url,
        password="test-token",
        extra=json.dumps({k: v for k, v in settings.items() if v is not None}),
    )
    return SendGridEmail("campaign_email", conn)


def test_sendgrid_carries_the_same_html_with_the_banner_by_its_public_url(
    tmp_path: Path, sendgrid_server: SendGridDouble
) -> None:
    sendgrid_server.reset()
    result = steps._publish_email(context(tmp_path, campaign(1000), sendgrid(sendgrid_server)), COPY)
    [single] = sendgrid_server.single_sends()
    [contacts] = sendgrid_server.lists()
    assert len(contacts["emails"]) == 1000 and [b["recipients"] for b in result.ref["batches"]] == [1000]  # one Single Send
    config = single["email_config"]
    html = config["html_content"]
    src = "https://cdn.pipewise.example/assets/images/spring-launch-abc-image-email.png"
    assert f'<img src="{src}" alt="Pipewise 3: &quot;every&quot; pipeline &lt;on one page&gt;"' in html
    assert "cid:" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert '<a href="https://pipewise.example.com/unsubscribe?c=spring">' in html
    assert config["plain_content"] == f"{COPY.email_body}\n\n-- \nTo unsubscribe: {UNSUBSCRIBE}\n"
    assert config["subject"] == "[Pipewise] Ship faster Bcc: everyone@evil.example"
    # The same HTML as SMTP's, but for the image's address.
    _, image = banner(tmp_path)
    email = steps.Email(
        key=single["name"],
        sender="launch@pipewise.example.com",
        to=recipients(1000),
        subject=config["subject"],
        text=COPY.email_body,
        unsubscribe="https://pipewise.example.com/unsubscribe?c=spring",
        banner=Banner(**{k: image[k] for k in ("url", "sha256", "width", "height")}, alt=COPY.headline, data=b""),
    )
    assert html == mail.html_body(email, image_src=src)
    assert sendgrid_server.problems == []


def test_sendgrid_without_a_public_address_for_the_banner_sends_nothing(tmp_path: Path, sendgrid_server: SendGridDouble) -> None:
    sendgrid_server.reset()
    with pytest.raises(ConnectionConfigError, match="public_assets_url"):
        steps._publish_email(context(tmp_path, campaign(10), sendgrid(sendgrid_server, public_assets_url=None)), COPY)
    assert sendgrid_server.calls == []  # never sent without its image


def test_sendgrid_uses_the_campaigns_https_unsubscribe_when_the_connection_has_none(
    tmp_path: Path, sendgrid_server: SendGridDouble
) -> None:
    sendgrid_server.reset()
    steps._publish_email(context(tmp_path, campaign(10), sendgrid(sendgrid_server, suppression_group_id=None)), COPY)
    [single] = sendgrid_server.single_sends()
    assert single["email_config"]["custom_unsubscribe_url"] == "https://pipewise.example.com/unsubscribe?c=spring"
    sendgrid_server.reset()
    with pytest.raises(ConnectionConfigError, match="suppression_group_id"):  # another run (its own ledger): a mailto: campaign
        steps._publish_email(
            context(
                tmp_path / "mailto",
                campaign(10, unsubscribe="mailto:leave@pipewise.example.com"),
                sendgrid(sendgrid_server, suppression_group_id=None),
            ),
            COPY,
        )


def test_the_sendgrid_double_flags_an_image_a_single_send_cannot_carry(sendgrid_server: SendGridDouble) -> None:
    import requests

    sendgrid_server.reset()
    answer = requests.post(
        f"{sendgrid_server.url}/v3/marketing/singlesends",
        headers={"Authorization": "Bearer test-token"},
        json={"name": "n", "email_config": {"html_content": '<img src="cid:banner@x">'}},
        timeout=5,
    )
    assert answer.status_code == 201  # SendGrid takes it, and the image would show broken
    assert sendgrid_server.problems and "cid:banner@x" in sendgrid_server.problems[0]


def test_mail_refuses_what_cannot_be_a_header() -> None:
    with pytest.raises(ValueError, match="unsubscribe"):
        mail.unsubscribe_headers("https://x.example/a\r\nBcc: y@z.example")
    assert mail.batches(recipients(5), 2) == [recipients(5)[:2], recipients(5)[2:4], recipients(5)[4:]]
    assert mail.unique(["A@x.example", "a@x.example", "b@x.example"]) == ["A@x.example", "b@x.example"]
