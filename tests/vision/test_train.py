"""A few training steps on tiny SYNTHETIC images: the loss falls and the ONNX export matches torch."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medcloud.vision.train import (  # noqa: E402
    TrainConfig,
    _tile_at,
    _zoom,
    classifier_tile_sides,
    detector_targets,
    export_onnx,
    render_training_set,
    tile_labels,
    train_classifier,
    train_detector,
)


def test_targets_peak_at_box_centres() -> None:
    boxes = np.array([[8, 8, 24, 24], [40, 4, 60, 20]], dtype=np.float32)
    heat, reg, mask = detector_targets(boxes, np.array([3, 5]), 16, 16)
    assert heat[3].max() == 1.0 and np.unravel_index(heat[3].argmax(), heat[3].shape) == (4, 4)
    assert heat[5, 3, 12] == 1.0 and mask.sum() == 2
    assert np.isclose(np.exp(reg[2, 4, 4]) * 4, 16)


def test_tile_labels_find_organisms() -> None:
    boxes = np.array([[10, 10, 40, 40], [100, 100, 120, 120]], dtype=np.float32)
    labels = np.array([5, 16])  # S. aureus (GP cocci), red cell (background)
    tl = {(y, x): c for y, x, c in tile_labels(boxes, labels, 128, 128)}
    assert tl[(0, 0)] == 2 and tl[(64, 64)] == 4


def test_multi_scale_zoom_moves_boxes_with_the_pixels_and_keeps_a_crop_possible() -> None:
    img = np.zeros((320, 320, 3), dtype=np.uint8)
    img[100:140, 50:70] = 255
    boxes = np.array([[50, 100, 70, 140]], dtype=np.float32)
    rng = np.random.default_rng(3)
    sides = set()
    for _ in range(40):
        out, moved = _zoom(img, boxes, 0.7, 200, rng)
        sides.add(out.shape[0])
        assert out.shape[0] == out.shape[1] >= 200
        ys, xs = np.nonzero(out[..., 0] > 127)
        # The bright block and its box agree within a pixel after the resize.
        assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], moved[0], atol=1.0)
    assert min(sides) == 200 and max(sides) > 400  # zoomed out to the floor and in beyond 1.25x
    same, kept = _zoom(img, boxes, 0.0, 160, rng)
    assert same is img and kept is boxes


def test_classifier_tiles_are_cut_at_several_scales_and_resized_to_the_tile() -> None:
    assert classifier_tile_sides(0.0) == [64]
    sides = classifier_tile_sides(0.5)
    assert len(sides) == 5 and sides[0] < 64 < sides[-1] and 64 in sides
    assert sides[0] == round(64 / np.exp(0.5)) and sides[-1] == round(64 * np.exp(0.5))
    img = np.zeros((256, 256, 3), dtype=np.uint8)
    img[10:50, 20:40] = 255  # a 20 x 40 block inside the 128-pixel region at (0, 0)
    small = _tile_at(img, 0, 0, 128)  # zoomed out 2x, as a lower magnification shows it
    assert small.shape == (64, 64, 3)
    ys, xs = np.nonzero(small[..., 0] > 127)
    assert (xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (10, 20)
    assert np.array_equal(_tile_at(img, 0, 0, 64), img[:64, :64])


@pytest.mark.usefixtures("one_torch_thread")
def test_multi_scale_classifier_draws_every_scale_with_labels_from_that_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import medcloud.vision.train as train

    cut: list[int] = []
    real = train._tile_at

    def recording(image: np.ndarray, y: int, x: int, side: int) -> np.ndarray:
        cut.append(side)
        assert y + side <= image.shape[0] and x + side <= image.shape[1]
        return real(image, y, x, side)

    monkeypatch.setattr(train, "_tile_at", recording)
    cfg = TrainConfig(images=4, hi_res_fraction=0.0, size=128, cls_steps=6, cls_batch=20, cls_scale_jitter=0.5)
    _, losses = train_classifier(render_training_set(cfg), cfg)
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert set(cut) == set(classifier_tile_sides(0.5))  # every scale drawn, none outside the five
    cut.clear()
    plain = TrainConfig(images=4, hi_res_fraction=0.0, size=128, cls_steps=2, cls_batch=20)
    train_classifier(render_training_set(plain), plain)
    assert set(cut) == {64}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread (as `federated.images` does), and give the process its setting back.

    Two OpenMP threads on the 2-core machine busy-wait against every other process there: measured at load
    ~10, the 30 detector steps below took 146 s on two threads and 3-12 s on one (the classifier 35 s and
    2-3 s). Only the floating-point summation order changes with the thread count, not what is asserted."""
    from medcloud.federated.images import _one_thread

    with _one_thread():
        yield


@pytest.mark.usefixtures("one_torch_thread")
def test_loss_falls_and_onnx_matches_torch(tmp_path: Path) -> None:
    import onnxruntime as ort

    cfg = TrainConfig(
        images=10, hi_res_fraction=0.0, size=128, det_steps=30, cls_steps=20, batch=4, cls_batch=20, crop=64, lr=3e-3
    )
    samples = render_training_set(cfg)
    det, det_losses = train_detector(samples, cfg)
    cls, cls_losses = train_classifier(samples, cfg)
    assert np.mean(det_losses[-8:]) < 0.75 * np.mean(det_losses[:4])
    assert np.mean(cls_losses[-8:]) < np.mean(cls_losses[:4])

    export_onnx(det, cls, tmp_path)
    from medcloud.vision.nets import DetectorExport

    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 96, 160)).astype(np.float32)
    with torch.no_grad():
        want_heat, want_reg = DetectorExport(det).eval()(torch.from_numpy(x))
    sess = ort.InferenceSession(str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"])
    heat, reg = sess.run(None, {"image": x})
    assert heat.shape == (1, 17, 24, 40)
    assert np.allclose(heat, want_heat.numpy(), atol=1e-4) and np.allclose(reg, want_reg.numpy(), atol=1e-3)
    probs = ort.InferenceSession(str(tmp_path / "classifier.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"crops": x[:, :, :64, :64]}
    )[0]
    assert probs.shape == (1, 5) and np.isclose(probs.sum(), 1.0, atol=1e-5)


def test_stain_augmentation_varies_colour_and_normalisation_follows_the_whole_field() -> None:
    from medcloud.vision.train import _photometric

    rng = np.random.default_rng(0)
    field = np.full((4, 3, 64, 64), 200.0, dtype=np.float32)
    field[:, :, 20:30, 20:30] = np.array([90.0, 40.0, 120.0], dtype=np.float32)[None, :, None, None]  # a violet cell
    field *= np.array([1.1, 1.0, 0.8], dtype=np.float32)[None, :, None, None]  # a halogen cast
    out = _photometric(field.copy(), rng, stain_jitter=0.1, colour="none")
    cells = out[:, :, 25, 25]
    assert np.ptp(cells, axis=0).max() > 5  # each image's stain hue/strength differs
    balanced = _photometric(field.copy(), rng, stain_jitter=0.0, colour="white-balance")
    bg = balanced[:, :, 2, 2]
    assert np.ptp(bg, axis=1).max() < 12  # the background is neutral again, whatever the gain drawn
    crop = field[:, :, 16:48, 16:48].copy()  # mostly cell: normalised with its field as the reference
    with_ctx = _photometric(crop, np.random.default_rng(1), 0.0, "white-balance", context=field.copy())
    assert np.ptp(with_ctx[:, :, 20, 20], axis=1).max() < 12


def test_init_is_a_model_folder_or_a_shipped_version_and_anything_else_is_refused_up_front(tmp_path: Path) -> None:
    from medcloud.errors import InvalidInput
    from medcloud.vision.registry import PACKAGED_MODELS
    from medcloud.vision.train import resolve_init, train_model

    shipped = sorted(p.parent for p in (PACKAGED_MODELS / "gram-stain").glob("*/detector.pt"))
    assert shipped, "a shipped model with weights to continue from"
    assert resolve_init(shipped[0].name) == shipped[0]  # a shipped version by name
    assert resolve_init(str(shipped[0])) == shipped[0]  # a folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match=r"no detector\.pt"):
        resolve_init(str(empty))
    with pytest.raises(InvalidInput, match=rf"shipped: .*{re.escape(shipped[0].name)}"):
        resolve_init("9.9.9-nothing")
    # train_model refuses before rendering or writing anything (a silent start from random weights
    # would spend a whole training budget on the wrong run).
    out = tmp_path / "run"
    with pytest.raises(InvalidInput):
        train_model(TrainConfig(images=4, init="0.6.0"), out, "test")
    assert not out.exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_classifier_only_run_keeps_the_detector_and_its_inference_recipe(tmp_path: Path) -> None:
    import shutil

    from medcloud.vision.registry import PACKAGED_MODELS
    from medcloud.vision.runtime import InferenceScales, inference_scales
    from medcloud.vision.train import train_model

    shipped = sorted(p.parent for p in (PACKAGED_MODELS / "gram-stain").glob("*/detector.pt"))[-1]
    init = tmp_path / "init"
    init.mkdir()
    for name in ("detector.pt", "classifier.pt", "training.json"):
        shutil.copy(shipped / name, init / name)
    recipe = {"sides": [320, 480], "iou": 0.5, "verdict_side": 320, "alternative_weight": 0.5}
    record = json.loads((init / "training.json").read_text())
    (init / "training.json").write_text(json.dumps({**record, "inference": recipe}))
    small = {"images": 2, "hi_res_fraction": 0.0, "size": 96, "cls_steps": 2, "cls_batch": 10, "threads": 1}

    out = tmp_path / "cls-only"
    done = train_model(TrainConfig(**small, det_steps=0, init=str(init), cls_scale_jitter=0.5), out, "test")
    assert done["detector_steps_run"] == 0 and done["classifier_steps_run"] == 2
    assert done["cls_scale_jitter"] == 0.5
    kept, before = (torch.load(d / "detector.pt", weights_only=True) for d in (out, init))
    assert kept.keys() == before.keys() and all(torch.equal(kept[k], v) for k, v in before.items())
    assert inference_scales(out) == InferenceScales((320, 480), 0.5, 320, 0.5)  # carried with the detector

    retrained = tmp_path / "det-too"
    train_model(TrainConfig(**small, det_steps=1, batch=2, crop=64, init=str(init)), retrained, "test")
    assert inference_scales(retrained) == InferenceScales()  # a new detector starts single-scale


def test_textbook_share_draws_that_share_of_smears_with_smaller_organisms() -> None:
    from medcloud.vision.train import textbook_size

    cfg = TrainConfig(images=1000, textbook_share=0.35)
    sizes = [textbook_size(cfg, i) for i in range(1000)]
    drawn = [f for f in sizes if f is not None]
    assert abs(len(drawn) / 1000 - 0.35) < 0.01
    assert 0.45 <= min(drawn) < 0.5 and 0.75 < max(drawn) <= 0.8
    assert sizes == [textbook_size(cfg, i) for i in range(1000)]  # the same set every time
    assert not any(textbook_size(TrainConfig(), i) is not None for i in range(100))
    plain = render_training_set(TrainConfig(images=4, threads=1, size=96))
    mixed = render_training_set(TrainConfig(images=4, threads=1, size=96, textbook_share=0.5))
    small = TrainConfig(images=4, textbook_share=0.5)
    for i, (a, b) in enumerate(zip(plain, mixed, strict=True)):  # only the chosen smears change
        assert np.array_equal(a.image, b.image) == (textbook_size(small, i) is None)


def test_highmag_share_draws_that_share_of_smears_at_high_magnification() -> None:
    from medcloud.vision.train import high_magnification, textbook_size, training_site

    cfg = TrainConfig(images=1000, highmag_share=0.3, textbook_share=0.3)
    mags = [high_magnification(cfg, i) for i in range(1000)]
    drawn = [m for m in mags if m is not None]
    assert abs(len(drawn) / 1000 - 0.3) < 0.01
    assert 1.3 <= min(drawn) < 1.35 and 1.95 < max(drawn) <= 2.0
    assert mags == [high_magnification(cfg, i) for i in range(1000)]
    assert not any(high_magnification(TrainConfig(), i) is not None for i in range(100))
    # independent of the other choices: about 0.3 x 0.3 of the smears are both, and random and named alike
    both = sum(m is not None and textbook_size(cfg, i) is not None for i, m in enumerate(mags)) / 1000
    assert abs(both - 0.09) < 0.03
    randomised = [i for i in range(1000) if training_site(cfg, i) == "site-random"]
    assert abs(sum(mags[i] is not None for i in randomised) / len(randomised) - 0.3) < 0.03
    # only the chosen smears change
    plain = render_training_set(TrainConfig(images=6, threads=1, size=96))
    zoomed = render_training_set(TrainConfig(images=6, threads=1, size=96, highmag_share=0.5))
    chosen = TrainConfig(images=6, highmag_share=0.5)
    for i, (a, b) in enumerate(zip(plain, zoomed, strict=True)):
        assert np.array_equal(a.image, b.image) == (high_magnification(chosen, i) is None)
    assert any(high_magnification(chosen, i) is not None for i in range(6))


def test_negative_share_draws_smears_without_bacteria_over_debris() -> None:
    from medcloud.vision.synth import LABEL_INDEX
    from medcloud.vision.train import drawn_by_vector, hard_negative, high_magnification, training_site

    cfg = TrainConfig(images=1000, negative_share=0.2, highmag_share=0.3, vector_share=0.1)
    picks = [hard_negative(cfg, i) for i in range(1000)]
    drawn = [p for p in picks if p is not None]
    assert abs(len(drawn) / 1000 - 0.2) < 0.01
    assert picks == [hard_negative(cfg, i) for i in range(1000)]
    assert not any(hard_negative(TrainConfig(), i) is not None for i in range(100))
    assert 0.5 <= min(p.magnification for p in drawn) < 0.52 and 0.97 < max(p.magnification for p in drawn) <= 1.0
    assert min(p.debris for p in drawn) >= 0.3 and max(p.debris for p in drawn) <= 1.0
    yeast = [p for p in drawn if p.candida]
    assert 0.4 < len(yeast) / len(drawn) < 0.6  # half Candida alone, half red cells alone
    assert min(p.candida for p in yeast) >= 2 and max(p.candida for p in yeast) <= 30
    # independent of the other choices, and of random and named styles alike
    both = sum(p is not None and high_magnification(cfg, i) is not None for i, p in enumerate(picks)) / 1000
    assert abs(both - 0.06) < 0.03
    randomised = [i for i in range(1000) if training_site(cfg, i) == "site-random"]
    assert abs(sum(picks[i] is not None for i in randomised) / len(randomised) - 0.2) < 0.03
    assert abs(sum(picks[i] is not None for i in range(1000) if drawn_by_vector(cfg, i)) - 0.2 * 100) < 12
    # the chosen smears hold yeast and red cells only; the rest are drawn as without the option
    small = TrainConfig(images=8, threads=1, size=96, negative_share=0.5)
    plain = render_training_set(TrainConfig(images=8, threads=1, size=96))
    negatives = render_training_set(small)
    allowed = {LABEL_INDEX["candida"], LABEL_INDEX["rbc"]}
    chosen = [i for i in range(8) if hard_negative(small, i) is not None]
    assert 2 <= len(chosen) <= 6
    for i, (a, b) in enumerate(zip(plain, negatives, strict=True)):
        assert np.array_equal(a.image, b.image) == (i not in chosen)
        if i in chosen:
            assert set(b.labels.tolist()) <= allowed
            candida = hard_negative(small, i)
            assert candida is not None
            assert (LABEL_INDEX["candida"] in b.labels.tolist()) == (candida.candida > 0)
    assert any(set(plain[i].labels.tolist()) - allowed for i in chosen)  # the same seeds had bacteria before


def test_vector_share_draws_that_share_of_smears_with_the_second_renderer() -> None:
    from medcloud.vision.train import drawn_by_vector

    cfg = TrainConfig(images=1000, vector_share=0.3)
    share = sum(drawn_by_vector(cfg, i) for i in range(1000)) / 1000
    assert abs(share - 0.3) < 0.01
    assert not any(drawn_by_vector(TrainConfig(), i) for i in range(100))
    samples = render_training_set(TrainConfig(images=6, vector_share=0.5, threads=1, size=96))
    drawn = [s for i, s in enumerate(samples) if drawn_by_vector(TrainConfig(images=6, vector_share=0.5), i)]
    assert drawn and all(s.image.shape == (96, 96, 3) for s in samples)
    for s in drawn:  # boxes follow the image to the training size
        assert len(s.boxes) == len(s.labels) > 0 and s.boxes.max() <= 96 and s.boxes.min() >= 0
    with pytest.raises(ValueError, match="group boxes only"):
        render_training_set(TrainConfig(images=2, vector_share=1.0, threads=1, size=96, boxes="cell"))
