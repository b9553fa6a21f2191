"""The Figma design backend against its double (tests/doubles/figma.py): the file, its components
and an image spec."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.sdk import Connection

from include.orchestrator.backends.assets import AssetStore
from include.orchestrator.backends.cloud.figma import FigmaDesign
from include.orchestrator.domain.ports import ImageSpec
from tests.doubles.figma import FigmaDouble

FILE_KEY = "Fk9aB3cD7eF1gH5iJ2kL0m"
COMPONENTS = {"Email header": (300, 100, "#0f172a"), "Social card": (240, 135, "#22d3ee"), "Blog banner": (320, 180, "#f59e0b")}
CHANNELS = {"email": "Email header", "social": "Social card", "blog": "Blog banner"}


def spec(channel: str = "email", key: str = "launch-abc123-image-email") -> ImageSpec:
    return ImageSpec(
        key=key, channel=channel, width=1200, height=400, headline="Pipewise 3", background="#0f172a", foreground="#f8fafc"
    )


def conn(double_url: str, token: str = "test-token", **extra) -> Connection:
    settings = {"file_key": FILE_KEY, "components": CHANNELS, "allow_private_network": True, **extra}
    return Connection(conn_id="campaign_design", conn_type="http", host=double_url, password=token, extra=json.dumps(settings))


def store(folder: Path) -> AssetStore:
    return AssetStore("campaign_assets", folder.resolve().as_uri())


def design(double: FigmaDouble, folder: Path, **kwargs) -> FigmaDesign:
    """The Figma backend storing its PNGs in a file:// asset store at ``folder`` (under ``images/``)."""
    return FigmaDesign("campaign_design", conn(double.url, **kwargs), store(folder))
