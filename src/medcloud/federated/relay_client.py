"""`medcloud fl sync`: exchange this site's copy of the public key folder with the hub's relay.

Pushes the files this site wrote (and any name nobody has published yet), pulls every file another
party published, and checks each pulled file against the SHA-256 the hub recorded for it. Whether the
hub told the truth is not decided here: the ceremony checks signatures and confirmed fingerprints when
the next `medcloud fl keygen` step reads the folder.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medcloud.errors import InvalidInput
from medcloud.federated.relay import MAX_PUBLIC_FILE_BYTES, author_of, validate_federation, validate_public_name
from medcloud.hubclient import HubClient, raise_for

__all__ = ["RelayClient", "SyncReport", "sync_public_folder"]


@dataclass
class SyncReport:
    pushed: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # "name: reason"


class RelayClient(HubClient):
    agent = "medcloud-fl-sync"

    def _path(self, federation: str, name: str | None = None) -> str:
        base = f"/api/v1/fl/{quote(validate_federation(federation), safe='')}/public"
        return base if name is None else f"{base}/{quote(validate_public_name(name), safe='')}"

    def list(self, federation: str) -> list[dict[str, Any]]:
        r = self._client.get(self._path(federation), headers=self._headers)
        raise_for(r)
        return list(r.json()["items"])

    def get(self, federation: str, name: str, sha256: str) -> bytes:
        """The file's bytes, refused unless they hash to what the listing said."""
        r = self._client.get(self._path(federation, name), headers=self._headers)
        raise_for(r)
        data = r.content
        if hashlib.sha256(data).hexdigest() != sha256 or r.headers.get("x-content-sha256", sha256) != sha256:
            raise InvalidInput(f"{name}: the bytes the hub sent do not match the SHA-256 it listed; not written")
        return data

    def put(self, federation: str, name: str, data: bytes) -> dict[str, Any]:
        r = self._client.put(self._path(federation, name), content=data, headers=self._headers)
        raise_for(r)
        return dict(r.json())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".sync-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_public_folder(client: RelayClient, federation: str, site: str, public: Path) -> SyncReport:
    """Push what `site` wrote, pull what the others published; see the module's docstring."""
    public.mkdir(parents=True, exist_ok=True)
    report = SyncReport()
    remote = {r["name"]: r for r in client.list(federation)}
    for path in sorted(public.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            validate_public_name(path.name)
        except InvalidInput as exc:
            report.skipped.append(f"{path.name}: {exc}")  # never uploaded, whatever it is
            continue
        if path.stat().st_size > MAX_PUBLIC_FILE_BYTES:
            report.skipped.append(f"{path.name}: larger than {MAX_PUBLIC_FILE_BYTES} bytes")
            continue
        digest = _sha256(path)
        known = remote.get(path.name)
        if known is not None and known["sha256"] == digest:
            report.unchanged += 1
            continue
        author = author_of(path.name)
        mine = author == site if author is not None else known is None or known["uploaded_by"] == site
        if mine:
            client.put(federation, path.name, path.read_bytes())
            report.pushed.append(path.name)
    for row in client.list(federation):
        if row["uploaded_by"] == site:
            continue  # this site's own files: its local copy is the source
        target = public / validate_public_name(row["name"])
        if target.is_file() and _sha256(target) == row["sha256"]:
            continue
        _write_atomic(target, client.get(federation, row["name"], row["sha256"]))
        report.pulled.append(row["name"])
    return report
