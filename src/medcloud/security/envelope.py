"""Encryption at rest: envelope encryption with AES-256-GCM.

Every pack, every large blob and every gateway session gets its own random 256-bit *data key*; the data
key encrypts the bytes and is itself stored only *wrapped* (encrypted) by a *key-encryption key* (KEK)
that lives outside the data folder: in a file, in an environment variable, or behind a KMS-style
command. The wrapped data keys sit in a small SQLite table next to what they protect
(`<blob root>/keys.sqlite3`, `<gateway state>/keys.sqlite3`); without the KEK they are useless.

Rotating the KEK re-wraps the data keys (a few dozen bytes each) and never re-encrypts the data. Each
data key row records the id of the KEK that wraps it, so a rotation killed half-way resumes where it
stopped, and while it runs both the old and the new KEK are accepted for unwrapping.

Formats (all authenticated; a flipped bit anywhere is an IntegrityError, never garbage):

- *stream* (large blobs, outbox payloads): `MCENCS01`, u16 key-id length, key id, u32 chunk size,
  7-byte nonce prefix; then chunks of `chunk size` plaintext bytes, each AES-GCM sealed (ciphertext +
  16-byte tag) with nonce = prefix + u32 chunk index + last-chunk flag, and the header as associated
  data. The flag on the last chunk makes truncation at a chunk boundary detectable. Random access
  (a whole-slide image read tile by tile) decrypts only the chunks it touches.
- *sealed value* (catalog values such as stored DICOM JSON): `MCE1`, u16 key-id length, key id,
  12-byte nonce, ciphertext + tag.
- pack records (`store/packs.py`) carry a flag and `nonce + ciphertext + tag`, with the pack's name as
  the data key id.

KEK sources, by the settings `encryption_key_file`, `encryption_key_env`, `encryption_kms_command`
(encryption is on when any is set):

- a key file or environment variable holds one or more keys, one per line (or comma separated in the
  variable), each 32 bytes as 64 hex digits or base64. The first is the current key (it wraps new data
  keys); the others are accepted for unwrapping only (a rotation in progress).
- a KMS command is run with one JSON request on stdin and answers one JSON object on stdout:
  `{"op": "wrap", "key": B64, "context": ID}` -> `{"kek_id": ..., "wrapped": B64}`;
  `{"op": "unwrap", "kek_id": ..., "wrapped": B64, "context": ID}` -> `{"key": B64}`;
  `{"op": "current"}` -> `{"kek_id": ...}`. A non-zero exit is a refusal.

This module imports nothing of the store (the gateway uses it too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import json
import os
import shlex
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medcloud.errors import ConfigError, IntegrityError, MedcloudError
from medcloud.fsio import sqlite_immediate

__all__ = [
    "STREAM_MAGIC",
    "DataKey",
    "Envelope",
    "KeyUnavailable",
    "at_rest_status",
    "load_kek",
    "rotate_key_file",
    "store_envelope",
]

KEY_BYTES = 32
STREAM_MAGIC = b"MCENCS01"
VALUE_MAGIC = b"MCE1"
TEXT_PREFIX = "mcenc1:"
CHUNK = 64 * 1024
TAG = 16
_WRAP_AAD = b"medcloud data key\x00"


class KeyUnavailable(MedcloudError):
    """Encrypted data whose key-encryption key is not configured, or a KEK that does not fit."""

    status = 503
    type_slug = "key-unavailable"
    title = "Encryption key unavailable"
    exit_code = 6


class KeySettings(Protocol):
    """What this module reads of a settings object (the hub's `Settings`, the gateway's config)."""

    @property
    def encryption_key_file(self) -> Path | None: ...
    @property
    def encryption_key_env(self) -> str | None: ...
    @property
    def encryption_kms_command(self) -> str | None: ...


# -- key-encryption keys ---------------------------------------------------------------------------------


def kek_id(key: bytes) -> str:
    """A KEK's public name: a hash prefix that identifies it and reveals nothing of it."""
    return "k-" + hashlib.sha256(b"medcloud kek id\x00" + key).hexdigest()[:16]


def parse_keys(text: str, where: str) -> list[bytes]:
    """Keys in a key file or variable: one per line or comma, 64 hex digits or base64 of 32 bytes."""
    keys: list[bytes] = []
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        key: bytes | None = None
        if len(item) == 2 * KEY_BYTES:
            with contextlib.suppress(ValueError):
                key = bytes.fromhex(item)
        if key is None:
            with contextlib.suppress(binascii.Error, ValueError):
                key = base64.b64decode(item, validate=True)
        if key is None or len(key) != KEY_BYTES:
            raise ConfigError(f"{where}: a key must be {KEY_BYTES} bytes as 64 hex digits or base64")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{where} holds no key")
    return keys


def new_key_text() -> str:
    """A fresh KEK as a key file line."""
    return os.urandom(KEY_BYTES).hex()


class Kek:
    """A source of key-encryption keys: wraps data keys with its current KEK, unwraps with any it knows."""

    source: str = ""

    def describe(self) -> str:
        return self.source

    def current_id(self) -> str:
        raise NotImplementedError

    def known_ids(self) -> list[str]:
        return [self.current_id()]

    def wrap(self, key: bytes, context: str) -> tuple[str, bytes]:
        raise NotImplementedError

    def unwrap(self, kek: str, wrapped: bytes, context: str) -> bytes:
        raise NotImplementedError

    def refresh(self) -> None:
        """Re-read the keys if their source can change under a running process (a key file)."""


def _aes_wrap(key: bytes, data_key: bytes, context: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data_key, _WRAP_AAD + context.encode())


def _aes_unwrap(key: bytes, wrapped: bytes, context: str) -> bytes:
    return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + context.encode())


class LocalKeyring(Kek):
    """Keys from a file or an environment variable; the first one is current."""

    def __init__(self, source: str, loader: Callable[[], str], where: str) -> None:
        self.source = source
        self.where = where
        self._loader = loader
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self._lock = threading.Lock()
        self.refresh()

    def describe(self) -> str:
        return f"{self.source} ({self.where})"

    def refresh(self) -> None:
        keys = parse_keys(self._loader(), self.where)
        with self._lock:
            self._keys = {kek_id(k): k for k in keys}
            self._current = kek_id(keys[0])

    def current_id(self) -> str:
        return self._current

    def known_ids(self) -> list[str]:
        return list(self._keys)

    def wrap(self, key: bytes, context: str) -> tuple[str, bytes]:
        with self._lock:
            current = self._current
            kek = self._keys[current]
        return current, _aes_wrap(kek, key, context)

    def unwrap(self, kek: str, wrapped: bytes, context: str) -> bytes:
        secret = self._keys.get(kek)
        if secret is None:
            self.refresh()  # a rotation may have added it since we read the keys
            secret = self._keys.get(kek)
        if secret is None:
            raise KeyUnavailable(
                f"data key {context} is wrapped by key-encryption key {kek}, which {self.describe()} does not hold"
                f" (it holds {', '.join(self._keys)}): configure the right key"
            )
        try:
            return _aes_unwrap(secret, wrapped, context)
        except InvalidTag:
            raise IntegrityError(f"data key {context}: its wrapped form is damaged or was altered") from None


class KmsCommand(Kek):
    """A KMS-style hook: a command that wraps and unwraps data keys (JSON over stdin/stdout)."""

    source = "kms"

    def __init__(self, command: str, timeout: float = 30.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ConfigError("encryption_kms_command is empty")
        self.timeout = timeout
        self._current: str | None = None

    def describe(self) -> str:
        return f"kms ({self.argv[0]})"

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            done = subprocess.run(
                self.argv, input=json.dumps(request).encode(), capture_output=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KeyUnavailable(f"the KMS command {self.argv[0]} could not be run: {exc}") from None
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip()[-300:]
            raise KeyUnavailable(f"the KMS refused to {request['op']} (exit {done.returncode}): {why}")
        try:
            answer = json.loads(done.stdout)
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise KeyUnavailable(f"the KMS command answered something that is not a JSON object: {exc}") from None
        return answer

    def current_id(self) -> str:
        answer = self._call({"op": "current"})
        self._current = str(answer["kek_id"])
        return self._current

    def wrap(self, key: bytes, context: str) -> tuple[str, bytes]:
        answer = self._call({"op": "wrap", "key": base64.b64encode(key).decode(), "context": context})
        try:
            return str(answer["kek_id"]), base64.b64decode(answer["wrapped"])
        except (KeyError, ValueError, binascii.Error) as exc:
            raise KeyUnavailable(f"the KMS's wrap answer lacks {exc}") from None

    def unwrap(self, kek: str, wrapped: bytes, context: str) -> bytes:
        answer = self._call(
            {"op": "unwrap", "kek_id": kek, "wrapped": base64.b64encode(wrapped).decode(), "context": context}
        )
        try:
            key = base64.b64decode(answer["key"])
        except (KeyError, ValueError, binascii.Error) as exc:
            raise KeyUnavailable(f"the KMS's unwrap answer lacks {exc}") from None
        if len(key) != KEY_BYTES:
            raise KeyUnavailable(f"the KMS unwrapped data key {context} to {len(key)} bytes, not {KEY_BYTES}")
        return key


def load_kek(settings: KeySettings) -> Kek | None:
    """The KEK source the settings name, or None when encryption at rest is off.

    More than one source set is refused: which key wraps what must never be a guess.
    """
    chosen = [
        n for n in ("encryption_key_file", "encryption_key_env", "encryption_kms_command") if getattr(settings, n)
    ]
    if len(chosen) > 1:
        raise ConfigError(f"set only one of {', '.join(chosen)}")
    if settings.encryption_key_file is not None:
        path = Path(settings.encryption_key_file)

        def read_file() -> str:
            try:
                return path.read_text("utf-8")
            except OSError as exc:
                raise KeyUnavailable(f"encryption key file {path}: {exc.strerror or exc}") from None

        return LocalKeyring("file", read_file, str(path))
    if settings.encryption_key_env:
        name = settings.encryption_key_env

        def read_env() -> str:
            value = os.environ.get(name)
            if not value:
                raise KeyUnavailable(f"environment variable {name} (encryption_key_env) is not set")
            return value

        return LocalKeyring("env", read_env, f"${name}")
    if settings.encryption_kms_command:
        return KmsCommand(settings.encryption_kms_command)
    return None


# -- data keys and their table -----------------------------------------------------------------------------


@dataclass
class DataKey:
    id: str
    key: bytes = field(repr=False)

    def aead(self) -> AESGCM:
        return AESGCM(self.key)


class KeyTable:
    """Wrapped data keys: `data_keys(id, kek_id, wrapped, created_at)` in their own SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # losing a row loses what its key encrypted
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_keys (id TEXT PRIMARY KEY, kek_id TEXT NOT NULL,"
            " wrapped BLOB NOT NULL, created_at REAL NOT NULL)"
        )
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    @contextlib.contextmanager
    def immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the table's lock across processes (rotation against writers)."""
        with sqlite_immediate(self._db, self._lock) as db:
            yield db

    def get(self, key_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            row = self._db.execute("SELECT kek_id, wrapped FROM data_keys WHERE id = ?", (key_id,)).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM data_keys")}

    def by_kek(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kek_id, count(*) FROM data_keys GROUP BY kek_id").fetchall()
        return {str(k): int(n) for k, n in rows}

    def not_under(self, kek: str, limit: int = 200) -> list[tuple[str, str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kek_id, wrapped FROM data_keys WHERE kek_id != ? ORDER BY id LIMIT ?", (kek, limit)
            ).fetchall()
        return [(str(i), str(k), bytes(w)) for i, k, w in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class RewrapReport:
    current: str
    rewrapped: int = 0
    remaining: int = 0
    retired: list[str] = field(default_factory=list)


class Envelope:
    """Data keys for one store: made, wrapped, kept in a `KeyTable`, unwrapped on demand and cached.

    With `kek=None` (encryption off) nothing new is encrypted, yet data encrypted earlier is still
    recognised: reading it raises `KeyUnavailable` with a clear message instead of returning ciphertext.
    """

    def __init__(self, kek: Kek | None, table_path: Path, cache_size: int = 4096) -> None:
        self.kek = kek
        self.table_path = table_path
        self._table: KeyTable | None = None
        self._cache: OrderedDict[str, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._value_key: DataKey | None = None

    @property
    def enabled(self) -> bool:
        return self.kek is not None

    @property
    def table(self) -> KeyTable:
        with self._lock:
            if self._table is None:
                self._table = KeyTable(self.table_path)
            return self._table

    def close(self) -> None:
        with self._lock:
            if self._table is not None:
                self._table.close()
                self._table = None

    # -- making keys -----------------------------------------------------------------------------
    def new_key(self, prefix: str) -> DataKey:
        """A fresh data key (not yet stored: `persist` it before anything it encrypted becomes durable)."""
        return DataKey(f"{prefix}{uuid.uuid4().hex[:20]}", os.urandom(KEY_BYTES))

    def persist(self, dk: DataKey) -> None:
        """Wrap `dk` with the current KEK and store it durably (see `persist_many`)."""
        self.persist_many([dk])

    def persist_many(self, dks: list[DataKey]) -> None:
        """Wrap each key with the current KEK and store them all durably, in one transaction (one sync).

        A key file is re-read inside the table's write transaction, so a rotation that has put a new
        key first is honoured by every writer from that moment (see `rewrap`).
        """
        if self.kek is None:
            raise ConfigError("encryption at rest is off: no key-encryption key to wrap a data key with")
        with self.table.immediate() as db:
            self.kek.refresh()
            now = time.time()
            for dk in dks:
                kid, wrapped = self.kek.wrap(dk.key, dk.id)
                db.execute("INSERT INTO data_keys VALUES (?, ?, ?, ?)", (dk.id, kid, wrapped, now))
        for dk in dks:
            self._remember(dk.id, dk.aead())

    def create_key(self, key_id: str) -> DataKey:
        return self.create_keys([key_id])[0]

    def create_keys(self, key_ids: list[str]) -> list[DataKey]:
        """Fresh data keys under the given ids, stored durably together before any of them is used."""
        dks = [DataKey(key_id, os.urandom(KEY_BYTES)) for key_id in key_ids]
        self.persist_many(dks)
        return dks

    def ensure_key(self, key_id: str) -> bytes:
        """The raw bytes of the named data key, made and stored (wrapped) on first use.

        For a consumer that needs the key itself rather than this module's cipher: the catalog's SQLCipher
        page key (`medcloud.security.catalog_cipher`). Two processes asking at once get the same key: the
        lookup and the insert run in one write transaction of the key table.
        """
        if self.kek is None:
            raise ConfigError("encryption at rest is off: no key-encryption key to wrap a data key with")
        with self.table.immediate() as db:
            row = db.execute("SELECT kek_id, wrapped FROM data_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                self.kek.refresh()
                key = os.urandom(KEY_BYTES)
                kid, wrapped = self.kek.wrap(key, key_id)
                db.execute("INSERT INTO data_keys VALUES (?, ?, ?, ?)", (key_id, kid, wrapped, time.time()))
                return key
        return self.key_bytes(key_id)

    def key_bytes(self, key_id: str) -> bytes:
        """The raw bytes of a stored data key (not cached); KeyUnavailable when no configured KEK unwraps it."""
        row = self.table.get(key_id)
        if row is None:
            raise IntegrityError(f"data key {key_id} is missing from {self.table_path} (restore it from a backup)")
        if self.kek is None:
            raise KeyUnavailable(
                f"data key {key_id} is encrypted at rest but no key-encryption key is configured"
                " (set encryption_key_file, encryption_key_env or encryption_kms_command)"
            )
        return self.kek.unwrap(row[0], row[1], key_id)

    def _remember(self, key_id: str, aead: AESGCM) -> None:
        with self._lock:
            self._cache[key_id] = aead
            self._cache.move_to_end(key_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def aead(self, key_id: str) -> AESGCM:
        """The cipher of data key `key_id`; KeyUnavailable when no configured KEK unwraps it."""
        with self._lock:
            found = self._cache.get(key_id)
            if found is not None:
                self._cache.move_to_end(key_id)
                return found
        aead = AESGCM(self.key_bytes(key_id))
        self._remember(key_id, aead)
        return aead

    # -- small values (catalog) ----------------------------------------------------------------------
    def value_key(self) -> DataKey:
        """This process's key for catalog values, made and stored on first use (a hub makes it at start,
        so that its first upload does not wait for the key table)."""
        with self._lock:
            dk = self._value_key
        if dk is None:
            dk = self.new_key("v-")
            self.persist(dk)
            with self._lock:
                self._value_key = dk
        return dk

    def seal_value(self, data: bytes, context: bytes) -> bytes:
        """Encrypt a catalog value with this process's value key (plain bytes back when encryption is off)."""
        if self.kek is None:
            return data
        dk = self.value_key()
        kid = dk.id.encode()
        head = VALUE_MAGIC + struct.pack("<H", len(kid)) + kid
        nonce = os.urandom(12)
        return head + nonce + self.aead(dk.id).encrypt(nonce, data, head + context)

    def open_value(self, blob: bytes, context: bytes) -> bytes:
        """The plain value of `seal_value`'s output; values stored before encryption pass through."""
        if not blob.startswith(VALUE_MAGIC):
            return blob
        try:
            (n,) = struct.unpack_from("<H", blob, 4)
            kid = blob[6 : 6 + n].decode()
            head, rest = blob[: 6 + n], blob[6 + n :]
            return self.aead(kid).decrypt(rest[:12], rest[12:], head + context)
        except (InvalidTag, struct.error, UnicodeDecodeError, ValueError):
            raise IntegrityError("an encrypted catalog value failed authentication (damaged or altered)") from None

    def seal_text(self, text: str, context: bytes) -> str:
        """`seal_value` for a text column: `mcenc1:` + base64 (plain text back when encryption is off)."""
        if self.kek is None:
            return text
        return TEXT_PREFIX + base64.b64encode(self.seal_value(text.encode("utf-8"), context)).decode("ascii")

    def open_text(self, text: str, context: bytes) -> str:
        """The plain form of `seal_text`'s output; text stored before encryption passes through."""
        if not text.startswith(TEXT_PREFIX):
            return text
        try:
            blob = base64.b64decode(text[len(TEXT_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            return text  # plain text that happens to start like a sealed one
        if not blob.startswith(VALUE_MAGIC):
            return text
        return self.open_value(blob, context).decode("utf-8")

    # -- streams -------------------------------------------------------------------------------------
    def writer(self, fh: BinaryIO, dk: DataKey, context: bytes = b"") -> StreamWriter:
        self._remember(dk.id, dk.aead())
        return StreamWriter(fh, dk, context)

    def seal_bytes(self, data: bytes, dk: DataKey, context: bytes = b"") -> bytes:
        out = io.BytesIO()
        w = self.writer(out, dk, context)
        w.write(data)
        w.finalize()
        return out.getvalue()

    def open_stream(self, fh: BinaryIO, context: bytes = b"") -> io.BufferedReader:
        """A seekable reader of a stream's plaintext (`fh` starts with STREAM_MAGIC)."""
        return io.BufferedReader(StreamReader(fh, self, context), buffer_size=CHUNK)

    # -- rotation ----------------------------------------------------------------------------------------
    def rewrap(self, progress: Callable[[int], None] | None = None, *, finish: Callable[[], None] | None = None
               ) -> RewrapReport:  # fmt: skip
        """Re-wrap every data key not under the current KEK with it; resumable (each row commits alone).

        `finish` runs inside the table's write lock once no row is left under an old KEK (retiring the
        old keys there means no writer can wrap with one of them afterwards).
        """
        if self.kek is None:
            raise ConfigError("encryption at rest is off: there is no key-encryption key to rotate to")
        self.kek.refresh()
        report = RewrapReport(self.kek.current_id())
        table = self.table
        while True:
            rows = table.not_under(report.current)
            if not rows:
                break
            for key_id, old, wrapped in rows:
                key = self.kek.unwrap(old, wrapped, key_id)
                kid, new = self.kek.wrap(key, key_id)
                if kid != report.current:
                    raise KeyUnavailable(f"the KEK changed during the rotation ({report.current} -> {kid}); run again")
                with table.immediate() as db:
                    db.execute(
                        "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE id = ? AND kek_id = ?",
                        (kid, new, key_id, old),
                    )
                report.rewrapped += 1
                if progress is not None:
                    progress(1)
        with table.immediate() as db:
            left = db.execute("SELECT count(*) FROM data_keys WHERE kek_id != ?", (report.current,)).fetchone()[0]
            report.remaining = int(left)
            if not left and finish is not None:
                finish()
        return report

    # -- evidence ---------------------------------------------------------------------------------------
    def key_status(self) -> dict[str, Any]:
        by_kek = self.table.by_kek() if self.table_path.exists() else {}
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "kek_source": self.kek.describe() if self.kek else None,
            "data_keys": sum(by_kek.values()),
            "data_keys_by_kek": by_kek,
            "kek_ids_in_use": sorted(by_kek),
        }
        if self.kek is not None:
            try:
                out["current_kek_id"] = self.kek.current_id()
                out["rotation_pending"] = any(k != out["current_kek_id"] for k in by_kek)
            except MedcloudError as exc:
                out["error"] = exc.detail
        return out


def rotate_key_file(env: Envelope, path: Path, *, retire: bool = True) -> RewrapReport:
    """Rotate a key file's KEK: a new key first in the file, every data key re-wrapped, old keys removed.

    Resumable: a file that already holds more than one key is a rotation in progress, which this
    completes (no second new key). The old keys are removed inside the key table's write lock once no
    data key is wrapped by them, so a hub writing meanwhile never wraps with a key about to go.
    """
    from medcloud.fsio import write_atomic

    keys = parse_keys(path.read_text("utf-8"), str(path))
    if len(keys) == 1:
        keys = [os.urandom(KEY_BYTES), *keys]
        write_atomic(path, "".join(k.hex() + "\n" for k in keys).encode(), mode=0o600)
    retired: list[str] = []

    def finish() -> None:
        if retire and len(keys) > 1:
            write_atomic(path, (keys[0].hex() + "\n").encode(), mode=0o600)
            retired.extend(kek_id(k) for k in keys[1:])

    report = env.rewrap(finish=finish)
    report.retired = retired
    if env.kek is not None:
        env.kek.refresh()
    return report


def store_envelope(settings: Any) -> Envelope:
    """The envelope of the hub's blob store: the settings' KEK (None: off) and `<blob root>/keys.sqlite3`."""
    return Envelope(load_kek(settings), Path(settings.resolved_blob_dir) / "keys.sqlite3")


# -- the stream format ------------------------------------------------------------------------------------


def _stream_header(key_id: str, prefix: bytes, chunk: int = CHUNK) -> bytes:
    kid = key_id.encode()
    return STREAM_MAGIC + struct.pack("<H", len(kid)) + kid + struct.pack("<I", chunk) + prefix


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class StreamWriter:
    """Encrypts what is written into `fh` in the stream format; `finalize()` seals the last chunk."""

    def __init__(self, fh: BinaryIO, dk: DataKey, context: bytes = b"") -> None:
        self._fh = fh
        self._aead = dk.aead()
        self._prefix = os.urandom(7)
        self._header = _stream_header(dk.id, self._prefix)
        self._aad = self._header + context
        self._buf = bytearray()
        self._index = 0
        fh.write(self._header)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK:  # hold the last chunk back: only finalize() knows it is the last
            self._emit(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _emit(self, chunk: bytes, *, last: bool) -> None:
        self._fh.write(self._aead.encrypt(_nonce(self._prefix, self._index, last), chunk, self._aad))
        self._index += 1

    def finalize(self) -> None:
        self._emit(bytes(self._buf), last=True)
        self._buf.clear()

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()


class StreamReader(io.RawIOBase):
    """Random-access plaintext view of a stream: only the chunks a read touches are decrypted."""

    def __init__(self, fh: BinaryIO, envelope: Envelope, context: bytes = b"") -> None:
        super().__init__()
        self._fh = fh
        head = fh.read(len(STREAM_MAGIC) + 2)
        if len(head) < len(STREAM_MAGIC) + 2 or not head.startswith(STREAM_MAGIC):
            raise IntegrityError("not an encrypted medcloud stream")
        (n,) = struct.unpack_from("<H", head, len(STREAM_MAGIC))
        rest = fh.read(n + 4 + 7)
        if len(rest) < n + 11:
            raise IntegrityError("an encrypted stream's header is cut short")
        try:
            self.key_id = rest[:n].decode()
        except UnicodeDecodeError:
            raise IntegrityError("an encrypted stream's header is damaged") from None
        (self._chunk,) = struct.unpack_from("<I", rest, n)
        self._prefix = rest[n + 4 : n + 11]
        if not 0 < self._chunk <= 64 * 1024**2:
            raise IntegrityError("an encrypted stream's header is damaged")
        self._aad = head + rest + context
        self._start = len(head) + len(rest)
        total = os.fstat(fh.fileno()).st_size if _has_fileno(fh) else _seek_size(fh)
        body = total - self._start
        self._nchunks = max(1, -(-body // (self._chunk + TAG)))
        self.size = body - self._nchunks * TAG
        if self.size < 0:
            raise IntegrityError("an encrypted stream is cut short")
        self._aead = envelope.aead(self.key_id)
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def _plain_chunk(self, i: int) -> bytes:
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        self._fh.seek(self._start + i * (self._chunk + TAG))
        sealed = self._fh.read(self._chunk + TAG)
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, i, i == self._nchunks - 1), sealed, self._aad)
        except InvalidTag:
            raise IntegrityError(f"encrypted chunk {i} failed authentication (damaged, altered or cut)") from None
        self._cached = (i, plain)
        return plain

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size or not len(view):
            if self._pos >= self.size and self._nchunks == 1 and self.size == 0:
                self._plain_chunk(0)  # authenticate an empty stream too
            return 0
        i, off = divmod(self._pos, self._chunk)
        plain = self._plain_chunk(i)[off:]
        n = min(len(view), len(plain))
        view[:n] = plain[:n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _has_fileno(fh: BinaryIO) -> bool:
    try:
        fh.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return False
    return True


def _seek_size(fh: BinaryIO) -> int:
    here = fh.tell()
    end = fh.seek(0, io.SEEK_END)
    fh.seek(here)
    return end


def is_stream(head: bytes) -> bool:
    return head.startswith(STREAM_MAGIC)


# What a catalog without page encryption keeps in clear so that it can be searched (docs/security.md): a
# PostgreSQL catalog (put it on an encrypted volume), or a SQLite one not yet converted. Stored DICOM JSON and
# report text are sealed per value in any case. An encrypted SQLite catalog (SQLCipher,
# `medcloud.security.catalog_cipher`) keeps nothing of these in clear: `CATALOG_IN_CLEAR_SQLCIPHER`.
CATALOG_IN_CLEAR_SQLCIPHER: list[str] = []
CATALOG_IN_CLEAR = [
    "studies: patient_pseudonym, patient_sex, patient_age, study_date, description, UIDs",
    "series: modality, body_part, description, UIDs",
    "instances: UIDs, sizes, geometry",
    "images: filename, media type, size",
    "reports: date, pseudonym, report key (the text is sealed)",
    "audit_events, tokens (hashes), datasets, jobs",
]


# -- evidence for the self-check ------------------------------------------------------------------------------


def at_rest_status(settings: Any) -> dict[str, Any]:
    """Encryption at rest as the self-check reports it: on?, KEK source, data key ids, share encrypted.

    `settings` is the hub's `Settings` (its blob store is inspected, read-only). Never raises for a
    missing or wrong key: the problem is reported under `error` and `ok` is False.
    """
    out: dict[str, Any] = {"enabled": False, "kek_source": None, "ok": False}
    try:
        kek = load_kek(settings)
    except MedcloudError as exc:
        out["error"] = exc.detail
        return out
    blob_root = Path(settings.resolved_blob_dir)
    env = Envelope(kek, blob_root / "keys.sqlite3")
    try:
        out.update(env.key_status())
        shares = _blob_shares(blob_root, env.table.ids() if env.table_path.exists() else set())
        out.update(shares)
        if kek is not None and "error" not in out and env.table_path.exists():
            # One data key must unwrap with the configured KEK, else the KEK is the wrong one.
            with contextlib.suppress(StopIteration):
                sample = next(iter(sorted(env.table.ids())))
                try:
                    env.aead(sample)
                    out["kek_verified"] = True
                except MedcloudError as exc:
                    out["error"] = exc.detail
                    out["kek_verified"] = False
    finally:
        env.close()
    out["catalog_in_clear"] = CATALOG_IN_CLEAR
    ok = bool(out["enabled"]) and "error" not in out and out.get("blobs_plain", 0) == 0
    if getattr(settings, "resolved_database_url", None) is not None:
        from medcloud.security.catalog_cipher import catalog_status

        cat = catalog_status(settings)
        out["catalog"] = cat
        if cat["encrypted"]:
            out["catalog_in_clear"] = CATALOG_IN_CLEAR_SQLCIPHER
        if cat["engine"] == "sqlite":
            # An embedded catalog is medcloud's to encrypt: in clear (or unreadable with this key) fails.
            ok = ok and bool(cat["encrypted"]) and bool(cat.get("key_verified"))
            if ok:
                out["summary"] = "blob store and catalog (SQLCipher pages) encrypted; the KEK unwraps their keys"
            elif not out["enabled"]:
                out["summary"] = "encryption at rest is off"
            else:
                why = [str(e) for e in (out.get("error"), cat.get("error")) if e]
                if out.get("blobs_plain"):
                    why.append(f"{out['blobs_plain']} blob(s) stored in clear")
                if not cat["encrypted"]:
                    why.append(str(cat.get("applies") or "no catalog"))
                out["summary"] = "; ".join(why)
        else:
            # A PostgreSQL catalog's storage is the database administrator's: it cannot be checked from here.
            out["summary"] = cat["applies"]
            if ok:
                out["status"] = "WARN"
    out["ok"] = ok
    if "status" not in out:
        out["status"] = "PASS" if ok else "FAIL"
    return out


def _blob_shares(root: Path, key_ids: set[str]) -> dict[str, Any]:
    """How many stored blobs are encrypted: packs by their data key, large files by their header."""
    enc = plain = 0
    index = root / "packs" / "index.sqlite3"
    if index.exists():
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            for pack, n in db.execute("SELECT pack, count(*) FROM blobs GROUP BY pack"):
                if pack in key_ids:
                    enc += int(n)
                else:
                    plain += int(n)
        except sqlite3.Error:
            pass
        finally:
            db.close()
    for path in root.glob("??/??/*"):
        if len(path.name) != 64 or not path.is_file():
            continue
        with path.open("rb") as fh:
            if is_stream(fh.read(len(STREAM_MAGIC))):
                enc += 1
            else:
                plain += 1
    total = enc + plain
    return {
        "blobs_encrypted": enc,
        "blobs_plain": plain,
        "share_encrypted": round(enc / total, 4) if total else None,
    }
