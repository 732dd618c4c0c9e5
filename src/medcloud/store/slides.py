"""Which stored files are whole-slide images: Aperio SVS images and DICOM VL Whole Slide Microscopy
series, scoped to projects (`None`: every project, as in `store.queries`).

An SVS is an `images` row of type image/tiff whose name ends in `.svs` (de-identification keeps that
extension, `deid.engine`); a DICOM WSI is a series with instances of the VL WSM SOP class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from medcloud.errors import NotFound
from medcloud.store.db import Database
from medcloud.store.tables import images, instances, series, studies

__all__ = ["WSM_SOP_CLASS", "SlideRow", "SlideRows"]

WSM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True)
class SlideRow:
    kind: str  # "svs" | "dicom-wsi"
    key: str  # image id | series UID
    project: str
    site: str
    study_uid: str | None
    name: str
    blobs: tuple[str, ...]  # SHA-256 of the file, or of each instance (largest image first)


def _svs_where(q: sa.Select[Any], projects: frozenset[str] | None, project: str | None) -> sa.Select[Any]:
    q = q.where(images.c.media_type == "image/tiff", sa.func.lower(images.c.filename).like("%.svs"))
    if projects is not None:
        q = q.where(images.c.project.in_(projects))
    if project:
        q = q.where(images.c.project == project)
    return q


def _wsi_where(q: sa.Select[Any], projects: frozenset[str] | None, project: str | None) -> sa.Select[Any]:
    q = q.where(series.c.id.in_(sa.select(instances.c.series_id).where(instances.c.sop_class_uid == WSM_SOP_CLASS)))
    if projects is not None:
        q = q.where(studies.c.project.in_(projects))
    if project:
        q = q.where(studies.c.project == project)
    return q


class SlideRows:
    """Read-only slide lookups over the catalog."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def find(
        self, projects: frozenset[str] | None, project: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[SlideRow], int]:
        """One page of slides (SVS images by id, then DICOM WSI series by id) and the total count."""
        svs_q = _svs_where(sa.select(images), projects, project)
        wsi_base = sa.select(series.c.id, series.c.series_uid).select_from(series.join(studies))
        wsi_q = _wsi_where(wsi_base, projects, project)
        with self._db.read() as conn:
            n_svs = int(conn.execute(sa.select(sa.func.count()).select_from(svs_q.subquery())).scalar_one())
            n_wsi = int(conn.execute(sa.select(sa.func.count()).select_from(wsi_q.subquery())).scalar_one())
            rows: list[SlideRow] = []
            if offset < n_svs:
                for r in conn.execute(svs_q.order_by(images.c.id).limit(limit).offset(offset)):
                    rows.append(self._svs_row(r))
            left = limit - len(rows)
            if left > 0:
                uids = [
                    str(r.series_uid)
                    for r in conn.execute(wsi_q.order_by(series.c.id).limit(left).offset(max(0, offset - n_svs)))
                ]
                rows += [self._series(conn, uid, projects) for uid in uids]
        return rows, n_svs + n_wsi

    def get(self, kind: str, key: str, projects: frozenset[str] | None) -> SlideRow:
        """One slide, or NotFound (also when outside `projects`)."""
        with self._db.read() as conn:
            if kind == "svs":
                r = conn.execute(_svs_where(sa.select(images), projects, None).where(images.c.id == int(key))).first()
                if r is None:
                    raise NotFound(f"slide svs-{key} not found")
                return self._svs_row(r)
            return self._series(conn, key, projects)

    @staticmethod
    def _svs_row(r: Any) -> SlideRow:
        return SlideRow("svs", str(r.id), r.project, r.site, None, r.filename, (r.sha256,))

    @staticmethod
    def _series(conn: sa.Connection, series_uid: str, projects: frozenset[str] | None) -> SlideRow:
        q = (
            sa.select(
                instances.c.sha256,
                instances.c.rows,
                instances.c.columns,
                instances.c.frames,
                series.c.description,
                studies.c.study_uid,
                studies.c.project,
                studies.c.site,
            )
            .select_from(instances.join(series).join(studies))
            .where(series.c.series_uid == series_uid, instances.c.sop_class_uid == WSM_SOP_CLASS)
        )
        if projects is not None:
            q = q.where(studies.c.project.in_(projects))
        rows = list(conn.execute(q))
        if not rows:
            raise NotFound(f"slide dcm-{series_uid} not found")
        # Largest level first (frames x tile area), so the order of the blobs never depends on insert order.
        rows.sort(key=lambda r: (-(r.frames or 1) * (r.rows or 0) * (r.columns or 0), r.sha256))
        first = rows[0]
        return SlideRow(
            "dicom-wsi", series_uid, first.project, first.site, first.study_uid, first.description or "",
            tuple(r.sha256 for r in rows),
        )  # fmt: skip
