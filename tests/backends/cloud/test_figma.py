"""The Figma design backend against the Figma double (a real local HTTP server).

What every backend promises alike (plan without I/O, undo twice and from the planned entry, 429 with
both Retry-After forms, 5xx, timeout, refused connection) is checked in tests/backends/test_contract.py,
which builds this backend with tests/builders/figma.py (as this file does); this file keeps what is this
service's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from PIL import Image as PILImage
from werkzeug import Response

from include.orchestrator.backends import registry as connections
from include.orchestrator.backends.cloud.figma import FigmaDesign
from include.orchestrator.errors import ConnectionConfigError, ServiceError
from tests.builders.figma import CHANNELS, COMPONENTS, FILE_KEY, conn, design, spec, store
from tests.doubles.figma import FigmaDouble


@pytest.fixture(scope="module")
def server() -> Iterator[FigmaDouble]:
    with FigmaDouble() as double:  # one server for the module: stopping one takes half a second
        yield double


@pytest.fixture
def figma(server: FigmaDouble) -> FigmaDouble:
    server.reset()
    server.add_file(FILE_KEY, COMPONENTS, unpublished={"Draft card": (10, 10, "#000000")})
    return server


def failure(call) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        call()
    assert "test-token" not in str(info.value)  # the token never shows in an error
    return info.value


# --- happy path and idempotency ----------------------------------------------------------------
def test_render_exports_the_channel_component_as_png(figma, tmp_path):
    image, effect = design(figma, tmp_path, scale=2).render(spec())
    stored = tmp_path / "images" / "launch-abc123-image-email.png"
    assert image.url == stored.resolve().as_uri()
    with PILImage.open(stored) as png:
        assert png.format == "PNG" and png.size == (600, 200)  # the component's size times scale, not the spec's
        assert png.getpixel((599, 199)) == (15, 23, 42)
    assert (image.channel, image.width, image.height) == ("email", 600, 200)
    assert image.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert (effect.port, effect.backend, effect.kind, effect.key) == (
        "design",
        "figma",
        "stored_image",
        "launch-abc123-image-email",
    )
    assert effect.ref == {
        "url": image.url,
        "file_key": FILE_KEY,
        "component": "Email header",
        "node_id": "1:1",
        "sha256": image.sha256,
    }
    assert "test-token" not in effect.model_dump_json()
    assert figma.exports == [(FILE_KEY, "1:1", "png", "2")]
    assert figma.downloads == figma.issued_urls()
    assert not list(tmp_path.glob("images/.*.tmp"))  # written atomically, nothing left behind
    assert figma.problems == []


def test_each_channel_gets_its_own_component(figma, tmp_path):
    backend = design(figma, tmp_path)
    sizes = {c: backend.render(spec(c, key=f"launch-abc123-image-{c}"))[0] for c in CHANNELS}
    assert {c: (i.width, i.height) for c, i in sizes.items()} == {"email": (300, 100), "social": (240, 135), "blog": (320, 180)}
    assert figma.count("GET", r"/v1/files/.*/components") == 1  # names resolved once per backend instance
    assert figma.problems == []


def test_a_retry_adopts_the_stored_png_without_calling_figma(figma, tmp_path):
    first, made = design(figma, tmp_path).render(spec())
    calls = len(figma.calls)
    again, adopted = design(figma, tmp_path).render(spec())  # a new try: a new process, a new instance
    assert len(figma.calls) == calls and len(figma.exports) == 1  # no second export
    assert again == first and adopted.key == made.key and adopted.ref["url"] == made.ref["url"]
    assert adopted.ref["node_id"] is None and adopted.ref["sha256"] == first.sha256
    assert len(list((tmp_path / "images").iterdir())) == 1
    assert figma.problems == []


def test_a_broken_stored_file_is_exported_again(figma, tmp_path):
    target = tmp_path / "images" / "launch-abc123-image-email.png"
    target.parent.mkdir()
    target.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    image, _ = design(figma, tmp_path).render(spec())
    assert len(figma.exports) == 1 and (image.width, image.height) == (300, 100)
    with PILImage.open(target) as png:
        png.verify()
    assert figma.problems == []


def test_a_node_id_in_components_is_exported_without_a_lookup(figma, tmp_path):
    backend = design(figma, tmp_path, components={"email": "1:2"})
    image, effect = backend.render(spec())
    assert (image.width, image.height) == (240, 135) and effect.ref["node_id"] == "1:2"
    assert figma.count("GET", r"/v1/files/.*/components") == 0
    assert figma.problems == []


def test_backend_for_builds_figma_from_an_http_connection(figma, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_ASSETS", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    backend = connections.backend_for("design", "campaign_design", conn(figma.url))
    assert isinstance(backend, FigmaDesign)
    image, _ = backend.render(spec("social", key="launch-abc123-image-social"))
    assert (image.width, image.height) == (240, 135)
    assert figma.problems == []


# --- plan and undo -----------------------------------------------------------------------------
def test_undo_refuses_a_url_outside_its_store(figma, tmp_path):
    backend = design(figma, tmp_path / "pngs")
    outside = tmp_path / "other.png"
    outside.write_bytes(b"keep")
    planned = backend.plan(spec())
    with pytest.raises(ValueError, match="not in the asset store"):
        backend.undo(planned.model_copy(update={"ref": {"url": outside.as_uri()}}))
    assert outside.exists()


# --- errors ------------------------------------------------------------------------------------
def test_a_wrong_token_fails_fast_with_figmas_message(figma, tmp_path):
    error = failure(lambda: design(figma, tmp_path, token="wrong-token").render(spec()))
    assert error.status == 403 and error.retryable is False and "Invalid token" in str(error)
    assert figma.problems == ["GET /v1/files/Fk9aB3cD7eF1gH5iJ2kL0m/components: X-Figma-Token is wrong"]
    assert not list(tmp_path.iterdir())


def test_an_unknown_file_fails_fast(figma, tmp_path):
    error = failure(lambda: design(figma, tmp_path, file_key="NoSuchFile123").render(spec()))
    assert error.status == 404 and error.retryable is False and "Not found" in str(error)
    error = failure(lambda: design(figma, tmp_path, file_key="NoSuchFile123", components={"email": "1:1"}).render(spec()))
    assert error.status == 404 and error.retryable is False and "Not found" in str(error)
    assert figma.problems == []


def test_an_unknown_component_names_itself_and_what_is_published(figma, tmp_path):
    error = failure(lambda: design(figma, tmp_path, components={"email": "Draft card"}).render(spec()))
    assert error.retryable is False and "'Draft card'" in str(error)
    assert "'Email header'" in str(error) and "'Social card'" in str(error)
    assert figma.exports == [] and figma.problems == []


def test_a_name_shared_by_two_components_is_refused(figma, tmp_path):
    assert [figma.add_component("SharedNames1", "Card", (10, 10, "#000000")) for _ in range(2)] == ["1:1", "1:2"]
    error = failure(lambda: design(figma, tmp_path, file_key="SharedNames1", components={"email": "Card"}).render(spec()))
    assert error.retryable is False and "1:1, 1:2" in str(error)


def test_a_failed_render_is_an_error(figma, tmp_path):
    figma.fail_render("1:1")
    error = failure(lambda: design(figma, tmp_path).render(spec()))
    assert error.retryable is False and "could not render" in str(error)
    assert not list(tmp_path.iterdir()) and figma.problems == []


def test_an_err_in_the_export_answer_is_an_error(figma, tmp_path):
    figma.fail_next("GET", r"/v1/images/.*", 400, {"err": "Render timeout, try requesting fewer or smaller images"})
    error = failure(lambda: design(figma, tmp_path).render(spec()))
    assert error.status == 400 and error.retryable is False and "Render timeout" in str(error)


def test_a_channel_without_a_component_is_a_configuration_error(figma, tmp_path):
    backend = design(figma, tmp_path, components={"email": "Email header"})
    with pytest.raises(ConnectionConfigError, match="'blog'"):
        backend.render(spec("blog", key="launch-abc123-image-blog"))
    assert figma.calls == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"file_key": ""}, "file_key"),
        ({"file_key": "../etc"}, "file_key"),
        ({"components": {}}, "components"),
        ({"components": ["Email header"]}, "components"),
        ({"scale": 5}, "scale"),
        ({"scale": "big"}, "scale"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, extra, field):
    with pytest.raises(ConnectionConfigError, match=field):
        FigmaDesign("campaign_design", conn("https://api.figma.com", **extra), store(tmp_path))


def test_rate_limited_with_retry_after_seconds_is_retryable(figma, tmp_path):
    headers = {"Retry-After": "30", "X-Figma-Plan-Tier": "pro", "X-Figma-Rate-Limit-Type": "low"}
    figma.fail_next("GET", r"/v1/images/.*", 429, {"err": "Rate limit exceeded"}, headers)
    error = failure(lambda: design(figma, tmp_path).render(spec()))
    assert error.status == 429 and error.retryable is True and error.retry_after == 30
    assert "Rate limit exceeded" in str(error) and "plan tier pro" in str(error) and "limit type low" in str(error)


def test_an_expired_image_url_is_retryable_and_the_retry_exports_again(figma, tmp_path):
    figma.expire_on_issue = 404
    error = failure(lambda: design(figma, tmp_path).render(spec()))
    assert error.status == 404 and error.retryable is True and "expired" in str(error)
    assert not list(tmp_path.iterdir())
    figma.expire_on_issue = None
    image, _ = design(figma, tmp_path).render(spec())
    assert len(figma.exports) == 2 and image.width == 300 and figma.problems == []


def test_an_old_url_answers_403_once_expired(figma, tmp_path):
    design(figma, tmp_path).render(spec())
    figma.expire_urls(403)
    import httpx

    assert httpx.get(figma.issued_urls()[0]).status_code == 403


def test_a_download_that_is_not_a_png_is_refused(figma, tmp_path):
    figma.fail_next("GET", r"/s3/figma-exports/.*", 200, Response(b"<html>oops</html>", content_type="text/html"))
    error = failure(lambda: design(figma, tmp_path).render(spec()))
    assert error.retryable is False and "not a PNG" in str(error)
    assert not list(tmp_path.iterdir())


def test_a_loopback_image_url_is_refused_without_allow_private_network(figma, tmp_path):
    error = failure(lambda: design(figma, tmp_path, allow_private_network=False).render(spec()))
    assert error.retryable is False and "loopback" in str(error)
    assert figma.downloads == [] and not list(tmp_path.iterdir())
