"""Circuit breakers (include/orchestrator/resilience/breakers.py) on both shared stores, across real OS processes.

Stores: SQLite in tmp_path and Redis at 127.0.0.1:6379 (a fresh key namespace per test, deleted
afterwards). Redis must be running: the tests fail, never skip, without it (CI runs one).
``pytest -s`` shows the state trace of the cross-process test.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from include.orchestrator.errors import (
    CircuitOpenError,
    ConnectionConfigError,
    PermanentServiceError,
    RetryableServiceError,
    ServiceError,
)
from include.orchestrator.resilience import breakers
from include.orchestrator.resilience.breakers import build_breakers, open_breakers

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The reset timeout of the tests. Redis keeps opened_at in whole seconds (pybreaker's format), so a
# breaker on Redis stays open between reset_timeout - 1 and reset_timeout seconds: 1.5 s leaves >= 0.5 s.
RESET_S = 1.5

Spec = dict[str, Any]  # a connection as plain fields: conn_type, host, port, extra (sent to child processes)


def unavailable(status: int = 503) -> ServiceError:
    return RetryableServiceError("Slack", "chat.postMessage", f"HTTP {status}: upstream trouble", status=status)


def refused(status: int = 404) -> ServiceError:
    return PermanentServiceError("Slack", "chat.postMessage", f"HTTP {status}: channel_not_found", status=status)


def raiser(exc: BaseException) -> Callable[[], None]:
    def fn() -> None:
        raise exc

    return fn


def to_connection(spec: Spec, conn_id: str = "campaign_breakers") -> Connection:
    return Connection(
        conn_id=conn_id,
        conn_type=spec["conn_type"],
        host=spec.get("host"),
        port=spec.get("port"),
        extra=json.dumps(spec["extra"]),
    )


@pytest.fixture
def redis_ns() -> Iterator[str]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable ({exc}): the breaker tests need it (CI runs one)")
    namespace = f"test_breakers_{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Spec]:
    """A function of the ``services`` extra -> the connection spec of a fresh store of this kind."""
    if request.param == "sqlite":

        def make(services: dict[str, Any] | None = None) -> Spec:
            return {"conn_type": "fs", "extra": {"path": str(tmp_path / "breakers"), "services": services or {}}}
    else:
        namespace = request.getfixturevalue("redis_ns")

        def make(services: dict[str, Any] | None = None) -> Spec:
            return {
                "conn_type": "redis",
                "host": REDIS_HOST,
                "port": REDIS_PORT,
                "extra": {"db": 0, "namespace": namespace, "services": services or {}},
            }

    make.kind = request.param  # type: ignore[attr-defined]
    return make


# --------------------------------------------------------------------------------------------
# Across processes: A opens it, B is refused without a call, C half-opens and closes it
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, logging, sys, time, types
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    from include.orchestrator.resilience import breakers
    from include.orchestrator.errors import CircuitOpenError, RetryableServiceError, ServiceError

    role, spec = sys.argv[1], json.loads(sys.argv[2])
    conn = types.SimpleNamespace(conn_type=spec["conn_type"], host=spec.get("host"), port=spec.get("port"),
                                 login=None, password=None, extra_dejson=spec["extra"])
    registry = breakers.open_breakers("campaign_breakers", conn)
    registry.breaker("Slack")  # built before the go: the steps below run within milliseconds of each other
    print("ready", flush=True)
    sys.stdin.readline()

    calls = 0
    def failing():
        global calls
        calls += 1
        raise RetryableServiceError("Slack", "chat.postMessage", "HTTP 503: upstream trouble", status=503)
    def working():
        global calls
        calls += 1
        return "ok"

    steps = []
    def attempt(fn):
        start = time.perf_counter()
        before = calls
        out = {"outcome": "returned"}
        try:
            fn_result = registry.call("Slack", fn)
        except CircuitOpenError as exc:
            out = {"outcome": "CircuitOpenError", "retryable": exc.retryable, "retry_after": exc.retry_after,
                   "message": str(exc), "is_service_error": isinstance(exc, ServiceError)}
        except ServiceError as exc:
            out = {"outcome": "ServiceError", "message": str(exc)}
        out.update(ms=(time.perf_counter() - start) * 1000, called=calls > before, state=registry.state("Slack"))
        steps.append(out)

    if role == "A":
        for _ in range(7):
            attempt(failing)
    elif role == "B":
        attempt(working)
    else:
        attempt(working)
        attempt(working)
    print(json.dumps(steps), flush=True)
    """
)


def _line(proc: subprocess.Popen, what: str, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    if not line:
        proc.kill()
        raise AssertionError(f"child gave no {what}: {proc.communicate(timeout=5)[1]}")
    return line


def test_state_is_shared_across_processes(store: Callable[..., Spec]) -> None:
    spec = store({"Slack": {"reset_timeout": RESET_S}})  # fail_max 5 and success_threshold 2: the defaults
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # All three start (and import) at once; each waits for its go, so the steps follow each other closely.
    procs = {
        role: subprocess.Popen(
            [sys.executable, "-c", CHILD, role, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for role in "ABC"
    }
    try:
        for role, proc in procs.items():
            assert _line(proc, f"ready from {role}").strip() == "ready"

        def run(role: str) -> list[dict[str, Any]]:
            proc = procs[role]
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(_line(proc, f"result from {role}"))

        a = run("A")
        b = run("B")
        wait = b[0].get("retry_after") or 0.0
        time.sleep(wait + 0.05)
        c = run("C")
        logs = {role: proc.communicate(timeout=10)[1] for role, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    print(f"\n--- {store.kind}: state trace across processes ---")  # type: ignore[attr-defined]
    for role, steps in (("A", a), ("B", b), ("C", c)):
        pid = procs[role].pid
        for i, s in enumerate(steps, 1):
            extra = f", retry_after {s['retry_after']:.3f} s" if "retry_after" in s else ""
            print(
                f"  {role} (pid {pid}) call {i}: {s['outcome']:<17} fn called={s['called']!s:<5} "
                f"{s['ms']:7.3f} ms -> {s['state']}{extra}"
            )
        if role == "B":
            print(f"  (waited {wait + 0.05:.3f} s: B's retry_after)")
        for line in logs[role].splitlines():
            if "circuit breaker" in line:
                print(f"    {role} log: {line}")

    # A: five retryable failures reach Slack (the fifth trips the breaker and still raises Slack's own
    # error), then the circuit is open and A's own calls are refused without calling.
    assert [s["outcome"] for s in a] == ["ServiceError"] * 5 + ["CircuitOpenError"] * 2, a
    assert [s["called"] for s in a] == [True] * 5 + [False] * 2
    assert [s["state"] for s in a] == ["closed"] * 4 + ["open"] * 3
    # B, another process, is refused at once without its function being called.
    (rejected,) = b
    assert rejected["outcome"] == "CircuitOpenError" and rejected["called"] is False, rejected
    assert rejected["retryable"] is True and rejected["is_service_error"] is True
    assert 0 < rejected["retry_after"] <= RESET_S
    assert "Slack" in rejected["message"] and "tried again at" in rejected["message"]
    assert rejected["ms"] < 50, f"an open circuit should refuse at once, took {rejected['ms']:.1f} ms"
    # C, once B's retry_after has passed: the first call is a trial (half-open), the second closes it.
    assert [(s["outcome"], s["called"], s["state"]) for s in c] == [("returned", True, "half-open"), ("returned", True, "closed")]
    assert "closed -> open (5 failures in a row)" in logs["A"] and "opened by another process" in logs["B"]
    assert "open -> half-open" in logs["C"] and "half-open -> closed" in logs["C"]


# --------------------------------------------------------------------------------------------
# What counts as a failure
# --------------------------------------------------------------------------------------------


def test_our_4xx_mistakes_never_open_the_circuit(store: Callable[..., Spec]) -> None:
    registry = build_breakers("campaign_breakers", to_connection(store()))
    calls = 0

    def bad_request(status: int) -> None:
        nonlocal calls
        calls += 1
        raise refused(status)

    for i in range(12):
        with pytest.raises(ServiceError) as err:
            registry.call("Slack", bad_request, (400, 401, 403, 404, 422)[i % 5])
        assert isinstance(err.value, PermanentServiceError) and err.value.retryable is False
    with pytest.raises(KeyError):  # not the service's trouble either: passes through, not counted
        registry.call("Slack", lambda: {}["missing"])
    assert calls == 12
    assert registry.state("Slack") == "closed"
    assert registry.breaker("Slack").fail_counter == 0


def test_retryable_failures_open_it(store: Callable[..., Spec]) -> None:
    class FlakyTransport(Exception):  # not a ServiceError: any exception carrying retryable=True counts
        retryable = True

    registry = build_breakers("campaign_breakers", to_connection(store()))
    failures: list[BaseException] = [unavailable(503), unavailable(429), TimeoutError("x"), unavailable(502), FlakyTransport()]
    failures[2].retryable = True  # type: ignore[attr-defined]
    for i, exc in enumerate(failures, 1):

        def fail(exc: BaseException = exc) -> None:
            raise exc

        with pytest.raises(type(exc)):
            registry.call("Slack", fail)
        assert registry.state("Slack") == ("open" if i == 5 else "closed")
    assert registry.breaker("Slack").fail_counter == 5
    with pytest.raises(CircuitOpenError):
        registry.call("Slack", lambda: "never")
    # Other services have their own breaker.
    assert registry.call("Notion", lambda: "fine") == "fine" and registry.state("Notion") == "closed"


def test_open_error_says_when_it_will_be_tried_again(store: Callable[..., Spec]) -> None:
    registry = build_breakers("campaign_breakers", to_connection(store({"Figma": {"fail_max": 1, "reset_timeout": 60}})))
    opened = time.time()

    def down() -> None:
        raise unavailable()

    with pytest.raises(ServiceError):
        registry.call("Figma", down)
    with pytest.raises(CircuitOpenError) as err:
        registry.call("figma", lambda: "never")
    exc = err.value
    # Redis stores opened_at in whole seconds, so the breaker may reopen up to 1 s earlier than 60 s after.
    lower = 60 - (time.time() - opened) - (1 if store.kind == "redis" else 0) - 0.01  # type: ignore[attr-defined]
    assert lower <= exc.retry_after <= 60
    assert abs(exc.retry_at.timestamp() - (time.time() + exc.retry_after)) < 0.5
    assert exc.retryable is True and isinstance(exc, ServiceError) and exc.service == "figma"
    assert exc.retry_at.strftime("%Y-%m-%dT%H:%M:%SZ") in str(exc) and "circuit breaker open" in str(exc)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_per_service_settings_from_the_connection(store: Callable[..., Spec]) -> None:
    services = {"GitHub": {"fail_max": 2, "reset_timeout": 30, "success_threshold": 1}, "sendgrid": {"fail_max": 3}}
    registry = build_breakers("campaign_breakers", to_connection(store(services)))
    gh = registry.breaker("github")  # the backend spells it "github"; the extra "GitHub": one breaker
    assert (gh.fail_max, gh.reset_timeout, gh.success_threshold) == (2, 30.0, 1)
    sg = registry.breaker("SendGrid")
    assert (sg.fail_max, sg.reset_timeout, sg.success_threshold) == (3, 60.0, 2)
    slack = registry.breaker("Slack")
    assert (slack.fail_max, slack.reset_timeout, slack.success_threshold) == (5, 60.0, 2)

    def down() -> None:
        raise unavailable()

    for name in ("GitHub", "github"):
        with pytest.raises(ServiceError):
            registry.call(name, down)
    for _ in range(4):
        with pytest.raises(ServiceError):
            registry.call("Slack", down)
    assert registry.state("GITHUB") == "open" and registry.state("Slack") == "closed"
    with pytest.raises(CircuitOpenError) as err:
        registry.call("GitHub", lambda: "never")
    assert 28 <= err.value.retry_after <= 30


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"services": {"Slack": {"fail_max": 0}}}, "services.Slack.fail_max"),
        ({"services": {"Slack": {"fail_max": "5"}}}, "services.Slack.fail_max"),
        ({"services": {"Slack": {"success_threshold": True}}}, "services.Slack.success_threshold"),
        ({"services": {"Slack": {"reset_timeout": -1}}}, "services.Slack.reset_timeout"),
        ({"services": {"Slack": {"timeout": 5}}}, "services.Slack"),
        ({"services": {"Slak": {"fail_max": 3}}}, "services.Slak"),
        ({"services": ["Slack"]}, "'services'"),
    ],
)
def test_bad_settings_name_the_connection_and_field(tmp_path: Path, extra: dict[str, Any], field: str) -> None:
    conn = to_connection({"conn_type": "fs", "extra": {"path": str(tmp_path), **extra}}, conn_id="my_breakers")
    with pytest.raises(ConnectionConfigError, match="my_breakers") as err:
        build_breakers("my_breakers", conn)
    assert field in str(err.value)


def test_unknown_store_type_names_the_connection() -> None:
    conn = Connection(conn_id="my_breakers", conn_type="postgres", host="db")
    with pytest.raises(ConnectionConfigError) as err:
        build_breakers("my_breakers", conn)
    message = str(err.value)
    assert "'my_breakers'" in message and "'postgres'" in message and "fs (" in message and "redis (" in message


def test_open_breakers_reads_the_airflow_connection_once_per_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    conn_json = json.dumps({"conn_type": "fs", "extra": {"path": "state/breakers"}})
    monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_BREAKERS", conn_json)
    registry = open_breakers()
    assert open_breakers() is registry  # built once, reused by every backend of the task
    assert registry.call("Slack", lambda x: x * 2, 21) == 42
    assert (home / "state" / "breakers" / breakers.DB_FILE).is_file()  # relative: under $AIRFLOW_HOME, as fs paths are
    monkeypatch.delenv("AIRFLOW_CONN_CAMPAIGN_BREAKERS")
    with pytest.raises(ConnectionConfigError, match="campaign_breakers"):
        open_breakers()


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class RecordingStats:
    """A metrics backend (StatsLogger protocol) keeping what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, dict[str, Any] | None]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, Any] | None = None) -> None:
        self.sent.append(("incr", stat, count, tags))

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False, *, tags: dict[str, Any] | None = None) -> None:
        self.sent.append(("gauge", stat, value, tags))

    def decr(self, *args: Any, **kwargs: Any) -> None: ...

    def timing(self, *args: Any, **kwargs: Any) -> None: ...


@pytest.fixture
def stats_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], None]:
    """Install a metrics backend the way the task runner does (``stats.initialize``); restored afterwards."""
    from airflow.sdk._shared.observability.metrics import stats

    for name in ("_factory", "_backend", "_export_legacy_names"):
        monkeypatch.setattr(stats, name, getattr(stats, name))

    def install(factory: Callable[[], Any]) -> None:
        stats.initialize(factory=factory, export_legacy_names=True)

    return install


def test_state_changes_and_failures_are_exported(tmp_path: Path, stats_backend: Callable[..., None]) -> None:
    recorder = RecordingStats()
    stats_backend(lambda: recorder)
    spec = {
        "conn_type": "fs",
        "extra": {"path": str(tmp_path), "services": {"Buffer": {"fail_max": 2, "reset_timeout": 0.2, "success_threshold": 1}}},
    }
    registry = build_breakers("campaign_breakers", to_connection(spec))
    for _ in range(2):
        with pytest.raises(ServiceError):
            registry.call("Buffer", raiser(unavailable()))
    with pytest.raises(CircuitOpenError):  # refused while open: nothing more to count
        registry.call("Buffer", lambda: "never")
    time.sleep(0.25)
    assert registry.call("Buffer", lambda: "posted") == "posted"  # the trial: half-open, then closed (threshold 1)
    with pytest.raises(ServiceError):
        registry.call("Buffer", raiser(refused()))  # our 4xx: not a failure of Buffer's
    tagged = [sent for sent in recorder.sent if sent[3] is not None]
    assert tagged == [
        ("incr", "circuit_breaker_failures_total", 1, {"service": "buffer"}),
        ("incr", "circuit_breaker_failures_total", 1, {"service": "buffer"}),
        ("gauge", "circuit_breaker_state", 2, {"service": "buffer"}),
        ("gauge", "circuit_breaker_state", 1, {"service": "buffer"}),
        ("gauge", "circuit_breaker_state", 0, {"service": "buffer"}),
    ]
    # ... and each under a dotted name too, for StatsD without tags
    assert [sent for sent in recorder.sent if sent[3] is None] == [(k, f"{stat}.buffer", v, None) for k, stat, v, _ in tagged]


@pytest.mark.parametrize("influx_tags", [False, True], ids=["plain statsd", "statsd with tags"])
def test_metrics_reach_a_statsd_server_through_airflows_statsd_backend(
    tmp_path: Path, stats_backend: Callable[..., None], monkeypatch: pytest.MonkeyPatch, influx_tags: bool
) -> None:
    """[metrics] statsd_on, as an operator sets it: the packets on a real UDP socket name the service."""
    import socket

    from airflow.sdk.observability.metrics import stats_utils

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    for key, value in {
        "STATSD_ON": "True",
        "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(server.getsockname()[1]),
        "STATSD_PREFIX": "airflow",
        "STATSD_INFLUXDB_ENABLED": str(influx_tags),
    }.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    stats_backend(stats_utils.get_stats_factory())
    spec = {"conn_type": "fs", "extra": {"path": str(tmp_path), "services": {"Figma": {"fail_max": 1}}}}
    registry = build_breakers("campaign_breakers", to_connection(spec))
    with pytest.raises(ServiceError):
        registry.call("Figma", raiser(unavailable()))
    packets = []
    with server:
        while len(packets) < 4:
            packets.append(server.recv(4096).decode())
    named = {"airflow.circuit_breaker_failures_total.figma:1|c", "airflow.circuit_breaker_state.figma:2|g"}
    tagged = (
        {"airflow.circuit_breaker_failures_total,service=figma:1|c", "airflow.circuit_breaker_state,service=figma:2|g"}
        if influx_tags
        else {"airflow.circuit_breaker_failures_total:1|c", "airflow.circuit_breaker_state:2|g"}
    )
    assert set(packets) == named | tagged, packets


def test_metrics_off_or_broken_never_fail_a_call(tmp_path: Path, stats_backend: Callable[..., None]) -> None:
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

    def broken() -> Any:
        raise RuntimeError("statsd misconfigured")

    spec = {"conn_type": "fs", "extra": {"path": str(tmp_path), "services": {"Notion": {"fail_max": 1}}}}
    for factory in (NoStatsLogger, broken):  # [metrics] off (the default), then a backend that cannot even start
        stats_backend(factory)
        registry = build_breakers("campaign_breakers", to_connection(spec))
        with pytest.raises(ServiceError) as err:
            registry.call("Notion", raiser(unavailable()))
        assert isinstance(err.value, RetryableServiceError) and not isinstance(err.value, CircuitOpenError)
        assert registry.state("Notion") == "open"
        registry.breaker("Notion").close()
