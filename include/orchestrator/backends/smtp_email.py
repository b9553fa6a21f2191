"""Email port backend that delivers through an SMTP server, via Airflow's SMTP provider.

The connection (type ``smtp``) holds host, port, optional login/password and the provider's
extras (``from_email``, ``disable_tls``, ``disable_ssl``, ``timeout``, ``retry_limit``). It is read
when ``send`` runs, never at DAG parse time. A delivered email cannot be recalled, so the effect
is recorded as not undoable: compensation can only report it. Failures raise
:class:`SmtpDeliveryError`, which says whether trying again later can succeed.
"""

from __future__ import annotations

import html
import logging
import re
import smtplib
import ssl

from include.orchestrator.backends.outbox import message_id
from include.orchestrator.ports import Effect, Email

log = logging.getLogger(__name__)


class SmtpDeliveryError(Exception):
    """The SMTP server did not take the email. ``retryable``: a later try can succeed (server
    down, timeout, 4xx answer); otherwise the configuration or the message must change first."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):  # every recipient refused, each with its code
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):  # 4xx: try later; 5xx: permanent
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, (smtplib.SMTPNotSupportedError, ssl.SSLError)):
        return False  # e.g. AUTH or STARTTLS the server does not offer, a certificate it cannot prove
    if isinstance(exc, OSError):  # refused, reset, timed out, disconnected (SMTPException is an OSError)
        return True
    return "Unable to connect" in str(exc)  # the hook's AirflowException after repeated disconnects


def _html(text: str) -> str:
    """The hook sends text/html only: paragraphs of the escaped plain text, line breaks kept."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p]
    return "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs) or "<p></p>"


class SmtpEmail:
    """Email port: real delivery through the SMTP server of connection ``conn_id``."""

    port, backend, kind = "email", "smtp", "email"

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def plan(self, email: Email) -> Effect:
        return Effect(port=self.port, conn_id=self.conn_id, backend=self.backend, kind=self.kind, key=email.key, undoable=False,
                      ref={"message_id": message_id(email), "to": list(email.to)},
                      summary=f"email {email.subject!r} to {len(email.to)} recipient(s) over SMTP")

    def send(self, email: Email) -> Effect:
        from airflow.providers.smtp.hooks.smtp import SmtpHook  # at call time: keeps DAG parsing light

        effect = self.plan(email)
        mid = effect.ref["message_id"]
        headers = {"Message-ID": mid, **({"Reply-To": email.reply_to} if email.reply_to else {})}
        hook = SmtpHook(smtp_conn_id=self.conn_id)
        try:
            with hook:
                hook.send_email_smtp(to=email.to, subject=email.subject, html_content=_html(email.text),
                                     from_email=email.sender, custom_headers=headers)
        except Exception as exc:
            # Only host and port: the connection's login and password never reach logs or errors.
            server = f"{hook.host}:{hook.port}" if hook.smtp_connection else "(connection not loaded)"
            retryable = _retryable(exc)
            raise SmtpDeliveryError(
                f"email {email.key} was not delivered through SMTP connection {self.conn_id!r} at {server}: "
                f"{type(exc).__name__}: {exc} ({'temporary: retry later' if retryable else 'permanent: fix the connection or the message'})",
                retryable=retryable,
            ) from exc
        log.info("delivered email %s (%s) to %d recipient(s) via %s:%s, connection %s",
                 email.key, mid, len(email.to), hook.host, hook.port, self.conn_id)
        return effect.model_copy(update={"ref": {**effect.ref, "smtp_host": hook.host},
                                         "summary": f"email {email.subject!r} delivered to {len(email.to)} recipient(s) via {hook.host}"})

    def undo(self, effect: Effect) -> bool:
        log.warning("email %s to %s was delivered through %s and cannot be recalled; nothing undone",
                    effect.ref.get("message_id"), ", ".join(effect.ref.get("to", [])), effect.ref.get("smtp_host", "SMTP"))
        return False
