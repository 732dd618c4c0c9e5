"""Cohorts (named, saved queries) and frozen dataset versions: the SQL behind `medcloud.datasets`.

A cohort query is a list of terms, all of which must hold; a term may be negated (`store.terms`: image
metadata and report findings).

A frozen version is immutable: its id is the SHA-256 of its canonical manifest (`datasets.manifest`),
and its rows are never updated except to mark it withdrawn, with a reason, when a source instance has to
go (`remove_instance`). A withdrawn version keeps its manifest and id; its files are no longer served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.datasets.manifest import FORMAT, canonical_line, file_line, normalize_split, split_for_patient
from medcloud.errors import Conflict, InvalidInput, MedcloudError, NotFound
from medcloud.store.db import Database, utcnow
from medcloud.store.tables import cohorts, dataset_files, dataset_versions, instances, series, studies
from medcloud.store.terms import IMAGE_FIELDS, normalize_query, term_condition

__all__ = ["IMAGE_FIELDS", "Datasets", "FreezeResult", "VersionWithdrawn", "normalize_query"]

_INSERT_CHUNK = 5000
# Fixed statements for the driver's own executemany (the fast path of `freeze`), one per parameter style.
_INSERT_FILES_QMARK = (
    "INSERT INTO dataset_files (version_id, idx, sop_uid, study_uid, series_uid, patient, sha256, size, split) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FILES_FORMAT = (
    "INSERT INTO dataset_files (version_id, idx, sop_uid, study_uid, series_uid, patient, sha256, size, split) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class VersionWithdrawn(MedcloudError):
    """A frozen version whose source was removed: its manifest stays readable, its files are not served."""

    status = 410
    type_slug = "dataset-withdrawn"
    title = "Dataset version withdrawn"
    exit_code = 4


def _projects_key(projects: Sequence[str]) -> str:
    return ",".join(sorted(set(projects)))


def _visible(projects_key: str, readable: frozenset[str] | None) -> bool:
    return readable is None or set(projects_key.split(",")) <= readable


@dataclass(frozen=True)
class FreezeResult:
    """A frozen version's summary and whether this call stored it (False: it existed already)."""

    version: dict[str, Any]
    created: bool


class Datasets:
    """Cohorts and frozen dataset versions over the catalog's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- cohorts -------------------------------------------------------------------------------------

    def save_cohort(
        self, conn: Connection, name: str, projects: Sequence[str], query: Any, created_by: str
    ) -> tuple[dict[str, Any], bool]:
        """Save a cohort; saving the same name and query again is a no-op, another query under it a Conflict."""
        _check_name(name)
        terms = normalize_query(query)
        key = _projects_key(projects)
        if not key:
            raise InvalidInput("a cohort needs at least one project")
        text = json.dumps(terms, sort_keys=True, separators=(",", ":"))
        row = conn.execute(sa.select(cohorts).where(cohorts.c.projects == key, cohorts.c.name == name)).first()
        if row is not None:
            if row.query != text:
                raise Conflict(f"cohort {name!r} exists with another query; save it under a new name")
            return self._cohort_out(row), False
        conn.execute(
            cohorts.insert().values(name=name, projects=key, query=text, created_by=created_by, created_at=utcnow())
        )
        row = conn.execute(sa.select(cohorts).where(cohorts.c.projects == key, cohorts.c.name == name)).one()
        return self._cohort_out(row), True

    def list_cohorts(self, readable: frozenset[str] | None) -> list[dict[str, Any]]:
        """Cohorts whose every project is readable."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(cohorts).order_by(cohorts.c.name, cohorts.c.projects)).all()
        return [self._cohort_out(r) for r in rows if _visible(r.projects, readable)]

    def get_cohort(self, name: str, readable: frozenset[str] | None, project: str | None = None) -> dict[str, Any]:
        """The readable cohort called `name` (in `project`, when given), or NotFound / Conflict when ambiguous."""
        found = [
            c
            for c in self.list_cohorts(readable)
            if c["name"] == name and (project is None or project in c["projects"])
        ]
        if not found:
            raise NotFound(f"cohort {name!r} not found")
        if len(found) > 1:
            raise Conflict(f"cohort name {name!r} is used in several project sets; give the project")
        return found[0]

    @staticmethod
    def _cohort_out(r: Any) -> dict[str, Any]:
        return {
            "name": r.name,
            "projects": r.projects.split(","),
            "query": json.loads(r.query),
            "created_by": r.created_by,
            "created_at": r.created_at.isoformat(),
        }

    # -- matching ------------------------------------------------------------------------------------

    @staticmethod
    def _match_query(terms: Sequence[Mapping[str, Any]], projects: Sequence[str]) -> sa.Select[Any]:
        q = (
            sa.select(
                instances.c.id,
                instances.c.sop_uid,
                instances.c.sha256,
                instances.c.size,
                series.c.series_uid,
                studies.c.study_uid,
                studies.c.patient_pseudonym,
            )
            .select_from(instances.join(series).join(studies))
            .where(studies.c.project.in_(sorted(set(projects))))
        )
        for term in terms:
            q = q.where(term_condition(term))
        return q

    def count(self, query: Any, projects: Sequence[str]) -> int:
        """How many instances a cohort query matches in `projects` (a preview before freezing)."""
        terms = normalize_query(query)
        q = sa.select(sa.func.count()).select_from(self._match_query(terms, projects).subquery())
        with self._db.read() as conn:
            return int(conn.execute(q).scalar_one())

    # -- frozen versions -----------------------------------------------------------------------------

    def freeze(
        self,
        conn: Connection,
        *,
        name: str,
        query: Any,
        projects: Sequence[str],
        split: Mapping[str, float] | None = None,
        seed: int = 0,
        cohort: str | None = None,
        created_by: str = "",
    ) -> FreezeResult:
        """Freeze the instances matching `query` in `projects` into an immutable, content-addressed version.

        Runs in the caller's write transaction, so the catalog cannot change between match and insert."""
        _check_name(name)
        terms = normalize_query(query)
        key = _projects_key(projects)
        if not key:
            raise InvalidInput("a dataset needs at least one project")
        try:
            parts = normalize_split(split)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise InvalidInput("seed must be a whole number 0 <= seed < 2**63")
        rows = list(conn.execute(self._match_query(terms, key.split(","))).all())
        if not rows:
            raise InvalidInput("the query matches no instance; nothing to freeze")
        rows.sort(key=lambda r: (r.study_uid, r.series_uid, r.sop_uid))
        split_of: dict[str, str] = {}
        counts = {p: 0 for p in parts}
        # Plain tuples in `dataset_files` column order: at 100,000 files, dicts and SQLAlchemy's per-row
        # parameter handling cost more than the match itself.
        files: list[tuple[str, int, str, str, str, str, str, int, str]] = []
        digest = hashlib.sha256()
        header: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "projects": key.split(","),
            "query": terms,
            "cohort": cohort,
            "split": parts,
            "seed": seed,
        }
        for i, r in enumerate(rows):
            patient = r.patient_pseudonym
            part = split_of.get(patient)
            if part is None:
                part = split_of[patient] = split_for_patient(patient, seed, parts)
            counts[part] += 1
            files.append(("", i, r.sop_uid, r.study_uid, r.series_uid, patient, r.sha256, int(r.size), part))
        # What the frozen rows themselves say about the catalog they came from; it is part of the hashed
        # content, so it is the same whenever the same rows are frozen again.
        header["source"] = {
            "instances": len(rows),
            "patients": len(split_of),
            "max_instance_id": max(int(r.id) for r in rows),
        }
        digest.update(canonical_line(header))
        for f in files:
            digest.update(file_line(*f[1:]))
        vid = digest.hexdigest()
        existing = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.id == vid)).first()
        if existing is not None:
            return FreezeResult(self._version_out(existing), created=False)
        catalog_state = {
            "instances": int(conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar_one()),
            "max_instance_id": conn.execute(sa.select(sa.func.max(instances.c.id))).scalar_one(),
            "split_counts": counts,
        }
        conn.execute(
            dataset_versions.insert().values(
                id=vid,
                name=name,
                projects=key,
                header=canonical_line(header).decode().rstrip("\n"),
                file_count=len(files),
                total_bytes=sum(f[7] for f in files),
                catalog_state=json.dumps(catalog_state, sort_keys=True),
                created_by=created_by,
                created_at=utcnow(),
            )
        )
        insert = _INSERT_FILES_QMARK if conn.dialect.paramstyle == "qmark" else _INSERT_FILES_FORMAT
        for start in range(0, len(files), _INSERT_CHUNK):
            conn.exec_driver_sql(insert, [(vid, *f[1:]) for f in files[start : start + _INSERT_CHUNK]])
        row = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.id == vid)).one()
        return FreezeResult(self._version_out(row), created=True)

    @staticmethod
    def _version_out(r: Any) -> dict[str, Any]:
        header = json.loads(r.header)
        state = json.loads(r.catalog_state)
        return {
            "id": r.id,
            "name": r.name,
            "projects": r.projects.split(","),
            "query": header["query"],
            "cohort": header.get("cohort"),
            "split": header["split"],
            "seed": header["seed"],
            "file_count": r.file_count,
            "total_bytes": int(r.total_bytes),
            "split_counts": state.get("split_counts", {}),
            "catalog_state": {k: v for k, v in state.items() if k != "split_counts"},
            "created_by": r.created_by,
            "created_at": r.created_at.isoformat(),
            "status": "withdrawn" if r.withdrawn_at is not None else "active",
            "withdrawn_at": r.withdrawn_at.isoformat() if r.withdrawn_at is not None else None,
            "withdrawn_reason": r.withdrawn_reason,
        }

    def list_versions(self, readable: frozenset[str] | None, name: str | None = None) -> list[dict[str, Any]]:
        """Versions whose every project is readable, newest first."""
        q = sa.select(dataset_versions).order_by(dataset_versions.c.created_at.desc(), dataset_versions.c.id)
        if name:
            q = q.where(dataset_versions.c.name == name)
        with self._db.read() as conn:
            rows = conn.execute(q).all()
        return [self._version_out(r) for r in rows if _visible(r.projects, readable)]

    def _version_row(self, conn: Connection, version_id: str, readable: frozenset[str] | None) -> Any:
        row = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.id == version_id)).first()
        # Another project's version reads as absent: its existence is not the caller's business.
        if row is None or not _visible(row.projects, readable):
            raise NotFound(f"dataset version {version_id} not found")
        return row

    def get_version(self, version_id: str, readable: frozenset[str] | None) -> dict[str, Any]:
        """One version's summary, or NotFound (also when outside `readable`)."""
        with self._db.read() as conn:
            return self._version_out(self._version_row(conn, version_id, readable))

    def manifest(self, version_id: str, readable: frozenset[str] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The version's header and files, exactly as hashed into its id."""
        with self._db.read() as conn:
            row = self._version_row(conn, version_id, readable)
            rows = conn.execute(
                sa.select(dataset_files).where(dataset_files.c.version_id == version_id).order_by(dataset_files.c.idx)
            ).all()
        return json.loads(row.header), [_file_out(r) for r in rows]

    def manifest_lines(self, version_id: str, readable: frozenset[str] | None) -> list[bytes]:
        """The canonical manifest bytes (JSON Lines) whose SHA-256 is the version id."""
        with self._db.read() as conn:
            row = self._version_row(conn, version_id, readable)
            rows = conn.execute(
                sa.select(
                    dataset_files.c.idx,
                    dataset_files.c.sop_uid,
                    dataset_files.c.study_uid,
                    dataset_files.c.series_uid,
                    dataset_files.c.patient,
                    dataset_files.c.sha256,
                    dataset_files.c.size,
                    dataset_files.c.split,
                )
                .where(dataset_files.c.version_id == version_id)
                .order_by(dataset_files.c.idx)
            ).all()
        return [canonical_line(json.loads(row.header)), *(file_line(*r) for r in rows)]

    def get_file(self, version_id: str, ref: str, readable: frozenset[str] | None) -> dict[str, Any]:
        """One file of an active version by index or SOP Instance UID; VersionWithdrawn once withdrawn."""
        with self._db.read() as conn:
            row = self._version_row(conn, version_id, readable)
            if row.withdrawn_at is not None:
                raise VersionWithdrawn(f"dataset version {version_id} was withdrawn: {row.withdrawn_reason}")
            q = sa.select(dataset_files).where(dataset_files.c.version_id == version_id)
            # Short ASCII digit strings are indexes; anything else is a SOP Instance UID (they contain dots).
            by_index = ref.isascii() and ref.isdigit() and len(ref) <= 9
            q = q.where(dataset_files.c.idx == int(ref)) if by_index else q.where(dataset_files.c.sop_uid == ref)
            f = conn.execute(q).first()
        if f is None:
            raise NotFound(f"dataset version {version_id} has no file {ref!r}")
        return _file_out(f)

    def frozen_blob_refs(self) -> Iterator[tuple[str, str]]:
        """Every (sha256, resource) a frozen version holds: blobs a clean-up must keep."""
        with self._db.read() as conn:
            for r in conn.execute(sa.select(dataset_files.c.sha256, dataset_files.c.version_id).distinct()):
                yield str(r.sha256), f"dataset/{r.version_id}"

    def remove_instance(self, conn: Connection, sop_uid: str, reason: str) -> list[str]:
        """Delete a source instance from the catalog and withdraw, with `reason`, every version holding it.

        The versions' manifests and ids stay as they were; returns the ids withdrawn now."""
        if not reason.strip():
            raise InvalidInput("removing a frozen source needs a reason")
        if conn.execute(sa.select(instances.c.id).where(instances.c.sop_uid == sop_uid)).first() is None:
            raise NotFound(f"instance {sop_uid} not found")
        holders = [
            str(v)
            for v in conn.execute(
                sa.select(dataset_files.c.version_id)
                .join(dataset_versions, dataset_versions.c.id == dataset_files.c.version_id)
                .where(dataset_files.c.sop_uid == sop_uid, dataset_versions.c.withdrawn_at.is_(None))
                .distinct()
            ).scalars()
        ]
        if holders:
            conn.execute(
                dataset_versions.update()
                .where(dataset_versions.c.id.in_(holders))
                .values(withdrawn_at=utcnow(), withdrawn_reason=f"instance {sop_uid} removed: {reason}"[:1000])
            )
        conn.execute(instances.delete().where(instances.c.sop_uid == sop_uid))
        return sorted(holders)


def _file_out(r: Any) -> dict[str, Any]:
    return {
        "index": r.idx,
        "sop_uid": r.sop_uid,
        "study_uid": r.study_uid,
        "series_uid": r.series_uid,
        "patient": r.patient,
        "sha256": r.sha256,
        "size": int(r.size),
        "split": r.split,
        "labels": {},
    }


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.isprintable() or name != name.strip():
        raise InvalidInput("name must be 1-100 printable characters without surrounding spaces")
    if "/" in name:
        raise InvalidInput("name must not contain '/'")
