"""The offline template copywriter: deterministic copy from the brief, with no language model.

It exists so a campaign runs end to end with no network and no credentials. It does not
understand anything: it fills fixed templates with the product description, the audience, the
themes most frequent in the research, the run's writer notes and the sign-off the brand voice
names (a line ``Sign-off: ...``). Research text is only counted, never copied into the copy
verbatim beyond single words. Production uses an OpenAI-compatible model through the
``campaign_writer`` connection instead.

Short fields are never cut. The headline (and blog title), the subject and each social post are
the first candidate that fits the limit: the description's first sentence (the pitch), with the
campaign name before it or alone; then the pitch up to a clause boundary (a comma, semicolon,
colon, spaced dash or opening parenthesis), longest first; then the campaign name, the call to
action, and last a fixed phrase. So no field ends mid-word or mid-clause and none shows "…".

Writer notes are the triggering user's plain text, kept as data: each line goes in verbatim
(control characters removed, spaces collapsed, a full stop added after a final letter or digit)
as its own paragraph of the email and of the blog post, and as sentences into the second social
post where they fit. The writer does not understand them: notes for it are written as the sentences
readers should read. It adds no escaping of its own: the blog body is Markdown, and publishing makes
untrusted text in it inert (``blog_format.body_text``; a backslash added here would show there).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from include.orchestrator.backends.common.text import clean, shown, writer_note_lines
from include.orchestrator.domain.ports import Copy, CopyBrief

NAME = "offline template copywriter (no LLM)"
HEADLINE_MAX = 80  # the image's headline and the blog title
SUBJECT_MAX = 70  # before the campaign's subject prefix (at most 40 more)
FALLBACK = "What's new"  # the short field when nothing from the brief fits: a fixed phrase, never a cut one

_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_STOP = frozenset(
    "this that with from your have more than what when will into about their they them been were "
    "also just only over most very such make made each other which these those then there here "
    "where while using used best need needs team teams".split()
)
# A sentence ends at . ! ? (and closing quotes or brackets) before a space, or at CJK full-width stops.
_SENTENCE_END = re.compile(r"([.!?]+)([\"'”’)\]]*)\s+|[。！？]+[」』）]*")
_ABBREVIATIONS = frozenset("e.g. i.e. vs. cf. approx. incl. mr. mrs. ms. dr. st.".split())
_CLAUSE_END = re.compile(r"[,;:](?=\s)|\s[-–—](?=\s)|\s\(|[，、；：]")
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("“", "”"), ("«", "»"))


def themes(texts: list[str], limit: int = 3) -> list[str]:
    """The most frequent content words of the research, as lower-case words."""
    counts = Counter(w.lower() for t in texts for w in _WORD.findall(t) if w.lower() not in _STOP)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


# --- text, cleaned and split ---------------------------------------------------------------------


def sentences(text: str) -> list[str]:
    """The sentences of cleaned text, in order; a blank line always ends one."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph, start = " ".join(paragraph.split()), 0
        for m in _SENTENCE_END.finditer(paragraph):
            if m[1]:
                last_word = paragraph[start : m.end(1)].rsplit(" ", 1)[-1].lower()
                if last_word in _ABBREVIATIONS or paragraph[m.end() : m.end() + 1].islower():
                    continue  # "e.g. this" or "v. the" goes on
            stop = m.end(2) if m[1] else m.end()
            found.append(paragraph[start:stop].strip())
            start = m.end()
        found.append(paragraph[start:].strip())
    return [s for s in found if s]


def balanced(text: str) -> bool:
    """Brackets closed and double quotes paired: a clause cut inside a parenthesis or quote is no clause."""
    for opening, closing in _PAIRS:
        depth = 0
        for c in text:
            depth += (c == opening) - (c == closing)
            if depth < 0:
                return False
        if depth:
            return False
    return text.count('"') % 2 == 0


def clauses(sentence: str) -> list[str]:
    """The sentence's beginnings that end at a clause boundary, longest first; at least two words
    (one alone is seldom a phrase: "However", "Today")."""
    found = []
    for m in _CLAUSE_END.finditer(sentence):
        prefix = sentence[: m.start()].rstrip()
        if (len(prefix.split()) >= 2 or m[0] in "，、；：") and balanced(prefix):
            found.append(prefix)
    return found[::-1]


def title_of(sentence: str) -> str:
    """A sentence as a title: without its final full stop(s)."""
    return sentence.rstrip(".").rstrip() if sentence.endswith(".") else sentence


def full_stop(text: str) -> str:
    """Text as a sentence: a full stop after a final letter or digit, other endings (? ! : ...) kept."""
    return f"{text}." if text and text[-1].isalnum() else text


def fit(candidates: Iterable[str], limit: int) -> str | None:
    """The first candidate that shows something in at most ``limit`` characters."""
    return next((c for c in candidates if len(c) <= limit and shown(c)), None)


def _sign_off(voice: str, campaign_name: str) -> str:
    match = re.search(r"^\s*sign-?off:\s*(.+)$", voice, re.IGNORECASE | re.MULTILINE)
    if match and match[1].strip():
        return match[1].strip()
    return f"The {campaign_name} team" if campaign_name else "The team"


# --- the writer ----------------------------------------------------------------------------------


class TemplateCopywriter:
    """Implements the writer port offline; the same brief always gives the same copy."""

    def write(self, brief: CopyBrief) -> Copy:
        name, audience = " ".join(clean(brief.campaign_name).split()), " ".join(clean(brief.audience).split())
        description = clean(brief.product_description)
        call, url = " ".join(clean(brief.call_to_action).split()), " ".join(clean(brief.url).split())
        notes = [full_stop(line) for line in writer_note_lines(brief.writer_notes)]
        pitch = next(iter(sentences(description)), "")
        topics = themes(brief.research_headlines + brief.research_notes)
        angle = f"Built around what matters most to {audience or 'you'}: {', '.join(topics)}." if topics else ""
        cta = f"{call}: {url}" if call and url else call or url
        sign_off = _sign_off(clean(brief.brand_voice), name)

        # Candidates for a short field, best first: every one a whole sentence, clause or phrase.
        sep = " " if name[-1:] in (":", "-", "–", "—") else ": "
        named = [name, *clauses(name)]
        pitch_title = title_of(pitch)
        pitches = [t for t in [pitch_title] if t and balanced(t)] + clauses(pitch_title)
        fallbacks = [*named, title_of(call), FALLBACK]
        headlines = [f"{name}{sep}{pitches[0]}" if name and pitches else "", *pitches, *fallbacks]
        headline = fit(headlines, HEADLINE_MAX) or FALLBACK

        body = "\n\n".join(p for p in ("Hello,", description, *notes, angle, cta, sign_off) if p)
        social = self._social(brief.social_max_length, headlines, pitches, notes, angle, call, url, cta)
        blog_body = "\n\n".join(
            p
            for p in (
                description,
                *notes,
                f"## Why it matters for {audience or 'you'}",
                angle or f"We built it for {audience or 'you'}.",
                f"## Get started\n\n{cta}" if cta else "",
                f"— {sign_off}",
            )
            if p
        )
        return Copy(
            headline=headline,
            email_subject=fit([*pitches, *fallbacks], SUBJECT_MAX) or FALLBACK,
            email_body=body,
            social_posts=social,
            blog_title=headline,
            blog_body=blog_body,
            writer=NAME,
        )

    @staticmethod
    def _social(
        limit: int, headlines: list[str], pitches: list[str], notes: list[str], angle: str, call: str, url: str, cta: str
    ) -> list[str]:
        """Two posts of at most ``limit`` characters, the call to action and link included: the
        headline; then the pitch, the writer notes' sentences and the research angle, each where
        it fits (notes first, as the user asked for them), or no second post when none does. A link
        too long for any post is left out."""
        tails = [t for t in dict.fromkeys((cta, url, call, "")) if len(t) < limit]

        def room(tail: str) -> int:
            return limit - len(tail) - (1 if tail else 0)

        def post(text: str, tail: str) -> str:
            return f"{text} {tail}" if tail else text

        # The headline with a full stop: one character less for it.
        tail = next(t for t in tails if fit(headlines, min(HEADLINE_MAX, room(t) - 1)))
        first = post(full_stop(fit(headlines, min(HEADLINE_MAX, room(tail) - 1)) or FALLBACK), tail)

        note_sentences = [s for n in notes for s in sentences(n)]
        # The second post ends as the first does, or shorter, but keeps the link the first one carries.
        linked = bool(url) and url in tail
        for end in [t for t in tails[tails.index(tail) :] if url in t or not linked]:
            space = room(end)
            chosen: dict[tuple[str, int], str] = {}
            for key, options in [
                *((("note", i), [full_stop(s)]) for i, s in enumerate(note_sentences)),
                (("pitch", 0), [full_stop(p) for p in pitches]),
                (("angle", 0), [angle]),
            ]:
                text = fit(options, space - (1 if chosen else 0))
                if text:
                    chosen[key] = text
                    space -= len(text) + (1 if len(chosen) > 1 else 0)
            if chosen:
                order = [("pitch", 0), *(("note", i) for i in range(len(note_sentences))), ("angle", 0)]
                second = post(" ".join(chosen[k] for k in order if k in chosen), end)
                return [first] if second == first else [first, second]
        return [first]
