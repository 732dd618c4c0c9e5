"""VoTT, COCO and YOLO round trips on SYNTHETIC smears, and refusals of malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcloud.errors import InvalidInput
from medcloud.vision.annotations import (
    AnnotatedImage,
    canonical_label,
    from_coco,
    from_vott,
    from_yolo,
    read_vott,
    to_coco,
    to_vott,
    to_yolo,
)
from medcloud.vision.labels import LABEL_CODES
from medcloud.vision.synth import render_smear


def _images() -> list[AnnotatedImage]:
    out = []
    for i in range(3):
        s = render_smear(100 + i, "site-a", (320, 480), 0.5)
        out.append(
            AnnotatedImage(
                f"img{i}.png",
                480,
                320,
                [tuple(float(v) for v in b) for b in s.boxes],
                [LABEL_CODES[k] for k in s.labels],
                synthetic=True,
            )
        )
    return out


def _same(a: list[AnnotatedImage], b: list[AnnotatedImage], tol: float) -> None:
    assert [i.file_name for i in a] == [i.file_name for i in b]
    for x, y in zip(a, b, strict=True):
        assert (x.width, x.height) == (y.width, y.height)
        assert x.labels == y.labels
        assert len(x.boxes) == len(y.boxes) > 0
        for bx, by in zip(x.boxes, y.boxes, strict=True):
            assert max(abs(p - q) for p, q in zip(bx, by, strict=True)) <= tol


def test_vott_round_trip_via_json_text(tmp_path: Path) -> None:
    images = _images()
    path = tmp_path / "export.json"
    path.write_text(json.dumps(to_vott(images)))
    back = read_vott(path)
    _same(images, back, 1e-6)
    assert all(i.synthetic for i in back)


def test_vott_per_asset_files_are_read(tmp_path: Path) -> None:
    images = _images()
    for aid, asset in to_vott(images)["assets"].items():
        (tmp_path / f"{aid}-asset.json").write_text(json.dumps(asset))
    back = sorted(read_vott(tmp_path), key=lambda i: i.file_name)
    _same(images, back, 1e-6)


def test_coco_round_trip_keeps_japanese_names() -> None:
    images = _images()
    doc = json.loads(json.dumps(to_coco(images), ensure_ascii=False))
    assert doc["info"]["synthetic"] is True
    assert any(c["name_ja"] == "黄色ブドウ球菌" for c in doc["categories"])
    _same(images, from_coco(doc), 1e-6)


def test_yolo_round_trip(tmp_path: Path) -> None:
    images = _images()
    to_yolo(images, tmp_path)
    back = from_yolo(tmp_path, {i.file_name: (i.width, i.height) for i in images})
    _same(images, back, 1e-3 * 480)


def test_labels_by_display_name_and_unknown_refused() -> None:
    assert canonical_label("Staphylococcus aureus") == "s_aureus"
    assert canonical_label("肺炎球菌") == "s_pneumoniae"
    with pytest.raises(InvalidInput):
        canonical_label("E. coli O157")
    bad = {"assets": {"x": {"asset": {"name": "a.png"}, "regions": []}}}
    with pytest.raises(InvalidInput):
        from_vott(bad)
    with pytest.raises(InvalidInput):
        from_coco({"images": []})
