"""Signed Merkle checkpoints over the audit log, in the manner of RFC 9162 (Certificate Transparency v2).

The hash chain (`security.audit`) shows that rows fit together, but only to whoever holds the catalog.
A hospital checks the log from outside with this module and the hub's public key alone:

- leaf hash = SHA-256(0x00 || entry), node hash = SHA-256(0x01 || left || right) (RFC 9162 §2.1.1);
  an audit event's entry is its chained fields in the chain's own JSON encoding (`leaf_entry`);
- a signed tree head (`TreeHead`): tree size, timestamp and root hash signed with the hub's Ed25519
  log key, which lives in the hub's secrets folder, never in the catalog;
- inclusion proofs (§2.1.3: this event is leaf i of the tree the hub signed) and consistency proofs
  (§2.1.4: the tree the hospital saw earlier is a prefix of today's, so the log only grew).

Proof generation is the recursive definition of the RFC over a `MerkleTree` that caches the hashes of
complete, aligned subtrees (they never change as the log grows); verification is the RFC's iterative
algorithm and needs nothing but the proof, the tree head and the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcloud.security.audit import CHAIN_FIELDS

__all__ = [
    "EMPTY_ROOT",
    "LOG_KEY_FILE",
    "LeafHashes",
    "LogKey",
    "MerkleTree",
    "ProofError",
    "TreeHead",
    "leaf_entry",
    "leaf_hash",
    "load_public_key",
    "node_hash",
    "rotation_statement",
    "trusted_keys",
    "verify_consistency",
    "verify_inclusion",
    "verify_proof_document",
    "verify_rotation",
]

LOG_KEY_FILE = "audit-log.ed25519"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = HASH() (RFC 9162 §2.1.1)
PROOF_FORMAT = "medcloud-audit-proof/1"
_STH_CONTEXT = b"medcloud-audit-tree-head/1\0"
ROTATION_FORMAT = "medcloud-log-key-rotation/1"
KEYS_FORMAT = "medcloud-log-keys/1"
_ROTATION_CONTEXT = b"medcloud-audit-log-key-rotation/1\0"
_ROTATION_FIELDS = ("format", "old_log_id", "old_public_key", "new_log_id", "new_public_key", "tree_head")
# Complete subtrees at least this large keep their hash: memory stays ~1/64 of the leaves.
_CACHE_MIN = 64


class ProofError(ValueError):
    """A proof, tree head or signature that does not verify; the message says which and why."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_entry(event: Mapping[str, Any]) -> bytes:
    """The bytes one audit event contributes as a leaf: its chained fields, as the chain encodes them."""
    fields = [event[k] for k in CHAIN_FIELDS]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class LeafHashes:
    """Leaf hashes packed 32 bytes each (a list of bytes objects costs ~3x the memory)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf) // 32

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self._buf[32 * i : 32 * i + 32])

    def append(self, h: bytes) -> None:
        if len(h) != 32:
            raise ValueError("a leaf hash is 32 bytes")
        self._buf += h

    def truncate(self, n: int) -> None:
        del self._buf[32 * n :]


class MerkleTree:
    """RFC 9162 tree hashes and proofs over a growing sequence of leaf hashes."""

    def __init__(self, leaves: Sequence[bytes] | LeafHashes) -> None:
        self.leaves = leaves
        self._cache: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self.leaves)

    def forget(self) -> None:
        """Drop cached subtree hashes (after the leaves were replaced)."""
        self._cache.clear()

    def subtree(self, start: int, size: int) -> bytes:
        """MTH(D[start:start+size])."""
        if size == 0:
            return EMPTY_ROOT
        if size == 1:
            return self.leaves[start]
        complete = size & (size - 1) == 0 and start % size == 0
        if complete and size >= _CACHE_MIN:
            hit = self._cache.get((start, size))
            if hit is not None:
                return hit
        k = _split(size)
        h = node_hash(self.subtree(start, k), self.subtree(start + k, size - k))
        if complete and size >= _CACHE_MIN:
            self._cache[(start, size)] = h
        return h

    def root(self, size: int | None = None) -> bytes:
        size = len(self) if size is None else size
        self._check_size(size)
        return self.subtree(0, size)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise ValueError(f"tree size {size} is outside 0..{len(self)}")

    def inclusion_path(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1)."""
        size = len(self) if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, start: int, n: int) -> list[bytes]:
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, start, k), self.subtree(start + k, n - k)]
        return [*self._path(m - k, start + k, n - k), self.subtree(start, k)]

    def consistency_path(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:size]) (RFC 9162 §2.1.4.1); empty when old_size is 0 or equals size."""
        size = len(self) if size is None else size
        self._check_size(size)
        if not 0 <= old_size <= size:
            raise ValueError(f"cannot prove size {old_size} against the smaller tree {size}")
        if old_size in (0, size):
            return []
        return self._subproof(old_size, 0, size, True)

    def _subproof(self, m: int, start: int, n: int, whole: bool) -> list[bytes]:
        if m == n:
            return [] if whole else [self.subtree(start, n)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, k, whole), self.subtree(start + k, n - k)]
        return [*self._subproof(m - k, start + k, n - k, False), self.subtree(start, k)]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2; raises ProofError unless `leaf` is leaf `index` of the tree with `root`."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion path is shorter than the tree is deep")
    if r != root:
        raise ProofError("the inclusion path does not lead to the signed root: the event is not in this log")


def verify_consistency(old_size: int, old_root: bytes, size: int, root: bytes, path: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2; raises ProofError unless the tree (old_size, old_root) is a prefix of (size, root)."""
    if not 0 <= old_size <= size:
        raise ProofError(f"the older tree ({old_size}) is larger than the newer one ({size}): the log shrank")
    if old_size == 0:
        if path:
            raise ProofError("a proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the empty tree has another root")
        return
    if old_size == size:
        if path:
            raise ProofError("a proof between trees of one size must be empty")
        if old_root != root:
            raise ProofError("two tree heads of one size with different roots: the log was forked or rewritten")
        return
    if not path:
        raise ProofError("the consistency path is empty")
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("the consistency path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != root:
        raise ProofError(
            f"the tree of size {old_size} is not a prefix of the tree of size {size}: the log was forked or rewritten"
        )


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str, length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(str(s), validate=True)
    except ValueError:
        raise ProofError(f"{what} is not base64") from None
    if length is not None and len(raw) != length:
        raise ProofError(f"{what} is {len(raw)} bytes, not {length}")
    return raw


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the log's size and root at a moment, signed with the log key."""

    tree_size: int
    timestamp: int  # milliseconds since the epoch
    root_hash: bytes
    log_id: str  # SHA-256 of the public key (SubjectPublicKeyInfo DER), hex
    signature: bytes

    @staticmethod
    def signed_bytes(tree_size: int, timestamp: int, root_hash: bytes) -> bytes:
        """What the signature covers: a fixed context, then size, time (8 bytes each) and the root."""
        return _STH_CONTEXT + tree_size.to_bytes(8, "big") + timestamp.to_bytes(8, "big") + root_hash

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp,
            "root_hash": _b64(self.root_hash),
            "log_id": self.log_id,
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TreeHead:
        try:
            size, ts = int(d["tree_size"]), int(d["timestamp"])
            root, sig, log_id = d["root_hash"], d["signature"], str(d["log_id"])
        except (KeyError, TypeError, ValueError):
            raise ProofError("a tree head needs tree_size, timestamp, root_hash, log_id and signature") from None
        if size < 0 or not 0 <= ts < 1 << 63:
            raise ProofError("a tree head's size and timestamp must be non-negative")
        return cls(size, ts, _unb64(root, "root_hash", 32), log_id, _unb64(sig, "signature", 64))

    def verify_with(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Raises ProofError unless one of `keys` (by log id) signed this head; an unknown key is refused."""
        key = keys.get(self.log_id)
        if key is None:
            raise ProofError(f"the tree head is signed by an unknown log key ({self.log_id[:16]}…)")
        self.verify(key)

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Raises ProofError unless the log key signed this head."""
        if self.log_id != log_id_of(public_key):
            raise ProofError("the tree head names another log key (log_id differs)")
        try:
            public_key.verify(self.signature, self.signed_bytes(self.tree_size, self.timestamp, self.root_hash))
        except InvalidSignature:
            raise ProofError("the tree head's signature is not the log key's: forged or altered") from None


def log_id_of(public_key: Ed25519PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ProofError("the public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ProofError("the log's public key must be Ed25519")
    return key


class LogKey:
    """The hub's Ed25519 log key: a PEM file (mode 0600) in the secrets folder, created on first use."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path
        self.public_key = private_key.public_key()
        self.log_id = log_id_of(self.public_key)
        self._stat = self._file_stat()

    def _file_stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns) if st is not None else None

    def changed_on_disk(self) -> bool:
        """Whether the key file was replaced since it was read (a rotation by another process)."""
        return self.path is not None and self._file_stat() not in (None, self._stat)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> LogKey:
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                return cls.open(path, create=False)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key, path)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, tree_size: int, timestamp: int, root_hash: bytes) -> TreeHead:
        sig = self._key.sign(TreeHead.signed_bytes(tree_size, timestamp, root_hash))
        return TreeHead(tree_size, timestamp, root_hash, self.log_id, sig)

    def sign_rotation(self, body: bytes) -> bytes:
        return self._key.sign(_ROTATION_CONTEXT + body)

    @staticmethod
    def generate() -> LogKey:
        return LogKey(Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# Key rotation ---------------------------------------------------------------------------------------
# A rotation statement hands the log from one key to the next. Its body names both keys (ids and public
# keys) and the tree head at the moment of rotation; both keys sign the body, and both sign that tree head
# as an ordinary signed tree head. So whoever trusts either key can trust the other, and the head at the
# rotation is a checkpoint signed by both: consistency proofs run across the rotation.


def _rotation_body(statement: Mapping[str, Any]) -> bytes:
    body = {k: statement[k] for k in _ROTATION_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def rotation_statement(old: LogKey, new: LogKey, head: TreeHead) -> dict[str, Any]:
    """The statement that hands the log from `old` to `new` at the signed head `head` (old's)."""
    if head.log_id != old.log_id:
        raise ValueError("the rotation's tree head must be signed by the old key")
    statement: dict[str, Any] = {
        "format": ROTATION_FORMAT,
        "old_log_id": old.log_id,
        "old_public_key": public_pem(old.public_key),
        "new_log_id": new.log_id,
        "new_public_key": public_pem(new.public_key),
        "tree_head": {k: v for k, v in head.as_dict().items() if k not in ("log_id", "signature")},
    }
    body = _rotation_body(statement)
    new_head = new.sign(head.tree_size, head.timestamp, head.root_hash)
    statement["signatures"] = {"old": _b64(old.sign_rotation(body)), "new": _b64(new.sign_rotation(body))}
    statement["tree_head_signatures"] = {"old": _b64(head.signature), "new": _b64(new_head.signature)}
    return statement


def verify_rotation(statement: Mapping[str, Any]) -> tuple[Ed25519PublicKey, Ed25519PublicKey, list[TreeHead]]:
    """Check a rotation statement on its own: (old key, new key, the rotation head signed by each)."""
    if statement.get("format") != ROTATION_FORMAT:
        raise ProofError(f"not a {ROTATION_FORMAT} statement")
    try:
        old = load_public_key(str(statement["old_public_key"]).encode("ascii"))
        new = load_public_key(str(statement["new_public_key"]).encode("ascii"))
        body = _rotation_body(statement)
        sigs, head_sigs, head = statement["signatures"], statement["tree_head_signatures"], statement["tree_head"]
        old_sig, new_sig = _unb64(sigs["old"], "signature", 64), _unb64(sigs["new"], "signature", 64)
        heads = [
            TreeHead.from_dict({**head, "log_id": log_id_of(k), "signature": head_sigs[which]})
            for k, which in ((old, "old"), (new, "new"))
        ]
    except (KeyError, TypeError, UnicodeEncodeError) as exc:
        raise ProofError(f"the rotation statement is incomplete: {exc}") from None
    if log_id_of(old) != statement["old_log_id"] or log_id_of(new) != statement["new_log_id"]:
        raise ProofError("the rotation statement's log ids do not match its keys")
    for key, sig in ((old, old_sig), (new, new_sig)):
        try:
            key.verify(sig, _ROTATION_CONTEXT + body)
        except InvalidSignature:
            raise ProofError("the rotation statement is not signed by both keys") from None
    heads[0].verify(old)
    heads[1].verify(new)
    return old, new, heads


def trusted_keys(
    trusted: Ed25519PublicKey | Mapping[str, Ed25519PublicKey], rotations: Sequence[Mapping[str, Any]]
) -> dict[str, Ed25519PublicKey]:
    """Every key reachable from the trusted one(s) through valid rotation statements, by log id (forward:
    the old key handed over to the new; backward: the new key vouches for the old one it took over from).
    A statement that does not verify, or that no trusted key takes part in, adds nothing."""
    keys = dict(trusted) if isinstance(trusted, Mapping) else {log_id_of(trusted): trusted}
    checked = []
    for st in rotations:
        try:
            checked.append(verify_rotation(st))
        except ProofError:
            continue
    grew = True
    while grew:
        grew = False
        for old, new, _ in checked:
            ids = (log_id_of(old), log_id_of(new))
            if (ids[0] in keys) != (ids[1] in keys):
                keys.setdefault(ids[0], old)
                keys.setdefault(ids[1], new)
                grew = True
    return keys


def proof_document(
    event: Mapping[str, Any],
    tree: MerkleTree,
    head: TreeHead,
    since: TreeHead | None = None,
) -> dict[str, Any]:
    """The JSON a hospital keeps: the event, its leaf index and path, the signed head, and optionally
    the consistency path from a tree head it saved earlier."""
    index = int(event["seq"]) - 1
    doc: dict[str, Any] = {
        "format": PROOF_FORMAT,
        "event": {k: event[k] for k in ("seq", "ts", "subject", "action", "resource", "outcome", "client", "detail")},
        "leaf_index": index,
        "leaf_hash": _b64(leaf_hash(leaf_entry(event))),
        "inclusion_path": [_b64(h) for h in tree.inclusion_path(index, head.tree_size)],
        "tree_head": head.as_dict(),
    }
    if since is not None:
        doc["consistency"] = {
            "from": since.as_dict(),
            "path": [_b64(h) for h in tree.consistency_path(since.tree_size, head.tree_size)],
        }
    return doc


def verify_proof_document(
    doc: Mapping[str, Any], public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]
) -> dict[str, Any]:
    """Check a proof offline with the log's public key alone (or the keys `trusted_keys` found across
    rotations, by log id); returns a summary or raises ProofError. A head by any other key is refused."""
    keys = public_key if isinstance(public_key, Mapping) else {log_id_of(public_key): public_key}
    if doc.get("format") != PROOF_FORMAT:
        raise ProofError(f"not a {PROOF_FORMAT} document")
    head = TreeHead.from_dict(doc.get("tree_head") or {})
    head.verify_with(keys)
    event = doc.get("event")
    if not isinstance(event, Mapping):
        raise ProofError("the proof carries no event")
    try:
        index = int(doc["leaf_index"])
        entry = leaf_entry(event)
        seq = int(event["seq"])
        path = [_unb64(h, "an inclusion path hash", 32) for h in doc["inclusion_path"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"the proof is incomplete: {exc}") from None
    if index != seq - 1:
        raise ProofError(f"event {seq} must be leaf {seq - 1}, the proof says {index}")
    verify_inclusion(leaf_hash(entry), index, head.tree_size, path, head.root_hash)
    summary: dict[str, Any] = {"ok": True, "event_seq": seq, "tree_size": head.tree_size, "log_id": head.log_id}
    consistency = doc.get("consistency")
    if consistency is not None:
        try:
            old = TreeHead.from_dict(consistency["from"])
            cpath = [_unb64(h, "a consistency path hash", 32) for h in consistency["path"]]
        except (KeyError, TypeError) as exc:
            raise ProofError(f"the consistency proof is incomplete: {exc}") from None
        old.verify_with(keys)
        verify_consistency(old.tree_size, old.root_hash, head.tree_size, head.root_hash, cpath)
        summary["consistent_since"] = old.tree_size
    return summary
