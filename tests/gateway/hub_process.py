"""Real `medcloud hub serve` and `medcloud gateway run` subprocesses for end-to-end gateway tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from gateway_fakes import free_port

SRC = Path(__file__).resolve().parents[2] / "src"
# Deterministic, valid UID root for test inputs (2.25 + a fixed integer prefix).
UID_ROOT = "2.25.31415926535897932384626"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("MEDCLOUD_GATEWAY_TOKEN", None)
    e.pop("MEDCLOUD_DATA_DIR", None)
    return e


def medcloud(*args: str, **kw: Any) -> list[str]:
    return [sys.executable, "-m", "medcloud.cli", *args]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class HubProcess:
    """A real hub on 127.0.0.1 in its own data folder; can be killed with SIGKILL and started again."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: str, *, site: str | None = None, project: str = "P1") -> str:
        args = ["hub", "token", "create", "--data", str(self.data), "--role", role, "--project", project]
        if site:
            args += ["--site", site]
        out = subprocess.run(medcloud(*args), env=env(), capture_output=True, check=True, timeout=60)
        return out.stdout.decode().strip()

    def start(self) -> HubProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                medcloud("hub", "serve", "--data", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)),
                env=env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.healthy, 120, f"hub on port {self.port} (log {self.log})", interval=0.05)
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"hub exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def instances(self, token: str, site: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            r = httpx.get(
                f"{self.url}/api/v1/instances",
                params={"site": site, "limit": 500, "offset": len(items)},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            r.raise_for_status()
            page = r.json()
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    def instance_bytes(self, token: str, sop_uid: str) -> bytes:
        r = httpx.get(
            f"{self.url}/api/v1/instances/{sop_uid}/file", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        r.raise_for_status()
        return r.content


class GatewayProcess:
    """`medcloud gateway run` as a subprocess, logging to a file."""

    def __init__(self, state: Path, args: list[str]) -> None:
        self.state = state
        self.args = args
        self.log = state.parent / f"{state.name}-gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                medcloud("gateway", "run", "--state", str(self.state), *self.args),
                env=env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"gateway did not finish in {timeout} s: {self.log.read_text()[-3000:]}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def counts(self) -> dict[str, int]:
        """Outbox counts read straight from the state database (as `gateway status` does)."""
        db = self.state / "outbox.sqlite3"
        if not db.exists():
            return {}
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                rows = con.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:  # schema not created yet
            return {}
        return {str(k): int(v) for k, v in rows}


def make_inputs(dst: Path, n: int, uid_root: str = UID_ROOT) -> list[Path]:
    """`n` DICOM files from pydicom's bundled test files, each with its own SOP Instance UID.

    Globbing pydicom's data folder directly: `get_testdata_files()` may first try the network for
    files it does not ship, which stalls offline.
    """
    import warnings

    import pydicom
    import pydicom.data
    import pydicom.errors

    bases: list[Path] = []
    for f in sorted(Path(pydicom.data.DATA_ROOT, "test_files").rglob("*.dcm")):
        if f.stat().st_size > 600_000:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if (
            ds.get("Modality") in {"CT", "MR", "CR", "DX", "MG", "PT", "NM"}
            and "SOPInstanceUID" in ds
            and str(ds.get("BurnedInAnnotation", "NO")).upper() != "YES"
            # Secondary captures are quarantined at the gateway (burned-in text suspected).
            and not str(ds.get("SOPClassUID", "")).startswith("1.2.840.10008.5.1.4.1.1.7")
            and getattr(ds, "file_meta", None) is not None
        ):
            bases.append(f)
    assert len(bases) >= 8, "pydicom's bundled CT/MR files are needed as test input"
    dst.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i in range(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(bases[i % len(bases)])
        uid = f"{uid_root}.{i + 1}"
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        target = dst / f"img{i:03d}.dcm"
        ds.save_as(target, enforce_file_format=False)
        out.append(target)
    return out
