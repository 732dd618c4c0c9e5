"""bench/vision.py --write-card at its smallest: the card's leave-one-style-out section is written in the
layout tests/vision/test_shipped_model.py reads, the rest of the card is kept, and a card whose SHA-256 no
longer matches the weights is refused (SYNTHETIC smears)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from medcloud.vision.registry import resolve
from medcloud.vision.synth import SITES, UNSEEN_SITES

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vision.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def _loso(model: Path, compare: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(BENCH), "loso", "--model", str(model), "--compare", str(compare)]
    argv += ["--images", "1", "--verdict-images", "1", "--threads", "1", "--write-card"]
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)


def test_loso_writes_its_section_into_the_card_and_keeps_the_rest(tmp_path: Path) -> None:
    shipped = resolve(None).path
    model, old = tmp_path / "0.4.0-synthetic", tmp_path / "0.3.0-synthetic"
    shutil.copytree(shipped, model)
    shutil.copytree(shipped, old)
    before = json.loads((model / "card.json").read_text())
    done = _loso(model, old)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["card_sections_written"] == ["leave_one_style_out"]
    card = json.loads((model / "card.json").read_text())
    assert {k: v for k, v in card.items() if k != "leave_one_style_out"} == {
        k: v for k, v in before.items() if k != "leave_one_style_out"
    }
    loso = card["leave_one_style_out"]
    assert loso["images_per_site"] == 1 and loso["verdict_images_per_site"] == 1 and loso["synthetic"] is True
    assert "{MODEL}" in loso["command"] and "detector weight 0.5" in loso["verdict_rule"]
    assert set(loso["per_site"]) == set(SITES)
    unseen = {s: loso["per_site"][s] for s in UNSEEN_SITES}
    worst = min(unseen, key=lambda s: unseen[s]["map50"])
    assert loso["summary"]["worst_unseen_site"] == worst and worst in loso["lead"]
    assert loso["summary"]["min_unseen_verdict"] == min(v["verdict_accuracy"] for v in unseen.values())
    # Same weights under both names: the compared model's figures sit beside them and are identical.
    for v in loso["per_site"].values():
        assert v["0.3.0-synthetic"] == {"map50": v["map50"], "verdict_accuracy": v["verdict_accuracy"]}
    assert loso["previous_model_0.3.0"] == loso["summary"]
    assert set(loso["ratio_unseen_map50_vs_0.3.0"]) == set(UNSEEN_SITES)


def test_a_card_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "0.4.0-synthetic"
    shutil.copytree(resolve(None).path, model)
    card = json.loads((model / "card.json").read_text())
    card["files"]["detector.onnx"]["sha256"] = "0" * 64  # the card describes other weights
    stale = json.dumps(card, indent=2)
    (model / "card.json").write_text(stale)
    done = _loso(model, model)
    assert done.returncode != 0 and "does not match the card's SHA-256" in done.stderr
    assert (model / "card.json").read_text() == stale  # nothing written


def test_coldstart_runs_serve_model_and_the_torch_server_to_the_same_answer() -> None:
    """Both servers speak `serve.Predictor` (the torch one had fallen behind it and failed every request)."""
    argv = [sys.executable, str(BENCH), "coldstart", "--repeat", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert done.returncode == 0, done.stderr[-3000:]
    cold = json.loads(done.stdout)["coldstart"]
    assert cold["serve_model_onnxruntime"]["boxes"] == cold["torch_server"]["boxes"] > 0


def test_fresh_seeds_are_never_written_into_a_card(tmp_path: Path) -> None:
    # the card's figures come from the standard smears; --seed-offset is for a candidate's fresh check set
    model = tmp_path / "0.4.0-synthetic"
    shutil.copytree(resolve(None).path, model)
    before = (model / "card.json").read_text()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    argv = [sys.executable, str(BENCH), "loso", "--model", str(model), "--images", "1", "--verdict-images", "1"]
    done = subprocess.run([*argv, "--seed-offset", "7", "--write-card"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "leave out --seed-offset" in done.stderr
    ood = [sys.executable, str(BENCH.parent / "vision_ood.py"), "--model", str(model), "--images", "1"]
    done = subprocess.run([*ood, "--seed-offset", "7", "--write-card"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "leave out --seed-offset" in done.stderr
    assert (model / "card.json").read_text() == before
    # without --write-card the offset is taken and recorded in the figures
    done = subprocess.run([*argv, "--threads", "1", "--seed-offset", "7"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["leave_one_style_out"]["seed_offset"] == 7
