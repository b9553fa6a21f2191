"""Circuit breakers, one per external service, whose state every worker process and every run shares.

When Slack (or GitHub, SendGrid, ...) is down, every task calling it would otherwise spend its
tries waiting for timeouts. A breaker per service counts the service's consecutive failures and,
after ``fail_max`` of them, *opens*: calls fail at once with :class:`CircuitOpenError` (retryable,
``retry_after`` = seconds until the breaker tries the service again), so Airflow's retry with
backoff waits instead of burning attempts. After ``reset_timeout`` seconds the breaker is
*half-open*: calls go through again as trials; ``success_threshold`` successes close it, one failure
opens it again. The state machine is pybreaker's (1.4.1, https://github.com/danielfm/pybreaker);
this module supplies the shared storage, the configuration, what counts as a failure, logs and metrics.

What counts: only failures that say the service is unwell, i.e. ``errors.Retryable`` errors (a
``ServiceError`` for timeouts, connection errors, 429 and 5xx; a ``DeadlineExceeded``), or an
exception of another library carrying ``retryable=True``. Our own mistakes (4xx: ``errors.Permanent``) and every other
exception pass through without counting as failures (pybreaker's ``exclude`` predicate). pybreaker
treats an excluded exception as an answer from the service: it resets the run of failures and, when
half-open, counts as a trial success, which is right for a 4xx (the service answered).

Every Airflow task is a new process, so the state lives outside it, chosen by the Airflow
connection ``campaign_breakers``:

- type ``fs``: a SQLite file ``breakers.sqlite3`` in the folder of the extra ``path`` (relative
  paths resolved like every ``fs`` connection), in WAL mode with a busy timeout, one row per
  service: the embedded default, for every process of one machine;
- type ``redis``: pybreaker's ``CircuitRedisStorage`` (host, port, login, password, extra ``db``,
  ``ssl``, ``socket_timeout``; keys under ``<extra namespace, default campaign_breakers>:<service>``),
  for workers on several machines.

The extra ``services`` tunes single services: ``{"Slack": {"fail_max": 3, "reset_timeout": 120,
"success_threshold": 1}}`` (names case-insensitive; defaults 5 failures, 60 s, 2 successes).

Use::

    breakers = open_breakers()                  # once per task process; cached
    answer = breakers.call("Slack", fn, *args, **kwargs)

Limits, known and accepted:

- pybreaker re-reads the state from the store on every call but serializes calls with a lock per
  breaker *per process*: across processes the half-open trials are not one at a time, and counts
  are approximate (two processes may both see the failure that trips the breaker, a process that
  notices a change resets a counter another one just moved). The breaker still opens after about
  ``fail_max`` failures and closes after about ``success_threshold`` successes, which is its job.
- Within one process, pybreaker holds the breaker's lock during the call: threads calling the same
  service one process wide are serialized (our tasks call services from one thread).
- If Redis cannot be reached when a breaker is built, that breaker counts in the process's memory
  only (logged): a breaker store outage never stops the calls themselves. Errors of the store later
  on are logged and read as "closed" (pybreaker's own Redis policy, followed by the SQLite store).
- Redis keeps ``opened_at`` in whole seconds (pybreaker's format): ``retry_after`` is computed from
  the stored value, so it says when the breaker really lets calls through.

Every state change a process makes or notices is logged and exported as the gauge
``circuit_breaker_state{service}`` (0 closed, 1 half-open, 2 open); every counted failure
increments ``circuit_breaker_failures_total{service}``; each also goes out as
``<metric>.<service>`` for StatsD without tags. They go through Airflow's task SDK
``airflow.sdk.observability.stats.Stats`` (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` is
configured); with metrics off, or outside a task process, nothing is sent and nothing fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pybreaker

from include.orchestrator import connections as connection_fields
from include.orchestrator.errors import CircuitOpenError, ConnectionConfigError, Retryable, retryable_flag

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CONN_ID = "campaign_breakers"
DB_FILE = "breakers.sqlite3"
REDIS_NAMESPACE = "campaign_breakers"
BUSY_TIMEOUT_MS = 5000
# The services behind our backends, by the ``service`` their ServiceErrors carry (compared lowercased).
KNOWN_SERVICES = ("Slack", "GitHub", "SendGrid", "Buffer", "Figma", "Notion", "Grafana", "LLM", "Qdrant")
_DISPLAY = {s.lower(): s for s in KNOWN_SERVICES}
STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
STATE_METRIC = "circuit_breaker_state"
FAILURES_METRIC = "circuit_breaker_failures_total"


@dataclass(frozen=True)
class BreakerSettings:
    fail_max: int = 5  # consecutive failures that open the circuit
    reset_timeout: float = 60.0  # seconds open before trial calls go through (half-open)
    success_threshold: int = 2  # trial successes that close it again


DEFAULTS = BreakerSettings()


def service_key(service: str) -> str:
    """One breaker per service however a backend spells it ("GitHub", "github")."""
    return service.strip().lower()


def counts_as_failure(exc: BaseException) -> bool:
    """The service is unwell: timeouts, connection errors, 429, 5xx (a ``Retryable`` error)."""
    return isinstance(exc, Retryable) or retryable_flag(exc) is True


def _not_service_trouble(exc: BaseException) -> bool:
    return not counts_as_failure(exc)


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


class _SqliteDb:
    """One SQLite connection per process and file, shared by the breakers of every service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        # Autocommit: every statement is its own short transaction; the busy timeout makes writers
        # of other processes wait for each other instead of failing with "database is locked".
        self.conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        self.conn.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last change
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS breakers ("
            " service TEXT PRIMARY KEY,"
            " state TEXT NOT NULL DEFAULT 'closed',"
            " failures INTEGER NOT NULL DEFAULT 0,"
            " successes INTEGER NOT NULL DEFAULT 0,"
            " opened_at REAL)"
        )

    def one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self.lock:
            row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def run(self, sql: str, args: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.execute(sql, args)


class SqliteBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface on one row of a SQLite table, safe across processes.

    Counters move in single ``UPDATE`` statements (atomic in SQLite). On a database error the store
    logs it and answers "closed"/0, the policy of pybreaker's Redis storage.
    """

    def __init__(self, db: _SqliteDb, service: str) -> None:
        super().__init__("sqlite")
        self._db, self._service = db, service
        self._run("INSERT OR IGNORE INTO breakers (service) VALUES (?)", (service,))

    def _one(self, sql: str, fallback: Any) -> Any:
        try:
            value = self._db.one(sql, (self._service,))
        except sqlite3.Error as exc:
            log.warning(
                "circuit breaker store %s: reading %s failed (%s); assuming %r", self._db.path, self._service, exc, fallback
            )
            return fallback
        return fallback if value is None else value

    def _run(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self._db.run(sql, args)
        except sqlite3.Error as exc:
            log.warning("circuit breaker store %s: writing %s failed (%s)", self._db.path, self._service, exc)

    @property
    def state(self) -> str:
        return self._one("SELECT state FROM breakers WHERE service = ?", pybreaker.STATE_CLOSED)

    @state.setter
    def state(self, state: str) -> None:
        self._run("UPDATE breakers SET state = ? WHERE service = ?", (str(state), self._service))

    def increment_counter(self) -> None:
        self._run("UPDATE breakers SET failures = failures + 1 WHERE service = ?", (self._service,))

    def reset_counter(self) -> None:
        # Called after every successful call: read first, so the common case takes no write lock.
        if self.counter:
            self._run("UPDATE breakers SET failures = 0 WHERE service = ?", (self._service,))

    def increment_success_counter(self) -> None:
        self._run("UPDATE breakers SET successes = successes + 1 WHERE service = ?", (self._service,))

    def reset_success_counter(self) -> None:
        self._run("UPDATE breakers SET successes = 0 WHERE service = ?", (self._service,))

    @property
    def counter(self) -> int:
        return int(self._one("SELECT failures FROM breakers WHERE service = ?", 0))

    @property
    def success_counter(self) -> int:
        return int(self._one("SELECT successes FROM breakers WHERE service = ?", 0))

    @property
    def opened_at(self) -> datetime | None:
        value = self._one("SELECT opened_at FROM breakers WHERE service = ?", None)
        return None if value is None else datetime.fromtimestamp(float(value), UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        # Only ever forward, like pybreaker's Redis storage: two processes tripping at once keep the later time.
        self._run(
            "UPDATE breakers SET opened_at = MAX(COALESCE(opened_at, 0), ?) WHERE service = ?", (now.timestamp(), self._service)
        )


class _SqliteStore:
    kind = "fs"

    def __init__(self, conn_id: str, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.db = _SqliteDb(folder / DB_FILE)
        except (OSError, sqlite3.Error) as exc:
            raise ConnectionConfigError(
                f"connection {conn_id!r} (circuit breakers, type fs): cannot use {folder / DB_FILE} ({exc}); "
                f"check the extra 'path'"
            ) from None
        self.where = str(self.db.path)

    def storage(self, key: str) -> pybreaker.CircuitBreakerStorage:
        return SqliteBreakerStorage(self.db, key)


class _RedisStore:
    kind = "redis"

    def __init__(self, conn_id: str, conn: Any) -> None:
        import redis

        extra = conn.extra_dejson
        if not conn.host:
            raise ConnectionConfigError(f"connection {conn_id!r} (circuit breakers, type redis) needs a host")
        try:
            db = int(extra.get("db", 0))
            timeout = float(extra.get("socket_timeout", 1.0))
        except (TypeError, ValueError):
            raise ConnectionConfigError(
                f"connection {conn_id!r} (circuit breakers, type redis): extra 'db' must be an integer and "
                f"'socket_timeout' a number of seconds"
            ) from None
        self.prefix = str(extra.get("namespace") or REDIS_NAMESPACE)
        # No connection is made here: redis-py connects on the first command.
        self.client = redis.Redis(
            host=conn.host,
            port=int(conn.port or 6379),
            db=db,
            username=conn.login or None,
            password=conn.password or None,
            ssl=connection_fields.flag(conn, "ssl"),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self.where = f"redis://{conn.host}:{int(conn.port or 6379)}/{db} {self.prefix}:*"

    def namespace(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def storage(self, key: str) -> pybreaker.CircuitBreakerStorage:
        from redis.exceptions import RedisError

        try:
            return pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, self.client, namespace=self.namespace(key))
        except RedisError as exc:
            log.warning(
                "circuit breaker store %s unreachable (%s): the %s breaker counts in this process only",
                self.where,
                type(exc).__name__,
                key,
            )
            return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)


# --------------------------------------------------------------------------------------------
# Logs and metrics
# --------------------------------------------------------------------------------------------


def _stats() -> Any:
    """Airflow's task SDK Stats, or None where no metrics backend can have been set up.

    The task runner initializes ``airflow.sdk._shared.observability.metrics.stats`` when a task
    process starts; a process that never imported it (a benchmark, a test child) has no backend
    configured, so importing Airflow (~2 s) only to send nothing is skipped.
    """
    if "airflow.sdk._shared.observability.metrics.stats" not in sys.modules:
        return None
    from include.orchestrator.airflow.compat import Stats

    return Stats


def _emit(kind: str, stat: str, value: float, service: str) -> None:
    try:
        stats = _stats()
        if stats is None:
            return
        # Tagged for OpenTelemetry, Datadog and tag-aware StatsD; plain StatsD drops tags, so the
        # service is also in a dotted name, as Airflow's own legacy metric names do it.
        for name, tags in ((stat, {"service": service}), (f"{stat}.{service}", None)):
            if kind == "gauge":
                stats.gauge(name, value, tags=tags)
            else:
                stats.incr(name, int(value), tags=tags)
    except Exception as exc:  # metrics must never fail a call
        log.debug("metric %s not sent: %s", stat, exc)


class _Telemetry(pybreaker.CircuitBreakerListener):
    """Logs and metrics of one breaker in this process: changes it makes, and changes it notices in the store."""

    def __init__(self, service: str, key: str, settings: BreakerSettings, where: str) -> None:
        self.service, self.key, self.settings, self.where = service, key, settings, where
        self._failed = False  # this process's call just failed: an opening that follows is ours

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        self._failed = False

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self._failed = True
        _emit("incr", FAILURES_METRIC, 1, self.key)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self._failed = False

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = getattr(old, "name", None) or "unknown"
        if new.name == pybreaker.STATE_OPEN:
            if not self._failed:
                why = "seen in the store: opened by another process"
            elif old_name == pybreaker.STATE_HALF_OPEN:
                why = "a trial call failed"
            else:
                n = self.settings.fail_max
                why = f"{n} failure{'s' if n != 1 else ''} in a row"
            self._failed = False
            log.warning(
                "circuit breaker %s: %s -> open (%s); calls fail at once for %g s [%s]",
                self.service,
                old_name,
                why,
                self.settings.reset_timeout,
                self.where,
            )
        elif new.name == pybreaker.STATE_HALF_OPEN:
            log.info("circuit breaker %s: %s -> half-open: trial calls go through [%s]", self.service, old_name, self.where)
        else:
            log.info("circuit breaker %s: %s -> closed [%s]", self.service, old_name, self.where)
        _emit("gauge", STATE_METRIC, STATE_VALUES.get(new.name, -1), self.key)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class Breakers:
    """The breakers of every service on one store; breakers are built on first use of their service."""

    def __init__(self, conn_id: str, store: Any, settings: dict[str, BreakerSettings]) -> None:
        self.conn_id, self.store, self.settings = conn_id, store, settings
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._lock = threading.Lock()

    def settings_for(self, service: str) -> BreakerSettings:
        return self.settings.get(service_key(service), DEFAULTS)

    def breaker(self, service: str) -> pybreaker.CircuitBreaker:
        key = service_key(service)
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    s = self.settings_for(service)
                    name = _DISPLAY.get(key, service)
                    breaker = pybreaker.CircuitBreaker(
                        fail_max=s.fail_max,
                        reset_timeout=s.reset_timeout,
                        success_threshold=s.success_threshold,
                        exclude=[_not_service_trouble],
                        listeners=[_Telemetry(name, key, s, self.store.where)],
                        state_storage=self.store.storage(key),
                        name=name,
                        # The call that trips the breaker raises the service's own error, not pybreaker's.
                        throw_new_error_on_trip=False,
                    )
                    self._breakers[key] = breaker
        return breaker

    def call(self, service: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` through the breaker of ``service``; CircuitOpenError when it is open."""
        breaker = self.breaker(service)
        try:
            return breaker.call(fn, *args, **kwargs)
        except pybreaker.CircuitBreakerError:
            # With throw_new_error_on_trip off, pybreaker raises this only for an open circuit: fn was not called.
            raise self._open_error(service, breaker) from None

    def _open_error(self, service: str, breaker: pybreaker.CircuitBreaker) -> CircuitOpenError:
        opened_at = breaker._state_storage.opened_at or datetime.now(UTC)  # pybreaker has no public getter
        retry_at = datetime.fromtimestamp(opened_at.timestamp() + breaker.reset_timeout, UTC)
        retry_after = max(0.0, math.ceil((retry_at.timestamp() - time.time()) * 1000) / 1000)
        return CircuitOpenError(service, retry_after, retry_at)

    def state(self, service: str) -> str:
        """The stored state: ``closed``, ``half-open`` or ``open`` (an open one past its timeout still reads open)."""
        return self.breaker(service).current_state


class Guarded:
    """A production backend whose every call goes through its service's breaker (``backend.service``).

    ``connections.open_backend`` hands these out, so steps, compensation and the review watcher all
    go through the breakers; ``plan`` (no I/O), ``disk_id`` (not the service) and attributes pass
    straight through.
    """

    def __init__(self, backend: Any, breakers: Breakers) -> None:
        self._backend, self._breakers = backend, breakers

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name.startswith("_") or name in ("plan", "disk_id") or not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._breakers.call(self._backend.service, attr, *args, **kwargs)

        return guarded

    def __repr__(self) -> str:
        return f"Guarded({self._backend!r})"


# --------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------

_SUPPORTED = (
    f"fs (a SQLite file {DB_FILE} in the folder given by extra.path) or redis (a Redis server: host, port, password, extra.db)"
)


def _settings(conn_id: str, extra: dict[str, Any]) -> dict[str, BreakerSettings]:
    services = extra.get("services") or {}
    if not isinstance(services, dict):
        raise ConnectionConfigError(f"connection {conn_id!r}: extra 'services' must be an object of service name -> settings")
    known = {service_key(s): s for s in KNOWN_SERVICES}
    out: dict[str, BreakerSettings] = {}
    for name, values in services.items():
        key = service_key(str(name))
        field = f"services.{name}"
        if key not in known:
            raise ConnectionConfigError(
                f"connection {conn_id!r}: extra {field}: unknown service; known: {', '.join(KNOWN_SERVICES)}"
            )
        if not isinstance(values, dict):
            raise ConnectionConfigError(
                f"connection {conn_id!r}: extra {field} must be an object (fail_max, reset_timeout, success_threshold)"
            )
        unknown = set(values) - {"fail_max", "reset_timeout", "success_threshold"}
        if unknown:
            raise ConnectionConfigError(
                f"connection {conn_id!r}: extra {field}: unknown setting(s) {sorted(unknown)}; "
                f"known: fail_max, reset_timeout, success_threshold"
            )
        s = DEFAULTS
        for setting, value in values.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if setting == "reset_timeout":
                if not (number and value > 0):
                    raise ConnectionConfigError(
                        f"connection {conn_id!r}: extra {field}.{setting} must be a number of seconds > 0 (got {value!r})"
                    )
                value = float(value)
            elif not (number and isinstance(value, int) and value >= 1):
                raise ConnectionConfigError(
                    f"connection {conn_id!r}: extra {field}.{setting} must be an integer >= 1 (got {value!r})"
                )
            s = replace(s, **{setting: value})
        out[key] = s
    return out


def _fingerprint(conn: Any) -> str:
    parts = [conn.conn_type, conn.host, conn.port, conn.login, conn.password, json.dumps(conn.extra_dejson, sort_keys=True)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()  # no secret kept in clear as a key


def build_breakers(conn_id: str, conn: Any) -> Breakers:
    """A new registry for this connection (``open_breakers`` caches it; tests and benchmarks call this)."""
    kind = (conn.conn_type or "").lower()
    extra = conn.extra_dejson
    if kind == "fs":
        store: Any = _SqliteStore(conn_id, connection_fields.local_path(conn_id, conn))
    elif kind == "redis":
        store = _RedisStore(conn_id, conn)
    else:
        raise ConnectionConfigError(
            f"connection {conn_id!r} has type {kind or '(none)'!r}, which circuit breakers cannot use. Supported: {_SUPPORTED}"
        )
    return Breakers(conn_id, store, _settings(conn_id, extra))


_CACHE: dict[tuple[int, str, str], Breakers] = {}
_CACHE_LOCK = threading.Lock()


def open_breakers(conn_id: str = DEFAULT_CONN_ID, conn: Any = None) -> Breakers:
    """The breakers configured by Airflow connection ``conn_id``, read now; built once per process and setting."""
    if conn is None:
        conn = connection_fields.get_connection(conn_id)
    # Keyed by process too: a forked child must not reuse its parent's SQLite connection.
    key = (os.getpid(), conn_id, _fingerprint(conn))
    registry = _CACHE.get(key)
    if registry is None:
        with _CACHE_LOCK:
            registry = _CACHE.get(key)
            if registry is None:
                registry = _CACHE[key] = build_breakers(conn_id, conn)
    return registry
