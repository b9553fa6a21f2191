"""Email port backend that delivers through an SMTP server, over Airflow's SMTP provider's connection.

The connection (type ``smtp``) holds host, port, optional login/password and the provider's
extras (``from_email``, ``disable_tls``, ``disable_ssl``, ``timeout``, ``retry_limit``). It is read
when ``send`` runs, never at DAG parse time.

One ``send`` is one batch (``mail.batches``): one SMTP transaction whose recipients are in the
envelope only (``RCPT TO``), never in a header. ``SmtpHook.send_email_smtp`` cannot do that: it
builds its own text/html-only MIME message with every recipient in ``To:`` (and retries
``sendmail`` itself, which could deliver a batch twice). So the hook only opens the connection,
with the connection's TLS/SSL, login and timeout settings, and the message composed by ``domain/mail.py``
goes through its ``smtplib`` client's ``sendmail``; the saga ledger and Airflow do the retrying.

A delivered email cannot be recalled, so the effect is recorded as not undoable: compensation can
only report it. Failures raise :class:`SmtpDeliveryError`, which says whether trying again later
can succeed. Recipients the server refuses while it takes the message for the others are kept in
the effect (``refused``) and logged: sending the batch again would reach the others twice.

**Deadline.** ``timeout`` bounds each connect and read; the whole send (connect, TLS, login, the
transaction) has a total deadline too, the extra ``deadline`` (default four times ``timeout``, so
120 s), enforced by ``resilience/deadlines.py`` on the client's socket. A server trickling its
answers cannot hold a task. When the server had the whole message and its answer never came (a
timeout, a dropped connection, the deadline), it may have taken it: the error is an
:class:`UncertainSmtpDeliveryError`, the ledger keeps the batch as possibly delivered, and no retry
sends it again.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.utils import parseaddr
from typing import Any

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.domain.mail import as_bytes, message_id, mime_message
from include.orchestrator.domain.ports import Effect, Email
from include.orchestrator.errors import SmtpDeliveryError, UncertainSmtpDeliveryError
from include.orchestrator.resilience.deadlines import within

log = logging.getLogger(__name__)


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


def _deadline(extra: dict[str, Any]) -> float:
    """The whole send's deadline: the extra ``deadline``, else four times the per-operation ``timeout``."""
    return float(extra.get("deadline") or 4 * float(extra.get("timeout") or 30))


class _WholeMessageSent:
    """Whether the client has sent the message's final line (``<CRLF>.<CRLF>``): from then on the
    server may have taken it, whatever happens to its answer."""

    def __init__(self) -> None:
        self.sent = False

    def watch(self, client: smtplib.SMTP) -> None:
        send = client.send

        def watched(data: Any) -> None:
            send(data)
            if isinstance(data, bytes) and data.endswith(b"\r\n.\r\n"):  # smtplib.SMTP.data's whole message
                self.sent = True

        client.send = watched  # type: ignore[method-assign,assignment]  # wraps the instance's send


class SmtpEmail(MakesEffects):
    """Email port: real delivery through the SMTP server of connection ``conn_id``."""

    port, backend, kind = "email", "smtp", "email"
    batches = True  # one SMTP transaction per batch of the campaign's batch_size
    adopts = False  # SMTP has no lookup: a batch sent twice reaches its people twice

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def plan(self, email: Email) -> Effect:
        return self._effect(
            email.key,
            {"message_id": message_id(email), "to": list(email.to)},
            f"email {email.subject!r} to {len(email.to)} recipient(s) over SMTP",
            undoable=False,
        )

    def send(self, email: Email) -> Effect:
        from airflow.providers.smtp.hooks.smtp import SmtpHook  # at call time: keeps DAG parsing light

        effect = self.plan(email)
        mid = effect.ref["message_id"]
        data = as_bytes(mime_message(email))
        hook = SmtpHook(smtp_conn_id=self.conn_id)
        whole = _WholeMessageSent()
        try:
            # Read once, here: the deadline is one of its extras, and the hook's get_conn would read it again.
            conn = hook.smtp_connection = hook.get_connection(self.conn_id)
            hook.get_connection = lambda conn_id: conn  # type: ignore[method-assign]
            with within(_deadline(conn.extra_dejson), "SMTP", f"smtp://{hook.host}"):
                with hook:  # connects (SSL or STARTTLS and login as the connection says); closes on the way out
                    client = hook._smtp_client  # the hook's own smtplib client: no public accessor in the provider
                    if client is None:
                        raise smtplib.SMTPServerDisconnected("the SMTP hook opened no connection")
                    whole.watch(client)  # type: ignore[arg-type]  # a blocking smtplib client, not aiosmtplib's
                    # `with hook` opens a (blocking) smtplib client; the attribute's type also names aiosmtplib's async one.
                    refused: dict[str, tuple[int, bytes]] = client.sendmail(parseaddr(email.sender)[1], list(email.to), data)  # type: ignore[assignment]
        except Exception as exc:
            # Only host and port: the connection's login and password never reach logs or errors.
            server = f"{hook.host}:{hook.port}" if hook.smtp_connection else "(connection not loaded)"
            if whole.sent and not isinstance(exc, smtplib.SMTPResponseException):
                raise UncertainSmtpDeliveryError(
                    f"email {email.key} may have been delivered through SMTP connection {self.conn_id!r} at {server}: "
                    f"the server had the whole message and its answer never came ({type(exc).__name__}: {exc}); "
                    "not sent again, so nobody gets it twice",
                ) from exc
            retryable = _retryable(exc)
            verdict = "temporary: retry later" if retryable else "permanent: fix the connection or the message"
            raise SmtpDeliveryError.of(
                f"email {email.key} was not delivered through SMTP connection {self.conn_id!r} at {server}: "
                f"{type(exc).__name__}: {exc} ({verdict})",
                retryable=retryable,
            ) from exc
        taken = len(email.to) - len(refused)
        if refused:
            log.warning(
                "SMTP server %s:%s refused %d of %d recipient(s) of %s: %s",
                hook.host,
                hook.port,
                len(refused),
                len(email.to),
                email.key,
                "; ".join(f"{a} ({c} {m!r})" for a, (c, m) in refused.items()),
            )
        log.info(
            "delivered email %s (%s, %d bytes) to %d recipient(s) via %s:%s, connection %s",
            email.key,
            mid,
            len(data),
            taken,
            hook.host,
            hook.port,
            self.conn_id,
        )
        ref = {**effect.ref, "smtp_host": hook.host}
        if refused:
            ref["refused"] = {
                address: f"{code} {message.decode(errors='replace') if isinstance(message, bytes) else message}"
                for address, (code, message) in refused.items()
            }
        return effect.model_copy(
            update={
                "ref": ref,
                "summary": f"email {email.subject!r} delivered to {taken} recipient(s) via {hook.host}"
                + (f" ({len(refused)} refused by the server)" if refused else ""),
            }
        )

    def undo(self, effect: Effect) -> bool:
        log.warning(
            "email %s to %s was delivered through %s and cannot be recalled; nothing undone",
            effect.ref.get("message_id"),
            ", ".join(effect.ref.get("to", [])),
            effect.ref.get("smtp_host", "SMTP"),
        )
        return False
