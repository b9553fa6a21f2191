"""The asset store (images travel between tasks by URL) and honest undo of effects on a local disk.

The S3 store runs against moto in server mode: a real S3-compatible HTTP server on loopback,
reached through Airflow's ObjectStoragePath, the amazon provider's filesystem and s3fs, as a
production worker would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.orchestrator.backends.assets import AssetStore, assets_from, open_assets
from include.orchestrator.backends.common.folder import OnDisk
from include.orchestrator.backends.local.images import PillowDesign
from include.orchestrator.backends.local.outbox import OutboxNotifier
from include.orchestrator.domain.ports import ImageSpec, Message
from include.orchestrator.errors import ConnectionConfigError
from include.orchestrator.saga import compensation, outcome
from include.orchestrator.saga.ledger import Ledger
from include.orchestrator.saga.recorder import Recorder
from tests.s3_server import S3Server


def spec(channel: str = "social") -> ImageSpec:
    return ImageSpec(
        key=f"launch-abc123-image-{channel}",
        channel=channel,
        width=320,
        height=180,
        headline="Pipewise 3",
        background="#0f172a",
        foreground="#f8fafc",
    )


class Conn:
    """An Airflow connection as the backends read it."""

    def __init__(self, conn_type: str, **extra: Any) -> None:
        self.conn_type, self.extra_dejson, self.host = conn_type, extra, None


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_store(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> AssetStore:
    bucket = s3.new_bucket()
    monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_ASSETS", json.dumps(s3.connection(bucket, "campaign-assets")))
    return open_assets()


# --- the store ---------------------------------------------------------------------------------
def test_a_file_store_keeps_bytes_by_url_and_refuses_other_urls(tmp_path: Path) -> None:
    store = assets_from("campaign_assets", Conn("fs", path=str(tmp_path / "assets")))
    url = store.put("images/a.png", b"one")
    assert url == (tmp_path / "assets" / "images" / "a.png").resolve().as_uri() and store.get(url) == b"one"
    assert store.put("images/a.png", b"two") == url and store.get(url) == b"two"  # a retry overwrites
    assert store.delete(url) is True and store.delete(url) is False and store.get(url) is None
    (tmp_path / "secret").write_text("keep")
    for url in ((tmp_path / "secret").as_uri(), f"{store.root_url}/../secret", "s3://elsewhere/images/a.png"):
        with pytest.raises(ValueError, match="not in the asset store"):
            store.get(url)
        with pytest.raises(ValueError, match="not in the asset store"):
            store.delete(url)
    assert (tmp_path / "secret").read_text() == "keep"


def test_the_s3_store_over_real_http(s3: S3Server, s3_store: AssetStore) -> None:
    bucket = s3_store.root_url.removeprefix("s3://").split("/")[0]
    url = s3_store.put("images/a.png", b"png bytes")
    assert url == f"s3://{bucket}/campaign-assets/images/a.png"
    assert s3.objects(bucket) == {"campaign-assets/images/a.png": b"png bytes"}
    assert s3_store.get(url) == b"png bytes" and s3_store.disk_id() == ""  # every worker sees it
    assert s3_store.delete(url) is True and s3_store.delete(url) is False
    assert s3.objects(bucket) == {} and s3_store.get(url) is None


def test_images_render_to_s3_and_are_read_back_checked(s3: S3Server, s3_store: AssetStore) -> None:
    design = PillowDesign("campaign_design", s3_store)
    image, effect = design.render(spec())
    assert image.url.startswith("s3://") and effect.ref["url"] == image.url and design.disk_id() == ""
    assert "data" not in image.model_dump()  # XCom carries the URL only
    read = s3_store.read_image(image)  # another task, another host: by URL
    assert read.data and read.data.startswith(b"\x89PNG")
    s3.put(image.url, b"tampered")
    with pytest.raises(ValueError, match="changed since it was rendered"):
        s3_store.read_image(image)
    fresh = PillowDesign("campaign_design", open_assets())
    assert fresh.undo(fresh.plan(spec())) is True  # compensation, from the ledger's planned entry alone
    with pytest.raises(FileNotFoundError, match="not in the asset store"):
        s3_store.read_image(image)
    assert fresh.undo(fresh.plan(spec())) is False


@pytest.mark.parametrize(
    ("conn", "words"),
    [
        ({"conn_type": "aws", "login": "k", "password": "s"}, "needs the extra 'url'"),
        ({"conn_type": "aws", "extra": {"url": "s3://"}}, "needs the extra 'url'"),
        ({"conn_type": "aws", "extra": {"url": "just-a-folder"}}, "needs the extra 'url'"),
        ({"conn_type": "generic", "extra": {"url": "nosuchfs://bucket/x"}}, "no filesystem is installed for nosuchfs://"),
        ({"conn_type": "fs"}, "needs the extra 'path'"),
        ({"conn_type": "aws", "extra": {"url": "s3://b/x", "timeout": "soon"}}, "'timeout' must be seconds"),
        ({"conn_type": "aws", "extra": {"url": "s3://b/x", "timeout": 0}}, "'timeout' must be seconds"),
    ],
)
def test_a_misconfigured_store_is_an_error_naming_the_connection(monkeypatch, conn, words) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_ASSETS", json.dumps(conn))
    with pytest.raises(ConnectionConfigError, match=words) as info:
        open_assets()
    assert "campaign_assets" in str(info.value)


def test_a_missing_store_is_an_error_never_a_local_folder(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CAMPAIGN_ASSETS", raising=False)
    with pytest.raises(ConnectionConfigError, match="'campaign_assets' is not defined"):
        open_assets()


# --- disks ---------------------------------------------------------------------------------------
def test_a_disk_id_is_stable_per_folder_and_differs_between_disks(tmp_path: Path) -> None:
    first = OnDisk.disk_of(tmp_path / "host-a" / "outbox")
    assert first == OnDisk.disk_of(tmp_path / "host-a" / "outbox")  # the marker, read again
    assert first != OnDisk.disk_of(tmp_path / "host-b" / "outbox")  # the same path on another disk
    assert (tmp_path / "host-a" / ".outbox.disk-id").exists() and not (tmp_path / "host-a" / "outbox").exists()
    local = assets_from("campaign_assets", Conn("fs", path=str(tmp_path / "assets")))
    assert local.disk_id() == OnDisk.disk_of(tmp_path / "assets")


def _notify(recorder: Recorder, outbox: OutboxNotifier) -> None:
    recorder.wrap("notify", outbox).notify(Message(key="spring-abc-review-request", to=["dana"], subject="s", text="t"))


def test_an_effect_on_a_disk_this_worker_lacks_is_left_never_absent(tmp_path: Path) -> None:
    """Worker A made a notification on its own disk; compensation runs on worker B."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    recorder = Recorder("d", "r", "review.notify_reviewers", -1, lambda: ledger)
    on_a = OutboxNotifier("campaign_notify", tmp_path / "host-a" / "outbox")
    _notify(recorder, on_a)
    [entry] = ledger.entries("d", "r")
    assert entry.effect.disk == on_a.disk_id() and entry.state == "made"

    on_b = OutboxNotifier("campaign_notify", tmp_path / "host-b" / "outbox")  # same conn id, another disk
    entries = compensation.compensate(ledger, "d", "r", lambda port, conn_id: on_b)
    [entry] = entries
    assert entry.state == "failed" and "does not see" in entry.error and on_a.disk_id() in entry.error
    assert list((tmp_path / "host-a" / "outbox").glob("*.json"))  # untouched: B could not see it
    result = outcome.report("d", "r", "rolled back", "rejected", entries)
    assert result.status == "cleanup needed" and [line.key for line in result.left] == ["spring-abc-review-request"]
    assert result.absent == []

    # Run again where the disk is (a retry of compensation.undo on worker A): undone, truthfully.
    entries = compensation.compensate(ledger, "d", "r", lambda port, conn_id: on_a)
    assert [e.state for e in entries] == ["undone"] and not list((tmp_path / "host-a" / "outbox").glob("*.json"))
    assert outcome.report("d", "r", "rolled back", "rejected", entries).status == "rolled back"


def test_a_retry_on_another_disk_is_its_own_entry(tmp_path: Path) -> None:
    """Worker A made it and died before the record; the retry on worker B made it again on B's disk."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    on_a = OutboxNotifier("campaign_notify", tmp_path / "host-a" / "outbox")
    on_b = OutboxNotifier("campaign_notify", tmp_path / "host-b" / "outbox")
    _notify(Recorder("d", "r", "review.notify_reviewers", -1, lambda: ledger), on_a)
    _notify(Recorder("d", "r", "review.notify_reviewers", -1, lambda: ledger), on_b)
    assert sorted(e.effect.disk for e in ledger.entries("d", "r")) == sorted([on_a.disk_id(), on_b.disk_id()])
    entries = compensation.compensate(ledger, "d", "r", lambda port, conn_id: on_b)
    assert sorted(e.state for e in entries) == ["failed", "undone"]  # B's copy undone, A's left open


def test_a_planned_entry_on_the_same_disk_is_proved_absent(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    outbox = OutboxNotifier("campaign_notify", tmp_path / "outbox")
    planned = outbox.plan(Message(key="k", to=["dana"], subject="s", text="t"))
    ledger.planned("d", "r", "review.notify_reviewers", -1, planned.model_copy(update={"disk": outbox.disk_id()}))
    assert [e.state for e in compensation.compensate(ledger, "d", "r", lambda port, conn_id: outbox)] == ["absent"]
