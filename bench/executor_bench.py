#!/usr/bin/env python
"""Executor benchmark: the same N campaigns on LocalExecutor and on CeleryExecutor with two workers,
one after the other in one invocation, and what a campaign run costs in CPU against a floor.

Both executors run on this machine against a fresh PostgreSQL metadata database each (dropped
afterwards) and the same connection set, the one ``tests/airflow/test_cluster.py`` gives a cluster: ledger
on PostgreSQL, breakers on Redis, images in S3 (moto server on loopback), memory on the Qdrant
server double, email to a real SMTP server, review/notify/social/blog/analytics on the production
backends against their doubles, notes from the project's markdown folder, competitor pages from the
demo site, the template writer, Pillow images. Each phase gets fresh services (doubles, ledger
database, bucket, breakers), so no run of one phase sees another's effects or launches. Slots are
equal: LocalExecutor with parallelism 8; two Celery workers of concurrency 4 (parallelism 8).

1. **LocalExecutor** (``tests/stack.py``): trigger the N campaigns at once (as admin), approve each
   through the decision API (as dana) as soon as it waits at ``review.approval``; ``local_s`` is
   the wall time from the first trigger to the last run's end.
2. **CeleryExecutor** (``tests/cluster.py``: two workers, each its own host and disk):
   - the workers' CPU idle, over a short window (reported, not subtracted);
   - the **floor**: N runs of ``bench/floor_dag.py``, one DAG per campaign of the same shape (the
     same groups, task instances, mapped ones and teardowns) whose tasks do nothing;
   - the **campaigns**: the same N runs as on LocalExecutor (``celery_s``).
   The CPU of a batch is read from ``/proc``: utime + stime + cutime + cstime of every live
   process in each worker's session (the Celery worker, its pool processes, each of which
   supervises one task at a time, and their task processes, which the supervisor reaps into its
   cutime/cstime), after minus before the batch, once no task process is left. Per run = delta / N;
   ``overhead_ratio`` = campaign / floor.
3. **A dead worker**: one more campaign (not among the N) whose blog publication is held by the
   GitHub double, so ``distribution.publish_blog`` is certainly in its call on a worker; that
   worker is SIGKILLed with its whole tree, and ``dead_worker_retry_s`` is the time from the kill
   until the task's next try runs (or is done) on the other worker. The cluster notices through
   the scheduler's heartbeat sweep (30 s timeout, looked for every 5 s; README "Scaling out").

Needs root, PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379
(the cluster's broker on database 13, in a queue of its own; the circuit breakers on 14, flushed).

Usage, from the project root (``make bench-executors`` runs the quick mode)::

    python bench/executor_bench.py --quick        # N = 12: ~15 min on 2 cores
    python bench/executor_bench.py --n 40

A short table, then a last line: one JSON object with ``n``, ``local_s``, ``celery_s``,
``cpu_per_run_s``, ``floor_cpu_per_run_s``, ``overhead_ratio``, ``dead_worker_retry_s`` (targets:
``overhead_ratio`` <= 1.3, ``dead_worker_retry_s`` <= 60) and the details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from include.orchestrator.dev import localdev  # noqa: E402
from include.orchestrator.domain.loader import CAMPAIGNS_DIR  # noqa: E402
from tests.cluster import (  # noqa: E402
    CeleryCluster,
    MetaDB,
    check_services,
    create_database,
    database_url,
    drop_database,
    shared_services,
)
from tests.stack import AirflowStack  # noqa: E402

BROKER_DB, BREAKERS_DB = 13, 14  # Redis databases; tests/airflow/test_cluster.py uses 11 and 12
GATE = "review.approval"
SLOTS = 8  # task slots of either executor: LocalExecutor parallelism; 2 Celery workers x 4
HEARTBEAT_TIMEOUT, DETECTION_INTERVAL, RETRY_DELAY = 30, 5, 2
KILL_SLUG = "bench-kill"
WARM_UP_RUNS = 4  # floor runs through the cluster before measuring: enough to keep all 8 pool processes busy
TARGETS = {"overhead_ratio": 1.3, "dead_worker_retry_s": 60}
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# --- campaigns ------------------------------------------------------------------------------------
def campaign_file(slug: str, name: str, site_port: int) -> dict[str, Any]:
    """The sample campaign (every channel, two competitor pages) under another slug, with short retries
    and dana as its only approver (runs are triggered as admin)."""
    campaign = yaml.safe_load((CAMPAIGNS_DIR / "spring-launch.yaml").read_text())
    campaign |= {"slug": slug, "name": name, "retries": {"count": 2, "delay": f"{RETRY_DELAY}s"}}
    campaign["research"]["competitor_urls"] = [f"http://127.0.0.1:{site_port}/{page}.html" for page in ("flowwatch", "datadoggo")]
    campaign["approval"] = {"approvers": ["dana"], "timeout": "1h"}
    return campaign


def write_project(root: Path, n: int, site_port: int) -> tuple[Path, Path, list[str]]:
    """The campaigns folder (N campaigns and the dead-worker one) and a dags folder holding the
    project's DAG file and the floor's. Returns both folders and the N slugs."""
    campaigns, dags = root / "campaigns", root / "dags"
    campaigns.mkdir(parents=True)
    dags.mkdir()
    slugs = [f"bench-{i:02d}" for i in range(1, n + 1)]
    for slug in [*slugs, KILL_SLUG]:
        campaign = campaign_file(slug, f"Bench {slug.removeprefix('bench-').title()} Launch", site_port)
        (campaigns / f"{slug}.yaml").write_text(yaml.safe_dump(campaign))
    shutil.copy(PROJECT / "dags" / "campaigns.py", dags / "campaigns.py")
    shutil.copy(PROJECT / "bench" / "floor_dag.py", dags / "floor_dag.py")
    return campaigns, dags, slugs


@contextlib.contextmanager
def services(root: Path, s3: Any) -> Iterator[dict[str, Any]]:
    """Fresh shared services for one phase (``tests.cluster.shared_services``); yields the connections and the doubles."""
    with contextlib.ExitStack() as stack:
        yield shared_services(stack, root, s3, BREAKERS_DB)


# --- the metadata database ----------------------------------------------------------------------------
# --- CPU from /proc ------------------------------------------------------------------------------------
def session_cpu(sid: int) -> dict[int, tuple[int, float, float]]:
    """Every live process of session ``sid``: pid -> (ppid, own CPU s, reaped children's CPU s)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on
        ppid, session = int(fields[1]), int(fields[3])
        if session != sid:
            continue
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        found[int(entry)] = (ppid, (utime + stime) / TICK, (cutime + cstime) / TICK)
    return found


def worker_cpu(cluster: CeleryCluster) -> dict[str, float]:
    """CPU seconds so far of every worker's tree, in all and by part: the Celery worker itself
    (with pool processes it reaped), its pool processes (each the supervisor of its tasks), and the
    task processes (reaped into their supervisor's cutime, or still alive)."""
    parts = {"total": 0.0, "celery": 0.0, "supervisors": 0.0, "tasks": 0.0, "task_procs_alive": 0, "pool": []}
    for worker in cluster.workers.values():
        if worker.proc is None:
            continue
        sid = worker.proc.pid
        for pid, (ppid, own, reaped) in session_cpu(sid).items():
            parts["total"] += own + reaped
            if pid == sid:
                parts["celery"] += own + reaped
            elif ppid == sid:
                parts["supervisors"] += own
                parts["tasks"] += reaped
                parts["pool"].append(pid)
            else:
                parts["tasks"] += own + reaped
                parts["task_procs_alive"] += 1
    return parts


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    delta = {k: round(after[k] - before[k], 2) for k in ("total", "celery", "supervisors", "tasks")}
    delta["pool_unchanged"] = sorted(before["pool"]) == sorted(after["pool"])  # else the split is approximate
    return delta


def local_task_cpu(stack: AirflowStack) -> float:
    """LocalExecutor: CPU so far of the scheduler's descendants (its executor workers, their supervisors
    and task processes), the scheduler itself left out. Approximate: a worker process that exits takes
    its share into the scheduler's cutime."""
    sid = stack.procs["scheduler"].pid
    return sum(own + reaped for pid, (_, own, reaped) in session_cpu(sid).items() if pid != sid)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, /proc/stat; idle and iowait left out)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def bench_cpu_s() -> float:
    """CPU seconds so far of this bench's processes: itself, its Airflow components and workers and
    their task processes (live ones, and the children they reaped)."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def settle(cluster: CeleryCluster, timeout: float = 120) -> None:
    """Until no task process is left in any worker (finished tasks' processes exit after the state is set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker_cpu(cluster)["task_procs_alive"]:
        time.sleep(0.5)
    time.sleep(2)


# --- runs ------------------------------------------------------------------------------------------------
def decide(stack: AirflowStack, dag_id: str, run_id: str) -> None:
    path = f"/campaigns/api/v1/approvals/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    answer = stack.api("POST", path, "dana", json={"decision": "approve", "reason": "bench"})
    if answer.status_code != 200:
        raise RuntimeError(f"approving {dag_id} {run_id}: {answer.status_code} {answer.text}")


def run_batch(stack: AirflowStack, db: MetaDB, dag_ids: list[str], label: str, timeout: float = 1800) -> dict[str, Any]:
    """Trigger one run of each DAG at once, approve each as soon as it waits at the gate, wait for all
    to end. Wall time: first trigger to the last run's end_date."""
    began_wall, began = time.time(), time.monotonic()
    busy0, ours0 = machine_busy_s(), bench_cpu_s()
    runs = {dag_id: stack.trigger(dag_id) for dag_id in dag_ids}
    approved: dict[str, float] = {}
    ended: dict[str, tuple[str, datetime]] = {}
    wanted = set(runs.items())
    next_log = time.monotonic() + 30
    while len(ended) < len(runs):
        rows = db.rows(
            "SELECT r.dag_id, r.run_id, r.state, r.end_date, g.state FROM dag_run r"
            " LEFT JOIN task_instance g ON g.dag_id = r.dag_id AND g.run_id = r.run_id AND g.task_id = %s"
            " WHERE r.run_id = ANY(%s)",
            GATE,
            list(runs.values()),
        )
        for dag_id, run_id, state, end_date, gate in rows:
            if (dag_id, run_id) not in wanted:
                continue
            if gate == "awaiting_input" and dag_id not in approved:
                decide(stack, dag_id, run_id)
                approved[dag_id] = time.monotonic() - began
            if state in ("success", "failed") and end_date is not None:
                ended[dag_id] = (state, end_date)
        stack._check_alive()
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{label}: runs not ended after {timeout} s: {sorted(set(runs) - set(ended))}")
        if time.monotonic() > next_log:
            log(f"{label}: {len(approved)} approved, {len(ended)}/{len(runs)} ended after {time.monotonic() - began:.0f} s")
            next_log += 30
        time.sleep(1)
    wall = max(end.timestamp() for _, end in ended.values()) - began_wall
    # Others' work on this machine meanwhile (PostgreSQL and Redis count as others): wall times are
    # only comparable between batches that ran under a similar load.
    spent = time.monotonic() - began
    others = max(0.0, (machine_busy_s() - busy0) - (bench_cpu_s() - ours0)) / spent
    states = [state for state, _ in ended.values()]
    failed = {dag_id: failures(db, dag_id, runs[dag_id]) for dag_id, (state, _) in ended.items() if state != "success"}
    result = {
        "wall_s": round(wall, 1),
        "success": states.count("success"),
        "failed": len(states) - states.count("success"),
        "approved_by_s": round(max(approved.values()), 1) if approved else None,
        "other_load_cores": round(others, 2),
        "runs": runs,
    }
    log(
        f"{label}: {result['success']}/{len(runs)} succeeded in {wall:.1f} s (other load {others:.2f} cores)"
        + (f"; failures: {failed}" if failed else "")
    )
    if failed:
        result["failures"] = failed
    return result


def failures(db: MetaDB, dag_id: str, run_id: str) -> list[tuple]:
    return db.rows(
        "SELECT task_id, map_index, state, try_number, hostname FROM task_instance WHERE dag_id = %s AND run_id = %s"
        " AND state IN ('failed', 'upstream_failed', 'up_for_retry')",
        dag_id,
        run_id,
    )


def task_counts(db: MetaDB, runs: dict[str, str]) -> dict[str, float]:
    """Task instances per run and tries per run (a retry costs a task process too)."""
    rows = db.rows(
        "SELECT count(*), coalesce(sum(try_number), 0) FROM task_instance WHERE run_id = ANY(%s) AND dag_id = ANY(%s)",
        list(runs.values()),
        list(runs),
    )
    count, tries = rows[0]
    return {"task_instances_per_run": round(count / len(runs), 2), "tries_per_run": round(float(tries) / len(runs), 2)}


# --- phases ------------------------------------------------------------------------------------------------
def local_phase(root: Path, base_env: dict[str, str], s3: Any, slugs: list[str]) -> dict[str, Any]:
    dag_ids = [f"campaign_{s}" for s in slugs]
    floor_ids = [f"floor_{s}" for s in slugs]
    db_name = create_database("bench_local")
    try:
        with services(root / "services", s3) as world:
            env = {**base_env, **localdev.connection_env(world["conns"])}
            stack = AirflowStack(root / "airflow", env=env, db_url=database_url(db_name), parallelism=SLOTS)
            began = time.monotonic()
            try:
                stack.start()
                stack.wait_for_dags([*dag_ids, *floor_ids])
                log(f"local: LocalExecutor up and DAGs parsed in {time.monotonic() - began:.0f} s")
                db = MetaDB(db_name)
                warm = run_batch(stack, db, floor_ids[:WARM_UP_RUNS], "local warm-up (floor)")  # as on Celery
                time.sleep(5)
                cpu0 = local_task_cpu(stack)
                batch = run_batch(stack, db, dag_ids, "local campaigns")
                time.sleep(5)
                batch["task_cpu_per_run_s"] = round((local_task_cpu(stack) - cpu0) / len(dag_ids), 2)
                batch |= task_counts(db, batch.pop("runs"))
                batch["warm_up_s"] = warm["wall_s"]
                db.close()
                return batch
            finally:
                stack.stop()
    finally:
        drop_database(db_name)


def celery_phase(root: Path, base_env: dict[str, str], s3: Any, slugs: list[str], idle_s: float) -> dict[str, Any]:
    dag_ids = [f"campaign_{s}" for s in slugs]
    floor_ids = [f"floor_{s}" for s in slugs]
    kill_dag = f"campaign_{KILL_SLUG}"
    out: dict[str, Any] = {}
    with services(root / "services", s3) as world:
        env = {**base_env, **localdev.connection_env(world["conns"])}
        cluster = CeleryCluster(
            root / "cluster",
            env=env,
            workers=2,
            concurrency=SLOTS // 2,
            parallelism=SLOTS,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            detection_interval=DETECTION_INTERVAL,
            broker_db=BROKER_DB,
        )
        began = time.monotonic()
        try:
            cluster.start()
            cluster.wait_for_dags([*dag_ids, *floor_ids, kill_dag])
            log(f"celery: cluster up and DAGs parsed in {time.monotonic() - began:.0f} s")
            db = MetaDB(cluster.db_name)
            # Each pool process imports what supervising needs on its first task, and its task processes,
            # forked from it, inherit that: a warm-up batch (not measured) so neither batch pays it.
            warm = run_batch(cluster, db, floor_ids[:WARM_UP_RUNS], "celery warm-up (floor)")
            settle(cluster)
            out["warm_up_s"] = warm["wall_s"]

            before = worker_cpu(cluster)
            time.sleep(idle_s)
            out["idle_cpu_cores"] = round(cpu_delta(before, worker_cpu(cluster))["total"] / idle_s, 4)
            log(f"celery: workers idle use {out['idle_cpu_cores']} core")

            for label, ids in (("floor", floor_ids), ("campaigns", dag_ids)):
                before = worker_cpu(cluster)
                batch = run_batch(cluster, db, ids, f"celery {label}")
                settle(cluster)
                batch["cpu_s"] = cpu_delta(before, worker_cpu(cluster))
                batch["cpu_per_run_s"] = round(batch["cpu_s"]["total"] / len(ids), 2)
                batch |= task_counts(db, batch.pop("runs"))
                log(f"celery {label}: {batch['cpu_per_run_s']} CPU s per run ({batch['cpu_s']})")
                out[label] = batch

            out["dead_worker"] = dead_worker(cluster, db, world["doubles"]["github blog"], kill_dag)
            db.close()
        finally:
            cluster.stop()
    return out


def dead_worker(cluster: CeleryCluster, db: MetaDB, website: Any, dag_id: str) -> dict[str, Any]:
    """SIGKILL the worker running ``distribution.publish_blog`` while it is in its call (the GitHub
    double holds the answer); time until the task's next try runs or is done on the other worker."""
    task_id = "distribution.publish_blog"
    hold = website.hold("PATCH", r"/api/v3/repos/acme/website/git/refs/heads/main")  # the branch update publishes
    try:
        run_id = cluster.trigger(dag_id)
        cluster.wait(
            lambda: (
                db.rows(
                    "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s", dag_id, run_id, GATE
                )
                == [("awaiting_input",)]
            ),
            "the dead-worker run at the gate",
            600,
        )
        decide(cluster, dag_id, run_id)
        if not hold.held.wait(300):
            raise RuntimeError(f"publish_blog never called GitHub: {failures(db, dag_id, run_id)}")
        [(first_try, hostname, state)] = db.rows(
            "SELECT try_number, hostname, state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
            dag_id,
            run_id,
            task_id,
        )
        victim = cluster.worker_of(hostname)
        if victim is None or state != "running":
            raise RuntimeError(f"publish_blog is {state} on {hostname!r}, not running on a worker of the cluster")
        killed_at = time.monotonic()
        pids = cluster.kill_worker(victim)
    finally:
        hold.release.set()  # the answer goes to a dead socket
    survivor = next(w for w in cluster.workers if w != victim)
    log(f"dead worker: SIGKILLed {victim} ({len(pids)} processes) in the middle of {task_id} try {first_try}")
    seen: dict[str, Any] = {"victim": victim, "survivor": survivor, "killed_processes": len(pids)}
    while time.monotonic() - killed_at < 300:
        [(try_number, hostname, state)] = db.rows(
            "SELECT try_number, hostname, state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
            dag_id,
            run_id,
            task_id,
        )
        now = round(time.monotonic() - killed_at, 1)
        if "failed_s" not in seen and (try_number > first_try or state != "running"):
            seen["failed_s"], seen["state_after_sweep"] = now, state  # the heartbeat sweep noticed
        if try_number > first_try and state in ("running", "success") and cluster.worker_of(hostname) == survivor:
            seen["retry_running_s"] = now
            break
        time.sleep(0.25)
    seen["run_state"] = cluster.wait_run(dag_id, run_id, timeout=600)
    log(f"dead worker: {seen}")
    return seen


# --- what every task process loads ------------------------------------------------------------------------
PLUGIN_PROBE = """
import json, resource
import airflow.sdk
from airflow.sdk.execution_time import supervisor, task_runner
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk._shared.plugins_manager.plugins_manager import _load_entrypoint_plugins

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

before = cpu()
plugins, errors = _load_entrypoint_plugins()
print(json.dumps({"names": [p.name for p in plugins], "cpu_s": cpu() - before}))
"""


def entrypoint_plugins(root: Path) -> dict[str, Any]:
    """The plugins installed packages register (entry point ``airflow.plugins``), which every task
    process imports at its start, and the CPU that costs, measured alone in a fresh interpreter that
    has imported what a forked task process starts with (best of two)."""
    import subprocess

    env = {**os.environ, "AIRFLOW_HOME": str(root / "probe"), "PYTHONPATH": str(PROJECT), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    found: list[dict[str, Any]] = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and done.stdout.strip():
            found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not found:
        return {"names": None, "cpu_s": None}
    return {"names": found[0]["names"], "cpu_s": round(min(f["cpu_s"] for f in found), 2)}


# --- output ------------------------------------------------------------------------------------------------
def table(summary: dict[str, Any], details: dict[str, Any]) -> str:
    local, celery = details["local"], details["celery"]
    floor, camp = celery["floor"], celery["campaigns"]

    def part(batch: dict[str, Any], key: str) -> str:
        return f"{batch['cpu_s'][key] / summary['n']:.2f}"

    ratio = summary["overhead_ratio"]
    retry = summary["dead_worker_retry_s"]
    rows = [
        ("", "LocalExecutor", "Celery, 2 workers", ""),
        (
            f"N = {summary['n']} campaigns, wall s",
            f"{summary['local_s']}",
            f"{summary['celery_s']}",
            f"ratio {summary['celery_s'] / summary['local_s']:.2f}" if summary["local_s"] else "",
        ),
        ("runs succeeded", f"{local['success']}/{summary['n']}", f"{camp['success']}/{summary['n']}", ""),
        (
            "others' load meanwhile, cores",
            f"{local['other_load_cores']}",
            f"{camp['other_load_cores']}",
            "CPU of processes not the bench's (PostgreSQL included)",
        ),
        (
            "tries per run (task instances)",
            f"{local['tries_per_run']} ({local['task_instances_per_run']})",
            f"{camp['tries_per_run']} ({camp['task_instances_per_run']})",
            "",
        ),
        ("", "campaign", "floor (no-op tasks)", ""),
        ("wall s of the batch (Celery)", f"{camp['wall_s']}", f"{floor['wall_s']}", ""),
        (
            "worker CPU s per run (Celery)",
            f"{summary['cpu_per_run_s']}",
            f"{summary['floor_cpu_per_run_s']}",
            f"ratio {ratio} (target <= {TARGETS['overhead_ratio']})" if ratio is not None else "",
        ),
        ("  of which task processes", part(camp, "tasks"), part(floor, "tasks"), ""),
        ("  of which supervisors (pool)", part(camp, "supervisors"), part(floor, "supervisors"), ""),
        ("  of which Celery worker main", part(camp, "celery"), part(floor, "celery"), ""),
        (
            "CPU s per task try",
            f"{summary['cpu_per_run_s'] / camp['tries_per_run']:.2f}",
            f"{summary['floor_cpu_per_run_s'] / floor['tries_per_run']:.2f}",
            "",
        ),
        ("LocalExecutor task CPU s per run", f"{local['task_cpu_per_run_s']}", "", "scheduler's descendants"),
        ("dead worker: failed by the sweep, s", f"{details['celery']['dead_worker'].get('failed_s')}", "", ""),
        ("dead worker -> retry running, s", f"{retry}", "", f"target <= {TARGETS['dead_worker_retry_s']}"),
    ]
    plugins = details["entrypoint_plugins"]
    if plugins["names"]:
        rows.append(
            (
                "entry-point plugins, CPU s per task",
                f"{plugins['cpu_s']}",
                "",
                "loaded by every task process: " + ", ".join(plugins["names"]) + " (measured alone)",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width[i]) for i, cell in enumerate(r)).rstrip() for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 12")
    parser.add_argument("--n", type=int, default=None, help="campaigns per batch (default 40; 12 with --quick)")
    parser.add_argument("--idle", type=float, default=20, help="seconds the Celery workers are measured idle")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) instead of deleting it")
    args = parser.parse_args()
    n = args.n or (12 if args.quick else 40)

    check_services()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="executor-bench-"))
    log(f"executor bench: N = {n}, work folder {root}")
    from tests.s3_server import S3Server

    try:
        plugins = entrypoint_plugins(root)
        log(f"entry-point plugins every task process loads: {plugins}")
        site = localdev.serve_demo_site()
        with S3Server() as s3:
            campaigns, dags, slugs = write_project(root, n, site.server_address[1])
            base_env = {"CAMPAIGNS_DIR": str(campaigns), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
            local = local_phase(root / "local", base_env, s3, slugs)
            celery = celery_phase(root / "celery", base_env, s3, slugs, args.idle)
        site.shutdown()
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    floor, camp = celery["floor"], celery["campaigns"]
    summary = {
        "n": n,
        "local_s": local["wall_s"],
        "celery_s": camp["wall_s"],
        "cpu_per_run_s": camp["cpu_per_run_s"],
        "floor_cpu_per_run_s": floor["cpu_per_run_s"],
        "overhead_ratio": round(camp["cpu_per_run_s"] / floor["cpu_per_run_s"], 2) if floor["cpu_per_run_s"] else None,
        "dead_worker_retry_s": celery["dead_worker"].get("retry_running_s"),
    }
    details = {
        "local": local,
        "celery": celery,
        "entrypoint_plugins": plugins,
        "bench_wall_s": round(time.monotonic() - started, 1),
    }
    summary["targets_met"] = {k: summary[k] is not None and summary[k] <= v for k, v in TARGETS.items()}
    print()
    print(table(summary, details))
    print(f"bench wall time {details['bench_wall_s']} s")
    print(json.dumps({**summary, "details": details}))


if __name__ == "__main__":
    main()
