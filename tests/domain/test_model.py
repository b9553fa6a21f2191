"""Campaign files and trigger conf: valid ones load, invalid ones say which file and field."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone

import pytest

from include.orchestrator.__main__ import SCHEMA_PATH, schema_text
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, campaign_files, load_campaigns, parse_campaign
from include.orchestrator.domain.model import Campaign, at_utc, in_words, plan_run, run_key
from tests.builders.campaigns import SAMPLE, problems_of, sample, write


def test_sample_campaigns_are_valid_and_cover_different_channel_sets():
    campaigns, errors = load_campaigns()
    assert errors == []
    assert len(campaigns) >= 3
    assert len({tuple(c.channels.enabled) for c in campaigns}) >= 3
    assert all(c.dag_id == f"campaign_{c.slug}" for c in campaigns)


def test_defaults_and_durations():
    data = sample()
    del data["approval"]["timeout"]
    data["approval"]["remind_before"] = "90m"
    campaign = Campaign.model_validate(data)
    assert campaign.approval.timeout == timedelta(hours=24)
    assert campaign.approval.remind_before == timedelta(minutes=90)
    assert campaign.channels.email.on_failure == "compensate"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d.update(slug="Spring Launch"),
            "slug: must be 1 to 64 lowercase letters, digits or dashes (like spring-launch) (got 'Spring Launch')",
        ),
        (lambda d: d.update(owner="bob@"), "owner: not a valid email address (got 'bob@')"),
        (
            lambda d: d["channels"]["email"]["recipients"].append("bob"),
            "channels.email.recipients.2: not a valid email address (got 'bob')",
        ),
        (lambda d: d["channels"].update(fax={"number": 1}), "channels.fax: unknown key: check its spelling and place"),
        (lambda d: d.update(channels={}), "channels: configure at least one channel: email, social or blog"),
        (
            lambda d: d["approval"].update(timeout="forever"),
            'approval.timeout: not a duration: write e.g. "24h", "90m", "2d", "30s" or a number of seconds (got \'forever\')',
        ),
        (lambda d: d["approval"].update(timeout="45d"), "approval.timeout: must be between 1 second and 30 days (got '45d')"),
        (lambda d: d["approval"].update(approvers=[]), "approval.approvers: needs at least 1 item (got [])"),
        (
            lambda d: d["research"]["competitor_urls"].append("ftp://x.example/"),
            "research.competitor_urls.2: must be a web address starting with http:// or https:// (got 'ftp://x.example/')",
        ),
        (
            lambda d: d["research"]["competitor_urls"].append("pipewise dot com"),
            "research.competitor_urls.2: not a web address: write it in full, e.g. https://example.com/page",
        ),
        (
            lambda d: d["brand_voice"].update(primary_colour="blue"),
            'brand_voice.primary_colour: not a colour: write it as "#" and six hex digits, e.g. "#1f2937" (got \'blue\')',
        ),
        (lambda d: d.pop("owner"), "owner: missing: this field is required"),
        (lambda d: d.update(connections={"fax": "x"}), "connections.fax: the key must be one of 'memory', 'notes'"),
        (
            lambda d: d["channels"]["email"].update(on_failure="stop"),
            "channels.email.on_failure: must be one of 'continue' or 'compensate' (got 'stop')",
        ),
        (lambda d: d.update(schedule="every monday"), "schedule: not a cron expression: five fields"),
        (lambda d: d.update(schedule="@fortnightly"), "schedule: not a schedule preset: use one of @once"),
        (lambda d: d.update(schedule="0 0 30 2 *"), "schedule: '0 0 30 2 *' matches no date (e.g. a day the month never"),
        (lambda d: d["retries"].update(count=99), "retries.count: must be at most 10 (got 99)"),
        (lambda d: d.update(tags=["two words"]), "tags.0: a tag is 1 to 40 letters, digits or _ . : - (got 'two words')"),
    ],
)
def test_invalid_campaign_names_file_then_field_then_the_problem_in_words(tmp_path, change, expected):
    data = sample()
    data.setdefault("retries", {})
    change(data)
    path = write(tmp_path, f"{data['slug']}.yaml" if " " not in str(data["slug"]) else "x.yaml", data)
    message = problems_of(path)
    assert message.startswith(f"{path}:\n  - "), message
    assert f"\n  - {expected}" in message, message
    assert "String should" not in message and "Input should" not in message, "pydantic's wording, not plain words"


def test_schedules_airflow_accepts_are_valid():
    for schedule in ("0 9 * * 1", "*/15 * * * *", "0 0 29 2 *", "@daily", "@once", None):
        assert Campaign.model_validate({**sample(), "schedule": schedule}).schedule == schedule


def test_durations_and_deadlines_read_as_words_and_times():
    assert in_words(timedelta(days=1)) == "1 day"
    assert in_words(timedelta(hours=2, minutes=30)) == "2 hours 30 minutes"
    assert in_words(timedelta(seconds=90)) == "1 minute 30 seconds"
    assert in_words(timedelta(days=2, hours=1)) == "2 days 1 hour"
    assert in_words(timedelta(seconds=0.5)) == "0.5 seconds"
    assert at_utc(datetime(2026, 11, 24, 13, 5, 59, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-24 12:05 UTC"


def test_yaml_syntax_error_gives_line(tmp_path):
    message = problems_of(write(tmp_path, "broken.yaml", "slug: broken\nname: [unclosed\n"))
    assert "YAML syntax error: line 3" in message or "YAML syntax error: line 2" in message


def test_file_must_be_named_after_slug(tmp_path):
    message = problems_of(write(tmp_path, "other.yaml", sample()))
    assert "rename the file to spring-launch.yaml" in message


def test_bad_and_duplicate_files_never_hide_good_ones(tmp_path):
    for path in campaign_files(CAMPAIGNS_DIR):
        shutil.copy(path, tmp_path)
    write(tmp_path, "broken.yaml", "slug: [")
    shutil.copy(SAMPLE, tmp_path / "spring-launch.yml")  # the same slug twice
    campaigns, errors = load_campaigns(tmp_path)
    assert {c.slug for c in campaigns} == {"webinar-invite", "changelog-digest"}
    assert {e.path.name for e in errors} == {"broken.yaml", "spring-launch.yaml", "spring-launch.yml"}
    assert any("is also used by" in p for e in errors for p in e.problems)


def test_conf_overrides_are_validated_and_merged():
    campaign = parse_campaign(SAMPLE)
    plan = plan_run(campaign, campaign.dag_id, "manual__1", {"channels": ["blog", "email"], "writer_notes": "short"})
    assert plan.channels == ["email", "blog"]  # campaign order, whatever the conf order
    assert plan.audience == campaign.audience
    assert plan.run_key == run_key(campaign.dag_id, "manual__1") and len(plan.run_key) == 12
    assert plan.key("image", "email") == f"spring-launch-{plan.run_key}-image-email"
    with pytest.raises(ValueError, match="unexpected_key"):
        plan_run(campaign, campaign.dag_id, "r", {"unexpected_key": 1})
    with pytest.raises(ValueError, match="channels"):
        plan_run(campaign, campaign.dag_id, "r", {"channels": ["fax"]})
    with pytest.raises(ValueError, match="lists a channel twice"):
        plan_run(campaign, campaign.dag_id, "r", {"channels": ["email", "email"]})
    webinar = parse_campaign(CAMPAIGNS_DIR / "webinar-invite.yaml")
    with pytest.raises(ValueError, match="configures only"):
        plan_run(webinar, webinar.dag_id, "r", {"channels": ["blog"]})


def test_a_run_triggered_by_hand_twice_with_the_same_conf_is_one_launch():
    campaign = parse_campaign(SAMPLE)

    def launch(conf: dict, run_id: str = "manual__1", scheduled_for: datetime | None = None) -> str:
        return plan_run(campaign, campaign.dag_id, run_id, conf, scheduled_for).launch

    defaults = {"audience": campaign.audience, "channels": campaign.channels.enabled, "writer_notes": "", "launch": ""}
    assert launch({}) == launch(defaults, "manual__2") == launch({"channels": list(reversed(campaign.channels.enabled))})
    # The trigger form sends None for writer_notes and launch left empty: the same as "" or leaving them out.
    assert launch({"writer_notes": None, "launch": None}) == launch({})
    assert plan_run(campaign, campaign.dag_id, "r", {"writer_notes": None, "launch": None}).writer_notes == ""
    assert launch({}).startswith("conf ")
    assert launch({"writer_notes": "shorter"}) != launch({}) != launch({"channels": ["email"]})
    assert launch({"launch": "second-wave"}) == "named second-wave" == launch({"launch": "second-wave", "writer_notes": "x"})
    monday, tuesday = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    assert launch({}, scheduled_for=monday) == "scheduled 2026-03-02T00:00:00+00:00" != launch({}, scheduled_for=tuesday)
    with pytest.raises(ValueError, match="launch"):
        launch({"launch": "no spaces {{ or braces }}"})


def test_json_schema_file_is_current():
    assert SCHEMA_PATH.read_text() == schema_text(), "run `make schema` and commit campaign.schema.json"
