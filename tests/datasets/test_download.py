"""Resumable, verified download and export, through the client against a real hub (and the CLI)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from medcloud.datasets import cli as dataset_cli
from medcloud.datasets.client import DatasetClient, export, read_manifest, sha256_file
from medcloud.errors import Conflict, IntegrityError
from tests.hub.conftest import Hub


def _version(hub: Hub) -> str:
    r = hub.client.post(
        "/api/v1/datasets", json={"name": "lung", "query": [{"modality": "CT"}]}, headers=hub.auth("researcher")
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class Flaky:
    """An httpx client that fails after `ok_files` file requests, or serves altered bytes for one file."""

    def __init__(self, inner: httpx.Client, ok_files: int | None = None, corrupt: str | None = None) -> None:
        self.inner, self.ok_files, self.corrupt, self.files = inner, ok_files, corrupt, 0

    def get(self, url: str, **kw: Any) -> httpx.Response:
        if url.endswith("/file"):
            self.files += 1
            if self.ok_files is not None and self.files > self.ok_files:
                raise httpx.ReadError("connection reset (simulated kill)")
        r = self.inner.get(url, **kw)
        if self.corrupt and url.endswith(f"/files/{self.corrupt}/file"):
            return httpx.Response(200, content=r.content[:-1] + bytes([r.content[-1] ^ 0xFF]), headers=r.headers)
        return r

    @contextmanager
    def stream(self, method: str, url: str, **kw: Any) -> Iterator[httpx.Response]:
        self.files += 1
        if self.ok_files is not None and self.files > self.ok_files:
            raise httpx.ReadError("connection reset (simulated kill)")
        with self.inner.stream(method, url, **kw) as r:
            if self.corrupt and url.endswith(f"/files/{self.corrupt}/file"):
                data = r.read()
                yield httpx.Response(200, content=data[:-1] + bytes([data[-1] ^ 0xFF]), headers=r.headers)
            else:
                yield r

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.inner.post(url, **kw)

    def close(self) -> None:  # the hub fixture owns the TestClient
        pass


def _client(hub: Hub, inner: Any = None) -> DatasetClient:
    return DatasetClient(client=inner or hub.client, token=hub.tokens["researcher"])


def _all_verified(dest: Path) -> int:
    _, _, files = read_manifest(dest)
    for f in files:
        assert sha256_file(dest / "files" / f"{f['sop_uid']}.dcm") == f["sha256"]
    return len(files)


def test_download_then_rerun_fetches_nothing(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    client = _client(filled)
    first = client.download(vid, tmp_path / "d", workers=1)
    assert (first.fetched, first.kept, first.failed) == (12, 0, [])
    assert _all_verified(tmp_path / "d") == 12
    second = client.download("lung", tmp_path / "d", workers=1)  # by name: the newest version
    assert (second.fetched, second.kept) == (0, 12)


def test_interrupted_download_resumes_losing_nothing(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    dest = tmp_path / "d"
    with pytest.raises(httpx.ReadError):
        _client(filled, Flaky(filled.client, ok_files=5)).download(vid, dest, workers=1)
    present = sorted(p.name for p in (dest / "files").glob("*.dcm"))
    assert len(present) == 5
    # What a kill leaves behind: a torn file at a final name and a temporary file of write_atomic.
    torn = dest / "files" / present[0]
    torn.write_bytes(torn.read_bytes()[:100])
    (dest / "files" / f".{present[1]}.123.456.tmp").write_bytes(b"half")
    report = _client(filled).download(vid, dest, workers=2)
    assert (report.fetched, report.kept) == (8, 4)
    assert _all_verified(dest) == 12
    assert not list((dest / "files").glob(".*.tmp"))


def test_hash_mismatch_is_detected_and_not_written(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    dest = tmp_path / "d"
    with pytest.raises(IntegrityError, match="1 file"):
        _client(filled, Flaky(filled.client, corrupt="2")).download(vid, dest, workers=1)
    _, _, files = read_manifest(dest)
    assert not (dest / "files" / f"{files[2]['sop_uid']}.dcm").exists()
    assert len(list((dest / "files").glob("*.dcm"))) == 11
    assert _client(filled).download(vid, dest, workers=1).fetched == 1


def test_big_files_stream_to_disk_with_the_same_guarantees(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    dest = tmp_path / "d"
    with pytest.raises(httpx.ReadError):
        _client(filled, Flaky(filled.client, ok_files=5)).download(vid, dest, workers=1, stream_above=0)
    assert len(list((dest / "files").glob("*.dcm"))) == 5
    _, _, files = read_manifest(dest)
    with pytest.raises(IntegrityError, match="1 file"):
        _client(filled, Flaky(filled.client, corrupt="7")).download(vid, dest, workers=1, stream_above=0)
    assert not (dest / "files" / f"{files[7]['sop_uid']}.dcm").exists()
    assert len(list((dest / "files").glob("*.dcm"))) == 11
    assert not list((dest / "files").glob(".*.tmp"))
    report = _client(filled).download(vid, dest, workers=2, stream_above=0)
    assert (report.fetched, report.kept) == (1, 11)
    assert _all_verified(dest) == 12


def test_tampered_manifest_and_foreign_folder_are_refused(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    dest = tmp_path / "d"
    _client(filled).download(vid, dest, workers=1)
    text = (dest / "manifest.jsonl").read_bytes()
    (dest / "manifest.jsonl").write_bytes(text.replace(b'"train"', b'"test"', 1).replace(b'"val"', b'"test"', 1))
    with pytest.raises(Conflict):  # another version's folder is never mixed into
        _client(filled).download(vid, dest, workers=1)

    class Liar(Flaky):
        def get(self, url: str, **kw: Any) -> httpx.Response:
            r = self.inner.get(url, **kw)
            if url.endswith("/manifest"):
                return httpx.Response(200, content=r.content.replace(b'"index":0', b'"index":0 ', 1))
            return r

    with pytest.raises(IntegrityError, match="does not hash"):
        _client(filled, Liar(filled.client)).download(vid, tmp_path / "e", workers=1)


def test_export_lays_out_splits_by_patient(filled: Hub, tmp_path: Path) -> None:
    vid = _version(filled)
    _client(filled).download(vid, tmp_path / "d", workers=1)
    report = export(tmp_path / "d", tmp_path / "out")
    assert sum(report.per_split.values()) == 12
    rows = (tmp_path / "out" / "index.csv").read_text().splitlines()[1:]
    assert len(rows) == 12
    split_of: dict[str, set[str]] = {}
    for row in rows:
        path, split, patient, *_rest, sha = row.split(",")
        assert path.startswith(f"{split}/{patient}/") and path.endswith(".dcm")
        assert hashlib.sha256((tmp_path / "out" / path).read_bytes()).hexdigest() == sha
        split_of.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["id"] == vid
    png = export(tmp_path / "d", tmp_path / "png", fmt="png")
    pngs = list((tmp_path / "png").rglob("*.png"))
    assert len(pngs) == 12 == sum(png.per_split.values()) and pngs[0].read_bytes()[:4] == b"\x89PNG"
    # A file with no pixels cannot become a PNG: said in one line, not a traceback.
    from medcloud.errors import UnsupportedFormat

    (tmp_path / "d" / "files" / f"{read_manifest(tmp_path / 'd')[2][0]['sop_uid']}.dcm").write_bytes(b"x" * 10)
    with pytest.raises(UnsupportedFormat):
        export(tmp_path / "d", tmp_path / "png2", fmt="png", verify=False)
    # A damaged download is not exported.
    _, _, files = read_manifest(tmp_path / "d")
    (tmp_path / "d" / "files" / f"{files[0]['sop_uid']}.dcm").write_bytes(b"x")
    with pytest.raises(IntegrityError):
        export(tmp_path / "d", tmp_path / "out2")


def test_cli_cohort_freeze_list_show_download_export(
    filled: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_cli, "_client", lambda *a: _client(filled, Flaky(filled.client)))
    from medcloud.cli import app

    run = CliRunner().invoke
    r = run(app, ["cohort", "save", "ct", "--modality", "CT", "--date-to", "2012-12-31"])
    assert r.exit_code == 0, r.output
    assert "ct\tlung" in run(app, ["cohort", "list"]).output
    assert json.loads(run(app, ["cohort", "show", "ct"]).output)["matches"] == 6
    r = run(app, ["dataset", "freeze", "early", "--cohort", "ct", "--split", "train=0.5,test=0.5", "--seed", "2"])
    assert r.exit_code == 0, r.output
    vid = json.loads(r.output)["id"]
    assert vid in run(app, ["dataset", "list"]).output
    assert json.loads(run(app, ["dataset", "show", "early"]).output)["split"] == {"test": 0.5, "train": 0.5}
    r = run(app, ["dataset", "download", vid, str(tmp_path / "d"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert '"fetched": 6' in r.output
    r = run(app, ["dataset", "export", str(tmp_path / "d"), str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert sum(json.loads(r.output[r.output.index("{") :])["per_split"].values()) == 6


def test_cli_without_hub_or_token_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from medcloud.cli import main

    monkeypatch.delenv("MEDCLOUD_HUB_URL", raising=False)
    monkeypatch.delenv("MEDCLOUD_TOKEN", raising=False)
    for argv in (["dataset", "list"], ["dataset", "list", "--hub", "http://127.0.0.1:9"]):
        monkeypatch.setattr("sys.argv", ["medcloud", *argv])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["medcloud: invalid input: no hub URL: pass --hub or set MEDCLOUD_HUB_URL",
                   "medcloud: invalid input: no token: pass --token or set MEDCLOUD_TOKEN"]  # fmt: skip
