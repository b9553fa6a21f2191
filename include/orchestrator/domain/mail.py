"""Campaign email as email clients expect it, composed once for every backend (SMTP, the ``.eml``
outbox, SendGrid). Airflow-free.

- **Text and HTML**: ``multipart/alternative``, the plain text first and the HTML last (a client
  shows the last part it can render). Every piece of copy is escaped for HTML (``html.escape``): it
  may come from an LLM or a reviewer's edit, so it is data, never markup.
- **The banner inline**: the design phase's "email" image travels inside the message, in a
  ``multipart/related`` around the HTML, under a Content-ID the HTML's ``<img src="cid:...">`` names,
  with the headline as its alt text. SendGrid takes no attachments, so there the same HTML names the
  image by a public https URL instead (``html_body(email, image_src=...)``, see ``backends/sendgrid.py``).
- **Unsubscribe**: ``List-Unsubscribe`` (RFC 2369), plus ``List-Unsubscribe-Post:
  List-Unsubscribe=One-Click`` (RFC 8058) only for an https URL (one click means a POST to it; a
  mailto: address cannot take one), and the same address as a visible line in the text and the HTML.
- **Recipients are never disclosed**: they go in the SMTP envelope only; ``To:`` says
  ``undisclosed-recipients:;`` (RFC 5322 3.6.3's empty group). Lists are sent in :func:`batches`.
- **Headers are one line each**: copy in a header (the subject) has its line breaks folded to
  spaces, so no text can add a header of its own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from typing import cast

from include.orchestrator.domain.ports import Email

UNDISCLOSED = "undisclosed-recipients:;"
ONE_CLICK = "List-Unsubscribe=One-Click"
HTML_WIDTH = 600  # the usual width of an email's content column, in CSS pixels


def _checked_key(key: str) -> str:
    # The key names the Message-ID and the banner's Content-ID: keep it to characters both allow.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", key):
        raise ValueError(f"email key {key!r} is not usable in a Message-ID (letters, digits, '.', '_', '-')")
    return key


def domain_of(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def message_id(email: Email) -> str:
    """The Message-ID of an email: derived from its key only (plus the sender's domain), so a
    retried send carries the same id and receivers can recognise the duplicate."""
    return f"<{_checked_key(email.key)}@{domain_of(email.sender)}>"


def banner_cid(email: Email) -> str:
    """The banner's Content-ID (without angle brackets): deterministic, so a retry composes the same message."""
    assert email.banner is not None
    return f"banner.{_checked_key(email.key)}.{email.banner.sha256[:12]}@{domain_of(email.sender)}"


def one_line(value: str) -> str:
    """A header value from copy: line breaks and runs of whitespace become one space."""
    return " ".join(value.split())


def unique(addresses: Iterable[str]) -> list[str]:
    """The addresses in order, each once (case-insensitively): a list that names someone twice still mails them once."""
    seen: set[str] = set()
    kept = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return kept


def batches(recipients: list[str], size: int) -> list[list[str]]:
    """The recipients in batches of at most ``size`` (one SMTP transaction each)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [recipients[i : i + size] for i in range(0, len(recipients), size)]


def unsubscribe_headers(unsubscribe: str) -> dict[str, str]:
    """``List-Unsubscribe`` (RFC 2369), with ``List-Unsubscribe-Post`` (RFC 8058) for an https URL only."""
    if not unsubscribe.startswith(("https://", "mailto:")) or re.search(r"[\s<>]", unsubscribe):
        raise ValueError(f"unsubscribe must be an https URL or a mailto: address without spaces or brackets, got {unsubscribe!r}")
    headers = {"List-Unsubscribe": f"<{unsubscribe}>"}
    if unsubscribe.startswith("https://"):
        headers["List-Unsubscribe-Post"] = ONE_CLICK
    return headers


def unsubscribe_text(unsubscribe: str) -> str:
    if unsubscribe.startswith("mailto:"):
        address = unsubscribe.removeprefix("mailto:").partition("?")[0]
        return f"To unsubscribe, email {address}."
    return f"To unsubscribe: {unsubscribe}"


def text_body(email: Email) -> str:
    """The plain-text part: the copy, then the unsubscribe line after a signature separator ("-- ")."""
    return f"{email.text.strip()}\n\n-- \n{unsubscribe_text(email.unsubscribe)}\n"


def _paragraphs(text: str) -> list[str]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return [html.escape(p).replace("\n", "<br>\n") for p in paragraphs]


def html_body(email: Email, image_src: str | None = None) -> str:
    """The HTML part: the banner (when there is one, at ``image_src``), the copy as escaped
    paragraphs, and the unsubscribe link. ``image_src`` defaults to the banner's ``cid:``."""
    esc = html.escape  # quote=True: safe inside attribute values too
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(one_line(email.subject))}</title></head>",
        '<body style="margin:0;padding:0;background:#ffffff;">',
        f'<div style="max-width:{HTML_WIDTH}px;margin:0 auto;padding:16px;font-family:Arial,Helvetica,sans-serif;'
        'font-size:16px;line-height:1.5;color:#111827;">',
    ]
    if email.banner is not None:
        src = image_src or f"cid:{banner_cid(email)}"
        height = round(HTML_WIDTH * email.banner.height / email.banner.width)
        parts.append(
            f'<img src="{esc(src)}" alt="{esc(one_line(email.banner.alt))}" width="{HTML_WIDTH}" height="{height}" '
            'style="display:block;width:100%;max-width:100%;height:auto;border:0;">'
        )
    parts += [f"<p>{p}</p>" for p in _paragraphs(email.text)]
    link = email.unsubscribe
    shown = link.removeprefix("mailto:").partition("?")[0] if link.startswith("mailto:") else link
    parts += [
        '<hr style="border:0;border-top:1px solid #e5e7eb;margin:24px 0 12px;">',
        f'<p style="font-size:12px;color:#6b7280;">To unsubscribe: <a href="{esc(link)}">{esc(shown)}</a></p>',
        "</div>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def mime_message(email: Email, now: datetime | None = None) -> EmailMessage:
    """The whole message: headers, ``multipart/alternative`` (text; ``multipart/related`` of the HTML
    and the banner). The recipients are nowhere in it: pass them to the SMTP envelope."""
    msg = EmailMessage()
    msg["Message-ID"] = message_id(email)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["From"] = email.sender
    msg["To"] = UNDISCLOSED
    if email.reply_to:
        msg["Reply-To"] = email.reply_to
    msg["Subject"] = one_line(email.subject)
    for name, value in unsubscribe_headers(email.unsubscribe).items():
        msg[name] = value
    msg.set_content(text_body(email))
    msg.add_alternative(html_body(email), subtype="html")
    if email.banner is not None:
        html_part = cast(list[EmailMessage], msg.get_payload())[1]  # multipart/alternative: [text/plain, text/html]
        # add_related turns the HTML part into multipart/related: [text/html, image/png]
        html_part.add_related(
            email.banner.data, "image", "png", cid=f"<{banner_cid(email)}>", disposition="inline", filename="banner.png"
        )
    return msg


def as_bytes(msg: EmailMessage) -> bytes:
    """The message as sent over SMTP: CRLF line ends, lines within RFC 5322's limits (the parts are encoded)."""
    return msg.as_bytes(policy=SMTP)
