#!/usr/bin/env python
"""Circuit-breaker benchmark: what a call through a breaker costs, on each shared store.

For each store of ``include/orchestrator/resilience/breakers.py`` (SQLite in a temporary folder; Redis at
127.0.0.1:6379 under a fresh key namespace, deleted afterwards) it measures, in this process:

* closed: a call through a closed breaker against the same bare call (a function returning at
  once), timed one by one and interleaved (bare, breaker, breaker, bare, ...) so that noise hits
  both alike; the overhead is the difference of the medians. Per call, pybreaker reads the state
  from the store and, after the success, the failure counter (SQLite: two SELECTs; Redis: a GET
  and a SET, which pybreaker's Redis storage always writes);
* open: the rejection of a call by an open breaker (``CircuitOpenError``, the function not called):
  the state, ``opened_at`` (pybreaker's check) and ``opened_at`` again (for ``retry_after``);
* build: a fresh registry and the first call of a service (what a task process pays once: the
  SQLite file opened in WAL mode, or the Redis client and pybreaker's three SETNX).

The bare function does nothing, so the closed ratio is the breaker's cost relative to a function
call; against a real API call (tens to hundreds of ms) only the overhead in ms matters.

Usage, from the project root (needs Redis at 127.0.0.1:6379 for the redis store)::

    python bench/breaker_bench.py                  # 2,000 calls per measurement, both stores: ~1 s
    python bench/breaker_bench.py --calls 20000 --stores sqlite

The last line printed is one JSON object per store: ``open_reject_ms_p50``,
``closed_overhead_ms_p50`` and the details (p95s, bare and closed medians, ratio, build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_t0 = time.perf_counter()
from include.orchestrator.errors import CircuitOpenError, RetryableServiceError, ServiceError  # noqa: E402
from include.orchestrator.resilience import breakers  # noqa: E402

IMPORT_MS = (time.perf_counter() - _t0) * 1000
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
STORES = ("sqlite", "redis")


def ms(seconds: float) -> float:
    return seconds * 1000


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def conn(kind: str, where: str) -> Any:
    """A connection as breakers reads one (conn_type, host, port, login, password, extra_dejson)."""
    services = {"Slack": {"fail_max": 1, "reset_timeout": 3600}}  # opened once, stays open for the whole run
    if kind == "sqlite":
        extra: dict[str, Any] = {"path": where, "services": services}
        return types.SimpleNamespace(conn_type="fs", host=None, port=None, login=None, password=None, extra_dejson=extra)
    extra = {"namespace": where, "services": services}
    return types.SimpleNamespace(
        conn_type="redis", host=REDIS_HOST, port=REDIS_PORT, login=None, password=None, extra_dejson=extra
    )


def noop() -> str:
    return "ok"


def down() -> None:
    raise RetryableServiceError("Slack", "chat.postMessage", "HTTP 503", status=503)


def bench_store(kind: str, where: str, calls: int, builds: int) -> dict[str, Any]:
    perf = time.perf_counter
    registry = breakers.build_breakers("campaign_breakers", conn(kind, where))
    for _ in range(200):  # warm-up: connections, caches, code paths
        registry.call("Notion", noop)

    bare: list[float] = []
    closed: list[float] = []
    call = registry.call
    for i in range(calls):
        if i % 2:
            t0 = perf()
            noop()
            t1 = perf()
            call("Notion", noop)
            t2 = perf()
            bare.append(t1 - t0)
            closed.append(t2 - t1)
        else:
            t0 = perf()
            call("Notion", noop)
            t1 = perf()
            noop()
            t2 = perf()
            closed.append(t1 - t0)
            bare.append(t2 - t1)
    assert registry.state("Notion") == "closed"

    try:
        call("Slack", down)
    except ServiceError:
        pass
    assert registry.state("Slack") == "open", registry.state("Slack")
    rejected: list[float] = []
    called = 0

    def counted() -> None:
        nonlocal called
        called += 1

    for _ in range(calls):
        t0 = perf()
        try:
            call("Slack", counted)
        except CircuitOpenError:
            pass
        rejected.append(perf() - t0)
    if called:
        raise SystemExit(f"{kind}: an open breaker let {called} call(s) through")

    built: list[float] = []
    for _ in range(builds):
        t0 = perf()
        fresh = breakers.build_breakers("campaign_breakers", conn(kind, where))
        fresh.call("Figma", noop)
        built.append(perf() - t0)
        if kind == "sqlite":
            fresh.store.db.conn.close()
        else:
            fresh.store.client.close()

    bare_p50, closed_p50 = statistics.median(bare), statistics.median(closed)
    return {
        "open_reject_ms_p50": ms(statistics.median(rejected)),
        "closed_overhead_ms_p50": ms(closed_p50 - bare_p50),
        "open_reject_ms_p95": ms(p(rejected, 95)),
        "closed_ms_p50": ms(closed_p50),
        "closed_ms_p95": ms(p(closed, 95)),
        "bare_ms_p50": ms(bare_p50),
        "closed_ratio_vs_bare": closed_p50 / bare_p50 if bare_p50 else None,
        "build_first_call_ms_p50": ms(statistics.median(built)),
        "calls": calls,
    }


def redis_namespace() -> tuple[Any, str]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable ({exc}); run with --stores sqlite") from None
    return client, f"breaker_bench_{uuid.uuid4().hex[:12]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2,000)")
    parser.add_argument("--builds", type=int, default=20, help="fresh registries built per store (default 20)")
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated subset of {','.join(STORES)}")
    args = parser.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    if unknown := set(stores) - set(STORES):
        parser.error(f"unknown stores {sorted(unknown)}")

    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for kind in stores:
        if kind == "sqlite":
            tmp = tempfile.mkdtemp(prefix="breaker-bench-")
            try:
                results[kind] = bench_store(kind, tmp, args.calls, args.builds)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            client, namespace = redis_namespace()
            try:
                results[kind] = bench_store(kind, namespace, args.calls, args.builds)
            finally:
                keys = list(client.scan_iter(f"{namespace}:*"))
                if keys:
                    client.delete(*keys)

    print(
        f"Circuit-breaker benchmark: pybreaker {_version('pybreaker')}, redis-py {_version('redis')}; "
        f"{args.calls} calls per measurement, medians (p95)"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; import of breakers (pybreaker, redis-py): {IMPORT_MS:.0f} ms")
    print()
    header = (
        f"{'store':<8}{'bare ms':>10}{'closed ms':>11}{'(p95)':>9}{'overhead ms':>13}{'ratio':>9}"
        f"{'open reject ms':>16}{'(p95)':>9}{'build ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for kind, r in results.items():
        print(
            f"{kind:<8}{r['bare_ms_p50']:>10.5f}{r['closed_ms_p50']:>11.4f}{r['closed_ms_p95']:>9.4f}"
            f"{r['closed_overhead_ms_p50']:>13.4f}{r['closed_ratio_vs_bare']:>9.0f}"
            f"{r['open_reject_ms_p50']:>16.4f}{r['open_reject_ms_p95']:>9.4f}{r['build_first_call_ms_p50']:>10.2f}"
        )
    print()
    print("bare = the function alone; closed = through a closed breaker; overhead = closed - bare (medians);")
    print("ratio = closed / bare; open reject = an open breaker refusing with CircuitOpenError (function not called);")
    print("build = a fresh registry plus the first call of a service (paid once per task process).")
    print(f"Total wall time {time.perf_counter() - started:.1f} s")
    print(json.dumps(results, separators=(",", ":")))


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
