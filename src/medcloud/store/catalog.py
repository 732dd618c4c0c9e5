"""The metadata catalog: one object that owns the database (SQLite embedded, PostgreSQL at scale).

Every SQL statement of the platform lives here. Writes run in short, serialized transactions so the
audit chain stays linear; reads run concurrently.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib import resources
from typing import Any, Literal, cast

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's busy handler alone serializes writers there
    fcntl = None  # type: ignore[assignment]
from sqlalchemy.engine import Connection, Engine

from medcloud.errors import Conflict, MedcloudError, NotFound
from medcloud.formats.records import DicomRecord, ImageRecord
from medcloud.security.audit import GENESIS, ChainReport, canonical_detail, chain_hash, verify_chain
from medcloud.store.tables import audit_events, images, instances, series, sites, studies, tokens

MAX_PAGE = 1000
_PG_AUDIT_LOCK = 0x6D6564636C6F7564  # "medcloud": one advisory lock serializes the audit chain


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IndexEntry:
    """One stored blob to index in a batch; `index_batch` fills `status` (or `error`) and `image_id`."""

    record: DicomRecord | ImageRecord
    sha256: str
    size: int
    status: Literal["stored", "duplicate"] | None = None
    image_id: int | None = None
    error: MedcloudError | None = None


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


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class AuditChain:
    """Appends events to the hash chain inside one write transaction (which serializes writers)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        head = conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
        ).first()
        self._seq, self._prev = (int(head.seq), str(head.hash)) if head else (0, GENESIS)

    def append(
        self,
        *,
        subject: str,
        action: str,
        resource: str,
        outcome: str,
        client: str = "",
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        row = self._link(
            {"subject": subject, "action": action, "resource": resource, "outcome": outcome,
             "client": client, "detail": detail}
        )  # fmt: skip
        self._conn.execute(audit_events.insert().values(**row))
        return row

    def _link(self, ev: dict[str, Any]) -> dict[str, Any]:
        """The next row of the chain for one event (fields truncated to their columns)."""
        row: dict[str, Any] = {
            "seq": self._seq + 1,
            "ts": utcnow().isoformat(timespec="microseconds"),
            "subject": str(ev["subject"])[:200],
            "action": str(ev["action"])[:100],
            "resource": str(ev["resource"])[:300],
            "outcome": str(ev["outcome"])[:100],
            "client": str(ev.get("client", ""))[:100],
            "detail": canonical_detail(ev.get("detail")),
        }
        row["prev_hash"] = self._prev
        row["hash"] = chain_hash(self._prev, row)
        self._seq, self._prev = row["seq"], row["hash"]
        return row

    def append_many(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events in order with one multi-row insert (each still chained to the one before)."""
        rows = [self._link(ev) for ev in events]
        if rows:
            self._conn.execute(audit_events.insert(), rows)


class Catalog:
    """Catalog over a SQLAlchemy URL. Call `migrate()` once before use."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.dialect = sa.make_url(url).get_backend_name()
        self._write_lock = threading.Lock()
        self._writer_lock_fd: int | None = None
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            self.engine = sa.create_engine(url, **kwargs)
            self.write_engine = sa.create_engine(url, **kwargs)
            self._sqlite_hooks(self.engine, immediate=False, synchronous=sqlite_synchronous)
            self._sqlite_hooks(self.write_engine, immediate=True, synchronous=sqlite_synchronous)
            database = sa.make_url(url).database
            if database and database != ":memory:" and fcntl is not None:
                # Writers of several processes queue on a kernel lock, which wakes the next one the moment
                # it is released; SQLite's own busy handler polls with sleeps of up to 100 ms instead.
                self._writer_lock_fd = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.engine = sa.create_engine(url, **kwargs)
            self.write_engine = self.engine

    @staticmethod
    def _sqlite_hooks(engine: Engine, *, immediate: bool, synchronous: str) -> None:
        # pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the real one:
        # writers take the database lock up front (BEGIN IMMEDIATE) instead of failing at commit.
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    # -- lifecycle ---------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        script_location = str(resources.files("medcloud.store") / "migrations")
        cfg = Config()
        cfg.set_main_option("script_location", script_location)
        with self._write_lock, self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK + 1})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        if self._writer_lock_fd is not None:
            os.close(self._writer_lock_fd)
            self._writer_lock_fd = None
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A serialized write transaction (commits on success, rolls back on error)."""
        with self._write_lock, self._process_lock(), self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK})")
            yield conn

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        fd = self._writer_lock_fd
        if fd is None or fcntl is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- audit -------------------------------------------------------------------------------------
    def audit_chain(self, conn: Connection) -> AuditChain:
        """An appender for many events in one write transaction; reads the chain head once."""
        return AuditChain(conn)

    def append_audit(
        self,
        conn: Connection,
        *,
        subject: str,
        action: str,
        resource: str,
        outcome: str,
        client: str = "",
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one event inside the caller's write transaction, linked to the current head."""
        return AuditChain(conn).append(
            subject=subject, action=action, resource=resource, outcome=outcome, client=client, detail=detail
        )

    def record_event(self, **fields: Any) -> dict[str, Any]:
        """Append one audit event in its own transaction."""
        with self.write() as conn:
            return self.append_audit(conn, **fields)

    def audit_page(self, after_seq: int = 0, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(audit_events).where(audit_events.c.seq > after_seq)
        if action:
            q = q.where(audit_events.c.action == action)
        q = q.order_by(audit_events.c.seq).limit(min(limit, MAX_PAGE))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def audit_head_seq(self) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq), 0))).scalar_one())

    def blob_refs(self) -> Iterator[tuple[str, str]]:
        """Every (sha256, resource) the catalog points at: instances, then images."""
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(instances.c.sha256, instances.c.sop_uid).order_by(instances.c.id)):
                yield str(row.sha256), f"instance/{row.sop_uid}"
            for row in conn.execute(sa.select(images.c.sha256, images.c.id).order_by(images.c.id)):
                yield str(row.sha256), f"image/{row.id}"

    def verify_audit(self, batch: int = 5000) -> ChainReport:
        def rows() -> Iterator[dict[str, Any]]:
            last = 0
            while True:
                with self.read() as conn:
                    page = [
                        dict(r._mapping)
                        for r in conn.execute(
                            sa.select(audit_events)
                            .where(audit_events.c.seq > last)
                            .order_by(audit_events.c.seq)
                            .limit(batch)
                        )
                    ]
                if not page:
                    return
                yield from page
                last = int(page[-1]["seq"])

        return verify_chain(rows())

    # -- ingest ------------------------------------------------------------------------------------
    def index_batch(self, conn: Connection, entries: Sequence[IndexEntry], *, site: str, project: str) -> None:
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
            self._ensure_site(conn, site)

    @staticmethod
    def _in_chunks(values: Sequence[str], size: int = 500) -> Iterator[list[str]]:
        for i in range(0, len(values), size):
            yield list(values[i : i + size])

    def _index_dicom(
        self, conn: Connection, entries: list[IndexEntry], *, site: str, project: str, now: datetime
    ) -> None:
        recs = [(e, cast(DicomRecord, e.record)) for e in entries]
        known: dict[str, tuple[str, str, str]] = {}
        for chunk in self._in_chunks(sorted({r.sop_uid for _, r in recs})):
            for row in conn.execute(
                sa.select(instances.c.sop_uid, instances.c.sha256, studies.c.site, studies.c.project)
                .select_from(instances.join(series).join(studies))
                .where(instances.c.sop_uid.in_(chunk))
            ):
                known[row.sop_uid] = (row.sha256, row.site, row.project)
        fresh: list[tuple[IndexEntry, DicomRecord]] = []
        for entry, rec in recs:
            prior = known.get(rec.sop_uid)
            if prior is not None:
                if prior == (entry.sha256, site, project):
                    entry.status = "duplicate"
                else:
                    entry.error = Conflict(
                        f"SOP Instance UID {rec.sop_uid} is already stored with different content or owner"
                    )
                continue
            known[rec.sop_uid] = (entry.sha256, site, project)
            fresh.append((entry, rec))
        if not fresh:
            return
        study_ids: dict[str, int] = {}
        for chunk in self._in_chunks(sorted({r.study_uid for _, r in fresh})):
            for row in conn.execute(
                sa.select(studies.c.id, studies.c.study_uid, studies.c.site, studies.c.project).where(
                    studies.c.study_uid.in_(chunk)
                )
            ):
                if (row.site, row.project) == (site, project):
                    study_ids[row.study_uid] = int(row.id)
                else:
                    study_ids[row.study_uid] = -1  # owned by another site or project
        kept: list[tuple[IndexEntry, DicomRecord]] = []
        new_studies: dict[str, dict[str, Any]] = {}
        for entry, rec in fresh:
            if study_ids.get(rec.study_uid) == -1:
                entry.error = Conflict(f"study {rec.study_uid} belongs to another site or project")
                continue
            kept.append((entry, rec))
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
        if new_studies:
            for row in conn.execute(
                studies.insert().returning(studies.c.id, studies.c.study_uid, sort_by_parameter_order=True),
                list(new_studies.values()),
            ):
                study_ids[row.study_uid] = int(row.id)
        series_ids: dict[str, tuple[int, int]] = {}
        for chunk in self._in_chunks(sorted({r.series_uid for _, r in kept})):
            for srow in conn.execute(
                sa.select(series.c.id, series.c.series_uid, series.c.study_id).where(series.c.series_uid.in_(chunk))
            ):
                series_ids[srow.series_uid] = (int(srow.id), int(srow.study_id))
        new_series: dict[str, dict[str, Any]] = {}
        final: list[tuple[IndexEntry, DicomRecord]] = []
        for entry, rec in kept:
            study_id = study_ids[rec.study_uid]
            known_series = series_ids.get(rec.series_uid)
            planned = new_series.get(rec.series_uid)
            if (known_series and known_series[1] != study_id) or (planned and planned["study_id"] != study_id):
                entry.error = Conflict(f"series {rec.series_uid} belongs to another study")
                continue
            final.append((entry, rec))
            if known_series is None and planned is None:
                new_series[rec.series_uid] = {
                    "series_uid": rec.series_uid,
                    "study_id": study_id,
                    "modality": rec.modality[:16],
                    "body_part": rec.body_part[:64],
                    "description": rec.series_description[:1024],
                    "series_number": rec.series_number,
                }
        if new_series:
            for srow in conn.execute(
                series.insert().returning(
                    series.c.id, series.c.series_uid, series.c.study_id, sort_by_parameter_order=True
                ),
                list(new_series.values()),
            ):
                series_ids[srow.series_uid] = (int(srow.id), int(srow.study_id))
        if not final:
            return
        conn.execute(
            instances.insert(),
            [
                {
                    "sop_uid": rec.sop_uid,
                    "series_id": series_ids[rec.series_uid][0],
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

    def _ensure_site(self, conn: Connection, site: str) -> None:
        if conn.execute(sa.select(sites.c.name).where(sites.c.name == site)).first() is None:
            conn.execute(sites.insert().values(name=site, display_name=site, created_at=utcnow()))

    # -- sites -------------------------------------------------------------------------------------
    def upsert_site(
        self,
        conn: Connection,
        name: str,
        *,
        display_name: str | None = None,
        target_cases: int | None = None,
        target_images: int | None = None,
    ) -> None:
        self._ensure_site(conn, name)
        values: dict[str, Any] = {}
        if display_name is not None:
            values["display_name"] = display_name
        if target_cases is not None:
            values["target_cases"] = target_cases
        if target_images is not None:
            values["target_images"] = target_images
        if values:
            conn.execute(sites.update().where(sites.c.name == name).values(**values))

    def site_progress(self, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        """Cases (distinct patients) and images per site, against the site's targets."""
        st = studies
        case_q = sa.select(st.c.site, sa.func.count(sa.distinct(st.c.patient_pseudonym)).label("n")).group_by(st.c.site)
        inst_q = (
            sa.select(st.c.site, sa.func.count(instances.c.id).label("n"))
            .select_from(instances.join(series).join(st))
            .group_by(st.c.site)
        )
        img_q = sa.select(images.c.site, sa.func.count(images.c.id).label("n")).group_by(images.c.site)
        if projects is not None:
            case_q = case_q.where(st.c.project.in_(projects))
            inst_q = inst_q.where(st.c.project.in_(projects))
            img_q = img_q.where(images.c.project.in_(projects))
        with self.read() as conn:
            cases = {r.site: int(r.n) for r in conn.execute(case_q)}
            inst = {r.site: int(r.n) for r in conn.execute(inst_q)}
            imgs = {r.site: int(r.n) for r in conn.execute(img_q)}
            rows = list(conn.execute(sa.select(sites).order_by(sites.c.name)))
        out = []
        for r in rows:
            n_images = inst.get(r.name, 0) + imgs.get(r.name, 0)
            n_cases = cases.get(r.name, 0)
            out.append(
                {
                    "site": r.name,
                    "display_name": r.display_name,
                    "cases": n_cases,
                    "dicom_instances": inst.get(r.name, 0),
                    "other_images": imgs.get(r.name, 0),
                    "images": n_images,
                    "target_cases": r.target_cases,
                    "target_images": r.target_images,
                    "cases_progress": round(n_cases / r.target_cases, 4) if r.target_cases else None,
                    "images_progress": round(n_images / r.target_images, 4) if r.target_images else None,
                }
            )
        return out

    # -- queries -----------------------------------------------------------------------------------
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
        return q

    @classmethod
    def _study_where(cls, q: sa.Select[Any], f: Filters, projects: frozenset[str] | None) -> sa.Select[Any]:
        q = cls._study_filters(q, f, projects)
        if f.modality or f.text or f.series_uid:
            sub = sa.select(series.c.study_id)
            if f.modality:
                sub = sub.where(series.c.modality == f.modality.upper())
            if f.series_uid:
                sub = sub.where(series.c.series_uid == f.series_uid)
            if f.text:
                like = _like(f.text)
                text_sub = sub.where(series.c.description.ilike(like, escape="\\"))
                if f.modality or f.series_uid:
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
        base = self._study_where(sa.select(studies), f, projects)
        count_q = self._study_where(sa.select(sa.func.count()).select_from(studies), f, projects)
        page_q = base.order_by(studies.c.study_date.desc(), studies.c.id).limit(min(limit, MAX_PAGE)).offset(offset)
        with self.read() as conn:
            total = int(conn.execute(count_q).scalar_one())
            rows = [dict(r._mapping) for r in conn.execute(page_q)]
            ids = [r["id"] for r in rows]
            per_series: dict[int, list[Any]] = {}
            if ids:
                for s in conn.execute(
                    sa.select(series.c.study_id, series.c.modality, sa.func.count(instances.c.id).label("n"))
                    .select_from(series.outerjoin(instances))
                    .where(series.c.study_id.in_(ids))
                    .group_by(series.c.id, series.c.study_id, series.c.modality)
                ):
                    per_series.setdefault(s.study_id, []).append(s)
        return [self._study_out(r, per_series.get(r["id"], [])) for r in rows], total

    @staticmethod
    def _study_out(r: dict[str, Any], ser: Sequence[Any]) -> dict[str, Any]:
        return {
            "study_uid": r["study_uid"],
            "project": r["project"],
            "site": r["site"],
            "patient_pseudonym": r["patient_pseudonym"],
            "patient_sex": r["patient_sex"],
            "patient_age": r["patient_age"],
            "study_date": r["study_date"].isoformat() if r["study_date"] else None,
            "description": r["description"],
            "modalities": sorted({s.modality for s in ser if s.modality}),
            "series_count": len(ser),
            "instance_count": sum(int(s.n) for s in ser),
        }

    def get_study(self, study_uid: str, projects: frozenset[str] | None) -> dict[str, Any]:
        items, _ = self.find_studies(Filters(study_uid=study_uid), projects, limit=1)
        if not items:
            raise NotFound(f"study {study_uid} not found")
        study = items[0]
        with self.read() as conn:
            rows = conn.execute(
                sa.select(
                    series.c.series_uid,
                    series.c.modality,
                    series.c.body_part,
                    series.c.description,
                    series.c.series_number,
                    sa.func.count(instances.c.id).label("instance_count"),
                )
                .select_from(series.join(studies).outerjoin(instances))
                .where(studies.c.study_uid == study_uid)
                .group_by(series.c.id)
                .order_by(series.c.series_number, series.c.id)
            )
            study["series"] = [dict(r._mapping) for r in rows]
        return study

    def _instance_query(self, f: Filters, projects: frozenset[str] | None) -> sa.Select[Any]:
        q: sa.Select[Any] = sa.select(
            instances.c.sop_uid,
            instances.c.sop_class_uid,
            instances.c.instance_number,
            instances.c.rows,
            instances.c.columns,
            instances.c.frames,
            instances.c.transfer_syntax,
            instances.c.sha256,
            instances.c.size,
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
        q = self._instance_query(f, projects)
        with self.read() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one())
            rows = conn.execute(
                q.order_by(studies.c.id, series.c.series_number, instances.c.instance_number, instances.c.id)
                .limit(min(limit, MAX_PAGE))
                .offset(offset)
            )
            return [self._instance_out(r) for r in rows], total

    def get_instance(self, sop_uid: str, projects: frozenset[str] | None) -> dict[str, Any]:
        q = self._instance_query(Filters(), projects).where(instances.c.sop_uid == sop_uid)
        with self.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            raise NotFound(f"instance {sop_uid} not found")
        return self._instance_out(r)

    def find_images(
        self, f: Filters, projects: frozenset[str] | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
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
        with self.read() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one())
            rows = conn.execute(q.order_by(images.c.id).limit(min(limit, MAX_PAGE)).offset(offset))
            return [self._image_out(r) for r in rows], total

    @staticmethod
    def _image_out(r: Any) -> dict[str, Any]:
        d = dict(r._mapping)
        d["created_at"] = d["created_at"].isoformat() if d["created_at"] else None
        return d

    def get_image(self, image_id: int, projects: frozenset[str] | None) -> dict[str, Any]:
        q = sa.select(images).where(images.c.id == image_id)
        if projects is not None:
            q = q.where(images.c.project.in_(projects))
        with self.read() as conn:
            r = conn.execute(q).first()
        if r is None:
            raise NotFound(f"image {image_id} not found")
        return self._image_out(r)

    # -- tokens ------------------------------------------------------------------------------------
    def insert_token(self, conn: Connection, row: dict[str, Any]) -> None:
        conn.execute(tokens.insert().values(**row))

    def get_token(self, token_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            r = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
        return dict(r._mapping) if r else None

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            return [
                {k: v for k, v in r._mapping.items() if k != "secret_sha256"}
                for r in conn.execute(sa.select(tokens).order_by(tokens.c.created_at))
            ]

    def revoke_token(self, conn: Connection, token_id: str) -> bool:
        res = conn.execute(
            tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        return bool(res.rowcount)
