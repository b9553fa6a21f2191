"""The shared base of the folder backends: one file per effect under a deterministic name.

Writing is atomic (readers see the old file or the new one) and undo deletes the file, a no-op
when it is already gone. Used by the outbox and dashboard backends.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from include.orchestrator.backends.common.effects import MakesEffects
from include.orchestrator.domain.ports import Effect

# Keys become file names and the left part of Message-IDs: dot-atoms of safe characters only.
_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def checked_key(key: str, what: str = "key") -> str:
    if len(key) > 200 or not _KEY.match(key):
        raise ValueError(f"{what} {key!r} is not usable as a file name: use letters, digits, '-', '_' and single dots")
    return key


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


class OnDisk:
    """A backend whose state lives in a folder on a local disk.

    Only processes that see that disk see its effects. Workers on hosts that share no disk (Celery
    or Kubernetes) do not, so every effect such a backend makes is stamped with the disk's id
    (``Effect.disk``), and compensation running where that disk is not mounted leaves the effect
    open and reports it as left, never as absent (``saga.compensate``). ``needs`` says, in one
    place per backend, what a deployment must give it: ``"one host"`` (file locks or an embedded
    database that hosts cannot share over a network disk) or ``"a shared disk"`` (plain files
    written atomically, which any host mounting the same disk sees). README, "Scaling out".
    """

    needs: ClassVar[str]
    path: Path

    def disk_id(self) -> str:
        return self.disk_of(self.path)

    @staticmethod
    def disk_of(folder: Path) -> str:
        """``<host>/<id>``: the id of the disk holding ``folder``, kept in a marker file made on first use.
        The same folder seen from two hosts that share the disk gives the same id; two disks mounted
        at the same path on two hosts give two."""
        folder = Path(folder)  # the marker sits beside the folder: some (a bare git repository) must hold nothing else
        marker = folder.with_name(f".{folder.name}.disk-id")
        try:
            return marker.read_text().strip()
        except FileNotFoundError:
            pass
        marker.parent.mkdir(parents=True, exist_ok=True)
        made = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
        made.write_text(f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}\n")
        try:  # a hard link appears whole or not at all: two processes making it at once agree on the first
            os.link(made, marker)
        except FileExistsError:
            pass
        finally:
            made.unlink()
        return marker.read_text().strip()


class FolderBackend(OnDisk, MakesEffects):
    """Base of the folder backends: one file per effect, named after its key, under ``path``."""

    needs: ClassVar[str] = "a shared disk"

    def __init__(self, conn_id: str, path: Path | str) -> None:
        self.conn_id = conn_id
        self.path = Path(path)

    def _file(self, key: str, suffix: str) -> Path:
        """Where the effect named ``key`` lives: known before it is made, so undo finds it either way."""
        return self.path / f"{checked_key(key)}{suffix}"

    def _own(self, effect: Effect) -> Path:
        """The file an effect names, refusing paths outside this backend's folder (XCom is input)."""
        target = Path(effect.ref["path"]).resolve()
        if not target.is_relative_to(self.path.resolve()):
            raise ValueError(f"{self.backend}: effect path {target} is outside the folder {self.path}")
        return target

    def undo(self, effect: Effect) -> bool:
        target = self._own(effect)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True
