"""`medcloud backup` / `medcloud restore`: generations with a manifest written last, killed half-way with
SIGKILL and resumed, restored byte-identical into a new data folder; a damaged generation is refused."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medcloud.config import load_settings
from medcloud.errors import ConfigError, IntegrityError, NotFound
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.backup import (
    MANIFEST,
    PROGRESS,
    backup_status,
    complete_generations,
    export_offline,
    restore_generation,
    run_backup,
)
from medcloud.security.tokens import issue_token

from .conftest import deidentified_dicom

SRC = Path(__file__).resolve().parents[2] / "src"
SKIP = ("catalog.sqlite3", "-wal", "-shm")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub's data folder with packed and loose blobs, audit events, tokens, and a keys folder (closed)."""
    data = tmp_path_factory.mktemp("filled") / "data"
    settings = load_settings(data_dir=data)
    state = HubState.open(settings)
    token = issue_token(state.catalog, role="site", site="site-a", projects=["p"]).token
    with TestClient(create_app(settings, state=state)) as client:
        for n in range(16):
            if n == 8:
                state.blobs.pack_below = 1  # from here on every blob is a file of its own
            r = client.post(
                "/api/v1/ingest",
                content=deidentified_dicom(patient=f"P{n}"),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
            )
            assert r.status_code in (200, 201), r.text
    state.close()
    (data / "keys").mkdir()
    (data / "keys" / "site-relay.key").write_bytes(os.urandom(64))
    return data


def _fill_hub(filled: Path, data: Path) -> None:
    shutil.copytree(filled, data)


def _env(data: Path, backup: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLOUD_")}
    env.update(PYTHONPATH=str(SRC), MEDCLOUD_DATA_DIR=str(data), MEDCLOUD_BACKUP_DIR=str(backup), **extra)
    return env


def _files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.endswith(SKIP) and ".incoming" not in rel and not p.name.endswith(".sqlite3"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}  # noqa: S608
    finally:
        con.close()


@pytest.mark.slow  # subprocesses: a few seconds on an idle machine
def test_backup_killed_half_way_then_resumed_and_restored_identical(tmp_path: Path, filled: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    _fill_hub(filled, data)
    cmd = [sys.executable, "-m", "medcloud.cli", "backup"]
    proc = subprocess.Popen(cmd, env=_env(data, backup, MEDCLOUD_TEST_BACKUP_FILE_DELAY="0.2"), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            progress = list(backup.glob(f"gen-*/{PROGRESS}"))
            if progress and len(progress[0].read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "backup made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    (partial,) = backup.glob("gen-*")
    assert not (partial / MANIFEST).exists()
    settings = load_settings(data_dir=data, backup_dir=backup)
    st = backup_status(settings)
    assert st["generations"] == 0 and st["incomplete"] == 1 and st["problems"]
    with pytest.raises(NotFound):  # an unfinished generation is never restored
        restore_generation(settings, None, target=restored)
    with pytest.raises(IntegrityError, match="incomplete"):
        restore_generation(settings, partial.name, target=restored)

    assert run_backup(settings) == partial  # the next backup resumes the interrupted generation
    (gen,) = complete_generations(settings)
    assert gen.path == partial and gen.manifest["resumed_files"] >= 3  # files done before the kill are kept
    assert not (gen.path / PROGRESS).exists()

    rc = subprocess.run(
        [sys.executable, "-m", "medcloud.cli", "restore", "--data", str(restored), "--from", str(backup)],
        env=_env(data, backup),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rc.returncode == 0, rc.stderr
    src_files, dst_files = _files(data), _files(restored)
    assert src_files == dst_files and any(k.startswith("keys/") for k in src_files)
    assert sum(1 for k in src_files if "/packs/" in k or k.startswith("blobs/packs")) >= 1
    assert _rows(data / "catalog.sqlite3") == _rows(restored / "catalog.sqlite3")
    (pack_index,) = data.glob("blobs/packs/index.sqlite3")
    assert _rows(pack_index) == _rows(restored / "blobs/packs/index.sqlite3")
    # the restored hub opens, its audit chain verifies and every blob the catalog names is there
    state = HubState.open(load_settings(data_dir=restored))
    try:
        assert state.catalog.audit.verify().ok
        refs = list(state.catalog.query.blob_refs())
        assert len(refs) >= 16 and all(state.blobs.exists(sha) for sha, _ in refs)
    finally:
        state.close()


def test_damaged_generation_refused(tmp_path: Path, filled: Path) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup"
    _fill_hub(filled, data)
    settings = load_settings(data_dir=data, backup_dir=backup, backup_generations=2)
    gens = [run_backup(settings) for _ in range(3)]
    assert [g.name for g in complete_generations(settings)] == [g.name for g in gens[1:]]  # rotation kept 2
    assert not gens[0].exists()
    newest = gens[-1]
    victim = next(p for p in sorted((newest / "data").rglob("*")) if p.is_file() and "keys" not in p.parts)
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    victim.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="damaged") as err:
        restore_generation(settings, None, target=tmp_path / "r1")
    assert victim.relative_to(newest).as_posix() in str(err.value)
    assert not (tmp_path / "r1").exists()  # nothing written
    # an altered manifest is refused too (its own checksum)
    manifest = json.loads((gens[1] / MANIFEST).read_text())
    manifest["files"].popitem()
    (gens[1] / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="altered"):
        restore_generation(settings, gens[1].name, target=tmp_path / "r2")


def test_offline_export_and_status(tmp_path: Path, filled: Path) -> None:
    data, backup, medium = tmp_path / "data", tmp_path / "backup", tmp_path / "usb"
    _fill_hub(filled, data)
    settings = load_settings(data_dir=data, backup_dir=backup)
    assert backup_status(settings)["generations"] == 0 and backup_status(settings)["status"] == "FAIL"
    backup.mkdir()
    fd = os.open(backup / ".backup.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another backup is running
        with pytest.raises(ConfigError, match="another"):
            run_backup(settings)
    finally:
        os.close(fd)
    run_backup(settings)
    gen = run_backup(settings)
    st = backup_status(settings)
    assert st["generations"] == 2 and st["newest"] == gen.name and st["newest_age_hours"] < 1
    assert any("offline" in p for p in st["problems"]) and st["status"] == "WARN"
    medium.mkdir()
    out = export_offline(settings, None, dest=medium, label="USB-0001")
    assert (out / MANIFEST).is_file() and (out / "OFFLINE.json").is_file()
    st = backup_status(settings)
    assert st["offline_copy"]["generation"] == gen.name and st["offline_copy"]["label"] == "USB-0001"
    assert st["problems"] == [] and st["status"] == "PASS"
    # the offline copy restores on its own
    restore_generation(load_settings(data_dir=data, backup_dir=medium), None, target=tmp_path / "from-usb")
    assert _rows(data / "catalog.sqlite3") == _rows(tmp_path / "from-usb" / "catalog.sqlite3")
    assert backup_status(load_settings(data_dir=data))["problems"] == [
        "no backup_dir configured: the hub is not backed up by medcloud"
    ]


@pytest.mark.slow
def test_postgresql_catalog_round_trip(tmp_path: Path, pg_url: str) -> None:
    """A PostgreSQL catalog goes through pg_dump / pg_restore; the restored database has the same rows."""
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("the PostgreSQL client tools are not installed")
    import sqlalchemy as sa

    data, backup = tmp_path / "data", tmp_path / "backup"
    settings = load_settings(data_dir=data, database_url=pg_url, backup_dir=backup)
    state = HubState.open(settings)
    token = issue_token(state.catalog, role="site", site="site-a", projects=["p"]).token
    with TestClient(create_app(settings, state=state)) as client:
        for n in range(3):
            r = client.post(
                "/api/v1/ingest",
                content=deidentified_dicom(patient=f"PG{n}"),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
            )
            assert r.status_code in (200, 201), r.text
    state.close()
    gen = run_backup(settings)
    manifest = json.loads((gen / MANIFEST).read_text())
    assert manifest["catalog"]["kind"] == "postgresql" and "catalog.pgdump" in manifest["files"]

    def rows(url: str) -> dict[str, list[tuple[object, ...]]]:
        engine = sa.create_engine(url)
        try:
            meta = sa.MetaData()
            meta.reflect(engine)
            with engine.connect() as conn:
                return {t: sorted(map(tuple, conn.execute(meta.tables[t].select())), key=repr) for t in meta.tables}
        finally:
            engine.dispose()

    before = rows(pg_url)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # the disaster: the catalog's tables are gone
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()
    restore_generation(settings, None, target=tmp_path / "restored")
    assert rows(pg_url) == before and sum(len(v) for v in before.values()) > 10
    assert _files(data) == _files(tmp_path / "restored")
