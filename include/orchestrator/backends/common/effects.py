"""Whose an effect is: the port, backend, kind and connection every backend stamps on what it makes."""

from __future__ import annotations

from typing import Any, ClassVar

from include.orchestrator.domain.ports import Effect


class MakesEffects:
    """A backend that makes one kind of effect; its class says ``port``, ``backend`` and ``kind`` once."""

    port: ClassVar[str]
    backend: ClassVar[str]
    kind: ClassVar[str]
    conn_id: str

    def _effect(self, key: str, ref: dict[str, Any], summary: str, *, undoable: bool = True) -> Effect:
        """The effect named ``key`` (its idempotency key): ``ref`` finds it again, ``summary`` says it in words."""
        return Effect(
            port=self.port,
            conn_id=self.conn_id,
            backend=self.backend,
            kind=self.kind,
            key=key,
            ref=ref,
            undoable=undoable,
            summary=summary,
        )
