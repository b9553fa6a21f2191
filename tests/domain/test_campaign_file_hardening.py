"""Issue 15, classes 1-3: no campaign file, however odd, hides the others or costs unbounded memory, and
ambiguous files (a key given twice, a password in a URL) are refused, naming the file and the field."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

from include.orchestrator.domain.loader import CAMPAIGNS_DIR, load_campaigns
from tests.builders.campaigns import problems_of, sample, write
from tests.stack import DAGS, PROJECT

GOOD = "webinar-invite.yaml"
SAMPLE_TEXT = (CAMPAIGNS_DIR / "spring-launch.yaml").read_text()


def changed(change) -> str:
    data = sample()
    data.setdefault("retries", {})
    change(data)
    return yaml.safe_dump(data)


def lol(levels: int, width: int, base: int = 9) -> str:
    """A "billion laughs" under ``tags``: each level lists the previous one ``width`` times."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * base)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return SAMPLE_TEXT.replace("tags: [launch, q1-2027]", f"tags: *l{levels}") + "\n".join(lines) + "\n"


# name -> (the file's text, the problem its error must show: field first)
BAD = {
    # class 1: accepted by the model before, then crashed or refused by Airflow
    "timeout-overflow": (
        changed(lambda d: d["approval"].update(timeout="99999999999d")),
        "approval.timeout: far too long for a duration",
    ),
    "delay-overflow": (
        changed(lambda d: d["retries"].update(delay="99999999999999999999999999s")),
        "retries.delay: far too long for a duration",
    ),
    "continuous": (
        changed(lambda d: d.update(schedule="@continuous")),
        "schedule: Airflow refuses it for a campaign DAG (up to 3 runs at once): Invalid max_active_runs",
    ),
    "bad-minute": (changed(lambda d: d.update(schedule="61 * * * *")), "schedule: not a cron expression"),
    "words-cron": (changed(lambda d: d.update(schedule="every monday at nine")), "schedule: not a cron expression"),
    # class 2: unbounded cost
    "laughs": (lol(9, 9), "l3.1: more than 20 aliases (*name) in one file (line 52)"),
    "laughs-few-aliases": (lol(8, 2, base=1000), "l5.1: more than 50,000 values once the aliases (*name) are expanded"),
    "deep": (
        SAMPLE_TEXT.replace("tags: [launch, q1-2027]", "tags: " + "[" * 40 + "]" * 40),
        "tags" + ".0" * 19 + ": nested more than 20 levels deep (line 48)",
    ),
    "huge": (SAMPLE_TEXT + "# " + "x" * 300_000 + "\n", "the file is larger than 256 KB"),
    # class 3: ambiguous
    "second-approval": (
        SAMPLE_TEXT + "approval:\n  approvers: [admin]\n  allow_self_approval: true\n",
        "approval: given twice in one mapping (lines 44 and ",
    ),
    "nested-duplicate": (
        SAMPLE_TEXT.replace(  # a second sender in the email channel
            "    on_failure: compensate\n", "    on_failure: compensate\n    sender: a@b.io\n", 1
        ),
        "channels.email.sender: given twice in one mapping",
    ),
    "product-password": (
        changed(lambda d: d["product"].update(url="http://user:hunter2@pipewise.example.com/")),
        "product.url: must not hold a user name or password",
    ),
    "competitor-user": (
        changed(lambda d: d["research"]["competitor_urls"].append("https://scraper@rival.example.com/")),
        "research.competitor_urls.2: must not hold a user name or password",
    ),
    "unsubscribe-password": (
        changed(lambda d: d["channels"]["email"].update(unsubscribe="https://u:hunter2@x.example.com/u")),
        "channels.email.unsubscribe: must not hold a user name or password",
    ),
}


def bad_folder(folder: Path, names: list[str]) -> dict[str, Path]:
    """``folder`` with the good campaign and each named bad file (as spring-launch-<name>.yaml)."""
    shutil.copy(CAMPAIGNS_DIR / GOOD, folder)
    paths = {}
    for name in names:
        slug = f"spring-launch-{name}"
        paths[name] = write(folder, f"{slug}.yaml", BAD[name][0].replace("slug: spring-launch\n", f"slug: {slug}\n", 1))
    return paths


@pytest.mark.parametrize("name", sorted(BAD))
def test_loading_names_the_file_and_field_and_loads_the_others(tmp_path, monkeypatch, name):
    """As the DAG files load campaigns: the model, then each DAG built inside its file's error handling."""
    from include.orchestrator.airflow.dags import load_dags

    paths = bad_folder(tmp_path, [name])
    monkeypatch.setenv("CAMPAIGNS_DIR", str(tmp_path))
    campaigns, errors = load_dags()
    assert [c.slug for c in campaigns] == ["webinar-invite"]
    [error] = errors
    assert error.path == paths[name]
    assert any(p.startswith(BAD[name][1]) for p in error.problems), error.problems
    assert "hunter2" not in str(error), "an error repeats the password it refuses"


def test_an_alias_bomb_costs_neither_memory_nor_time(tmp_path):
    path = write(tmp_path, "spring-launch.yaml", lol(9, 9))  # 9**10 values once expanded
    assert path.stat().st_size - len(SAMPLE_TEXT) < 600
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    assert "more than 20 aliases" in problems_of(path)
    assert time.monotonic() - started < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KB


def test_anchors_and_a_few_aliases_still_load(tmp_path):
    text = SAMPLE_TEXT.replace("approvers: [admin, dana]", "approvers: &team [admin, dana]") + "tags: *team\n"
    text = text.replace("tags: [launch, q1-2027]\n", "")
    assert yaml.safe_load(text)["tags"] == ["admin", "dana"]
    campaigns, errors = load_campaigns(Path(write(tmp_path, "spring-launch.yaml", text)).parent)
    assert errors == [] and campaigns[0].tags == ["admin", "dana"]


def test_an_error_shows_a_bounded_preview_and_a_bounded_list_of_problems(tmp_path):
    data = sample()
    data["channels"]["email"]["recipients"] = [f"not-an-address-{i}" for i in range(500)]
    data["tags"] = "x" * 100_000
    message = problems_of(write(tmp_path, "spring-launch.yaml", data))
    assert "... and " in message and "more problems" in message
    assert len(message) < 5000 and all(len(line) < 400 for line in message.splitlines()), message


def test_whatever_a_build_step_raises_is_that_files_error(tmp_path):
    shutil.copy(CAMPAIGNS_DIR / GOOD, tmp_path)
    shutil.copy(CAMPAIGNS_DIR / "spring-launch.yaml", tmp_path)

    def build(campaign):
        if campaign.slug == "spring-launch":
            raise OverflowError("Python int too large to convert to C int")

    campaigns, [error] = load_campaigns(tmp_path, build=build)
    assert [c.slug for c in campaigns] == ["webinar-invite"]
    assert error.path.name == "spring-launch.yaml"
    assert error.problems == ("Airflow cannot build its DAG: OverflowError: Python int too large to convert to C int",)


def test_validate_names_every_bad_file_and_its_field_and_fails(tmp_path):
    paths = bad_folder(tmp_path, sorted(BAD))
    env = {**os.environ, "CAMPAIGNS_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "include.orchestrator", "validate"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "ok    campaign_webinar-invite" in result.stdout
    assert result.stdout.count("\nerror ") + result.stdout.startswith("error ") == len(BAD), result.stdout
    for name, path in paths.items():
        block = result.stdout.split(f"error {path}:\n", 1)[1].split("\nerror ", 1)[0]
        assert f"  - {BAD[name][1]}" in block, (name, block)
    assert "hunter2" not in result.stdout


@pytest.mark.parametrize("name", ["continuous", "timeout-overflow", "laughs", "second-approval", "product-password"])
def test_airflow_loads_the_good_dag_and_shows_the_bad_file_and_field(tmp_path, monkeypatch, no_outside_world, name):
    paths = bad_folder(tmp_path, [name])
    monkeypatch.setenv("CAMPAIGNS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=DAGS)
    assert bag.dag_ids == ["campaign_webinar-invite"]
    [(where, message)] = bag.import_errors.items()
    assert where.endswith("campaign_file_errors.py"), bag.import_errors
    lines = message.splitlines()
    assert lines[0] == f"Invalid campaign files: {paths[name]}:", message
    assert lines[1].startswith(f"  - {BAD[name][1]}"), message
    assert "hunter2" not in message
