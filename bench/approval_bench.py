#!/usr/bin/env python
"""Approval benchmark: N campaign runs waiting at the approval gate at once, on a real Airflow.

A real stack (``tests/stack.py``: api-server, scheduler with LocalExecutor, dag-processor) on
PostgreSQL at 127.0.0.1:5432 (a fresh database per variant, dropped afterwards) runs the DAG of
``bench/gate_dag.py``. The bench triggers N runs, waits until every one waits at the gate, and
then measures, over a 60 s window:

* ``slots_held``: the most task instances of the gate seen running or queued (worker slots);
* ``added_mb``: the proportional set size (PSS) of every Airflow process, minus the same stack
  idle before the runs were triggered;
* ``added_cpu_cores``: CPU time of every Airflow process per second of the window, minus idle.

Then it decides ``--sample`` runs, one a second (through the campaign decision API as an
approver; the baseline sets its Variable over REST) and reports the latency from each decision
to its first distribution task starting (p50, p95).

Variants (``--variants``): ``hitl`` is ours (``awaiting_input``, no trigger, no worker); the
baseline ``reschedule`` is a reschedule-mode sensor poking a Variable every 60 s. With both, the
JSON has ratios ours / baseline, measured side by side in one invocation.

Usage, from the project root (``make bench-approval`` runs the quick mode)::

    python bench/approval_bench.py --quick                     # N = 200, ours only: ~6 min
    python bench/approval_bench.py                             # N = 1000, ours only: ~25 min
    python bench/approval_bench.py --quick --variants hitl,reschedule

The last line printed is one JSON object with ``n``, ``slots_held``, ``added_mb``,
``decision_to_next_p95_s`` (ours) and the details per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from bench.gate_dag import DRAFT, SLUG, variable_key  # noqa: E402
from include.orchestrator.dev import localdev  # noqa: E402
from include.orchestrator.dev.smtp_server import LocalSmtpServer  # noqa: E402
from include.orchestrator.domain.loader import CAMPAIGNS_DIR  # noqa: E402
from tests.stack import AirflowStack  # noqa: E402

DAG_ID = f"campaign_{SLUG}"
GATE = "review.approval"
WAITING = {"hitl": ("awaiting_input",), "reschedule": ("up_for_reschedule", "running", "queued", "scheduled")}


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


class Database:
    """A fresh PostgreSQL database for one variant."""

    def __init__(self, server: str, name: str) -> None:
        self.server, self.name = server, name
        self.url = f"postgresql+psycopg2://{server}/{name}"

    def _admin(self, sql: str) -> None:
        conn = psycopg2.connect(f"postgresql://{self.server}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    def __enter__(self) -> Database:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.conn = psycopg2.connect(f"postgresql://{self.server}/{self.name}")
        self.conn.autocommit = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()


def processes(stack: AirflowStack) -> dict[str, list[psutil.Process]]:
    """Every live process of the stack, by component (its task processes under the scheduler)."""
    found = {}
    for name, proc in stack.procs.items():
        try:
            root = psutil.Process(proc.pid)
            found[name] = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found[name] = []
    return found


def pss_mb(stack: AirflowStack) -> dict[str, float]:
    """Proportional set size by component: shared pages count once across forked processes."""
    sizes = {}
    for name, procs in processes(stack).items():
        total = 0
        for proc in procs:
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                pass
        sizes[name] = total / 2**20
    return sizes


def cpu_seconds(stack: AirflowStack) -> float:
    """CPU time of the live processes and of the children they have reaped."""
    total = 0.0
    for proc in (p for procs in processes(stack).values() for p in procs):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def window(stack: AirflowStack, db: Database, seconds: float) -> dict[str, float]:
    """CPU cores used, median PSS (in all and by component), the most gate instances holding a slot."""
    cpu0, start, pss, slots = cpu_seconds(stack), time.monotonic(), [], 0
    while time.monotonic() - start < seconds:
        pss.append(pss_mb(stack))
        held = db.rows("SELECT count(*) FROM task_instance WHERE task_id = %s AND state IN ('running', 'queued')", GATE)
        slots = max(slots, held[0][0])
        time.sleep(2)
    cores = (cpu_seconds(stack) - cpu0) / (time.monotonic() - start)
    by_component = {name: round(statistics.median(p[name] for p in pss), 1) for name in pss[0]}
    total = round(statistics.median(sum(p.values()) for p in pss), 1)
    return {"cpu_cores": round(cores, 3), "pss_mb": total, "pss_mb_by_component": by_component, "slots": slots}


def gate_states(db: Database) -> dict[str, int]:
    return dict(db.rows("SELECT coalesce(state, 'none'), count(*) FROM task_instance WHERE task_id = %s GROUP BY 1", GATE))


def p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0], 2)


def trigger(stack: AirflowStack, count: int) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: stack.trigger(DAG_ID), range(count)))


def wait_at_gate(kind: str, db: Database, count: int) -> None:
    started = time.monotonic()
    while True:
        states = gate_states(db)
        if sum(states.get(s, 0) for s in WAITING[kind]) >= count:
            return
        if time.monotonic() - started > 3 * 3600:
            raise SystemExit(f"{kind}: runs did not all reach the gate: {states}")
        log(f"{kind}: gate states {states}")
        time.sleep(15)


def decide(kind: str, stack: AirflowStack, run_ids: list[str], pause: float = 0) -> dict[str, tuple[str, float]]:
    """Approve runs as dana; when each was decided, and how.

    Ours alternates the decision API (``rest``) and the Required Actions form's REST call
    (``form``, which resumes the gate on a worker); the baseline sets its Variable.
    """
    decided = {}
    for i, run_id in enumerate(run_ids):
        means = {"hitl": ("rest", "form")[i % 2], "rest": "rest"}.get(kind, "variable")
        decided[run_id] = (means, time.time())
        if means == "rest":
            answer = stack.api("POST", f"/campaigns/api/v1/approvals/{DAG_ID}/{run_id}", "dana", json={"decision": "approve"})
        elif means == "form":
            path = f"{stack.run_path(DAG_ID, run_id)}/taskInstances/{GATE}/-1/hitlDetails"
            params = {
                "reason": "",
                "headline": DRAFT["headline"],
                "email_subject": DRAFT["email_subject"],
                "email_body": DRAFT["email_body"],
            }
            answer = stack.api("PATCH", path, "dana", json={"chosen_options": ["Approve"], "params_input": params})
        else:
            answer = stack.api("POST", "/api/v2/variables", json={"key": variable_key(DAG_ID, run_id), "value": "approved"})
        if answer.status_code not in (200, 201):
            raise SystemExit(f"{kind}: deciding {run_id} failed: {answer.status_code} {answer.text}")
        time.sleep(pause)
    return decided


def run_variant(kind: str, n: int, sample: int, server: str, work: Path, extra: dict[str, str]) -> dict[str, Any]:
    home = work / kind
    campaigns, dags = home / "campaigns", home / "dags"
    campaigns.mkdir(parents=True)
    dags.mkdir()
    campaign = yaml.safe_load((CAMPAIGNS_DIR / "webinar-invite.yaml").read_text())
    campaign |= {"slug": SLUG, "name": "Bench gate", "approval": {"approvers": ["dana"], "timeout": "2h"}}
    (campaigns / f"{SLUG}.yaml").write_text(yaml.safe_dump(campaign))
    # "airflow" and "dag" in the text: the DAG processor's safe mode skips files without both.
    (dags / "bench_gate.py").write_text(
        '"""The airflow DAG of the approval bench."""\nfrom bench.gate_dag import build\n\nbuild(globals())\n'
    )
    conns = localdev.settings_connections()
    with Database(server, f"campaign_bench_{kind}") as db, LocalSmtpServer(home / "maildir") as smtp:
        conns["campaign_email"]["port"] = smtp.port
        env = {
            **localdev.connection_env(conns),
            "CAMPAIGNS_DIR": str(campaigns),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "BENCH_GATE": kind,
            "BENCH_MAX_RUNS": str(n + 10),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "5",
            **extra,
        }
        with AirflowStack(home / "airflow", env=env, db_url=db.url, parallelism=16) as stack:
            stack.wait_for_dags([DAG_ID])
            # LocalExecutor keeps the worker processes it spawned: run a first batch through, so
            # the idle figure includes a warm worker pool and only the waiting is measured.
            warm = trigger(stack, 16)
            wait_at_gate(kind, db, 16)
            decide(kind, stack, warm)
            stack.wait(lambda: len(db.rows("SELECT 1 FROM dag_run WHERE state = 'running'")) == 0, "warm-up runs", 900, 5)
            log(f"{kind}: stack up and warm; measuring it idle")
            time.sleep(10)
            idle = window(stack, db, 30)
            log(f"{kind}: idle {idle}; triggering {n} runs")
            started = time.monotonic()
            run_ids = trigger(stack, n)
            wait_at_gate(kind, db, n)
            reach_s = time.monotonic() - started
            log(f"{kind}: all {n} runs wait at the gate after {reach_s:.0f} s; settling")
            time.sleep(15)
            busy = window(stack, db, 60)
            log(f"{kind}: waiting {busy}; deciding {sample} runs, one a second")
            decided = decide(kind, stack, run_ids[:sample], pause=1)
            starts: dict[str, datetime] = {}
            deadline = time.monotonic() + 900
            while len(starts) < sample and time.monotonic() < deadline:
                rows = db.rows(
                    "SELECT run_id, start_date FROM task_instance"
                    " WHERE task_id = 'distribution.publish_email' AND start_date IS NOT NULL"
                )
                starts = {r: s for r, s in rows if r in decided}  # warm-up runs are not in decided
                time.sleep(2)
            by_means: dict[str, list[float]] = {}
            for r in starts:
                means, at = decided[r]
                by_means.setdefault(means, []).append(starts[r].timestamp() - at)
            latencies = sorted(x for values in by_means.values() for x in values)
            if len(latencies) < sample:
                raise SystemExit(f"{kind}: only {len(latencies)} of {sample} decided runs reached distribution")
            # The stack idle again once every run is through: the same heap history (the scheduler
            # keeps what processing thousands of tasks grew), without the waiting runs.
            log(f"{kind}: deciding the other {n - sample} runs; measuring the stack idle afterwards")
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda r: decide("rest" if kind == "hitl" else kind, stack, [r]), run_ids[sample:]))
            stack.wait(lambda: not db.rows("SELECT 1 FROM dag_run WHERE state = 'running' LIMIT 1"), "all runs", 3600, 10)
            time.sleep(10)
            idle_after = window(stack, db, 30)
            delivered = len(smtp.messages())
    return {
        "variant": kind,
        "n": n,
        "reach_gate_s": round(reach_s, 1),
        "idle": idle,
        "waiting": busy,
        "slots_held": busy["slots"],
        "idle_after": idle_after,
        "added_mb": round(busy["pss_mb"] - idle_after["pss_mb"], 1),
        "added_mb_by_component": {
            k: round(v - idle_after["pss_mb_by_component"][k], 1) for k, v in busy["pss_mb_by_component"].items()
        },
        "added_mb_vs_idle_before": round(busy["pss_mb"] - idle["pss_mb"], 1),
        "added_cpu_cores": round(busy["cpu_cores"] - idle["cpu_cores"], 3),
        "decision_to_next_p50_s": round(statistics.median(latencies), 2),
        "decision_to_next_p95_s": p95(latencies),
        "decision_to_next_by_means": {
            m: {"p50_s": round(statistics.median(v), 2), "p95_s": p95(v), "n": len(v)} for m, v in by_means.items()
        },
        "sampled": len(latencies),
        "emails_delivered": delivered,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 200")
    parser.add_argument("--n", type=int, help="runs waiting at the gate (default 1000; 200 with --quick)")
    parser.add_argument("--sample", type=int, default=30, help="runs decided to time decision -> distribution")
    parser.add_argument("--variants", default="hitl", help="comma list of hitl, reschedule")
    parser.add_argument("--env", action="append", default=[], help="extra Airflow setting for the stack, KEY=VALUE")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432"), help="user@host:port")
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    results = {}
    with tempfile.TemporaryDirectory(prefix="approval-bench-") as work:
        for kind in args.variants.split(","):
            extra = dict(item.split("=", 1) for item in args.env)
            results[kind] = run_variant(kind, n, min(args.sample, n), args.pg, Path(work), extra)
            log(f"{kind}: {json.dumps(results[kind])}")
    ours = results.get("hitl") or next(iter(results.values()))
    summary: dict[str, Any] = {
        "n": n,
        "slots_held": ours["slots_held"],
        "added_mb": ours["added_mb"],
        "decision_to_next_p95_s": ours["decision_to_next_p95_s"],
        "decision_to_next_p50_s": ours["decision_to_next_p50_s"],
        "added_cpu_cores": ours["added_cpu_cores"],
        "targets_met": ours["slots_held"] == 0 and ours["added_mb"] <= 50 and ours["decision_to_next_p95_s"] <= 20,
        "variants": results,
        "settings": args.env,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if "hitl" in results and "reschedule" in results:
        base = results["reschedule"]
        summary["ratios_vs_reschedule"] = {
            key: round(ours[key] / base[key], 3) if base[key] else None
            for key in ("added_mb", "added_cpu_cores", "decision_to_next_p95_s")
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
