"""Page-level encryption of the embedded SQLite catalog with SQLCipher (encryption at rest).

With encryption at rest on, `catalog.sqlite3` (and its `-wal`/`-shm`) is a SQLCipher database: every page
is sealed (AES-256-CBC + HMAC-SHA512 per page, SQLCipher 4 defaults), so the searchable columns that SQL
filters on (UIDs, pseudonyms, dates, descriptions, ...) are no longer in clear on the disk.

- The page key is a random 256-bit data key, `catalog-sqlcipher` in the blob store's key table
  (`<blob root>/keys.sqlite3`), wrapped by the KEK like every other data key. KEK rotation re-wraps it;
  the database is never re-keyed. It is handed to SQLCipher as a raw key (`x'..'`): no PBKDF2 per
  connection.
- Whether a file is opened with the key follows the file, not the settings: a plain SQLite file starts
  with `SQLite format 3\\0`, an encrypted one with random bytes. A plain catalog under encryption is
  converted by `medcloud hub encrypt-catalog` (and by `medcloud hub serve` at start) with
  `sqlcipher_export` into a new file, fsynced, then renamed over the old one: a conversion killed
  half-way leaves the old file untouched and is simply run again.
- A wrong or missing key is `KeyUnavailable` (503 / exit 6), never SQLite's "file is not a database".

PostgreSQL is not covered here: put it on an encrypted volume or use the provider's storage encryption.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medcloud.errors import ConfigError, MedcloudError
from medcloud.fsio import fsync_path
from medcloud.security.envelope import KeyUnavailable, load_kek, store_envelope

__all__ = [
    "CATALOG_KEY_ID",
    "catalog_key",
    "catalog_path",
    "connect",
    "encrypt_catalog",
    "file_state",
    "keyed_connector",
]

CATALOG_KEY_ID = "catalog-sqlcipher"
SQLITE_HEADER = b"SQLite format 3\x00"
_TMP_SUFFIX = ".encrypting.tmp"  # backups skip *.tmp


def catalog_path(url: str) -> Path | None:
    """The file of a SQLite URL (None: PostgreSQL, or an in-memory database)."""
    import sqlalchemy as sa

    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def file_state(path: Path) -> str:
    """`absent` (no file or an empty one), `plain` (a SQLite header) or `encrypted` (anything else)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return "absent"
    if not head:
        return "absent"
    return "plain" if head == SQLITE_HEADER else "encrypted"


def _dbapi() -> Any:
    try:
        import sqlcipher3.dbapi2 as dbapi
    except ImportError:  # pragma: no cover - a pinned dependency
        raise ConfigError(
            "encryption at rest of the SQLite catalog needs SQLCipher: pip install sqlcipher3-binary"
        ) from None
    return dbapi


_quiet = False


def _silence(dbapi: Any) -> None:
    """SQLCipher logs a wrong key's HMAC failures to stderr; the caller gets a clear error instead."""
    global _quiet
    if not _quiet:
        con = dbapi.connect(":memory:")
        with contextlib.suppress(dbapi.Error):
            con.execute("PRAGMA cipher_log_level = NONE")
        con.close()
        _quiet = True


def apply_key(con: Any, key: bytes, where: str) -> None:
    """The key as the very first statement of a connection, then one read that proves it fits."""
    dbapi = _dbapi()
    con.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except dbapi.DatabaseError as exc:
        if "not a database" in str(exc) or "encrypted" in str(exc):
            con.close()
            raise KeyUnavailable(
                f"{where} cannot be decrypted with the catalog's key ({CATALOG_KEY_ID}): the file was encrypted"
                " with another key, or is damaged. Configure the key-encryption key that wrapped it, and the"
                " key table (keys.sqlite3) that belongs to this catalog"
            ) from None
        raise


def connect(path: Path | str, key: bytes | None, *, read_only: bool = False, **kwargs: Any) -> Any:
    """A DB-API connection to a catalog file: `sqlite3` when `key` is None, SQLCipher with the key otherwise."""
    target = f"file:{path}?mode=ro" if read_only else str(path)
    if key is None:
        return sqlite3.connect(target, uri=read_only, **kwargs)
    dbapi = _dbapi()
    _silence(dbapi)
    con = dbapi.connect(target, uri=read_only, **kwargs)
    apply_key(con, key, str(path))
    return con


def keyed_connector(key: bytes, where: str) -> tuple[Any, Callable[..., Any]]:
    """(DB-API module, a `do_connect` handler) for SQLAlchemy: every pooled connection gets the key first."""
    dbapi = _dbapi()
    _silence(dbapi)

    def do_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        con = dbapi.connect(*cargs, **cparams)
        apply_key(con, key, where)
        return con

    return dbapi, do_connect


def _envelope(settings: Any) -> Any:
    return store_envelope(settings)


def catalog_key(settings: Any, url: str | None = None) -> bytes | None:
    """The page key to open the settings' SQLite catalog with, or None to open it in clear.

    - an encrypted file: its key, unwrapped by the configured KEK (KeyUnavailable when there is none, or
      the wrong one, naming the KEK that would be needed);
    - a new (absent or empty) file with encryption on: a key made now, so the catalog is encrypted from
      its first page;
    - a plain file, or encryption off with no encrypted file: None.
    """
    path = catalog_path(url or settings.resolved_database_url)
    if path is None:
        return None
    state = file_state(path)
    if state == "plain":
        return None
    kek = load_kek(settings)
    if state == "absent" and kek is None:
        return None
    env = _envelope(settings)
    try:
        if state == "encrypted":
            if not env.table_path.exists() or env.table.get(CATALOG_KEY_ID) is None:
                raise KeyUnavailable(
                    f"{path} is encrypted but its key ({CATALOG_KEY_ID}) is not in {env.table_path}:"
                    " restore the key table that belongs to this catalog (it is part of every backup)"
                )
            key: bytes = env.key_bytes(CATALOG_KEY_ID)
        else:
            key = env.ensure_key(CATALOG_KEY_ID)
    finally:
        env.close()
    return key


def _row_counts(con: Any, schema: str = "main") -> dict[str, int]:
    names = [
        str(r[0])
        for r in con.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type='table' ORDER BY name")  # noqa: S608
    ]
    return {n: int(con.execute(f'SELECT count(*) FROM {schema}."{n}"').fetchone()[0]) for n in names}  # noqa: S608


def encrypt_catalog(settings: Any, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert a plain SQLite catalog into a SQLCipher one in place; a no-op when already encrypted.

    Every other process must have closed the catalog (a running hub would go on writing into the old
    file): that is checked by leaving WAL mode, which SQLite refuses while anyone else has the file
    open. The old file stays until the new one is complete, verified (same tables, same row counts)
    and fsynced; a conversion killed half-way leaves a temporary file that the next run discards.
    """
    url = settings.resolved_database_url
    path = catalog_path(url)
    if path is None:
        raise ConfigError(
            "the catalog is not an embedded SQLite file: put PostgreSQL on an encrypted volume or use its "
            "provider's storage encryption"
        )
    if load_kek(settings) is None:
        raise ConfigError(
            "encryption at rest is off: set encryption_key_file, encryption_key_env or encryption_kms_command first"
        )
    state = file_state(path)
    if state != "plain":
        return {"catalog": str(path), "converted": False, "state": state}
    key = catalog_key_for_conversion(settings)
    dbapi = _dbapi()
    _silence(dbapi)
    if _open_elsewhere(path):
        raise ConfigError(
            f"{path} is in use by another process (a running hub, a backup, ...): stop it and run "
            "`medcloud hub encrypt-catalog` again"
        )
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)
    con = dbapi.connect(str(path), isolation_level=None, timeout=2)
    try:
        try:
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except dbapi.OperationalError as exc:
            mode = str(exc)
        if str(mode).lower() != "delete":
            raise ConfigError(
                f"{path} is in use by another process (a running hub, a backup, ...): stop it and run "
                "`medcloud hub encrypt-catalog` again"
            )
        # Keep everyone else out until the new file has replaced this one.
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        con.execute("COMMIT")
        before = _row_counts(con)
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        if log is not None:
            log(f"encrypting {path} ({sum(before.values())} rows in {len(before)} tables) with SQLCipher")
        con.execute("ATTACH DATABASE ? AS enc KEY ?", (str(tmp), f"x'{key.hex()}'"))
        con.execute("SELECT sqlcipher_export('enc')")
        con.execute(f"PRAGMA enc.user_version = {version}")
        con.execute("DETACH DATABASE enc")
        check = connect(tmp, key)
        try:
            after = _row_counts(check)
            ok = check.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            check.close()
        if after != before or ok != "ok":
            raise MedcloudError(f"the encrypted copy of {path} does not match it ({ok}); the catalog is unchanged")
        fsync_path(tmp)
        for side in ("-wal", "-shm"):  # the plain file's, empty after leaving WAL mode
            path.with_name(path.name + side).unlink(missing_ok=True)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    return {"catalog": str(path), "converted": True, "state": "encrypted", "rows": sum(before.values())}


# SQLite's unix VFS: every connection that has a WAL database open holds a shared POSIX lock on this byte of
# the -shm file (the "DMS" lock) for as long as it is open, idle or not.
_SHM_DMS_BYTE = 128


def _open_elsewhere(path: Path) -> bool:
    """True when another process has the (WAL mode) database open: its lock on the -shm file shows.

    Asks with F_GETLK, which takes no lock. Call it before this process opens the database itself: closing
    a descriptor drops every POSIX lock the process holds on that file, SQLite's own included.
    """
    try:
        import fcntl
        import struct
    except ImportError:  # pragma: no cover - not on Windows
        return False
    shm = path.with_name(path.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (native layout, padded)
        probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return int(struct.unpack("hhqqi4x", answer)[0]) != fcntl.F_UNLCK
    finally:
        os.close(fd)


def catalog_key_for_conversion(settings: Any) -> bytes:
    """The catalog's key, made (and stored wrapped, durably) before any page is written with it."""
    env = _envelope(settings)
    try:
        key: bytes = env.ensure_key(CATALOG_KEY_ID)
    finally:
        env.close()
    return key


def catalog_status(settings: Any) -> dict[str, Any]:
    """How the catalog is protected at rest, for `at_rest_status` (never raises)."""
    url = settings.resolved_database_url
    path = catalog_path(url)
    if path is None:
        backend = url.split(":", 1)[0].split("+", 1)[0]
        return {
            "engine": backend,
            "encrypted": None,
            "applies": "PostgreSQL: not encrypted by medcloud; put its data directory on an encrypted volume "
            "(LUKS/dm-crypt) or use the provider's storage encryption, and record that as evidence",
        }
    state = file_state(path)
    out: dict[str, Any] = {"engine": "sqlite", "path": str(path), "encrypted": state == "encrypted", "state": state}
    if state == "plain":
        out["applies"] = (
            "the catalog is in clear: stop the hub and run `medcloud hub encrypt-catalog` (or restart it with "
            "`medcloud hub serve`, which converts it at start)"
        )
    elif state == "encrypted":
        out["applies"] = "SQLCipher page encryption, key wrapped by the KEK"
        out["key_id"] = CATALOG_KEY_ID
        try:
            con = connect(path, catalog_key(settings, url), read_only=True)
            con.close()
            out["key_verified"] = True
        except MedcloudError as exc:
            out["key_verified"] = False
            out["error"] = exc.detail
    return out
