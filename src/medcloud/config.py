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
