"""bench/dicomweb_render.py at a tiny size against a real hub (Orthanc left out): it runs, every request
it times succeeded (the script raises otherwise), and it prints the figures the docs quote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dicomweb_render.py"


@pytest.mark.slow
def test_render_bench_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--studies", "3", "--per-series", "3", "--repeat", "3", "--no-orthanc"],
        capture_output=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    result = json.loads(out.stdout)
    hub = result["hub"]
    assert result["images"] == 9 and "orthanc" not in result
    for label in ("cold", "warm"):
        assert hub["rendered_jpeg_512"][label]["n"] == 3 and hub["rendered_jpeg_512"][label]["p50_ms"] > 0
        assert hub["thumbnail_page"][f"{label}_ms"] > 0
    assert hub["thumbnail_page"]["studies"] == 3
