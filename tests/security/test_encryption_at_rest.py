"""Encryption at rest (security.envelope): a stolen data folder reveals no pixel and no stored DICOM value,
a wrong or missing key is refused clearly, tampering is caught, and the KEK rotates while the hub serves."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from medcloud.config import Settings, load_settings
from medcloud.errors import IntegrityError
from medcloud.formats.dicomjson import unpack_stored
from medcloud.gateway.outbox import Entry, Outbox, SourceRef
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.catalog_cipher import CATALOG_KEY_ID, catalog_key
from medcloud.security.catalog_cipher import connect as catalog_connect
from medcloud.security.envelope import (
    VALUE_MAGIC,
    Envelope,
    KeyUnavailable,
    at_rest_status,
    kek_id,
    load_kek,
    new_key_text,
    parse_keys,
    rotate_key_file,
    store_envelope,
)
from medcloud.security.tokens import issue_token
from medcloud.store.blobs import LocalBlobStore
from medcloud.store.packs import KEY_RESERVE
from tests.hub.conftest import deidentified_dicom
from tests.live_hub import hub_in_thread

KMS = Path(__file__).with_name("kms_script.py")
PSEUDONYM = "MCSTOLENDISKQWERTY"  # a site pseudonym's shape (MC + 16 base32)
STUDY = "2.25.81234567890123456789012345678901234"  # a remapped UID's shape
DESCRIPTION = "STOLEN DISK STUDY XYZZY"
JSON_ONLY = "ACME-SCANNER-QWERTY-77"  # a value only the stored DICOM JSON holds (no indexed column)
REPORT = "Nodule in the right upper lobe, 12 mm; no pneumothorax. Zebra-quartz follow-up."


def _keys(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {"encryption_key_file": None, "encryption_key_env": None, "encryption_kms_command": None}
    return SimpleNamespace(**(base | kw))


def _cli(*args: str, key_file: Path) -> Result:
    """`medcloud hub ...` as the operator runs it (in this process: the hub keeps serving meanwhile)."""
    from medcloud.hub.cli import app

    return CliRunner().invoke(app, list(args), env={"MEDCLOUD_ENCRYPTION_KEY_FILE": str(key_file)})


def _dicom(source: str) -> bytes:
    data = deidentified_dicom(study_uid=STUDY, patient=PSEUDONYM, description=DESCRIPTION, source=source)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Manufacturer = JSON_ONLY
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pixel_runs(data: bytes, n: int = 4, width: int = 24) -> list[bytes]:
    """Distinctive byte runs from the middle of a file's pixel data."""
    pixels = bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)
    runs: list[bytes] = []
    for start in range(len(pixels) // 3, len(pixels) - width, len(pixels) // 16):
        run = pixels[start : start + width]
        if len(set(run)) >= 10:
            runs.append(run)
        if len(runs) == n:
            break
    assert runs
    return runs


@dataclass
class EncHub:
    client: TestClient
    state: HubState
    settings: Settings
    site: dict[str, str]
    reader: dict[str, str]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "kek.hex"  # outside the data folder, as it must be
    path.parent.mkdir()
    path.write_text(new_key_text() + "\n")
    return path


def _open_hub(tmp_path: Path, **kw: object) -> Iterator[EncHub]:
    settings = load_settings(data_dir=tmp_path / "hub", pack_below=30_000, **kw)
    state = HubState.open(settings)
    site = {"Authorization": "Bearer " + issue_token(state.catalog, role="site", site="s1", projects=["p"]).token}
    reader = {"Authorization": "Bearer " + issue_token(state.catalog, role="researcher", projects=["p"]).token}
    with TestClient(create_app(settings, state=state), client=("127.0.0.1", 50000)) as client:
        yield EncHub(client, state, settings, site, reader)
    state.close()


@pytest.fixture
def enc_hub(tmp_path: Path, key_file: Path) -> Iterator[EncHub]:
    yield from _open_hub(tmp_path, encryption_key_file=key_file)


def _ingest(h: EncHub, data: bytes) -> str:
    r = h.client.post("/api/v1/ingest", content=data, headers=h.site)
    assert r.status_code == 201, r.text
    return str(r.json()["sop_instance_uid"])


def test_a_stolen_data_folder_reveals_no_pixel_and_no_stored_dicom_value(enc_hub: EncHub) -> None:
    small, large = _dicom("MR_small.dcm"), _dicom("CT_small.dcm")  # 10 KB: packed; 39 KB: a file of its own
    assert len(small) < 30_000 < len(large)
    sops = [_ingest(enc_hub, d) for d in (small, large)]
    study = pydicom.dcmread(io.BytesIO(small)).StudyInstanceUID
    # Served in clear to an authorised reader: the file and its DICOM JSON (decrypted on the way out).
    for sop, data in zip(sops, (small, large), strict=True):
        r = enc_hub.client.get(f"/api/v1/instances/{sop}/file", headers=enc_hub.reader)
        assert r.status_code == 200 and r.content == data
    meta = enc_hub.client.get(f"/dicom-web/studies/{study}/metadata", headers=enc_hub.reader)
    assert meta.status_code == 200 and JSON_ONLY in meta.text
    report = {"study_uid": study, "patient": PSEUDONYM, "text": REPORT, "date": "2024-04-01"}
    r = enc_hub.client.post("/api/v1/reports", content=json.dumps([report]), headers=enc_hub.site)
    assert r.status_code == 201, r.text
    got = enc_hub.client.get(f"/api/v1/studies/{study}/reports", headers=enc_hub.reader)
    assert got.status_code == 200 and got.json()["items"][0]["text"] == REPORT
    data_dir = enc_hub.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pack" for p in files) and any(len(p.name) == 64 for p in files)
    runs = _pixel_runs(small) + _pixel_runs(large)
    catalog = [data_dir / n for n in ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm")]
    assert all(p in files for p in catalog)  # scanned while the hub is open: its WAL and shared memory too
    for path in files:
        raw = path.read_bytes()
        for run in runs:
            assert run not in raw, f"pixel bytes in clear in {path}"
        for value in (JSON_ONLY, REPORT[:12], REPORT[-12:]):
            assert value.encode() not in raw, f"{value} in clear in {path}"
        # The catalog's searchable columns too: its pages are encrypted (SQLCipher).
        for value in (PSEUDONYM, DESCRIPTION, STUDY, "instance_json"):
            assert value.encode() not in raw, f"{value} in clear in {path}"
    # Without its key the catalog is no SQLite database at all ...
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        sqlite3.connect(data_dir / "catalog.sqlite3").execute("SELECT count(*) FROM sqlite_master").fetchone()
    # ... and with it, its stored DICOM JSON is still sealed, not merely compressed.
    db = catalog_connect(data_dir / "catalog.sqlite3", catalog_key(enc_hub.settings))
    bodies = [bytes(b) for (b,) in db.execute("SELECT body FROM instance_json")]
    db.close()
    assert len(bodies) == 2 and all(b.startswith(VALUE_MAGIC) for b in bodies)
    with pytest.raises(zlib.error):  # neither a Zstandard frame nor a zlib stream
        unpack_stored(bodies[0])
    check = enc_hub.state.blobs.check()
    assert check.ok == 2 and not check.bad
    status = at_rest_status(enc_hub.settings)
    assert status["ok"] and status["enabled"] and status["share_encrypted"] == 1.0 and status["kek_verified"]
    assert status["kek_source"].startswith("file") and status["data_keys"] >= 4  # pack, blob, values, catalog
    assert status["catalog"]["encrypted"] and status["catalog"]["key_verified"] and status["status"] == "PASS"
    assert status["catalog_in_clear"] == []


def test_a_mixed_store_reads_old_blobs_and_refuses_without_the_key(tmp_path: Path, key_file: Path) -> None:
    root = tmp_path / "blobs"
    plain = LocalBlobStore(root, pack_below=1000)
    old_small, old_large = plain.put_bytes(b"old small " * 10), plain.put_bytes(os.urandom(5000))
    plain.close()
    enc = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(_keys(encryption_key_file=key_file)),
                                                                  root / "keys.sqlite3"))  # fmt: skip
    new_small, new_large = enc.put_bytes(b"new small " * 10), enc.put_bytes(os.urandom(200_000))
    assert enc.read_bytes(old_small.sha256) == b"old small " * 10 and enc.read_bytes(new_small.sha256)[:4] == b"new "
    assert enc.check().ok == 4
    enc.close()
    status = at_rest_status(SimpleNamespace(encryption_key_file=key_file, encryption_key_env=None,
                                            encryption_kms_command=None, resolved_blob_dir=root))  # fmt: skip
    assert status["blobs_encrypted"] == 2 and status["blobs_plain"] == 2 and not status["ok"]
    # No key configured: old blobs still read; encrypted ones refused with words, not ciphertext.
    bare = LocalBlobStore(root, pack_below=1000)
    assert len(bare.read_bytes(old_large.sha256)) == 5000
    for sha in (new_small.sha256, new_large.sha256):
        with pytest.raises(KeyUnavailable, match="no key-encryption key is configured"):
            bare.read_bytes(sha)
    bare.close()
    # The wrong key: refused, naming the key it would need.
    wrong = tmp_path / "wrong.hex"
    wrong.write_text(new_key_text())
    other = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(_keys(encryption_key_file=wrong)),
                                                                    root / "keys.sqlite3"))  # fmt: skip
    with pytest.raises(KeyUnavailable, match="does not hold"):
        other.read_bytes(new_large.sha256)
    other.close()


def test_a_hub_with_the_wrong_key_answers_a_clear_503(tmp_path: Path, key_file: Path) -> None:
    data = _dicom("MR_small.dcm")
    gen = _open_hub(tmp_path, encryption_key_file=key_file)
    h = next(gen)
    sop = _ingest(h, data)
    gen.close()
    right = key_file.read_text()
    key_file.write_text(new_key_text())  # the key was swapped for another
    # A hub started with the wrong key cannot open its (encrypted) catalog: refused at start, naming the KEK.
    with pytest.raises(KeyUnavailable, match=r"catalog-sqlcipher is wrapped by key-encryption key k-\w+, which file"):
        next(_open_hub(tmp_path, encryption_key_file=key_file))
    # A hub whose catalog key unwraps but whose blob's data key was wrapped by a KEK it does not hold (an old
    # key dropped before its rotation ended) serves, and answers a clear 503 for that blob.
    new = key_file.read_text().strip()
    key_file.write_text(f"{new}\n{right}")
    env = store_envelope(load_settings(data_dir=tmp_path / "hub", encryption_key_file=key_file))
    kid, wrapped = env.kek.wrap(env.key_bytes(CATALOG_KEY_ID), CATALOG_KEY_ID)  # type: ignore[union-attr]
    with env.table.immediate() as db:
        db.execute("UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE id = ?", (kid, wrapped, CATALOG_KEY_ID))
    env.close()
    key_file.write_text(new + "\n")
    gen = _open_hub(tmp_path, encryption_key_file=key_file)
    h = next(gen)
    r = h.client.get(f"/api/v1/instances/{sop}/file", headers=h.reader)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert "key-encryption key" in r.json()["detail"] and data[-64:] not in r.content
    gen.close()
    with pytest.raises(KeyUnavailable, match="not set"):
        load_kek(_keys(encryption_key_env="MEDCLOUD_TEST_UNSET_KEK"))


def test_tampered_ciphertext_is_detected(tmp_path: Path, key_file: Path) -> None:
    root = tmp_path / "blobs"
    env = Envelope(load_kek(_keys(encryption_key_file=key_file)), root / "keys.sqlite3")
    store = LocalBlobStore(root, pack_below=1000, envelope=env)
    small = store.put_bytes(b"small pixels " * 20)
    big_bytes = os.urandom(3 * 65536 + 100)
    big = store.put_bytes(big_bytes)
    pack = next(store.packs.folder.glob("*.pack"))
    raw = bytearray(pack.read_bytes())
    raw[-5] ^= 1  # inside the record's ciphertext
    pack.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="failed authentication"):
        store.read_bytes(small.sha256)
    path = store.path_for(big.sha256)
    os.chmod(path, 0o644)
    sealed = path.read_bytes()
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 0x40
    path.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match="failed authentication"):
        store.read_bytes(big.sha256)
    report = store.check()
    assert len(report.bad) == 2
    # Cut at a chunk boundary: the new last chunk was not sealed as the last one.
    header = len(sealed) - (4 * 16 + len(big_bytes))
    path.write_bytes(sealed[: header + 2 * (65536 + 16)])
    with pytest.raises(IntegrityError):
        store.read_bytes(big.sha256)
    path.write_bytes(sealed)
    assert store.read_bytes(big.sha256) == big_bytes
    store.close()


def test_the_key_rotates_while_the_hub_serves_and_a_killed_rotation_resumes(tmp_path: Path, key_file: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "hub", pack_below=30_000, encryption_key_file=key_file)
    state = HubState.open(settings)
    site = {"Authorization": "Bearer " + issue_token(state.catalog, role="site", site="s1", projects=["p"]).token}
    reader = {"Authorization": "Bearer " + issue_token(state.catalog, role="researcher", projects=["p"]).token}
    first_kek = kek_id(parse_keys(key_file.read_text(), "")[0])
    files = [_dicom("MR_small.dcm"), _dicom("CT_small.dcm")]
    errors: list[str] = []
    with hub_in_thread(create_app(settings, state=state)) as url, httpx.Client(base_url=url, timeout=30) as c:
        sops = [c.post("/api/v1/ingest", content=d, headers=site).json()["sop_instance_uid"] for d in files]
        stop = threading.Event()
        loops = [0]

        def read_loop() -> None:
            while not stop.is_set():
                for sop, data in zip(sops, files, strict=True):
                    r = c.get(f"/api/v1/instances/{sop}/file", headers=reader)
                    if r.status_code != 200 or r.content != data:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                loops[0] += 1

        def wait_loops(n: int) -> None:
            target = loops[0] + n
            while loops[0] < target and reader_thread.is_alive():
                time.sleep(0.01)

        reader_thread = threading.Thread(target=read_loop)
        reader_thread.start()
        try:
            wait_loops(1)
            # A rotation killed after its first re-wrap (new key already first in the file, old kept)...
            env = store_envelope(settings)
            keys = parse_keys(key_file.read_text(), "")
            key_file.write_text(new_key_text() + "\n" + keys[0].hex() + "\n")

            def die(_: int) -> None:
                raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                env.rewrap(progress=die)
            env.close()
            wait_loops(1)  # served while data keys are wrapped half by the old KEK, half by the new
            # ...while the hub keeps writing: a new large blob is wrapped with the new key at once.
            _ = c.post("/api/v1/ingest", content=_dicom("CT_small.dcm"), headers=site)
            assert _.status_code == 201
            # ...is resumed by the operator's command; the old key leaves the file at the end.
            done = _cli("rotate-key", "--data", str(settings.data_dir), key_file=key_file)
            assert done.exit_code == 0, done.output
            assert json.loads(done.stdout)["remaining"] == 0
            wait_loops(2)  # reads go on across the retirement of the old key
        finally:
            stop.set()
            reader_thread.join(30)
        assert not errors, errors[:3]
        for sop, data in zip(sops, files, strict=True):
            assert c.get(f"/api/v1/instances/{sop}/file", headers=reader).content == data
    state.close()
    left = parse_keys(key_file.read_text(), "")
    assert len(left) == 1 and kek_id(left[0]) != first_kek
    # check-blobs decrypts and re-hashes every blob with the new key alone.
    checked = _cli("check-blobs", "--data", str(settings.data_dir), key_file=key_file)
    assert checked.exit_code == 0, checked.output
    summary = json.loads(checked.stdout)
    assert summary["blobs_ok"] == 3 and not summary["damaged"] and not summary["missing"]
    status = at_rest_status(settings)
    assert status["ok"] and status["kek_ids_in_use"] == [kek_id(left[0])] == [status["current_kek_id"]]
    # A fresh process with only the new key reads everything, DICOM JSON included.
    gen = _open_hub(tmp_path, encryption_key_file=key_file)
    h = next(gen)
    for sop, data in zip(sops, files, strict=True):
        assert h.client.get(f"/api/v1/instances/{sop}/file", headers=h.reader).content == data
    study = pydicom.dcmread(io.BytesIO(files[0])).StudyInstanceUID
    assert JSON_ONLY in h.client.get(f"/dicom-web/studies/{study}/metadata", headers=h.reader).text
    gen.close()


def test_a_kms_command_wraps_rotates_and_refuses(tmp_path: Path) -> None:
    kms = tmp_path / "kms"
    kms.mkdir()
    (kms / "kms-1.key").write_text(new_key_text())
    (kms / "current").write_text("kms-1")
    cfg = _keys(encryption_kms_command=f"{sys.executable} {KMS} {kms}")
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(cfg), root / "keys.sqlite3"))
    small, big = store.put_bytes(b"kms small " * 10), store.put_bytes(b"kms large " * 1000)
    store.close()
    (kms / "kms-2.key").write_text(new_key_text())
    (kms / "current").write_text("kms-2")
    env = Envelope(load_kek(cfg), root / "keys.sqlite3")
    n_keys = len(env.table.ids())
    assert n_keys == KEY_RESERVE + 1  # the packs' reserve (one pack used) and the large blob's own key
    report = env.rewrap()
    env.close()
    assert report.current == "kms-2" and report.rewrapped == n_keys and report.remaining == 0
    (kms / "kms-1.key").unlink()  # the KMS retired the old key: the data does not care
    store = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(cfg), root / "keys.sqlite3"))
    assert store.read_bytes(small.sha256) == b"kms small " * 10 and store.read_bytes(big.sha256)[:4] == b"kms "
    store.close()
    (kms / "refuse").write_text("")
    store = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(cfg), root / "keys.sqlite3"))
    with pytest.raises(KeyUnavailable, match="access denied by policy"):
        store.read_bytes(small.sha256)
    store.close()


def test_the_gateway_outbox_is_encrypted_at_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITE_KEK", f"{new_key_text()},{new_key_text()}")  # current first, then a reading key
    kek = load_kek(_keys(encryption_key_env="SITE_KEK"))
    state = tmp_path / "state"
    plain_box = Outbox(state)
    before = b"queued before encryption " * 40
    plain_box.enqueue_many([Entry(SourceRef("/a", 1, 1), before, "application/dicom", "a.dcm")])
    plain_box.close()
    box = Outbox(state, kek=kek)
    payloads = [b"de-identified pixel payload %d " % i * 500 for i in range(3)]
    box.enqueue_many(
        [Entry(SourceRef(f"/s{i}", 1, 1), p, "application/dicom", f"{i}.dcm") for i, p in enumerate(payloads)]
    )
    for f in (state / "payloads").iterdir():
        assert b"de-identified pixel payload" not in f.read_bytes()
    items = {box.payload(i) for i in box.claim_due(now=1e12, exclude=[], limit=10)}
    assert items == {before, *payloads}
    with box.open_payload(box.claim_due(now=1e12, exclude=[], limit=10)[-1]) as fh:
        fh.seek(100)
        assert fh.read(20) == payloads[-1][100:120]
    box.close()
    bare = Outbox(state)
    last = bare.claim_due(now=1e12, exclude=[], limit=10)[-1]
    with pytest.raises(KeyUnavailable):
        bare.payload(last)
    bare.close()


def test_only_one_key_source_at_a_time(key_file: Path) -> None:
    from medcloud.errors import ConfigError

    with pytest.raises(ConfigError, match="only one"):
        load_kek(_keys(encryption_key_file=key_file, encryption_key_env="X"))
    with pytest.raises(ConfigError, match="32 bytes"):
        parse_keys("not-a-key", "test")


def test_a_whole_slide_image_is_read_tile_by_tile_from_ciphertext(tmp_path: Path, key_file: Path) -> None:
    import numpy as np
    import tiffslide

    from tests.wsi.slide_data import wsi_data

    try:
        source = wsi_data.svs_path()
    except wsi_data.Missing as exc:
        pytest.skip(str(exc))
    svs = source.read_bytes()
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, pack_below=1000, envelope=Envelope(load_kek(_keys(encryption_key_file=key_file)),
                                                                    root / "keys.sqlite3"))  # fmt: skip
    blob = store.put_bytes(svs)
    assert store.plain_path(blob.sha256) is None  # no path to hand out: readers get the decrypting view
    assert svs[1000:1064] not in store.path_for(blob.sha256).read_bytes()
    want = np.asarray(tiffslide.TiffSlide(source).read_region((700, 900), 0, (256, 256)))
    with store.open(blob.sha256) as fh:
        got = np.asarray(tiffslide.TiffSlide(fh).read_region((700, 900), 0, (256, 256)))
    assert np.array_equal(want, got)
    store.close()


def test_packs_opened_together_share_one_key_transaction_and_every_record_decrypts(
    tmp_path: Path, key_file: Path
) -> None:
    """Writers opened at once (concurrent batches on a fresh hub) take their pack keys from one durable
    key-table transaction; every record reads back through its own pack's key, also in a new process's
    store; and a reserved key whose pack never opened is an unused row that rotation re-wraps."""
    import hashlib

    from medcloud.store.packs import PackStore

    def envelope() -> Envelope:
        source = SimpleNamespace(encryption_key_file=key_file, encryption_key_env=None, encryption_kms_command=None)
        return Envelope(load_kek(source), tmp_path / "keys.sqlite3")

    store = PackStore(tmp_path / "blobs", envelope=envelope())
    barrier = threading.Barrier(KEY_RESERVE - 1)
    batches = [[os.urandom(2000 + i) for i in range(5)] for _ in range(KEY_RESERVE - 1)]
    errors: list[BaseException] = []

    def put(batch: list[bytes]) -> None:
        try:
            barrier.wait()
            assert all(store.put_many([(hashlib.sha256(b).hexdigest(), b) for b in batch]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    packs = sorted(p.stem for p in (tmp_path / "blobs" / "packs").glob("*.pack"))
    assert 1 <= len(packs) <= KEY_RESERVE - 1
    with sqlite3.connect(tmp_path / "keys.sqlite3") as db:
        rows = db.execute("SELECT id, created_at FROM data_keys").fetchall()
    stored = {r[0] for r in rows}
    assert set(packs) <= stored and len(stored) == KEY_RESERVE  # one reserve, made once
    assert len({r[1] for r in rows}) == 1  # ... in one transaction
    # Every record is ciphertext on disk and reads back, here and in a new store (a restarted hub).
    for reader in (store, PackStore(tmp_path / "blobs", envelope=envelope())):
        for batch in batches:
            for b in batch:
                sha = hashlib.sha256(b).hexdigest()
                loc = reader.locate(sha)
                assert loc is not None and reader.read(sha, loc) == b
    for pack in packs:
        assert batches[0][0][:64] not in (tmp_path / "blobs" / "packs" / f"{pack}.pack").read_bytes()
    # The unused reserved keys are ordinary rows: a KEK rotation re-wraps them with the others.
    unused = stored - set(packs)
    assert unused
    env = envelope()
    rotate_key_file(env, key_file)
    with sqlite3.connect(tmp_path / "keys.sqlite3") as db:
        keks = {r[0]: r[1] for r in db.execute("SELECT id, kek_id FROM data_keys")}
    assert set(keks) == stored and len(set(keks.values())) == 1 and env.kek is not None
    assert set(keks.values()) == {env.kek.current_id()}
    fresh = PackStore(tmp_path / "blobs", envelope=envelope())
    b = batches[-1][-1]
    sha = hashlib.sha256(b).hexdigest()
    loc = fresh.locate(sha)
    assert loc is not None and fresh.read(sha, loc) == b  # still readable under the new KEK
