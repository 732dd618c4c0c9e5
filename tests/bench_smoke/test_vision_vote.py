"""bench/vision_vote.py records the vote's inputs from `GramStainModel.predict` itself: voted again with the
shipped rule they give predict's own verdict and yeast note, and the bench leaves the real vote in place
(SYNTHETIC smears)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import vision_vote  # noqa: E402
from medcloud.vision import runtime  # noqa: E402
from medcloud.vision.registry import resolve  # noqa: E402
from medcloud.vision.synth import render_smear  # noqa: E402


@pytest.mark.parametrize(
    ("site", "species"),
    [
        ("site-a", ["s_aureus"] * 5),
        ("site-g-lowmag", ["candida"] * 4),
        ("site-random", ["enterobacterales"] * 5 + ["candida"] * 2),
    ],
)
def test_recorded_inputs_revote_to_predicts_own_answer(site: str, species: list[str]) -> None:
    real = runtime.gram_vote
    model = runtime.GramStainModel(resolve(None).path, threads=1)
    for seed in range(3):
        image = render_smear(7_100_000 + seed, site, (640, 640), 1.0, species=species).image
        rec = vision_vote.record(model, image)
        assert runtime.gram_vote is real  # put back, even for the next bench step
        assert len(rec["probs"]) == len(rec["crop_boxes"]) > 0 and rec["probs"].shape[1] == len(runtime.CROP_CLASSES)
        assert min((d.score for d in rec["dets"]), default=1.0) >= 0.05
        shipped = model.predict(image)
        vote = real(rec["probs"], rec["crop_boxes"], [d for d in rec["dets"] if d.score >= 0.25])
        assert (vote.verdict, vote.yeast is None) == (shipped.verdict, shipped.yeast is None)
