"""Plain-text helpers the copy and notes backends share: text cleaned to plain lines, the run's
writer notes as lines, the words a notes search ignores.
"""

from __future__ import annotations

import re
import unicodedata

WRITER_NOTES_MAX = 2000  # as the trigger form allows; only whole lines are kept


# Invisible format characters (Unicode Cf) are dropped: soft hyphens, zero-width spaces, and bidi
# overrides that can make a subject line read backwards. Kept: the joiners and emoji tags, which
# shape letters and emoji.
_KEPT_FORMAT = re.compile("[\u200c\u200d\U000e0020-\U000e007f]")


_NEWLINES = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"})


def clean(text: str) -> str:
    """Text as plain lines: no control or invisible format characters, spaces collapsed, at most one blank line in a row.

    "…" becomes "...": a reader cannot tell a source's ellipsis from a cut, and this copy never cuts."""
    text = text.replace("\r\n", "\n").translate(_NEWLINES)
    text = "".join(c if c == "\n" else " " if c.isspace() else "" if _invisible(c) else c for c in text)
    lines = [" ".join(line.split()) for line in text.replace("…", "...").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _invisible(c: str) -> bool:
    category = unicodedata.category(c)
    return category == "Cc" or (category == "Cf" and not _KEPT_FORMAT.match(c))


def shown(text: str) -> bool:
    """Whether some character of the text is seen (not a space, control, format or unassigned one)."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def writer_note_lines(text: str, limit: int = WRITER_NOTES_MAX) -> list[str]:
    """The run's writer notes as plain lines: cleaned, blank lines dropped, whole lines up to
    ``limit`` characters in all (a line that does not fit is left out, never cut)."""
    lines, used = [], 0
    for line in clean(text).split("\n"):
        if not shown(line):
            continue
        used += len(line) + 1
        if used - 1 > limit:
            break
        lines.append(line)
    return lines


# Words a notes search ignores (the notes folder and Notion rank notes by the others).
STOPWORDS = frozenset("a an and are as at be by for from in is it of on or our that the their this to we with who what".split())
