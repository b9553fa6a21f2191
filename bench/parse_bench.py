#!/usr/bin/env python
"""Parse-time benchmark: our campaign DAG file against dag-factory 1.1.0, the way Airflow 3.3 parses.

For N = 1, 100, 1000 generated campaigns (valid per the model: slugs, channel subsets, 0-3
competitor URLs, approvers, tags and schedules vary) it measures, each in a fresh subprocess,
what one dag-processor child does with one DAG file, mirroring
``airflow.dag_processing.processor._parse_file`` of 3.3.2 step by step:

* parse: ``check_dag_file_stability`` + ``BundleDagBag(dag_folder=<file>, bundle_path=<its folder>,
  bundle_name=..., load_op_links=False)`` (the DAG file runs, every DAG is validated and bagged);
* serialize: ``processor._serialize_dags`` (``DagSerialization.to_dict`` of every DAG);
* encode (context, not in parse+serialize): the ``DagFileParsingResult`` msgpack frame the child
  sends to the manager.

The fixed cost of importing ``airflow``, ``airflow.sdk`` and the dag processor (which the manager
has imported before it forks a child) is timed first in every subprocess, excluded from the
figures and reported once. Memory: the subprocess's peak RSS (``VmHWM``) and the RSS that
parse+serialize add to the imports. Generators, interleaved run by run so machine noise hits
them alike (results are ratios against dag-factory measured in the same run):

* ``ours``: ``dags/campaigns.py`` over a folder of N campaign files (``CAMPAIGNS_DIR``);
* ``dag-factory``: the same N campaigns as dag-factory 1.1.0 YAML (same dag ids, task groups,
  13 tasks with the three mapped ones as ``partial``/``expand``, default_args, tags, doc_md and
  the three params with the same JSON schema, via ``__type__: airflow.sdk.Param``), loaded by a
  DAG file calling ``dagfactory.load_yaml_dags``; PythonOperator/PythonSensor with trivial callables;
* with ``--params-context``, also both without the three DAG params.

Then the worker side at the largest N: ``BundleDagBag(safe_mode=False, load_op_links=False, ...)``
of our DAG file with ``_AIRFLOW_PARSING_CONTEXT_DAG_ID``/``_TASK_ID`` set, as the task runner does.
Before timing, checks (not timed) compare the shape of every DAG of both generators and confirm
that our tasks carry no params while our DAGs do, and that trigger-time conf validation uses them.

``[core] dagbag_import_timeout`` is switched off so slow parses are measured rather than dropped;
the table flags what Airflow's default timeouts would have killed.

Usage, from the project root (needs apache-airflow 3.3 and dag-factory 1.1.0; no DB, no network)::

    python bench/parse_bench.py                   # N = 1, 100, 1000, 3 runs: ~11 min on 2 busy cores
    python bench/parse_bench.py --quick           # N = 1, 100, 1 run: ~1.5 min
    python bench/parse_bench.py --params-context  # also without params (~+5 min)
    python bench/parse_bench.py --runs 5 --sizes 1,100,1000,2000 --variants ours,dag-factory
    python bench/parse_bench.py --profile ours --profile-n 1000   # cProfile of parse+serialize only

The last line printed is one JSON object: ``ours_s``, ``dagfactory_s`` (median parse+serialize at
the largest N), ``ratio`` (ours / dag-factory), ``worker_parse_s``, per-N details and the checks.
Generated files live in a temporary directory, removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUR_DAG_FILE = ROOT / "dags" / "campaigns.py"
BUNDLE_NAME = "dags-folder"
CALLABLES_MODULE = "bench_dagfactory_callables"
WORKER_TASK = "content.write_copy"
VARIANTS = ("ours", "dag-factory")
CONTEXT_VARIANTS = ("ours-noparams", "dag-factory-noparams")  # --params-context
ALL_VARIANTS = VARIANTS + CONTEXT_VARIANTS
PHASES = ("research", "content", "design", "review", "distribution", "analytics")

# --------------------------------------------------------------------------------------------
# Files the benchmark generates (in the temporary directory)
# --------------------------------------------------------------------------------------------

OURS_NOPARAMS_DAG_FILE = '''"""Airflow DAG file: dags/campaigns.py with the DAG params switched off (parse benchmark only)."""

from include.orchestrator.airflow import dags as render

render._params = lambda campaign: {}
render.build_dags(globals())
'''

DAGFACTORY_DAG_FILE = '''"""Airflow DAG file: one DAG per dag-factory YAML file in $BENCH_DAGFACTORY_CONFIGS."""

import os

from dagfactory import load_yaml_dags

load_yaml_dags(globals_dict=globals(), dags_folder=os.environ["BENCH_DAGFACTORY_CONFIGS"])
'''

CALLABLES_SOURCE = '''"""Trivial callables for the dag-factory side of the parse benchmark."""


def run_step(*args, **kwargs):
    return None


def approval_received(**kwargs):
    return True
'''

WORDS = ["launch", "webinar", "digest", "promo", "renewal", "onboarding", "survey", "release", "event", "trial"]
APPROVERS = ["admin", "dana", "lee", "sam", "kim", "ori"]
TAGS = ["q1-2027", "q2-2027", "launch", "webinar", "emea", "amer", "beta", "paid", "organic"]
SCHEDULES = [None, "@daily", "0 9 * * 1", None, "@weekly"]


def campaign_data(i: int, rng: random.Random) -> dict[str, Any]:
    """One valid campaign file's content: slug, channel subset, 0-3 competitor URLs, approvers, tags vary."""
    slug = f"bench-{i:04d}-{rng.choice(WORDS)}"
    mask = 1 + i % 7  # the 7 non-empty subsets of (email, social, blog)
    channels: dict[str, Any] = {}
    if mask & 1:
        channels["email"] = {
            "sender": f"news@{slug}.example.com",
            "recipients": [f"list{k}@lists.example.com" for k in range(1 + i % 3)],
            "subject_prefix": "[News] ",
            "unsubscribe": f"https://{slug}.example.com/unsubscribe",
        }
    if mask & 2:
        channels["social"] = {"profiles": [f"linkedin-{slug}", f"mastodon-{slug}"][: 1 + i % 2], "max_length": 280}
    if mask & 4:
        channels["blog"] = {"author": rng.choice(["Dana Reyes", "Lee Park", "Sam Ortiz"]), "category": "news"}
    data: dict[str, Any] = {
        "slug": slug,
        "name": f"Campaign {i} {slug.split('-')[-1].title()}",
        "description": f"Synthetic campaign {i} for the parse benchmark: tells data teams about feature {i}.",
        "owner": "marketing-ops@example.com",
        "audience": rng.choice(["data engineers at mid-size SaaS companies", "platform engineers", "analytics leads"]),
        "product": {
            "description": f"Pipewise feature {i} shows every pipeline's freshness, cost and failures on one page.",
            "url": f"https://pipewise.example.com/features/{i}",
            "call_to_action": "Start a free trial",
        },
        "brand_voice": {"reference": "pipewise-voice", "seed": "Plain, confident and specific. Short sentences."},
        "research": {
            "competitor_urls": [f"https://competitor{k}.example.com/{slug}" for k in range(i % 4)],
            "notes_query": "data pipeline observability",
        },
        "channels": channels,
        "approval": {"approvers": rng.sample(APPROVERS, 1 + i % 3), "timeout": rng.choice(["24h", "12h", "2d"])},
        "tags": rng.sample(TAGS, i % 4),
    }
    if (schedule := SCHEDULES[i % len(SCHEDULES)]) is not None:
        data["schedule"] = schedule
    return data


def _timedelta_yaml(value: Any) -> dict[str, Any]:
    return {"__type__": "datetime.timedelta", "seconds": value.total_seconds()}


def dagfactory_config(campaign: Any, render: Any, with_params: bool) -> dict[str, Any]:
    """The dag-factory 1.1.0 YAML document of one campaign, shaped like ``airflow/dags.build_dag``."""
    from include.orchestrator.airflow.retry import default_args as campaign_defaults

    default_args = {  # a retry policy is an object dag-factory's YAML cannot carry
        k: _timedelta_yaml(v) if hasattr(v, "total_seconds") else v
        for k, v in campaign_defaults(campaign).items()
        if k != "retry_policy"
    }
    python_op = "airflow.providers.standard.operators.python.PythonOperator"
    callable_ = f"{CALLABLES_MODULE}.run_step"

    def task(step: str, group: str | None = None, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "operator": python_op,
            "python_callable": callable_,
            "op_kwargs": {"step": step, "campaign": campaign.slug},
            "trigger_rule": "none_failed",
        }
        if group:
            conf["task_group_name"] = group
        if deps:
            conf["dependencies"] = deps
        conf.update(extra)
        return conf

    def fan_out(step: str, group: str, items: list[str]) -> dict[str, Any]:
        conf = {
            "operator": python_op,
            "python_callable": callable_,
            "task_group_name": group,
            "trigger_rule": "none_failed",
            "map_index_template": "{{ task.op_args[0] }}",
            "partial": {"op_kwargs": {"step": step, "campaign": campaign.slug}},
            "expand": {"op_args": [[item] for item in items]},
        }
        return conf

    channels = campaign.channels.enabled
    tasks = {
        "validate_conf": task("validate_conf", retries=0),
        "search_notes": task("search_notes", "research"),
        "scrape_competitor": fan_out("scrape_competitor", "research", [str(u) for u in campaign.research.competitor_urls]),
        "recall_research": task("recall_research", "research"),
        "load_brand_voice": task("load_brand_voice", "content"),
        "write_copy": task("write_copy", "content", ["load_brand_voice"]),
        "store_draft": task("store_draft", "content", ["write_copy"]),
        "render_image": fan_out("render_image", "design", channels),
        "open_review": task("open_review", "review"),
        "notify_reviewers": task("notify_reviewers", "review", ["open_review"]),
        "wait_for_approval": {
            "operator": "airflow.providers.standard.sensors.python.PythonSensor",
            "python_callable": f"{CALLABLES_MODULE}.approval_received",
            "task_group_name": "review",
            "dependencies": ["notify_reviewers"],
            "mode": "reschedule",
            "soft_fail": False,
            "timeout": campaign.approval.timeout.total_seconds(),
            "poke_interval": 60,
            "retries": 0,
            "execution_timeout": None,
        },
        **{f"publish_{c}": task("publish_channel", "distribution") for c in channels if c != "email"},
        **(
            {"publish_email": task("publish_channel", "distribution", [f"publish_{c}" for c in channels if c != "email"])}
            if "email" in channels
            else {}
        ),
        "create_dashboard": task("create_dashboard", "analytics"),
        "undo": task("compensate", "compensation", trigger_rule="all_done"),
        "report": task("report", "compensation", ["undo"], trigger_rule="all_done"),
    }
    upstream = ["validate_conf", *PHASES]
    task_groups = {group: {"dependencies": [upstream[i]]} for i, group in enumerate(PHASES)}
    task_groups["compensation"] = {"dependencies": ["analytics"]}
    dag: dict[str, Any] = {
        "description": f"{campaign.name}: {campaign.description}"[:200],
        "doc_md": render._doc(campaign),
    }
    if campaign.schedule is not None:
        dag["schedule"] = campaign.schedule
    dag["tags"] = ["campaign", *campaign.tags]
    if with_params:
        dag["params"] = {
            name: {"__type__": "airflow.sdk.Param", "default": p.value, "description": p.description, **p.schema}
            for name, p in render._params(campaign).items()
        }
    dag["task_groups"] = task_groups
    dag["tasks"] = tasks
    return {
        "default": {
            "default_args": default_args,
            "start_date": "2026-01-01",
            "catchup": False,
            "max_active_runs": 3,
        },
        campaign.dag_id: dag,
    }


def child_generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Write N campaign files (validated by our loader) and the dag-factory YAML of the same campaigns."""
    import yaml

    from include.orchestrator.airflow import dags as render
    from include.orchestrator.domain.loader import parse_campaign

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    rng = random.Random(spec["seed"])
    tmp = Path(spec["tmp"])
    count = max(spec["sizes"])
    scratch = tmp / "validate"
    scratch.mkdir()
    docs = []
    for i in range(count):
        data = campaign_data(i, rng)
        path = scratch / f"{data['slug']}.yaml"
        text = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)
        path.write_text(text, encoding="utf-8")
        campaign = parse_campaign(path)  # raises if the generator ever writes an invalid campaign
        docs.append(
            (
                data["slug"],
                text,
                yaml.dump(dagfactory_config(campaign, render, True), Dumper=dumper, sort_keys=False, allow_unicode=True),
                yaml.dump(dagfactory_config(campaign, render, False), Dumper=dumper, sort_keys=False, allow_unicode=True),
            )
        )
    shutil.rmtree(scratch)
    for n in sorted({1, *spec["sizes"]}):  # N = 1 is also the warm-up
        for kind, index in (("campaigns", 1), ("dagfactory", 2), ("dagfactory-noparams", 3)):
            folder = tmp / kind / f"n{n}"
            folder.mkdir(parents=True)
            for doc in docs[:n]:
                (folder / f"{doc[0]}.yaml").write_text(doc[index], encoding="utf-8")
    channels = [sum(1 for c in ("email:", "social:", "blog:") if c in d[1]) for d in docs]
    return {"count": count, "slugs": [d[0] for d in docs], "mean_channels": statistics.mean(channels)}


# --------------------------------------------------------------------------------------------
# The measured child: one fresh interpreter per measurement
# --------------------------------------------------------------------------------------------


def _proc_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out


def child_parse(spec: dict[str, Any]) -> dict[str, Any]:
    """Import Airflow (fixed cost), then parse and serialize one DAG file as the dag processor does."""
    perf = time.perf_counter
    t_start, rss_start = perf(), _proc_status()["VmRSS"]
    # What the dag-processor child has before it runs the DAG file (imported by the manager, then forked).
    import airflow  # noqa: F401
    import airflow.sdk  # noqa: F401
    import structlog
    from airflow.dag_processing import processor
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.execution_time.comms import _RequestFrame
    from airflow.utils.dag_version_inflation_checker import check_dag_file_stability

    log = structlog.get_logger(logger_name="task")
    t_imported, rss_imported = perf(), _proc_status()["VmRSS"]
    dag_file, bundle_path = spec["dag_file"], Path(spec["bundle_path"])
    result: dict[str, Any] = {"import_s": t_imported - t_start, "rss_start_mb": rss_start, "rss_imported_mb": rss_imported}
    from airflow.configuration import conf

    result["default_timeouts"] = {  # the benchmark disables the first one to measure past it
        "dagbag_import_timeout": float(conf.get_default_value("core", "dagbag_import_timeout")),
        "dag_file_processor_timeout": float(conf.get_default_value("dag_processor", "dag_file_processor_timeout")),
    }
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    if spec["mode"] == "worker":
        # airflow.sdk.execution_time.task_runner.parse(), with the parsing context from the env.
        t0 = perf()
        bag = BundleDagBag(
            dag_folder=dag_file, safe_mode=False, load_op_links=False, bundle_path=bundle_path, bundle_name=BUNDLE_NAME
        )
        task = bag.dags[spec["dag_id"]].task_dict[spec["task_id"]]
        t1 = perf()
        result.update(parse_s=t1 - t0, dags=len(bag.dags), task=task.task_id, import_errors=bag.import_errors)
        result.update(rss_parsed_mb=_proc_status()["VmRSS"])
    else:
        # airflow.dag_processing.processor._parse_file(), step by step so each step can be timed.
        t0 = perf()
        stability = check_dag_file_stability(dag_file)
        bag = BundleDagBag(dag_folder=dag_file, bundle_path=bundle_path, bundle_name=BUNDLE_NAME, load_op_links=False)
        t1 = perf()
        rss_parsed = _proc_status()["VmRSS"]
        serialized, errors = processor._serialize_dags(bag, log)
        bag.import_errors.update(errors)
        t2 = perf()
        rss_serialized = _proc_status()["VmRSS"]
        if profiler:
            profiler.disable()
        parsing_result = processor.DagFileParsingResult(
            fileloc=dag_file,
            serialized_dags=serialized,
            import_errors=bag.import_errors,
            warnings=stability.get_formatted_warnings(bag.dag_ids),
        )
        frame = _RequestFrame(id=1, body=parsing_result.model_dump(), context_carrier=None).as_bytes()
        t3 = perf()
        tasks = [len(d.task_dict) for d in bag.dags.values()]
        result.update(
            parse_s=t1 - t0,
            serialize_s=t2 - t1,
            encode_s=t3 - t2,
            message_mb=len(frame) / 2**20,
            dags=len(bag.dags),
            tasks_min=min(tasks, default=0),
            tasks_max=max(tasks, default=0),
            import_errors=bag.import_errors,
            rss_parsed_mb=rss_parsed,
            rss_serialized_mb=rss_serialized,
        )
        if spec.get("verify"):
            result["verify"] = verify(bag, [s.data for s in serialized])
    if profiler:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    result["peak_rss_mb"] = _proc_status()["VmHWM"]
    return result


def verify(bag: Any, serialized: list[dict[str, Any]]) -> dict[str, Any]:
    """The shape of every DAG (to compare ours with dag-factory), and where params end up."""
    from airflow.sdk.definitions.param import ParamValidationError, process_params
    from airflow.serialization.serialized_objects import DagSerialization

    def seconds(value: Any) -> float | None:
        return None if value is None else value.total_seconds() if hasattr(value, "total_seconds") else float(value)

    shapes = {}
    for dag in bag.dags.values():
        tasks = {}
        for t in dag.tasks:
            tasks[t.task_id] = {
                "mapped": bool(getattr(t, "is_mapped", False)),
                "downstream": sorted(t.downstream_task_ids),
                "retries": t.retries,
                "retry_delay": seconds(t.retry_delay),
                "retry_exponential_backoff": bool(t.retry_exponential_backoff),
                "max_retry_delay": seconds(t.max_retry_delay),
                "execution_timeout": seconds(t.execution_timeout),
                "trigger_rule": str(t.trigger_rule),
            }
        shapes[dag.dag_id] = {
            "tasks": tasks,
            "groups": [g for g in dag.task_group.children if g in PHASES],
            "tags": sorted(dag.tags),
            "params": {k: dag.params.get_param(k).schema for k in dag.params},
            "schedule": str(getattr(dag, "schedule", None)),
            "max_active_runs": dag.max_active_runs,
            "catchup": dag.catchup,
            "description": dag.description,
        }
    tasks_with_params = sum(1 for data in serialized for t in data["dag"]["tasks"] if "params" in t.get("__var", t))
    dags_with_params = sum(1 for data in serialized if data["dag"].get("params"))
    checks: dict[str, Any] = {
        "tasks": sum(len(data["dag"]["tasks"]) for data in serialized),
        "tasks_with_params_serialized": tasks_with_params,
        "dags_with_params_serialized": dags_with_params,
    }
    first = next(iter(bag.dags.values()), None)
    if first is not None and dags_with_params:
        # Trigger time: the scheduler-side DAG (deserialized) validates conf against the DAG params
        # (SerializedDAG.create_dagrun: params.deep_merge(conf).validate()).
        sdag = DagSerialization.from_dict(serialized[0])
        enabled = first.params["channels"]

        def rejects(conf: dict[str, Any]) -> bool:
            try:
                sdag.params.deep_merge(conf).validate()
            except ParamValidationError:
                return True
            return False

        checks["trigger_accepts_valid_conf"] = not rejects({"channels": enabled[:1], "writer_notes": "short"})
        checks["trigger_rejects_unknown_channel"] = rejects({"channels": ["fax"]})
        checks["trigger_rejects_long_notes"] = rejects({"writer_notes": "x" * 2001})
        checks["trigger_rejects_empty_audience"] = rejects({"audience": ""})
        # Run time: the task context's params merge the DAG's params (task_runner -> process_params).
        task = first.task_dict["content.write_copy"]
        merged = process_params(first, task, {"writer_notes": "hello"}, suppress_exception=False)
        checks["runtime_params_keys"] = sorted(merged)
        checks["runtime_task_params_empty"] = not task.params
    return {"checks": checks, "shapes": shapes}


def child_main(argv: list[str]) -> None:
    mode, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = child_generate(spec) if mode == "--child-generate" else child_parse(spec)
    Path(out_path).write_text(json.dumps(result, default=str))


# --------------------------------------------------------------------------------------------
# The parent: generates files, runs children, prints the table and the JSON line
# --------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path, verbose: bool) -> None:
        self.tmp = tmp
        self.verbose = verbose
        self.calls = 0
        home = tmp / "airflow_home"
        pymods = tmp / "pymods"
        for folder in (home, pymods, tmp / "plugins", tmp / "dags", tmp / "results"):
            folder.mkdir(parents=True, exist_ok=True)
        (pymods / f"{CALLABLES_MODULE}.py").write_text(CALLABLES_SOURCE)
        (tmp / "dags" / "campaigns_noparams.py").write_text(OURS_NOPARAMS_DAG_FILE)
        (tmp / "dags" / "dagfactory_campaigns.py").write_text(DAGFACTORY_DAG_FILE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "CAMPAIGNS_DIR"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp / "plugins"),
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                # Measure past the 30 s default instead of failing; the table flags who would time out.
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "0",
                "AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False",
                "DO_NOT_TRACK": "True",
                "SCARF_NO_ANALYTICS": "True",
                "HF_HUB_OFFLINE": "1",
                "_AIRFLOW_PROCESS_CONTEXT": "client",  # set by the dag processor's _parse_file_entrypoint
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(pymods)]),
            }
        )
        self.env = env

    def _run(self, mode: str, spec: dict[str, Any], extra_env: dict[str, str]) -> dict[str, Any]:
        self.calls += 1
        spec_path = self.tmp / "results" / f"spec{self.calls}.json"
        out_path = self.tmp / "results" / f"out{self.calls}.json"
        log_path = self.tmp / "results" / f"log{self.calls}.txt"
        spec_path.write_text(json.dumps(spec))
        with open(log_path, "wb") as log:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), mode, str(spec_path), str(out_path)],
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                check=False,
            )
        if proc.returncode != 0 or not out_path.exists():
            tail = log_path.read_text(errors="replace")[-4000:]
            raise SystemExit(f"benchmark child failed ({mode}, rc={proc.returncode}):\n{tail}")
        return json.loads(out_path.read_text())

    def generate(self, sizes: list[int], seed: int) -> dict[str, Any]:
        return self._run("--child-generate", {"tmp": str(self.tmp), "sizes": sizes, "seed": seed}, {})

    def variant(self, name: str, n: int) -> tuple[dict[str, Any], dict[str, str]]:
        if name.startswith("ours"):
            dag_file = OUR_DAG_FILE if name == "ours" else self.tmp / "dags" / "campaigns_noparams.py"
            env = {"CAMPAIGNS_DIR": str(self.tmp / "campaigns" / f"n{n}")}
        else:
            dag_file = self.tmp / "dags" / "dagfactory_campaigns.py"
            configs = "dagfactory" if name == "dag-factory" else "dagfactory-noparams"
            env = {"BENCH_DAGFACTORY_CONFIGS": str(self.tmp / configs / f"n{n}")}
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dag_file.parent)
        return {"mode": "processor", "dag_file": str(dag_file), "bundle_path": str(dag_file.parent)}, env

    def parse(self, name: str, n: int, **extra: Any) -> dict[str, Any]:
        spec, env = self.variant(name, n)
        spec.update(extra)
        out = self._run("--child-parse", spec, env)
        # 12 forward tasks, one per chosen channel (1 to 3), the two compensation teardowns.
        if out["import_errors"] or out["dags"] != n or not 15 <= (out.get("tasks_min") or 0) <= (out.get("tasks_max") or 0) <= 17:
            raise SystemExit(f"{name} N={n}: expected {n} DAGs of 15 to 17 tasks, no import errors; got {out}")
        return out

    def worker(self, n: int, dag_id: str) -> dict[str, Any]:
        spec, env = self.variant("ours", n)
        spec.update(mode="worker", dag_id=dag_id, task_id=WORKER_TASK)
        env.update({"_AIRFLOW_PARSING_CONTEXT_DAG_ID": dag_id, "_AIRFLOW_PARSING_CONTEXT_TASK_ID": WORKER_TASK})
        out = self._run("--child-parse", spec, env)
        if out["import_errors"] or out["task"] != WORKER_TASK:
            raise SystemExit(f"worker parse failed: {out}")
        return out


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ps = [r["parse_s"] + r["serialize_s"] for r in runs]
    return {
        "runs": len(runs),
        "parse_s": med([r["parse_s"] for r in runs]),
        "serialize_s": med([r["serialize_s"] for r in runs]),
        "parse_serialize_s": med(ps),
        "parse_serialize_min_s": min(ps),
        "parse_serialize_max_s": max(ps),
        "encode_s": med([r["encode_s"] for r in runs]),
        "message_mb": med([r["message_mb"] for r in runs]),
        "peak_rss_mb": med([r["peak_rss_mb"] for r in runs]),
        "rss_added_parse_mb": med([r["rss_parsed_mb"] - r["rss_imported_mb"] for r in runs]),
        "rss_added_parse_serialize_mb": med([r["rss_serialized_mb"] - r["rss_imported_mb"] for r in runs]),
    }


def compare_shapes(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Differences between our DAGs and dag-factory's, beyond the ones dag-factory always adds."""
    problems = []
    if set(ours) != set(theirs):
        return [f"dag ids differ: {sorted(set(ours) ^ set(theirs))[:5]}"]
    for dag_id, a in ours.items():
        b = dict(theirs[dag_id])
        b["tags"] = sorted(t for t in b["tags"] if t != "dagfactory")  # dag-factory always adds this tag
        for key in a:
            if key == "tasks":
                ta, tb = a["tasks"], b["tasks"]
                if set(ta) != set(tb):
                    problems.append(f"{dag_id}: task ids differ: {sorted(set(ta) ^ set(tb))}")
                    continue
                for tid in ta:
                    diff = {k: (ta[tid][k], tb[tid][k]) for k in ta[tid] if ta[tid][k] != tb[tid][k]}
                    if diff:
                        problems.append(f"{dag_id}.{tid}: {diff}")
            elif a[key] != b[key]:
                problems.append(f"{dag_id}: {key}: {a[key]!r} != {b[key]!r}")
    return problems


def print_profile(path: Path, top: int) -> None:
    import pstats

    for order in ("tottime", "cumulative"):
        print(f"\n--- cProfile of parse+serialize, top {top} by {order} ---")
        stats = pstats.Stats(str(path))
        stats.strip_dirs().sort_stats(order).print_stats(top)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--child-"):
        child_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 100 and 1 run")
    parser.add_argument("--sizes", help="comma-separated N values (default 1,100,1000)")
    parser.add_argument("--runs", type=int, help="runs per measurement, median reported (default 3; --quick 1)")
    parser.add_argument(
        "--params-context",
        action="store_true",
        help="also measure both generators without the three DAG params (ours-noparams, dag-factory-noparams)",
    )
    parser.add_argument("--variants", help=f"comma-separated subset of {','.join(ALL_VARIANTS)} (overrides the default)")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--no-verify", action="store_true", help="skip the shape and params checks")
    parser.add_argument("--profile", choices=list(ALL_VARIANTS), help="only cProfile one variant's parse+serialize")
    parser.add_argument("--profile-n", type=int, default=1000)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1, 100] if args.quick else [1, 100, 1000]
    runs = args.runs or (1 if args.quick else 3)
    if args.variants:
        variants = [v for v in args.variants.split(",") if v]
    else:
        variants = list(VARIANTS) + (list(CONTEXT_VARIANTS) if args.params_context else [])
    if unknown := set(variants) - set(ALL_VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}")
    if args.profile:
        sizes = [args.profile_n]

    tmp = Path(tempfile.mkdtemp(prefix="parse-bench-"))
    started = time.perf_counter()
    try:
        bench = Bench(tmp, args.verbose)
        gen = bench.generate(sizes, args.seed)
        if args.profile:
            prof = tmp / "profile.out"
            out = bench.parse(args.profile, args.profile_n, profile=str(prof))
            print(
                f"{args.profile} N={args.profile_n} under cProfile: parse {out['parse_s']:.2f} s, "
                f"serialize {out['serialize_s']:.2f} s (cProfile overhead included)"
            )
            print_profile(prof, args.profile_top)
            return
        run_bench(bench, sizes, runs, variants, gen, args, started)
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_bench(
    bench: Bench, sizes: list[int], runs: int, variants: list[str], gen: dict[str, Any], args: Any, started: float
) -> None:
    def note(msg: str) -> None:
        if args.verbose:
            print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # Checks (not timed), which also warm up .pyc files and the OS page cache for every generator;
    # without them, a warm-up parse at N = 1. The noparams variants run the same code.
    verification: dict[str, Any] = {}
    warm = [v for v in variants if not v.endswith("-noparams")] or variants
    if args.no_verify:
        for name in warm:
            bench.parse(name, 1)
    else:
        vn = min(max(sizes), 100)
        shapes = {}
        for name in warm:
            out = bench.parse(name, vn, verify=True)["verify"]
            verification[name], shapes[name] = out["checks"], out["shapes"]
        if {"ours", "dag-factory"} <= set(shapes):
            verification["shape_differences"] = compare_shapes(shapes["ours"], shapes["dag-factory"])
        verification["n"] = vn
    note("checks and warm-up done")

    big = max(sizes)
    worker_dag = f"campaign_{gen['slugs'][big // 2]}"
    raw: dict[int, dict[str, list[dict[str, Any]]]] = {n: {v: [] for v in variants} for n in sizes}
    worker_runs: list[dict[str, Any]] = []
    for r in range(runs):
        for n in sizes:
            order = variants if r % 2 == 0 else variants[::-1]  # alternate order: no variant always goes first
            for name in order:
                raw[n][name].append(bench.parse(name, n))
                note(f"run {r + 1}/{runs} N={n} {name}: {raw[n][name][-1]['parse_s'] + raw[n][name][-1]['serialize_s']:.2f} s")
        if "ours" in variants:
            worker_runs.append(bench.worker(big, worker_dag))
            note(f"run {r + 1}/{runs} worker: {worker_runs[-1]['parse_s']:.3f} s")

    all_runs = [x for per_n in raw.values() for per_v in per_n.values() for x in per_v] + worker_runs
    import_s = med([x["import_s"] for x in all_runs])
    import_rss = med([x["rss_imported_mb"] for x in all_runs])
    start_rss = med([x["rss_start_mb"] for x in all_runs])
    details = {str(n): {v: summarize(raw[n][v]) for v in variants} for n in sizes}
    timeouts = all_runs[0]["default_timeouts"]
    import_timeout, processor_timeout = timeouts["dagbag_import_timeout"], timeouts["dag_file_processor_timeout"]
    for per_n in details.values():
        for d in per_n.values():
            d["over_dagbag_import_timeout"] = d["parse_s"] > import_timeout
            d["over_dag_file_processor_timeout"] = d["parse_serialize_s"] + d["encode_s"] > processor_timeout

    print(f"Parse benchmark: Airflow 3.3 dag-processor parse of one DAG file, {runs} run(s) per cell, medians")
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {gen['count']} generated campaigns "
        f"(mean {gen['mean_channels']:.2f} channels, 0-3 competitor URLs); fresh subprocess per measurement"
    )
    print(
        f"Fixed cost, excluded below: import airflow + airflow.sdk + dag processor = {import_s:.2f} s, "
        f"RSS {start_rss:.0f} -> {import_rss:.0f} MB (median of {len(all_runs)} subprocesses)"
    )
    print()
    header = (
        f"{'N':>5}  {'variant':<21}{'parse s':>9}{'serial. s':>10}{'p+s s':>9}{'(min-max)':>17}"
        f"{'ms/DAG':>8}{'encode s':>9}{'msg MB':>8}{'peak MB':>9}{'+RSS MB':>9}{'vs dag-f':>9}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        base = details[str(n)].get("dag-factory", {}).get("parse_serialize_s")
        for v in variants:
            d = details[str(n)][v]
            ratio = d["parse_serialize_s"] / base if base else float("nan")
            d["ratio_vs_dagfactory"] = ratio
            rng = f"({d['parse_serialize_min_s']:.2f}-{d['parse_serialize_max_s']:.2f})"
            print(
                f"{n:>5}  {v:<21}{d['parse_s']:>9.3f}{d['serialize_s']:>10.3f}{d['parse_serialize_s']:>9.3f}{rng:>17}"
                f"{1000 * d['parse_serialize_s'] / n:>8.2f}{d['encode_s']:>9.3f}{d['message_mb']:>8.2f}"
                f"{d['peak_rss_mb']:>9.0f}{d['rss_added_parse_serialize_mb']:>9.0f}{ratio:>9.2f}"
                f"{' *' if d['over_dagbag_import_timeout'] else ''}{' !' if d['over_dag_file_processor_timeout'] else ''}"
            )
        print()
    print("p+s = parse + serialize (the figure compared); encode = framing the result for the manager (context).")
    print("+RSS = RSS added by parse+serialize over the imports; peak = the subprocess's VmHWM.")
    print(
        f"*  parse > [core] dagbag_import_timeout default {import_timeout:.0f} s: Airflow would drop the file "
        f"(disabled here to measure)"
    )
    print(
        f"!  p+s+encode > [dag_processor] dag_file_processor_timeout default {processor_timeout:.0f} s: "
        f"the dag processor would kill the parse"
    )
    print()
    worker_s = med([w["parse_s"] for w in worker_runs]) if worker_runs else None
    if worker_runs:
        print(
            f"Worker parse of dags/campaigns.py for one task (N={big}, parsing context {worker_dag} / {WORKER_TASK}): "
            f"{worker_s:.3f} s median of {len(worker_runs)} (min {min(w['parse_s'] for w in worker_runs):.3f}, "
            f"max {max(w['parse_s'] for w in worker_runs):.3f}), built {worker_runs[0]['dags']} DAG(s), "
            f"+RSS {med([w['rss_parsed_mb'] - w['rss_imported_mb'] for w in worker_runs]):.0f} MB"
        )
        print(
            f"  (without the parsing context a worker would pay the full parse: {details[str(big)]['ours']['parse_s']:.2f} s"
            f" for ours at N={big}",
            end="",
        )
        if "dag-factory" in variants:
            print(
                f"; dag-factory 1.1.0 has no parsing-context filter, so its workers always pay "
                f"{details[str(big)]['dag-factory']['parse_s']:.2f} s",
                end="",
            )
        print(")")
    if verification:
        print(f"Checks at N={verification['n']}:")
        for name in ALL_VARIANTS:
            if name in verification:
                print(f"  {name}: {json.dumps(verification[name])}")
        if "shape_differences" in verification:
            diffs = verification["shape_differences"]
            print(
                f"  shape ours vs dag-factory (dag ids, groups, tasks, mapping, edges, retries, timeouts, trigger rules,"
                f" params schema, schedule, tags minus 'dagfactory'): {'identical' if not diffs else diffs[:10]}"
            )
    print(f"Total wall time {time.perf_counter() - started:.0f} s")

    big_d = details[str(big)]
    summary = {
        "n": big,
        "runs": runs,
        "ours_s": big_d.get("ours", {}).get("parse_serialize_s"),
        "dagfactory_s": big_d.get("dag-factory", {}).get("parse_serialize_s"),
        "ratio": big_d.get("ours", {}).get("ratio_vs_dagfactory"),
        "worker_parse_s": worker_s,
        "import_airflow_s": import_s,
        "import_airflow_rss_mb": import_rss,
        "per_n": details,
        "checks": {k: v for k, v in verification.items() if k != "n"},
    }
    print(json.dumps(_finite(summary), separators=(",", ":")))


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN (a missing baseline) becomes null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and obj != obj else obj


if __name__ == "__main__":
    main()
