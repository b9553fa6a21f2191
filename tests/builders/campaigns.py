"""Campaign files for tests: the spring-launch sample as data, written to a folder, and the
problems a bad file is refused with."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.errors import CampaignFilesInvalid

SAMPLE = CAMPAIGNS_DIR / "spring-launch.yaml"


def sample() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


def write(folder: Path, name: str, data: dict | str) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(CampaignFilesInvalid) as info:
        parse_campaign(path)
    return str(info.value)
