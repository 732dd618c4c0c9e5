"""Jobs and their artefacts: the SQL behind `medcloud.jobs`.

A job moves queued -> running -> one of succeeded, failed, cancelled, timed_out; a finished job never
changes again (every transition is a conditional UPDATE, so a late report from a backend cannot undo a
cancel). Who may see a job is who may see its dataset version: `projects` is copied from the version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import Conflict, NotFound
from medcloud.store.db import Database, utcnow
from medcloud.store.tables import dataset_files, job_artifacts, jobs

__all__ = ["FINISHED", "JOB_STATES", "Jobs"]

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def _visible(projects_key: str, readable: frozenset[str] | None) -> bool:
    return readable is None or set(projects_key.split(",")) <= readable


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _job_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "dataset": r.dataset_id,
        "projects": r.projects.split(","),
        "backend": r.backend,
        "state": r.state,
        "entrypoint": r.entrypoint,
        "args": json.loads(r.args),
        "code_sha256": r.code_sha256,
        "code_bytes": int(r.code_bytes),
        "num_cpus": r.num_cpus,
        "num_gpus": r.num_gpus,
        "timeout_s": r.timeout_s,
        "submitted_by": r.submitted_by,
        "external_id": r.external_id,
        "exit_code": r.exit_code,
        "message": r.message,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
    }


class Jobs:
    """Rows of the jobs and job_artifacts tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, conn: Connection, row: dict[str, Any]) -> None:
        """Store a new job (state queued) in the caller's write transaction."""
        conn.execute(jobs.insert().values(**row, state="queued", created_at=utcnow()))

    def get(self, job_id: str, readable: frozenset[str] | None = None) -> dict[str, Any]:
        """One job, or NotFound (also when its projects are not all readable)."""
        with self._db.read() as conn:
            r = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if r is None or not _visible(r.projects, readable):
            raise NotFound(f"job {job_id} not found")
        return _job_out(r)

    def list_jobs(
        self, readable: frozenset[str] | None, *, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Visible jobs, newest first."""
        q = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
        if state is not None:
            q = q.where(jobs.c.state == state)
        out: list[dict[str, Any]] = []
        with self._db.read() as conn:
            for r in conn.execute(q):
                if _visible(r.projects, readable):
                    out.append(_job_out(r))
                    if len(out) >= limit:
                        break
        return out

    def unfinished(self, backend: str | None = None) -> list[dict[str, Any]]:
        """Jobs queued or running (those a restarted hub has lost track of)."""
        q = sa.select(jobs).where(jobs.c.state.in_(("queued", "running")))
        if backend is not None:
            q = q.where(jobs.c.backend == backend)
        with self._db.read() as conn:
            return [_job_out(r) for r in conn.execute(q)]

    def start(self, conn: Connection, job_id: str, *, external_id: str | None = None) -> bool:
        """queued -> running; False when the job is no longer queued (cancelled meanwhile)."""
        res = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == "queued")
            .values(state="running", started_at=utcnow(), external_id=external_id)
        )
        return bool(res.rowcount)

    def note_external_id(self, conn: Connection, job_id: str, external_id: str) -> bool:
        """Record the runner's id of a job marked running already; False when it is not running (any more)."""
        res = conn.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.state == "running").values(external_id=external_id)
        )
        return bool(res.rowcount)

    def set_token(self, conn: Connection, job_id: str, token_id: str) -> None:
        """Remember the id of the job's scoped token (revoked when the job ends)."""
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(token_id=token_id))

    def token_of(self, job_id: str) -> str | None:
        with self._db.read() as conn:
            value = conn.execute(sa.select(jobs.c.token_id).where(jobs.c.id == job_id)).scalar()
        return str(value) if value else None

    def finish(
        self, conn: Connection, job_id: str, state: str, *, exit_code: int | None = None, message: str = ""
    ) -> bool:
        """Queued or running -> `state` (a finished state); False when the job had finished already."""
        if state not in FINISHED:
            raise ValueError(f"not a finished state: {state}")
        res = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state.in_(("queued", "running")))
            .values(state=state, finished_at=utcnow(), exit_code=exit_code, message=message[:1000])
        )
        return bool(res.rowcount)

    def add_artifact(self, conn: Connection, job_id: str, name: str, sha256: str, size: int) -> bool:
        """Record an artefact; True if new, False if the same bytes were recorded under this name already."""
        old = conn.execute(
            sa.select(job_artifacts.c.sha256).where(job_artifacts.c.job_id == job_id, job_artifacts.c.name == name)
        ).first()
        if old is not None:
            if old.sha256 != sha256:
                raise Conflict(f"job {job_id} already has an artefact {name!r} with other bytes")
            return False
        conn.execute(
            job_artifacts.insert().values(job_id=job_id, name=name, sha256=sha256, size=size, created_at=utcnow())
        )
        return True

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """A job's artefacts by name."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(job_artifacts).where(job_artifacts.c.job_id == job_id).order_by(job_artifacts.c.name)
            ).all()
        return [
            {"name": r.name, "sha256": r.sha256, "size": int(r.size), "created_at": _iso(r.created_at)} for r in rows
        ]

    def artifact(self, job_id: str, name: str) -> dict[str, Any]:
        """One artefact, or NotFound."""
        for a in self.artifacts(job_id):
            if a["name"] == name:
                return a
        raise NotFound(f"job {job_id} has no artefact {name!r}")

    def dataset_slice(self, version_id: str, start: int, count: int) -> list[tuple[int, str, int]]:
        """(index, sha256, size) of a run of a dataset version's files (a job's bulk read)."""
        return dataset_slice(self._db, version_id, start, count)

    def artifact_blob_refs(self) -> Iterator[tuple[str, str]]:
        """Every (sha256, resource) an artefact holds: blobs a clean-up must keep."""
        with self._db.read() as conn:
            for r in conn.execute(sa.select(job_artifacts.c.sha256, job_artifacts.c.job_id)):
                yield str(r.sha256), f"job/{r.job_id}"


def dataset_slice(db: Database, version_id: str, start: int, count: int) -> list[tuple[int, str, int]]:
    """(index, sha256, size) of files `start` .. `start + count - 1` of a version, in index order."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(dataset_files.c.idx, dataset_files.c.sha256, dataset_files.c.size)
            .where(
                dataset_files.c.version_id == version_id,
                dataset_files.c.idx >= start,
                dataset_files.c.idx < start + count,
            )
            .order_by(dataset_files.c.idx)
        ).all()
    return [(int(r.idx), str(r.sha256), int(r.size)) for r in rows]
