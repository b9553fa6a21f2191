"""The campaign model: what a campaign file may say, validated by pydantic.

Airflow-free on purpose: the DAG factory (``airflow/dags.py``) turns a :class:`Campaign` into a DAG, and
the first task of every run validates the trigger conf against :class:`RunOverrides` and builds
the :class:`RunPlan` the other tasks follow.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from include.orchestrator.errors import CredentialsInUrl

SLUG_PATTERN = r"^[a-z0-9-]{1,64}$"
LAUNCH_PATTERN = r"^[A-Za-z0-9_.:-]{0,64}$"  # a launch name (empty: none), in conf and the trigger form
CHANNELS = ("email", "social", "blog")
Channel = Literal["email", "social", "blog"]
FailurePolicy = Literal["continue", "compensate"]
PORTS = ("memory", "notes", "web", "writer", "design", "review", "notify", "email", "social", "blog", "analytics")
Port = Literal["memory", "notes", "web", "writer", "design", "review", "notify", "email", "social", "blog", "analytics"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(value: Any) -> Any:
    """Accept "24h", "90m", "2d", "30s" or a number of seconds, besides ISO 8601 ("PT24H")."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        try:
            return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:  # would escape validation and take every campaign of the folder down with it
            raise ValueError("far too long for a duration (more than 999,999,999 days)") from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


def duration_between(low: timedelta, high: timedelta, words: str) -> AfterValidator:
    """The check that makes a :data:`Duration` one from ``low`` to ``high``; ``words`` names the bounds in the error."""

    def check(value: timedelta) -> timedelta:
        if value < low or value > high:
            raise ValueError(f"must be between {words}")
        return value

    return AfterValidator(check)


# --- text: one line, or lines ------------------------------------------------------------------
# Every text field is one of two kinds, wherever its value comes from (a campaign file, trigger
# conf, a writer's draft, a reviewer's edit): the same check refuses the same characters in each.
#
# Never text: C0 and C1 control characters and DEL. PostgreSQL refuses a NUL in a text or jsonb
# value (a 422 naming no field), and a CR or LF in a header value makes the email unsendable.
_CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"
_CONTROLS_BUT_LINES = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"  # tab, LF and CR kept (CR becomes LF)
# Line and paragraph separators: line breaks to some software (JavaScript, editors) and not to
# other (email headers, split by CRLF only), so a "one line" with one shows differently per place.
_SEPARATORS = "\\u2028\\u2029"
# Bidi embeddings, overrides and isolates: each reorders the text after it up to the end of its
# paragraph. A one-line field is shown inside a longer line (an inbox row, "Approve <name>: <run>"
# in the UI, a list of approvers), so an unclosed one turns what follows around and can make a
# name or subject read as another. Right-to-left writing needs none of them (the LRM/RLM marks,
# which affect no text beyond themselves, stay allowed). In several lines each paragraph ends
# their effect, so bodies keep them.
_BIDI = "\\u202a-\\u202e\\u2066-\\u2069"
# The same character classes as JSON-schema patterns (Python and JavaScript read them alike), for
# the forms that check as one types: the trigger form and the Required Actions form.
SINGLE_LINE_PATTERN = f"^[^{_CONTROLS}{_SEPARATORS}{_BIDI}]*$"
MULTI_LINE_PATTERN = f"^[^{_CONTROLS_BUT_LINES}]*$"
_NOT_SINGLE_LINE = re.compile(f"[{_CONTROLS}{_SEPARATORS}{_BIDI}]")
_NOT_MULTI_LINE = re.compile(f"[{_CONTROLS_BUT_LINES}]")
_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
_CONTROL_NAMES = {
    "\x00": "null",
    "\t": "tab",
    "\n": "line feed",
    "\r": "carriage return",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\x1b": "escape",
    "\x7f": "delete",
    "\x85": "next line",
}


def _refusal(value: str, refused: re.Pattern[str]) -> str | None:
    """Why ``value`` cannot be kept: the first refused character, named, and where it is."""
    found = refused.search(value)
    if found is None:
        return None
    char = found[0]
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "control character").lower()
    what, where = f"U+{ord(char):04X} {name}", f"at character {found.start() + 1}"
    if char in _BREAKS:
        return f"must be one line: it has a line break ({what}) {where}"
    if re.match(f"[{_BIDI}]", char):
        return f"has an invisible bidirectional control ({what}) {where}, which reorders the text shown after it: remove it"
    return f"has an invisible control character ({what}) {where}: remove it"


def one_line(value: str) -> str:
    """A single-line field's value (names, subjects, titles, audience, addresses...), or ValueError naming
    the character in the way. Used as the type :data:`SingleLine`."""
    if problem := _refusal(value, _NOT_SINGLE_LINE):
        raise ValueError(problem)
    return value


def lines(value: str) -> str:
    """A multi-line field's value (bodies, descriptions, notes): line breaks as LF, tabs kept, other control
    characters refused. Used as the type :data:`MultiLine`."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")  # a Windows line break is still a line break
    if problem := _refusal(value, _NOT_MULTI_LINE):
        raise ValueError(problem)
    return value


def folded(value: str) -> str:
    """Untrusted text (a language model's answer, a GitHub review) made one line instead of refused:
    line breaks and tabs become a space, other refused characters go, spaces are collapsed."""
    value = _NOT_SINGLE_LINE.sub(lambda m: " " if m[0] in f"{_BREAKS}\t" else "", value)
    return re.sub(" {2,}", " ", value).strip()


def cleaned(value: str) -> str:
    """Untrusted text made fit for a multi-line field: line breaks as LF, other control characters gone."""
    return _NOT_MULTI_LINE.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


SingleLine = Annotated[str, AfterValidator(one_line)]
MultiLine = Annotated[str, AfterValidator(lines)]


def text_pattern(model: type[BaseModel], field: str) -> str | None:
    """The JSON-schema pattern of a text field of ``model`` (of its items, for a list of text; optional or
    not), or None when the field is neither kind: forms take it from the model, so they refuse what it refuses."""
    info = model.model_fields[field]
    metadata, annotation = list(info.metadata), info.annotation
    while (origin := get_origin(annotation)) in (Annotated, list, Union, UnionType):
        args = get_args(annotation)
        metadata += args[1:] if origin is Annotated else []
        annotation = next(arg for arg in args if arg is not type(None))
    checks = {getattr(item, "func", None) for item in metadata}
    return SINGLE_LINE_PATTERN if one_line in checks else MULTI_LINE_PATTERN if lines in checks else None


ApprovalDuration = Annotated[Duration, duration_between(timedelta(seconds=1), timedelta(days=30), "1 second and 30 days")]
RetryDelay = Annotated[Duration, duration_between(timedelta(seconds=0.1), timedelta(hours=6), "0.1 seconds and 6 hours")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(lines)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(one_line)]
GITHUB_LOGIN_PATTERN = r"^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$"
COLOUR_PATTERN = r"^#[0-9a-fA-F]{6}$"
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,40}$"
CONN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,250}$"
GithubLogin = Annotated[str, StringConstraints(pattern=GITHUB_LOGIN_PATTERN)]  # GitHub user names
Colour = Annotated[str, StringConstraints(pattern=COLOUR_PATTERN)]
EMAIL_PATTERN = r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$"
# The pattern refuses whitespace; one_line the controls it lets through (NUL, ESC...).
EmailAddress = Annotated[str, StringConstraints(strip_whitespace=True, pattern=EMAIL_PATTERN), AfterValidator(one_line)]
# Airflow's schedule presets (``airflow.utils.dates.cron_presets``, plus @once and @continuous).
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def _check_schedule(value: str) -> str:
    """A schedule Airflow accepts: a preset or a five-field cron expression (else every DAG of the file would fail)."""
    from croniter import CroniterBadDateError, croniter

    if value.startswith("@"):
        if value not in SCHEDULE_PRESETS:
            raise ValueError(f"not a schedule preset: use one of {', '.join(SCHEDULE_PRESETS)} or a cron expression")
        return value
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError('not a cron expression: five fields, minute hour day-of-month month day-of-week, e.g. "0 9 * * 1"')
    try:  # a valid expression may match no date at all ("0 0 30 2 *"): the DAG would never run
        croniter(value, datetime(2026, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{value!r} matches no date (e.g. a day the month never has): the campaign would never run") from None
    return value


Schedule = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(one_line),
    AfterValidator(_check_schedule),
]


def _none_is_empty(value: Any) -> Any:
    """The trigger form sends None for a field left empty: the same as "" or leaving it out."""
    return "" if value is None else value


def in_words(duration: timedelta) -> str:
    """A duration as a person says it: "1 day", "2 hours 30 minutes", "90 seconds" -> "1 minute 30 seconds"."""
    seconds = duration.total_seconds()
    if seconds < 1:
        return f"{seconds:g} seconds"
    parts, rest = [], round(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts)


def at_utc(moment: datetime) -> str:
    """An absolute time as a person reads it: "2026-11-24 12:00 UTC"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- validation errors in words -----------------------------------------------------------------
# What a pattern means, in words: the model's patterns, each named once.
_PATTERNS = {
    EMAIL_PATTERN: "not a valid email address",
    SLUG_PATTERN: "must be 1 to 64 lowercase letters, digits or dashes (like spring-launch)",
    COLOUR_PATTERN: 'not a colour: write it as "#" and six hex digits, e.g. "#1f2937"',
    GITHUB_LOGIN_PATTERN: "not a GitHub login (letters, digits and single dashes, at most 39 characters)",
    TAG_PATTERN: "a tag is 1 to 40 letters, digits or _ . : -",
    CONN_ID_PATTERN: "not an Airflow connection id (letters, digits, _ . -)",
    LAUNCH_PATTERN: "a launch name is at most 64 letters, digits or _ . : -",
}
_DURATION_WORDS = 'not a duration: write e.g. "24h", "90m", "2d", "30s" or a number of seconds'
_URL_WORDS = "not a web address: write it in full, e.g. https://example.com/page"


def plain_words(item: ErrorDetails) -> str:  # noqa: C901 -- a table of pydantic error kinds, one branch per kind
    """One pydantic error in plain words (pydantic's own message when there is no better one)."""
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "missing":
        return "missing: this field is required"
    if kind == "extra_forbidden":
        return "unknown key: check its spelling and place"
    if kind == "string_pattern_mismatch":
        return _PATTERNS.get(ctx.get("pattern", ""), f"does not have the expected form (pattern {ctx.get('pattern')})")
    if kind == "url_scheme":
        return "must be a web address starting with http:// or https://"
    if kind.startswith("url_"):
        return _URL_WORDS
    if kind.startswith("time_delta_"):
        return _DURATION_WORDS
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"needs at least {count} item{'' if count == 1 else 's'}"
    if kind == "too_long":
        return f"may have at most {ctx.get('max_length')} items"
    words = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("more than", "gt"),
        "less_than": ("less than", "lt"),
    }
    if kind in words:
        return f"must be {words[kind][0]} {ctx.get(words[kind][1])}"
    fixed = {
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be text",
        "list_type": "must be a list (one item per line, each starting with - )",
        "model_type": "must be a mapping of fields (key: value lines)",
        "dict_type": "must be a mapping (key: value lines)",
        "model_attributes_type": "must be a mapping of fields (key: value lines)",
    }
    if kind in fixed:
        return fixed[kind]
    message = item["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):  # our own validators' messages are already words
        message = message.removeprefix(prefix)
    return message


def describe(error: ValidationError, prefix: str = "") -> tuple[str, ...]:
    """Each problem of a failed validation as ``<field>: <what is wrong, in words> (got ...)``; ``prefix``
    says where the fields are (``conf.`` for trigger conf)."""
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        key = loc[-1:] == ["[key]"]  # a mapping's key is wrong, not its value
        path = ".".join(loc[:-1] if key else loc)
        field = f"{prefix}{path}" if path else prefix.rstrip(".") or "(top level)"
        got = "" if item["type"] in ("missing", "extra_forbidden") else f" (got {item['input']!r:.80})"
        problems.append(f"{field}: {'the key ' if key else ''}{plain_words(item)}{got}")
    return tuple(problems)


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a campaign file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_credentials(url: Any) -> Any:
    """Refuse ``user:password@`` in a URL: a campaign's values end up in the serialized DAG, which every DAG
    reader sees, and in the UI's import errors."""
    if "@" in urlsplit(str(url)).netloc:
        raise CredentialsInUrl(
            "must not hold a user name or password (user:password@): every reader of the DAG sees it; "
            "keep credentials in an Airflow connection"
        )
    return url


WebUrl = Annotated[AnyHttpUrl, AfterValidator(_no_credentials)]


class Product(Strict):
    description: Text
    url: WebUrl | None = None
    call_to_action: ShortText = "Learn more"


class BrandVoice(Strict):
    reference: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    seed: Text = Field(description="Used, and remembered, when memory holds no voice under `reference`.")
    primary_colour: Colour = "#1f2937"
    accent_colour: Colour = "#f59e0b"
    text_colour: Colour = "#ffffff"


class Research(Strict):
    competitor_urls: list[WebUrl] = Field(default_factory=list, max_length=20)
    notes_query: ShortText | None = Field(None, description="Defaults to the audience.")
    recall_limit: int = Field(5, ge=1, le=50)

    @field_validator("competitor_urls")
    @classmethod
    def _unique(cls, urls: list[AnyHttpUrl]) -> list[AnyHttpUrl]:
        seen = [str(u) for u in urls]
        if len(set(seen)) != len(seen):
            raise ValueError("competitor_urls lists the same URL twice")
        return urls


def _check_unsubscribe(value: str) -> str:
    """An https URL (one-click unsubscribe, RFC 8058) or a mailto: address: the only forms a List-Unsubscribe
    header (RFC 2369) and every mail client act on. It lands in a header and in HTML, so no spaces, quotes
    or angle brackets."""
    one_line(value)
    if re.search(r"[\s<>\"'\\]", value):
        raise ValueError("not an unsubscribe address: no spaces, quotes or angle brackets")
    if value.startswith("mailto:"):
        if not re.match(EMAIL_PATTERN, value.removeprefix("mailto:").partition("?")[0]):
            raise ValueError("not a mailto: address (mailto:unsubscribe@example.com)")
        return value
    _no_credentials(value)
    if not re.match(r"^https://[A-Za-z0-9.-]+(:\d+)?(/\S*)?$", value):
        raise ValueError("not an https URL or a mailto: address (https://example.com/unsubscribe or mailto:leave@example.com)")
    return value


Unsubscribe = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=8, max_length=500), AfterValidator(_check_unsubscribe)
]
# RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per message; many refuse more.
BATCH_SIZE_MAX = 100


class EmailChannel(Strict):
    sender: EmailAddress
    recipients: list[EmailAddress] = Field(min_length=1, max_length=1000)
    subject_prefix: SingleLine = Field("", max_length=40)
    unsubscribe: Unsubscribe = Field(
        description="Where a recipient unsubscribes: an https URL (then one click, RFC 8058) or a mailto: address. "
        "Every email shows it and carries it in its List-Unsubscribe header (required: bulk mail without one is junk "
        "to the big mailbox providers)."
    )
    batch_size: int = Field(
        50,
        ge=1,
        le=BATCH_SIZE_MAX,
        description="Recipients per message: each batch is one SMTP transaction (envelope recipients only, never in a "
        "header) and one entry in the saga ledger, so a retry resends no batch that went out.",
    )
    on_failure: FailurePolicy = "compensate"


class SocialChannel(Strict):
    profiles: list[ShortText] = Field(min_length=1, max_length=10)
    max_length: int = Field(280, ge=50, le=3000)
    on_failure: FailurePolicy = "continue"


class BlogChannel(Strict):
    author: ShortText
    category: ShortText = "news"
    on_failure: FailurePolicy = "compensate"


class Channels(Strict):
    email: EmailChannel | None = None
    social: SocialChannel | None = None
    blog: BlogChannel | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Channels:
        if not self.enabled:
            raise ValueError("configure at least one channel: email, social or blog")
        return self

    @property
    def enabled(self) -> list[str]:
        return [name for name in CHANNELS if getattr(self, name) is not None]


class Approval(Strict):
    approvers: list[ShortText] = Field(min_length=1, description="Airflow user ids (user names) allowed to decide.")
    approver_roles: list[ShortText] = Field(default_factory=list, description="Airflow roles whose users may decide too.")
    timeout: ApprovalDuration = Field(timedelta(hours=24), description='"24h", "90m", "2d" or seconds; timeout = reject.')
    remind_before: ApprovalDuration = Field(timedelta(hours=2), description="A reminder goes out this long before the timeout.")
    allow_self_approval: bool = False
    marks: Literal["approvers", "anyone"] = Field(
        "approvers",
        description="Whose marking of review.approval success approves: 'approvers' (who may decide in the form and the "
        "API; a mark by anyone else publishes nothing and rolls the run back) or 'anyone' allowed to edit the DAG's task "
        "instances in Airflow.",
    )
    github_approvers: list[GithubLogin] = Field(
        default_factory=list,
        description="GitHub logins whose review of the run's review pull request decides: an approving review approves, "
        "'changes requested' or closing the pull request rejects (the review connection must be a github one).",
    )


class Retries(Strict):
    """How often Airflow runs a failing task again (compensation included), waiting longer each time."""

    count: int = Field(3, ge=0, le=10)
    delay: RetryDelay = Field(timedelta(seconds=10), description="Wait before the first retry; doubles each time.")
    max_delay: RetryDelay = Field(timedelta(minutes=10), description="The longest wait between two tries.")


class Campaign(Strict):
    """One marketing campaign; becomes the DAG ``campaign_<slug>``."""

    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    name: ShortText
    description: Text
    owner: EmailAddress = Field(
        description="Who owns the campaign (an email address): shown as the DAG's owner, alerted when something is left "
        "to clean up."
    )
    audience: ShortText
    product: Product
    brand_voice: BrandVoice
    research: Research = Research()
    channels: Channels
    approval: Approval
    retries: Retries = Retries()
    schedule: Schedule | None = Field(None, description="Cron expression or preset (@daily, ...); none = triggered by hand.")
    tags: list[Annotated[str, StringConstraints(pattern=TAG_PATTERN)]] = Field(default_factory=list, max_length=10)
    connections: dict[Port, Annotated[str, StringConstraints(pattern=CONN_ID_PATTERN)]] = Field(
        default_factory=dict, description="Per-port Airflow connection ids replacing the defaults."
    )

    @property
    def dag_id(self) -> str:
        return f"campaign_{self.slug}"


class RunOverrides(Strict):
    """What a user may change per run, through trigger conf (the UI trigger form shows these)."""

    audience: ShortText | None = None
    channels: list[Channel] | None = Field(None, min_length=1)
    writer_notes: Annotated[MultiLine, BeforeValidator(_none_is_empty)] = Field(
        "",
        max_length=2000,
        description="Notes for the copy writer. The LLM writer (a campaign_writer connection of type http) follows them as "
        "instructions; the offline template writer adds each line, as written, to the email and the blog post (and to a "
        "social post where it fits), so write lines meant for readers. Different notes make a different launch.",
    )
    launch: Annotated[str, BeforeValidator(_none_is_empty)] = Field(
        "",
        pattern=LAUNCH_PATTERN,
        description="A name for this launch. Runs with the same conf are one launch, and only one of them sends: "
        "name a new launch to send the campaign again on purpose.",
    )

    @field_validator("channels")
    @classmethod
    def _no_repeats(cls, channels: list[str] | None) -> list[str] | None:
        if channels is not None and len(set(channels)) != len(channels):
            raise ValueError("lists a channel twice")
        return channels


class RunPlan(BaseModel):
    """The validated plan of one run: campaign defaults with the run's overrides applied."""

    model_config = ConfigDict(frozen=True)

    slug: str
    run_key: str = Field(description="Short hash of the run id: safe in names, paths and idempotency keys.")
    audience: str
    channels: list[Channel]
    competitor_urls: list[str]
    writer_notes: str
    # What this run sends out, once per campaign (see launch_of); empty in plans made before launches existed.
    launch: str = ""
    # The campaign as its file stood when the run started: every later task of the run uses this,
    # never the file's current text (an edit after the approval must not change what goes out).
    # Empty in plans made before snapshots existed.
    campaign: dict[str, Any] = Field(default_factory=dict, repr=False)
    campaign_version: str = Field("", description="Hash of ``campaign``: which version of the campaign file the run used.")

    def snapshot(self) -> Campaign | None:
        """The campaign frozen at the run's start, or None for a plan made before snapshots existed."""
        return Campaign.model_validate(self.campaign) if self.campaign else None

    def key(self, step: str, item: str = "") -> str:
        """The deterministic name of one side effect: campaign, run, step (and item)."""
        return "-".join(part for part in (self.slug, self.run_key, step, item) if part)


def campaign_version(campaign: Campaign) -> str:
    """A short hash of the campaign's validated content (not of its file's bytes: comments and
    layout do not make a new version)."""
    data = json.dumps(campaign.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def run_key(dag_id: str, run_id: str) -> str:
    return hashlib.sha256(f"{dag_id}\n{run_id}".encode()).hexdigest()[:12]


def launch_of(overrides: RunOverrides, audience: str, channels: list[str], scheduled_for: datetime | None) -> str:
    """The launch a run belongs to: one campaign sends each launch once, however often it is triggered.

    A named launch (conf ``launch``) is itself; a scheduled run is its interval's launch; a run
    triggered by hand is the launch of what it would send (audience, channels, writer notes), so
    the same trigger made twice by mistake is one launch.
    """
    if overrides.launch:
        return f"named {overrides.launch}"
    if scheduled_for is not None:
        return f"scheduled {scheduled_for.isoformat()}"
    what = json.dumps({"audience": audience, "channels": channels, "writer_notes": overrides.writer_notes}, sort_keys=True)
    return f"conf {hashlib.sha256(what.encode()).hexdigest()[:12]}"


def launch_name(launch: str) -> str:
    """The name a user gave a run's launch (conf ``launch``; see :func:`launch_of`), or "" when it has none."""
    return launch.removeprefix("named ") if launch.startswith("named ") else ""


def plan_run(
    campaign: Campaign, dag_id: str, run_id: str, conf: dict[str, Any], scheduled_for: datetime | None = None
) -> RunPlan:
    """Validate the trigger conf and merge it into the campaign; raises ValueError naming the field.

    ``scheduled_for``: the logical date of a scheduled or backfill run (None when triggered by hand).
    """
    try:
        overrides = RunOverrides.model_validate(conf)
    except ValidationError as exc:
        raise ValueError("trigger conf: " + "; ".join(describe(exc, "conf."))) from None
    channels = overrides.channels or campaign.channels.enabled
    missing = [c for c in channels if c not in campaign.channels.enabled]
    if missing:
        raise ValueError(
            f"conf.channels asks for {missing}, but campaign {campaign.slug!r} configures only {campaign.channels.enabled}"
        )
    audience, channels = overrides.audience or campaign.audience, [c for c in CHANNELS if c in channels]
    return RunPlan(
        slug=campaign.slug,
        run_key=run_key(dag_id, run_id),
        audience=audience,
        channels=channels,
        competitor_urls=[str(u) for u in campaign.research.competitor_urls],
        writer_notes=overrides.writer_notes,
        launch=launch_of(overrides, audience, channels, scheduled_for),
        campaign=campaign.model_dump(mode="json"),
        campaign_version=campaign_version(campaign),
    )
