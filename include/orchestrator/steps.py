"""The work of every task: one function per step, Airflow-free, registered by name.

A step gets a :class:`StepContext` (the campaign, the run plan, its item when mapped, earlier
results, and the ports) and returns a :class:`StepOutput`: a JSON result for the next steps and
the :class:`Effect` records of everything it created, which compensation will undo. The renderer
maps each step onto one Airflow task; tests call the same functions directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any

from include.orchestrator.approval.rules import Decision, copy_pin, copy_version, differences, outgoing
from include.orchestrator.domain import mail, tasks
from include.orchestrator.domain.blog_format import blog_post
from include.orchestrator.domain.model import Campaign, Port, RunPlan, at_utc, in_words, launch_name, plan_run
from include.orchestrator.domain.ports import (
    Banner,
    Copy,
    CopyBrief,
    Dashboard,
    Effect,
    Email,
    Image,
    ImageSpec,
    Message,
    ReviewBundle,
    SocialPost,
    checked_bytes,
)
from include.orchestrator.errors import NotApproved, NotThisRun

# Pixel sizes per channel: an email banner, a social card, a blog hero image.
IMAGE_SIZES = {"email": (1200, 400), "social": (1200, 675), "blog": (1600, 900)}

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    result: Any = None
    effects: list[Effect] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {"result": self.result, "effects": [e.model_dump(mode="json") for e in self.effects]}


@dataclass
class StepContext:
    current: Campaign  # the campaign file as this process parsed it: only ``validate_conf`` reads it
    dag_id: str
    run_id: str
    run_date: date
    conf: dict[str, Any]
    pull: Callable[[str], Any]  # full task id -> that task's result (a list for a mapped task)
    open_port: Callable[[Port], Any]  # port name -> backend
    ui_link: str = ""  # the gate's Required Actions page (the form that decides)
    item: str | None = None
    scheduled_for: datetime | None = None  # the logical date of a scheduled or backfill run
    claim_launch: Callable[[str], None] = lambda launch: None  # hold the run's launch, or raise errors.LaunchTaken
    open_assets: Callable[[], Any] = lambda: None  # the asset store (``assets.AssetStore``) images are read from
    review_link: str = ""  # the run's reviewer page (the plugin's view on the run): images, copy, recipients

    @cached_property  # one XCom pull per task, however often a step reads it
    def plan(self) -> RunPlan:
        return RunPlan.model_validate(self.pull(tasks.PLAN))

    @cached_property
    def draft(self) -> Copy:
        """The copy the writer made (before any reviewer's edit)."""
        return Copy.model_validate(self.pull(tasks.WRITE_COPY))

    @cached_property
    def images(self) -> list[Image]:
        """The run's rendered images (by URL, as XCom carries them); a channel left out has none."""
        return [Image.model_validate(i) for i in self.pull(tasks.RENDER_IMAGE) or [] if i]

    @cached_property
    def brand_voice(self) -> str:
        return str(self.pull(tasks.BRAND_VOICE)["text"])

    @cached_property
    def research_headlines(self) -> list[str]:
        """The competitors' headlines, from every page scraped (a page that failed to load has none)."""
        return [h for page in self.pull(tasks.SCRAPE_COMPETITOR) or [] if page for h in page["headlines"]]

    @cached_property
    def research_notes(self) -> list[str]:
        """The research notes found, then the past research recalled from memory."""
        found = self.pull(tasks.SEARCH_NOTES) or []
        recalled = self.pull(tasks.RECALL_RESEARCH) or []
        return [n["text"] for n in found] + [r["text"] for r in recalled]

    @cached_property
    def review(self) -> dict[str, Any]:
        """Where the review bundle is: its key and the backend's reference (branch, repository, pull request)."""
        return dict(self.pull(tasks.OPEN_REVIEW) or {})

    @cached_property
    def decision(self) -> Decision | None:
        """The gate's decision record; None when the run has none (a refused mark, a task forced by hand)."""
        raw = self.pull(tasks.GATE)
        return Decision.model_validate(raw) if raw else None

    @cached_property
    def campaign(self) -> Campaign:
        """The campaign this run uses: frozen by ``validate_conf`` when the run started, so an edit
        of the file (a recipient added, a sender changed, a channel removed) reaches only new runs."""
        return self.plan.snapshot() or self.current


def chosen_channel(ctx: StepContext) -> str:
    if ctx.item not in ctx.plan.channels:
        raise NotThisRun(f"channel {ctx.item!r} is not chosen for this run (channels: {ctx.plan.channels})")
    return ctx.item


Step = Callable[[StepContext], StepOutput]
STEPS: dict[str, Step] = {}
# The port each step calls (a channel's publish step: the channel's own port). Every task gets its
# port's Airflow pool, so all campaigns together call one service at most that pool's slots at once.
STEP_PORTS = {
    "search_notes": "notes",
    "scrape_competitor": "web",
    "recall_research": "memory",
    "load_brand_voice": "memory",
    "write_copy": "writer",
    "store_draft": "memory",
    "render_image": "design",
    "open_review": "review",
    "notify_reviewers": "notify",
    "create_dashboard": "analytics",
}


def port_of(step: str, item: str | None = None) -> str | None:
    return item if step == "publish_channel" else STEP_PORTS.get(step)


def step(func: Step) -> Step:
    """Register a step under its function name: the closed set of things a task can do."""
    STEPS[func.__name__] = func
    return func


@step
def validate_conf(ctx: StepContext) -> StepOutput:
    plan = plan_run(ctx.current, ctx.dag_id, ctx.run_id, ctx.conf, ctx.scheduled_for)
    # Before any work: a second run of the same launch stops here, not after research and copy.
    ctx.claim_launch(plan.launch)
    return StepOutput(plan.model_dump(mode="json"))


# --- research --------------------------------------------------------------------------------
@step
def search_notes(ctx: StepContext) -> StepOutput:
    query = ctx.campaign.research.notes_query or ctx.plan.audience
    notes = ctx.open_port("notes").search(query, limit=5)
    return StepOutput([n.model_dump() for n in notes])


@step
def scrape_competitor(ctx: StepContext) -> StepOutput:
    assert ctx.item, "scrape_competitor is mapped over competitor URLs"
    # Mapped over the URLs of the file as the DAG was last parsed (Airflow maps only over literals
    # or a task's return value): one added to the file after the run started is not the run's.
    if ctx.item not in ctx.plan.competitor_urls:
        raise NotThisRun(f"{ctx.item} was added to the campaign after this run started")
    return StepOutput(ctx.open_port("web").fetch_headlines(ctx.item).model_dump())


@step
def recall_research(ctx: StepContext) -> StepOutput:
    hits = ctx.open_port("memory").recall(
        "research", f"market research {ctx.plan.audience}", limit=ctx.campaign.research.recall_limit
    )
    return StepOutput([h.model_dump() for h in hits])


# --- content ---------------------------------------------------------------------------------
@step
def load_brand_voice(ctx: StepContext) -> StepOutput:
    voice = ctx.campaign.brand_voice
    memory = ctx.open_port("memory")
    found = memory.recall("brand_voices", voice.reference, limit=1, where={"key": voice.reference})
    if found:
        return StepOutput({"reference": voice.reference, "text": found[0].text, "source": "memory"})
    # First use of this voice: remember the campaign's seed so later campaigns recall it.
    effect = memory.remember("brand_voices", voice.reference, voice.seed, {"campaign": ctx.campaign.slug})
    return StepOutput({"reference": voice.reference, "text": voice.seed, "source": "campaign seed"}, [effect])


@step
def write_copy(ctx: StepContext) -> StepOutput:
    campaign, plan = ctx.campaign, ctx.plan
    brief = CopyBrief(
        campaign_name=campaign.name,
        product_description=campaign.product.description,
        audience=plan.audience,
        brand_voice=ctx.brand_voice,
        channels=plan.channels,
        social_max_length=campaign.channels.social.max_length if campaign.channels.social else 280,
        research_headlines=ctx.research_headlines,
        research_notes=ctx.research_notes,
        writer_notes=plan.writer_notes,
        call_to_action=campaign.product.call_to_action,
        url=str(campaign.product.url or ""),
    )
    copy = ctx.open_port("writer").write(brief)
    if copy.usage:  # the run's token count: in the task log and in the step's XCom (``usage``)
        log.info("copy written by %s, tokens used: %s", copy.writer, copy.usage)
    return StepOutput(copy.model_dump())


@step
def store_draft(ctx: StepContext) -> StepOutput:
    plan, copy = ctx.plan, ctx.draft
    key = plan.key("draft")
    effect = ctx.open_port("memory").remember(
        "drafts",
        key,
        f"{copy.headline}\n\n{copy.email_body}",
        {"campaign": plan.slug, "run_key": plan.run_key, "copy": copy.model_dump_json()},
    )
    return StepOutput({"key": key}, [effect])


# --- design ----------------------------------------------------------------------------------
@step
def render_image(ctx: StepContext) -> StepOutput:
    channel = chosen_channel(ctx)
    copy, voice = ctx.draft, ctx.campaign.brand_voice
    width, height = IMAGE_SIZES[channel]
    spec = ImageSpec(
        key=ctx.plan.key("image", channel),
        channel=channel,
        width=width,
        height=height,
        headline=copy.headline,
        subline=ctx.campaign.product.call_to_action,
        background=voice.primary_colour,
        foreground=voice.text_colour,
        accent=voice.accent_colour,
    )
    image, effect = ctx.open_port("design").render(spec)
    return StepOutput(image.model_dump(), [effect])


# --- review ----------------------------------------------------------------------------------
def _with_bytes(ctx: StepContext, images: list[Image]) -> list[Image]:
    """The images with their bytes, read from the asset store wherever this task runs."""
    if not images:
        return []  # no asset store opened for no images
    store = ctx.open_assets()
    return [store.read_image(i) for i in images]


def review_markdown(campaign: Campaign, plan: RunPlan, copy: Copy, images: list[Image]) -> str:
    """The page a reviewer reads. Copy is shown in fenced blocks: it is data, not markup to trust."""

    def fenced(text: str) -> str:
        return "~~~~text\n" + text.replace("~~~~", "~ ~ ~ ~") + "\n~~~~"

    parts = [
        f"# Review: {campaign.name}",
        f"Campaign `{campaign.slug}`, run `{plan.run_key}`, audience: {plan.audience}. Channels: {', '.join(plan.channels)}.",
        f"Approvers: {', '.join(campaign.approval.approvers)}. "
        f"Undecided {in_words(campaign.approval.timeout)} after the request opens means rejected.",
        "## Headline",
        fenced(copy.headline),
    ]
    if "email" in plan.channels:
        parts += ["## Email", "Subject:", fenced(copy.email_subject), "Body:", fenced(copy.email_body)]
    if "social" in plan.channels:
        parts += ["## Social posts", *(fenced(p) for p in copy.social_posts)]
    if "blog" in plan.channels:
        parts += ["## Blog post", fenced(copy.blog_title), fenced(copy.blog_body)]
    parts += ["## Images", *(f"![{i.channel}]({i.url.rsplit('/', 1)[-1]})" for i in images)]
    parts.append(f"_Written by: {copy.writer}_")
    return "\n\n".join(parts) + "\n"


@step
def open_review(ctx: StepContext) -> StepOutput:
    plan, copy = ctx.plan, ctx.draft
    images = _with_bytes(ctx, ctx.images)
    bundle = ReviewBundle(
        key=plan.key("review"),
        campaign_slug=plan.slug,
        title=f"Review {ctx.campaign.name} ({plan.run_key})",
        markdown=review_markdown(ctx.campaign, plan, copy, images),
        images=images,
    )
    effect = ctx.open_port("review").open_review(bundle)
    return StepOutput({"key": bundle.key, **effect.ref}, [effect])


@step
def notify_reviewers(ctx: StepContext) -> StepOutput:
    campaign, plan = ctx.campaign, ctx.plan
    review = ctx.review
    named = launch_name(plan.launch)
    message = Message(
        key=plan.key("review-request"),
        to=list(campaign.approval.approvers),
        subject=f"Review needed: {campaign.name} ({f'launch {named}' if named else ctx.run_id})",
        text=(
            f"Campaign {campaign.name!r} ({campaign.slug}) is ready for review.\n"
            + (f"See the drafts and the images: {ctx.review_link}\n" if ctx.review_link else "")
            + f"Review bundle: branch {review.get('branch', review['key'])} in {review.get('repo', 'the review repository')}.\n"
            f"Decide within {in_words(campaign.approval.timeout)} of the request opening (right after this message, so by "
            f"about {at_utc(datetime.now(UTC) + campaign.approval.timeout)}); no decision by then rejects the campaign.\n"
            + (f"Decide here: {ctx.ui_link}\n" if ctx.ui_link else "")
            + f"Run: dag {ctx.dag_id}, run {ctx.run_id}"
        ),
        link=ctx.ui_link,
    )
    return StepOutput({"to": message.to}, [ctx.open_port("notify").notify(message)])


# --- distribution ----------------------------------------------------------------------------
# What happened to one batch of an email.
SENT, SENT_EARLIER, UNCERTAIN = "sent", "sent by an earlier try", "may or may not have been delivered"


def channel_image(ctx: StepContext, channel: str, missing: str) -> Image:
    """The image the design phase rendered for ``channel`` (the one the approval pinned), with its
    bytes; ``missing`` is the error when there is none: never publish without the image the reviewer saw."""
    image = next((i for i in ctx.images if i.channel == channel), None)
    if image is None:
        raise ValueError(missing)
    [read] = _with_bytes(ctx, [image])
    return read


def _email_banner(ctx: StepContext, copy: Copy) -> Banner:
    """The "email" channel's rendered image with its bytes, checked against its hash: the banner."""
    missing = "email: the design phase rendered no email image (design.render_image[email] has no result)"
    image = channel_image(ctx, "email", missing)
    return Banner(
        url=image.url, sha256=image.sha256, width=image.width, height=image.height, alt=copy.headline, data=checked_bytes(image)
    )


def _publish_email(ctx: StepContext, copy: Copy) -> Effect:
    """Send the email in batches, each its own effect in the saga ledger (key ``email-0001``, ...).

    A retry skips every batch the ledger shows as made, and, unless the backend adopts what an
    earlier try made (outbox, SendGrid), every batch left planned without an error: its task died
    during the send, so the server may have taken it; sending it again could reach those people
    twice (at most once, for inboxes). Those are reported as "may or may not have been delivered".
    """
    settings = ctx.campaign.channels.email
    assert settings is not None
    port = ctx.open_port("email")
    recipients = mail.unique(settings.recipients)
    # SMTP and the outbox send one transaction per batch; SendGrid sends each contact its own copy of one Single Send.
    size = settings.batch_size if getattr(port, "batches", True) else len(recipients)
    subject, banner = mail.one_line(f"{settings.subject_prefix}{copy.email_subject}"), _email_banner(ctx, copy)
    emails = [
        Email(
            key=ctx.plan.key("email", f"{n:04d}"),
            sender=settings.sender,
            to=batch,
            subject=subject,
            text=copy.email_body,
            unsubscribe=settings.unsubscribe,
            banner=banner,
        )
        for n, batch in enumerate(mail.batches(recipients, size), start=1)
    ]
    ask = getattr(port, "recorded", None)  # the saga ledger, when the port is journaled (always, in a DAG run)
    adopts = bool(getattr(port, "adopts", False))
    done: list[tuple[str, Email, Effect]] = []  # what happened to each batch, the batch, its effect
    for email in emails:
        entry = ask(email) if ask else None
        if entry is not None and entry.state in ("made", "kept", "failed"):  # out already ("failed": an undo that failed)
            done.append((SENT_EARLIER, email, entry.effect))
        elif entry is not None and entry.state == "planned" and not entry.error and not adopts:
            log.warning(
                "email batch %s (%d recipient(s)) %s: an earlier try died during its send; not sent again",
                email.key,
                len(email.to),
                UNCERTAIN,
            )
            done.append((UNCERTAIN, email, entry.effect))
        else:  # never tried, or its call answered with an error (so nothing was delivered)
            done.append((SENT, email, port.send(email)))
    groups: dict[str, list[Email]] = {}
    for how, email, _ in done:
        groups.setdefault(how, []).append(email)
    summary = f"email {subject!r} to {len(recipients)} recipient(s) in {len(emails)} batch(es) of at most {size}: " + "; ".join(
        f"{len(batch)} batch(es), {sum(len(e.to) for e in batch)} recipient(s) {how}" for how, batch in groups.items()
    )
    if UNCERTAIN in groups:
        summary += f" ({', '.join(e.key for e in groups[UNCERTAIN])}: not sent again, so nobody gets it twice)"
    batches = [
        {"key": email.key, "recipients": len(email.to), "state": how, "message_id": effect.ref.get("message_id", "")}
        for how, email, effect in done
    ]
    first = done[0][2]
    # The whole send, for the step's result and the run's view; the ledger has each batch (its recipients, its state).
    return Effect(
        port=first.port,
        conn_id=first.conn_id,
        backend=first.backend,
        kind=first.kind,
        key=ctx.plan.key("email"),
        undoable=all(effect.undoable for _, _, effect in done),
        summary=summary,
        ref={"batches": batches},
    )


def _publish_social(ctx: StepContext, copy: Copy) -> Effect:
    settings = ctx.campaign.channels.social
    assert settings is not None
    image = next((i.url for i in ctx.images if i.channel == "social"), "")
    text = copy.social_posts[0]
    if len(text) > settings.max_length:  # the writers and the gate keep to the limit: never cut what was approved
        raise NotApproved(f"the approved social post is {len(text)} characters; social.max_length is {settings.max_length}")
    post = SocialPost(key=ctx.plan.key("social"), profiles=list(settings.profiles), text=text, image_url=image)
    return ctx.open_port("social").post(post)


def _publish_blog(ctx: StepContext, copy: Copy) -> Effect:
    # The hero is the design phase's "blog" image, committed with the post.
    post = blog_post(
        ctx.campaign,
        copy,
        ctx.run_date,
        ctx.plan.key("blog"),
        channel_image(ctx, "blog", "blog: no rendered blog image (design.render_image[blog]) to publish as the post's hero"),
    )
    return ctx.open_port("blog").publish(post)


PUBLISHERS: dict[str, Callable[[StepContext, Copy], Effect]] = {
    "email": _publish_email,
    "social": _publish_social,
    "blog": _publish_blog,
}


def approved_copy(ctx: StepContext, channel: str) -> Copy:
    """The copy the reviewer approved (their edit, else the draft), once checked that everything
    ``channel`` is about to send (its settings, image and copy) is what the approval pinned."""
    record = ctx.decision
    if record is None:  # e.g. a gate whose mark was refused, then a distribution task forced by hand
        raise NotApproved(f"{channel}: the run has no decision record: nothing is sent without an approval")
    copy = Copy.model_validate(record.edited_copy) if record.edited_copy else ctx.draft
    if not record.approved:
        raise NotApproved(f"{channel}: the run was not approved ({record.summary()})")
    if not record.pinned:  # decided before approvals pinned what goes out: only the copy is known
        if record.copy_version and copy_version(copy) != record.copy_version:
            raise NotApproved(f"{channel}: the copy differs from the approved version {record.copy_version}")
        log.warning("the approval of this run pins only the copy (decided before pins existed)")
        return copy
    if channel not in record.pinned:
        raise NotApproved(f"{channel} was not approved: the approval covers {', '.join(record.pinned) or 'no channel'}")
    sending = outgoing(ctx.campaign, [channel], ctx.images)[channel] | copy_pin(copy, channel)
    if changed := differences(record.pinned[channel], sending):
        raise NotApproved(f"{channel}: not sent, because it differs from what {record.by} approved: {'; '.join(changed)}")
    return copy


@step
def publish_channel(ctx: StepContext) -> StepOutput:
    channel = chosen_channel(ctx)
    effect = PUBLISHERS[channel](ctx, approved_copy(ctx, channel))
    return StepOutput({"channel": channel, "summary": effect.summary}, [effect])


# --- analytics -------------------------------------------------------------------------------
@step
def create_dashboard(ctx: StepContext) -> StepOutput:
    from include.orchestrator.domain.dashboard import campaign_dashboard

    campaign, plan = ctx.campaign, ctx.plan
    uid = f"{campaign.slug[:27]}-{plan.run_key}"  # Grafana uids are at most 40 characters
    title = f"Campaign {campaign.name} ({plan.run_key})"
    model = campaign_dashboard(uid, title, campaign.slug, plan.channels, ["campaign", *campaign.tags])
    effect = ctx.open_port("analytics").create_dashboard(Dashboard(uid=uid, title=title, model=model))
    return StepOutput({"uid": uid, **effect.ref}, [effect])
