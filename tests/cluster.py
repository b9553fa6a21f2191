"""A CeleryExecutor Airflow on this machine whose workers share no disk, for tests and benchmarks.

``CeleryCluster`` is ``tests.stack.AirflowStack`` (api-server, scheduler, dag-processor, plus a
triggerer) on a fresh PostgreSQL database, with a Redis broker and N ``airflow celery worker``
processes that behave like N hosts:

- each worker runs in its own mount namespace (``unshare -m``) with its own folder bind-mounted
  over the Airflow home: the same path, different contents, so whatever a task writes under
  ``$AIRFLOW_HOME`` only that worker sees (its "local disk", a real folder under ``root/disks``);
  the scheduler, api-server and dag-processor keep the real home;
- each has its own Celery hostname (``wN@<host>``), log-server port and ``[core] hostname_callable``
  (``worker_hostname`` below), so a task instance's ``hostname`` tells which worker ran it;
- each is its own process group, so ``kill_worker`` can SIGKILL a whole worker (the worker, its
  pool, the task supervisors and task processes) like a host that died.

Needs root (``unshare -m`` and ``mount --bind``), PostgreSQL at 127.0.0.1:5432 (user postgres, no
password) and Redis at 127.0.0.1:6379. Celery's result backend is ``db+postgresql+psycopg2://``:
plain ``db+postgresql://`` makes SQLAlchemy pick psycopg 3, which is not installed, and the workers
crash at start. A dead worker's running tasks are failed (then retried elsewhere) by the
scheduler's heartbeat sweep: ``heartbeat_timeout`` (``[scheduler]
task_instance_heartbeat_timeout``) after their last heartbeat, looked for every
``detection_interval`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.stack import AirflowStack, free_port

PG_SERVER = "postgres@127.0.0.1:5432"  # user@host:port, trust auth
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
BROKER_DB = 11  # the Redis database of the cluster's Celery broker (tests/airflow/test_cluster.py; the bench uses 13)
HOSTNAME_ENV = "CAMPAIGN_TEST_HOSTNAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the host name a worker of the cluster pretends to have."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


# --- PostgreSQL ---------------------------------------------------------------------------------
def _admin(server: str = PG_SERVER) -> Any:
    import psycopg2

    conn = psycopg2.connect(f"postgresql://{server}/postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


def create_database(prefix: str, server: str = PG_SERVER, name: str | None = None) -> str:
    """A new empty database, ``name`` or ``<prefix>_<random>``; returns its name."""
    name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
    with contextlib.closing(_admin(server)) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str, server: str = PG_SERVER) -> None:
    with contextlib.closing(_admin(server)) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MetaDB:
    """A direct look at an Airflow's metadata database (benches): polling here costs the API server nothing."""

    def __init__(self, name: str, server: str = PG_SERVER) -> None:
        import psycopg2

        user, _, hostport = server.rpartition("@")
        self.conn = psycopg2.connect(f"postgresql://{user}@{hostport}/{name}")
        self.conn.autocommit = True

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self.conn.close()


def database_url(name: str, server: str = PG_SERVER) -> str:
    return f"postgresql+psycopg2://{server}/{name}"


def postgres_connection(name: str, server: str = PG_SERVER) -> dict[str, Any]:
    """An Airflow ``postgres`` connection (JSON form) to database ``name``."""
    user, _, hostport = server.rpartition("@")
    host, _, port = hostport.partition(":")
    return {"conn_type": "postgres", "host": host, "port": int(port or 5432), "login": user or "postgres", "schema": name}


def shared_services(stack: contextlib.ExitStack, root: Path, s3: Any, breakers_db: int, namespace: str = "") -> dict[str, Any]:
    """Started on ``stack``: every service a cluster's workers reach over the network, none on a local disk,
    and the connections to them: the delivery doubles (review, notify, social, blog, analytics), the
    Qdrant server double (memory), a real SMTP server (email), a fresh PostgreSQL ledger database, a new
    bucket of ``s3`` (the asset store) and Redis database ``breakers_db`` (the breakers, under
    ``namespace``, whose keys are deleted afterwards). Notes, web, writer and design keep their
    embedded connections: they read the project's files or keep nothing."""
    import redis

    from include.orchestrator.dev import localdev
    from include.orchestrator.dev.smtp_server import LocalSmtpServer
    from tests.doubles.qdrant_server import QdrantServerDouble
    from tests.worlds import TOKEN, delivery_connections, delivery_doubles

    doubles = delivery_doubles(stack)
    qdrant = stack.enter_context(QdrantServerDouble(api_key=TOKEN))
    smtp = stack.enter_context(LocalSmtpServer(root / "maildir"))
    ledger_db = create_database("cluster_ledger")
    stack.callback(drop_database, ledger_db)
    namespace = namespace or f"cluster_{uuid.uuid4().hex[:10]}"
    breakers = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=breakers_db)
    stack.callback(lambda: [breakers.delete(k) for k in breakers.scan_iter(f"{namespace}:*")])
    bucket = s3.new_bucket()
    embedded = localdev.settings_connections()
    conns = (
        embedded
        | delivery_connections(doubles)
        | {
            "campaign_email": embedded["campaign_email"] | {"port": smtp.port},  # SMTP, not the SendGrid double
            "campaign_ledger": postgres_connection(ledger_db),
            "campaign_breakers": {
                "conn_type": "redis",
                "host": REDIS_HOST,
                "port": REDIS_PORT,
                "extra": {"db": breakers_db, "namespace": namespace},
            },
            "campaign_assets": s3.connection(bucket),
            "campaign_memory": {"conn_type": "qdrant", "host": qdrant.url, "password": TOKEN},
        }
    )
    return {"conns": conns, "doubles": doubles, "qdrant": qdrant, "smtp": smtp, "bucket": bucket}


def check_services(server: str = PG_SERVER) -> None:
    """Fail with a clear message when something the cluster needs is missing (CI provides all of it)."""
    import redis

    problems = []
    if os.geteuid() != 0:
        problems.append("not root: workers need `unshare -m` and `mount --bind`")
    if not shutil.which("unshare"):
        problems.append("`unshare` (util-linux) is not installed")
    try:
        _admin(server).close()
    except Exception as exc:
        problems.append(f"no PostgreSQL at {server}: {exc}")
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:
        problems.append(f"no Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    try:  # what the scheduler imports to run the executor
        import airflow.providers.celery.executors.celery_executor_utils  # noqa: F401
    except ImportError as exc:
        from importlib.metadata import version

        problems.append(
            f"the CeleryExecutor does not import with celery {version('celery')} and "
            f"apache-airflow-providers-celery {version('apache-airflow-providers-celery')}: {exc}"
        )
    if problems:
        raise RuntimeError("the Celery cluster cannot start: " + "; ".join(problems))


# --- workers ------------------------------------------------------------------------------------
@dataclass
class Worker:
    name: str  # w1, w2, ...: also its Celery node name prefix and, with ".cluster", its host name
    disk: Path  # the folder mounted over $AIRFLOW_HOME in its mount namespace
    log: Path
    log_port: int
    proc: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        """What task instances run by this worker carry as ``hostname``."""
        return f"{self.name}.cluster"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class CeleryCluster(AirflowStack):
    """``AirflowStack`` on CeleryExecutor: PostgreSQL, Redis, a triggerer and ``workers`` workers, each
    on its own disk. ``root`` holds the home (``root/airflow``), the workers' disks (``root/disks/wN``)
    and their logs (``root/worker-logs/wN.log``)."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(
        self,
        root: Path,
        env: dict[str, str] | None = None,
        workers: int = 2,
        concurrency: int = 4,
        heartbeat_timeout: int = 30,
        detection_interval: int = 5,
        parallelism: int = 16,
        broker_db: int = BROKER_DB,
        pg_server: str = PG_SERVER,
    ) -> None:
        self.root, self.pg_server, self.broker_db = root, pg_server, broker_db
        self.db_name = f"cluster_{uuid.uuid4().hex[:10]}"
        self.db_created = False
        # Its own Celery queue: two clusters on one Redis database (two test runs at once) never take
        # each other's tasks.
        self.queue = self.db_name
        db_url = database_url(self.db_name, pg_server)
        cluster_env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(detection_interval),
        }
        super().__init__(root / "airflow", env={**cluster_env, **(env or {})}, db_url=db_url, parallelism=parallelism)
        self.heartbeat_timeout, self.detection_interval, self.concurrency = heartbeat_timeout, detection_interval, concurrency
        self.workers = {
            f"w{i}": Worker(f"w{i}", root / "disks" / f"w{i}", root / "worker-logs" / f"w{i}.log", free_port())
            for i in range(1, workers + 1)
        }

    # --- life cycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> CeleryCluster:
        check_services(self.pg_server)
        create_database("cluster", self.pg_server, name=self.db_name)
        self.db_created = True
        super().start(timeout)
        for worker in self.workers.values():
            self._wait_ready(worker, timeout)
        return self

    def _launched(self) -> None:  # the workers boot while the api-server does
        for worker in self.workers.values():
            self.start_worker(worker.name, wait=False)

    def stop(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                self.stop_worker(worker.name, timeout=20)
        super().stop()
        with contextlib.suppress(Exception):  # the queue's messages nobody will take (a killed worker's)
            import redis

            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.broker_db, socket_connect_timeout=3).delete(self.queue)
        if self.db_created:
            with contextlib.suppress(Exception):
                drop_database(self.db_name, self.pg_server)
            self.db_created = False

    def _check_alive(self) -> None:
        super()._check_alive()
        for worker in self.workers.values():
            if worker.proc is not None and worker.proc.poll() is not None:
                tail = self.worker_log(worker.name)[-3000:]
                raise RuntimeError(f"worker {worker.name} exited with {worker.proc.returncode}:\n{tail}")

    # --- workers ---------------------------------------------------------------------------------
    def worker_env(self, worker: Worker) -> dict[str, str]:
        return {
            **self.env,
            HOSTNAME_ENV: worker.hostname,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker.log_port),
        }

    def start_worker(self, name: str, wait: bool = True, timeout: float = 120) -> Worker:
        """Start worker ``name`` on its own disk (kept across restarts, like a host's)."""
        worker = self.workers[name]
        if worker.up:
            raise RuntimeError(f"worker {name} is already running")
        worker.disk.mkdir(parents=True, exist_ok=True)
        config = self.home / "airflow.cfg"
        if config.exists() and not (worker.disk / "airflow.cfg").exists():
            shutil.copy(config, worker.disk / "airflow.cfg")
        (worker.disk / "airflow-worker.pid").unlink(missing_ok=True)  # left by a killed worker
        worker.log.parent.mkdir(parents=True, exist_ok=True)
        airflow = shlex.join(
            [
                sys.executable,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--queues",
                self.queue,
                "--concurrency",
                str(self.concurrency),
            ]
        )
        # In a private mount namespace: this worker's disk over the home, then the worker itself (exec:
        # the Popen pid is the worker's). The project (PYTHONPATH, dags, plugins) is outside the home.
        script = f"mount --bind {shlex.quote(str(worker.disk))} {shlex.quote(str(self.home))} && exec {airflow}"
        with worker.log.open("a") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n")
            log.flush()
            worker.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                env=self.worker_env(worker),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self._wait_ready(worker, timeout)
        return worker

    def _wait_ready(self, worker: Worker, timeout: float) -> None:
        """Until the worker's Celery consumer is up (it says ``<node> ready.``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.proc is None or worker.proc.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited at start:\n{self.worker_log(worker.name)[-3000:]}")
            log = self.worker_log(worker.name)
            last = log.rsplit("===== start", 1)[-1]
            if f"{worker.name}@" in last and " ready." in last:
                return
            time.sleep(0.5)
        raise RuntimeError(f"worker {worker.name} not ready within {timeout} s; see {worker.log}")

    def stop_worker(self, name: str, timeout: float = 60) -> None:
        """A clean stop (Celery's warm shutdown: running tasks finish first); SIGKILL after ``timeout``."""
        worker = self.workers[name]
        if not worker.up:
            worker.proc = None
            return
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_worker(name)
        self._reap(worker)

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL worker ``name`` and every process under it at once: the host died. Returns the pids."""
        import psutil

        worker = self.workers[name]
        if worker.proc is None:
            return []
        pids = [worker.proc.pid]
        with contextlib.suppress(psutil.NoSuchProcess):
            pids += [p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)  # its session: it was started with start_new_session
        for pid in pids:  # any that left the group (setsid) all the same
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
        self._reap(worker)
        return pids

    def _reap(self, worker: Worker) -> None:
        """Forget a stopped worker's process; wait for any of its children still dying."""
        import psutil

        if worker.proc is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(_alive_in_session(p, worker.proc.pid) for p in psutil.process_iter()):
                time.sleep(0.2)
        worker.proc = None

    def worker_log(self, name: str) -> str:
        log = self.workers[name].log
        return log.read_text(errors="replace") if log.exists() else ""

    def worker_of(self, hostname: str | None) -> str | None:
        """The name of the worker whose tasks carry ``hostname``."""
        return next((w.name for w in self.workers.values() if w.hostname == hostname), None)

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}" + (f"/{map_index}" if map_index >= 0 else "")
        answer = self.api("GET", path)
        return answer.json() if answer.status_code == 200 else {}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"{self.run_path(dag_id, run_id)}/taskInstances", params={"limit": 1000})
        return answer.json()["task_instances"]


def _alive_in_session(proc: Any, sid: int) -> bool:
    import psutil

    with contextlib.suppress(Exception):
        return os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE
    return False
