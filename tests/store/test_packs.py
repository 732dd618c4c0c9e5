"""The blob store's packs: small blobs appended with one sync per batch, read back, erased, and what fails."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from medcloud.errors import IntegrityError, NotFound, StorageError
from medcloud.store import packs as packs_mod
from medcloud.store.blobs import LocalBlobStore, MemoryBudget
from tests.hub.conftest import Hub, deidentified_dicom


def _put(store: LocalBlobStore, *payloads: bytes, budget: MemoryBudget | None = None) -> list:
    ups = []
    for data in payloads:
        up = store.spool(10**9, budget)
        up.write(data)
        up.finish()
        ups.append(up)
    return store.commit_many(ups, durable=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_small_blobs_are_packed_deduplicated_and_read_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, pack_below=1024)
    a, b = os.urandom(300), os.urandom(900)
    out = _put(store, a, b, a)  # `a` twice in one batch: stored once
    assert [x.created for x in out] == [True, True, False]
    assert [x.sha256 for x in out] == [_sha(a), _sha(b), _sha(a)]
    assert _put(store, b)[0].created is False  # and again in a later batch
    assert store.read_bytes(_sha(a)) == a and store.read_bytes(_sha(b)) == b
    assert store.count() == 2 and store.exists(_sha(a))
    assert not any(store.root.glob("??/??/*")), "small blobs must not become files"
    assert list(store.incoming.iterdir()) == []
    packs = list(store.packs.folder.glob("*.pack"))
    assert len(packs) == 1
    records = list(store.packs.scan(packs[0].stem))
    assert sorted(r.sha256 for r in records) == sorted([_sha(a), _sha(b)])
    store.close()
    reopened = LocalBlobStore(tmp_path, pack_below=1024)  # the index is on disk
    assert reopened.read_bytes(_sha(b)) == b
    reopened.close()


def test_large_blobs_are_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, pack_below=1024)
    big = os.urandom(5000)
    assert _put(store, big)[0].created
    assert store.path_for(_sha(big)).read_bytes() == big
    assert store.read_bytes(_sha(big)) == big and store.packs.count() == 0 and store.count() == 1
    store.close()


def test_a_request_over_its_memory_budget_spills_to_disk(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, pack_below=10_000)
    budget = MemoryBudget(1500)
    parts = [os.urandom(600) for _ in range(4)]
    _put(store, *parts, budget=budget)
    # The first two fit in the 1500-byte budget and are packed; the others went through spill files.
    assert store.packs.count() == 2 and sum(1 for _ in store.root.glob("??/??/*")) == 2
    assert all(store.read_bytes(_sha(p)) == p for p in parts)
    assert budget.left == 1500, "discarded uploads give their memory back"
    store.close()


def test_a_flipped_byte_in_a_pack_is_caught(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(2000)
    _put(store, data)
    loc = store.packs.locate(_sha(data))
    assert loc is not None
    path = store.packs.folder / f"{loc.pack}.pack"
    raw = bytearray(path.read_bytes())
    raw[loc.offset + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        store.verify(_sha(data))
    raw[loc.offset - 1] ^= 0xFF  # inside the record header (its SHA-256)
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="does not match its index"):
        store.read_bytes(_sha(data))
    store.close()


def test_erasure_overwrites_the_bytes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    keep, gone = os.urandom(3000), os.urandom(3000)
    _put(store, keep, gone)
    assert store.remove(_sha(gone)) and not store.remove(_sha(gone))
    with pytest.raises(NotFound):
        store.open(_sha(gone))
    pack = next(store.packs.folder.glob("*.pack")).read_bytes()
    assert gone not in pack and keep in pack
    assert store.read_bytes(_sha(keep)) == keep
    assert [r.erased for r in store.packs.scan(next(store.packs.folder.glob("*.pack")).stem)] == [False, True]
    store.close()


def test_a_failed_write_indexes_nothing_and_the_next_batch_works(tmp_path: Path, monkeypatch) -> None:
    store = LocalBlobStore(tmp_path)
    first = os.urandom(1000)
    _put(store, first)
    real = os.writev
    calls = {"n": 0}

    def full_disk(fd: int, bufs: list) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bufs)

    monkeypatch.setattr(packs_mod.os, "writev", full_disk)
    lost = [os.urandom(1000), os.urandom(1000)]
    with pytest.raises(StorageError, match="No space left"):
        _put(store, *lost)
    assert store.count() == 1 and not any(store.exists(_sha(x)) for x in lost)
    monkeypatch.setattr(packs_mod.os, "writev", real)
    later = os.urandom(1000)
    assert _put(store, later)[0].created
    assert store.read_bytes(_sha(first)) == first and store.read_bytes(_sha(later)) == later
    store.close()


def test_concurrent_writers_use_separate_packs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    payloads = [[os.urandom(500 + i) for i in range(50)] for _ in range(4)]
    errors: list[BaseException] = []

    def work(batch: list[bytes]) -> None:
        try:
            for i in range(0, len(batch), 10):
                _put(store, *batch[i : i + 10])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count() == 200
    assert all(store.read_bytes(_sha(x)) == x for batch in payloads for x in batch)
    store.close()


def test_hub_answers_503_when_the_store_refuses_and_keeps_what_it_had(hub: Hub, monkeypatch) -> None:
    good = deidentified_dicom()
    first = hub.client.post("/api/v1/ingest", content=good, headers=hub.auth("site_a"))
    assert first.status_code == 201

    def no_space(fd: int, bufs: list) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(packs_mod.os, "writev", no_space)
    r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    assert r.status_code == 503 and r.json()["type"].endswith("/storage-unavailable")
    monkeypatch.undo()
    assert hub.state.blobs.read_bytes(first.json()["sha256"]) == good
    listed = hub.client.get("/api/v1/instances", headers=hub.auth("researcher")).json()
    assert listed["total"] == 1


def test_index_rows_lost_with_power_are_recovered_from_the_packs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blobs = [os.urandom(700 + i) for i in range(6)]
    _put(store, *blobs[:3])
    loc = store.packs.locate(_sha(blobs[2]))
    assert loc is not None
    _put(store, *blobs[3:])
    store.close()
    # A power loss took the last index commit (synchronous=NORMAL: its blob rows and the pack's indexed
    # end) but the pack bytes were fdatasynced; a torn record (never acknowledged) follows them.
    import sqlite3

    db = sqlite3.connect(tmp_path / "packs" / "index.sqlite3")
    db.executemany("DELETE FROM blobs WHERE sha256 = ?", [(bytes.fromhex(_sha(b)),) for b in blobs[3:]])
    db.execute("UPDATE packs SET indexed_end = ?", (loc.offset + loc.size,))
    db.commit()
    db.close()
    pack = next((tmp_path / "packs").glob("*.pack"))
    with pack.open("ab") as fh:
        fh.write(packs_mod._REC.pack(packs_mod.REC_MAGIC, 1, 0, 0, 5000, bytes(32)) + b"half")
    reopened = LocalBlobStore(tmp_path)
    assert reopened.packs.recovered == 3
    assert all(reopened.read_bytes(_sha(b)) == b for b in blobs)
    assert reopened.count() == 6
    reopened.close()
    again = LocalBlobStore(tmp_path)
    assert again.packs.recovered == 0  # only the tail past the last indexed record is read
    again.close()


def test_recovery_leaves_a_live_writers_pack_alone(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(900)
    _put(store, data)  # the writer stays open (idle, still holding its flock)
    import sqlite3

    db = sqlite3.connect(tmp_path / "packs" / "index.sqlite3")
    db.execute("DELETE FROM blobs")
    db.execute("DELETE FROM packs")
    db.commit()
    db.close()
    other = LocalBlobStore(tmp_path)  # a second hub worker starting up
    assert other.packs.recovered == 0
    other.close()
    store.close()  # the writer goes; now its pack is recoverable
    third = LocalBlobStore(tmp_path)
    assert third.packs.recovered == 1 and third.read_bytes(_sha(data)) == data
    third.close()


def test_a_failed_sync_fails_the_batch_and_is_audited(hub: Hub, monkeypatch) -> None:
    """fdatasync fails (EIO) while the catalog rows are being written: the transaction rolls back."""
    from tests.hub.test_batch import multipart, post_batch

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(packs_mod.os, "fdatasync", eio)
    body, ctype = multipart([(deidentified_dicom(), {}), (deidentified_dicom(), {})])
    out = post_batch(hub, body, ctype).json()
    assert out["failed"] == 2 and all(i["problem"]["status"] == 503 for i in out["items"])
    monkeypatch.undo()
    assert hub.client.get("/api/v1/instances", headers=hub.auth("researcher")).json()["total"] == 0
    assert hub.state.blobs.count() == 0
    events = hub.client.get("/api/v1/audit?action=ingest", headers=hub.auth("auditor")).json()["items"]
    assert [e["outcome"] for e in events] == ["refused:503:storage-unavailable"] * 2
    assert hub.state.catalog.audit.verify().ok
    ok = post_batch(hub, *multipart([(deidentified_dicom(), {})])).json()  # the store works again
    assert ok["stored"] == 1


def test_check_blobs_finds_damage_and_missing_bytes(hub: Hub) -> None:
    import json
    import subprocess
    import sys

    stored = [hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a")).json()
              for _ in range(3)]  # fmt: skip
    data_dir = str(hub.state.settings.data_dir)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "medcloud.cli", "hub", "check-blobs", "--data", data_dir],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    clean = check()
    assert clean.returncode == 0, clean.stderr
    summary = json.loads(clean.stdout)
    assert summary["blobs_ok"] == 3 and summary["damaged"] == [] and summary["missing"] == []
    # One flipped byte in one blob, and another blob erased behind the catalog's back.
    loc = hub.state.blobs.packs.locate(stored[0]["sha256"])
    assert loc is not None
    pack = hub.state.blobs.packs.folder / f"{loc.pack}.pack"
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + 500] ^= 0x01
    pack.write_bytes(bytes(raw))
    assert hub.state.blobs.remove(stored[1]["sha256"])
    bad = check()
    assert bad.returncode == 7
    summary = json.loads(bad.stdout)
    assert summary["blobs_ok"] == 1 and summary["erased"] == 1
    assert len(summary["damaged"]) == 1 and stored[0]["sha256"] in summary["damaged"][0]
    assert summary["missing"] == [f"instance/{stored[1]['sop_instance_uid']}: blob {stored[1]['sha256']} is not stored"]
    assert "damaged" in bad.stderr


def test_a_full_pack_is_sealed_and_a_new_one_started(tmp_path: Path) -> None:
    from medcloud.store.packs import PackStore

    store = PackStore(tmp_path, pack_max=3000)
    blobs = [os.urandom(1200) for _ in range(6)]
    for b in blobs:
        assert store.put_many([(_sha(b), b)]) == [True]
    packs = sorted(store.folder.glob("*.pack"))
    # A pack takes appends while it is under pack_max, so it ends at most one batch past it.
    assert len(packs) == 2 and all(3000 <= p.stat().st_size <= 3000 + 1200 + 48 for p in packs)
    for b in blobs:
        loc = store.locate(_sha(b))
        assert loc is not None and store.read(_sha(b), loc) == b
    assert sum(len(list(store.scan(p.stem))) for p in packs) == 6
    store.close()
