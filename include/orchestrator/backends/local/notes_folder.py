"""Notes port, local backend: a folder of markdown files standing in for a Notion database.

Each ``*.md`` file (subfolders included, hidden ones skipped) is one note. Optional YAML front
matter gives ``title`` and ``tags``; otherwise the title is the first ``# `` heading, then the
file name. Search is plain term overlap, good enough for a handful of research notes: each query
word found in the title scores 3, in the tags 2, in the body 1.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from include.orchestrator.backends.common.text import STOPWORDS
from include.orchestrator.domain.ports import Note
from include.orchestrator.errors import ConnectionConfigError

TITLE_WEIGHT, TAG_WEIGHT, BODY_WEIGHT = 3, 2, 1
# Words too common to say anything about relevance.
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*\r?$\n?", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def words(text: str) -> set[str]:
    """Case-insensitive word tokens."""
    return set(re.findall(r"\w+", text.casefold()))


def parse_note(text: str, fallback_title: str) -> tuple[str, list[str], str]:
    """(title, tags, body) of one markdown note. Raises ValueError on malformed front matter."""
    meta: dict[str, Any] = {}
    if match := _FRONT_MATTER.match(text):
        loaded = yaml.safe_load(match.group(1)) or {}
        if not isinstance(loaded, dict):
            raise ValueError("front matter is not a mapping")
        meta, text = loaded, text[match.end() :]
    tags = meta.get("tags") or []
    tags = [t.strip() for t in tags.split(",")] if isinstance(tags, str) else [str(t) for t in tags]
    heading = _HEADING.search(text)
    title = str(meta.get("title") or (heading.group(1) if heading else fallback_title)).strip()
    return title, [t for t in tags if t], text.strip()


class MarkdownNotes:
    """:class:`~include.orchestrator.domain.ports.NotesPort` over a folder of markdown files."""

    def __init__(self, conn_id: str, path: Path) -> None:
        self.conn_id = conn_id
        self.path = Path(path)

    def search(self, query: str, limit: int) -> list[Note]:
        if not self.path.is_dir():
            raise ConnectionConfigError(
                f"connection {self.conn_id!r}: notes folder {str(self.path)!r} does not exist or is not a folder"
            )
        terms = {w for w in words(query) if w not in STOPWORDS and len(w) > 1}
        if not terms or limit <= 0:
            return []
        scored: list[tuple[int, str, Note]] = []
        for file in sorted(self.path.rglob("*.md")):
            source = file.relative_to(self.path).as_posix()
            if any(part.startswith(".") for part in source.split("/")) or not file.is_file():
                continue
            try:
                title, tags, body = parse_note(file.read_text(encoding="utf-8"), file.stem)
            except (ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
                raise ValueError(f"connection {self.conn_id!r}: cannot read note {source!r}: {exc}") from exc
            weighted = ((TITLE_WEIGHT, words(title)), (TAG_WEIGHT, words(" ".join(tags))), (BODY_WEIGHT, words(body)))
            score = sum(weight for term in terms for weight, field_words in weighted if term in field_words)
            if score:
                scored.append((score, source, Note(title=title, text=body, source=source)))
        scored.sort(key=lambda item: (-item[0], item[1]))  # best first; ties by path, stable across runs
        return [note for _, _, note in scored[:limit]]
