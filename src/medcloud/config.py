"""One settings object for every unit: `MEDCLOUD_*` environment variables, then an optional TOML file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class Settings(BaseSettings):
    """Hub settings. Embedded defaults: SQLite catalog and blob folder under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix="MEDCLOUD_", toml_file="medcloud.toml", extra="ignore")

    data_dir: Path = Field(default=Path("medcloud-data"), description="Root of blobs, catalog and keys.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/catalog.sqlite3"
    )
    blob_dir: Path | None = Field(default=None, description="Blob store root; default <data_dir>/blobs")
    max_upload_bytes: int = Field(default=2 * 1024**3, description="Largest accepted file (bytes).")
    max_batch_bytes: int = Field(default=1024**3, description="Largest accepted batch request (bytes).")
    max_batch_files: int = Field(default=1000, description="Most files in one batch request.")
    batch_memory_bytes: int = Field(
        default=64 * 1024**2, description="Bytes of one batch request held in memory; the rest spill to disk."
    )
    pack_below: int = Field(
        default=4 * 1024**2, description="Blobs smaller than this are appended to packs; larger ones are files."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    token_cache_seconds: float = Field(default=5.0, description="How long a verified token stays cached.")
    require_deidentified: bool = Field(
        default=True, description="Refuse DICOM that does not declare PatientIdentityRemoved=YES."
    )
    trusted_proxy_header: str | None = Field(
        default=None, description="Header carrying the client address when behind a TLS-terminating proxy."
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1", "::1"],
        description="Addresses of our own proxies: only their forwarding header is read, and they are skipped in it.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, description="Largest request line plus headers (bytes); larger requests get 431."
    )
    header_timeout_seconds: float = Field(
        default=30.0, description="Time allowed for a request's line and headers to arrive (else 408)."
    )
    body_timeout_seconds: float = Field(
        default=60.0, description="Longest wait for the next piece of a request body (else 408)."
    )
    uid_root: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)*$",
        max_length=24,
        description="The hub's DICOM UID root for objects it makes (results as SR/SEG); default UUID-based 2.25.",
    )
    # Jobs (docs/jobs.md): a local process pool unless `ray_address` names a Ray cluster.
    ray_address: str | None = Field(default=None, description="Ray dashboard URL for jobs; unset: local pool.")
    ray_token_file: Path | None = Field(
        default=None, description="File with the Ray cluster's auth token (else RAY_AUTH_TOKEN, ~/.ray/auth_token)."
    )
    ray_python: str = Field(default="python", description="Python command on the Ray cluster that runs a job.")
    jobs_workers: int = Field(default=2, ge=1, le=256, description="Jobs the local pool runs at once.")
    jobs_hub_url: str | None = Field(
        default=None, description="URL a job uses to reach this hub; default http://<host>:<port>."
    )
    jobs_max_code_bytes: int = Field(default=10 * 1024**2, description="Largest job code archive (zip bytes).")
    jobs_max_artifact_bytes: int = Field(default=512 * 1024**2, description="Largest single job artefact (bytes).")
    jobs_max_timeout_seconds: int = Field(default=2 * 86400, ge=1, le=6 * 86400, description="Longest job timeout.")
    # Sign-in through the hospital's identity provider (OpenID Connect, docs/security.md): people get
    # short-lived session tokens; machine tokens are unchanged.
    oidc_issuer: str | None = Field(
        default=None, description="The identity provider's issuer URL (its discovery document names the same)."
    )
    oidc_client_id: str | None = Field(default=None, description="The hub's client id at the identity provider.")
    oidc_client_secret_file: Path | None = Field(
        default=None, description="File holding the hub's client secret (a confidential client)."
    )
    oidc_group_roles: dict[str, str] = Field(
        default_factory=dict,
        description='Provider group -> "project:role" or "role"; a person in no mapped group is refused.',
    )
    oidc_groups_claim: str = Field(default="groups", description="The claim listing a person's groups.")
    oidc_scopes: list[str] = Field(
        default=["openid", "profile", "email"], description="Scopes asked for at sign-in ('openid' is required)."
    )
    oidc_redirect_uri: str | None = Field(
        default=None, description="The callback URL registered at the provider; default <hub URL>/auth/callback."
    )
    oidc_post_logout_redirect_uri: str | None = Field(
        default=None, description="Where the provider sends the browser after sign-out; default the hub's URL."
    )
    oidc_http_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each call to the provider.")
    session_idle_seconds: int = Field(
        default=900, ge=1, description="A person's session unused this long is refused (sign in again)."
    )
    session_max_seconds: int = Field(
        default=28800, ge=1, description="A person's session ends this long after sign-in, refreshed or not."
    )

    # Mutual TLS (docs/security.md "Mutual TLS"): the hub serves TLS itself when tls_cert_file is set.
    tls_cert_file: Path | None = Field(default=None, description="Hub's TLS certificate (PEM); set: serve HTTPS.")
    tls_key_file: Path | None = Field(default=None, description="Private key of tls_cert_file (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA of client certificates; set: mutual TLS required, site tokens bound to sites."
    )
    tls_crl_file: Path | None = Field(
        default=None, description="Revocation list of that CA (PEM); re-read on change, checked on every connection."
    )
    # Backups (docs/security.md "Backups"): `medcloud backup` writes generations under backup_dir.
    backup_dir: Path | None = Field(default=None, description="Folder of backup generations (outside data_dir).")
    backup_generations: int = Field(default=7, ge=1, le=1000, description="Complete generations kept.")
    # Second factor (passkeys) and lockout (docs/security.md "Second factor (passkeys) and lockout").
    mfa_required: bool = Field(
        default=True,
        description="A person's session is usable only after a passkey (else: only for admin actions).",
    )
    mfa_admin_max_age_seconds: int = Field(
        default=600, ge=30, le=86400, description="Admin actions by a session need a passkey within this long."
    )
    mfa_enrol_window_seconds: int = Field(
        default=600, ge=30, le=86400, description="A first passkey may be enrolled only this soon after sign-in."
    )
    mfa_enrol_code_seconds: int = Field(
        default=3600, ge=60, le=604800, description="Longest life of an admin-issued passkey enrolment code."
    )
    webauthn_rp_id: str | None = Field(
        default=None, max_length=253, description="WebAuthn relying-party id (a domain); default from `host`."
    )
    webauthn_origin: str | None = Field(
        default=None, max_length=300, description="Origin the browser reports, e.g. https://hub.example.jp."
    )
    webauthn_challenge_seconds: int = Field(default=120, ge=10, le=600, description="A passkey challenge's life.")
    lockout_threshold: int = Field(default=5, ge=1, le=1000, description="Failures within the window that lock.")
    lockout_window_seconds: int = Field(default=900, ge=1, description="Window in which failures are counted.")
    lockout_seconds: int = Field(default=900, ge=1, description="How long a lock lasts.")
    lockout_exempt_addresses: list[str] = Field(
        default_factory=list, description="Client addresses whose bearer failures never lock (e.g. a site's NAT)."
    )

    # Verifiable audit log, self-check and break-glass (docs/security.md: "Verifiable audit log", "Self-check").
    audit_log_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key (PEM) that signs audit checkpoints; default <data_dir>/secrets/audit-log.ed25519.",
    )
    audit_checkpoint_every: int = Field(
        default=1000, ge=1, description="The hub signs a Merkle checkpoint after this many new audit events."
    )
    audit_checkpoint_seconds: float = Field(
        default=3600.0, ge=0, description="...or when events came and the last checkpoint is this old (0: off)."
    )
    audit_checkpoint_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often the hub looks whether a checkpoint is due."
    )
    selfcheck_max_idle_seconds: int = Field(
        default=1800, ge=60, description="Self-check: the longest session idle timeout that passes."
    )
    selfcheck_max_admins: int = Field(
        default=3, ge=1, description="Self-check: most active admin tokens (break-glass excluded) that pass."
    )
    selfcheck_review_days: int = Field(
        default=31, ge=1, description="Self-check: the audit log must have been reviewed within this many days."
    )
    break_glass_max_minutes: int = Field(
        default=240, ge=1, description="Longest time one break-glass use keeps its account open."
    )
    # Encryption at rest (docs/security.md, `security.envelope`): ON when any of the three is set (only one may be).
    encryption_key_file: Path | None = Field(
        default=None,
        description="File holding the key-encryption key (64 hex digits; `medcloud hub new-key`); keep it off the "
        "data volume. Setting it turns encryption at rest on.",
    )
    encryption_key_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the key-encryption key (hex or base64; several keys "
        "comma separated during a rotation, the current one first). Setting it turns encryption at rest on.",
    )
    encryption_kms_command: str | None = Field(
        default=None,
        description="KMS-style hook: a command that wraps and unwraps data keys (one JSON request on stdin, one JSON "
        "answer on stdout; docs/security.md). Setting it turns encryption at rest on.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"

    @cached_property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `medcloud.toml`, with explicit overrides winning."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
