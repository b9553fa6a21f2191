"""A SendGrid v3 API double: Marketing Campaigns lists, contacts and Single Sends, with a clock.

Checked against the Twilio SendGrid API reference (https://www.twilio.com/docs/sendgrid/api-reference):
Lists (/lists: create, get all, delete), Contacts (/contacts/add-or-update-a-contact), Single Sends
(/single-sends: create, get all, get by id, search, delete, schedule-single-send,
delete-single-send-schedule) and Rate Limits (/how-to-use-the-sendgrid-v3-api/rate-limits). Field
rules come from SendGrid's published OpenAPI definitions (tsg_mc_lists_v3, tsg_mc_contacts_v3,
tsg_mc_singlesends_v3).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.doubles import ServiceDouble, json_body, json_response

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SEND_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")  # ISO 8601, yyyy-MM-ddTHH:mm:ssZ
EMAIL_CONFIG = {
    "subject": str,
    "html_content": str,
    "plain_content": str,
    "generate_plain_content": bool,
    "design_id": str,
    "editor": str,
    "suppression_group_id": int,
    "custom_unsubscribe_url": str,
    "sender_id": int,
    "ip_pool": str,
}
STATUSES = ("draft", "scheduled", "triggered")
CONTENT_MAX = 1024 * 1024  # "html_content exceeds the 1MB limit" (and plain_content), SendGrid's documented 400
IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SendGridDouble(ServiceDouble):
    """Stateful SendGrid Marketing Campaigns: lists, contacts, Single Sends (draft -> scheduled -> triggered).

    Every call needs ``Authorization: Bearer <token>`` (else 401 ``authorization required``); JSON
    bodies are checked field by field (required fields, types, enums, lengths, ``send_at`` format and
    future, list ids that exist, unknown fields refused); errors use SendGrid's shape
    ``{"errors": [{"field", "message"}]}``. Scheduling checks what SendGrid needs before it sends:
    a subject, content, a ``sender_id``, a ``suppression_group_id`` or ``custom_unsubscribe_url``
    and recipients (``send_to``). Contact import is immediate here (asynchronous at SendGrid).
    ``html_content`` and ``plain_content`` over 1 MB are refused (SendGrid's documented 400); an ``<img>``
    whose source is not an absolute http(s) URL (``cid:``, ``data:``) is recorded as a problem: a Single
    Send has no attachments, so SendGrid takes such HTML and the reader sees a broken image.

    The double has its own clock (starting at the real time): ``advance(seconds)`` moves it, and every
    scheduled Single Send whose ``send_at`` has come becomes ``triggered`` (sent).

    Inspection helpers for tests: ``single_sends()`` (every Single Send), ``scheduled()`` (those
    waiting to go out), ``sent()`` (triggered ones), ``lists()`` (contact lists with their member
    emails), ``contacts()`` (email -> list ids; deleting a list keeps its contacts), ``reset()``.
    """

    def __init__(self, token: str = "test-token", page_size_cap: int | None = None) -> None:
        self.token = token
        self.page_size_cap = page_size_cap  # a smaller page than asked, to exercise paging
        self._offset = timedelta(0)
        self._lists: dict[str, dict[str, Any]] = {}
        self._contacts: dict[str, set[str]] = {}
        self._sends: dict[str, dict[str, Any]] = {}
        super().__init__(name="SendGrid")

    # --- clock and inspection ----------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock; scheduled Single Sends whose time has come are sent (``triggered``)."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
            self._tick()

    def _clear(self) -> None:
        """Forget all state; the clock is real time again."""
        self._offset = timedelta(0)
        self._lists.clear()
        self._contacts.clear()
        self._sends.clear()

    def _tick(self) -> None:
        for send in self._sends.values():
            if send["status"] == "scheduled" and datetime.fromisoformat(send["send_at"].replace("Z", "+00:00")) <= self.now():
                send["status"] = "triggered"

    def single_sends(self) -> list[dict[str, Any]]:
        with self._lock:
            self._tick()
            return [dict(s) for s in self._sends.values()]

    def scheduled(self) -> list[dict[str, Any]]:
        return [s for s in self.single_sends() if s["status"] == "scheduled"]

    def sent(self) -> list[dict[str, Any]]:
        return [s for s in self.single_sends() if s["status"] == "triggered"]

    def lists(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {**item, "emails": sorted(e for e, ids in self._contacts.items() if item["id"] in ids)}
                for item in self._lists.values()
            ]

    def contacts(self) -> dict[str, set[str]]:
        with self._lock:
            return {email: set(ids) for email, ids in self._contacts.items()}

    # --- shapes ----------------------------------------------------------------------------------
    def error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        if isinstance(body, dict) and "errors" not in body:
            body = {"errors": [{"field": body.get("field"), "message": body.get("message", "error")}]}
        return json_response(body, status, headers)

    def _bad(self, field: str | None, message: str, status: int = 400) -> Exception:
        return self.refuse(f"{field or 'request'}: {message}", self.error(status, {"field": field, "message": message}))

    def routes(self) -> None:
        self.route("POST", r"/v3/marketing/lists", self._create_list)
        self.route("GET", r"/v3/marketing/lists", self._get_lists)
        self.route("DELETE", r"/v3/marketing/lists/(?P<id>[^/]+)", self._delete_list)
        self.route("PUT", r"/v3/marketing/contacts", self._upsert_contacts)
        self.route("POST", r"/v3/marketing/singlesends", self._create_send)
        self.route("GET", r"/v3/marketing/singlesends", self._get_sends)
        self.route("POST", r"/v3/marketing/singlesends/search", self._search_sends)
        self.route("GET", r"/v3/marketing/singlesends/(?P<id>[^/]+)", self._get_send)
        self.route("DELETE", r"/v3/marketing/singlesends/(?P<id>[^/]+)", self._delete_send)
        self.route("PUT", r"/v3/marketing/singlesends/(?P<id>[^/]+)/schedule", self._schedule)
        self.route("DELETE", r"/v3/marketing/singlesends/(?P<id>[^/]+)/schedule", self._unschedule)

    def _auth(self, request: Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise self._bad(None, "authorization required", 401)
        self._tick()

    def _body(self, request: Request) -> dict[str, Any]:
        body = json_body(self, request)
        if not isinstance(body, dict):
            raise self._bad(None, "the request body must be a JSON object")
        return body

    def _page(self, request: Request, items: list[dict[str, Any]], path: str, maximum: int) -> Response:
        raw = request.args.get("page_size", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= maximum:
            raise self._bad("page_size", f"page_size must be an integer from 1 to {maximum}")
        size = min(int(raw), self.page_size_cap or int(raw))
        token = request.args.get("page_token") or "0"
        if not token.isdigit():
            raise self._bad("page_token", "invalid page_token")
        start = int(token)
        metadata: dict[str, Any] = {"self": f"{self.url}{path}?page_size={raw}&page_token={token}", "count": len(items)}
        if start + size < len(items):
            metadata["next"] = f"https://api.sendgrid.com{path}?page_size={raw}&page_token={start + size}"
        return json_response({"result": items[start : start + size], "_metadata": metadata})

    # --- lists and contacts ----------------------------------------------------------------------
    def _list_view(self, item: dict[str, Any]) -> dict[str, Any]:
        count = sum(1 for ids in self._contacts.values() if item["id"] in ids)
        link = f"https://api.sendgrid.com/v3/marketing/lists/{item['id']}"
        return {**item, "contact_count": count, "_metadata": {"self": link}}

    def _create_list(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        body = self._body(request)
        name = body.get("name")
        if set(body) - {"name"}:
            raise self._bad(None, f"unknown fields {sorted(set(body) - {'name'})}")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise self._bad("name", "name is required: a string of 1 to 100 characters")
        item = {"id": str(uuid.uuid4()), "name": name}
        self._lists[item["id"]] = item
        return json_response(self._list_view(item), 201)

    def _get_lists(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        return self._page(request, [self._list_view(i) for i in self._lists.values()], "/v3/marketing/lists", 1000)

    def _delete_list(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        flag = request.args.get("delete_contacts", "false")
        if flag not in ("true", "false"):
            raise self._bad("delete_contacts", "delete_contacts must be true or false")
        if self._lists.pop(groups["id"], None) is None:
            return self.error(404, {"field": "id", "message": "list not found"})  # a valid question: not a problem
        for email, ids in list(self._contacts.items()):
            ids.discard(groups["id"])
            if flag == "true":
                del self._contacts[email]
        return json_response({"job_id": str(uuid.uuid4())}, 202) if flag == "true" else Response(status=204)

    def _upsert_contacts(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        body = self._body(request)
        list_ids, contacts = body.get("list_ids", []), body.get("contacts")
        if not isinstance(list_ids, list) or not all(isinstance(i, str) for i in list_ids):
            raise self._bad("list_ids", "list_ids must be an array of list id strings")
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= 30000:
            raise self._bad("contacts", "contacts is required: an array of 1 to 30000 contacts")
        for i, contact in enumerate(contacts):
            if not isinstance(contact, dict) or not isinstance(contact.get("email"), str) or not EMAIL.match(contact["email"]):
                raise self._bad(f"contacts[{i}].email", "each contact needs a valid email")
        missing = [i for i in list_ids if i not in self._lists]
        if missing:
            return self.error(404, {"field": "list_ids", "message": f"list ids do not exist: {missing}"})
        for contact in contacts:
            self._contacts.setdefault(contact["email"].lower(), set()).update(list_ids)
        return json_response({"job_id": str(uuid.uuid4())}, 202)

    # --- single sends ------------------------------------------------------------------------------
    def _check_send(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"name", "categories", "send_at", "send_to", "email_config"}
        if unknown:
            raise self._bad(None, f"unknown fields {sorted(unknown)}")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise self._bad("name", "name is required: a string of 1 to 100 characters")
        categories = body.get("categories", [])
        if not isinstance(categories, list) or len(categories) > 10 or not all(isinstance(c, str) for c in categories):
            raise self._bad("categories", "categories: at most 10 strings")
        send_at = body.get("send_at")
        if send_at is not None and (not isinstance(send_at, str) or not SEND_AT.match(send_at)):
            raise self._bad("send_at", "send_at must be an ISO 8601 date-time (now is only valid when scheduling)")
        send_to = body.get("send_to", {})
        if not isinstance(send_to, dict) or set(send_to) - {"list_ids", "segment_ids", "all"}:
            raise self._bad("send_to", "send_to takes list_ids, segment_ids and all")
        list_ids = send_to.get("list_ids", [])
        if not isinstance(list_ids, list) or len(list_ids) > 50 or not all(isinstance(i, str) for i in list_ids):
            raise self._bad("send_to.list_ids", "list_ids: at most 50 list id strings")
        if any(i not in self._lists for i in list_ids):
            raise self._bad("send_to.list_ids", "list ids do not exist")
        if "all" in send_to and not isinstance(send_to["all"], bool):
            raise self._bad("send_to.all", "all must be a boolean")
        config = body.get("email_config", {})
        if not isinstance(config, dict):
            raise self._bad("email_config", "email_config must be an object")
        for key, value in config.items():
            kind = EMAIL_CONFIG.get(key)
            if kind is None:
                raise self._bad(f"email_config.{key}", "unknown field")
            nullable = key in ("suppression_group_id", "custom_unsubscribe_url", "sender_id", "ip_pool")
            if not (value is None and nullable) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise self._bad(f"email_config.{key}", f"must be {kind.__name__}{' or null' if nullable else ''}")
        if config.get("editor", "code") not in ("code", "design"):
            raise self._bad("email_config.editor", "editor must be code or design")
        url = config.get("custom_unsubscribe_url")
        if url is not None and not re.match(r"^https?://[^\s]+$", url):
            raise self._bad("email_config.custom_unsubscribe_url", "must be a URI")
        for field in ("html_content", "plain_content"):
            if len(str(config.get(field) or "").encode()) > CONTENT_MAX:
                raise self._bad(f"email_config.{field}", f"{field} exceeds the 1MB limit")
        self._check_images(str(config.get("html_content") or ""))

    def _check_images(self, html: str) -> None:
        """A Single Send has no attachments (email_config has no field for one), so every image of its HTML is
        fetched by the reader's client from an absolute http(s) URL; a cid: or data: source shows as a broken image.
        SendGrid accepts such HTML all the same, so this is a problem, not a refusal."""
        for src in IMG_SRC.findall(html):
            if not re.match(r"^https?://[^\s]+$", src):
                self.problems.append(
                    f"POST /v3/marketing/singlesends: email_config.html_content: image source {src!r} "
                    "is not an absolute URL a Single Send can carry (no attachments, so no cid:)"
                )

    def _full(self, send: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in send.items() if not k.startswith("_")}

    def _short(self, send: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "name", "status", "categories", "send_at", "is_abtest", "abtest", "updated_at", "created_at")
        return {k: send.get(k) for k in keys}

    def _create_send(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        body = self._body(request)
        self._check_send(body)
        now = _iso(self.now())
        config = {
            "generate_plain_content": True,
            "editor": "code",
            "suppression_group_id": None,
            "custom_unsubscribe_url": None,
            "sender_id": None,
            "ip_pool": None,
            **body.get("email_config", {}),
        }
        send = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "status": "draft",
            "categories": body.get("categories", []),
            "send_at": body.get("send_at"),
            "send_to": {"list_ids": [], "segment_ids": [], "all": False, **body.get("send_to", {})},
            "email_config": config,
            "is_abtest": False,
            "abtest": None,
            "created_at": now,
            "updated_at": now,
        }
        self._sends[send["id"]] = send
        return json_response(self._full(send), 201)

    def _get_sends(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        return self._page(request, [self._short(s) for s in self._sends.values()], "/v3/marketing/singlesends", 100)

    def _search_sends(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        body = self._body(request)
        if set(body) - {"name", "status", "categories"}:
            raise self._bad(None, f"unknown fields {sorted(set(body) - {'name', 'status', 'categories'})}")
        name, statuses = body.get("name"), body.get("status")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 100):
            raise self._bad("name", "name: a string of 1 to 100 characters")
        if statuses is not None and (not isinstance(statuses, list) or any(s not in STATUSES for s in statuses)):
            raise self._bad("status", f"status: an array of {', '.join(STATUSES)}")
        found = [
            s
            for s in self._sends.values()
            if (name is None or name.lower() in s["name"].lower()) and (statuses is None or s["status"] in statuses)
        ]
        return self._page(request, [self._short(s) for s in found], "/v3/marketing/singlesends/search", 100)

    def _send(self, groups: dict[str, str]) -> dict[str, Any] | None:
        return self._sends.get(groups["id"])

    def _get_send(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        send = self._send(groups)
        return json_response(self._full(send)) if send else self.error(404, {"field": "id", "message": "Single Send not found"})

    def _delete_send(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        if self._sends.pop(groups["id"], None) is None:
            return self.error(404, {"field": "id", "message": "Single Send not found"})
        return Response(status=204)

    def _schedule(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        body = self._body(request)
        send = self._send(groups)
        if send is None:
            return self.error(404, {"field": "id", "message": "Single Send not found"})
        if set(body) != {"send_at"}:
            raise self._bad("send_at", 'the body is {"send_at": ...} and send_at is required')
        send_at = body["send_at"]
        if send_at != "now" and (not isinstance(send_at, str) or not SEND_AT.match(send_at)):
            raise self._bad("send_at", "send_at must be 'now' or an ISO 8601 date-time (yyyy-MM-ddTHH:mm:ssZ)")
        if send_at != "now" and datetime.fromisoformat(send_at.replace("Z", "+00:00")) <= self.now():
            raise self._bad("send_at", "send_at must be in the future")
        if send["status"] == "triggered":
            raise self._bad("status", "this Single Send has already been sent")
        config, to = send["email_config"], send["send_to"]
        for field, ok in (
            ("email_config.sender_id", config.get("sender_id") is not None),
            (
                "email_config.suppression_group_id",
                config.get("suppression_group_id") is not None or bool(config.get("custom_unsubscribe_url")),
            ),
            ("email_config.subject", bool(config.get("subject") or config.get("design_id"))),
            ("email_config.html_content", bool(config.get("html_content") or config.get("design_id"))),
            ("send_to", bool(to.get("list_ids") or to.get("segment_ids") or to.get("all"))),
        ):
            if not ok:
                raise self._bad(field, "required before a Single Send can be scheduled")
        send["send_at"] = _iso(self.now()) if send_at == "now" else send_at
        send["status"] = "triggered" if send_at == "now" else "scheduled"
        send["updated_at"] = _iso(self.now())
        return json_response({"send_at": send["send_at"], "status": "scheduled"}, 201)

    def _unschedule(self, request: Request, groups: dict[str, str]) -> Response:
        self._auth(request)
        send = self._send(groups)
        if send is None:
            return self.error(404, {"field": "id", "message": "Single Send not found"})
        if send["status"] == "triggered":
            raise self._bad("status", "this Single Send has already been sent: its schedule cannot be cancelled")
        send["status"], send["updated_at"] = "draft", _iso(self.now())
        return json_response({"send_at": send["send_at"], "status": "draft"})
