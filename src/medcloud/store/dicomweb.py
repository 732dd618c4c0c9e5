"""DICOMweb's SQL: QIDO-RS searches at study, series and instance level, and the instances a WADO-RS
retrieve covers. Always scoped to projects (`None`: every project, as in `store.queries`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa

from medcloud.dicomweb.query import Level, Match, QidoQuery
from medcloud.errors import NotFound
from medcloud.store.db import Database, ReadOverBudget
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


# A condition of one matching key, built with bound parameters named after its place in the query.
_Build = Callable[[], sa.ColumnElement[bool]]


def _text_condition(
    column: sa.ColumnElement[Any], value: str, dialect: str, name: str
) -> tuple[tuple[Any, ...], dict[str, Any], _Build]:
    """Case-insensitive (wildcard) match on `lower(column)`, the expression 0005 indexes, kanji included.

    PostgreSQL's `text_pattern_ops` index serves a LIKE with a literal prefix by itself; SQLite only
    optimises LIKE on a bare column, so the prefix is also given as a range on the indexed expression."""
    # Lower-case the value as the database's lower() does: SQLite's folds ASCII only.
    folded = value.translate(_ASCII_LOWER) if dialect == "sqlite" else value.lower()
    pattern, _ = _pattern(folded)
    prefix = _literal_prefix(folded) if dialect == "sqlite" else ""
    params: dict[str, Any] = {f"{name}_like": pattern}
    if prefix:
        params.update({f"{name}_lo": prefix, f"{name}_hi": prefix + "\U0010ffff"})

    def build() -> sa.ColumnElement[bool]:
        low = sa.func.lower(column)
        cond: sa.ColumnElement[bool] = low.like(sa.bindparam(f"{name}_like"), escape="\\")
        if prefix:
            cond = sa.and_(low >= sa.bindparam(f"{name}_lo"), low < sa.bindparam(f"{name}_hi"), cond)
        return cond

    return ("ci", bool(prefix)), params, build


def _condition(m: Match, dialect: str, name: str) -> tuple[tuple[Any, ...], dict[str, Any], _Build]:
    """One matching key as (shape, parameters, builder): the builder makes the SQL condition with bound
    parameters named `name_*`, the parameters hold this request's values, and the shape is everything
    the SQL text depends on, so that one statement serves every request of that shape."""
    if m.kind == "empty":
        return ("empty",), {}, sa.false  # the catalog holds no value: only a universal match (never built) matches
    if m.keyword == "ModalitiesInStudy":
        return (
            ("modalities",),
            {name: list(m.values)},
            lambda: studies.c.id.in_(
                sa.select(series.c.study_id).where(series.c.modality.in_(sa.bindparam(name, expanding=True)))
            ),
        )
    column, insensitive = _COLUMNS[m.keyword]
    shape: tuple[Any, ...] = (m.keyword, m.kind)
    if m.kind in ("uids", "values"):
        if len(m.values) > 1:
            return (*shape, "in"), {name: list(m.values)}, lambda: column.in_(sa.bindparam(name, expanding=True))
        return (*shape, "eq"), {name: m.values[0]}, lambda: column == sa.bindparam(name)
    if m.kind == "int":
        return shape, {name: m.number}, lambda: column == sa.bindparam(name)
    if m.kind == "date":
        params = {f"{name}_{k}": v for k, v in (("from", m.date_from), ("to", m.date_to)) if v is not None}

        def dates() -> sa.ColumnElement[bool]:
            parts = []
            if m.date_from is not None:
                parts.append(column >= sa.bindparam(f"{name}_from"))
            if m.date_to is not None:
                parts.append(column <= sa.bindparam(f"{name}_to"))
            return sa.and_(*parts)

        return (*shape, m.date_from is not None, m.date_to is not None), params, dates
    if insensitive:
        text_shape, params, build = _text_condition(column, m.values[0], dialect, name)
        return (*shape, *text_shape), params, build
    pattern, wild = _pattern(m.values[0])
    if wild:
        return (*shape, "like"), {name: pattern}, lambda: column.like(sa.bindparam(name), escape="\\")
    return (*shape, "eq"), {name: m.values[0]}, lambda: column == sa.bindparam(name)


def _scoped(
    query: QidoQuery, projects: frozenset[str] | None, dialect: str
) -> tuple[tuple[Any, ...], dict[str, Any], list[_Build]]:
    """The query's conditions (project scope first) as (shape, parameters, builders)."""
    shapes: list[Any] = []
    params: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
    builds: list[_Build] = []
    if projects is not None:
        shapes.append("projects")
        params["projects"] = sorted(projects)
        builds.append(lambda: studies.c.project.in_(sa.bindparam("projects", expanding=True)))
    for i, m in enumerate(query.matches):
        shape, values, build = _condition(m, dialect, f"m{i}")
        shapes.append(shape)
        params.update(values)
        builds.append(build)
    return tuple(shapes), params, builds


class _Statements:
    """Built statements by (level, shape): a QIDO request of a shape seen before reuses its statement
    (and SQLAlchemy's compiled form of it) with new parameters, instead of building, hashing and looking
    up a new statement object each time (measured: most of a search's CPU). Bounded; shapes are few."""

    def __init__(self, max_entries: int = 512) -> None:
        self._built: dict[tuple[Any, ...], sa.Select[Any]] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], build: Callable[[], sa.Select[Any]]) -> sa.Select[Any]:
        with self._lock:
            stmt = self._built.get(key)
        if stmt is None:
            stmt = build()
            with self._lock:
                if len(self._built) >= self._max:
                    self._built.clear()
                self._built[key] = stmt
        return stmt


class _Shapes:
    """A bounded set of statement keys (cleared when full: it only saves a wasted inline attempt)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._keys: set[tuple[Any, ...]] = set()
        self._max = max_entries
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._keys

    def add(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            if len(self._keys) >= self._max:
                self._keys.clear()
            self._keys.add(key)


def _where(q: sa.Select[Any], builds: list[_Build]) -> sa.Select[Any]:
    for build in builds:
        q = q.where(build())
    return q


_INSTANCE_JSON = sa.select(instance_json.c.sha256, instance_json.c.body).where(
    instance_json.c.sha256.in_(sa.bindparam("shas", expanding=True))
)
_PAGE: dict[str, sa.BindParameter[int]] = {"limit": sa.bindparam("limit"), "offset": sa.bindparam("offset")}


class DicomwebQueries:
    """Read-only DICOMweb searches over the catalog."""

    _statements = _Statements()  # shared: statements hold no connection and no values
    _slow = _Shapes()  # shapes whose inline search ran over its budget: they go to a worker thread at once

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def inline_reads(self) -> bool:
        """Whether `search` can run on the caller's thread within a budget (SQLite)."""
        return self._db.dialect == "sqlite"

    @property
    def async_reads(self) -> bool:
        """Whether `search_async` can run on the event loop without a worker thread (PostgreSQL)."""
        return self._db.async_reads

    def _statement(
        self, query: QidoQuery, projects: frozenset[str] | None
    ) -> tuple[tuple[Any, ...], sa.Select[Any], dict[str, Any]]:
        """The shape key, the statement of `query`'s shape (built once) and its parameters: one page of matches
        at the query's level."""
        shape, params, builds = _scoped(query, projects, self._db.dialect)
        key = (self._db.dialect, query.level.value, shape)
        if query.level is Level.STUDY:
            build = self._study_select
        elif query.level is Level.SERIES:
            build = self._series_select
        else:
            build = self._instances_select
        return key, self._statements.get(key, lambda: build(builds)), params

    @staticmethod
    def _rows(level: Level, names: list[str], found: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        rows = [dict(zip(names, row, strict=True)) for row in found]
        if level is Level.STUDY:  # counts and modalities are read off the study row (kept by store.index)
            for r in rows:
                r["modalities"] = [m for m in r["modalities"].split("\\") if m]
        return rows

    def search(
        self, query: QidoQuery, projects: frozenset[str] | None, *, budget_s: float | None = None
    ) -> list[dict[str, Any]]:
        """One page of matches at the query's level, with the counts DICOMweb reports.

        `budget_s`: run on this thread (the event loop) within that time, or raise `ReadOverBudget` (see
        `Database.read_rows`); a shape that ran over once is not tried inline again."""
        key, stmt, params = self._statement(query, projects)
        if budget_s is not None and key in self._slow:
            raise ReadOverBudget("a search of this shape ran past its budget before", slow=True)
        try:
            names, found = self._db.read_rows(stmt, params, budget_s=budget_s)
        except ReadOverBudget as exc:
            if exc.slow:  # not when it could not start (busy, in use, not open yet)
                self._slow.add(key)
            raise
        return self._rows(query.level, names, found)

    async def search_async(self, query: QidoQuery, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        """`search` awaited on the event loop (PostgreSQL: `Database.read_rows_async`)."""
        _, stmt, params = self._statement(query, projects)
        names, found = await self._db.read_rows_async(stmt, params)
        return self._rows(query.level, names, found)

    @staticmethod
    def _study_select(builds: list[_Build]) -> sa.Select[Any]:
        q = _where(sa.select(studies), builds).order_by(studies.c.study_date.desc().nulls_last(), studies.c.id)
        return q.limit(_PAGE["limit"]).offset(_PAGE["offset"])

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

    def _series_select(self, builds: list[_Build]) -> sa.Select[Any]:
        q = sa.select(
            series.c.series_uid,
            series.c.modality,
            series.c.body_part,
            series.c.description.label("series_description"),
            series.c.series_number,
            series.c.n_instances,
            *self._study_columns(),
        ).select_from(series.join(studies))
        q = _where(q, builds).order_by(studies.c.id, series.c.series_number, series.c.id)
        return q.limit(_PAGE["limit"]).offset(_PAGE["offset"])

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

    def _instances_select(self, builds: list[_Build]) -> sa.Select[Any]:
        q = _where(self._instance_select(), builds)
        q = q.order_by(studies.c.id, series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        return q.limit(_PAGE["limit"]).offset(_PAGE["offset"])

    def _retrieve_select(self, scoped: bool, one_series: bool, one_instance: bool, json_kept: bool) -> sa.Select[Any]:
        """The statement of a retrieve of this shape, with bound parameters (the same SQL as built per call)."""
        q = self._instance_select()
        if json_kept:  # whether its DICOM JSON is stored (a primary-key lookup per row)
            q = q.add_columns(instance_json.c.sha256.is_not(None).label("json_kept")).outerjoin(
                instance_json, instance_json.c.sha256 == instances.c.sha256
            )
        q = q.where(studies.c.study_uid == sa.bindparam("study"))
        if scoped:
            q = q.where(studies.c.project.in_(sa.bindparam("projects", expanding=True)))
        if one_series:
            q = q.where(series.c.series_uid == sa.bindparam("series"))
        if one_instance:
            q = q.where(instances.c.sop_uid == sa.bindparam("sop"))
        return q.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)

    def retrieve(
        self,
        projects: frozenset[str] | None,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        json_kept: bool = False,
    ) -> list[dict[str, Any]]:
        """Every instance a WADO-RS retrieve of the study, series or instance covers; NotFound if none.

        With `json_kept`, each row also says whether its DICOM JSON is stored (`instance_json` holds a row
        for its SHA-256), read in the same statement."""
        params: dict[str, Any] = {"study": study_uid}
        if projects is not None:
            params["projects"] = sorted(projects)
        if series_uid is not None:
            params["series"] = series_uid
        if sop_uid is not None:
            params["sop"] = sop_uid
        shape = (
            "retrieve",
            self._db.dialect,
            projects is not None,
            series_uid is not None,
            sop_uid is not None,
            json_kept,
        )
        stmt = self._statements.get(shape, partial(self._retrieve_select, *shape[2:]))
        names, found = self._db.read_rows(stmt, params)
        rows = [dict(zip(names, row, strict=True)) for row in found]
        if not rows:
            what: Sequence[str] = [f"study {study_uid}"]
            if series_uid is not None:
                what = [*what, f"series {series_uid}"]
            if sop_uid is not None:
                what = [*what, f"instance {sop_uid}"]
            raise NotFound(f"{', '.join(what)}: not found")
        return rows

    def instance_json(self, shas: Sequence[str]) -> dict[str, bytes]:
        """The stored (`pack_stored`) DICOM JSON of these files, by SHA-256; files without one are absent."""
        found: dict[str, bytes] = {}
        keys = sorted(set(shas))
        for i in range(0, len(keys), 500):  # rows never change (content-addressed): one statement per chunk
            _, rows = self._db.read_rows(_INSTANCE_JSON, {"shas": keys[i : i + 500]})
            found.update((sha, bytes(body)) for sha, body in rows)
        return found

    def keep_instance_json(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Store DICOM JSON converted on first read (files ingested before it was converted at ingest)."""
        if rows:
            with self._db.write() as conn:
                store_instance_json(conn, rows)
