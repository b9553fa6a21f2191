"""The offline template copywriter: copy worth sending, never cut, with the run's writer notes.

Examples first (the bundled campaigns' texts), then properties over many generated briefs,
realistic and adversarial (long words, no punctuation, unicode, control characters, 2000-character
descriptions, empty research).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.orchestrator.backends.common.text import WRITER_NOTES_MAX, clean, writer_note_lines
from include.orchestrator.backends.local.copywriter import (
    FALLBACK,
    HEADLINE_MAX,
    SUBJECT_MAX,
    TemplateCopywriter,
    clauses,
    sentences,
)
from include.orchestrator.domain.ports import Copy, CopyBrief

SPRING = (
    "Pipewise 3 shows every data pipeline's freshness, cost and failures on one page, and tells you which upstream "
    "change broke a dashboard before your stakeholders notice."
)
CHANGELOG = (
    "This week in Pipewise: column-level lineage for dbt models, cost alerts per warehouse, and a faster incident timeline."
)
WEBINAR = (
    "A 45-minute live session on catching broken pipelines before they reach a dashboard, with a walkthrough of alert "
    "routing and on-call runbooks."
)


def brief(**changes: Any) -> CopyBrief:
    base: dict[str, Any] = {
        "campaign_name": "Spring Launch 2027",
        "product_description": SPRING,
        "audience": "data engineers at mid-size SaaS companies",
        "brand_voice": "Plain, confident and specific.\nSign-off: The Pipewise team",
        "channels": ["email", "social", "blog"],
        "research_headlines": ["Know when your data pipelines break", "Column-level lineage in minutes"],
        "research_notes": ["Teams learn about broken pipelines from their stakeholders."],
        "call_to_action": "Start a free trial",
        "url": "https://pipewise.example.com/launch",
    }
    return CopyBrief(**{**base, **changes})


def write(b: CopyBrief) -> Copy:
    return TemplateCopywriter().write(b)


def fields(copy: Copy) -> list[str]:
    return [copy.headline, copy.email_subject, copy.email_body, *copy.social_posts, copy.blog_title, copy.blog_body]


# --- examples -------------------------------------------------------------------------------------


def test_the_bundled_campaigns_get_whole_headlines_and_subjects() -> None:
    spring = write(brief())
    assert spring.headline == spring.blog_title
    assert spring.headline == "Pipewise 3 shows every data pipeline's freshness, cost and failures on one page"
    assert spring.email_subject == "Pipewise 3 shows every data pipeline's freshness"
    assert spring.social_posts[0] == f"{spring.headline}. Start a free trial: https://pipewise.example.com/launch"

    digest = write(brief(campaign_name="Weekly Changelog Digest", product_description=CHANGELOG))
    assert digest.headline == digest.email_subject == "This week in Pipewise: column-level lineage for dbt models"

    webinar = write(brief(campaign_name="Pipeline Reliability Webinar", product_description=WEBINAR))
    assert webinar.headline == webinar.email_subject == "Pipeline Reliability Webinar"  # no clause of the pitch fits
    for copy in (spring, digest, webinar):
        assert not any("…" in f for f in fields(copy))


def test_a_short_pitch_goes_whole_with_the_campaign_name() -> None:
    copy = write(brief(product_description="Pipewise 3 is here. It watches every pipeline."))
    assert copy.headline == "Spring Launch 2027: Pipewise 3 is here"
    assert copy.email_subject == "Pipewise 3 is here"


def test_when_nothing_of_the_brief_fits_a_fixed_phrase_does() -> None:
    word = "Supercalifragilistic" * 6  # 120 characters, one word
    copy = write(brief(campaign_name=word, product_description=word, call_to_action=word, url=""))
    assert copy.headline == copy.email_subject == copy.blog_title == FALLBACK
    assert all(len(p) <= 280 for p in copy.social_posts)


def test_social_posts_fit_the_campaigns_limit_with_the_link() -> None:
    for limit in (50, 80, 140, 280, 3000):
        copy = write(brief(social_max_length=limit, url="https://pipewise.example.com/l"))
        assert copy.social_posts and all(0 < len(p) <= limit for p in copy.social_posts), (limit, copy.social_posts)
        assert all(p.endswith("https://pipewise.example.com/l") for p in copy.social_posts)
    # A link longer than any post can hold is left out, not cut.
    long_url = "https://pipewise.example.com/" + "x" * 60
    copy = write(brief(social_max_length=50, url=long_url))
    assert all(len(p) <= 50 and "pipewise.example.com" not in p for p in copy.social_posts)
    assert long_url in copy.email_body


def test_writer_notes_appear_in_every_body_and_a_post() -> None:
    copy = write(brief(writer_notes="Mention the 14-day free trial\n\nEvery plan includes lineage."))
    for body in (copy.email_body, copy.blog_body):
        paragraphs = body.split("\n\n")
        assert "Mention the 14-day free trial." in paragraphs and "Every plan includes lineage." in paragraphs
    assert "Mention the 14-day free trial. Every plan includes lineage." in copy.social_posts[1]
    assert len(copy.social_posts[1]) <= 280
    # Without notes, none of that: the notes are what changed the copy.
    plain = write(brief())
    assert "14-day" not in plain.email_body + plain.blog_body + " ".join(plain.social_posts)


def test_writer_notes_are_data_cleaned_and_bounded_by_whole_lines() -> None:
    notes = "Say <b>hi</b> & **bold**\x00\x07\u202e to\tall  \r\n# Not a heading"
    assert writer_note_lines(notes) == ["Say <b>hi</b> & **bold** to all", "# Not a heading"]  # markup kept as text
    copy = write(brief(writer_notes=notes))
    assert "Say <b>hi</b> & **bold** to all.\n\n# Not a heading." in copy.email_body  # a full stop, nothing else
    assert not any(c in f for f in fields(copy) for c in "\x00\x07\u202e")
    long_lines = "\n".join(f"Line {i} " + "x" * 90 + "." for i in range(40))  # about 4000 characters
    kept = writer_note_lines(long_lines)
    assert kept == long_lines.splitlines()[: len(kept)] and sum(len(line) + 1 for line in kept) - 1 <= WRITER_NOTES_MAX
    assert len(kept) == 20  # 20 whole lines of 99 characters, with their line breaks, fit in 2000


def test_sentences_and_clauses() -> None:
    text = "Use e.g. dbt or Airflow. It works! Does it? Yes\n\nA new paragraph without a stop"
    assert sentences(text) == ["Use e.g. dbt or Airflow.", "It works!", "Does it?", "Yes", "A new paragraph without a stop"]
    assert sentences("数据管道。可观测性！") == ["数据管道。", "可观测性！"]
    assert clauses("Fast, simple and cheap: for data teams - today (beta, free)") == [
        "Fast, simple and cheap: for data teams - today",
        "Fast, simple and cheap: for data teams",
        "Fast, simple and cheap",
    ]  # "Fast" alone is one word; "today (beta" leaves a parenthesis open
    assert clean("a…\u2028b\x1fc\u202ed\r\n\n\n\ne") == "a...\nb cd\n\ne"


# --- properties -----------------------------------------------------------------------------------

_VOCABULARY = [
    "Pipewise",
    "pipeline",
    "pipelines",
    "data",
    "teams",
    "observability",
    "freshness",
    "cost",
    "alerts",
    "dbt",
    "lineage",
    "warehouse",
    "incident",
    "a",
    "the",
    "of",
    "and",
    "every",
    "3",
    "2027",
    "SaaS",
    "über",
    "naïve",
    "数据管道",
    "🚀",
    "co-op",
    "don't",
    "e.g.",
    "U.S.",
    "v3.2",
    "Dr.",
    "https://example.com/a",
    "<script>",
    "**bold**",
    "#tag",
    "{{ page }}",
    "[link](javascript:x)",
]
_WORD = st.one_of(
    st.sampled_from(_VOCABULARY),
    st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12),
    st.text(st.characters(categories=("L", "N")), min_size=60, max_size=300),  # longer than any short field
)
_SEPARATOR = st.sampled_from(
    [" "] * 12
    + [
        ", ",
        ". ",
        ": ",
        "; ",
        " - ",
        " — ",
        "? ",
        "! ",
        " (",
        ") ",
        '"',
        "\n",
        "\n\n",
        "…",
        "... ",
        "\t",
        "\x00",
        "\u202e",
        "\u2028",
        "，",
        "。",
        "  ",
    ]
)


def _prose(max_size: int) -> st.SearchStrategy[str]:
    pieces = st.lists(st.tuples(_WORD, _SEPARATOR).map("".join), max_size=max_size // 6)
    return st.one_of(
        pieces.map(lambda p: "".join(p)[:max_size]),
        st.text(max_size=max_size),  # anything at all, control characters included
        st.integers(1, max_size // 9).map(lambda n: ("pipeline " * n).strip()),  # words and no punctuation
    )


_URL = st.one_of(st.just(""), st.from_regex(r"\Ahttps://[a-z]{1,20}\.example\.com/[A-Za-z0-9/_-]{0,300}\Z"))
_BRIEFS = st.builds(
    CopyBrief,
    campaign_name=_prose(200),
    product_description=_prose(2000),
    audience=_prose(200),
    brand_voice=st.one_of(st.just("Plain.\nSign-off: The Pipewise team"), _prose(500)),
    channels=st.just(["email", "social", "blog"]),
    social_max_length=st.integers(50, 3000),
    research_headlines=st.lists(_prose(300), max_size=4),
    research_notes=st.lists(_prose(600), max_size=2),
    writer_notes=st.one_of(st.just(""), _prose(2000)),
    call_to_action=st.one_of(st.just(""), _prose(200)),
    url=_URL,
)
# A few seconds each; database=None: no example database written into the work tree.
PROPERTY = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_LINE_BREAKS = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"})


def _hidden(c: str) -> bool:
    """Control characters, and format characters but for the joiners and emoji tags."""
    return (
        unicodedata.category(c) == "Cc"
        or unicodedata.category(c) == "Cf"
        and c not in "\u200c\u200d"
        and not ("\U000e0020" <= c <= "\U000e007f")
    )


def _seen(text: str) -> bool:
    """Something shows: a character that is no space, control, format or unassigned one."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def _visible(text: str) -> str:
    """The text as a reader sees it: line breaks unified, invisible characters gone, "…" as "..."."""
    text = text.replace("\r\n", "\n").translate(_LINE_BREAKS).replace("…", "...")
    return "".join(c if c == "\n" else " " if c.isspace() else "" if _hidden(c) else c for c in text)


def _flat(text: str) -> str:
    return " ".join(_visible(text).split())


def _first_paragraph(text: str) -> str:
    return next((" ".join(p.split()) for p in re.split(r"\n\s*\n", _visible(text)) if p.strip()), "")


def _ends_a_clause(short: str, source: str) -> bool:
    """``short`` begins ``source`` and stops where a sentence or a clause does: at its end, before punctuation
    (a comma, colon, full stop, dash, parenthesis...), or after a sentence's last mark."""
    if not short or not source.startswith(short):
        return False
    rest = source[len(short) :].lstrip()
    ended = short.rstrip("\"'”’)]」』）")[-1:] in (".", "!", "?", "。", "！", "？")
    return not rest or rest[0] in ".,;:!?-–—(，、；：。！？" or ended


def _whole_phrase(short: str, b: CopyBrief) -> bool:
    """A short field is the fixed phrase, or begins the pitch, the name or the call to action and ends a clause
    of it, with or without the campaign name before the pitch."""
    short, name, pitch = " ".join(short.split()), _flat(b.campaign_name), _first_paragraph(b.product_description)
    if short == FALLBACK or any(_ends_a_clause(short, s) for s in (pitch, name, _flat(b.call_to_action))):
        return True
    return any(short.startswith(name + sep) and _ends_a_clause(short[len(name + sep) :], pitch) for sep in (": ", " "))


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?()[]\"'“”«»，、；：。！？") for w in re.split(r"[\s，、；：。！？]+", _visible(text))} - {""}


@PROPERTY
@given(_BRIEFS)
def test_every_field_is_whole_within_its_limit_and_never_cut(b: CopyBrief) -> None:
    copy = write(b)
    everything = fields(copy)
    assert copy.social_posts and all(_seen(f) for f in everything)  # no field empty or blank
    assert not any("…" in f for f in everything)
    assert not any(c != "\n" and _hidden(c) for f in everything for c in f)
    assert len(copy.headline) <= HEADLINE_MAX and len(copy.blog_title) <= HEADLINE_MAX
    assert len(copy.email_subject) <= SUBJECT_MAX
    assert all(len(p) <= b.social_max_length for p in copy.social_posts)
    source_words = _words(b.campaign_name) | _words(b.product_description) | _words(b.call_to_action) | _words(FALLBACK)
    for short in (copy.headline, copy.email_subject, copy.blog_title):
        assert _words(short) <= source_words, short  # whole words only: nothing cut mid-word
        assert _whole_phrase(short, b), short  # and nothing cut mid-clause
    cta = ": ".join(p for p in (_flat(b.call_to_action), _flat(b.url)) if p)
    if cta and len(cta) + len(FALLBACK) + 2 <= b.social_max_length:
        assert copy.social_posts[0].endswith(" " + cta)  # the call to action and link, whole, in the post


@settings(PROPERTY, max_examples=150)
@given(_BRIEFS)
def test_writer_notes_are_in_both_bodies(b: CopyBrief) -> None:
    copy = write(b)
    lines = [" ".join(line.split()) for line in _visible(b.writer_notes).split("\n")]
    for line in filter(_seen, lines):  # the notes fit the 2000 characters: every line is kept
        assert line in copy.email_body and line in copy.blog_body, line


@settings(PROPERTY, max_examples=80)
@given(_BRIEFS)
def test_the_same_brief_gives_the_same_copy(b: CopyBrief) -> None:
    assert write(b) == TemplateCopywriter().write(CopyBrief.model_validate(b.model_dump()))
