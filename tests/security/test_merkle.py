"""RFC 9162 Merkle trees: the module against a literal transcription of the RFC's definitions, known
vectors, and the refusals (altered leaf, wrong index, forked log, forged signature)."""

from __future__ import annotations

import hashlib

import pytest

from medcloud.security.merkle import (
    EMPTY_ROOT,
    LogKey,
    MerkleTree,
    ProofError,
    TreeHead,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


# --- an independent, literal transcription of RFC 9162 §2.1 over entries (no caching, no shared code) ---
def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


ENTRIES = [f"event-{i}".encode() for i in range(48)]


def test_roots_and_proofs_match_the_rfc_definitions_for_many_sizes() -> None:
    tree = MerkleTree([leaf_hash(e) for e in ENTRIES])
    for n in range(1, len(ENTRIES) + 1):
        d = ENTRIES[:n]
        root = ref_mth(d)
        assert tree.root(n) == root
        for m in range(n):
            path = tree.inclusion_path(m, n)
            assert path == ref_path(m, d)
            verify_inclusion(leaf_hash(d[m]), m, n, path, root)
        for m in range(1, n):
            proof = tree.consistency_path(m, n)
            assert proof == ref_subproof(m, d, True)
            verify_consistency(m, ref_mth(ENTRIES[:m]), n, root, proof)


def test_known_vectors() -> None:
    # The RFC 6962 reference test leaves (certificate-transparency's merkle tree tests).
    leaves = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]  # fmt: skip
    tree = MerkleTree([leaf_hash(x) for x in leaves])
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert tree.root(1).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert tree.root(8).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert node_hash(tree.root(4), tree.root(8)) != tree.root(8)


def test_altered_or_moved_leaves_and_bad_paths_are_refused() -> None:
    tree = MerkleTree([leaf_hash(e) for e in ENTRIES[:21]])
    root, path = tree.root(), tree.inclusion_path(6)
    with pytest.raises(ProofError, match="not in this log"):
        verify_inclusion(leaf_hash(b"event-6 (edited)"), 6, 21, path, root)
    with pytest.raises(ProofError):  # the right event claimed at another position
        verify_inclusion(leaf_hash(ENTRIES[6]), 7, 21, path, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(ENTRIES[6]), 6, 21, path[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(ENTRIES[6]), 6, 21, [*path, path[0]], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(ENTRIES[6]), 21, 21, path, root)


def test_a_forked_log_is_not_consistent() -> None:
    honest = MerkleTree([leaf_hash(e) for e in ENTRIES[:40]])
    forked_entries = list(ENTRIES[:40])
    forked_entries[12] = b"rewritten history"
    forked = MerkleTree([leaf_hash(e) for e in forked_entries])
    old_root = honest.root(17)  # what a hospital saved
    for size in (17, 18, 32, 40):
        proof = forked.consistency_path(17, size)
        with pytest.raises(ProofError, match="forked or rewritten"):
            verify_consistency(17, old_root, size, forked.root(size), proof)
    with pytest.raises(ProofError, match="shrank"):
        verify_consistency(30, honest.root(30), 20, honest.root(20), [])
    with pytest.raises(ProofError):  # a proof for other sizes
        verify_consistency(17, old_root, 40, honest.root(40), honest.consistency_path(16, 40))


def test_tree_heads_are_signed_and_forgeries_refused(tmp_path) -> None:
    key = LogKey.open(tmp_path / "log.key")
    assert (tmp_path / "log.key").stat().st_mode & 0o077 == 0
    head = key.sign(5, 1_700_000_000_000, _h(b"root"))
    again = TreeHead.from_dict(head.as_dict())
    again.verify(key.public_key)
    for field, value in (("tree_size", 6), ("timestamp", 1), ("root_hash", _h(b"other"))):
        forged = TreeHead(**{**again.__dict__, field: value})
        with pytest.raises(ProofError, match="forged or altered"):
            forged.verify(key.public_key)
    other = LogKey.open(tmp_path / "other.key")
    with pytest.raises(ProofError, match="another log key"):
        other.sign(5, 1, _h(b"x")).verify(key.public_key)
    impostor = TreeHead(5, 1, _h(b"x"), key.log_id, other.sign(5, 1, _h(b"x")).signature)
    with pytest.raises(ProofError, match="forged"):
        impostor.verify(key.public_key)
    assert LogKey.open(tmp_path / "log.key").log_id == key.log_id  # the same key is read back
