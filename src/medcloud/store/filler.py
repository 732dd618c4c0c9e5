"""A catalog filler for benchmarks and tests: synthetic studies, series, instances, reports and findings.

Every row is SYNTHETIC metadata (no image behind it unless `blob_of` names stored blobs, every description
and report says SYNTHETIC); the rows exist to measure queries, cohorts and freezes at scale without
ingesting a million files. Two layouts:

- `fill_synthetic`: a uniform grid (every study alike), for tests that need exact counts;
- `fill_realistic`: a seeded, realistic spread (`filler_layout.plan`): patients with several studies,
  studies with several series, series of 1-300 instances by modality, sex/age/date/site/project spread,
  Latin and kanji pseudonyms, and reports with findings on a share of studies.

Rows are written with explicit ids and their denormalised counts (`n_series`, `n_instances`, `modalities`)
already computed, by PostgreSQL `COPY` or the SQLite driver's own executemany: a million instances take
about a minute here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import utcnow
from medcloud.store.filler_layout import StudyPlan, plan, uniform
from medcloud.store.tables import findings, instances, reports, series, studies

__all__ = ["FillResult", "fill_realistic", "fill_synthetic"]

FillResult = dict[str, int]
_CHUNK = 20_000
_STUDY_COLS = (
    "id", "study_uid", "project", "site", "patient_pseudonym", "patient_sex", "patient_age", "study_date",
    "description", "created_at", "n_series", "n_instances", "modalities",
)  # fmt: skip
_SERIES_COLS = ("id", "series_uid", "study_id", "modality", "body_part", "description", "series_number", "n_instances")
_INSTANCE_COLS = (
    "id", "sop_uid", "series_id", "sop_class_uid", "instance_number", "rows", "columns", "frames", "transfer_syntax",
    "sha256", "size", "created_at",
)  # fmt: skip
_REPORT_COLS = (
    "id", "report_key", "study_uid", "patient_pseudonym", "project", "site", "report_date", "text", "created_at",
)  # fmt: skip
_FINDING_COLS = ("id", "report_id", "study_uid", "project", "code", "status")


def fill_synthetic(
    conn: Connection,
    n_instances: int,
    *,
    projects: Sequence[str] = ("lung",),
    sites: Sequence[str] = ("site-a", "site-b"),
    per_series: int = 10,
    series_per_study: int = 2,
    studies_per_patient: int = 2,
    prefix: str = "2.25.9",
    blob_of: Callable[[int], tuple[str, int]] | None = None,
) -> int:
    """Insert `n_instances` uniform synthetic instances (with their series and studies) in the caller's transaction.

    Study `s` has UID `{prefix}.{s}`, its series `{prefix}.{s}.{k}`, their instances `{prefix}.{s}.{k}.{j}`."""
    layout = uniform(
        n_instances,
        projects=projects,
        sites=sites,
        per_series=per_series,
        series_per_study=series_per_study,
        studies_per_patient=studies_per_patient,
        prefix=prefix,
        today=utcnow().date(),
    )
    _write(conn, layout, blob_of=blob_of)
    return n_instances


def fill_realistic(
    conn: Connection,
    n_instances: int,
    *,
    seed: int = 0,
    prefix: str = "2.25.8",
    projects: Sequence[str] = ("lung", "brain", "abdomen"),
    sites: Sequence[str] = ("site-a", "site-b", "site-c", "site-d"),
    report_share: float = 0.6,
    on_instances: Callable[[int], None] | None = None,
) -> FillResult:
    """Insert about `n_instances` (exactly, the last series is cut) with a realistic spread; returns row counts."""
    layout = plan(n_instances, seed=seed, prefix=prefix, projects=projects, sites=sites, report_share=report_share)
    return _write(conn, layout, on_instances=on_instances)


def _next_ids(conn: Connection) -> dict[str, int]:
    return {
        t.name: int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0))).scalar_one()) + 1
        for t in (studies, series, instances, reports, findings)
    }


def _write(
    conn: Connection,
    layout: Iterable[StudyPlan],
    *,
    blob_of: Callable[[int], tuple[str, int]] | None = None,
    on_instances: Callable[[int], None] | None = None,
) -> FillResult:
    """Write the planned studies with explicit ids (writers are serialized, so max(id) + 1 is ours)."""
    ids = _next_ids(conn)
    now = utcnow()
    sqlite = conn.dialect.name == "sqlite"
    ts: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now
    out: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _COLUMNS}
    counts = {k: 0 for k in out}
    n_global = 0

    def day(d: date | None) -> Any:
        return d.isoformat() if (sqlite and d is not None) else d

    def flush(force: bool) -> None:
        for name in ("studies", "series", "instances", "reports", "findings"):  # parents before children
            rows = out[name]
            if rows and (force or len(out["instances"]) >= _CHUNK):
                _insert(conn, name, rows)
                counts[name] += len(rows)
                if name == "instances" and on_instances is not None:
                    on_instances(len(rows))
                out[name] = []

    for st in layout:
        study_id = ids["studies"]
        ids["studies"] += 1
        n_inst = sum(len(se.instances) for se in st.series)
        mods = "\\".join(sorted({se.modality for se in st.series if se.modality}))[:160]
        out["studies"].append(
            (study_id, st.uid, st.project, st.site, st.patient, st.sex, st.age, day(st.date), st.description, ts,
             len(st.series), n_inst, mods)
        )  # fmt: skip
        for se in st.series:
            series_id = ids["series"]
            ids["series"] += 1
            out["series"].append(
                (series_id, se.uid, study_id, se.modality, se.body_part, se.description, se.number, len(se.instances))
            )
            for j, sop in enumerate(se.instances):
                if blob_of is not None:
                    sha, size = blob_of(n_global)
                else:
                    sha, size = hashlib.sha256(sop.encode()).hexdigest(), se.size
                out["instances"].append(
                    (ids["instances"], sop, series_id, se.sop_class, j + 1, se.rows, se.columns, None,
                     "1.2.840.10008.1.2.1", sha, size, ts)
                )  # fmt: skip
                ids["instances"] += 1
                n_global += 1
        for rep in st.reports:
            report_id = ids["reports"]
            ids["reports"] += 1
            key = hashlib.sha256(f"{st.uid}\x00{rep.text}".encode()).hexdigest()
            out["reports"].append((report_id, key, st.uid, st.patient, st.project, st.site, day(st.date), rep.text, ts))
            for code, status in rep.findings:
                out["findings"].append((ids["findings"], report_id, st.uid, st.project, code, status))
                ids["findings"] += 1
        flush(False)
    flush(True)
    if not sqlite:
        for t in (studies, series, instances, reports, findings):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), (SELECT coalesce(max(id), 1) FROM {t.name}))"  # noqa: S608 - our table names
            )
    return counts


_COLUMNS = {
    "studies": _STUDY_COLS,
    "series": _SERIES_COLS,
    "instances": _INSTANCE_COLS,
    "reports": _REPORT_COLS,
    "findings": _FINDING_COLS,
}


def _copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)  # numbers, dates (ISO) and aware datetimes (ISO with offset)


def _insert(conn: Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    cols = _COLUMNS[table]
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        # One text block per chunk: formatting rows in Python beats psycopg's per-row write_row here.
        block = "".join("\t".join(map(_copy_text, row)) + "\n" for row in rows)
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            copy.write(block.encode())
        return
    marks = ", ".join("?" for _ in cols)
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)  # noqa: S608  # noqa: S608
