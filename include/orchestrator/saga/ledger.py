"""The saga ledger: every side effect of a run, written down before it is made and again once made.

One table, ``campaign_saga_ledger``, in the database of the ``campaign_ledger`` connection: a
SQLite file for the embedded default (type ``fs``: ``<path>/ledger.sqlite3``), PostgreSQL when
workers run on several machines (type ``postgres``). It lives outside Airflow's metadata DB on
purpose: tasks may not touch that DB, and XCom is cleared when a task is retried or cleared,
which is exactly when a record of what an earlier try made is needed.

An entry's life: ``planned`` (written before the call, from the backend's ``plan``), ``made``
(the call returned), then, if the run is compensated, ``undone`` (removed), ``absent`` (nothing
was there: the call never happened or was undone already), ``kept`` (cannot be undone, reported)
or ``failed`` (the undo raised; tried again on the next attempt). Airflow-free.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from include.orchestrator.domain.ports import Effect
from include.orchestrator.errors import ConnectionConfigError

LEDGER_CONN_ID = "campaign_ledger"
OPEN_STATES = ("planned", "made", "failed")  # what compensation still has to deal with

_metadata = MetaData()
entries_table = Table(
    "campaign_saga_ledger",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # forward order
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("port", String(50), nullable=False),
    Column("conn_id", String(250), nullable=False),
    Column("key", String(500), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("effect", Text, nullable=False),
    Column("error", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "run_id", "port", "conn_id", "key", name="campaign_saga_ledger_effect"),
)


# The GitHub review watcher's memory: the opaque ETag token of each review pull request's last poll.
polls_table = Table(
    "campaign_review_polls",
    _metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("etag", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Which run holds each launch of a campaign (model.launch_of): only the holder makes effects. A run
# that is rolled back with nothing left out releases its launch, so it can be triggered again.
launches_table = Table(
    "campaign_launches",
    _metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("launch", String(100), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("state", String(20), nullable=False),  # held | released
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class Entry(BaseModel):
    id: int
    task_id: str
    map_index: int
    state: str
    effect: Effect
    error: str = ""
    attempts: int = 0

    @property
    def where(self) -> str:
        return self.task_id + (f"[{self.map_index}]" if self.map_index >= 0 else "")


def _now() -> datetime:
    return datetime.now(UTC)


def _key(effect: Effect) -> str:
    """An entry's key: the effect's, and for an effect on a local disk, the disk's too. A retry that ran
    on another host's disk made a second copy, which is its own entry, undone (or reported) on its own."""
    return f"{effect.key}@{effect.disk}" if effect.disk else effect.key


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    # NullPool: task processes are short-lived and forked; a pooled connection must not cross a fork.
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            # WAL: readers never block the writer; busy_timeout: writers from other processes queue.
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")
            dbapi_conn.execute("PRAGMA synchronous=FULL")

    _create_tables(engine)
    return engine


def _create_tables(engine: Engine, tries: int = 5) -> None:
    """Create the tables the first worker of a deployment needs, however many workers do it at once.

    A loser of a CREATE TABLE race gets an error (PostgreSQL: a unique violation on pg_type, seen on a
    cluster; SQLite: "table ... already exists"), and with three tables one worker can lose twice, so
    it checks again until every table is there."""
    for attempt in range(tries):
        try:
            _metadata.create_all(engine, checkfirst=True)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _row(dag_id: str, run_id: str, task_id: str, map_index: int, effect: Effect, state: str, now: datetime) -> dict[str, Any]:
    """A new entry: what ``planned`` and ``made`` insert when the effect has no entry yet."""
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "port": effect.port,
        "conn_id": effect.conn_id,
        "key": _key(effect),
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "effect": effect.model_dump_json(),
        "error": "",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


class Ledger:
    """The entries of every run, in one table."""

    def __init__(self, url: str | URL) -> None:
        self.url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        self.engine = _engine(self.url)

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url!r})"  # SQLAlchemy masks the password

    def _insert(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def _upsert(
        self,
        values: dict[str, Any],
        on_conflict: dict[str, Any],
        table: Table = entries_table,
        keys: tuple[str, ...] = ("dag_id", "run_id", "port", "conn_id", "key"),
    ) -> None:
        stmt = self._insert(table).values(**values).on_conflict_do_update(index_elements=list(keys), set_=on_conflict)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def claim_launch(self, dag_id: str, launch: str, run_id: str) -> tuple[str, datetime] | None:
        """Hold the launch for this run, unless another run holds it: then ``(that run, since when)``.

        One transaction: the first run to insert the row holds it, a released row goes to the
        first run that asks again, and every other caller reads who holds it.
        """
        now, t = _now(), launches_table.c
        where = (t.dag_id == dag_id, t.launch == launch)
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(launches_table)
                .values(
                    dag_id=dag_id,
                    launch=launch,
                    run_id=run_id,
                    state="held",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["dag_id", "launch"])
            )
            conn.execute(
                update(launches_table)
                .where(*where, t.state == "released")
                .values(run_id=run_id, state="held", created_at=now, updated_at=now)
            )
            holder, since = conn.execute(select(t.run_id, t.created_at).where(*where)).one()
        return None if holder == run_id else (holder, since)

    def release_launch(self, dag_id: str, run_id: str) -> int:
        """Give up the launches this run holds (it sent nothing that stays out); how many."""
        t = launches_table.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(launches_table)
                .where(t.dag_id == dag_id, t.run_id == run_id, t.state == "held")
                .values(state="released", updated_at=_now())
            )
        return done.rowcount

    def planned(self, dag_id: str, run_id: str, task_id: str, map_index: int, effect: Effect) -> None:
        """Write down an effect about to be made. A retry planning it again keeps what is known:
        a made effect stays made; one undone earlier (the run was cleared and runs again) is planned anew."""
        now = _now()
        state = entries_table.c.state
        self._upsert(
            _row(dag_id, run_id, task_id, map_index, effect, "planned", now),
            {"state": case((state.in_(("undone", "absent")), "planned"), else_=state), "error": "", "updated_at": now},
        )

    def _update_planned(self, dag_id: str, run_id: str, effect: Effect, **values: Any) -> None:
        t = entries_table.c
        with self.engine.begin() as conn:
            conn.execute(
                update(entries_table)
                .where(
                    t.dag_id == dag_id,
                    t.run_id == run_id,
                    t.port == effect.port,
                    t.conn_id == effect.conn_id,
                    t.key == _key(effect),
                    t.state == "planned",
                )
                .values(**values, updated_at=_now())
            )

    def call_failed(self, dag_id: str, run_id: str, effect: Effect, error: str) -> None:
        """The call answered with an error: a planned entry keeps it (the report shows it, and an
        irreversible effect whose call failed was not made)."""
        self._update_planned(dag_id, run_id, effect, error=error[:2000])

    def not_made(self, dag_id: str, run_id: str, effect: Effect, reason: str) -> None:
        """The call was never made (its service's circuit was open): a planned entry is settled absent."""
        self._update_planned(dag_id, run_id, effect, state="absent", error=reason[:2000])

    def made(self, dag_id: str, run_id: str, task_id: str, map_index: int, effect: Effect) -> None:
        """The call returned: keep its answer (a commit id, a message id) for the undo."""
        now = _now()
        self._upsert(
            _row(dag_id, run_id, task_id, map_index, effect, "made", now),
            {"state": "made", "effect": effect.model_dump_json(), "error": "", "updated_at": now},
        )

    def entries(self, dag_id: str, run_id: str) -> list[Entry]:
        """Every entry of a run, in the order the effects were first planned."""
        t = entries_table.c
        query = select(entries_table).where(t.dag_id == dag_id, t.run_id == run_id).order_by(t.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Entry(
                id=r["id"],
                task_id=r["task_id"],
                map_index=r["map_index"],
                state=r["state"],
                effect=Effect.model_validate(json.loads(r["effect"])),
                error=r["error"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    def made_effects(self, port: str, kind: str, since: datetime) -> list[tuple[str, str, Effect]]:
        """``(dag_id, run_id, effect)`` of every made effect of this port and kind planned since ``since``."""
        t = entries_table.c
        query = (
            select(t.dag_id, t.run_id, t.effect).where(t.port == port, t.state == "made", t.created_at >= since).order_by(t.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = [(d, r, Effect.model_validate(json.loads(e))) for d, r, e in rows]
        return [(d, r, e) for d, r, e in found if e.kind == kind]

    def poll_tags(self) -> dict[tuple[str, str], str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(polls_table.c.dag_id, polls_table.c.run_id, polls_table.c.etag))
            return {(d, r): tag for d, r, tag in rows}

    def set_poll_tag(self, dag_id: str, run_id: str, etag: str) -> None:
        now = _now()
        self._upsert(
            {"dag_id": dag_id, "run_id": run_id, "etag": etag, "updated_at": now},
            {"etag": etag, "updated_at": now},
            polls_table,
            ("dag_id", "run_id"),
        )

    def settle(self, entry: Entry, state: str, error: str = "") -> None:
        """Record what compensation did with an entry."""
        t = entries_table.c
        values: dict[str, Any] = {"state": state, "error": error[:2000], "updated_at": _now()}
        if state in ("failed", "undone", "absent"):
            values["attempts"] = t.attempts + 1
        with self.engine.begin() as conn:
            conn.execute(update(entries_table).where(t.id == entry.id).values(**values))


def ledger_url(conn: Any) -> str:
    """The database URL of the ledger connection: ``fs`` (SQLite under extra.path) or ``postgres``."""
    from include.orchestrator.connections import local_path

    kind = (conn.conn_type or "").lower()
    if kind == "fs":
        folder = local_path(LEDGER_CONN_ID, conn)
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'ledger.sqlite3'}"
    if kind in ("postgres", "postgresql"):
        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or "localhost",
            port=conn.port or 5432,
            database=conn.schema or "airflow",
        ).render_as_string(hide_password=False)
    raise ConnectionConfigError(
        f"connection {LEDGER_CONN_ID!r} has type {kind or '(none)'!r}, which the saga ledger cannot use. "
        "Supported: fs (a SQLite file in extra.path, one machine); postgres (any number of workers)"
    )


def open_ledger() -> Ledger:
    from include.orchestrator.connections import get_connection

    return Ledger(ledger_url(get_connection(LEDGER_CONN_ID)))
