"""Control characters in text fields: refused where a person typed them, with the field named.

A single-line field (names, subjects, titles, audience, addresses, profiles...) takes no line
break, no control character, no U+2028/U+2029 and no bidi override; a multi-line field (bodies,
descriptions, writer notes, a reason) keeps LF and tab, takes CRLF as LF, and refuses the other
controls. The same rule holds in a campaign file, trigger conf and a reviewer's edit; a language
model's draft and a GitHub review are folded instead, as nobody can be asked to retype them.
No Airflow process is needed: the model, the loader, the approval rules and the decision API's
``decide`` (with the gate's database look-up replaced) are called directly.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.orchestrator.approval.rules import GateState, apply_edits, checked_reason, form_values, github_verdict
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, parse_campaign
from include.orchestrator.domain.model import MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN, Campaign, plan_run
from include.orchestrator.domain.ports import Copy
from include.orchestrator.errors import CampaignFilesInvalid, DecisionRefused
from tests.builders.ports import draft

SAMPLE = CAMPAIGNS_DIR / "spring-launch.yaml"
DRAFT = draft(email_body="Hello,\n\nBody", social_posts=["Post one", "Post two"])
CHANNELS = ["email", "social", "blog"]

# (character, how the refusal names it)
LINE_BREAKS = [
    ("\n", "must be one line: it has a line break (U+000A line feed)"),
    ("\r", "must be one line: it has a line break (U+000D carriage return)"),
    ("\r\n", "must be one line: it has a line break (U+000D carriage return)"),
    ("\u2028", "must be one line: it has a line break (U+2028 line separator)"),
    ("\u2029", "must be one line: it has a line break (U+2029 paragraph separator)"),
    ("\x85", "must be one line: it has a line break (U+0085 next line)"),
]
CONTROLS = [
    ("\x00", "has an invisible control character (U+0000 null)"),
    ("\x1b", "has an invisible control character (U+001B escape)"),
    ("\x07", "has an invisible control character (U+0007 control character)"),
    ("\x7f", "has an invisible control character (U+007F delete)"),
    ("\x9b", "has an invisible control character (U+009B control character)"),
]
SINGLE_LINE_ONLY = [
    ("\t", "has an invisible control character (U+0009 tab)"),
    ("\u202e", "has an invisible bidirectional control (U+202E right-to-left override)"),
    ("\u2066", "has an invisible bidirectional control (U+2066 left-to-right isolate)"),
]
REFUSED_IN_ONE_LINE = LINE_BREAKS + CONTROLS + SINGLE_LINE_ONLY


def sample() -> dict[str, Any]:
    return yaml.safe_load(SAMPLE.read_text())


def problems_of(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "spring-launch.yaml"
    path.write_text(yaml.safe_dump(data))  # escapes every character ("\0", "\e", "\L"), as a person would write it
    with pytest.raises(CampaignFilesInvalid) as info:
        parse_campaign(path)
    return str(info.value)


# --- campaign files ---------------------------------------------------------------------------------


def _set(data: dict[str, Any], field: str, value: Any) -> None:
    *parents, last = field.split(".")
    for part in parents:
        data = data[int(part)] if part.isdigit() else data[part]
    if last.isdigit():
        data[int(last)] = value
    else:
        data[last] = value


ONE_LINE_FIELDS = [
    "name",
    "audience",
    "owner",
    "product.call_to_action",
    "research.notes_query",
    "channels.email.sender",
    "channels.email.recipients.0",
    "channels.email.subject_prefix",
    "channels.social.profiles.0",
    "channels.blog.author",
    "channels.blog.category",
    "approval.approvers.0",
    "schedule",
]


@pytest.mark.parametrize("field", ONE_LINE_FIELDS)
@pytest.mark.parametrize(("char", "words"), [LINE_BREAKS[0], LINE_BREAKS[2], LINE_BREAKS[3], CONTROLS[0], CONTROLS[1]])
def test_a_campaign_file_refuses_a_control_character_in_a_single_line_field_by_name(tmp_path, field, char, words):
    data = sample()
    data.setdefault("research", {})["notes_query"] = "pipelines"
    data["schedule"] = "0 9 * * 1"
    value = {
        "owner": "ops@example.com",
        "channels.email.sender": "news@example.com",
        "schedule": "0 9 * * 1",
        "channels.email.recipients.0": "ann@example.com",
    }.get(field, "Spring 2027")
    _set(data, field, value[:4] + char + value[4:])
    message = problems_of(tmp_path, data)
    # An address with a line break is no address at all: its pattern says so first.
    expected = "not a valid email address" if "@" in value and char.isspace() else f"{words} at character 5"
    assert f"\n  - {field}: {expected}" in message, message
    assert "Value error" not in message


@pytest.mark.parametrize(("char", "words"), CONTROLS)
def test_a_campaign_file_keeps_line_breaks_in_multi_line_fields_and_refuses_controls(tmp_path, char, words):
    data = sample()
    data["description"] = "Launch of Pipewise 3.\r\nTo data teams.\tSoon."
    data["brand_voice"]["seed"] = "Warm.\nSign-off: The team"
    path = tmp_path / "spring-launch.yaml"
    path.write_text(yaml.safe_dump(data))
    campaign = parse_campaign(path)
    assert campaign.description == "Launch of Pipewise 3.\nTo data teams.\tSoon."  # CRLF read as LF, tab kept
    data["brand_voice"]["seed"] = f"Warm.{char}\nSign-off: The team"
    assert f"\n  - brand_voice.seed: {words} at character 6" in problems_of(tmp_path, data)


def test_a_raw_nul_in_a_campaign_file_is_a_yaml_error_naming_the_place(tmp_path):
    path = tmp_path / "spring-launch.yaml"
    path.write_text(SAMPLE.read_text().replace("audience: ", "audience: data\0 "))
    with pytest.raises(CampaignFilesInvalid, match="YAML syntax error: unacceptable character #x0000"):
        parse_campaign(path)


def test_left_and_right_to_left_marks_stay_allowed_in_single_line_fields():
    # Right-to-left text needs no override; the marks (U+200E/U+200F) affect no text beyond themselves.
    campaign = Campaign.model_validate({**sample(), "name": "\u05e9\u05dc\u05d5\u05dd Pipewise\u200f 3"})
    assert campaign.name.endswith("\u200f 3")


# --- trigger conf --------------------------------------------------------------------------------


@pytest.mark.parametrize(("char", "words"), REFUSED_IN_ONE_LINE)
def test_trigger_conf_refuses_the_audience_with_a_control_character_by_name(char, words):
    campaign = parse_campaign(SAMPLE)
    with pytest.raises(ValueError) as info:
        plan_run(campaign, campaign.dag_id, "manual__1", {"audience": f"data{char}engineers"})
    assert str(info.value).startswith(f"trigger conf: conf.audience: {words} at character 5"), info.value
    assert str(info.value).endswith(f"(got {f'data{char}engineers'!r})")


@pytest.mark.parametrize(("char", "words"), CONTROLS)
def test_trigger_conf_keeps_line_breaks_in_writer_notes_and_refuses_controls(char, words):
    campaign = parse_campaign(SAMPLE)
    plan = plan_run(campaign, campaign.dag_id, "r", {"writer_notes": "One.\r\nTwo.\n\tThree.\u2028"})
    assert plan.writer_notes == "One.\nTwo.\n\tThree.\u2028"
    with pytest.raises(ValueError, match=re.escape(f"conf.writer_notes: {words}")):
        plan_run(campaign, campaign.dag_id, "r", {"writer_notes": f"One.{char}"})


def test_trailing_line_breaks_are_trimmed_not_refused():
    campaign = parse_campaign(SAMPLE)
    assert plan_run(campaign, campaign.dag_id, "r", {"audience": "data engineers\r\n"}).audience == "data engineers"


@pytest.mark.parametrize(("char", "_"), [*REFUSED_IN_ONE_LINE[:1], *CONTROLS[:2], *SINGLE_LINE_ONLY[1:2], LINE_BREAKS[3]])
def test_the_trigger_form_and_rest_trigger_refuse_what_the_model_refuses(char, _):
    """The DAG params are checked when the run is created (REST: 400 naming the param), before the
    conf reaches PostgreSQL's jsonb column, which answers a NUL with a 422 naming no field."""
    from airflow.exceptions import ParamValidationError
    from airflow.sdk.definitions.param import ParamsDict

    from include.orchestrator.airflow.dags import _params

    params = ParamsDict(_params(parse_campaign(SAMPLE)))
    params.update({"audience": "data engineers", "writer_notes": "One.\nTwo.\tThree."})
    with pytest.raises(ParamValidationError, match="Invalid input for param audience"):
        params.update({"audience": f"data{char}engineers"})
    if char not in "\t\u202e\u2028\n":  # multi-line notes keep these
        with pytest.raises(ParamValidationError, match="Invalid input for param writer_notes"):
            params.update({"writer_notes": f"One.{char}"})


# --- reviewer edits: the rules every way of deciding applies ------------------------------------


@pytest.mark.parametrize("field", ["headline", "email_subject", "blog_title"])
@pytest.mark.parametrize(("char", "words"), REFUSED_IN_ONE_LINE)
def test_an_edit_refuses_a_control_character_in_a_single_line_field_by_name(field, char, words):
    with pytest.raises(DecisionRefused) as info:
        apply_edits(DRAFT, CHANNELS, {field: f"Meet{char}Bcc: everyone@example.com"})
    assert info.value.status == 400
    assert str(info.value).startswith(f"edited {field}: {words} at character 5"), info.value


@pytest.mark.parametrize("field", ["email_body", "blog_body", "social_post"])
@pytest.mark.parametrize(("char", "words"), CONTROLS)
def test_an_edit_keeps_line_breaks_in_bodies_and_posts_and_refuses_controls(field, char, words):
    approved, edited = apply_edits(DRAFT, CHANNELS, {field: "Hello,\r\n\r\n\tBody\u2028"})
    assert form_values(approved, CHANNELS)[field] == "Hello,\n\n\tBody\u2028" and edited == [field]
    with pytest.raises(DecisionRefused, match=f"^{re.escape(f'edited {field}: {words} at character 7')}"):
        apply_edits(DRAFT, CHANNELS, {field: f"Hello,{char}"})


def test_an_edit_that_only_changes_crlf_to_lf_changes_nothing():
    approved, edited = apply_edits(DRAFT, CHANNELS, {"email_body": "Hello,\r\n\r\nBody"})
    assert (approved, edited) == (DRAFT, [])


def test_a_reason_may_have_lines_but_no_controls():
    assert checked_reason(" Off-brand.\r\nSee the guide. ") == "Off-brand.\nSee the guide."
    with pytest.raises(DecisionRefused, match=r"^reason: has an invisible control character \(U\+0000 null\) at character 4"):
        checked_reason("Off\x00")


def test_the_required_actions_form_refuses_as_one_types_what_the_gate_refuses():
    """The form's fields carry the copy's own rule as a JSON-schema pattern."""
    import jsonschema

    from include.orchestrator.airflow.gate import ApprovalGate

    form = ApprovalGate._form(DRAFT, CHANNELS)
    assert form["email_subject"].schema["pattern"] == form["headline"].schema["pattern"] == SINGLE_LINE_PATTERN
    assert form["email_body"].schema["pattern"] == form["social_post"].schema["pattern"] == MULTI_LINE_PATTERN
    assert form["reason"].schema["pattern"] == MULTI_LINE_PATTERN
    for param in form.values():
        if param.value is not None:
            jsonschema.validate(param.value, param.schema)  # the draft as shown is valid
    for bad in ("Meet\r\nBcc: x", "Meet\x00", "Meet\u2028", "Meet\u202e"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, form["email_subject"].schema)
    jsonschema.validate("Hello,\n\n\tBody", form["email_body"].schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("Hello\x00", form["email_body"].schema)


# --- the decision API (decide) and the CLI that calls it -------------------------------------------


@pytest.fixture
def waiting_gate(monkeypatch):
    """``decisions.decide`` on a run waiting at the gate, without the metadata DB: what it would end the
    gate with is collected instead."""
    from include.orchestrator.approval import decisions

    campaign = parse_campaign(SAMPLE)
    gate = GateState(
        deadline=datetime.now(UTC) + timedelta(hours=1),
        draft=DRAFT.model_dump(),
        draft_version="v1",
        channels=CHANNELS,
        eligible=["dana"],
        triggered_by="admin",
    )
    ended: list[Any] = []
    monkeypatch.setattr(decisions, "_waiting", lambda session, dag_id, run_id: (campaign, None, gate, None))
    monkeypatch.setattr(decisions, "_end", lambda session, ti, detail, record, params_input, user_id: ended.append(record))

    def decide(body: dict[str, Any]) -> Any:
        request = decisions.DecisionRequest.model_validate(body)
        return decisions.decide(
            None, dag_id=campaign.dag_id, run_id="r", user_id="dana", user_name="dana", roles=[], request=request
        )

    decide.ended = ended  # type: ignore[attr-defined]
    return decide


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"copy": {"email_subject": "Meet\r\nBcc: all@example.com"}},
            "edited email_subject: must be one line: it has a line break (U+000D carriage return) at character 5",
        ),
        ({"copy": {"blog_title": "Title\u2028two"}}, "edited blog_title: must be one line: it has a line break (U+2028"),
        ({"copy": {"headline": "Pipe\x00wise"}}, "edited headline: has an invisible control character (U+0000 null)"),
        ({"copy": {"email_body": "Hi\x1b[2J"}}, "edited email_body: has an invisible control character (U+001B escape)"),
        ({"reason": "fine\x00"}, "reason: has an invisible control character (U+0000 null) at character 5"),
    ],
)
def test_the_decision_api_answers_400_naming_the_field(waiting_gate, body, message):
    with pytest.raises(DecisionRefused) as info:
        waiting_gate({"decision": "approve", **body})
    assert info.value.status == 400 and str(info.value).startswith(message), info.value
    assert waiting_gate.ended == []  # the gate is not ended: the reviewer can correct and decide again


def test_the_decision_api_applies_clean_edits(waiting_gate):
    record = waiting_gate({"decision": "approve", "reason": "Good.\r\nShip it.", "copy": {"email_body": "Hi,\r\n\r\nBody"}})
    assert record.reason == "Good.\nShip it." and record.edited_copy["email_body"] == "Hi,\n\nBody"
    assert waiting_gate.ended == [record]


def test_the_cli_shows_the_refusal_naming_the_field(tmp_path, monkeypatch, capsys):
    """``approve --copy edits.json`` posts to the decision API; its 400 comes back to the user as it is."""
    from include.orchestrator import __main__ as cli
    from include.orchestrator.approval import rules as approval

    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps({"email_subject": "Meet\nPipewise"}))

    def call_api(api_url: str, user: str, password: str, method: str, path: str, body: dict[str, Any]) -> Any:
        # What the API does with the body: the same rules, applied to the run's draft.
        apply_edits(DRAFT, CHANNELS, body["copy"])
        raise AssertionError("the edit should have been refused")

    monkeypatch.setattr(approval, "call_api", call_api)
    monkeypatch.setenv("AIRFLOW_PASSWORD", "dana")
    assert cli.main(["approve", "spring-launch", "manual__1", "--copy", str(edits)]) == 1
    assert "error (400): edited email_subject: must be one line: it has a line break (U+000A line feed) at character 5" in (
        capsys.readouterr().err
    )


# --- untrusted writers: folded, never refused -----------------------------------------------------


def test_the_copy_itself_refuses_a_subject_that_is_not_one_line():
    with pytest.raises(ValueError, match="email_subject"):
        Copy.model_validate({**DRAFT.model_dump(), "email_subject": "Meet\r\nBcc: x"})


def test_an_llm_subject_with_line_breaks_and_controls_is_folded_to_one_line():
    """A model's line break in a subject is a slip of form: folded, the reviewer sees the one line that is sent."""
    from tests.builders.llm import KEY, brief, writer
    from tests.doubles.openai_compat import VALID_COPY, OpenAICompatDouble

    with OpenAICompatDouble(api_key=KEY) as llm:
        llm.reply(
            json.dumps(
                {
                    **VALID_COPY,
                    "headline": "Pipewise 3:\nwarned\u202e early",
                    "email_subject": "Meet\r\nPipewise\x00 3",
                    "email_body": "Hi,\r\n\r\nBody\x1b[0m",
                    "social_posts": ["Post\x07 one", "Two"],
                }
            )
        )
        copy = writer(llm).write(brief(channels=["email", "social"]))
    assert copy.headline == "Pipewise 3: warned early"
    assert copy.email_subject == "Meet Pipewise 3"
    assert copy.email_body == "Hi,\n\nBody[0m"
    assert copy.social_posts[0] == "Post one"


def test_a_github_review_body_with_controls_decides_with_them_dropped():
    reviews = [
        {
            "user": "dana-gh",
            "state": "CHANGES_REQUESTED",
            "body": "Off-brand\x00.\r\nSee \u202ethe guide.",
            "submitted_at": "2026-11-24T10:00:00Z",
        }
    ]
    verdict = github_verdict(["dana-gh"], "open", reviews)
    assert verdict is not None and verdict.reason == "Off-brand. See the guide."
