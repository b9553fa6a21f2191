"""Design port, local backend: channel images drawn with Pillow, kept in the asset store.

Each spec becomes one headline card: brand background, the headline wrapped and sized to fit,
the subline under it and an accent bar. The same spec always gives the same bytes (Pillow
writes no timestamps into a PNG) and the object is named after the spec's deterministic key, so a
retry overwrites the same object instead of adding another. Sizes come from the caller's spec.
"""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from include.orchestrator.backends.common.stored_images import StoredImages
from include.orchestrator.domain.ports import Effect, Image, ImageSpec

_MIN_SIDE, _MAX_SIDE = 64, 8192  # below: nothing legible fits; above: a typo, not a banner
_MIN_FONT = 12
_LEADING = 1.2  # line height as a multiple of the font size

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=64)  # the layout search asks for the same few sizes again and again
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Font, width: float) -> list[str]:
    """Greedy word wrap; a single word wider than ``width`` keeps its own (too long) line."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _layout(draw: ImageDraw.ImageDraw, spec: ImageSpec, box_w: float, box_h: float) -> tuple[int, list[str], int, list[str]]:
    """The largest headline size (and its subline at about half) whose text fits the box."""
    size = max(_MIN_FONT, min(spec.height // 5, spec.width // 9))
    while True:
        sub_size = max(_MIN_FONT, int(size * 0.45))
        head = _wrap(draw, spec.headline, _font(size), box_w)
        sub = _wrap(draw, spec.subline, _font(sub_size), box_w)
        widest = max([draw.textlength(line, font=_font(size)) for line in head] + [0.0])
        widest = max([widest] + [draw.textlength(line, font=_font(sub_size)) for line in sub])
        height = len(head) * size * _LEADING + (len(sub) * sub_size * _LEADING + size * 0.5 if sub else 0)
        if (widest <= box_w and height <= box_h) or size <= _MIN_FONT:
            return size, head, sub_size, sub
        size = max(_MIN_FONT, int(size * 0.9))


def draw_png(spec: ImageSpec) -> bytes:
    """The PNG bytes of one headline card (deterministic for a given spec)."""
    if not (_MIN_SIDE <= spec.width <= _MAX_SIDE and _MIN_SIDE <= spec.height <= _MAX_SIDE):
        raise ValueError(f"image {spec.key!r}: {spec.width}x{spec.height} is outside {_MIN_SIDE}..{_MAX_SIDE} px per side")
    image = PILImage.new("RGB", (spec.width, spec.height), spec.background)
    draw = ImageDraw.Draw(image)
    margin, bar = max(8, spec.width // 16), max(4, spec.height // 24)
    rule = max(3, spec.height // 80)
    draw.rectangle([0, spec.height - bar, spec.width, spec.height], fill=spec.accent)  # brand bar
    box_w, box_h = spec.width - 2 * margin, spec.height - 2 * margin - bar - 3 * rule
    size, head, sub_size, sub = _layout(draw, spec, box_w, box_h)
    block = len(head) * size * _LEADING + (len(sub) * sub_size * _LEADING + size * 0.5 if sub else 0)
    y = margin + 3 * rule + max(0.0, (box_h - block) / 2)  # vertically centred in the box
    draw.rectangle([margin, y - 3 * rule, margin + spec.width // 10, y - 2 * rule], fill=spec.accent)  # accent rule
    for line in head:
        draw.text((margin, y), line, fill=spec.foreground, font=_font(size))
        y += size * _LEADING
    y += size * 0.5
    for line in sub:
        draw.text((margin, y), line, fill=spec.foreground, font=_font(sub_size))
        y += sub_size * _LEADING
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class PillowDesign(StoredImages):
    """Implements the design port: one PNG per spec, drawn here, stored in the asset store."""

    backend = "pillow"

    def plan(self, spec: ImageSpec) -> Effect:
        return self._planned(spec, f"{spec.channel} image {spec.width}x{spec.height}")

    def render(self, spec: ImageSpec) -> tuple[Image, Effect]:
        return self._stored(spec, self.plan(spec), draw_png(spec), spec.width, spec.height)
