"""The part of a design backend that keeps its images in the asset store: the Pillow backend and
Figma share it.
"""

from __future__ import annotations

import hashlib

from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.backends.common.folder import checked_key
from include.orchestrator.domain.ports import Effect, Image, ImageSpec


class StoredImages(MakesEffects):
    """The part of a design backend that keeps images in the asset store, one object per spec key."""

    port, kind = "design", "stored_image"

    def __init__(self, conn_id: str, store: AssetStore) -> None:
        self.conn_id, self.store = conn_id, store

    def disk_id(self) -> str:
        return self.store.disk_id()

    @staticmethod
    def name_of(spec: ImageSpec) -> str:
        return f"images/{checked_key(spec.key)}.png"

    def _planned(self, spec: ImageSpec, summary: str) -> Effect:
        url = self.store.url_of(self.name_of(spec))
        return self._effect(spec.key, {"url": url}, f"{summary} at {url}")

    def _stored(self, spec: ImageSpec, effect: Effect, data: bytes, width: int, height: int) -> tuple[Image, Effect]:
        """Store ``data`` under the spec's name (the same object on every try) and describe it."""
        url, digest = self.store.put(self.name_of(spec), data), hashlib.sha256(data).hexdigest()
        image = Image(channel=spec.channel, url=url, width=width, height=height, sha256=digest)
        return image, effect.model_copy(update={"ref": {**effect.ref, "sha256": digest}})

    def undo(self, effect: Effect) -> bool:
        url = effect.ref.get("url")
        if not url:  # an entry written before images moved to the asset store: it names a local path
            raise ValueError(f"{effect.key}: recorded before the asset store ({effect.ref}); remove it by hand")
        return self.store.delete(url)
