"""The offline template copywriter: deterministic copy from the brief, with no language model.

It exists so a campaign runs end to end with no network and no credentials. It does not
understand anything: it fills fixed templates with the product description, the audience, the
themes most frequent in the research, and the sign-off the brand voice names (a line
``Sign-off: ...``). Research text is only counted, never copied into the copy verbatim beyond
single words. Production uses an OpenAI-compatible model through the ``campaign_writer``
connection instead.
"""

from __future__ import annotations

import re
from collections import Counter

from include.orchestrator.ports import Copy, CopyBrief

NAME = "offline template copywriter (no LLM)"
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_STOP = frozenset(
    "this that with from your have more than what when will into about their they them been were "
    "also just only over most very such make made each other which these those then there here "
    "where while using used best need needs team teams".split()
)


def themes(texts: list[str], limit: int = 3) -> list[str]:
    """The most frequent content words of the research, as lower-case words."""
    counts = Counter(w.lower() for t in texts for w in _WORD.findall(t) if w.lower() not in _STOP)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def _first_sentence(text: str, limit: int) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".!?")
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def _sign_off(voice: str, campaign_name: str) -> str:
    match = re.search(r"^\s*sign-?off:\s*(.+)$", voice, re.IGNORECASE | re.MULTILINE)
    return match[1].strip() if match else f"The {campaign_name} team"


class TemplateCopywriter:
    """Implements the writer port offline; the same brief always gives the same copy."""

    def write(self, brief: CopyBrief) -> Copy:
        pitch = _first_sentence(brief.product_description, 90)
        topics = themes(brief.research_headlines + brief.research_notes)
        angle = f"Built around what matters most to {brief.audience}: {', '.join(topics)}." if topics else ""
        cta = f"{brief.call_to_action}: {brief.url}" if brief.url else brief.call_to_action
        sign_off = _sign_off(brief.brand_voice, brief.campaign_name)
        headline = _first_sentence(f"{brief.campaign_name}: {pitch}", 80)
        body = "\n\n".join(p for p in ("Hello,", brief.product_description.strip(), angle, cta, sign_off) if p)
        social = [
            f"{headline} {cta}",
            f"{pitch}. {angle} {cta}".replace("  ", " ").strip(),
        ]
        blog_body = "\n\n".join(
            p
            for p in (
                f"{brief.product_description.strip()}",
                f"## Why it matters for {brief.audience}",
                angle or f"We built it for {brief.audience}.",
                f"## Get started\n\n{cta}",
                f"— {sign_off}",
            )
            if p
        )
        return Copy(
            headline=headline,
            email_subject=_first_sentence(pitch, 70),
            email_body=body,
            social_posts=social,
            blog_title=headline,
            blog_body=blog_body,
            writer=NAME,
        )
