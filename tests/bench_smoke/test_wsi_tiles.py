"""bench/wsi_tiles.py end to end at its smallest: a live hub, both slides, every figure present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_wsi_tiles_bench_prints_its_figures() -> None:
    sys.path.insert(0, str(BENCH))
    import wsi_data

    try:
        wsi_data.svs_path()
        wsi_data.wsidicomizer_path()
    except wsi_data.Missing as exc:
        pytest.skip(str(exc))
    done = subprocess.run([sys.executable, str(BENCH / "wsi_tiles.py"), "--restarts", "1", "--passes", "1",
                           "--copies", "1"], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["slide"]["mpp"] == [0.499, 0.499]
    for kind, levels in (("svs", 1), ("dicom-wsi", 5)):
        r = out["results"][kind]
        assert r["native_levels"] == levels
        assert r["warm_full_resolution"]["n"] == 30 and r["warm_zoomed_out"]["n"] == 13
        for key in ("cold_first_tile_new_process", "cold_first_tile_unopened_slide", "warm_full_resolution"):
            assert 0 < r[key]["p50_ms"] <= r[key]["p95_ms"] <= r[key]["max_ms"]
