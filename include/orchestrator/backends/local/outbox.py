"""Folder backends for the notify, email and social ports: the outbox of a campaign on this machine.

Nothing leaves the machine: a notification is a JSON file, an email a real RFC 5322 ``.eml`` file
(any mail client opens it), a social post one line of a JSONL queue. Every file has a deterministic
name derived from the effect's key, so an Airflow retry rewrites or adopts what a previous try
made instead of adding a second copy; undo deletes it and is a no-op when it is already gone.

:class:`FolderBackend` (``backends/common/folder.py``) is the shared helper ("write under a deterministic name
atomically; undo = delete if present").
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from include.orchestrator.backends.common.folder import FolderBackend, checked_key, json_bytes, now_iso, write_atomic
from include.orchestrator.domain.mail import as_bytes, message_id, mime_message
from include.orchestrator.domain.ports import Effect, Email, Message, SocialPost


class OutboxNotifier(FolderBackend):
    """Notify port: each message becomes ``<path>/<key>.json``."""

    port, backend, kind = "notify", "outbox", "notification"

    def plan(self, message: Message) -> Effect:
        target = self._file(message.key, ".json")
        return self._effect(
            message.key, {"path": str(target)}, f"notification {message.subject!r} for {', '.join(message.to)} in {target}"
        )

    def notify(self, message: Message) -> Effect:
        effect = self.plan(message)
        record = {
            "key": message.key,
            "to": message.to,
            "subject": message.subject,
            "text": message.text,
            "link": message.link,
            "created_at": now_iso(),
        }
        write_atomic(Path(effect.ref["path"]), json_bytes(record))
        return effect


class OutboxEmail(FolderBackend):
    """Email port without delivery: each email (one batch of recipients) becomes ``<path>/<key>.eml``,
    the very MIME message SMTP would carry (``mail.mime_message``), with the batch's envelope recipients
    in an ``X-Envelope-To`` header that only this file has (the message itself names none). Nothing
    was sent, so unlike SMTP delivery this is undoable."""

    port, backend, kind = "email", "outbox", "email"
    batches = True  # one file per batch of the campaign's batch_size, as SMTP sends them
    adopts = True  # a retry rewrites the same file: sending a batch again is harmless

    def plan(self, email: Email) -> Effect:
        target = self._file(email.key, ".eml")
        return self._effect(
            email.key,
            {"path": str(target), "message_id": message_id(email), "to": list(email.to)},
            f"email {email.subject!r} for {len(email.to)} recipient(s) written to {target}",
        )

    def send(self, email: Email) -> Effect:
        effect = self.plan(email)
        msg = mime_message(email)
        # The envelope, as a local MTA's queue file keeps it: who this copy is for. Not part of what a recipient gets.
        envelope = b"X-Envelope-To: " + ", ".join(email.to).encode("ascii", "backslashreplace") + b"\r\n"
        write_atomic(Path(effect.ref["path"]), envelope + as_bytes(msg))
        return effect


class LocalSocialQueue(FolderBackend):
    """Social port: posts queue as JSON lines in ``<path>/queue.jsonl`` for a publisher to pick up.

    Writers from any number of processes serialise on an fcntl lock of a separate lock file (the
    queue file itself is replaced on undo, and a lock on a replaced inode would protect nothing).
    """

    port, backend, kind = "social", "local_queue", "social_post"
    needs = "one host"  # one file appended under an fcntl lock, which hosts sharing a network disk cannot rely on

    @property
    def queue(self) -> Path:
        return self.path / "queue.jsonl"

    @contextmanager
    def _locked(self) -> Iterator[list[str]]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".queue.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield self.queue.read_text().splitlines(keepends=True) if self.queue.exists() else []

    @staticmethod
    def _key_of(line: str) -> str | None:
        try:
            return json.loads(line).get("key")
        except (ValueError, AttributeError):
            return None  # a torn or foreign line: kept as is, never matched

    def plan(self, post: SocialPost) -> Effect:
        return self._effect(
            checked_key(post.key),
            {"path": str(self.queue), "key": post.key},
            f"social post {post.key} for {', '.join(post.profiles)} queued in {self.queue}",
        )

    def post(self, post: SocialPost) -> Effect:
        effect = self.plan(post)
        with self._locked() as lines:
            queued = any(self._key_of(line) == post.key for line in lines)
            if not queued:
                record = {
                    "key": post.key,
                    "profiles": post.profiles,
                    "text": post.text,
                    "image_url": post.image_url,
                    "queued_at": now_iso(),
                }
                with open(self.queue, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
        return effect.model_copy(update={"summary": effect.summary.replace(" queued", " already queued")}) if queued else effect

    def undo(self, effect: Effect) -> bool:
        self._own(effect)
        key = effect.ref["key"]
        with self._locked() as lines:
            kept = [line for line in lines if self._key_of(line) != key]
            if len(kept) == len(lines):
                return False
            write_atomic(self.queue, "".join(kept).encode())
        return True
