"""Catalog schema as SQLAlchemy Core tables. Alembic migrations under `migrations/` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("target_cases", sa.Integer, nullable=True),
    sa.Column("target_images", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The society (contributing organisation) the site belongs to, if any (`societies.name`).
    sa.Column("society", sa.String(64), nullable=True, index=True),
)

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("project", sa.String(64), nullable=False, index=True),
    sa.Column("site", sa.String(64), nullable=False, index=True),
    sa.Column("patient_pseudonym", sa.String(64), nullable=False, index=True),
    sa.Column("patient_sex", sa.String(16), nullable=True),
    sa.Column("patient_age", sa.String(16), nullable=True),
    sa.Column("study_date", sa.Date, nullable=True, index=True),
    sa.Column("description", sa.String(1024), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Denormalised by `store.index` whenever instances come or go (0005), so a study list never counts rows:
    # series and instances in the study, and its distinct modalities joined with "\\" (DICOM multi-value).
    sa.Column("n_series", sa.Integer, nullable=False, server_default="0"),
    sa.Column("n_instances", sa.Integer, nullable=False, server_default="0"),
    sa.Column("modalities", sa.String(160), nullable=False, server_default=""),
)

series = sa.Table(
    "series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("series_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("modality", sa.String(16), nullable=False, server_default="", index=True),
    sa.Column("body_part", sa.String(64), nullable=False, server_default=""),
    sa.Column("description", sa.String(1024), nullable=False, server_default=""),
    sa.Column("series_number", sa.Integer, nullable=True),
    sa.Column("n_instances", sa.Integer, nullable=False, server_default="0"),  # denormalised (0005)
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sop_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("series_id", sa.Integer, sa.ForeignKey("series.id"), nullable=False, index=True),
    sa.Column("sop_class_uid", sa.String(64), nullable=False, server_default=""),
    sa.Column("instance_number", sa.Integer, nullable=True),
    sa.Column("rows", sa.Integer, nullable=True),
    sa.Column("columns", sa.Integer, nullable=True),
    sa.Column("frames", sa.Integer, nullable=True),
    sa.Column("transfer_syntax", sa.String(64), nullable=False, server_default=""),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Non-DICOM images (pathology slides, endoscopy, fundus, microscopy photos), one row per stored file.
images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("project", sa.String(64), nullable=False, index=True),
    sa.Column("site", sa.String(64), nullable=False, index=True),
    sa.Column("media_type", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False, server_default=""),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.UniqueConstraint("sha256", "project", "site", name="uq_images_sha256_project_site"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("site", sa.String(64), nullable=True),
    sa.Column("projects", sa.String(1024), nullable=False, server_default=""),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # What a narrowly scoped token may touch, e.g. `job=<id>;dataset=<version>` (migration 0007).
    sa.Column("scope", sa.String(200), nullable=True),
    # People's sessions (migration 0010): kind 'machine' | 'session', the identity provider's subject,
    # last use (idle timeout) and when the session passed its second factor.
    sa.Column("kind", sa.String(16), nullable=False, server_default="machine"),
    sa.Column("person", sa.String(256), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("mfa_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_tokens_person", "person"),
)

# Append-only and hash chained: each row's hash covers its fields and the previous row's hash; `mac` is an
# HMAC of the hash with a key kept outside the database (NULL on events older than the key).
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("resource", sa.String(300), nullable=False),
    sa.Column("outcome", sa.String(100), nullable=False),
    sa.Column("client", sa.String(100), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("mac", sa.String(64), nullable=True),
)

# Saved cohort queries (`store.datasets`): a name and a JSON list of terms, scoped to the projects it reads.
cohorts = sa.Table(
    "cohorts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("projects", sa.String(1024), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("projects", "name", name="uq_cohorts_projects_name"),
)

# Frozen dataset versions: the id is the SHA-256 of the canonical manifest (header + files); rows never change
# after insert except `withdrawn_*`, which records why a version may no longer be served.
dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, index=True),
    sa.Column("projects", sa.String(1024), nullable=False),
    sa.Column("header", sa.Text, nullable=False),
    sa.Column("file_count", sa.Integer, nullable=False),
    sa.Column("total_bytes", sa.BigInteger, nullable=False),
    sa.Column("catalog_state", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("withdrawn_reason", sa.String(1000), nullable=True),
)

dataset_files = sa.Table(
    "dataset_files",
    metadata,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sop_uid", sa.String(64), nullable=False, index=True),
    sa.Column("study_uid", sa.String(64), nullable=False),
    sa.Column("series_uid", sa.String(64), nullable=False),
    sa.Column("patient", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
)

# De-identified report text from sites, one row per distinct report (`report_key` is the SHA-256 of its
# study UID, patient pseudonym, date and text, so a resend is stored once). A report may arrive before
# its study's images; `study_uid` links the two.
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_key", sa.String(64), nullable=False, unique=True),
    sa.Column("study_uid", sa.String(64), nullable=False, index=True),
    sa.Column("patient_pseudonym", sa.String(64), nullable=False, index=True),
    sa.Column("project", sa.String(64), nullable=False, index=True),
    sa.Column("site", sa.String(64), nullable=False, index=True),
    sa.Column("report_date", sa.Date, nullable=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Findings extracted from each report at ingest (`medcloud.nlp`), one row per (report, code, status).
# `study_uid` and `project` are copied from the report so a study search filters without a join.
findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_id", sa.Integer, sa.ForeignKey("reports.id"), nullable=False, index=True),
    sa.Column("study_uid", sa.String(64), nullable=False),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.UniqueConstraint("report_id", "code", "status", name="uq_findings_report_code_status"),
    sa.Index("ix_findings_code_status_study", "code", "status", "study_uid"),
)

# Contributing organisations (a medical society, a hospital group) with their own collection targets;
# sites belong to at most one (`sites.society`). `store.societies` sums their sites' progress.
societies = sa.Table(
    "societies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("display_name_ja", sa.String(200), nullable=False, server_default=""),
    sa.Column("target_cases", sa.Integer, nullable=True),
    sa.Column("target_images", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Jobs (`store.jobs`): a researcher's script run against one frozen dataset version, locally or on Ray.
# `projects` is copied from the dataset version: who may see a job is who may see its data.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("dataset_id", sa.String(64), nullable=False, index=True),
    sa.Column("projects", sa.String(1024), nullable=False),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("entrypoint", sa.String(255), nullable=False),
    sa.Column("args", sa.Text, nullable=False, server_default="[]"),
    sa.Column("code_sha256", sa.String(64), nullable=False),
    sa.Column("code_bytes", sa.BigInteger, nullable=False),
    sa.Column("num_cpus", sa.Float, nullable=False, server_default="1"),
    sa.Column("num_gpus", sa.Float, nullable=False, server_default="0"),
    sa.Column("timeout_s", sa.Integer, nullable=False),
    sa.Column("submitted_by", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(32), nullable=True),
    sa.Column("external_id", sa.String(100), nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("message", sa.String(1000), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)

# What a job wrote back: content-addressed blobs under a name unique within the job.
job_artifacts = sa.Table(
    "job_artifacts",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Each stored DICOM file's DICOM JSON (PS3.18 F.2), converted once at ingest and compressed (`pack_stored`:
# Zstandard; zlib in rows kept before), keyed by the file's SHA-256 (same bytes, same JSON). Pixel data is a
# BulkDataURI relative to the server's DICOMweb base, which WADO-RS metadata prefixes when it answers
# (`formats.dicomjson.with_base`).
instance_json = sa.Table(
    "instance_json",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)


# The federated-learning public key folder the hub relays (migration 0014): every version of every file,
# content in the blob store. Who may write which name: `medcloud.federated.relay`.
fl_public_files = sa.Table(
    "fl_public_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("federation", sa.String(64), nullable=False),
    sa.Column("name", sa.String(160), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("uploaded_by", sa.String(64), nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("federation", "name", "version", name="uq_fl_public_version"),
)

# Sign-in through the hospital's identity provider (migration 0011, security/oidc.py). A login in progress,
# found by the SHA-256 of its OAuth `state` and deleted when its callback uses it.
oidc_logins = sa.Table(
    "oidc_logins",
    metadata,
    sa.Column("state_sha256", sa.String(64), primary_key=True),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("code_verifier", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("return_to", sa.String(200), nullable=False, server_default="/"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# One person's sign-in: first a one-time hand-over code (its SHA-256) the page redeems, then the session
# token it became. The provider's refresh and ID tokens only encrypted (`grant_box`, AES-GCM).
oidc_sessions = sa.Table(
    "oidc_sessions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("handoff_sha256", sa.String(64), nullable=True, unique=True),
    sa.Column("handoff_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("token_id", sa.String(32), nullable=True, unique=True),
    sa.Column("person", sa.String(256), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("projects", sa.String(1024), nullable=False, server_default=""),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("grant_box", sa.LargeBinary, nullable=True),
    sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("signed_in_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
)

# Second factor and lockout (migration 0013, docs/security.md "Second factor (passkeys) and lockout").
# A person's WebAuthn passkeys: the credential id (base64url), its COSE public key and last sign count.
webauthn_credentials = sa.Table(
    "webauthn_credentials",
    metadata,
    sa.Column("id", sa.String(1400), primary_key=True),
    sa.Column("person", sa.String(256), nullable=False, index=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("transports", sa.String(200), nullable=False, server_default=""),
    sa.Column("aaguid", sa.String(36), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
)

# Outstanding ceremony challenges, bound to the session that asked; each is deleted when used.
webauthn_challenges = sa.Table(
    "webauthn_challenges",
    metadata,
    sa.Column("challenge", sa.String(128), primary_key=True),
    sa.Column("token_id", sa.String(32), nullable=False, index=True),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# Admin-issued one-time passkey enrolment codes (migration 0015, `security.enrolment_codes`): the code's
# SHA-256 digest only, bound to one person; redeemed by one of that person's sessions, spent by one passkey.
passkey_enrolment_codes = sa.Table(
    "passkey_enrolment_codes",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("person", sa.String(256), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("redeemed_token_id", sa.String(32), nullable=True, index=True),
    sa.Column("spent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("credential_id", sa.String(1400), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
)

# Failed authentications per key (`addr:<client>` or `person:<subject>`), and the keys locked now.
auth_failures = sa.Table(
    "auth_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(300), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_auth_failures_key_at", "key", "at"),
)

auth_lockouts = sa.Table(
    "auth_lockouts",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Signed tree heads over the audit log (`security.merkle`, migration 0012): the Merkle root of the first
# `tree_size` events, signed with the hub's Ed25519 log key (kept in the secrets folder, not here).
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("tree_size", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),  # milliseconds since the epoch, as signed
    sa.Column("root_hash", sa.String(64), nullable=False),  # hex
    sa.Column("log_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),  # hex
)

# The audit log's signing keys across rotations (`medcloud audit rotate-log-key`, migration 0015): public
# keys only (the private key is a file in the secrets folder), each later key with the rotation statement
# (JSON, signed by the old and the new key) that handed the log over to it.
audit_log_keys = sa.Table(
    "audit_log_keys",
    metadata,
    sa.Column("log_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rotation", sa.Text, nullable=True),
)

# Sealed emergency (break-glass) accounts (`security.breakglass`, migration 0012): an admin token that
# stays expired until `use` opens it for a limited time with a stated reason; every use is reviewed.
break_glass_accounts = sa.Table(
    "break_glass_accounts",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # sealed, open, closed
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("opened_by", sa.String(200), nullable=True),
    sa.Column("reason", sa.String(1000), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_by", sa.String(200), nullable=True),
    sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reviewed_by", sa.String(200), nullable=True),
    sa.Column("review_note", sa.String(1000), nullable=True),
)
