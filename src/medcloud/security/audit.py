"""The tamper-evident audit trail: each event's hash covers its fields and the previous event's hash.

The chain alone only shows that rows fit together: whoever can write the database can recompute
every hash after an edit, or drop the newest rows. So the chain is also sealed with a key kept
outside the database (`AuditSeal`): each event carries an HMAC of its hash, and a small head file
beside the key holds the newest sealed (seq, hash), itself HMAC'd. An edit with recomputed hashes
breaks the MACs; a truncation leaves the chain shorter than its sealed head.

Storage lives in `medcloud.store.audit`; this module owns the chain rule, the seal and the check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: the writer lock of the catalog alone orders head updates there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CHAIN_FIELDS",
    "GENESIS",
    "HEAD_FILE",
    "KEY_FILE",
    "AuditSeal",
    "ChainReport",
    "SealedHead",
    "canonical_detail",
    "chain_hash",
    "verify_chain",
]

GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "ts", "subject", "action", "resource", "outcome", "client", "detail")
KEY_FILE = "audit.key"
HEAD_FILE = "audit.head"
_KEY_BYTES = 32
_SLOT = 256  # the head file holds two fixed-size slots, written in turn, so a torn write loses one at most


def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    """The detail dict as the one JSON string that is stored and hashed."""
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's fields in a fixed, unambiguous encoding."""
    payload = json.dumps([prev_hash, *[fields[k] for k in CHAIN_FIELDS]], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SealedHead:
    """The newest event the hub committed, as it recorded outside the database."""

    since: int  # the first event sealed with the key (events before it predate the key)
    seq: int
    hash: str


class AuditSeal:
    """The audit chain's key and sealed head: two files in a folder outside the database.

    The key (32 random bytes, mode 0600) is created on first use. Anyone holding it can forge
    events, so it belongs with the hub's other secrets, not beside a database copy.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._key = _load_or_create_key(folder / KEY_FILE)
        self._head_path = folder / HEAD_FILE
        self._lock = threading.Lock()
        # The head file's bytes as this process last wrote (or checked) them, and the head they hold:
        # the same bytes read again need not be parsed and checked again (any other bytes are).
        self._known: tuple[bytes, SealedHead | None] | None = None

    def event_mac(self, event_hash: str) -> str:
        """The MAC one event row carries: HMAC-SHA256 of its chain hash."""
        return hmac.digest(self._key, b"medcloud-audit-event\0" + event_hash.encode("ascii"), "sha256").hex()

    def _head_mac(self, since: int, seq: int, head_hash: str) -> str:
        msg = f"medcloud-audit-head\0{since}\0{seq}\0{head_hash}".encode("ascii")
        return hmac.digest(self._key, msg, "sha256").hex()

    def read_head(self) -> tuple[SealedHead | None, str]:
        """The sealed head (None if nothing was sealed yet) and, if the file is damaged, why."""
        try:
            raw = self._head_path.read_bytes()
        except FileNotFoundError:
            return None, ""
        head = self._newest(raw)
        if head is None:
            return None, f"the sealed head ({self._head_path.name}) is unreadable or was not written with this key"
        return head, ""

    def _newest(self, raw: bytes) -> SealedHead | None:
        heads = [h for h in (self._parse_slot(raw[i : i + _SLOT]) for i in (0, _SLOT)) if h is not None]
        return max(heads, key=lambda h: h.seq) if heads else None

    def _parse_slot(self, raw: bytes) -> SealedHead | None:
        try:
            d = json.loads(raw.decode("ascii").strip() or "null")
            head = SealedHead(int(d["since"]), int(d["seq"]), str(d["hash"]))
            ok = hmac.compare_digest(str(d["mac"]), self._head_mac(head.since, head.seq, head.hash))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None
        return head if ok else None

    def advance(self, seq: int, head_hash: str, *, first_sealed: int) -> None:
        """Record a committed head; an older one (another process got further) is ignored.

        `first_sealed` is the first event this writer sealed: it starts the sealed range when nothing
        was sealed before (then events before it are those that predate the key)."""
        with self._lock:
            fd = os.open(self._head_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # processes sharing the folder advance it in turn
                raw = os.pread(fd, 2 * _SLOT, 0)
                known = self._known
                current = known[1] if known is not None and known[0] == raw else self._newest(raw)
                self._known = (raw, current)
                if current is not None and current.seq >= seq:
                    return
                since = current.since if current is not None else first_sealed
                mac = self._head_mac(since, seq, head_hash)
                slot = json.dumps({"since": since, "seq": seq, "hash": head_hash, "mac": mac}).encode("ascii")
                slot = slot.ljust(_SLOT - 1) + b"\n"
                # Not fsynced: after a power cut the head may lag the database (a lower bound still),
                # never lead it, because it is written only after the commit.
                os.pwrite(fd, slot, (seq % 2) * _SLOT)
                if len(raw) == 2 * _SLOT and len(slot) == _SLOT:  # the file now holds `raw`, this slot replaced
                    at = (seq % 2) * _SLOT
                    self._known = (raw[:at] + slot + raw[at + _SLOT :], SealedHead(since, seq, head_hash))
            finally:
                os.close(fd)  # closing releases the flock


def _load_or_create_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return _load_or_create_key(path)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
    if len(key) < _KEY_BYTES:
        raise ValueError(f"audit key {path} is shorter than {_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class ChainReport:
    """What `verify_chain` found: ok, or the first bad event and why."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS
    sealed_seq: int | None = None
    checkpoints: int = 0  # signed Merkle checkpoints found to match the events (`store.audit`)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready fields."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "head_hash": self.head_hash,
            "sealed_seq": self.sealed_seq,
            "checkpoints": self.checkpoints,
        }


def verify_chain(rows: Iterable[Mapping[str, Any]], seal: AuditSeal | None = None) -> ChainReport:
    """Walk events in sequence order; name the first one that was altered, removed or reordered.

    With `seal`, also check each event's MAC (events from the first sealed one on must carry one) and
    that the chain reaches its sealed head with the sealed hash.
    """
    head, head_problem = seal.read_head() if seal is not None else (None, "")
    sealed_seq = head.seq if head is not None else None

    def bad(n: int, seq: int | None, reason: str, prev: str) -> ChainReport:
        return ChainReport(False, n, seq, reason, prev, sealed_seq)

    prev = GENESIS
    expected_seq = 1
    n = 0
    keyed = False
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            return bad(n, expected_seq, f"event {expected_seq} is missing (next is {seq})", prev)
        if row["prev_hash"] != prev:
            return bad(n, seq, f"event {seq} does not link to event {seq - 1}", prev)
        if chain_hash(prev, row) != row["hash"]:
            return bad(n, seq, f"event {seq} was altered: its hash does not match its content", prev)
        mac = row.get("mac")
        if seal is not None:
            if mac is None:
                if keyed or (head is not None and seq >= head.since):
                    return bad(n, seq, f"event {seq} was altered: its MAC was removed", prev)
            elif not hmac.compare_digest(str(mac), seal.event_mac(str(row["hash"]))):
                return bad(n, seq, f"event {seq} was altered: its MAC does not match (hashes recomputed)", prev)
            if head is not None and seq == head.seq and row["hash"] != head.hash:
                return bad(n, seq, f"event {seq} was altered: it differs from the sealed head", prev)
        keyed = keyed or mac is not None
        prev = str(row["hash"])
        expected_seq += 1
        n += 1
    if seal is None:
        if keyed:
            return bad(n, None, "the events are sealed but no audit key was given: their MACs are unchecked", prev)
    elif head_problem:
        return bad(n, None, head_problem, prev)
    elif head is None and keyed:
        return bad(n, None, "the sealed head is missing: newest events may have been removed", prev)
    elif head is not None and n < head.seq:
        return bad(n, n + 1, f"events {n + 1} to {head.seq} are missing: the chain was sealed at {head.seq}", prev)
    return ChainReport(True, n, None, "", prev, sealed_seq)
