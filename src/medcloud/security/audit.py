"""The tamper-evident audit trail: each event's hash covers its fields and the previous event's hash.

Storage lives in the catalog (`medcloud.store.catalog`); this module owns the chain rule and its check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "ts", "subject", "action", "resource", "outcome", "client", "detail")


def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's fields in a fixed, unambiguous encoding."""
    payload = json.dumps([prev_hash, *[fields[k] for k in CHAIN_FIELDS]], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "head_hash": self.head_hash,
        }


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> ChainReport:
    """Walk events in sequence order; name the first one that was altered, removed or reordered."""
    prev = GENESIS
    expected_seq = 1
    n = 0
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            return ChainReport(False, n, expected_seq, f"event {expected_seq} is missing (next is {seq})", prev)
        if row["prev_hash"] != prev:
            return ChainReport(False, n, seq, f"event {seq} does not link to event {seq - 1}", prev)
        if chain_hash(prev, row) != row["hash"]:
            return ChainReport(False, n, seq, f"event {seq} was altered: its hash does not match its content", prev)
        prev = str(row["hash"])
        expected_seq += 1
        n += 1
    return ChainReport(True, n, None, "", prev)
