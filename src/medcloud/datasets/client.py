"""A researcher's client for a hub's cohorts and datasets: HTTP with a bearer token, resumable verified download.

A download folder holds `manifest.jsonl` (the canonical manifest, checked against the version id) and
`files/<SOP UID>.dcm`. A file already there with the right SHA-256 is kept, every fetched file is hashed
before it is written (atomically), so an interrupted download resumes without losing or trusting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.datasets.manifest import manifest_id
from medcloud.errors import Conflict, IntegrityError, NotFound
from medcloud.fsio import write_atomic
from medcloud.hubclient import HubClient
from medcloud.hubclient import raise_for as _raise_for

if TYPE_CHECKING:
    pass

__all__ = ["DatasetClient", "DownloadReport", "export", "read_manifest", "sha256_file"]

MANIFEST = "manifest.jsonl"
FILES = "files"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")
_SPLIT = re.compile(r"^[a-z0-9_-]{1,16}$")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def parse_manifest(data: bytes, version: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and files of a canonical manifest, after checking that its SHA-256 is `version`."""
    if hashlib.sha256(data).hexdigest() != version:
        raise IntegrityError(f"manifest does not hash to {version}: refusing it")
    lines = data.decode().splitlines()
    header = json.loads(lines[0])
    files = [json.loads(line) for line in lines[1:]]
    for f in files:
        if not _UID.match(str(f.get("sop_uid", ""))) or len(f["sop_uid"]) > 64:
            raise IntegrityError(f"manifest names a file with an unsafe SOP UID: {f.get('sop_uid')!r}")
        if not _SPLIT.match(str(f.get("split", ""))):
            raise IntegrityError(f"manifest names an unsafe split: {f.get('split')!r}")
    return header, files


def read_manifest(folder: Path) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """A download folder's version id, header and files (the manifest re-checked against its id)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise NotFound(f"{folder} holds no {MANIFEST}: download the dataset there first")
    data = path.read_bytes()
    version = hashlib.sha256(data).hexdigest()
    header, files = parse_manifest(data, version)
    if manifest_id(header, files) != version:  # pragma: no cover - canonical by construction
        raise IntegrityError(f"{path} is not in canonical form")
    return version, header, files


@dataclass
class DownloadReport:
    """What a download did: files fetched, files kept (already there and verified), bytes fetched, failures."""

    version: str
    fetched: int = 0
    kept: int = 0
    bytes_fetched: int = 0
    failed: list[str] = field(default_factory=list)


class DatasetClient(HubClient):
    """Cohorts and datasets on one hub, over an `httpx.Client` (made from `base_url` and `token` if not given)."""

    agent = "medcloud-dataset"

    def _get(self, path: str, **params: Any) -> Any:
        r = self._client.get(path, params={k: v for k, v in params.items() if v is not None}, headers=self._headers)
        _raise_for(r)
        return r.json()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = self._client.post(path, json=body, headers=self._headers)
        _raise_for(r)
        return r.json()

    def save_cohort(self, name: str, query: list[dict[str, Any]], projects: list[str] | None = None) -> Any:
        """Save a named cohort query."""
        return self._post("/api/v1/cohorts", {"name": name, "query": query, "projects": projects})

    def list_cohorts(self) -> list[dict[str, Any]]:
        """Cohorts visible to this token."""
        items: list[dict[str, Any]] = self._get("/api/v1/cohorts")["items"]
        return items

    def get_cohort(self, name: str, project: str | None = None) -> Any:
        """One cohort, with how many instances it matches now."""
        from urllib.parse import quote

        return self._get(f"/api/v1/cohorts/{quote(name, safe='')}", project=project)

    def preview_cohort(
        self, query: list[dict[str, Any]], projects: list[str] | None = None, limit: int = 20, offset: int = 0
    ) -> Any:
        """Counts of what a query matches now, and a page of the matched studies."""
        body = {"query": query, "projects": projects, "limit": limit, "offset": offset}
        return self._post("/api/v1/cohorts/preview", body)

    def freeze(self, body: dict[str, Any]) -> Any:
        """Freeze a dataset version (the hub answers with the existing one when the inputs are the same)."""
        return self._post("/api/v1/datasets", body)

    def list_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Dataset versions visible to this token."""
        items: list[dict[str, Any]] = self._get("/api/v1/datasets", name=name)["items"]
        return items

    def resolve(self, ref: str) -> str:
        """A version id from an id, or the newest version of a dataset name."""
        if _VERSION.match(ref):
            return ref
        versions = self.list_versions(ref)
        if not versions:
            raise NotFound(f"no dataset version with id or name {ref!r}")
        return str(versions[0]["id"])

    def show(self, ref: str) -> Any:
        """One version's summary."""
        return self._get(f"/api/v1/datasets/{self.resolve(ref)}")

    def manifest_bytes(self, version: str) -> bytes:
        """The canonical manifest, checked against the version id."""
        r = self._client.get(f"/api/v1/datasets/{version}/manifest", headers=self._headers)
        _raise_for(r)
        parse_manifest(r.content, version)
        return r.content

    def fetch_file(self, version: str, entry: dict[str, Any]) -> bytes:
        """One file's bytes, verified against the manifest's SHA-256."""
        r = self._client.get(f"/api/v1/datasets/{version}/files/{entry['index']}/file", headers=self._headers)
        _raise_for(r)
        if hashlib.sha256(r.content).hexdigest() != entry["sha256"]:
            raise IntegrityError(f"file {entry['sop_uid']}: received bytes do not hash to {entry['sha256']}")
        return r.content

    def fetch_to(self, version: str, entry: dict[str, Any], path: Path) -> int:
        """Stream one file to `path` through a temporary file, hashing on the way; renamed only when it matches.

        For files too big to hold in memory; like `write_atomic`, a kill leaves no file at `path`."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        h = hashlib.sha256()
        url = f"/api/v1/datasets/{version}/files/{entry['index']}/file"
        try:
            with self._client.stream("GET", url, headers=self._headers) as r:
                if not r.is_success:
                    r.read()
                    _raise_for(r)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                with os.fdopen(fd, "wb") as fh:
                    for chunk in r.iter_bytes(1024 * 1024):
                        h.update(chunk)
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            if h.hexdigest() != entry["sha256"]:
                raise IntegrityError(f"file {entry['sop_uid']}: received bytes do not hash to {entry['sha256']}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return int(path.stat().st_size)

    def download(
        self,
        ref: str,
        dest: Path,
        *,
        workers: int = 4,
        stream_above: int = 64 * 1024 * 1024,
        on_total: Callable[[int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> DownloadReport:
        """Download a version into `dest`, resuming: verified files are kept, every new one is hashed first.

        Files up to `stream_above` bytes are held in memory and written with `write_atomic`; bigger ones
        (whole-slide images) are streamed to disk and renamed into place once their hash matches."""
        version = self.resolve(ref)
        data = self.manifest_bytes(version)
        dest.mkdir(parents=True, exist_ok=True)
        existing = dest / MANIFEST
        if existing.is_file() and hashlib.sha256(existing.read_bytes()).hexdigest() != version:
            raise Conflict(f"{dest} holds another dataset version; download into an empty folder")
        write_atomic(existing, data, mode=0o644)
        _, files = parse_manifest(data, version)
        folder = dest / FILES
        folder.mkdir(exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a download killed mid-write
            stale.unlink(missing_ok=True)
        if on_total:
            on_total(sum(int(f["size"]) for f in files))
        report = DownloadReport(version)
        lock = threading.Lock()

        def one(entry: dict[str, Any]) -> None:
            path = folder / f"{entry['sop_uid']}.dcm"
            if path.is_file() and path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]:
                with lock:
                    report.kept += 1
            else:
                try:
                    if int(entry["size"]) > stream_above:
                        n = self.fetch_to(version, entry, path)
                    else:
                        body = self.fetch_file(version, entry)
                        write_atomic(path, body, mode=0o644, sync_dir=False)
                        n = len(body)
                except IntegrityError as exc:
                    with lock:
                        report.failed.append(exc.detail)
                    return
                with lock:
                    report.fetched += 1
                    report.bytes_fetched += n
            if on_bytes:
                on_bytes(int(entry["size"]))

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(one, files):
                pass
        from medcloud.fsio import fsync_dir

        fsync_dir(folder)
        if report.failed:
            raise IntegrityError(f"{len(report.failed)} file(s) failed their hash check: {report.failed[0]}")
        return report


def export(download_dir: Path, out: Path, **options: Any) -> Any:
    """`medcloud.datasets.export.export` (kept here for callers of the first version)."""
    from medcloud.datasets.export import export as _export

    return _export(download_dir, out, **options)
