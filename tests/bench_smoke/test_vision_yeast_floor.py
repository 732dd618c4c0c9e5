"""bench/vision_yeast_floor.py: the recorded vote inputs reproduce the model's own verdicts, and the floors
are scored on the sets the plan names, end to end at their smallest (SYNTHETIC smears)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("which", "names"),
    [
        ("choose", {"site-a", "site-b", "site-c", "site-random", "ood-1x", "ood-varied"}),
        ("check", {"site-d-webcam", "site-e-halogen", "site-f-paleblue", "site-g-lowmag", "blind-clean"}),
    ],
)
def test_floors_are_scored_on_the_plans_sets(which: str, names: set[str]) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "vision_yeast_floor.py"), "--set", which, "--limit", "2"]
    argv += ["--floors", "0.35,0.9", "--ratios", "0.8", "--seed-offset", "1500000", "--threads", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]  # it stops when a recording misses predict's verdict
    out = json.loads(done.stdout)
    assert out["synthetic"] is True and out["set"] == which
    mixed = {f"{n}/mixed" for n in names if n.startswith("site-")}
    assert names <= set(out["per_set"]) and mixed <= set(out["per_set"])
    assert out["of"] == 2 * len(out["per_set"])
    for counts in out["per_set"].values():
        assert counts["n"] == 2 and all(0 <= counts[f] <= 2 for f in ("none", "0.35", "0.9", "ratio 0.8"))
    assert set(out["right_answers"]) == {"none", "0.35", "0.9", "ratio 0.8"} and out["seed_offset"] == 1500000
    assert out["right_answers"]["none"] == sum(v["none"] for v in out["per_set"].values())
