"""Catalog searches: studies, instances (DICOM) and images (everything else), always scoped to projects.

`projects=None` means every project (admin metadata); any other value limits rows to those projects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa

from medcloud.errors import NotFound
from medcloud.store.cohorts import age_condition
from medcloud.store.db import Database
from medcloud.store.tables import findings, images, instances, series, studies

__all__ = ["MAX_PAGE", "Filters", "FindingFilter", "Queries"]

MAX_PAGE = 1000
# What every instance listing returns about the instance itself (catalog search and DICOMweb QIDO alike).
INSTANCE_COLUMNS = (
    instances.c.sop_uid,
    instances.c.sop_class_uid,
    instances.c.instance_number,
    instances.c.rows,
    instances.c.columns,
    instances.c.frames,
    instances.c.transfer_syntax,
    instances.c.sha256,
    instances.c.size,
)


@dataclass(frozen=True)
class FindingFilter:
    """A study has (or, negated, has not) a report finding with this code and status."""

    code: str
    status: str
    negate: bool = False


@dataclass(frozen=True)
class Filters:
    """Catalog query filters; None means 'any'."""

    site: str | None = None
    project: str | None = None
    modality: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    patient: str | None = None
    text: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    media_type: str | None = None
    body_part: str | None = None  # the series' Body Part Examined, case-insensitive
    sex: str | None = None  # Patient's Sex: M, F or O
    age_min: int | None = None  # Patient's Age in whole years, inclusive (as cohort terms count it)
    age_max: int | None = None
    # Every one must hold (AND); findings count only from reports of the study's own project.
    findings: tuple[FindingFilter, ...] = ()


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Queries:
    """Read-only searches over the catalog."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def _study_filters(q: sa.Select[Any], f: Filters, projects: frozenset[str] | None) -> sa.Select[Any]:
        """Filters on the study's own columns, shared by study and instance queries."""
        if projects is not None:
            q = q.where(studies.c.project.in_(projects))
        if f.project:
            q = q.where(studies.c.project == f.project)
        if f.site:
            q = q.where(studies.c.site == f.site)
        if f.patient:
            q = q.where(studies.c.patient_pseudonym == f.patient)
        if f.date_from:
            q = q.where(studies.c.study_date >= f.date_from)
        if f.date_to:
            q = q.where(studies.c.study_date <= f.date_to)
        if f.study_uid:
            q = q.where(studies.c.study_uid == f.study_uid)
        if f.sex:
            q = q.where(sa.func.upper(studies.c.patient_sex) == f.sex.upper())
        if f.age_min is not None or f.age_max is not None:
            band = {k: v for k, v in (("age_min", f.age_min), ("age_max", f.age_max)) if v is not None}
            q = q.where(age_condition(band))
        for ff in f.findings:
            having = (
                sa.exists()
                .where(
                    findings.c.code == ff.code,
                    findings.c.status == ff.status,
                    findings.c.study_uid == studies.c.study_uid,
                    findings.c.project == studies.c.project,
                )
                .correlate(studies)
            )
            q = q.where(sa.not_(having) if ff.negate else having)
        return q

    @classmethod
    def _study_where(cls, q: sa.Select[Any], f: Filters, projects: frozenset[str] | None) -> sa.Select[Any]:
        q = cls._study_filters(q, f, projects)
        if f.modality or f.text or f.series_uid or f.body_part:
            sub = sa.select(series.c.study_id)
            if f.modality:
                sub = sub.where(series.c.modality == f.modality.upper())
            if f.body_part:
                sub = sub.where(sa.func.upper(series.c.body_part) == f.body_part.upper())
            if f.series_uid:
                sub = sub.where(series.c.series_uid == f.series_uid)
            if f.text:
                like = _like(f.text)
                text_sub = sub.where(series.c.description.ilike(like, escape="\\"))
                if f.modality or f.series_uid or f.body_part:
                    q = q.where(studies.c.id.in_(sub))
                    q = q.where(sa.or_(studies.c.description.ilike(like, escape="\\"), studies.c.id.in_(text_sub)))
                else:
                    q = q.where(sa.or_(studies.c.description.ilike(like, escape="\\"), studies.c.id.in_(text_sub)))
            else:
                q = q.where(studies.c.id.in_(sub))
        return q

    def find_studies(
        self, f: Filters, projects: frozenset[str] | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of studies matching `f` (newest first) and the total count."""
        base = self._study_where(sa.select(studies), f, projects)
        count_q = self._study_where(sa.select(sa.func.count()).select_from(studies), f, projects)
        page_q = base.order_by(studies.c.study_date.desc(), studies.c.id).limit(min(limit, MAX_PAGE)).offset(offset)
        with self._db.read() as conn:
            total = int(conn.execute(count_q).scalar_one())
            rows = [dict(r._mapping) for r in conn.execute(page_q)]
        return [self._study_out(r) for r in rows], total

    @staticmethod
    def _study_out(r: dict[str, Any]) -> dict[str, Any]:
        # Counts and modalities are denormalised onto the study row by store.index (migration 0005).
        return {
            "study_uid": r["study_uid"],
            "project": r["project"],
            "site": r["site"],
            "patient_pseudonym": r["patient_pseudonym"],
            "patient_sex": r["patient_sex"],
            "patient_age": r["patient_age"],
            "study_date": r["study_date"].isoformat() if r["study_date"] else None,
            "description": r["description"],
            "modalities": [m for m in r["modalities"].split("\\") if m],
            "series_count": int(r["n_series"]),
            "instance_count": int(r["n_instances"]),
        }

    def get_study(self, study_uid: str, projects: frozenset[str] | None) -> dict[str, Any]:
        """One study with its series, or NotFound (also when outside `projects`)."""
        items, _ = self.find_studies(Filters(study_uid=study_uid), projects, limit=1)
        if not items:
            raise NotFound(f"study {study_uid} not found")
        study = items[0]
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(
                    series.c.series_uid,
                    series.c.modality,
                    series.c.body_part,
                    series.c.description,
                    series.c.series_number,
                    series.c.n_instances.label("instance_count"),
                )
                .select_from(series.join(studies))
                .where(studies.c.study_uid == study_uid)
                .order_by(series.c.series_number, series.c.id)
            )
            study["series"] = [dict(r._mapping) for r in rows]
        return study

    def _instance_query(self, f: Filters, projects: frozenset[str] | None) -> sa.Select[Any]:
        q: sa.Select[Any] = sa.select(
            *INSTANCE_COLUMNS,
            instances.c.created_at,
            series.c.series_uid,
            series.c.modality,
            series.c.body_part,
            series.c.description.label("series_description"),
            studies.c.study_uid,
            studies.c.study_date,
            studies.c.description.label("study_description"),
            studies.c.patient_pseudonym,
            studies.c.site,
            studies.c.project,
        ).select_from(instances.join(series).join(studies))
        q = self._study_filters(q, f, projects)
        if f.series_uid:
            q = q.where(series.c.series_uid == f.series_uid)
        if f.modality:
            q = q.where(series.c.modality == f.modality.upper())
        if f.body_part:
            q = q.where(sa.func.upper(series.c.body_part) == f.body_part.upper())
        if f.text:
            like = _like(f.text)
            q = q.where(
                sa.or_(studies.c.description.ilike(like, escape="\\"), series.c.description.ilike(like, escape="\\"))
            )
        return q

    @staticmethod
    def _instance_out(r: Any) -> dict[str, Any]:
        d = dict(r._mapping)
        d["study_date"] = d["study_date"].isoformat() if d["study_date"] else None
        d["created_at"] = d["created_at"].isoformat() if d["created_at"] else None
        return d

    def find_instances(
        self, f: Filters, projects: frozenset[str] | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of DICOM instances matching `f` and the total count."""
        q = self._instance_query(f, projects)
        with self._db.read() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one())
            rows = conn.execute(
                q.order_by(studies.c.id, series.c.series_number, instances.c.instance_number, instances.c.id)
                .limit(min(limit, MAX_PAGE))
                .offset(offset)
            )
            return [self._instance_out(r) for r in rows], total

    def get_instance(self, sop_uid: str, projects: frozenset[str] | None) -> dict[str, Any]:
        """One instance with its series and study fields, or NotFound."""
        q = self._instance_query(Filters(), projects).where(instances.c.sop_uid == sop_uid)
        with self._db.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            raise NotFound(f"instance {sop_uid} not found")
        return self._instance_out(r)

    def find_images(
        self, f: Filters, projects: frozenset[str] | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of non-DICOM images matching `f` and the total count."""
        q = sa.select(images)
        if projects is not None:
            q = q.where(images.c.project.in_(projects))
        if f.project:
            q = q.where(images.c.project == f.project)
        if f.site:
            q = q.where(images.c.site == f.site)
        if f.media_type:
            q = q.where(images.c.media_type == f.media_type)
        if f.text:
            q = q.where(images.c.filename.ilike(_like(f.text), escape="\\"))
        if f.date_from:
            q = q.where(images.c.created_at >= datetime.combine(f.date_from, datetime.min.time(), timezone.utc))
        if f.date_to:
            q = q.where(images.c.created_at <= datetime.combine(f.date_to, datetime.max.time(), timezone.utc))
        with self._db.read() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one())
            rows = conn.execute(q.order_by(images.c.id).limit(min(limit, MAX_PAGE)).offset(offset))
            return [self._image_out(r) for r in rows], total

    @staticmethod
    def _image_out(r: Any) -> dict[str, Any]:
        d = dict(r._mapping)
        d["created_at"] = d["created_at"].isoformat() if d["created_at"] else None
        return d

    def get_image(self, image_id: int, projects: frozenset[str] | None) -> dict[str, Any]:
        """One image, or NotFound (also when outside `projects`)."""
        q = sa.select(images).where(images.c.id == image_id)
        if projects is not None:
            q = q.where(images.c.project.in_(projects))
        with self._db.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            raise NotFound(f"image {image_id} not found")
        return self._image_out(r)

    def blob_refs(self) -> Iterator[tuple[str, str]]:
        """Every (sha256, resource) the catalog points at: instances, then images."""
        with self._db.read() as conn:
            for row in conn.execute(sa.select(instances.c.sha256, instances.c.sop_uid).order_by(instances.c.id)):
                yield str(row.sha256), f"instance/{row.sop_uid}"
            for row in conn.execute(sa.select(images.c.sha256, images.c.id).order_by(images.c.id)):
                yield str(row.sha256), f"image/{row.id}"
