"""Reports and their findings: stored once per distinct report, linked to studies by the pseudonymous UID."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.security.envelope import Envelope
from medcloud.store.db import Database, utcnow
from medcloud.store.sites import ensure_site
from medcloud.store.tables import findings, reports, studies

__all__ = ["ReportEntry", "Reports", "report_key"]


def report_key(study_uid: str, patient: str, report_date: date | None, text: str) -> str:
    """The SHA-256 that makes a resent report a duplicate (the site's de-identification is deterministic)."""
    parts = [study_uid, patient, report_date.isoformat() if report_date else "", text]
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


@dataclass
class ReportEntry:
    """One de-identified report to store, with its findings; `Reports.store` fills `status` and `id`."""

    study_uid: str
    patient: str
    text: str
    report_date: date | None
    findings: Sequence[tuple[str, str]]  # distinct (code, status)
    status: Literal["stored", "duplicate", "rejected"] | None = None
    id: int | None = None
    reason: str | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = report_key(self.study_uid, self.patient, self.report_date, self.text)


class Reports:
    """Writes reports inside the caller's write transaction; reads them scoped to projects."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Encryption at rest of the report text (`security.envelope`), set by the hub when it is on.
        self.envelope: Envelope | None = None

    def _seal(self, key: str, text: str) -> str:
        return text if self.envelope is None else self.envelope.seal_text(text, b"report\x00" + key.encode())

    def _open(self, key: str, text: str) -> str:
        return text if self.envelope is None else self.envelope.open_text(text, b"report\x00" + key.encode())

    def store(self, conn: Connection, entries: Sequence[ReportEntry], *, site: str, project: str) -> None:
        """Store new reports and their findings; a resend is a duplicate, a clash with other owners is rejected.

        Rejected: the same report stored by another site or project, or a study already held by another
        site or project, or by another patient pseudonym (the report would link to the wrong images)."""
        keys = sorted({e.key for e in entries})
        known: dict[str, tuple[int, str, str]] = {}
        for i in range(0, len(keys), 500):
            for row in conn.execute(
                sa.select(reports.c.report_key, reports.c.id, reports.c.site, reports.c.project).where(
                    reports.c.report_key.in_(keys[i : i + 500])
                )
            ):
                known[row.report_key] = (int(row.id), row.site, row.project)
        uids = sorted({e.study_uid for e in entries})
        owners: dict[str, tuple[str, str, str]] = {}
        for i in range(0, len(uids), 500):
            for row in conn.execute(
                sa.select(studies.c.study_uid, studies.c.site, studies.c.project, studies.c.patient_pseudonym).where(
                    studies.c.study_uid.in_(uids[i : i + 500])
                )
            ):
                owners[row.study_uid] = (row.site, row.project, row.patient_pseudonym)
        now = utcnow()
        seen: dict[str, ReportEntry] = {}
        for entry in entries:
            prior = known.get(entry.key)
            if prior is not None:
                if prior[1:] == (site, project):
                    entry.status, entry.id = "duplicate", prior[0]
                else:
                    entry.status, entry.reason = "rejected", "this report is held by another site or project"
                continue
            if entry.key in seen:
                entry.status, entry.id = "duplicate", seen[entry.key].id
                continue
            owner = owners.get(entry.study_uid)
            if owner is not None:
                if owner[:2] != (site, project):
                    entry.status, entry.reason = "rejected", "the study belongs to another site or project"
                    continue
                if owner[2] != entry.patient:
                    entry.status, entry.reason = "rejected", "the study's images carry another patient pseudonym"
                    continue
            new_id = conn.execute(
                reports.insert()
                .values(
                    report_key=entry.key,
                    study_uid=entry.study_uid,
                    patient_pseudonym=entry.patient,
                    project=project,
                    site=site,
                    report_date=entry.report_date,
                    text=self._seal(entry.key, entry.text),
                    created_at=now,
                )
                .returning(reports.c.id)
            ).scalar_one()
            entry.status, entry.id = "stored", int(new_id)
            seen[entry.key] = entry
            rows = [
                {"report_id": entry.id, "study_uid": entry.study_uid, "project": project, "code": c, "status": s}
                for c, s in sorted(set(entry.findings))
            ]
            if rows:
                conn.execute(findings.insert(), rows)
        if any(e.status == "stored" for e in entries):
            ensure_site(conn, site)

    def for_study(self, study_uid: str, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        """The reports of one study visible to `projects` (None: all), oldest first, with their findings."""
        q = sa.select(reports).where(reports.c.study_uid == study_uid)
        if projects is not None:
            q = q.where(reports.c.project.in_(projects))
        with self._db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(reports.c.report_date, reports.c.id))]
            per_report: dict[int, list[dict[str, str]]] = {}
            ids = [r["id"] for r in rows]
            if ids:
                for f in conn.execute(
                    sa.select(findings.c.report_id, findings.c.code, findings.c.status)
                    .where(findings.c.report_id.in_(ids))
                    .order_by(findings.c.report_id, findings.c.code, findings.c.status)
                ):
                    per_report.setdefault(int(f.report_id), []).append({"code": f.code, "status": f.status})
        return [
            {
                "id": r["id"],
                "study_uid": r["study_uid"],
                "patient": r["patient_pseudonym"],
                "project": r["project"],
                "site": r["site"],
                "date": r["report_date"].isoformat() if r["report_date"] else None,
                "text": self._open(r["report_key"], r["text"]),
                "findings": per_report.get(r["id"], []),
                "received_at": r["created_at"].isoformat() if r["created_at"] else None,
            }
            for r in rows
        ]
