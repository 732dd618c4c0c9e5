"""A catalog filler for benchmarks and tests: synthetic studies, series and instances written directly.

The rows are SYNTHETIC metadata (no image behind them unless `blob_of` names stored blobs); they exist to
measure queries and freezes at scale without ingesting a million files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.store.db import utcnow
from medcloud.store.tables import instances, series, studies

__all__ = ["fill_synthetic"]

MODALITIES = ("CT", "MR", "CR", "DX", "US")
BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "KNEE")


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
    """Insert `n_instances` synthetic instances (with their series and studies) in the caller's transaction."""
    now = utcnow()
    per_study = per_series * series_per_study
    n_studies = -(-n_instances // per_study)
    study_rows = []
    for s in range(n_studies):
        patient = s // studies_per_patient
        study_rows.append(
            {
                "study_uid": f"{prefix}.{s}",
                "project": projects[s % len(projects)],
                "site": sites[s % len(sites)],
                "patient_pseudonym": f"PSEUDO-{prefix}-{patient}",
                "patient_sex": "MF"[patient % 2],
                "patient_age": f"{20 + patient % 70:03d}Y",
                "study_date": now.date().replace(year=2015 + s % 10, month=1 + s % 12, day=1 + s % 28),
                "description": "SYNTHETIC",
                "created_at": now,
            }
        )
    conn.execute(studies.insert(), study_rows)
    study_ids: dict[str, int] = {
        r.study_uid: r.id
        for r in conn.execute(
            sa.select(studies.c.study_uid, studies.c.id).where(studies.c.study_uid.like(f"{prefix}.%"))
        )
    }
    series_rows = []
    for s in range(n_studies):
        for k in range(series_per_study):
            series_rows.append(
                {
                    "series_uid": f"{prefix}.{s}.{k}",
                    "study_id": study_ids[f"{prefix}.{s}"],
                    "modality": MODALITIES[(s + k) % len(MODALITIES)],
                    "body_part": BODY_PARTS[s % len(BODY_PARTS)],
                    "description": "SYNTHETIC",
                    "series_number": k + 1,
                }
            )
    conn.execute(series.insert(), series_rows)
    series_ids: dict[str, int] = {
        r.series_uid: r.id
        for r in conn.execute(
            sa.select(series.c.series_uid, series.c.id).where(series.c.series_uid.like(f"{prefix}.%"))
        )
    }
    batch = []
    for i in range(n_instances):
        s, rest = divmod(i, per_study)
        k, j = divmod(rest, per_series)
        if blob_of is not None:
            sha, size = blob_of(i)
        else:
            sha, size = hashlib.sha256(f"{prefix}:{i}".encode()).hexdigest(), 500_000
        batch.append(
            {
                "sop_uid": f"{prefix}.{s}.{k}.{j}",
                "series_id": series_ids[f"{prefix}.{s}.{k}"],
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                "instance_number": j + 1,
                "transfer_syntax": "1.2.840.10008.1.2.1",
                "sha256": sha,
                "size": size,
                "created_at": now,
            }
        )
        if len(batch) == 10_000:
            conn.execute(instances.insert(), batch)
            batch = []
    if batch:
        conn.execute(instances.insert(), batch)
    return n_instances
