"""What one hub process holds: settings, catalog, blob store, token verifier, ingestor, lockout book."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medcloud.config import Settings
from medcloud.ingest.pipeline import Ingestor
from medcloud.security.envelope import store_envelope
from medcloud.security.lockout import LockoutBook
from medcloud.security.tokens import TokenVerifier
from medcloud.store import Catalog, LocalBlobStore

if TYPE_CHECKING:
    from medcloud.jobs.service import JobService
    from medcloud.security.sessions import SignIn


@dataclass
class HubState:
    settings: Settings
    catalog: Catalog
    blobs: LocalBlobStore
    verifier: TokenVerifier
    ingestor: Ingestor
    lockouts: LockoutBook | None = None  # made by `open`; None only in states built by hand
    jobs: JobService | None = None  # made on first use by routes/jobs.py; its runner stops before the catalog
    signin: SignIn | None = None  # sign-in through the hospital's identity provider, where oidc_issuer is set

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> HubState:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        catalog = Catalog.from_settings(settings)
        if migrate:
            catalog.migrate()
        blobs = LocalBlobStore(
            settings.resolved_blob_dir, pack_below=settings.pack_below, envelope=store_envelope(settings)
        )
        blobs.clean_incoming()
        if blobs.envelope is not None and blobs.envelope.enabled:
            blobs.envelope.value_key()  # stored now rather than on the first upload's critical path
        verifier = TokenVerifier(
            catalog, settings.token_cache_seconds, session_idle_seconds=settings.session_idle_seconds
        )
        signin = None
        if settings.oidc_issuer:
            from medcloud.security.sessions import SignIn

            signin = SignIn(settings, catalog, verifier)
        catalog.reports.envelope = blobs.envelope  # report text encrypted at rest with the blob store's keys
        return cls(
            settings=settings,
            catalog=catalog,
            blobs=blobs,
            verifier=verifier,
            signin=signin,
            ingestor=Ingestor(
                catalog,
                blobs,
                require_deidentified=settings.require_deidentified,
                max_upload_bytes=settings.max_upload_bytes,
            ),
            lockouts=LockoutBook(
                catalog,
                threshold=settings.lockout_threshold,
                window_seconds=settings.lockout_window_seconds,
                lock_seconds=settings.lockout_seconds,
                exempt_addresses=settings.lockout_exempt_addresses,
            ),
        )

    def close(self) -> None:
        if self.signin is not None:
            self.signin.close()
            self.signin = None
        if self.jobs is not None:
            self.jobs.close()
            self.jobs = None
        self.catalog.dispose()
        self.blobs.close()
