"""What a job's script imports to reach its data and hand back results (standard library only).

    from medcloud.jobs.runtime import dataset, save_artifact, register_model

    ds = dataset()                       # the one dataset version this job was given
    for f in ds.files:                   # manifest entries: sop_uid, sha256, size, split, labels, ...
        data = ds.read(f)                # the file's bytes, checked against the manifest's SHA-256
    for f, data in ds.iter_files(ds.split("train")):   # the same, up to 256 files per request
    save_artifact("model.onnx", path_or_bytes)
    register_model("my-model", "1", "model.onnx", metrics={"auc": 0.91})

The hub passes MEDCLOUD_HUB_URL, MEDCLOUD_JOB_TOKEN (scoped to this job and its dataset version, revoked
when the job ends), MEDCLOUD_DATASET_ID and MEDCLOUD_JOB_ID; nothing here needs anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Dataset", "JobRuntimeError", "dataset", "job_id", "register_model", "save_artifact"]

TIMEOUT_S = 300


class JobRuntimeError(RuntimeError):
    """The hub refused a request, or the job was started without its environment."""


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise JobRuntimeError(f"{name} is not set: this runs inside a medcloud job only")
    return value


def job_id() -> str:
    return _env("MEDCLOUD_JOB_ID")


def _request(method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
    url = _env("MEDCLOUD_HUB_URL").rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise JobRuntimeError(f"MEDCLOUD_HUB_URL must be an http(s) URL, not {url!r}")
    headers = {"Authorization": f"Bearer {_env('MEDCLOUD_JOB_TOKEN')}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", errors="replace")
        raise JobRuntimeError(f"hub answered {exc.code} to {method} {path}: {detail}") from None


@dataclass(frozen=True)
class Dataset:
    """A frozen dataset version as its manifest describes it."""

    id: str
    header: dict[str, Any]
    files: list[dict[str, Any]]

    def read(self, entry: dict[str, Any] | int | str) -> bytes:
        """One file's bytes (by manifest entry, index or SOP UID), refused unless they hash as the manifest says."""
        if isinstance(entry, dict):
            f = entry
        elif isinstance(entry, int):
            f = self.files[entry]
        else:
            f = next((x for x in self.files if x["sop_uid"] == entry), {})
            if not f:
                raise JobRuntimeError(f"no file {entry!r} in dataset {self.id}")
        jid = urllib.parse.quote(job_id(), safe="")
        data = _request("GET", f"/api/v1/jobs/{jid}/dataset/files/{int(f['index'])}")
        if hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise JobRuntimeError(f"file {f['index']} of dataset {self.id} does not match its manifest hash")
        return data

    def iter_files(
        self, entries: list[dict[str, Any]] | None = None, batch: int = 256
    ) -> Iterator[tuple[dict[str, Any], bytes]]:
        """(entry, bytes) for `entries` (default: every file), fetched in runs of up to `batch` consecutive
        indexes per request, each file checked against its manifest SHA-256."""
        wanted = sorted(entries if entries is not None else self.files, key=lambda f: int(f["index"]))
        by_index = {int(f["index"]): f for f in self.files}
        jid = urllib.parse.quote(job_id(), safe="")
        i = 0
        while i < len(wanted):
            first = int(wanted[i]["index"])
            run = [wanted[i]]
            while (
                i + len(run) < len(wanted)
                and len(run) < batch
                and int(wanted[i + len(run)]["index"]) == first + len(run)
            ):
                run.append(wanted[i + len(run)])
            data = _request("GET", f"/api/v1/jobs/{jid}/dataset/batch?start={first}&count={len(run)}")
            offset = 0
            for f in run:
                size = int(by_index[int(f["index"])]["size"])
                chunk = data[offset : offset + size]
                offset += size
                if hashlib.sha256(chunk).hexdigest() != f["sha256"]:
                    raise JobRuntimeError(f"file {f['index']} of dataset {self.id} does not match its manifest hash")
                yield f, chunk
            if offset != len(data):
                raise JobRuntimeError(f"the hub sent {len(data)} bytes for files {first}+{len(run)}, expected {offset}")
            i += len(run)

    def split(self, name: str) -> list[dict[str, Any]]:
        """The manifest entries of one split (train, val, test, ...)."""
        return [f for f in self.files if f.get("split") == name]


def dataset() -> Dataset:
    """This job's dataset version; its manifest must hash to the version id (content addressing)."""
    jid = urllib.parse.quote(job_id(), safe="")
    data = _request("GET", f"/api/v1/jobs/{jid}/dataset/manifest")
    version = _env("MEDCLOUD_DATASET_ID")
    if hashlib.sha256(data).hexdigest() != version:
        raise JobRuntimeError(f"the manifest served does not hash to dataset version {version}")
    lines = data.decode("utf-8").splitlines()
    header = json.loads(lines[0])
    files = [json.loads(line) for line in lines[1:] if line]
    return Dataset(version, header, files)


def save_artifact(name: str, content: bytes | str | Path) -> dict[str, Any]:
    """Upload bytes (or a file's content) as the job's artefact `name`; returns its sha256 and size."""
    data = Path(content).read_bytes() if isinstance(content, (str, Path)) else bytes(content)
    jid = urllib.parse.quote(job_id(), safe="")
    path = f"/api/v1/jobs/{jid}/artifacts/{urllib.parse.quote(name, safe='')}"
    reply: dict[str, Any] = json.loads(_request("PUT", path, data, "application/octet-stream"))
    if reply.get("sha256") != hashlib.sha256(data).hexdigest():
        raise JobRuntimeError(f"the hub stored artefact {name!r} with another hash")
    return reply


def register_model(
    name: str, version: str, artifact: str, *, metrics: dict[str, Any] | None = None, **card: Any
) -> dict[str, Any]:
    """Register an uploaded artefact as a model; the hub writes the dataset version and job into its card."""
    body = json.dumps({"name": name, "version": version, "artifact": artifact, "metrics": metrics or {}, "card": card})
    jid = urllib.parse.quote(job_id(), safe="")
    reply: dict[str, Any] = json.loads(
        _request("POST", f"/api/v1/jobs/{jid}/models", body.encode(), "application/json")
    )
    return reply
