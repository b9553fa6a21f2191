"""Design port, local backend: channel images drawn with Pillow into a folder.

The same spec always gives the same bytes (no timestamps in the PNG), and the file name is the
spec's deterministic key, so a retry overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from include.orchestrator.ports import Effect, Image, ImageSpec

_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,150}$")


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def draw_png(spec: ImageSpec) -> bytes:
    """A headline card: brand background, accent bar, wrapped headline and subline."""
    image = PILImage.new("RGB", (spec.width, spec.height), spec.background)
    draw = ImageDraw.Draw(image)
    margin = spec.width // 16
    draw.rectangle([0, spec.height - spec.height // 20, spec.width, spec.height], fill=spec.accent)
    draw.rectangle([margin, margin, margin + spec.width // 10, margin + spec.height // 60 + 4], fill=spec.accent)
    size = max(16, spec.height // 8)
    font = ImageFont.load_default(size=size)
    while True:  # shrink the headline until it fits in three quarters of the height
        lines = _wrap(draw, spec.headline, font, spec.width - 2 * margin)
        if len(lines) * size * 1.25 <= spec.height * 0.6 or size <= 16:
            break
        size = int(size * 0.85)
        font = ImageFont.load_default(size=size)
    y = margin * 1.6
    for line in lines:
        draw.text((margin, y), line, fill=spec.foreground, font=font)
        y += size * 1.25
    if spec.subline:
        small = ImageFont.load_default(size=max(12, size // 2))
        draw.text((margin, y + size * 0.4), spec.subline, fill=spec.accent, font=small)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


class PillowDesign:
    """Implements the design port: one PNG per spec under ``path``."""

    def __init__(self, conn_id: str, path: Path) -> None:
        self.conn_id, self.path = conn_id, Path(path)

    def _file(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"image key {key!r} is not a safe file name")
        return self.path / f"{key}.png"

    def render(self, spec: ImageSpec) -> tuple[Image, Effect]:
        data = draw_png(spec)
        target = self._file(spec.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)  # atomic: readers never see half an image
        digest = hashlib.sha256(data).hexdigest()
        image = Image(channel=spec.channel, path=str(target), width=spec.width, height=spec.height, sha256=digest)
        effect = Effect(
            port="design",
            conn_id=self.conn_id,
            backend="pillow",
            kind="file",
            ref={"path": str(target), "sha256": digest},
            summary=f"{spec.channel} image {spec.width}x{spec.height} at {target}",
        )
        return image, effect

    def undo(self, effect: Effect) -> bool:
        target = Path(effect.ref["path"])
        if target.parent.resolve() != self.path.resolve():
            raise ValueError(f"{target} is not in the design folder {self.path}")
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True
