"""Cost of the audit log's Merkle checkpoints: leaf hashing, first root, a root after growth, proofs.

Prints JSON. `python bench/audit_merkle.py [N]` (default 100,000 events).
"""

from __future__ import annotations

import json
import sys
import time

from medcloud.security.merkle import LeafHashes, MerkleTree, leaf_entry, leaf_hash, verify_inclusion


def main(n: int) -> dict[str, float | int]:
    events = [
        {"seq": i + 1, "ts": "2026-11-29T23:00:00.000000+00:00", "subject": "researcher:0123456789abcdef",
         "action": "instance.read", "resource": f"instance/2.25.{i}", "outcome": "ok", "client": "10.0.0.7",
         "detail": "{}"}
        for i in range(n)
    ]  # fmt: skip
    leaves = LeafHashes()
    t0 = time.perf_counter()
    for ev in events:
        leaves.append(leaf_hash(leaf_entry(ev)))
    t1 = time.perf_counter()
    tree = MerkleTree(leaves)
    root = tree.root()
    t2 = time.perf_counter()
    for ev in events[:1000]:  # the log grows by 1,000 events: the next root reuses cached subtrees
        leaves.append(leaf_hash(leaf_entry({**ev, "seq": ev["seq"] + n})))
    t3 = time.perf_counter()
    root2 = tree.root()
    t4 = time.perf_counter()
    for i in range(0, n, max(1, n // 100)):
        verify_inclusion(leaves[i], i, len(leaves), tree.inclusion_path(i), root2)
    t5 = time.perf_counter()
    assert tree.consistency_path(n)
    t6 = time.perf_counter()
    assert root != root2
    return {
        "events": n,
        "leaf_hash_s": round(t1 - t0, 3),
        "first_root_s": round(t2 - t1, 3),
        "root_after_1000_more_s": round(t4 - t3, 4),
        "inclusion_proof_and_verify_ms": round((t5 - t4) / 100 * 1000, 3),
        "consistency_proof_ms": round((t6 - t5) * 1000, 3),
        "leaf_memory_bytes": 32 * len(leaves),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
