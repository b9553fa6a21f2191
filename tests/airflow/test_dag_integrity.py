"""The DAG files as Airflow's dag processor sees them."""

from __future__ import annotations

import shutil

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from include.orchestrator.domain import tasks
from include.orchestrator.domain.loader import CAMPAIGNS_DIR, campaign_files
from tests.stack import DAGS

PHASES = list(tasks.PHASES)


@pytest.fixture
def bag(no_outside_world) -> DagBag:
    return DagBag(dag_folder=DAGS)


def test_no_import_errors_and_one_dag_per_campaign(bag):
    assert bag.import_errors == {}
    expected = {f"campaign_{p.stem}" for p in campaign_files(CAMPAIGNS_DIR)}
    assert set(bag.dag_ids) == expected


def test_every_dag_is_documented_tagged_and_every_task_retries_with_a_timeout(bag):
    for dag in bag.dags.values():
        assert "campaign" in dag.tags and dag.doc_md
        for task in dag.tasks:
            assert task.execution_timeout, task.task_id
            if task.task_id not in ("review.approval", "compensation.report"):
                assert task.retries >= 1 and task.retry_exponential_backoff, task.task_id
            assert not task.template_fields, "no user text may be rendered as a template"


def test_phases_are_task_groups_in_order(bag):
    dag = bag.dags["campaign_spring-launch"]
    groups = [g for g in dag.task_group.children if g in PHASES]
    assert groups == PHASES
    order = {t.task_id: i for i, t in enumerate(dag.topological_sort())}
    firsts = [min(order[t] for t in order if t.startswith(f"{p}.")) for p in PHASES]
    assert firsts == sorted(firsts)
    mapped = {t.task_id for t in dag.tasks if t.is_mapped}
    assert mapped == {"research.scrape_competitor", "design.render_image"}
    # Undoable channels side by side, then the email, which cannot be recalled: the saga's pivot.
    email = dag.task_dict["distribution.publish_email"]
    assert email.upstream_task_ids == {"distribution.publish_blog", "distribution.publish_social"}
    assert email.trigger_rule == "all_done" and email.after_channels


def test_every_dag_has_exactly_the_tasks_the_steps_and_saga_read_by_id(bag):
    """tasks.py is the contract between the DAG and the Airflow-free code: a renamed group or step
    would otherwise leave a pull by task id reading nothing."""
    from include.orchestrator.domain.model import CHANNELS

    for dag in bag.dags.values():
        assert set(dag.task_dict) == tasks.all_tasks(CHANNELS), dag.dag_id


def test_compensation_runs_after_every_forward_step_and_decides_the_run(bag):
    for dag in bag.dags.values():
        undo, report = dag.task_dict["compensation.undo"], dag.task_dict["compensation.report"]
        forward = {t for t in dag.task_dict if not t.startswith("compensation.")}
        assert undo.is_teardown and not undo.on_failure_fail_dagrun and undo.upstream_task_ids == forward
        assert report.is_teardown and report.on_failure_fail_dagrun and report.upstream_task_ids == {"compensation.undo"}
        assert report.retries == 0 and undo.retries >= 1
        last = dag.task_dict["analytics.create_dashboard"]
        assert last.trigger_rule == "all_done" and last.after_channels


def test_approval_gate_is_human_in_the_loop_with_the_campaign_timeout_and_no_default(bag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    gate = bag.dags["campaign_webinar-invite"].task_dict["review.approval"]
    assert isinstance(gate, HITLOperator) and gate.options == ["Approve", "Reject"]
    assert gate.defaults == ["Reject"], "on timeout the scheduler answers with the default: it must reject"
    assert gate.response_timeout.total_seconds() == 12 * 3600 and gate.retries == 0


def test_params_are_on_the_dag_not_copied_to_tasks(bag):
    dag = bag.dags["campaign_spring-launch"]
    assert set(dag.params) == {"audience", "channels", "writer_notes", "launch"}
    serialized = DagSerialization.to_dict(dag)["dag"]
    assert [name for name, _ in serialized["params"]] == ["audience", "channels", "writer_notes", "launch"]
    assert all("params" not in task["__var"] for task in serialized["tasks"])


def test_invalid_campaign_shows_as_import_error_without_hiding_others(tmp_path, monkeypatch, no_outside_world):
    for path in campaign_files(CAMPAIGNS_DIR):
        shutil.copy(path, tmp_path)
    bad = yaml.safe_load((tmp_path / "webinar-invite.yaml").read_text())
    bad["channels"]["email"]["recipients"] = ["not-an-address"]
    (tmp_path / "webinar-invite.yaml").write_text(yaml.safe_dump(bad))
    monkeypatch.setenv("CAMPAIGNS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=DAGS)
    assert set(bag.dag_ids) == {"campaign_spring-launch", "campaign_changelog-digest"}
    [(path, message)] = bag.import_errors.items()
    assert path.endswith("campaign_file_errors.py")
    # What the UI shows starts with the file, the field and the problem in words; the traceback comes after.
    first = message.splitlines()[:3]
    assert first[0] == f"Invalid campaign files: {tmp_path / 'webinar-invite.yaml'}:", message
    assert first[1] == "  - channels.email.recipients.0: not a valid email address (got 'not-an-address')", message
    assert "1 campaign file is invalid" in first[2]
    assert message.index("Traceback") > message.index("not a valid email address")


def test_invalid_campaign_message_leads_also_without_tracebacks(tmp_path, monkeypatch, no_outside_world):
    shutil.copy(CAMPAIGNS_DIR / "webinar-invite.yaml", tmp_path)
    (tmp_path / "broken.yaml").write_text("slug: broken\n")
    monkeypatch.setenv("CAMPAIGNS_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS", "False")
    [message] = DagBag(dag_folder=DAGS / "campaign_file_errors.py").import_errors.values()
    assert message.startswith(f"{tmp_path / 'broken.yaml'}:\n  - name: missing: this field is required"), message
    assert "Traceback" not in message


def test_dags_show_the_campaigns_name_and_owner(bag):
    from include.orchestrator.domain.loader import load_campaigns
    from include.orchestrator.domain.model import in_words

    for campaign in load_campaigns()[0]:
        dag = bag.dags[campaign.dag_id]
        assert dag.dag_display_name == campaign.name
        assert dag.owner == campaign.owner and "@" in dag.owner
        serialized = DagSerialization.to_dict(dag)["dag"]
        assert serialized["dag_display_name"] == campaign.name
        assert f"they have {in_words(campaign.approval.timeout)} to decide" in dag.doc_md, dag.doc_md
        assert ":00:00" not in dag.doc_md


def test_the_trigger_form_works_with_its_defaults(bag):
    """The trigger form of Airflow 3.3 (airflow/ui/dist/assets/index-*.js): a field is required unless its
    schema's type includes "null"; an array is a multi-select when the schema has ``examples`` (or
    ``enum``) at its top level, its options taken from there. The REST trigger validates the schema."""
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = bag.dags["campaign_spring-launch"]
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    for optional in ("writer_notes", "launch"):
        assert "null" in schema[optional]["type"] and dag.params[optional] is None
        assert "minLength" not in schema[optional]
    described = {name: dag.params.get_param(name).description for name in dag.params}
    assert "offline" in described["writer_notes"] and "as written" in described["writer_notes"]
    assert all(described.values()), described
    channels = schema["channels"]
    assert channels["type"] == "array" and channels["examples"] == ["email", "social", "blog"] == channels["items"]["enum"]
    assert dag.params["channels"] == ["email", "social", "blog"]
    assert bag.dags["campaign_webinar-invite"].params.get_param("channels").schema["examples"] == ["email"]

    def validated(conf: dict, dag=dag) -> dict:
        params = ParamsDict(dag.params)
        params.update(conf)
        return params.validate()

    defaults = validated({})  # what the form sends untouched, and what a trigger without conf gets
    assert defaults["writer_notes"] is None and defaults["launch"] is None
    assert validated({"writer_notes": "shorter", "launch": "wave-2", "channels": ["social"]})["channels"] == ["social"]
    for bad in ({"channels": ["fax"]}, {"channels": []}, {"channels": ["blog", "blog"]}, {"launch": "two words"}):
        with pytest.raises(ParamValidationError):
            validated(bad)
    with pytest.raises(ParamValidationError):  # a channel the campaign does not configure
        validated({"channels": ["blog"]}, bag.dags["campaign_webinar-invite"])


def test_worker_parse_builds_only_the_dag_it_runs(monkeypatch, no_outside_world):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "campaign_webinar-invite")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "validate_conf")
    bag = DagBag(dag_folder=DAGS / "campaigns.py")
    assert bag.dag_ids == ["campaign_webinar-invite"]


def test_every_step_that_calls_a_service_runs_in_its_ports_pool_and_the_pools_exist(bag):
    from include.orchestrator.dev.localdev import SETTINGS

    defined = {p["pool_name"] for p in yaml.safe_load(SETTINGS.read_text())["airflow"]["pools"]}
    dag = bag.dags["campaign_spring-launch"]
    pools = {task.task_id: task.pool for task in dag.tasks}
    assert pools["review.notify_reviewers"] == "campaign_notify" and pools["content.write_copy"] == "campaign_writer"
    assert pools["design.render_image"] == "campaign_design" and pools["research.scrape_competitor"] == "campaign_web"
    assert pools["distribution.publish_email"] == "campaign_email" and pools["distribution.publish_blog"] == "campaign_blog"
    assert pools["analytics.create_dashboard"] == "campaign_analytics"
    assert pools["review.approval"] == "default_pool" and pools["compensation.undo"] == "default_pool"
    used = {pool for d in bag.dags.values() for pool in (t.pool for t in d.tasks)} - {"default_pool"}
    assert used <= defined, f"pools used but not in airflow_settings.yaml: {used - defined}"
