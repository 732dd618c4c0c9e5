"""DICOMweb's SQL: QIDO-RS searches at study, series and instance level, and the instances a WADO-RS
retrieve covers. Always scoped to projects (`None`: every project, as in `store.queries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from medcloud.dicomweb.query import Level, Match, QidoQuery
from medcloud.errors import NotFound
from medcloud.store.db import Database
from medcloud.store.index import store_instance_json
from medcloud.store.queries import INSTANCE_COLUMNS
from medcloud.store.tables import instance_json, instances, series, studies

__all__ = ["DicomwebQueries"]

# keyword -> (column, text matching is case-insensitive)
_COLUMNS: dict[str, tuple[sa.ColumnElement[Any], bool]] = {
    "StudyInstanceUID": (studies.c.study_uid, False),
    "PatientID": (studies.c.patient_pseudonym, False),
    "PatientName": (studies.c.patient_pseudonym, True),
    "StudyDate": (studies.c.study_date, False),
    "StudyDescription": (studies.c.description, True),
    "SeriesInstanceUID": (series.c.series_uid, False),
    "Modality": (series.c.modality, False),
    "SeriesNumber": (series.c.series_number, False),
    "SeriesDescription": (series.c.description, True),
    "BodyPartExamined": (series.c.body_part, True),
    "SOPInstanceUID": (instances.c.sop_uid, False),
    "SOPClassUID": (instances.c.sop_class_uid, False),
    "InstanceNumber": (instances.c.instance_number, False),
}


def _pattern(value: str) -> tuple[str, bool]:
    """A LIKE pattern for a DICOM wildcard value (`*`, `?`), and whether it holds a wildcard."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_"), ("*" in value or "?" in value)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _literal_prefix(value: str) -> str:
    """The characters of a DICOM wildcard value before its first wildcard."""
    cut = min((i for i in (value.find("*"), value.find("?")) if i >= 0), default=len(value))
    return value[:cut]


def _text_condition(column: sa.ColumnElement[Any], value: str, dialect: str) -> sa.ColumnElement[bool]:
    """Case-insensitive (wildcard) match on `lower(column)`, the expression 0005 indexes, kanji included.

    PostgreSQL's `text_pattern_ops` index serves a LIKE with a literal prefix by itself; SQLite only
    optimises LIKE on a bare column, so the prefix is also given as a range on the indexed expression."""
    # Lower-case the value as the database's lower() does: SQLite's folds ASCII only.
    folded = value.translate(_ASCII_LOWER) if dialect == "sqlite" else value.lower()
    pattern, _ = _pattern(folded)
    cond: sa.ColumnElement[bool] = sa.func.lower(column).like(pattern, escape="\\")
    prefix = _literal_prefix(folded)
    if dialect == "sqlite" and prefix:
        low = sa.func.lower(column)
        cond = sa.and_(low >= prefix, low < prefix + "\U0010ffff", cond)
    return cond


def _condition(m: Match, dialect: str) -> sa.ColumnElement[bool]:
    if m.kind == "empty":
        return sa.false()  # the catalog holds no value: only a universal match (never built) matches
    if m.keyword == "ModalitiesInStudy":
        return studies.c.id.in_(sa.select(series.c.study_id).where(series.c.modality.in_(m.values)))
    column, insensitive = _COLUMNS[m.keyword]
    if m.kind in ("uids", "values"):
        return column.in_(m.values) if len(m.values) > 1 else column == m.values[0]
    if m.kind == "int":
        return column == m.number
    if m.kind == "date":
        parts = []
        if m.date_from is not None:
            parts.append(column >= m.date_from)
        if m.date_to is not None:
            parts.append(column <= m.date_to)
        return sa.and_(*parts)
    pattern, wild = _pattern(m.values[0])
    if insensitive:
        return _text_condition(column, m.values[0], dialect)
    return column.like(pattern, escape="\\") if wild else column == m.values[0]


def _scoped(q: sa.Select[Any], query: QidoQuery, projects: frozenset[str] | None, dialect: str) -> sa.Select[Any]:
    if projects is not None:
        q = q.where(studies.c.project.in_(projects))
    for m in query.matches:
        q = q.where(_condition(m, dialect))
    return q


class DicomwebQueries:
    """Read-only DICOMweb searches over the catalog."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def search(self, query: QidoQuery, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        """One page of matches at the query's level, with the counts DICOMweb reports."""
        if query.level is Level.STUDY:
            return self._studies(query, projects)
        if query.level is Level.SERIES:
            return self._series(query, projects)
        return self._instances(query, projects)

    def _studies(self, query: QidoQuery, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        # Counts and modalities are read off the study row (kept by store.index): no per-row counting.
        q = _scoped(sa.select(studies), query, projects, self._db.dialect)
        q = q.order_by(studies.c.study_date.desc().nulls_last(), studies.c.id).limit(query.limit).offset(query.offset)
        with self._db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["modalities"] = [m for m in r["modalities"].split("\\") if m]
        return rows

    @staticmethod
    def _study_columns() -> list[Any]:
        return [
            studies.c.study_uid,
            studies.c.project,
            studies.c.patient_pseudonym,
            studies.c.patient_sex,
            studies.c.patient_age,
            studies.c.study_date,
            studies.c.description.label("study_description"),
        ]

    def _series(self, query: QidoQuery, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        q = sa.select(
            series.c.series_uid,
            series.c.modality,
            series.c.body_part,
            series.c.description.label("series_description"),
            series.c.series_number,
            series.c.n_instances,
            *self._study_columns(),
        ).select_from(series.join(studies))
        q = _scoped(q, query, projects, self._db.dialect)
        q = q.order_by(studies.c.id, series.c.series_number, series.c.id).limit(query.limit).offset(query.offset)
        with self._db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def _instance_select(self) -> sa.Select[Any]:
        return sa.select(
            *INSTANCE_COLUMNS,
            series.c.series_uid,
            series.c.modality,
            series.c.body_part,
            series.c.description.label("series_description"),
            series.c.series_number,
            *self._study_columns(),
        ).select_from(instances.join(series).join(studies))

    def _instances(self, query: QidoQuery, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        q = _scoped(self._instance_select(), query, projects, self._db.dialect)
        q = q.order_by(studies.c.id, series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        with self._db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q.limit(query.limit).offset(query.offset))]

    def retrieve(
        self, projects: frozenset[str] | None, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[dict[str, Any]]:
        """Every instance a WADO-RS retrieve of the study, series or instance covers; NotFound if none."""
        q = self._instance_select().where(studies.c.study_uid == study_uid)
        if projects is not None:
            q = q.where(studies.c.project.in_(projects))
        if series_uid is not None:
            q = q.where(series.c.series_uid == series_uid)
        if sop_uid is not None:
            q = q.where(instances.c.sop_uid == sop_uid)
        q = q.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        with self._db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        if not rows:
            what: Sequence[str] = [f"study {study_uid}"]
            if series_uid is not None:
                what = [*what, f"series {series_uid}"]
            if sop_uid is not None:
                what = [*what, f"instance {sop_uid}"]
            raise NotFound(f"{', '.join(what)}: not found")
        return rows

    def instance_json(self, shas: Sequence[str]) -> dict[str, bytes]:
        """The stored (zlib-compressed) DICOM JSON of these files, by SHA-256; files without one are absent."""
        found: dict[str, bytes] = {}
        keys = sorted(set(shas))
        with self._db.read() as conn:
            for i in range(0, len(keys), 500):
                q = sa.select(instance_json.c.sha256, instance_json.c.body).where(
                    instance_json.c.sha256.in_(keys[i : i + 500])
                )
                found.update((row.sha256, bytes(row.body)) for row in conn.execute(q))
        return found

    def keep_instance_json(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Store DICOM JSON converted on first read (files ingested before it was converted at ingest)."""
        if rows:
            with self._db.write() as conn:
                store_instance_json(conn, rows)
