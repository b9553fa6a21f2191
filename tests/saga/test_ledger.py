"""The saga ledger on both its databases: SQLite (one machine) and PostgreSQL (127.0.0.1:5432)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import uuid

import pytest

from include.orchestrator.domain.ports import Effect
from include.orchestrator.saga.ledger import Ledger


def _effect(key: str, undoable: bool = True) -> Effect:
    return Effect(
        port="design",
        conn_id="campaign_design",
        backend="pillow",
        kind="file",
        key=key,
        ref={"path": f"/x/{key}.png"},
        undoable=undoable,
        summary=key,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        return
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def test_an_entry_goes_from_planned_to_made_to_undone_and_keeps_its_order(url):
    ledger = Ledger(url)
    ledger.planned("d", "r", "design.render_image", 0, _effect("a"))
    ledger.planned("d", "r", "design.render_image", 1, _effect("b"))
    ledger.made("d", "r", "design.render_image", 0, _effect("a").model_copy(update={"ref": {"path": "/x/a.png", "sha256": "f"}}))
    ledger.planned("d", "other-run", "design.render_image", 0, _effect("a"))
    a, b = ledger.entries("d", "r")
    assert (a.effect.key, a.state, a.effect.ref["sha256"]) == ("a", "made", "f")
    assert (b.effect.key, b.state, b.where) == ("b", "planned", "design.render_image[1]")
    ledger.planned("d", "r", "design.render_image", 0, _effect("a"))  # a retry plans it again: still made
    assert ledger.entries("d", "r")[0].state == "made"
    ledger.settle(a, "failed", "IsADirectoryError")
    ledger.settle(a, "undone")
    entry = ledger.entries("d", "r")[0]
    assert (entry.state, entry.attempts, entry.error) == ("undone", 2, "")
    ledger.planned("d", "r", "design.render_image", 0, _effect("a"))  # the run was cleared and runs again
    assert [e.state for e in ledger.entries("d", "r")] == ["planned", "planned"]
    assert len(ledger.entries("d", "other-run")) == 1


def test_a_failed_call_is_kept_on_its_planned_entry_and_cleared_by_the_next_try(url):
    ledger = Ledger(url)
    email = _effect("mail", undoable=False)
    ledger.planned("d", "r", "distribution.publish_email", -1, email)
    ledger.call_failed("d", "r", email, "SmtpDeliveryError: 550 mailbox unavailable")
    assert ledger.entries("d", "r")[0].error.startswith("SmtpDeliveryError")
    ledger.planned("d", "r", "distribution.publish_email", -1, email)
    assert ledger.entries("d", "r")[0].error == ""


def _write_many(url: str, worker: int) -> None:
    ledger = Ledger(url)
    for i in range(40):
        effect = _effect(f"w{worker}-{i}")
        ledger.planned("d", "r", f"task{worker}", -1, effect)
        ledger.made("d", "r", f"task{worker}", -1, effect)


def test_workers_in_separate_processes_write_side_by_side(url):
    Ledger(url)  # the table exists before the workers race for it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(url, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    entries = Ledger(url).entries("d", "r")
    assert len(entries) == 160 and {e.state for e in entries} == {"made"}


def test_a_launch_is_held_by_one_run_until_that_run_releases_it(url):
    ledger = Ledger(url)
    assert ledger.claim_launch("d", "conf abc", "run-1") is None
    assert ledger.claim_launch("d", "conf abc", "run-1") is None  # a retry of the holder
    holder, since = ledger.claim_launch("d", "conf abc", "run-2")
    assert holder == "run-1" and since is not None
    assert ledger.claim_launch("d", "named again", "run-2") is None  # another launch of the same campaign
    assert ledger.claim_launch("other-dag", "conf abc", "run-3") is None  # and another campaign
    assert ledger.release_launch("d", "run-2") == 1  # only its own launch: "conf abc" stays with run-1
    assert ledger.claim_launch("d", "conf abc", "run-3")[0] == "run-1"
    assert ledger.release_launch("d", "run-1") == 1 and ledger.release_launch("d", "run-1") == 0
    assert ledger.claim_launch("d", "conf abc", "run-3") is None  # rolled back: free for the next run
    assert ledger.claim_launch("d", "conf abc", "run-1")[0] == "run-3"


def _claim(url: str, run_id: str, start: multiprocessing.synchronize.Event, won: multiprocessing.Queue) -> None:
    ledger = Ledger(url)
    start.wait(30)
    won.put((run_id, ledger.claim_launch("d", "conf same", run_id) is None))


def test_runs_racing_for_one_launch_in_separate_processes_leave_one_holder(url):
    Ledger(url)
    ctx = multiprocessing.get_context("spawn")
    start, won = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(url, f"run-{n}", start, won)) for n in range(6)]
    for p in procs:
        p.start()
    start.set()
    results = dict(won.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    assert sum(results.values()) == 1, results
    [winner] = [run for run, ok in results.items() if ok]
    assert all(Ledger(url).claim_launch("d", "conf same", run)[0] == winner for run in results if run != winner)


def _open(url: str, start: multiprocessing.synchronize.Event, opened: multiprocessing.Queue) -> None:
    start.wait(30)
    try:
        Ledger(url).entries("d", "r")
        opened.put("ok")
    except Exception as exc:  # reported to the test, which names it
        opened.put(f"{type(exc).__name__}: {exc}")


def test_workers_opening_a_fresh_ledger_at_once_all_get_it(url):
    """The first tasks of a new deployment create the table together (seen on a Celery cluster: PostgreSQL's
    loser of a CREATE TABLE race gets a unique violation, not the error a second create_all expects)."""
    from sqlalchemy import create_engine

    from include.orchestrator.saga.ledger import _metadata

    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):  # the race is lost only now and then: three fresh starts
        _metadata.drop_all(create_engine(url))
        start, opened = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, start, opened)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        results = [opened.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        assert results == ["ok"] * 6, results


def test_a_worker_losing_the_create_race_twice_still_opens_the_ledger(url):
    """The race above made deterministic: each time this worker is about to create a table, another
    worker creates it first, once for the entries and again (on the retry) for the polls. The stop-22
    CI run lost it this way on SQLite ("table campaign_review_polls already exists")."""
    from sqlalchemy import create_engine, event

    from include.orchestrator.saga import ledger

    other = create_engine(url)
    ledger._metadata.drop_all(other)
    ledger._engine.cache_clear()
    beaten: list[str] = []

    def another_worker_first(table, connection, **_):
        if table.name not in beaten:
            beaten.append(table.name)
            table.create(other)  # committed by the other worker before this one's CREATE TABLE

    for table in (ledger.entries_table, ledger.polls_table):
        event.listen(table, "before_create", another_worker_first)
    try:
        assert Ledger(url).entries("d", "r") == []
    finally:
        for table in (ledger.entries_table, ledger.polls_table):
            event.remove(table, "before_create", another_worker_first)
        ledger._engine.cache_clear()
    assert beaten == ["campaign_saga_ledger", "campaign_review_polls"], beaten
