"""Query indexes for QIDO-RS and cohorts, and per-study/per-series counts kept on the rows themselves.

A study list (OHIF asks for 101 studies with ModalitiesInStudy and the numbers of series and instances)
must not count instances per row at a million instances: `studies.n_series`, `studies.n_instances`,
`studies.modalities` and `series.n_instances` are written by `store.index` whenever instances come or go,
and back-filled here. Every index below is named by the query it serves; tests/store/test_query_plans.py
asserts that those queries use them (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("n_series", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("n_instances", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("modalities", sa.String(160), nullable=False, server_default=""))
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("n_instances", sa.Integer, nullable=False, server_default="0"))
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    # Study lists: newest first (QIDO orders by StudyDate DESC NULLS LAST, then id).
    if pg:
        op.execute("CREATE INDEX ix_studies_date_desc_id ON studies (study_date DESC NULLS LAST, id)")
        # Case-insensitive PatientName/PatientID wildcards with a literal prefix (kanji too): LIKE on
        # lower(...) with a literal prefix is an index range scan under any collation with text_pattern_ops.
        op.execute("CREATE INDEX ix_studies_patient_lower ON studies (lower(patient_pseudonym) text_pattern_ops)")
    else:
        # SQLite sorts NULLs first ascending, so a DESC scan yields them last: NULLS LAST needs no more.
        op.execute("CREATE INDEX ix_studies_date_desc_id ON studies (study_date DESC, id)")
        op.execute("CREATE INDEX ix_studies_patient_lower ON studies (lower(patient_pseudonym))")
    op.create_index("ix_studies_project_site", "studies", ["project", "site"])
    # ModalitiesInStudy (a semi-join from series to studies) and cohort terms on modality.
    op.create_index("ix_series_modality_study", "series", ["modality", "study_id"])
    # A study's series in order (QIDO series level, WADO retrieve), a series' instances in order.
    op.create_index("ix_series_study_number", "series", ["study_id", "series_number", "id"])
    op.create_index("ix_instances_series_number", "instances", ["series_id", "instance_number", "id"])
    # Cohort finding terms: EXISTS (code, status, project, study) answered from the index alone.
    op.create_index("ix_findings_code_status_project_study", "findings", ["code", "status", "project", "study_uid"])
    _backfill(bind)


def _backfill(bind: sa.engine.Connection) -> None:
    bind.execute(
        sa.text(
            "UPDATE series SET n_instances = (SELECT count(*) FROM instances WHERE instances.series_id = series.id)"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE studies SET n_series = (SELECT count(*) FROM series WHERE series.study_id = studies.id), "
            "n_instances = (SELECT coalesce(sum(series.n_instances), 0) FROM series WHERE series.study_id = studies.id)"
        )
    )
    per_study: dict[int, set[str]] = {}
    for study_id, modality in bind.execute(sa.text("SELECT DISTINCT study_id, modality FROM series")):
        if modality:
            per_study.setdefault(int(study_id), set()).add(str(modality))
    rows = [{"i": k, "m": "\\".join(sorted(v))[:160]} for k, v in per_study.items()]
    if rows:
        bind.execute(sa.text("UPDATE studies SET modalities = :m WHERE id = :i"), rows)


def downgrade() -> None:
    for name, table in (
        ("ix_findings_code_status_project_study", "findings"),
        ("ix_instances_series_number", "instances"),
        ("ix_series_study_number", "series"),
        ("ix_series_modality_study", "series"),
        ("ix_studies_project_site", "studies"),
        ("ix_studies_patient_lower", "studies"),
        ("ix_studies_date_desc_id", "studies"),
    ):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("series") as batch:
        batch.drop_column("n_instances")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("modalities")
        batch.drop_column("n_instances")
        batch.drop_column("n_series")
