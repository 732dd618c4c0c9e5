"""bench/stow.py at a tiny size: medcloud's STOW-RS (and Orthanc's where installed) side by side, every
instance acknowledged and stored, the series-metadata timing present, and the JSON shaped as documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _orthanc_usable() -> bool:
    return bool(
        (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists())
        and Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so").exists()
        and shutil.which("unshare")
        and shutil.which("nsenter")
    )


def test_stow_bench_tiny() -> None:
    args = ["--n", "6", "--repeat", "1", "--clients", "1", "--per-request", "1,3", "--hub-workers", "1"]
    with_orthanc = _orthanc_usable()
    if not with_orthanc:
        args.append("--no-orthanc")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stow.py"), *args],
        capture_output=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    report = json.loads(out.stdout)
    assert report["files"] == 6
    systems = ["medcloud", "orthanc"] if with_orthanc else ["medcloud"]
    for system in systems:
        for key in ("per_request_1_clients_1", "per_request_3_clients_1"):
            run = report[system][key]
            assert run["acknowledged"] == 6 and run["failed"] == 0, run
            assert run["stored"] == 6, run
            assert run["files_per_s"] > 0
    meta = report["series_metadata_100"]
    for system in systems:
        assert meta[system]["instances"] == 100, meta
        assert meta[system]["cold_ms"] > 0 and meta[system]["warm_median_ms"] > 0
    if with_orthanc:
        ratio = report["medcloud_over_orthanc"]["per_request_3_clients_1"]
        assert ratio["target"] == 5.0 and ratio["of_medians"] > 0
    else:
        assert "skipped" in report["orthanc"]
