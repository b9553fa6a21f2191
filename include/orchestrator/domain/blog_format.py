"""A campaign's blog post as a Jekyll site reads it: front matter, the hero image, and untrusted text made inert.

**Target: Jekyll** with its defaults (as GitHub Pages builds it): a post is ``_posts/<date>-<slug>.md``;
Jekyll parses the YAML front matter, renders the body with Liquid, then converts it with kramdown (GFM
input). Static files live under ``assets/``, so the hero image is ``assets/images/<date>-<slug>-hero.png``,
beside the post in the same commit, named after it. It is referenced twice: from the front matter as
``image`` in the object form jekyll-seo-tag documents (``path``, ``width``, ``height``; ``alt`` as Chirpy
and others read it), which minima and most themes turn into the Open Graph / Twitter card image; and from
the body as a Markdown image whose URL goes through Jekyll's ``relative_url`` filter (our own Liquid, so a
site served under a ``baseurl`` still finds it).

**Untrusted text** (the copy from an LLM or the template writer, a reviewer's edits, campaign fields) never
reaches Liquid, HTML or Markdown structure:

- Front matter values are JSON strings, which are valid YAML flow scalars, so no value can add a key or
  end the front matter. Non-ASCII is written as UTF-8, not as JSON ``\\u`` escapes: libyaml (Jekyll's
  Psych) refuses the surrogate pairs JSON uses for emoji; characters YAML does not allow raw are
  ``\\u``-escaped. Single-line fields (title, author, category, alt text) have every line break and
  control character folded into one space: a title cannot start a heading. Values are plain text:
  themes escape them where they print them (minima's ``page.title | escape``, jekyll-seo-tag).
- Body and alt text: ``&``, ``<``, ``>`` become entities (no raw HTML: no ``<script>``, no
  ``<img onerror>``, no autolinks); ``{`` and ``}`` become ``&#123;`` and ``&#125;``, so the text holds no
  brace at all: Liquid never sees ``{{`` or ``{%`` (``{% endraw %}`` included, so no ``{% raw %}``
  wrapper is needed) and kramdown never sees an attribute list (``{: onclick=...}``) or an extension
  (``{::nomarkdown}``). Browsers show the entities as the characters. ``[`` and ``]`` are escaped, so no
  link, image, reference definition or footnote forms, except inline links to ``http(s)`` URLs made only
  of plain URL characters, which stay links (``javascript:`` and any other scheme stay text).
  ``\\`` is doubled (a writer's backslash cannot cancel an escape) and ``$`` escaped (kramdown math).
- Legitimate Markdown keeps working: headings (``## Why it matters``), paragraphs, lists, emphasis, code
  spans. What is lost on purpose: raw HTML, blockquotes (``>`` is escaped), images from the writer, and
  inside code spans and blocks the entities show as written (``&lt;``): telling code from text the
  way kramdown does is a parser of its own, and any difference would be a way around the escaping.

**Other engines** would need their own rules. Hugo: no Liquid, but shortcodes ``{{< >}}`` / ``{{% %}}``
are also expanded inside code blocks (the entities here already stop them in text); Goldmark drops raw
HTML unless ``unsafe`` is set; JSON front matter is fine; the image would go under ``static/`` or in a
page bundle beside ``index.md`` and ``relative_url`` would be Hugo's ``relURL``. Eleventy (Nunjucks or
Liquid over Markdown) needs the same brace handling; plain CommonMark renderers need only the HTML and
link rules.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from include.orchestrator.domain.model import Campaign
from include.orchestrator.domain.ports import BlogPost, Copy, Image

HERO_FOLDER = "assets/images"
_SAFE_PATH = re.compile(r"^[a-z0-9_][a-z0-9/_.-]*$")  # our own paths only (date and slug): safe inside Liquid quotes
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # C0 (but tab, LF), DEL, C1, lone surrogates
_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")  # every other line break Python or YAML knows
_YAML_RAW = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")  # not printable raw in YAML 1.1: escape them
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "{": "&#123;",
    "}": "&#125;",
    "\\": "\\\\",
    "[": "\\[",
    "]": "\\]",
    "$": "\\$",
}
_SPECIAL = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
# An inline link the writer may keep: text without brackets or line breaks, an http(s) URL of plain URL
# characters (no parentheses, quotes, braces or spaces: nothing that could end it early or reach Liquid).
_LINK = re.compile(r"(!?)\[([^\[\]\n]{1,300})\]\((https?://[A-Za-z0-9._~:/?#@!$&*+,;=%-]{1,2000})\)")


def post_path(day: date, slug: str) -> str:
    return _checked(f"_posts/{day.isoformat()}-{slug}.md")


def hero_path(day: date, slug: str) -> str:
    """Beside the post, named after it: one hero per post, found from the post's name alone."""
    return _checked(f"{HERO_FOLDER}/{day.isoformat()}-{slug}-hero.png")


def _checked(path: str) -> str:
    if not _SAFE_PATH.match(path) or ".." in path:
        raise ValueError(f"blog path {path!r} is not allowed")
    return path


def described(ref: dict[str, Any]) -> str:
    """A published post as its effect's summary names it: the post, and its hero when it has one."""
    return f"blog post {ref['path']}" + (f" with {ref['image']}" if ref.get("image") else "")


def single_line(text: str) -> str:
    """One line of plain text: line breaks, tabs and control characters become single spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def inline_text(text: str) -> str:
    """Untrusted single-line text for a Markdown span (alt text): inert for Liquid, HTML and Markdown."""
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], single_line(text))


def body_text(text: str) -> str:
    """The writer's Markdown body, made inert as the module explains; its headings and paragraphs stay."""
    text = _CONTROL.sub("", _BREAKS.sub("\n", text))

    def escaped(part: str) -> str:
        return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], part)

    out, pos = [], 0
    for link in _LINK.finditer(text):
        bang, label, url = link.groups()
        # "!" before a kept link would make it an image the writer chose (a tracking pixel): show the "!".
        out += [escaped(text[pos : link.start()]), "\\!" if bang else "", f"[{escaped(label)}]({url})"]
        pos = link.end()
    out.append(escaped(text[pos:]))
    return "".join(out).strip("\n")


def yaml_value(value: object) -> str:
    """A front matter value: JSON (valid YAML) with UTF-8 text, and what YAML cannot hold raw escaped."""
    return _YAML_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def hero_alt(campaign: Campaign, copy: Copy) -> str:
    """What the hero shows: the headline and the call to action drawn on it (``steps.render_image``)."""
    cta = single_line(campaign.product.call_to_action)
    return single_line(copy.headline) + (f". {cta}" if cta else "")


def blog_markdown(campaign: Campaign, copy: Copy, day: date, hero: Image | None = None) -> str:
    """The post's file: front matter, the hero image (when given), and the writer's body made inert."""
    settings = campaign.channels.blog
    assert settings is not None
    front: dict[str, object] = {
        "layout": "post",
        "title": single_line(copy.blog_title),
        "date": day.isoformat(),
        "author": single_line(settings.author),
        "categories": [single_line(settings.category)],
        "campaign": campaign.slug,
    }
    body = body_text(copy.blog_body)
    if hero is not None:
        url, alt = "/" + hero_path(day, campaign.slug), hero_alt(campaign, copy)
        front["image"] = {"path": url, "width": hero.width, "height": hero.height, "alt": alt}
        # Our own Liquid (a checked path in quotes): relative_url adds the site's baseurl.
        body = f'![{inline_text(alt)}]({{{{ "{url}" | relative_url }}}})\n\n{body}'
    lines = ["---", *(f"{key}: {yaml_value(value)}" for key, value in front.items()), "---", ""]
    return "\n".join(lines) + body + "\n"


def blog_post(campaign: Campaign, copy: Copy, day: date, key: str, hero: Image | None) -> BlogPost:
    """The post and its hero image, to commit together (``hero`` read with its bytes from the asset store)."""
    return BlogPost(
        key=key,
        path=post_path(day, campaign.slug),
        title=single_line(copy.blog_title),
        markdown=blog_markdown(campaign, copy, day, hero),
        hero=hero,
        hero_path=hero_path(day, campaign.slug) if hero is not None else "",
    )
