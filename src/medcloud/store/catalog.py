"""The catalog: one object that opens the database and hands out its parts, one per job.

    catalog = Catalog.from_settings(settings)   # or Catalog(url, seal=AuditSeal(folder))
    catalog.migrate()
    with catalog.write() as conn:               # one serialized write transaction
        catalog.index.batch(conn, entries, site=..., project=...)
        catalog.audit.chain(conn).append_many(events)
    catalog.query.find_studies(Filters(modality="CT"), projects)

Parts: `db` (engines, locks, transactions; `store.db`), `index` (`store.index`), `query`
(`store.queries`), `sites` (`store.sites`), `societies` (`store.societies`),
`tokens` (`store.tokens`), `audit` (`store.audit`),
`reports` (`store.reports`: report text and its findings), `jobs` (`store.jobs`: jobs and artefacts),
`oidc` (`store.oidc`: sign-ins through the hospital's identity provider).
`passkeys` (`store.passkeys`: people's WebAuthn credentials), `lockouts` (`store.lockouts`: failures, locks),
`enrolment_codes` (`store.enrolment_codes`: admin-issued one-time passkey enrolment codes).
`break_glass` (`store.breakglass`: sealed emergency accounts).
Every SQL statement of the platform lives in these modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from medcloud.security.audit import KEY_FILE, AuditSeal
from medcloud.security.merkle import LOG_KEY_FILE, LogKey
from medcloud.store.audit import AuditLog
from medcloud.store.breakglass import BreakGlassStore
from medcloud.store.datasets import Datasets
from medcloud.store.db import Database
from medcloud.store.enrolment_codes import EnrolmentCodes
from medcloud.store.fl_public import FLPublicFiles
from medcloud.store.index import Indexer
from medcloud.store.jobs import Jobs
from medcloud.store.lockouts import Lockouts
from medcloud.store.oidc import OidcStore
from medcloud.store.passkeys import Passkeys
from medcloud.store.queries import Queries
from medcloud.store.reports import Reports
from medcloud.store.sites import Sites
from medcloud.store.societies import Societies
from medcloud.store.tokens import TokenStore

if TYPE_CHECKING:
    from medcloud.config import Settings

__all__ = ["Catalog", "log_key_path", "open_log_key", "secrets_dir"]


def secrets_dir(data_dir: Path) -> Path:
    """Where a hub keeps secrets that must not live in its database (the audit key and sealed head)."""
    return data_dir / "secrets"


def log_key_path(settings: Settings) -> Path:
    """Where the hub's Ed25519 audit log key lives (`audit_log_key_file`, else the secrets folder)."""
    return settings.audit_log_key_file or secrets_dir(settings.data_dir) / LOG_KEY_FILE


def open_log_key(settings: Settings, *, create: bool = True) -> LogKey | None:
    """The hub's audit log key; made on first use when `create`, else None if there is none yet."""
    path = log_key_path(settings)
    if not create and not path.exists():
        return None
    return LogKey.open(path, create=create)


class Catalog:
    """The catalog over a SQLAlchemy URL. Call `migrate()` once before use.

    Without `seal`, audit events carry no MAC and truncation of the newest ones goes unnoticed:
    a hub always passes one (`from_settings` does).
    """

    def __init__(
        self,
        url: str,
        *,
        seal: AuditSeal | None = None,
        log_key: LogKey | None = None,
        sqlite_synchronous: str = "FULL",
        sqlite_key: bytes | None = None,
    ) -> None:
        self.db = Database(url, sqlite_synchronous=sqlite_synchronous, sqlite_key=sqlite_key)
        self.index = Indexer()
        self.query = Queries(self.db)
        self.sites = Sites(self.db)
        self.societies = Societies(self.db, self.sites)
        self.tokens = TokenStore(self.db)
        self.audit = AuditLog(self.db, seal, log_key)
        self.break_glass = BreakGlassStore(self.db)
        self.datasets = Datasets(self.db)
        self.reports = Reports(self.db)
        self.jobs = Jobs(self.db)
        self.fl_public = FLPublicFiles(self.db)
        self.oidc = OidcStore(self.db)  # people's sign-in through the hospital's identity provider
        # Second factor and lockout (store.passkeys, store.lockouts).
        self.passkeys = Passkeys(self.db)
        self.lockouts = Lockouts(self.db)
        self.enrolment_codes = EnrolmentCodes(self.db)  # admin-issued one-time passkey enrolment codes

    @classmethod
    def from_settings(cls, settings: Settings, *, create_key: bool = True) -> Catalog:
        """The hub's catalog: its database URL, and the audit seal in its secrets folder.

        With `create_key=False` (readers such as `medcloud audit verify`) a missing key is not made up:
        the catalog then has no seal, and verifying a sealed chain says that the key is missing.
        The SQLite catalog is opened with its SQLCipher page key when the file is encrypted, or new while
        encryption at rest is on (`medcloud.security.catalog_cipher`); KeyUnavailable without the right KEK."""
        from medcloud.security.catalog_cipher import catalog_key

        url = settings.resolved_database_url
        key = catalog_key(settings, url)
        folder = secrets_dir(settings.data_dir)
        seal = AuditSeal(folder) if create_key or (folder / KEY_FILE).exists() else None
        return cls(url, seal=seal, log_key=open_log_key(settings, create=create_key), sqlite_key=key)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL."""
        return self.db.url

    def column_names(self) -> list[str]:
        """Every `table.column` of the database as it is (the self-check looks for password columns)."""
        import sqlalchemy as sa

        with self.db.read() as conn:
            inspector = sa.inspect(conn)
            return [f"{t}.{c['name']}" for t in inspector.get_table_names() for c in inspector.get_columns(t)]

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        self.db.migrate()

    def dispose(self) -> None:
        """Close every connection."""
        self.db.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A serialized write transaction (commits on success, rolls back on error)."""
        with self.db.write() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads."""
        with self.db.read() as conn:
            yield conn
