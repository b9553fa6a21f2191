"""Email port backend: a SendGrid Marketing Campaigns Single Send, scheduled ahead so it can be undone.

Follows the Twilio SendGrid v3 API reference (https://www.twilio.com/docs/sendgrid/api-reference):
Lists (``/v3/marketing/lists``), Contacts (``PUT /v3/marketing/contacts``) and Single Sends
(``/v3/marketing/singlesends``, its ``/search`` and ``/{id}/schedule``). The connection (type
``http``) has host ``https://api.sendgrid.com``, the API key as password (sent as a Bearer token)
and these extras:

- ``sender_id`` (int, required): the verified sender the email comes from. SendGrid takes the
  From and Reply-To addresses from it, so ``Email.sender`` and ``Email.reply_to`` are not sent;
- ``suppression_group_id`` (int) or ``custom_unsubscribe_url``: SendGrid requires one of them
  before it schedules a Single Send. Without either, the campaign's own ``unsubscribe`` is used as
  ``custom_unsubscribe_url`` when it is an https URL (a mailto: address is not a URL SendGrid takes);
- ``public_assets_url`` (https URL): where the asset store's objects are served to the public
  (e.g. a CDN in front of the ``campaign_assets`` bucket): the banner is ``<public_assets_url>/images/<file>``;
- ``send_delay_seconds`` (default 900): the undo window between scheduling and sending (0 sends
  at once, leaving no window: undo then always reports the email as sent).

**Content.** The Single Send carries the same text and HTML as SMTP and the outbox (``domain/mail.py``):
``plain_content`` and ``html_content``, the copy escaped, the campaign's unsubscribe line visible in
both. Single Sends take no attachments (``email_config`` has no attachment field, unlike Mail Send's
``attachments`` with ``content_id``), so the banner cannot travel inline by Content-ID as it does
over SMTP; SendGrid's documented way is an ``<img>`` whose ``src`` is an https URL its recipients'
clients fetch. The asset store is private (a folder, an S3 bucket), so the public address is an
explicit connection setting, ``public_assets_url``: an email with a banner and no such setting fails
with a ConnectionConfigError naming it, never goes out without its image. Serving the images there
is the deployment's job; nothing here checks that the address answers.

SendGrid adds its own ``List-Unsubscribe`` header from the suppression group or custom URL; the visible
line in the copy is the campaign's ``unsubscribe``. One Single Send reaches each contact of its list
as their own message, so this backend takes the whole recipient list as one batch (``batches = False``).

``send`` makes a contact list named after the email's key, upserts the recipients into it, creates
a Single Send of the same name for that list and schedules it ``send_delay_seconds`` ahead. Each
step looks the named object up first and adopts it, so a retried task never creates a second list
or Single Send, nor schedules one twice. Contact import is asynchronous at SendGrid: the upsert
answers 202 with a ``job_id`` and the contacts join the list moments later; the send delay leaves
SendGrid far more time than that before the list is read.

``undo`` finds the Single Send by name (the planned effect is enough). Until its send time it is
unscheduled, deleted, and its list deleted (the contacts are kept: they may be in other lists).
Once SendGrid has triggered it, or its send time has passed, the email is out: undo raises a
non-retryable :class:`ServiceError` so compensation reports it as left, never as undone.

Errors: SendGrid answers ``{"errors": [{"field": ..., "message": ...}]}``; 400/401/403/404 fail at
once with those messages; 429 and 5xx are retryable, waiting for ``Retry-After`` when sent, else
until ``X-RateLimit-Reset`` (a Unix time: SendGrid's documented rate-limit header).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.http_api import OK, HttpApi, retry_after_seconds
from include.orchestrator.domain.mail import html_body, one_line, text_body
from include.orchestrator.domain.ports import Effect, Email
from include.orchestrator.errors import ConnectionConfigError, IrrevocableServiceError

log = logging.getLogger(__name__)

SERVICE = "sendgrid"
NAME_MAX = 100  # Single Send and list names: 1 to 100 characters
LISTS_PAGE = 1000  # GET /v3/marketing/lists: page_size at most 1000
SEARCH_PAGE = 100
SENT = ("triggered",)  # Single Send statuses: draft, scheduled, triggered


def single_send_name(key: str) -> str:
    """The Single Send's and its list's name: the key, or a digest-suffixed cut when it is too long."""
    if len(key) <= NAME_MAX:
        return key
    return f"{key[: NAME_MAX - 13]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def describe(response: Any) -> str:
    """SendGrid's error messages, ``field: message`` joined."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if not isinstance(errors, list) or not errors:
        return (response.text or response.reason or "").strip()[:500]
    parts = [
        f"{e['field']}: {e.get('message')}" if e.get("field") else str(e.get("message")) for e in errors if isinstance(e, dict)
    ]
    return "; ".join(parts)[:500]


def rate_limit_wait(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` if sent, else until ``X-RateLimit-Reset`` (Unix time)."""
    wait = retry_after_seconds(headers.get("Retry-After"))
    if wait is not None:
        return wait
    reset = (headers.get("X-RateLimit-Reset") or "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - (time.time() if now is None else now))
    return None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # the documented yyyy-MM-ddTHH:mm:ssZ


def parse_time(value: str | None) -> datetime | None:
    if not value or value == "now":
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class SendGridEmail(MakesEffects):
    """Email port: a Single Send to a list of the recipients, scheduled ``send_delay_seconds`` ahead."""

    service = SERVICE  # calls go through this service's circuit breaker (breakers.Guarded)

    port, backend, kind = "email", "sendgrid", "sendgrid_single_send"
    batches = False  # a Single Send reaches each contact of its list as their own message: one per campaign
    adopts = True  # a retry finds the list and the Single Send by name: sending again never sends twice

    def __init__(self, conn_id: str, conn: Any) -> None:
        self.conn_id, self.conn = conn_id, conn
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)  # tests move it

    # --- settings ------------------------------------------------------------------------------
    @cached_property
    def api(self) -> HttpApi:  # built at call time: no connection work at import or in __init__
        return HttpApi(
            SERVICE, self.conn_id, self.conn, describe=describe, wait=lambda response: rate_limit_wait(response.headers)
        )

    def _int_setting(self, name: str, *, required: bool = False, default: int | None = None) -> int | None:
        value = self.api.setting(name, default, required=required)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not str(value).strip().isdigit():
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}): the extra {name!r} must be a whole number, got {value!r}"
            )
        return int(value)

    def _email_settings(self, email: Email) -> dict[str, Any]:
        sender_id = self._int_setting("sender_id", required=True)
        group = self._int_setting("suppression_group_id")
        campaign_url = email.unsubscribe if email.unsubscribe.startswith("https://") else ""
        url = self.api.setting("custom_unsubscribe_url") or campaign_url
        if group is None and not url:
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}) needs the extra 'suppression_group_id' or 'custom_unsubscribe_url' "
                f"(the campaign's unsubscribe {email.unsubscribe!r} is not an https URL): "
                "SendGrid schedules no Single Send without a way to unsubscribe"
            )
        unsubscribe = {"suppression_group_id": group} if group is not None else {"custom_unsubscribe_url": str(url)}
        return {"sender_id": sender_id, **unsubscribe}

    def banner_url(self, email: Email) -> str | None:
        """The banner's public https address (``public_assets_url``), or None for an email without a banner."""
        if email.banner is None:
            return None
        base = str(self.api.setting("public_assets_url") or "").strip().rstrip("/")
        if not base.startswith("https://") or any(c in base for c in ' "<>'):
            raise ConnectionConfigError(
                f"connection {self.conn_id!r} ({SERVICE}) needs the extra 'public_assets_url', an https URL where the asset "
                f"store's images are served publicly (got {base or 'nothing'!r}): a SendGrid Single Send takes no attachments, "
                "so the email banner reaches readers only by a public address, and the email is not sent without it"
            )
        return f"{base}/images/{email.banner.url.rsplit('/', 1)[-1]}"

    # --- HTTP ------------------------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, action: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or None). Statuses in ``ok`` besides 2xx are
        answers too (a 404 when looking for what may be gone); the rest raise ServiceError."""
        response = self.api.request(method, endpoint, action, ok=(*OK, *ok), **kwargs)
        return response.status_code, self.api.decode(response, action)

    def _pages(self, method: str, endpoint: str, action: str, page_size: int, body: Any = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing, following ``_metadata.next`` (its ``page_token``)."""
        token: str | None = None
        for _ in range(1000):  # a bound, in case a server keeps answering the same page
            params = {"page_size": page_size, **({"page_token": token} if token else {})}
            _, answer = self._call(method, endpoint, action, params=params, **({"json": body} if body is not None else {}))
            yield from (answer or {}).get("result") or []
            following = ((answer or {}).get("_metadata") or {}).get("next")
            token = (parse_qs(urlsplit(following).query).get("page_token") or [None])[0] if following else None
            if not token:
                return

    def _lists_named(self, name: str) -> list[dict[str, Any]]:
        return [
            item
            for item in self._pages("GET", "/v3/marketing/lists", "find the contact list", LISTS_PAGE)
            if item.get("name") == name
        ]

    def _single_sends_named(self, name: str) -> list[dict[str, Any]]:
        # The search matches names by substring ("leading and trailing wildcard"): keep the exact name only.
        found = self._pages("POST", "/v3/marketing/singlesends/search", "find the Single Send", SEARCH_PAGE, {"name": name})
        return [item for item in found if item.get("name") == name]

    # --- the port ------------------------------------------------------------------------------
    def plan(self, email: Email) -> Effect:
        name = single_send_name(email.key)
        return self._effect(
            email.key,
            {"name": name, "to": list(email.to)},
            f"SendGrid Single Send {name!r} ({email.subject!r}) to {len(email.to)} recipient(s)",
        )

    def send(self, email: Email) -> Effect:
        effect = self.plan(email)
        name = effect.ref["name"]
        config = self._email_settings(email)
        html = html_body(email, image_src=self.banner_url(email))
        delay = self._int_setting("send_delay_seconds", default=900)

        found = next(iter(self._lists_named(name)), None)
        if found is None:
            _, found = self._call("POST", "/v3/marketing/lists", "create the contact list", json={"name": name})
        list_id = found["id"]
        _, job = self._call(
            "PUT",
            "/v3/marketing/contacts",
            "add the recipients to the list",
            json={"list_ids": [list_id], "contacts": [{"email": address} for address in email.to]},
        )
        log.info("SendGrid is importing %d contact(s) into list %s (job %s)", len(email.to), list_id, (job or {}).get("job_id"))

        single = next(iter(self._single_sends_named(name)), None)
        adopted = single is not None
        if single is None:
            body = {
                "name": name,
                "send_to": {"list_ids": [list_id]},
                "email_config": {
                    "subject": one_line(email.subject),
                    "plain_content": text_body(email),
                    "html_content": html,
                    "generate_plain_content": False,
                    **config,
                },
            }
            _, single = self._call("POST", "/v3/marketing/singlesends", "create the Single Send", json=body)
        send_at = single.get("send_at")
        if single.get("status") not in ("scheduled", *SENT):
            send_at = iso(self.now() + timedelta(seconds=delay)) if delay else "now"  # 0: no undo window at all
            _, scheduled = self._call(
                "PUT", f"/v3/marketing/singlesends/{single['id']}/schedule", "schedule the Single Send", json={"send_at": send_at}
            )
            send_at = (scheduled or {}).get("send_at") or send_at
        state = "already sent" if single.get("status") in SENT else "scheduled"
        log.info("SendGrid Single Send %s (%s) %s for %s%s", name, single["id"], state, send_at, " (adopted)" if adopted else "")
        return effect.model_copy(
            update={
                "ref": {
                    "single_send_id": single["id"],
                    "list_id": list_id,
                    "send_at": send_at,
                    "name": name,
                    "to": list(email.to),
                },
                "summary": f"SendGrid Single Send {name!r} ({email.subject!r}) to {len(email.to)} recipient(s), "
                f"{state} for {send_at}",
            }
        )

    def undo(self, effect: Effect) -> bool:
        if effect.backend != self.backend or effect.kind != self.kind:
            raise ValueError(f"{SERVICE}: cannot undo a {effect.backend} {effect.kind} effect")
        name = effect.ref["name"]
        # Every Single Send and list of that name (two tries racing could each have made one).
        singles, lists = self._single_sends_named(name), self._lists_named(name)
        for single in singles:
            send_at = parse_time(single.get("send_at"))
            due = single.get("status") == "scheduled" and send_at is not None and send_at <= self.now()
            if single.get("status") in SENT or due:
                raise IrrevocableServiceError(
                    SERVICE,
                    f"undo Single Send {name!r}",
                    f"sent at {single.get('send_at') or 'an unknown time'} (status {single.get('status')}): "
                    "a delivered email cannot be recalled",
                )
        for single in singles:
            sid = single["id"]
            if single.get("status") == "scheduled":
                self._call("DELETE", f"/v3/marketing/singlesends/{sid}/schedule", "cancel the Single Send's schedule", ok=(404,))
            self._call("DELETE", f"/v3/marketing/singlesends/{sid}", "delete the Single Send", ok=(404,))
        for item in lists:  # the contacts stay: they may belong to other lists
            self._call(
                "DELETE",
                f"/v3/marketing/lists/{item['id']}",
                "delete the contact list",
                params={"delete_contacts": "false"},
                ok=(404,),
            )
        log.info("SendGrid: %s Single Send %s and its list", "removed" if singles or lists else "nothing left of", name)
        return bool(singles or lists)
