"""Ports: the small interfaces the campaign phases use for every external capability.

A phase never knows which backend it talks to. Each port has a local backend (real parts on
this machine: Qdrant on disk, git, Pillow, SMTP, folders) and, later, production backends; the
Airflow connection configured for the port decides which one runs (see ``backends/registry.py``).

Every call that changes the world returns an :class:`Effect`: a plain record of what it created,
enough for ``undo`` to remove it later, idempotently. Records travel through XCom and the saga
ledger, so they are JSON-only and never carry secrets.

Each such call has a twin, ``plan``, taking the same arguments and touching nothing: the effect
the call is about to make, named by its idempotency key. The saga ledger writes it down before
the call (``saga/recorder.py``), so that a task killed between making an effect and recording it still
leaves a record from which ``undo`` can find it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from include.orchestrator.domain.model import MultiLine, SingleLine


class Effect(BaseModel):
    """A side effect already made, described well enough to undo it.

    ``kind`` names what exists now (``memory_points``, ``file``, ``git_branch``, ``git_commit``,
    ``email``, ``social_post``, ``notification``, ``dashboard``); ``ref`` holds the identifiers
    the backend needs to find it again (point ids, paths, branch names, commit shas, message ids).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: str
    conn_id: str
    backend: str
    kind: str
    key: str  # the idempotency key: the same call made twice names the same effect
    ref: dict[str, Any]
    undoable: bool = True
    summary: str = ""
    # Where a local backend made it: the disk's id (``OnDisk``); empty when every host sees it. Set
    # by the saga's recorder, so that compensation on a host without that disk never calls it absent.
    disk: str = ""


class Recollection(BaseModel):
    """One hit recalled from memory."""

    key: str
    text: str
    score: float
    payload: dict[str, Any] = Field(default_factory=dict)


class Note(BaseModel):
    """A research note (a Notion page in production, a markdown file locally)."""

    title: str
    text: str
    source: str


class PageHeadlines(BaseModel):
    """What research keeps of one competitor page."""

    url: str
    final_url: str
    status: int
    title: str
    headlines: list[str]


class CopyBrief(BaseModel):
    """Everything a copy writer gets. Research text is data, never instructions."""

    campaign_name: str
    product_description: str
    audience: str
    brand_voice: str
    channels: list[str]
    social_max_length: int = 280  # the campaign's limit for one social post
    research_headlines: list[str]
    research_notes: list[str]
    writer_notes: str = ""
    call_to_action: str = ""
    url: str = ""


class Copy(BaseModel):
    """Generated copy for every channel. Whoever makes or edits it (a writer, a reviewer), the fields
    shown on one line (a subject, a title, the headline drawn on the images) stay one line."""

    headline: SingleLine
    email_subject: SingleLine
    email_body: MultiLine
    social_posts: list[MultiLine]
    blog_title: SingleLine
    blog_body: MultiLine
    writer: SingleLine
    usage: dict[str, int] = Field(default_factory=dict)  # an LLM's token counts (prompt, completion, total)


class ImageSpec(BaseModel):
    """One image to render for a channel."""

    key: str  # deterministic name: campaign slug, run key and channel
    channel: str
    width: int
    height: int
    headline: str
    subline: str = ""
    background: str  # "#rrggbb"
    foreground: str  # "#rrggbb"
    accent: str = "#f59e0b"  # "#rrggbb", the brand accent bar


class Image(BaseModel):
    """A rendered image, stored in the asset store (``backends/assets.py``) under ``url``: tasks of a run may
    run on hosts that share no disk, so an image travels by URL, never by local path."""

    channel: str
    url: str
    width: int
    height: int
    sha256: str
    data: bytes | None = Field(default=None, exclude=True, repr=False)  # the bytes, once read; never in XCom


def checked_bytes(image: Image) -> bytes:
    """The bytes read with the image (``assets.AssetStore.read_image``), still the ones rendered."""
    if image.data is None:
        raise ValueError(f"image {image.url}: its bytes were not read from the asset store")
    if hashlib.sha256(image.data).hexdigest() != image.sha256:  # a reviewer must see what was rendered
        raise ValueError(f"image {image.url} changed since it was rendered (sha256 differs)")
    return image.data


class ReviewBundle(BaseModel):
    """What a reviewer reads: drafts and images of one run."""

    key: str  # deterministic per run: branch / folder name
    campaign_slug: str
    title: str
    markdown: str
    images: list[Image]


class Message(BaseModel):
    """A notification to people (review request, announcement)."""

    key: str
    to: list[str]
    subject: str
    text: str
    link: str = ""


class Banner(BaseModel):
    """An email's banner: the design phase's "email" image, with its bytes (``checked_bytes``), shown above the text."""

    url: str  # in the asset store (``backends/assets.py``)
    sha256: str
    width: int
    height: int
    alt: str  # what a reader without images sees: the headline
    data: bytes = Field(exclude=True, repr=False)  # never in XCom or the ledger


class Email(BaseModel):
    """One message to one batch of recipients. ``mail.py`` composes it (text, HTML, banner, headers) for every backend."""

    key: str  # idempotency key (one per batch); becomes part of the Message-ID
    sender: str
    to: list[str]  # envelope recipients only: never written into a header
    subject: str
    text: str
    unsubscribe: str  # https URL or mailto: address (``model.EmailChannel.unsubscribe``)
    reply_to: str = ""
    banner: Banner | None = None


class SocialPost(BaseModel):
    key: str
    profiles: list[str]
    text: str
    image_url: str = ""  # the post's image in the asset store


class BlogPost(BaseModel):
    key: str
    path: str  # _posts/<date>-<slug>.md
    title: str
    markdown: str
    hero: Image | None = None  # the blog channel's image, read with its bytes; committed with the post
    hero_path: str = ""  # assets/images/<date>-<slug>-hero.png (``blog_format.hero_path``)

    def files(self) -> dict[str, bytes]:
        """What the post commits, by path: its Markdown and its hero image, still the bytes rendered."""
        files = {self.path: self.markdown.encode()}
        if (self.hero is None) != (not self.hero_path) or self.hero_path == self.path:
            raise ValueError(f"post {self.key!r}: a hero image needs its own path, and a path its image")
        if self.hero is not None:
            files[self.hero_path] = checked_bytes(self.hero)
        return files


class Dashboard(BaseModel):
    uid: str
    title: str
    model: dict[str, Any]


class Undoable(Protocol):
    def undo(self, effect: Effect) -> bool:
        """Remove what ``effect`` describes; True if something was removed, False if it was
        already gone (undo is idempotent and a no-op when the step never happened). ``effect``
        may be the planned one, without what only the call's answer told (a commit id)."""

    def plan(self, *args: Any) -> Effect:
        """The effect the port's one changing call will make with these arguments, before it
        is made: deterministic, no I/O."""


# The one call per port that changes the world (the others only read).
CHANGING_CALLS: dict[str, str] = {
    "memory": "remember",
    "design": "render",
    "review": "open_review",
    "notify": "notify",
    "email": "send",
    "social": "post",
    "blog": "publish",
    "analytics": "create_dashboard",
}


class MemoryPort(Undoable, Protocol):
    def remember(self, namespace: str, key: str, text: str, payload: dict[str, Any]) -> Effect: ...
    def recall(self, namespace: str, query: str, limit: int, where: dict[str, str] | None = None) -> list[Recollection]: ...


class NotesPort(Protocol):
    def search(self, query: str, limit: int) -> list[Note]: ...


class WebPort(Protocol):
    def fetch_headlines(self, url: str) -> PageHeadlines: ...


class WriterPort(Protocol):
    def write(self, brief: CopyBrief) -> Copy: ...


class DesignPort(Undoable, Protocol):
    def render(self, spec: ImageSpec) -> tuple[Image, Effect]: ...


class ReviewPort(Undoable, Protocol):
    def open_review(self, bundle: ReviewBundle) -> Effect: ...


class NotifyPort(Undoable, Protocol):
    def notify(self, message: Message) -> Effect: ...


class EmailPort(Undoable, Protocol):
    def send(self, email: Email) -> Effect: ...


class SocialPort(Undoable, Protocol):
    def post(self, post: SocialPost) -> Effect: ...


class BlogPort(Undoable, Protocol):
    def publish(self, post: BlogPost) -> Effect: ...


class AnalyticsPort(Undoable, Protocol):
    def create_dashboard(self, dashboard: Dashboard) -> Effect: ...
