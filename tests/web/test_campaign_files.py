"""What the Campaigns view says of a campaign's file: nothing when it is valid, else the file, the
field and the problem, and that the campaign's runs in flight wait for it (no Airflow needed)."""

from __future__ import annotations

import re

import pytest

from include.orchestrator.domain.loader import CAMPAIGNS_DIR
from include.orchestrator.web.campaigns import campaign_file, campaign_file_error


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMPAIGNS_DIR", str(tmp_path))
    return tmp_path


def test_a_valid_file_has_no_error_and_an_edit_is_seen(folder):
    good = (CAMPAIGNS_DIR / "webinar-invite.yaml").read_text()
    path = folder / "webinar-invite.yaml"
    path.write_text(good)
    assert campaign_file("campaign_webinar-invite") is not None
    assert campaign_file_error("campaign_webinar-invite") == ""
    path.write_text(re.sub(r"^owner: .*$", "owner: bob@", good, count=1, flags=re.MULTILINE))
    error = campaign_file_error("campaign_webinar-invite")
    assert campaign_file("campaign_webinar-invite") is None
    assert error.startswith("webinar-invite.yaml is invalid: owner: not a valid email address"), error
    assert error.endswith(
        "Until it is fixed, its runs in flight wait (Airflow stops scheduling a DAG its file no longer defines)."
    )


def test_a_missing_file_is_named(folder):
    assert campaign_file("campaign_gone") is None
    assert campaign_file_error("campaign_gone").startswith("its campaign file gone.yaml is missing. Until it is back")
