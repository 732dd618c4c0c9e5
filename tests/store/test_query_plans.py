"""The plans of the catalog's key queries use the indexes of migration 0005, on SQLite and PostgreSQL.

The statements are the ones the code runs (captured from the engine, or from `Database.read_rows` on
the driver's cursor, while `DicomwebQueries.search` and `Datasets.preview` execute), then explained with
their own parameters: SQLite `EXPLAIN QUERY PLAN`,
PostgreSQL `EXPLAIN` with `enable_seqscan` off (on a test-sized table PostgreSQL rightly prefers a scan;
switched off, it still scans only when no index can serve the query, which is the regression caught here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from medcloud.dicomweb.query import Level, parse_qido
from medcloud.store.datasets import Datasets
from medcloud.store.db import Database
from medcloud.store.dicomweb import DicomwebQueries
from medcloud.store.filler import fill_realistic
from medcloud.store.tables import series, studies

PROJECTS = frozenset({"lung", "brain", "abdomen"})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'catalog.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    database.migrate()
    with database.write() as conn:
        fill_realistic(conn, 3000, seed=7, prefix="2.25.4242")
    with database.write() as conn:
        conn.exec_driver_sql("ANALYZE")
    yield database
    database.dispose()


def _captured(db: Database, run: Callable[[], Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    fetch = db._fetch

    def fetched(conn: Any, statement: str, args: Any) -> Any:  # read_rows on the driver's cursor
        seen.append((statement, args if isinstance(args, dict) else tuple(args)))
        return fetch(conn, statement, args)

    sa.event.listen(db.engine, "before_cursor_execute", grab)
    db._fetch = fetched  # type: ignore[method-assign]
    try:
        run()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", grab)
        del db._fetch
    assert seen, "the query ran no SELECT"
    return seen


def _plan(db: Database, statement: str, parameters: Any) -> str:
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(str(r[0]) for r in rows)


def _plans(db: Database, run: Callable[[], Any]) -> str:
    return "\n---\n".join(_plan(db, s, p) for s, p in _captured(db, run))


def _qido(db: Database, level: Level, params: list[tuple[str, str]], **fixed: str) -> str:
    query = parse_qido(level, params, fixed=fixed or None)
    return _plans(db, lambda: DicomwebQueries(db).search(query, PROJECTS))


def _no_scan(plan: str, table: str, dialect: str) -> None:
    if dialect == "sqlite":
        assert not any(line.strip() == f"SCAN {table}" for line in plan.splitlines()), plan
    else:
        assert f"Seq Scan on {table}" not in plan, plan


def _pick(db: Database, column: sa.ColumnElement[Any]) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(column).where(column.is_not(None)).limit(1)).scalar_one()


def test_qido_by_patient_id_uses_its_index(db: Database) -> None:
    patient = _pick(db, studies.c.patient_pseudonym)
    plan = _qido(db, Level.STUDY, [("PatientID", patient)])
    assert "ix_studies_patient_pseudonym" in plan, plan
    _no_scan(plan, "studies", db.dialect)


def test_qido_by_study_date_range_uses_a_date_index(db: Database) -> None:
    plan = _qido(db, Level.STUDY, [("StudyDate", "20200101-20200331")])
    assert "ix_studies_study_date" in plan or "ix_studies_date_desc_id" in plan, plan
    _no_scan(plan, "studies", db.dialect)


def test_ohif_study_list_reads_in_index_order_without_sorting(db: Database) -> None:
    params = [("limit", "101"), ("offset", "0"), ("fuzzymatching", "false"),
              ("includefield", "00081030,00080060,00080090,00100030")]  # fmt: skip
    plan = _qido(db, Level.STUDY, params)
    assert "ix_studies_date_desc_id" in plan, plan
    if db.dialect == "sqlite":
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
    else:
        assert "Sort" not in plan, plan
    # The counts OHIF shows come from the study row: the list never touches series or instances.
    assert "series" not in plan and "instances" not in plan, plan


def test_modalities_in_study_uses_the_modality_index(db: Database) -> None:
    plan = _qido(db, Level.STUDY, [("ModalitiesInStudy", "MR")])
    assert "ix_series_modality_study" in plan, plan
    _no_scan(plan, "series", db.dialect)


def test_kanji_patient_name_prefix_uses_the_lower_index(db: Database) -> None:
    plan = _qido(db, Level.STUDY, [("PatientName", "佐藤*")])
    assert "ix_studies_patient_lower" in plan, plan
    _no_scan(plan, "studies", db.dialect)


def test_series_of_a_study_and_instances_of_a_series_use_uid_lookups(db: Database) -> None:
    study_uid = _pick(db, studies.c.study_uid)
    plan = _qido(db, Level.SERIES, [], StudyInstanceUID=study_uid)
    assert "study_uid" in plan and "ix_series_study_number" in plan, plan  # unique index on study_uid
    _no_scan(plan, "studies", db.dialect)
    _no_scan(plan, "series", db.dialect)
    series_uid = _pick(db, series.c.series_uid)
    plan = _plans(db, lambda: DicomwebQueries(db).retrieve(PROJECTS, _study_of(db, series_uid), series_uid))
    assert "series_uid" in plan and "ix_instances_series" in plan, plan
    _no_scan(plan, "series", db.dialect)
    _no_scan(plan, "instances", db.dialect)


def _study_of(db: Database, series_uid: str) -> str:
    with db.read() as conn:
        q = sa.select(studies.c.study_uid).select_from(series.join(studies)).where(series.c.series_uid == series_uid)
        return str(conn.execute(q).scalar_one())


def test_cohort_finding_terms_are_answered_from_the_findings_index(db: Database) -> None:
    query = [
        {"kind": "finding", "code": "pneumothorax", "status": "present"},
        {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
        {"kind": "image", "modality": "CR"},
    ]
    plan = _plans(db, lambda: Datasets(db).preview(query, sorted(PROJECTS)))
    assert "ix_findings_code_status_project_study" in plan, plan
    _no_scan(plan, "findings", db.dialect)
    _no_scan(plan, "instances", db.dialect)
    assert "instances" not in plan, plan  # counted from series.n_instances
