"""One contract for every backend, each case run against every backend it applies to.

Every backend of a port that changes the world promises the same things (``domain/ports.py``,
``backends/common/http_api.py``, ``errors.py``):

- ``plan`` names the effect the call will make, the same each time, without any I/O: the service's
  double receives no request and nothing appears on disk;
- ``undo`` removes what the effect names; a second ``undo`` is a no-op answering False and leaving the
  world as the first left it; it works from the planned entry alone (the task died before recording
  the made effect), with a fresh backend (compensation opens it again); undoing what was never made
  answers False and changes nothing;
- a service's trouble is :class:`Retryable`: 429 with ``Retry-After`` in either form of RFC 9110
  (delta-seconds, HTTP-date) carries the wait asked for; 5xx is retryable (with the wait of a
  ``Retry-After`` it sends) and the next try succeeds; a service sending its answer too slowly (the
  headers at once, then one byte at a time, so no single read times out) runs into the call's total
  deadline; a refused connection is retryable. The client never retries by itself (the double sees
  one request), a failed call made nothing, and no error shows the token. The read-only ports that
  call a service (the LLM writer, Notion notes, the web page fetch) share these cases.

Each backend comes with a small harness (below): how to build it against its test double (a real
local HTTP server at the network boundary, ``tests/doubles``; a cloud backend with its builders in
``tests/builders/``, which its own tests use too) or on ``tmp_path``, its one changing
call, what its world looks like (``state``), where to inject a fault. A case a backend does not have
is named in its ``lacks`` table with the reason; ``test_every_registered_backend_has_a_harness``
keeps the table complete as backends are added to ``backends/registry.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from werkzeug import Response

from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.cloud.buffer import BufferSocial, fingerprint
from include.orchestrator.backends.cloud.figma import FigmaDesign
from include.orchestrator.backends.cloud.github import GithubBlog, GithubReview
from include.orchestrator.backends.cloud.grafana import GrafanaApi
from include.orchestrator.backends.cloud.llm import ChatCompletionsWriter
from include.orchestrator.backends.cloud.notion import NotionNotes
from include.orchestrator.backends.cloud.sendgrid import SendGridEmail
from include.orchestrator.backends.cloud.slack import SlackNotifier
from include.orchestrator.backends.cloud.smtp_email import SmtpEmail
from include.orchestrator.backends.local.dashboards import GrafanaFolder
from include.orchestrator.backends.local.git_repo import GitBlog, GitReview, list_branches, read_file
from include.orchestrator.backends.local.images import PillowDesign
from include.orchestrator.backends.local.memory_qdrant import LocalQdrantMemory, ServerQdrantMemory
from include.orchestrator.backends.local.outbox import LocalSocialQueue, OutboxEmail, OutboxNotifier
from include.orchestrator.backends.local.web import HttpWebPages
from include.orchestrator.backends.registry import BACKENDS
from include.orchestrator.dev.smtp_server import LocalSmtpServer
from include.orchestrator.domain.dashboard import campaign_dashboard
from include.orchestrator.domain.ports import CHANGING_CALLS, BlogPost, Dashboard, Effect, ImageSpec, Message, ReviewBundle
from include.orchestrator.errors import FetchError, Retryable, ServiceError, SmtpDeliveryError
from tests.builders import buffer, figma, github, grafana, llm, memory_server, notion, sendgrid, slack
from tests.builders.ports import email
from tests.builders.smtp import smtp_connection
from tests.doubles import ServiceDouble, closed_port
from tests.doubles.buffer import BufferDouble
from tests.doubles.figma import FigmaDouble
from tests.doubles.github import GithubDouble, git_blob_sha
from tests.doubles.grafana import GrafanaDouble
from tests.doubles.notion import NotionDouble
from tests.doubles.openai_compat import OpenAICompatDouble
from tests.doubles.qdrant_server import QdrantServerDouble
from tests.doubles.sendgrid import SendGridDouble
from tests.doubles.slack import SlackDouble

pytestmark = [
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),  # the Qdrant double speaks http
    pytest.mark.filterwarnings("ignore:Failed to obtain server version"),  # qdrant-client's version check thread
]

# Reasons shared by several backends for lacking a case.
READ_ONLY = "a read-only port: it changes nothing, so there is nothing to plan or undo"
NO_NETWORK = "no network: it works on a local folder or repository, so no service can answer 429/5xx, hang or refuse"
LOCAL_UNDO = "its undo removes a file in the asset store: it calls no service"
SMTP_STATUSES = "SMTP has no HTTP statuses or Retry-After: its own reply codes are judged by smtp_email._retryable"
DELIVERED = "SMTP delivers at once: a delivered email cannot be recalled, so undo is always False (effect.undoable is False)"
UNDO_CASES = ("undo_twice", "undo_from_the_planned_entry", "undo_when_never_made", "undo_that_hits_a_5xx")
NETWORK_CASES = ("429_retry_after_seconds", "429_retry_after_date", "5xx", "timeout", "refused_connection")
CASES = ("plan_without_io", *UNDO_CASES, *NETWORK_CASES)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, but lock files (taken by a read as well)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- the harnesses ------------------------------------------------------------------------------


class Harness:
    """How the contract meets one backend. ``double`` is the started double (None for a local backend)."""

    name: ClassVar[str]
    registry: ClassVar[tuple[str, str]]  # (port, connection type) of backends.registry.BACKENDS
    double_type: ClassVar[type[ServiceDouble] | None] = None
    shared: ClassVar[bool] = False  # the double forgets its state in reset(): one server serves the module
    lacks: ClassVar[dict[str, str]] = {}  # case -> why this backend has no such case
    # What the plan must name, when the service's tests pinned it, and the keys the made ref repeats from it.
    planned_ref: ClassVar[dict[str, Any] | None] = None
    kept: ClassVar[tuple[str, ...]] = ()
    plan_is_made: ClassVar[bool] = False  # the made effect is exactly the planned one
    refused_text: ClassVar[str] = "connection failed"
    first: ClassVar[tuple[str, str]] = ("", "")  # the call's first request (method, path regex): faults go there
    undo_request: ClassVar[tuple[str, str]] = ("", "")  # a request every undo of a made effect sends
    error_body: ClassVar[dict[str, Any]] = {"message": "Too many requests"}  # the service's words in a 429
    error_text: ClassVar[str] = "Too many requests"  # what of them the error must repeat
    server_error_text: ClassVar[str] = "Internal server error"  # and of a 500's
    timeout: ClassVar[float] = 0.3
    content_type: ClassVar[str] = "application/json"  # of an answer that trickles
    secret: ClassVar[str] = "test-token"
    args: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, double: Any, tmp_path: Path, stack: ExitStack) -> None:
        self.double, self.tmp_path, self.stack = double, tmp_path, stack  # stack: what setup opens, closed after the test

    def setup(self) -> None:
        """The world a test starts from (a Figma file, a Notion data source)."""

    def backend(self, url: str | None = None, **extra: Any) -> Any:
        """The backend against its double (or ``url``: a closed port), with connection extras."""
        raise NotImplementedError

    def call(self, backend: Any) -> Any:
        """The port's one changing call (``ports.CHANGING_CALLS``; a read-only port's read); returns the effect."""
        return made_effect(getattr(backend, CHANGING_CALLS[self.registry[0]])(*self.arguments()))

    def plan(self, backend: Any) -> Effect:
        return backend.plan(*self.arguments())

    def arguments(self) -> tuple[Any, ...]:
        """The changing call's arguments (the plan takes the same)."""
        return self.args

    def state(self) -> Any:
        """What the backend's effects change, as plain data: compared before and after an undo."""
        raise NotImplementedError

    def undone(self, retried: bool = False) -> None:
        """Assert the world is as an undo of the effect leaves it (``retried``: by a second try of the undo)."""
        raise NotImplementedError

    def add_foreign(self) -> None:
        """Something that is not ours, which an undo must leave alone (where the service's tests had one)."""

    def never_made(self) -> None:
        """What else an undo of an effect never made must not have done."""

    @property
    def url(self) -> str:
        return self.double.url


def made_effect(result: Any) -> Effect:
    return result[1] if isinstance(result, tuple) else result  # design: (Image, Effect)


class SendGrid(Harness):
    name, registry, double_type, shared = "sendgrid", ("email", "http"), SendGridDouble, True
    args = (sendgrid.EMAIL,)
    planned_ref = {"name": sendgrid.EMAIL.key, "to": sendgrid.EMAIL.to}
    kept = ("name", "to")
    first = ("GET", "/v3/marketing/lists")
    undo_request = ("DELETE", r"/v3/marketing/lists/[^/]+")

    def backend(self, url: str | None = None, **extra: Any) -> SendGridEmail:
        return sendgrid.backend(url or self.double, **extra)

    def state(self) -> Any:
        return self.double.single_sends(), self.double.lists(), self.double.contacts()

    def undone(self, retried: bool = False) -> None:
        assert self.double.single_sends() == [] and self.double.lists() == []
        assert set(self.double.contacts()) == set(sendgrid.EMAIL.to)  # delete_contacts=false: the people stay
        assert self.double.count("DELETE", r"/v3/marketing/singlesends/[^/]+/schedule") == 1  # cancelled, then deleted


class Buffer(Harness):
    name, registry, double_type, shared = "buffer", ("social", "http"), BufferDouble, True
    args = (buffer.POST,)
    planned_ref = {
        "profiles": [
            {"profile": "pipewise-x", "channel_id": "chan-x"},
            {"profile": "pipewise-linkedin", "channel_id": "chan-li"},
        ],
        "key": buffer.POST.key,
        "text_sha256": fingerprint(buffer.POST.text),
    }
    kept = ("text_sha256",)
    first = undo_request = ("POST", "/")  # GraphQL: every request is a POST to /
    error_body = {"message": "Too many requests", "code": "RATE_LIMIT_EXCEEDED"}

    def backend(self, url: str | None = None, **extra: Any) -> BufferSocial:
        return buffer.backend(url or self.double, **extra)

    def state(self) -> Any:
        return self.double.posts()

    def undone(self, retried: bool = False) -> None:
        assert self.double.posts() == []


class Figma(Harness):
    name, registry, double_type, shared = "figma", ("design", "http"), FigmaDouble, True
    args = (figma.spec(),)
    kept = ("url",)
    first = ("GET", r"/v1/files/.*/components")
    error_body = {"err": "Rate limit exceeded"}
    error_text = "Rate limit exceeded"
    lacks = {"undo_that_hits_a_5xx": LOCAL_UNDO}

    @property
    def folder(self) -> Path:
        return self.tmp_path / "assets"

    @property
    def png(self) -> Path:
        return self.folder / "images" / f"{figma.spec().key}.png"

    @property
    def planned_ref(self) -> dict[str, Any]:  # type: ignore[override]
        return {"url": self.png.resolve().as_uri()}

    def setup(self) -> None:
        self.double.add_file(figma.FILE_KEY, figma.COMPONENTS, unpublished={"Draft card": (10, 10, "#000000")})

    def backend(self, url: str | None = None, **extra: Any) -> FigmaDesign:
        return FigmaDesign("campaign_design", figma.conn(url or self.url, **extra), figma.store(self.folder))

    def state(self) -> Any:
        return files(self.folder)

    def undone(self, retried: bool = False) -> None:
        assert not self.png.exists()

    def never_made(self) -> None:
        assert self.double.calls == []


class GithubReviewHarness(Harness):
    name, registry, double_type = "github-review", ("review", "github"), GithubDouble
    planned_ref = {"repository": "acme/campaigns", "branch": github.BRANCH}
    kept = ("repository", "branch")
    first = ("GET", "/api/v3/repos/acme/campaigns")
    undo_request = ("PATCH", r".*/pulls/\d+")
    timeout = 1  # PyGithub takes whole seconds

    def bundle(self) -> ReviewBundle:
        return github.bundle(self.tmp_path)

    def backend(self, url: str | None = None, **extra: Any) -> GithubReview:
        return GithubReview("campaign_review", github.github_conn(url + "/api/v3" if url else self.url, **extra))

    def arguments(self) -> tuple[Any, ...]:
        return (self.bundle(),)

    def state(self) -> Any:
        return self.double.branches(), self.double.pulls()

    def undone(self, retried: bool = False) -> None:
        assert self.double.open_pulls() == [] and self.double.branches() == ["main"]
        assert [p["state"] for p in self.double.pulls()] == ["closed"]
        closes = self.double.count("PATCH", r".*/pulls/1")
        assert closes == (2 if retried else 1)  # closed once (a retried undo: its 5xx, then once)

    def never_made(self) -> None:
        assert github.writes(self.double) == [("DELETE", f"/api/v3/repos/acme/campaigns/git/refs/heads/{github.BRANCH}")]


class GithubBlogHarness(Harness):
    name, registry, double_type = "github-blog", ("blog", "github"), GithubDouble
    args = (github.POST,)
    planned_ref = {
        "repository": "acme/campaigns",
        "branch": "main",
        "path": github.POST.path,
        "blob_sha": git_blob_sha(github.POST.markdown.encode()),
    }
    kept = ("repository", "branch", "path", "blob_sha")
    first = ("GET", r".*/git/ref/heads/main")
    undo_request = ("PATCH", r".*/git/refs/heads/main")
    timeout = 1  # PyGithub takes whole seconds

    def backend(self, url: str | None = None, **extra: Any) -> GithubBlog:
        host = url + "/api/v3" if url else self.url
        return GithubBlog("campaign_blog", github.github_conn(host, conn_id="campaign_blog", **{"branch": "main", **extra}))

    def state(self) -> Any:
        return self.double.files("main"), [c["message"] for c in self.double.commits("main")]

    def undone(self, retried: bool = False) -> None:
        assert github.POST.path not in self.double.files("main")
        assert self.double.commits("main")[0]["message"] == f"Unpublish {github.POST.path} ({github.POST.key})"


class Grafana(Harness):
    name, registry, double_type = "grafana", ("analytics", "http"), GrafanaDouble
    args = (grafana.dashboard(),)
    planned_ref = {"uid": grafana.UID, "folder_uid": "campaigns"}
    kept = ("uid", "folder_uid")
    first = ("GET", grafana.BY_UID)
    undo_request = ("DELETE", grafana.BY_UID)

    def backend(self, url: str | None = None, **extra: Any) -> GrafanaApi:
        return GrafanaApi("grafana_test", grafana.conn(url or self.url, **extra))

    def state(self) -> Any:
        return self.double.dashboards()

    def undone(self, retried: bool = False) -> None:
        assert self.double.dashboards() == {}

    def add_foreign(self) -> None:
        self.double.add_dashboard("another-run", "Campaign Spring Launch 2027 (other)")


class Slack(Harness):
    name, registry, double_type = "slack", ("notify", "slack"), SlackDouble
    args = (slack.message(),)
    planned_ref = {"channel": slack.CHANNEL, "key": slack.message().key}
    kept = ("channel", "key")
    first = ("POST", slack.HISTORY)
    undo_request = ("POST", slack.DELETE)
    error_body = {"error": "ratelimited"}
    error_text = "ratelimited"
    secret = "xoxb-test-token"

    def backend(self, url: str | None = None, **extra: Any) -> SlackNotifier:
        if url is None:
            return slack.notifier(self.double, **extra)
        return SlackNotifier("slack_test", slack.conn(base_url=f"{url}/api/", **extra))

    def state(self) -> Any:
        return self.double.live_messages(), self.double.deleted_messages()

    def undone(self, retried: bool = False) -> None:
        assert self.double.live_messages() == [] and len(self.double.deleted_messages()) == 1

    def never_made(self) -> None:
        assert self.double.count("POST", slack.DELETE) == 0


class QdrantServer(Harness):
    name, registry = "qdrant-server", ("memory", "qdrant")
    plan_is_made = True
    first = ("GET", memory_server.EXISTS)
    undo_request = ("POST", r"/collections/campaign_memory/points/delete")
    args = ("research", "pricing", "Prices fell.", {"campaign": "spring"})

    @staticmethod
    def double_type() -> QdrantServerDouble:  # type: ignore[override]
        return QdrantServerDouble(api_key=memory_server.KEY)

    def backend(self, url: str | None = None, **extra: Any) -> ServerQdrantMemory:
        return ServerQdrantMemory("campaign_memory", memory_server.connection(url or self.url, **extra))

    def state(self) -> Any:
        return self.double.point_keys() if self.double.collections() else None

    def undone(self, retried: bool = False) -> None:
        assert self.double.points() == []

    def add_foreign(self) -> None:
        self.backend().remember("research", "another", "Not this run's.", {})


class Llm(Harness):
    name, registry = "llm", ("writer", "http")
    lacks = dict.fromkeys(("plan_without_io", *UNDO_CASES), READ_ONLY)
    first = ("POST", llm.CHAT)
    error_body = {"message": "Rate limit reached for gpt-4o-mini", "code": "rate_limit_exceeded"}
    error_text = "Rate limit reached"

    @staticmethod
    def double_type() -> OpenAICompatDouble:  # type: ignore[override]
        return OpenAICompatDouble(api_key=llm.KEY)

    def backend(self, url: str | None = None, **extra: Any) -> ChatCompletionsWriter:
        return ChatCompletionsWriter("campaign_writer", llm.connection(f"{url}/v1" if url else self.double.base_url, **extra))

    def call(self, backend: ChatCompletionsWriter) -> Any:
        return backend.write(llm.brief())

    def state(self) -> Any:
        return None  # it reads: nothing to compare


class Notion(Harness):
    name, registry, double_type, shared = "notion", ("notes", "http"), NotionDouble, True
    lacks = dict.fromkeys(("plan_without_io", *UNDO_CASES), READ_ONLY)
    first = ("GET", r"/v1/data_sources/[^/]+")
    error_body = {"code": "rate_limited", "message": "You have been rate limited."}
    error_text = "rate_limited"
    server_error_text = "internal_server_error: Internal server error"  # Notion's code, then its message
    source = "0" * 32

    def setup(self) -> None:
        self.source = self.double.add_data_source()
        self.double.add_page(self.source, "Observability buyers survey", ["Buyers want one page."])

    def backend(self, url: str | None = None, **extra: Any) -> NotionNotes:
        return NotionNotes("campaign_notes", notion.conn(url or self.url, self.source, **extra))

    def call(self, backend: NotionNotes) -> Any:
        found = backend.search("observability", limit=5)
        assert [n.title for n in found] == ["Observability buyers survey"]
        return found

    def state(self) -> Any:
        return None  # it reads: nothing to compare


class Web(Harness):
    """Research's page fetch: any site, here a double serving one page (its trouble is the site's)."""

    name, registry = "web", ("web", "http")
    lacks = dict.fromkeys(("plan_without_io", *UNDO_CASES), READ_ONLY)
    first = ("GET", "/pricing")
    content_type = "text/html; charset=utf-8"  # a page: anything else is refused before its body is read
    error_text, server_error_text = "HTTP 429", "HTTP 500"  # a site's error page is not read
    site = ""

    @staticmethod
    def double_type() -> ServiceDouble:  # type: ignore[override]
        double = ServiceDouble(name="a competitor's site")
        page = "<html><head><title>Pricing</title></head><body><h1>Plans for every team</h1></body></html>"
        double.route("GET", "/pricing", lambda request, groups: Response(page, content_type="text/html; charset=utf-8"))
        return double

    def backend(self, url: str | None = None, **extra: Any) -> HttpWebPages:
        self.site = url or self.url  # the page's address is the call's argument, not the backend's
        return HttpWebPages("campaign_web", allow_private_network=True, **extra)

    def call(self, backend: HttpWebPages) -> Any:
        page = backend.fetch_headlines(f"{self.site}/pricing")
        assert (page.title, page.headlines) == ("Pricing", ["Plans for every team"])
        return page

    def state(self) -> Any:
        return None  # it reads: nothing to compare


# --- local backends: no service, the same plan and undo contract --------------------------------

MESSAGE = Message(key="spring-review", to=["lead@example.com"], subject="Review", text="Please look", link="http://x/y")
EMAIL = email()
SOCIAL = buffer.POST
DASHBOARD = Dashboard(
    uid="spring-3f2a", title="Spring", model=campaign_dashboard("spring-3f2a", "Spring", "spring", ["email"], ["campaign"])
)
IMAGE = ImageSpec(
    key="launch-abc123-image-email",
    channel="email",
    width=1200,
    height=400,
    headline="Pipewise 3",
    background="#0f172a",
    foreground="#f8fafc",
)
BLOG_POST = BlogPost(key="launch-abc123-blog", path="_posts/2026-11-24-launch.md", title="Launch", markdown="Hello\n")


class Local(Harness):
    """A backend on a local folder: its world is the folder's files."""

    lacks = dict.fromkeys(("undo_that_hits_a_5xx", *NETWORK_CASES), NO_NETWORK)

    backend_type: ClassVar[Any]  # built as backend_type("campaign_<port>", folder)

    @property
    def folder(self) -> Path:
        return self.tmp_path / self.name

    def backend(self, url: str | None = None, **extra: Any) -> Any:
        return self.backend_type(f"campaign_{self.registry[0]}", self.folder)

    def state(self) -> Any:
        return files(self.folder)


class OutboxNotify(Local):
    name, registry = "outbox-notify", ("notify", "fs")
    backend_type = OutboxNotifier
    args = (MESSAGE,)

    @property
    def planned_ref(self) -> dict[str, Any]:  # type: ignore[override]
        return {"path": str(self.folder / f"{MESSAGE.key}.json")}

    kept = ("path",)

    def undone(self, retried: bool = False) -> None:
        assert not (self.folder / f"{MESSAGE.key}.json").exists()


class OutboxMail(Local):
    name, registry = "outbox-email", ("email", "fs")
    backend_type = OutboxEmail
    args = (EMAIL,)
    plan_is_made = True

    def undone(self, retried: bool = False) -> None:
        assert not (self.folder / f"{EMAIL.key}.eml").exists()


class SocialQueue(Local):
    name, registry = "social-queue", ("social", "fs")
    backend_type = LocalSocialQueue
    args = (SOCIAL,)
    plan_is_made = True

    def add_foreign(self) -> None:
        LocalSocialQueue("campaign_social", self.folder).post(SOCIAL.model_copy(update={"key": "another-post"}))

    def undone(self, retried: bool = False) -> None:
        queue = self.folder / "queue.jsonl"
        assert SOCIAL.key not in [json.loads(line)["key"] for line in queue.read_text().splitlines()]


class DashboardFolder(Local):
    name, registry = "grafana-folder", ("analytics", "fs")
    backend_type = GrafanaFolder
    args = (DASHBOARD,)
    plan_is_made = True

    def undone(self, retried: bool = False) -> None:
        assert not (self.folder / f"{DASHBOARD.uid}.json").exists()


class Pillow(Local):
    name, registry = "pillow", ("design", "fs")
    args = (IMAGE,)
    kept = ("url",)

    def backend(self, url: str | None = None, **extra: Any) -> PillowDesign:
        return PillowDesign("campaign_design", AssetStore("campaign_assets", self.folder.resolve().as_uri()))

    def undone(self, retried: bool = False) -> None:
        assert not (self.folder / "images" / f"{IMAGE.key}.png").exists()


class GitReviewHarness(Local):
    name, registry = "git-review", ("review", "fs")
    backend_type = GitReview
    kept = ("branch",)

    def bundle(self) -> ReviewBundle:
        design = PillowDesign("campaign_design", AssetStore("campaign_assets", (self.tmp_path / "img").resolve().as_uri()))
        image = design.store.read_image(design.render(IMAGE)[0])
        return ReviewBundle(
            key="launch-abc123-review", campaign_slug="launch", title="Review Launch", markdown="# R\n", images=[image]
        )

    def arguments(self) -> tuple[Any, ...]:
        return (self.bundle(),)

    def state(self) -> Any:
        return list_branches(self.folder) if self.folder.exists() else None

    def undone(self, retried: bool = False) -> None:
        assert list_branches(self.folder) == ["main"]


class GitBlogHarness(Local):
    name, registry = "git-blog", ("blog", "fs")
    backend_type = GitBlog
    args = (BLOG_POST,)
    kept = ("path",)

    def state(self) -> Any:
        return read_file(self.folder, "main", BLOG_POST.path) if self.folder.exists() else None

    def undone(self, retried: bool = False) -> None:
        assert read_file(self.folder, "main", BLOG_POST.path) is None


class QdrantLocal(Local):
    name, registry = "qdrant-local", ("memory", "fs")
    backend_type = LocalQdrantMemory
    plan_is_made = True
    args = ("research", "pricing", "Prices fell.", {"campaign": "spring"})

    def state(self) -> Any:
        if not self.folder.exists():
            return None
        hits = LocalQdrantMemory("campaign_memory", self.folder).recall("research", "prices", limit=10)
        return sorted(h.key for h in hits)

    def add_foreign(self) -> None:
        LocalQdrantMemory("campaign_memory", self.folder).remember("research", "another", "Not this run's.", {})

    def undone(self, retried: bool = False) -> None:
        assert "pricing" not in (self.state() or [])


class Smtp(Harness):
    name, registry = "smtp", ("email", "smtp")
    args = (EMAIL,)
    lacks = {
        **dict.fromkeys(UNDO_CASES, DELIVERED),
        **dict.fromkeys(("429_retry_after_seconds", "429_retry_after_date", "5xx"), SMTP_STATUSES),
        "timeout": (
            "the case trickles an HTTP answer; SMTP's total deadline (and a batch whose answer never came) is tested "
            "against a scripted SMTP server in tests/backends/cloud/test_smtp_email.py"
        ),
    }

    refused_text = "retry later"

    def setup(self) -> None:
        self.server = self.stack.enter_context(LocalSmtpServer(self.tmp_path / "maildir"))
        self.env = self.stack.enter_context(pytest.MonkeyPatch.context())

    def backend(self, url: str | None = None, **extra: Any) -> SmtpEmail:
        """The SMTP hook reads its connection by id: the environment names the loopback server (or ``url``'s port)."""
        port = int(url.rsplit(":", 1)[1]) if url else self.server.port
        self.env.setenv("AIRFLOW_CONN_CAMPAIGN_EMAIL", smtp_connection(port, **extra))
        return SmtpEmail("campaign_email")

    def state(self) -> Any:
        return [m["Message-ID"] for m in self.server.messages()]


# The read-only local ports have no service and change nothing: none of the cases applies.
NOT_HERE: dict[tuple[str, str], str] = {
    ("notes", "fs"): f"{READ_ONLY}; {NO_NETWORK} (tests/backends/local/test_research.py)",
    ("writer", "generic"): f"{READ_ONLY}; {NO_NETWORK} (tests/backends/local/test_copywriter.py)",
}

HARNESSES: list[type[Harness]] = [
    SendGrid,
    Buffer,
    Figma,
    GithubReviewHarness,
    GithubBlogHarness,
    Grafana,
    Slack,
    QdrantServer,
    Llm,
    Notion,
    Web,
    OutboxNotify,
    OutboxMail,
    SocialQueue,
    DashboardFolder,
    Pillow,
    GitReviewHarness,
    GitBlogHarness,
    QdrantLocal,
    Smtp,
]


def backends(case: str) -> list[Any]:
    return [pytest.param(h, id=h.name) for h in HARNESSES if case not in h.lacks]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ServiceDouble]]:
    """The shared doubles, started once for the module (``Harness.shared``)."""
    with ExitStack() as stack:
        yield {
            h.name: stack.enter_context(h.double_type())  # type: ignore[misc]
            for h in HARNESSES
            if h.shared and h.double_type is not None
        }


@pytest.fixture
def h(request: pytest.FixtureRequest, servers: dict[str, ServiceDouble], tmp_path: Path) -> Iterator[Harness]:
    cls: type[Harness] = request.param
    with ExitStack() as stack:
        if cls.name in servers:
            double: Any = servers[cls.name]
            double.reset()
        elif cls.double_type is not None:
            double = stack.enter_context(cls.double_type())  # type: ignore[misc]
        else:
            double = None
        harness = cls(double, tmp_path, stack)
        harness.setup()
        yield harness
        if double is not None:
            assert double.problems == []  # every request our code sent was one the service's docs allow


def assert_no_secret(h: Harness, *texts: str) -> None:
    assert all(h.secret not in text for text in texts)


# --- plan and undo --------------------------------------------------------------------------------


@pytest.mark.parametrize("h", backends("plan_without_io"), indirect=True)
def test_plan_without_io(h: Harness) -> None:
    backend, arguments = h.backend(), h.arguments()
    disk = tree(h.tmp_path)
    planned = backend.plan(*arguments)
    assert backend.plan(*arguments) == planned  # deterministic
    assert tree(h.tmp_path) == disk  # nothing written
    if h.double is not None:
        assert h.double.calls == []  # nothing asked
    if h.planned_ref is not None:
        assert planned.ref == h.planned_ref
    made = h.call(backend)
    assert (planned.port, planned.conn_id, planned.backend, planned.kind, planned.key, planned.undoable) == (
        made.port,
        made.conn_id,
        made.backend,
        made.kind,
        made.key,
        made.undoable,
    )
    assert {k: made.ref[k] for k in h.kept} == {k: planned.ref[k] for k in h.kept}
    if h.plan_is_made:
        assert made == planned
    assert_no_secret(h, planned.model_dump_json(), made.model_dump_json())


@pytest.mark.parametrize("h", backends("undo_twice"), indirect=True)
def test_undo_twice(h: Harness) -> None:
    backend = h.backend()
    made = h.call(backend)
    assert made.undoable
    assert backend.undo(made) is True
    h.undone()
    after_one = h.state()
    assert backend.undo(Effect.model_validate_json(made.model_dump_json())) is False  # as read back from the ledger
    assert h.state() == after_one


@pytest.mark.parametrize("h", backends("undo_from_the_planned_entry"), indirect=True)
def test_undo_from_the_planned_entry(h: Harness) -> None:
    h.call(h.backend())  # made, but the task died before recording the made effect: the ledger has the plan
    fresh = h.backend()  # compensation opens the backend again
    assert fresh.undo(h.plan(fresh)) is True
    h.undone()
    after_one = h.state()
    assert fresh.undo(h.plan(fresh)) is False
    assert h.state() == after_one


@pytest.mark.parametrize("h", backends("undo_when_never_made"), indirect=True)
def test_undo_when_never_made(h: Harness) -> None:
    h.add_foreign()
    backend = h.backend()
    before = h.state()
    if h.double is not None:
        h.double.calls.clear()
    assert backend.undo(h.plan(backend)) is False
    assert h.state() == before
    h.never_made()


@pytest.mark.parametrize("h", backends("undo_that_hits_a_5xx"), indirect=True)
def test_undo_that_hits_a_5xx(h: Harness) -> None:
    backend = h.backend()
    made = h.call(backend)
    h.double.calls.clear()
    h.double.fail_next(*h.undo_request, 503, {"message": "Service unavailable"}, headers={"Retry-After": "5"})
    with pytest.raises(Retryable) as raised:
        backend.undo(made)
    assert isinstance(raised.value, ServiceError) and (raised.value.status, raised.value.retry_after) == (503, 5)
    assert h.double.count(*h.undo_request) == 1  # the client did not retry by itself
    assert backend.undo(made) is True  # Airflow's next try finishes the undo
    h.undone(retried=True)


# --- a service in trouble -------------------------------------------------------------------------


def failed_call(h: Harness, backend: Any | None = None, asked: int = 1) -> ServiceError:
    """The call's error, which must be retryable, show no token, and have made nothing; the double
    saw ``asked`` requests where the fault was (one: the client did not retry by itself)."""
    before = h.state() if h.double is not None else None
    with pytest.raises(Retryable) as raised:
        h.call(backend or h.backend())
    assert isinstance(raised.value, (ServiceError, SmtpDeliveryError, FetchError))
    assert_no_secret(h, str(raised.value))
    if h.double is not None:
        assert h.double.count(*h.first) == asked
        assert h.state() == before  # a failed call made nothing
    return raised.value  # type: ignore[return-value]


@pytest.mark.parametrize("h", backends("429_retry_after_seconds"), indirect=True)
def test_429_retry_after_seconds(h: Harness) -> None:
    h.double.fail_next(*h.first, 429, h.error_body, headers={"Retry-After": "17"})
    error = failed_call(h)
    assert (error.status, error.retry_after) == (429, 17) and h.error_text in str(error)
    h.call(h.backend())  # the next try succeeds


@pytest.mark.parametrize("h", backends("429_retry_after_date"), indirect=True)
def test_429_retry_after_date(h: Harness) -> None:
    when = lambda: {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)}  # noqa: E731
    h.double.fail_next(*h.first, 429, h.error_body, headers=when)
    error = failed_call(h)
    assert error.status == 429 and error.retry_after is not None and 100 < error.retry_after <= 120


@pytest.mark.parametrize("h", backends("5xx"), indirect=True)
def test_5xx(h: Harness) -> None:
    h.double.fail_next(*h.first, 500, {"message": "Internal server error"})
    error = failed_call(h)
    assert (error.status, error.retry_after) == (500, None) and h.server_error_text in str(error)
    h.double.calls.clear()
    h.double.fail_next(*h.first, 503, {"message": "Service unavailable"}, headers={"Retry-After": "5"})
    error = failed_call(h)
    assert (error.status, error.retry_after) == (503, 5)
    h.call(h.backend())  # the next try succeeds


def trickle(seconds: float, content_type: str) -> Response:
    """An answer whose headers come at once and whose body one byte every 50 ms for ``seconds``: no
    single read waits long enough for a client's per-read timeout, only the call's total deadline stops it."""

    def body() -> Iterator[bytes]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            yield b" "
            time.sleep(0.05)
        yield b"{}"

    return Response(body(), status=200, content_type=content_type)


@pytest.mark.parametrize("h", backends("timeout"), indirect=True)
def test_timeout(h: Harness) -> None:
    h.double.fail_next(*h.first, 200, trickle(h.timeout + 3, h.content_type))
    started = time.monotonic()
    error = failed_call(h, h.backend(timeout=h.timeout))
    assert f"no answer within {h.timeout:g} s from 127.0.0.1 (the total deadline" in str(error)
    assert time.monotonic() - started < h.timeout + 1.5


@pytest.mark.parametrize("h", backends("refused_connection"), indirect=True)
def test_refused_connection(h: Harness) -> None:
    offline = h.backend(f"http://127.0.0.1:{closed_port()}")
    error = failed_call(h, offline, asked=0)
    assert h.refused_text in str(error) and getattr(error, "status", None) is None
    if not {"plan_without_io", "undo_that_hits_a_5xx"} & set(h.lacks):  # its undo asks the service too
        with pytest.raises(Retryable, match="connection failed"):
            offline.undo(h.plan(offline))


# --- the table itself -----------------------------------------------------------------------------


def test_every_registered_backend_has_a_harness() -> None:
    registered = {(port, kind) for port, kinds in BACKENDS.items() for kind in kinds}
    covered = {h.registry for h in HARNESSES}
    assert covered | set(NOT_HERE) == registered and not covered & set(NOT_HERE)
    assert len({h.name for h in HARNESSES}) == len(HARNESSES)
    for h in HARNESSES:
        assert set(h.lacks) <= set(CASES), h.name
        assert all(reason.strip() for reason in h.lacks.values()), h.name
