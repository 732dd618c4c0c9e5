"""`Database.read_rows`: a prebuilt SELECT read on SQLite's driver gives the keys and rows SQLAlchemy gives
(dates converted, expanding lists of any length, empty ones included); with a budget it runs on the
caller's thread and stops, leaving nothing half-done, when the statement runs too long, when the
database is locked or when another caller holds the inline connection."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from medcloud.store.db import Database, ReadOverBudget, utcnow
from medcloud.store.tables import instances, series, studies


def _db(url: str) -> Database:
    db = Database(url)
    db.migrate()
    return db


def _fill(db: Database, n_studies: int = 5, per_series: int = 4) -> None:
    now = utcnow()
    with db.write() as conn:
        for s in range(n_studies):
            sid = conn.execute(
                studies.insert().returning(studies.c.id),
                {"study_uid": f"1.9.{s}", "project": ("lung", "brain", "abdomen")[s % 3], "site": "site-a",
                 "patient_pseudonym": f"P{s % 2}", "study_date": date(2024, 1, 1 + s) if s != 2 else None,
                 "created_at": now, "n_series": 1, "n_instances": per_series, "modalities": "CT"},
            ).scalar_one()  # fmt: skip
            seid = conn.execute(
                series.insert().returning(series.c.id),
                {"series_uid": f"1.9.{s}.1", "study_id": sid, "modality": "CT", "series_number": 1},
            ).scalar_one()
            conn.execute(
                instances.insert(),
                [{"sop_uid": f"1.9.{s}.1.{i}", "series_id": seid, "sop_class_uid": "x", "instance_number": i,
                  "rows": 1, "columns": 1, "frames": None, "transfer_syntax": "t", "sha256": f"{s:032d}{i:032d}",
                  "size": 3, "created_at": now} for i in range(per_series)],
            )  # fmt: skip


PROJECTS = sa.bindparam("projects", expanding=True)
BY_PROJECT = (
    sa.select(studies, sa.literal("fixed").label("constant"))
    .where(studies.c.project.in_(PROJECTS), studies.c.patient_pseudonym == sa.bindparam("patient"))
    .order_by(studies.c.study_date.desc().nulls_last(), studies.c.id)
    .limit(sa.bindparam("limit"))
)
JOINED = (
    sa.select(instances.c.sop_uid, instances.c.created_at, series.c.series_uid, studies.c.study_date.label("when"))
    .select_from(instances.join(series).join(studies))
    .where(studies.c.project.in_(PROJECTS))
    .order_by(instances.c.id)
)


def _through_sqlalchemy(db: Database, stmt: Any, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    with db.read() as conn:
        result = conn.execute(stmt, params)
        return list(result.keys()), [tuple(r) for r in result]


CASES: list[tuple[Any, dict[str, Any]]] = [
    (BY_PROJECT, {"projects": ["lung", "brain", "abdomen"], "patient": "P0", "limit": 10}),
    (BY_PROJECT, {"projects": ["lung"], "patient": "P1", "limit": 10}),
    (BY_PROJECT, {"projects": ["lung", "brain"], "patient": "P0", "limit": 1}),
    (BY_PROJECT, {"projects": ["abdomen", "lung"], "patient": "P0", "limit": 10}),  # same length, other values
    (BY_PROJECT, {"projects": [], "patient": "P0", "limit": 10}),  # an empty IN list matches nothing
    (JOINED, {"projects": ["brain", "lung"]}),
    (JOINED, {"projects": ["nope"]}),
]


@pytest.mark.parametrize("budget", [None, 1.0])
def test_rows_are_sqlalchemys(tmp_path: Path, budget: float | None) -> None:
    db = _db(f"sqlite:///{tmp_path / 'c.db'}")
    _fill(db)
    db.read_rows(BY_PROJECT, CASES[0][1])  # a read without a budget opens the inline connection
    for stmt, params in CASES * 2:  # twice: the second pass reads the cached SQL of each list length
        assert db.read_rows(stmt, params, budget_s=budget) == _through_sqlalchemy(db, stmt, params), params
    keys, rows = db.read_rows(BY_PROJECT, CASES[0][1], budget_s=budget)
    assert "study_date" in keys and "constant" in keys
    assert [r[keys.index("study_date")] for r in rows] == [date(2024, 1, 5), date(2024, 1, 1), None]
    assert isinstance(db.read_rows(JOINED, {"projects": ["lung"]})[1][0][1], type(utcnow().replace(tzinfo=None)))
    db.dispose()


@pytest.mark.postgres
def test_rows_on_postgresql_are_sqlalchemys(pg_url: str) -> None:
    db = _db(pg_url)
    _fill(db)
    for stmt, params in CASES:
        assert db.read_rows(stmt, params) == _through_sqlalchemy(db, stmt, params), params
    with pytest.raises(ReadOverBudget):  # no inline reads off SQLite: the caller goes to a worker thread
        db.read_rows(BY_PROJECT, CASES[0][1], budget_s=1.0)
    with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"):  # SQLAlchemy's error, as before
        db.read_rows(sa.select(sa.text("* FROM no_such_table")), {})
    for _ in range(3):
        assert db.read_rows(*CASES[0]) == _through_sqlalchemy(db, *CASES[0])
    pooled = [db.engine.raw_connection() for _ in range(db.engine.pool.checkedin())]  # type: ignore[attr-defined]
    assert pooled and all(c.driver_connection.autocommit is False for c in pooled)  # back in transaction mode
    for c in pooled:
        c.close()
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(studies.update().values(description="changed"))
        raise RuntimeError("abort the transaction")
    assert all(r[-1] != "changed" for r in db.read_rows(sa.select(studies.c.description), {})[1])
    db.dispose()


_A, _B, _C = instances.alias("a"), instances.alias("b"), instances.alias("c")
SLOW = sa.select(sa.func.count()).select_from(
    _A.join(_B, sa.true()).join(_C, sa.true()).join(studies, studies.c.project.in_(PROJECTS))
)


def test_a_read_over_its_budget_is_stopped_and_the_connection_stays_usable(tmp_path: Path) -> None:
    db = _db(f"sqlite:///{tmp_path / 'c.db'}")
    _fill(db, n_studies=10, per_series=20)  # 200 instances: the cross join counts 8,000,000 x 10 rows
    db.read_rows(BY_PROJECT, CASES[0][1])
    with pytest.raises(ReadOverBudget, match="budget") as stopped:
        db.read_rows(SLOW, {"projects": ["lung"]}, budget_s=0.005)
    assert stopped.value.slow
    inline = db._inline
    assert inline is not None  # kept: being stopped is not an error of the connection
    # The next inline read on the same connection runs to its end, with no handler left behind.
    assert db.read_rows(BY_PROJECT, CASES[0][1], budget_s=1.0) == _through_sqlalchemy(db, *CASES[0])
    assert db._inline is inline
    db.dispose()
    assert db._inline is None


def test_the_inline_connection_is_never_opened_or_waited_for_inline(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = _db(f"sqlite:///{path}")
    _fill(db)
    params = CASES[0][1]
    expected = _through_sqlalchemy(db, BY_PROJECT, params)
    db.dispose()
    # Another connection holds the database exclusively (opening a connection waits up to 30 s for it).
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("UPDATE studies SET description = 'x' WHERE id = -1")
    blocker.execute("COMMIT")  # the lock stays until the connection closes
    db = Database(f"sqlite:///{path}")
    try:
        started = time.perf_counter()
        with pytest.raises(ReadOverBudget, match="not open") as refused:  # at once: the caller goes elsewhere
            db.read_rows(BY_PROJECT, params, budget_s=1.0)
        assert not refused.value.slow  # not a slow statement: it may run inline once the connection is open
        assert time.perf_counter() - started < 0.5
    finally:
        blocker.close()
    assert db._inline is None
    assert db.read_rows(BY_PROJECT, params) == expected  # the worker thread's read opens it...
    assert db._inline is not None
    assert db.read_rows(BY_PROJECT, params, budget_s=1.0) == expected  # ...and the next one runs inline
    # One inline caller at a time: a second one is told to go elsewhere, not made to wait.
    started, release = threading.Event(), threading.Event()
    assert db._inline_lock.acquire()

    def holder() -> None:
        started.set()
        release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    started.wait(5)
    try:
        with pytest.raises(ReadOverBudget, match="in use"):
            db.read_rows(BY_PROJECT, params, budget_s=1.0)
    finally:
        db._inline_lock.release()
        release.set()
        t.join()
    assert db.read_rows(BY_PROJECT, params) == expected  # without a budget: a pooled connection
    db.dispose()


def test_a_database_error_inline_drops_the_inline_connection(tmp_path: Path) -> None:
    db = _db(f"sqlite:///{tmp_path / 'c.db'}")
    _fill(db)
    db.read_rows(BY_PROJECT, CASES[0][1])
    assert db.read_rows(BY_PROJECT, CASES[0][1], budget_s=1.0)
    broken = sa.select(sa.text("* FROM no_such_table"))
    with pytest.raises(sa.exc.OperationalError, match="no_such_table"):
        db.read_rows(broken, {}, budget_s=1.0)
    assert db._inline is None  # the next read without a budget opens a fresh one
    assert db.read_rows(BY_PROJECT, CASES[0][1]) == _through_sqlalchemy(db, *CASES[0])
    assert db.read_rows(BY_PROJECT, CASES[0][1], budget_s=1.0) == _through_sqlalchemy(db, *CASES[0])
    db.dispose()


def test_an_encrypted_catalog_reads_inline_too(tmp_path: Path) -> None:
    """SQLCipher's driver (a catalog encrypted at rest) has the same progress handler: reads run inline."""
    db = Database(f"sqlite:///{tmp_path / 'c.db'}", sqlite_key=bytes(range(32)))
    db.migrate()
    _fill(db)
    expected = _through_sqlalchemy(db, *CASES[0])
    assert db.read_rows(*CASES[0]) == expected
    assert db.read_rows(*CASES[0], budget_s=1.0) == expected
    with pytest.raises(ReadOverBudget) as stopped:
        db.read_rows(SLOW, {"projects": ["lung"]}, budget_s=0.0)
    assert stopped.value.slow  # 8,000 joined rows take far more than the 1,000 steps between checks
    db.dispose()


@pytest.mark.postgres
def test_reads_on_the_event_loop_on_postgresql_are_read_rows(pg_url: str) -> None:
    """`read_rows_async` (psycopg's asyncio connections, no worker thread) gives `read_rows`' keys and rows
    and SQLAlchemy's errors; a failed connection is never reused; a kept connection the server dropped is
    replaced once, without an error; `aclose` closes what the loop kept."""
    import asyncio

    db = _db(pg_url)
    _fill(db)
    assert db.async_reads

    async def scenario() -> None:
        for stmt, params in CASES:
            assert await db.read_rows_async(stmt, params) == db.read_rows(stmt, params), params
        assert db._async is not None
        pool = db._async._pool()
        assert len(pool.idle) == 1  # one connection served every read in turn
        # Concurrent reads each get a connection, and all of them are kept for the next ones.
        results = await asyncio.gather(*(db.read_rows_async(*CASES[0]) for _ in range(5)))
        assert all(r == db.read_rows(*CASES[0]) for r in results)
        assert 1 <= len(pool.idle) <= 5
        kept = list(pool.idle)
        with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"):
            await db.read_rows_async(sa.select(sa.text("* FROM no_such_table")), {})
        assert len(pool.idle) == len(kept) - 1 and any(c.closed for c in kept)  # the failed one is closed
        # The server drops every kept connection (a restart would): the next read still answers.
        pids = [c.info.backend_pid for c in pool.idle]
        with db.engine.connect() as admin:
            for pid in pids:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        expected = db.read_rows(*CASES[5])
        # as many reads at once as connections are kept: each takes one of the dropped ones
        assert await asyncio.gather(*(db.read_rows_async(*CASES[5]) for _ in pids)) == [expected] * len(pids)
        assert len(pool.idle) == len(pids) and all(c.info.backend_pid not in pids for c in pool.idle)
        await db.aclose()
        assert all(c.closed for c in pool.idle + kept)

    asyncio.run(scenario())
    db.dispose()


@pytest.mark.postgres
def test_a_database_that_cannot_be_reached_is_sqlalchemys_error_on_the_event_loop_too() -> None:
    import asyncio

    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens_here")
    with pytest.raises(sa.exc.OperationalError):
        db.read_rows(*CASES[0])
    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(db.read_rows_async(*CASES[0]))
    db.dispose()


def test_reads_on_the_event_loop_are_for_postgresql(tmp_path: Path) -> None:
    import asyncio

    db = _db(f"sqlite:///{tmp_path / 'c.db'}")
    assert not db.async_reads
    with pytest.raises(ValueError, match="PostgreSQL"):
        asyncio.run(db.read_rows_async(*CASES[0]))
    db.dispose()
