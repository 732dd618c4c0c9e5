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

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from medcloud.errors import Conflict
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

__all__ = ["Catalog", "log_key_path", "open_log_key", "rotate_log_key", "secrets_dir"]


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


_rotation_lock = threading.Lock()


def rotate_log_key(
    settings: Settings, catalog: Catalog, *, subject: str, client: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """Replace the audit log's signing key (`medcloud audit rotate-log-key` and
    `POST /api/v1/audit/log-key/rotate`): the old key signs a checkpoint over every event, both keys sign
    the rotation statement, the catalog keeps both public keys, and the old private key is overwritten.

    Steps: the new private key is written beside the old one (`.new`, 0600, fsynced), the catalog stores
    the statement, the new file replaces the old one, and an `audit.log-key.rotate` event is written. A
    rotation stopped between the catalog and the file is finished (or its leftover file dropped) first.
    One rotation at a time: a thread lock in this process and an exclusive lock on `<key>.lock` across
    processes (a hub and the CLI). Returns the statement and the log id of an interrupted rotation it
    finished (or None).
    """
    import fcntl

    from medcloud.fsio import fsync_dir

    path = log_key_path(settings)
    pending = path.with_name(path.name + ".new")
    audit = catalog.audit
    with _rotation_lock, open(path.with_name(path.name + ".lock"), "a+b") as lock:
        os.chmod(lock.name, 0o600)
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        finished: str | None = None
        known = {k["log_id"] for k in audit.keys_document()["keys"]}
        if pending.exists():
            waiting = LogKey.open(pending, create=False)
            current = audit.current_key()
            if waiting.log_id in known and (current is None or waiting.log_id != current.log_id):
                os.replace(pending, path)  # the catalog took the statement: finish the rotation
                fsync_dir(path.parent)
                audit.log_key = LogKey.open(path, create=False)
                finished = waiting.log_id
            else:
                pending.unlink()  # the catalog never saw it: drop it
        if audit.current_key() is None:
            raise Conflict("no audit log key to rotate")
        new = LogKey.generate()
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, new.private_pem())
            os.fsync(fd)
        finally:
            os.close(fd)
        old = audit.current_key()
        statement = audit.rotate_key(new)
        os.replace(pending, path)  # the old private key is gone; its public key stays in the catalog
        fsync_dir(path.parent)
        audit.log_key = LogKey.open(path, create=False)
        audit.record(
            subject=subject, action="audit.log-key.rotate", resource="audit/log-key", outcome="ok", client=client,
            detail={"old_log_id": old.log_id if old is not None else None, "new_log_id": new.log_id,
                    "tree_size": statement["tree_head"]["tree_size"], "finished_interrupted": finished},
        )  # fmt: skip
    return statement, finished


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
