"""The outbox keeps every payload on disk until delivery and records every source it handled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medcloud.gateway.outbox import Outbox, SourceRef, StateLocked


def ref(name: str, size: int = 10, mtime: int = 1) -> SourceRef:
    return SourceRef(path=f"/src/{name}", size=size, mtime_ns=mtime)


def test_enqueue_survives_reopen_and_marks_source_done(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    item_id, new = ob.enqueue(ref("a.dcm"), b"payload-a", media_type="application/dicom", filename="a.dcm")
    assert new
    assert ob.seen(ref("a.dcm"))
    assert not ob.seen(ref("a.dcm", mtime=2)), "a modified file is a new version"
    ob.close()

    again = Outbox(tmp_path)  # as after a crash: only what is on disk counts
    items = again.claim_due(now=1e12, exclude=[])
    assert [i.id for i in items] == [item_id]
    assert again.payload(items[0]) == b"payload-a"
    assert items[0].sha256 == hashlib.sha256(b"payload-a").hexdigest()
    assert again.counts().queued == 1
    assert again.db_pragmas() == {"journal_mode": "wal", "synchronous": 2}


def test_same_bytes_from_two_sources_are_one_item(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    first, new1 = ob.enqueue(ref("a.dcm"), b"same", media_type="application/dicom", filename="a.dcm")
    second, new2 = ob.enqueue(ref("copy-of-a.dcm"), b"same", media_type="application/dicom", filename="a.dcm")
    assert (new1, new2) == (True, False)
    assert first == second
    assert ob.counts().queued == 1
    assert ob.seen(ref("copy-of-a.dcm"))


def test_delivered_removes_payload_and_claim_skips_inflight(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    a, _ = ob.enqueue(ref("a"), b"A", media_type="image/png", filename="a.png")
    b, _ = ob.enqueue(ref("b"), b"B", media_type="image/png", filename="b.png")
    assert [i.id for i in ob.claim_due(1e12, exclude=[a], limit=5)] == [b]
    ob.mark_delivered(a, 201, "stored")
    assert not (ob.payload_dir / hashlib.sha256(b"A").hexdigest()).exists()
    counts = ob.counts()
    assert (counts.queued, counts.delivered) == (1, 1)


def test_retry_time_is_respected(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    a, _ = ob.enqueue(ref("a"), b"A", media_type="image/png", filename="a.png")
    ob.mark_retry(a, at=1000.0, status=503, error="busy")
    assert ob.claim_due(999.0, exclude=[]) == []
    [item] = ob.claim_due(1000.0, exclude=[])
    assert item.attempts == 1


def test_dead_letters_keep_reason_and_can_be_retried(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    a, _ = ob.enqueue(ref("a"), b"A", media_type="image/png", filename="a.png")
    ob.mark_dead(a, status=400, error="HTTP 400 Invalid input: truncated")
    assert ob.claim_due(1e12, exclude=[]) == []
    [dead] = ob.dead_items()
    assert dead["last_error"] == "HTTP 400 Invalid input: truncated"
    item = ob.get_item(a)
    assert item is not None and ob.payload(item) == b"A", "a dead letter keeps its payload"
    assert ob.retry_dead() == 1
    assert [i.id for i in ob.claim_due(1e12, exclude=[])] == [a]


def test_sweep_removes_only_orphans(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    ob.enqueue(ref("a"), b"A", media_type="image/png", filename="a.png")
    orphan = ob.payload_dir / ("0" * 64)
    orphan.write_bytes(b"left by a crash between payload write and commit")
    assert ob.sweep_payloads() == 1
    assert not orphan.exists()
    assert len(list(ob.payload_dir.iterdir())) == 1


def test_rejected_and_quarantined_are_recorded(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    ob.record_rejected(ref("bad"), "invalid input: truncated")
    stored = ob.quarantine(ref("us"), b"pixels", name="../../us.dcm", reason="burned-in text")
    assert stored.parent == ob.quarantine_dir and stored.read_bytes() == b"pixels"
    counts = ob.counts()
    assert (counts.rejected, counts.quarantined, counts.queued) == (1, 1, 0)
    assert ob.seen(ref("bad")) and ob.seen(ref("us"))
    assert ob.forget_rejected() == 1
    assert not ob.seen(ref("bad"))


def test_one_gateway_per_state_folder(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    first.acquire_process_lock()
    second = Outbox(tmp_path)
    with pytest.raises(StateLocked):
        second.acquire_process_lock()
    first.close()
    second.acquire_process_lock()  # free again once the first one is gone
    second.close()


def test_readonly_open_of_missing_state_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no gateway state"):
        Outbox(tmp_path / "nowhere", readonly=True)


def test_group_commit_handles_copies_inside_one_batch(tmp_path: Path) -> None:
    from medcloud.gateway.outbox import Entry

    ob = Outbox(tmp_path)
    entries = [
        Entry(ref("a"), b"A", "application/dicom", "a.dcm"),
        Entry(ref("copy-of-a"), b"A", "application/dicom", "a.dcm"),
        Entry(ref("b"), b"B", "application/dicom", "b.dcm"),
    ]
    results = ob.enqueue_many(entries)
    assert [new for _, new in results] == [True, False, True]
    assert results[0][0] == results[1][0]
    assert ob.counts().queued == 2
    assert all(ob.seen(e.ref) for e in entries)
    assert sorted(p.name for p in ob.payload_dir.iterdir()) == sorted(
        hashlib.sha256(d).hexdigest() for d in (b"A", b"B")
    )
