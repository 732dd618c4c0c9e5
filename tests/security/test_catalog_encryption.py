"""The SQLite catalog encrypted at rest with SQLCipher (security.catalog_cipher).

A stolen disk without the KEK reveals none of the catalog's searchable values (UIDs, pseudonym,
descriptions) in catalog.sqlite3, its WAL, its shared memory or a backup; a missing or wrong key is refused
with a clear error; a plain catalog converts keeping every row; backup + restore and KEK rotation keep it
readable. The DICOM files are pydicom's bundled test files with synthetic identifiers (test data).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medcloud.config import Settings, load_settings
from medcloud.errors import ConfigError
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security import catalog_cipher
from medcloud.security.backup import restore_generation, run_backup
from medcloud.security.catalog_cipher import CATALOG_KEY_ID, catalog_key, encrypt_catalog, file_state
from medcloud.security.catalog_cipher import connect as catalog_connect
from medcloud.security.envelope import (
    CATALOG_IN_CLEAR,
    KeyUnavailable,
    at_rest_status,
    kek_id,
    new_key_text,
    parse_keys,
    store_envelope,
)
from medcloud.security.selfcheck import check_at_rest
from medcloud.security.tokens import issue_token
from medcloud.store import Catalog
from tests.hub.conftest import deidentified_dicom

SRC = Path(__file__).resolve().parents[2] / "src"
PSEUDONYM = "MCCATALOGPLAINZXQV"  # a site pseudonym's shape (MC + 16 base32), synthetic
STUDY = "2.25.99887766554433221100998877665544332"  # a remapped UID's shape, synthetic
DESCRIPTION = "CATALOG CIPHER STUDY WOMBAT"
SECRETS = (PSEUDONYM, STUDY, DESCRIPTION)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "kek.hex"  # outside the data folder
    path.parent.mkdir()
    path.write_text(new_key_text() + "\n")
    return path


def _settings(tmp_path: Path, key_file: Path | None, name: str = "hub", **kw: object) -> Settings:
    return load_settings(data_dir=tmp_path / name, encryption_key_file=key_file, **kw)


@contextmanager
def _hub(settings: Settings) -> Iterator[tuple[TestClient, HubState, dict[str, str]]]:
    state = HubState.open(settings)
    reader = {"Authorization": "Bearer " + issue_token(state.catalog, role="researcher", projects=["p"]).token}
    try:
        with TestClient(create_app(settings, state=state), client=("127.0.0.1", 50000)) as client:
            yield client, state, reader
    finally:
        state.close()


def _fill(settings: Settings) -> None:
    """Two instances of one study, a report and tokens, through the hub's API (then closed)."""
    with _hub(settings) as (client, state, _):
        site = {"Authorization": "Bearer " + issue_token(state.catalog, role="site", site="s1", projects=["p"]).token}
        for source in ("MR_small.dcm", "CT_small.dcm"):
            data = deidentified_dicom(study_uid=STUDY, patient=PSEUDONYM, description=DESCRIPTION, source=source)
            r = client.post("/api/v1/ingest", content=data, headers=site)
            assert r.status_code == 201, r.text
        report = {"study_uid": STUDY, "patient": PSEUDONYM, "text": "No acute finding.", "date": "2024-04-01"}
        r = client.post("/api/v1/reports", content=json.dumps([report]), headers=site)
        assert r.status_code == 201, r.text


def _catalog_file(settings: Settings) -> Path:
    return settings.data_dir / "catalog.sqlite3"


def _dump(path: Path, key: bytes | None) -> dict[str, list[tuple[object, ...]]]:
    con = catalog_connect(path, key)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}  # noqa: S608
    finally:
        con.close()


def _found(paths: list[Path]) -> list[str]:
    """Which known plaintexts occur in which files."""
    hits = []
    for path in paths:
        raw = path.read_bytes()
        hits += [f"{value} in {path.name}" for value in SECRETS if value.encode() in raw]
    return hits


def _catalog_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.data_dir.glob("catalog.sqlite3*") if p.is_file())


def _study_found(settings: Settings) -> bool:
    """QIDO-RS searches the (encrypted) searchable columns as before."""
    with _hub(settings) as (client, _, reader):
        r = client.get("/dicom-web/studies", params={"PatientID": PSEUDONYM}, headers=reader)
        assert r.status_code == 200, r.text
        return STUDY in r.text and len(r.json()) == 1


def test_a_new_catalog_is_encrypted_from_its_first_page_wal_and_shm_included(tmp_path: Path, key_file: Path) -> None:
    settings = _settings(tmp_path, key_file)
    with _hub(settings) as (client, state, reader):
        site = {"Authorization": "Bearer " + issue_token(state.catalog, role="site", site="s1", projects=["p"]).token}
        data = deidentified_dicom(study_uid=STUDY, patient=PSEUDONYM, description=DESCRIPTION)
        assert client.post("/api/v1/ingest", content=data, headers=site).status_code == 201
        got = client.get("/dicom-web/studies", params={"StudyDescription": DESCRIPTION}, headers=reader)
        assert got.status_code == 200 and STUDY in got.text
        files = _catalog_files(settings)  # while the hub is open: the WAL holds the newest pages
        assert {p.name for p in files} >= {"catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"}
        assert os.path.getsize(settings.data_dir / "catalog.sqlite3-wal") > 0
        assert not _found(files), _found(files)
        assert state.catalog.db.encrypted
    assert file_state(_catalog_file(settings)) == "encrypted"
    assert not _found(_catalog_files(settings))
    # The same hub without encryption would have had them in clear: the scan is able to find them.
    plain = _settings(tmp_path, None, "plain")
    _fill(plain)
    assert file_state(_catalog_file(plain)) == "plain"
    assert len(_found(_catalog_files(plain))) == len(SECRETS)


def test_without_or_with_the_wrong_key_the_catalog_is_refused_clearly(tmp_path: Path, key_file: Path) -> None:
    settings = _settings(tmp_path, key_file)
    _fill(settings)
    path = _catalog_file(settings)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        sqlite3.connect(path).execute("SELECT * FROM studies").fetchall()
    # No KEK configured: the hub does not start and says why.
    with pytest.raises(KeyUnavailable, match="no key-encryption key is configured"):
        Catalog.from_settings(_settings(tmp_path, None))
    # Another KEK: refused, naming the KEK that would be needed.
    wrong = tmp_path / "wrong.hex"
    wrong.write_text(new_key_text() + "\n")
    need = kek_id(parse_keys(key_file.read_text(), "")[0])
    with pytest.raises(KeyUnavailable, match=f"wrapped by key-encryption key {need}, which file"):
        Catalog.from_settings(_settings(tmp_path, wrong))
    # A wrong page key (the right KEK, another catalog's key table): SQLite's "file is not a database" mapped.
    with pytest.raises(KeyUnavailable, match="cannot be decrypted with the catalog's key"):
        catalog_connect(path, os.urandom(32))
    bad = Catalog(f"sqlite:///{path}", sqlite_key=os.urandom(32))  # through SQLAlchemy's pool: not wrapped
    with pytest.raises(KeyUnavailable, match="cannot be decrypted with the catalog's key"):
        bad.migrate()
    with pytest.raises(KeyUnavailable, match="cannot be decrypted with the catalog's key"):
        list(bad.query.blob_refs())  # the read engine too
    bad.dispose()
    # The key table lost: named, not a crash.
    keys = settings.resolved_blob_dir / "keys.sqlite3"
    keys.rename(keys.with_name("keys.moved"))
    with pytest.raises(KeyUnavailable, match="is not in"):
        Catalog.from_settings(settings)
    keys.with_name("keys.moved").rename(keys)
    # The evidence says so instead of raising.
    status = at_rest_status(_settings(tmp_path, wrong))
    assert status["ok"] is False and status["status"] == "FAIL"
    assert status["catalog"]["key_verified"] is False and "does not hold" in status["catalog"]["error"]
    # On the command line: one line and exit code 6, no traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLOUD_")}
    env.update(PYTHONPATH=str(SRC), MEDCLOUD_ENCRYPTION_KEY_FILE=str(wrong))
    done = subprocess.run(
        [sys.executable, "-m", "medcloud.cli", "hub", "token", "list", "--data", str(settings.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 6, done.stderr
    assert "Traceback" not in done.stderr and "encryption key unavailable" in done.stderr
    assert need in done.stderr
    # And with the right key everything is there.
    assert _study_found(settings)


def test_a_plain_catalog_is_converted_keeping_every_row(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, enc = _settings(tmp_path, None), _settings(tmp_path, key_file)
    _fill(plain)
    path = _catalog_file(plain)
    before = _dump(path, None)
    assert before["instances"] and before["reports"] and before["audit_events"]
    # Encryption switched on, catalog not converted yet: the evidence fails and says what to do.
    status = at_rest_status(enc)
    assert not status["ok"] and status["catalog"]["encrypted"] is False and "encrypt-catalog" in status["summary"]
    assert status["catalog_in_clear"] == CATALOG_IN_CLEAR
    # Refused while another process has the catalog open, even idle (it would go on writing to the old file).
    holder = "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL');"
    holder += " c.execute('SELECT count(*) FROM studies').fetchone(); print('open', flush=True); time.sleep(120)"
    other = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match="in use by another process"):
            encrypt_catalog(enc)
    finally:
        other.kill()
        other.wait(10)
    assert file_state(path) == "plain" and _dump(path, None) == before
    # Killed before the rename (left a half-written temporary file): the old catalog is intact ...
    tmp = path.with_name(path.name + ".encrypting.tmp")

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog_cipher.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        encrypt_catalog(enc)
    monkeypatch.undo()
    assert file_state(path) == "plain" and _dump(path, None) == before
    tmp.write_bytes(b"half a file from a conversion killed with SIGKILL")
    # ... and the operator's command converts it; every row is kept, nothing searchable is left in clear.
    run = CliRunner().invoke(
        __import__("medcloud.hub.cli", fromlist=["app"]).app,
        ["encrypt-catalog", "--data", str(plain.data_dir)],
        env={"MEDCLOUD_ENCRYPTION_KEY_FILE": str(key_file)},
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["converted"] is True and json.loads(run.stdout)["rows"] == sum(
        len(v) for v in before.values()
    )
    assert file_state(path) == "encrypted" and not tmp.exists()
    assert _dump(path, catalog_key(enc)) == before
    assert not _found(_catalog_files(enc))
    assert encrypt_catalog(enc)["converted"] is False  # a second run is a no-op
    status = at_rest_status(enc)
    assert status["catalog"]["encrypted"] and status["catalog"]["key_verified"] and status["catalog_in_clear"] == []
    # Blobs stored before encryption stay in clear (a mixed store): still not ok, and now only for them.
    assert not status["ok"] and status["summary"] == f"{status['blobs_plain']} blob(s) stored in clear"
    assert _study_found(enc)


def test_serve_converts_a_plain_catalog_at_start(tmp_path: Path, key_file: Path) -> None:
    from medcloud.hub.cli import _encrypt_catalog_at_start

    plain, enc = _settings(tmp_path, None), _settings(tmp_path, key_file)
    cat = Catalog.from_settings(plain)
    cat.migrate()
    issue_token(cat, role="admin", label=DESCRIPTION)
    cat.dispose()
    before = _dump(_catalog_file(plain), None)
    _encrypt_catalog_at_start(plain)  # encryption off: nothing happens
    assert file_state(_catalog_file(plain)) == "plain"
    _encrypt_catalog_at_start(enc)
    assert file_state(_catalog_file(enc)) == "encrypted"
    assert _dump(_catalog_file(enc), catalog_key(enc)) == before
    assert not _found(_catalog_files(enc))


def test_backup_and_restore_of_an_encrypted_catalog(tmp_path: Path, key_file: Path) -> None:
    settings = _settings(tmp_path, key_file, backup_dir=tmp_path / "backups")
    _fill(settings)
    before = _dump(_catalog_file(settings), catalog_key(settings))
    gen = run_backup(settings)
    manifest = json.loads((gen / "MANIFEST.json").read_text())
    assert manifest["catalog"]["encrypted"] is True
    assert manifest["catalog"]["rows"]["instances"] == len(before["instances"])
    assert file_state(gen / "catalog.sqlite3") == "encrypted"
    copied = [p for p in gen.rglob("*") if p.is_file()]
    assert not _found(copied), _found(copied)
    assert not any(key_file.read_text().strip().encode() in p.read_bytes() for p in copied)  # the KEK stays out
    target = tmp_path / "restored"
    restore_generation(settings, None, target=target)
    restored = _settings(tmp_path, key_file, "restored")
    assert _dump(_catalog_file(restored), catalog_key(restored)) == before
    with pytest.raises(KeyUnavailable):
        Catalog.from_settings(_settings(tmp_path, None, "restored"))
    assert _study_found(restored)


def test_kek_rotation_rewraps_the_catalog_key_without_rekeying_the_file(tmp_path: Path, key_file: Path) -> None:
    from medcloud.hub.cli import app

    settings = _settings(tmp_path, key_file)
    _fill(settings)
    path = _catalog_file(settings)
    before = _dump(path, catalog_key(settings))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    old = key_file.read_text()
    done = CliRunner().invoke(
        app, ["rotate-key", "--data", str(settings.data_dir)], env={"MEDCLOUD_ENCRYPTION_KEY_FILE": str(key_file)}
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["remaining"] == 0
    new = parse_keys(key_file.read_text(), "")
    assert len(new) == 1 and kek_id(new[0]) != kek_id(parse_keys(old, "")[0])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the pages were not re-encrypted
    env = store_envelope(settings)
    row = env.table.get(CATALOG_KEY_ID)
    env.close()
    assert row is not None and row[0] == kek_id(new[0])
    assert _dump(path, catalog_key(settings)) == before  # the new KEK alone opens it
    retired = tmp_path / "old.hex"
    retired.write_text(old)
    with pytest.raises(KeyUnavailable, match="does not hold"):
        Catalog.from_settings(_settings(tmp_path, retired))
    assert _study_found(settings)


def test_a_postgresql_catalog_is_named_as_the_operators_to_encrypt(tmp_path: Path, key_file: Path) -> None:
    settings = _settings(tmp_path, key_file, database_url="postgresql+psycopg://127.0.0.1:5432/test")
    settings.data_dir.mkdir()
    status = at_rest_status(settings)
    assert status["catalog"]["engine"] == "postgresql" and status["catalog"]["encrypted"] is None
    assert status["status"] == "WARN" and "encrypted volume" in status["summary"]
    assert status["catalog_in_clear"] == CATALOG_IN_CLEAR
    item = check_at_rest(settings)
    assert item["status"] == "WARN" and "encrypted volume" in item["summary"]
    with pytest.raises(ConfigError, match="not an embedded SQLite file"):
        encrypt_catalog(settings)
    # Encryption on with a SQLite catalog that is encrypted: the self-check item passes.
    sqlite = _settings(tmp_path, key_file, "hub2")
    _fill(sqlite)
    assert check_at_rest(sqlite)["status"] == "PASS"
    # ... and fails, saying so, when the catalog is in clear.
    plain = _settings(tmp_path, None, "hub3")
    _fill(plain)
    failed = check_at_rest(_settings(tmp_path, key_file, "hub3"))
    assert failed["status"] == "FAIL" and "encrypt-catalog" in failed["summary"]
