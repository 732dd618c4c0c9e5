"""`store.db.driver_execute`: the ingest path's prebuilt statements on SQLite's driver give the rows,
stored values and errors that the same statements give through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from medcloud.store import index
from medcloud.store.audit import _HEAD
from medcloud.store.db import Database, _through_sqlalchemy, driver_execute, utcnow
from medcloud.store.tables import instances, series, studies


def _db(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    db.migrate()
    return db


def _fill(conn: Any, run: Any, now: Any) -> None:
    conn.execute(
        studies.insert(),
        [{"study_uid": "1.2", "project": "P", "site": "S", "patient_pseudonym": "X", "created_at": now}],
    )
    sid = conn.execute(sa.select(studies.c.id)).scalar()
    conn.execute(series.insert(), [{"series_uid": "1.2.1", "study_id": sid, "modality": "CT"}])
    seid = conn.execute(sa.select(series.c.id)).scalar()
    rows = [
        {"sop_uid": f"1.2.1.{i}", "series_id": seid, "sop_class_uid": "x", "instance_number": i, "rows": 1,
         "columns": 1, "frames": None, "transfer_syntax": "t", "sha256": f"{i:064d}", "size": 3, "created_at": now}
        for i in range(3)
    ]  # fmt: skip
    run(conn, index._INSERT_INSTANCES, rows)
    run(conn, index._SET_STUDY_COUNTS, [{"sid": sid, "ns": 1, "ni": 3, "mods": "CT"}])


def test_rows_and_stored_values_are_sqlalchemys(tmp_path: Path) -> None:
    now = utcnow()
    answers = []
    for name, run in (("sa", _through_sqlalchemy), ("driver", driver_execute)):
        db = _db(tmp_path / f"{name}.db")
        with db.write() as conn:
            _fill(conn, run, now)
            got = [
                run(conn, index._KNOWN_INSTANCES, {"uids": ["1.2.1.0", "1.2.1.2", "nope"]}),
                run(conn, index._KNOWN_INSTANCES, {"uids": ["1.2.1.1"]}),
                run(conn, index._KNOWN_INSTANCES, {"uids": []}),  # an empty IN list matches nothing
                run(conn, index._KNOWN_STUDIES, {"uids": ["1.2"]}),
                run(conn, index._KNOWN_SERIES, {"uids": ["1.2.1", "9"]}),
                run(conn, index._STUDY_SERIES, {"ids": [1]}),
                run(conn, _HEAD),
            ]
        with db.read() as conn:  # what was written, as the database holds it (timestamps as text)
            got.append(conn.exec_driver_sql("SELECT * FROM instances ORDER BY id").all())
            got.append(conn.exec_driver_sql("SELECT * FROM studies").all())
        db.dispose()
        answers.append([[tuple(r) for r in rows] for rows in got])
    assert answers[0] == answers[1]
    assert len(answers[1][0]) == 2 and answers[1][2] == [] and answers[1][6] == []
    assert answers[1][-1][0][-3:] == (1, 3, "CT")


def test_a_driver_error_is_sqlalchemys_and_drops_the_writer(tmp_path: Path) -> None:
    db = _db(tmp_path / "c.db")
    now = utcnow()
    with db.write() as conn:
        _fill(conn, driver_execute, now)
    dup = {"sop_uid": "1.2.1.0", "series_id": 1, "sop_class_uid": "x", "instance_number": 9, "rows": 1,
           "columns": 1, "frames": None, "transfer_syntax": "t", "sha256": "f" * 64, "size": 3,
           "created_at": now}  # fmt: skip
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        driver_execute(conn, index._INSERT_INSTANCES, [dup])
    assert db._writer is None  # dropped, as after any database error in a write
    with db.read() as conn:  # the failed transaction left nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar() == 3
    with db.write() as conn:  # the next writer starts on a fresh connection
        driver_execute(conn, index._INSERT_INSTANCES, [{**dup, "sop_uid": "1.2.1.9"}])
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar() == 4
    db.dispose()


def test_statements_sqlalchemy_must_fill_or_read_back_go_through_it(tmp_path: Path) -> None:
    db = _db(tmp_path / "d.db")
    now = utcnow()
    with db.write() as conn:
        _fill(conn, driver_execute, now)
        # RETURNING: the new ids come back, as through SQLAlchemy.
        got = driver_execute(conn, index._INSERT_SERIES, [{"series_uid": "1.2.2", "study_id": 1, "modality": "MR"}])
        assert [tuple(r)[1] for r in got] == ["1.2.2"]
        # A DateTime read back is converted by SQLAlchemy (the driver would give text).
        (created,) = driver_execute(conn, sa.select(instances.c.created_at).where(instances.c.id == 1))[0]
        assert created == now.replace(tzinfo=None) or created == now
    db.dispose()
