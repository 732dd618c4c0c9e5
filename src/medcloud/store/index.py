"""Indexing: stored blobs become catalog rows (studies, series, instances; images), a batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import Conflict, MedcloudError
from medcloud.formats.records import DicomRecord, ImageRecord
from medcloud.store.db import driver_execute, utcnow
from medcloud.store.sites import ensure_site
from medcloud.store.tables import images, instance_json, instances, series, studies

__all__ = ["IndexEntry", "Indexer", "refresh_counts", "store_instance_json"]

# The statements of the ingest path, built once: building a statement and its cache key cost more CPU
# than SQLite takes to run it, and a group of one instance runs about a dozen of them. The SQL is what
# building them per call gave (an IN list is an expanding parameter either way).
_UIDS: sa.BindParameter[str] = sa.bindparam("uids", expanding=True)
_IDS: sa.BindParameter[int] = sa.bindparam("ids", expanding=True)
_KNOWN_INSTANCES = (
    sa.select(instances.c.sop_uid, instances.c.sha256, studies.c.site, studies.c.project)
    .select_from(instances.join(series).join(studies))
    .where(instances.c.sop_uid.in_(_UIDS))
)
_KNOWN_STUDIES = sa.select(studies.c.id, studies.c.study_uid, studies.c.site, studies.c.project).where(
    studies.c.study_uid.in_(_UIDS)
)
_KNOWN_SERIES = (
    sa.select(series.c.id, series.c.series_uid, studies.c.study_uid)
    .select_from(series.join(studies))
    .where(series.c.series_uid.in_(_UIDS))
)
_INSERT_STUDIES = studies.insert().returning(studies.c.id, studies.c.study_uid, sort_by_parameter_order=True)
_INSERT_SERIES = series.insert().returning(series.c.id, series.c.series_uid, sort_by_parameter_order=True)
_INSERT_INSTANCES = instances.insert()
_RECOUNT_SERIES = (
    series.update()
    .where(series.c.id.in_(_IDS))
    .values(n_instances=sa.select(sa.func.count()).where(instances.c.series_id == series.c.id).scalar_subquery())
)
_STUDIES_OF_SERIES = sa.select(series.c.study_id).where(series.c.id.in_(_IDS))
# Per study and modality: how many series, and their instances (the study's counts and modalities follow).
_STUDY_SERIES = (
    sa.select(
        series.c.study_id,
        series.c.modality,
        sa.func.count().label("n_series"),
        sa.func.coalesce(sa.func.sum(series.c.n_instances), 0).label("n_instances"),
    )
    .where(series.c.study_id.in_(_IDS))
    .group_by(series.c.study_id, series.c.modality)
)
_SET_STUDY_COUNTS = (
    studies.update()
    .where(studies.c.id == sa.bindparam("sid"))
    .values(n_series=sa.bindparam("ns"), n_instances=sa.bindparam("ni"), modalities=sa.bindparam("mods"))
)
_INSERT_JSON: dict[str, Any] = {}


@dataclass
class IndexEntry:
    """One stored blob to index in a batch; `Indexer.batch` fills `status` (or `error`) and `image_id`."""

    record: DicomRecord | ImageRecord
    sha256: str
    size: int
    status: Literal["stored", "duplicate"] | None = None
    image_id: int | None = None
    error: MedcloudError | None = None
    dicom_json: bytes | None = None  # compressed DICOM JSON (`pack_stored`) of a DICOM file, converted at ingest


class Indexer:
    """Writes catalog rows for stored blobs inside the caller's write transaction."""

    def batch(self, conn: Connection, entries: Sequence[IndexEntry], *, site: str, project: str) -> None:
        """Index many stored blobs in the caller's write transaction with a handful of statements.

        Checked for the whole batch at once: existing instances (same bytes and owner: duplicate; else
        conflict), studies and series owned by another site, project or study, repeats inside the batch.
        Each entry ends with `status` or `error` set. Writers are serialized, so the checks cannot race.
        """
        dicom = [e for e in entries if isinstance(e.record, DicomRecord)]
        images_in = [e for e in entries if isinstance(e.record, ImageRecord)]
        now = utcnow()
        if dicom:
            self._index_dicom(conn, dicom, site=site, project=project, now=now)
        if images_in:
            self._index_images(conn, images_in, site=site, project=project, now=now)
        if any(e.status == "stored" for e in entries):
            ensure_site(conn, site)

    @staticmethod
    def _in_chunks(values: Sequence[str], size: int = 500) -> Iterator[list[str]]:
        for i in range(0, len(values), size):
            yield list(values[i : i + size])

    def _index_dicom(
        self, conn: Connection, entries: list[IndexEntry], *, site: str, project: str, now: datetime
    ) -> None:
        # Every entry is judged before anything is written, so a refused entry leaves no row behind
        # (no study or series created for it alone), however the batch is ordered.
        recs = [(e, cast(DicomRecord, e.record)) for e in entries]
        known: dict[str, tuple[str, str, str]] = {}
        for chunk in self._in_chunks(sorted({r.sop_uid for _, r in recs})):
            for sop_uid, sha256, row_site, row_project in driver_execute(conn, _KNOWN_INSTANCES, {"uids": chunk}):
                known[sop_uid] = (sha256, row_site, row_project)
        fresh: list[tuple[IndexEntry, DicomRecord]] = []
        first_in_batch: dict[str, IndexEntry] = {}
        repeats: list[tuple[IndexEntry, IndexEntry]] = []  # (repeat, the first entry with its UID and bytes)
        for entry, rec in recs:
            prior = known.get(rec.sop_uid)
            if prior is not None:
                if prior == (entry.sha256, site, project):
                    entry.status = "duplicate"
                else:
                    entry.error = _uid_in_use("SOP Instance", rec.sop_uid)
                continue
            first = first_in_batch.get(rec.sop_uid)
            if first is not None:
                if first.sha256 == entry.sha256:
                    repeats.append((entry, first))
                else:
                    entry.error = _uid_in_use("SOP Instance", rec.sop_uid)
                continue
            first_in_batch[rec.sop_uid] = entry
            fresh.append((entry, rec))
        self._plan_and_insert(conn, fresh, site=site, project=project, now=now)
        for entry, first in repeats:  # a repeat shares its first's fate: stored once, or refused alike
            if first.error is not None:
                entry.error = first.error
            else:
                entry.status = "duplicate"

    def _plan_and_insert(
        self, conn: Connection, fresh: list[tuple[IndexEntry, DicomRecord]], *, site: str, project: str, now: datetime
    ) -> None:
        """Refuse entries whose study or series is taken, then insert rows for the accepted ones only."""
        if not fresh:
            return
        study_ids: dict[str, int] = {}
        foreign_studies: set[str] = set()
        for chunk in self._in_chunks(sorted({r.study_uid for _, r in fresh})):
            for study_id, study_uid, row_site, row_project in driver_execute(conn, _KNOWN_STUDIES, {"uids": chunk}):
                if (row_site, row_project) == (site, project):
                    study_ids[study_uid] = int(study_id)
                else:
                    foreign_studies.add(study_uid)
        series_ids: dict[str, int] = {}
        series_study: dict[str, str] = {}  # series UID -> the study UID it belongs to (stored or planned)
        for chunk in self._in_chunks(sorted({r.series_uid for _, r in fresh})):
            for series_id, series_uid, of_study in driver_execute(conn, _KNOWN_SERIES, {"uids": chunk}):
                series_ids[series_uid] = int(series_id)
                series_study[series_uid] = of_study
        final: list[tuple[IndexEntry, DicomRecord]] = []
        for entry, rec in fresh:
            if rec.study_uid in foreign_studies:
                entry.error = _uid_in_use("Study Instance", rec.study_uid)
                continue
            if series_study.setdefault(rec.series_uid, rec.study_uid) != rec.study_uid:
                entry.error = _uid_in_use("Series Instance", rec.series_uid)
                continue
            final.append((entry, rec))
        new_studies: dict[str, dict[str, Any]] = {}
        new_series: dict[str, tuple[str, dict[str, Any]]] = {}
        for _, rec in final:
            if rec.study_uid not in study_ids and rec.study_uid not in new_studies:
                new_studies[rec.study_uid] = {
                    "study_uid": rec.study_uid,
                    "project": project,
                    "site": site,
                    "patient_pseudonym": rec.patient_pseudonym,
                    "patient_sex": rec.patient_sex,
                    "patient_age": rec.patient_age,
                    "study_date": rec.study_date,
                    "description": rec.study_description[:1024],
                    "created_at": now,
                }
            if rec.series_uid not in series_ids and rec.series_uid not in new_series:
                new_series[rec.series_uid] = (
                    rec.study_uid,
                    {
                        "series_uid": rec.series_uid,
                        "modality": rec.modality[:16],
                        "body_part": rec.body_part[:64],
                        "description": rec.series_description[:1024],
                        "series_number": rec.series_number,
                    },
                )
        if new_studies:
            for row in conn.execute(_INSERT_STUDIES, list(new_studies.values())):
                study_ids[row.study_uid] = int(row.id)
        if new_series:
            for srow in conn.execute(
                _INSERT_SERIES, [{**row, "study_id": study_ids[study_uid]} for study_uid, row in new_series.values()]
            ):
                series_ids[srow.series_uid] = int(srow.id)
        if not final:
            return
        driver_execute(
            conn,
            _INSERT_INSTANCES,
            [
                {
                    "sop_uid": rec.sop_uid,
                    "series_id": series_ids[rec.series_uid],
                    "sop_class_uid": rec.sop_class_uid,
                    "instance_number": rec.instance_number,
                    "rows": rec.rows,
                    "columns": rec.columns,
                    "frames": rec.frames,
                    "transfer_syntax": rec.transfer_syntax,
                    "sha256": entry.sha256,
                    "size": entry.size,
                    "created_at": now,
                }
                for entry, rec in final
            ],
        )
        refresh_counts(
            conn,
            {series_ids[rec.series_uid] for _, rec in final},
            study_ids={study_ids[rec.study_uid] for _, rec in final},
        )
        store_instance_json(conn, [(e.sha256, e.dicom_json) for e, _ in final if e.dicom_json is not None])
        for entry, _ in final:
            entry.status = "stored"

    def _index_images(
        self, conn: Connection, entries: list[IndexEntry], *, site: str, project: str, now: datetime
    ) -> None:
        known: dict[str, int] = {}
        for chunk in self._in_chunks(sorted({e.sha256 for e in entries})):
            for row in conn.execute(
                sa.select(images.c.id, images.c.sha256).where(
                    images.c.sha256.in_(chunk), images.c.project == project, images.c.site == site
                )
            ):
                known[row.sha256] = int(row.id)
        new_rows: dict[str, dict[str, Any]] = {}
        for entry in entries:
            rec = cast(ImageRecord, entry.record)
            if entry.sha256 in known or entry.sha256 in new_rows:
                continue
            new_rows[entry.sha256] = {
                "sha256": entry.sha256,
                "project": project,
                "site": site,
                "media_type": rec.media_type,
                "filename": rec.filename[:255],
                "width": rec.width,
                "height": rec.height,
                "size": entry.size,
                "created_at": now,
            }
        created: set[str] = set()
        if new_rows:
            for row in conn.execute(
                images.insert().returning(images.c.id, images.c.sha256, sort_by_parameter_order=True),
                list(new_rows.values()),
            ):
                known[row.sha256] = int(row.id)
                created.add(row.sha256)
        for entry in entries:
            entry.image_id = known[entry.sha256]
            if entry.sha256 in created:
                entry.status = "stored"
                created.discard(entry.sha256)  # a repeat later in the same batch is a duplicate
            else:
                entry.status = "duplicate"


def refresh_counts(conn: Connection, series_ids: Iterable[int], *, study_ids: Iterable[int] | None = None) -> None:
    """Recount the denormalised counts of these series and of their studies (after instances came or went).

    Recounted rather than incremented, so a repeat or a concurrent path can never leave them drifting; the
    cost is one indexed count per touched series and study, in the caller's write transaction. A caller
    that knows the series' studies (ingest planned them) passes `study_ids` and saves looking them up."""
    ids = sorted(set(series_ids))
    for i in range(0, len(ids), 500):
        driver_execute(conn, _RECOUNT_SERIES, {"ids": ids[i : i + 500]})
    if study_ids is None:
        found: set[int] = set()
        for i in range(0, len(ids), 500):
            found.update(int(row[0]) for row in driver_execute(conn, _STUDIES_OF_SERIES, {"ids": ids[i : i + 500]}))
        study_ids = found
    refresh_study_counts(conn, study_ids)


def refresh_study_counts(conn: Connection, study_ids: Iterable[int]) -> None:
    """Recount `n_series`, `n_instances` and `modalities` of these studies from their series rows.

    Two statements per 500 studies: their series counted per modality, then each study's three values set."""
    ids = sorted(set(study_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        counts: dict[int, list[int]] = {k: [0, 0] for k in chunk}
        found: dict[int, set[str]] = {k: set() for k in chunk}
        for study_id, modality, n_series, n_instances in driver_execute(conn, _STUDY_SERIES, {"ids": chunk}):
            sid = int(study_id)
            counts[sid][0] += int(n_series)
            counts[sid][1] += int(n_instances)
            if modality:
                found[sid].add(str(modality))
        driver_execute(
            conn,
            _SET_STUDY_COUNTS,
            [
                {"sid": k, "ns": counts[k][0], "ni": counts[k][1], "mods": "\\".join(sorted(found[k]))[:160]}
                for k in chunk
            ],
        )


def store_instance_json(conn: Connection, rows: Sequence[tuple[str, bytes]]) -> None:
    """Keep (sha256, compressed DICOM JSON) pairs; a hash already kept is left as it is (same bytes, same JSON)."""
    if not rows:
        return
    values = [{"sha256": sha, "body": body} for sha, body in dict(rows).items()]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        stmt = _INSERT_JSON.get(dialect)
        if stmt is None:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                stmt = pg_insert(instance_json).on_conflict_do_nothing(index_elements=["sha256"])
            else:
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                stmt = sqlite_insert(instance_json).on_conflict_do_nothing(index_elements=["sha256"])
            _INSERT_JSON[dialect] = stmt
        driver_execute(conn, stmt, values)
    else:  # pragma: no cover - the catalog runs on SQLite or PostgreSQL
        held = set(conn.scalars(sa.select(instance_json.c.sha256).where(instance_json.c.sha256.in_(list(dict(rows))))))
        fresh = [v for v in values if v["sha256"] not in held]
        if fresh:
            conn.execute(instance_json.insert(), fresh)


def _uid_in_use(kind: str, uid: str) -> Conflict:
    """The refusal of a UID already taken: the same words whoever holds it (nothing of other projects)."""
    return Conflict(f"{kind} UID {uid} is already in use in the catalog; the file was not stored (give it new UIDs)")
