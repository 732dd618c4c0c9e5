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


def _per_cell_image() -> AnnotatedImage:
    """Hand-made per-cell boxes: three clusters of four touching cocci, a chain of three rods, two red cells."""
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[str] = []
    for ox, oy in ((20, 20), (200, 40), (60, 220)):
        for dx, dy in ((0, 0), (9, 0), (0, 9), (9, 9)):
            boxes.append((ox + dx, oy + dy, ox + dx + 10, oy + dy + 10))
            labels.append("s_aureus")
    for k in range(3):
        boxes.append((300 + 21 * k, 300, 320 + 21 * k, 306))
        labels.append("bacillus")
    boxes += [(400, 100, 440, 140), (430, 100, 470, 140)]
    labels += ["rbc", "rbc"]
    return AnnotatedImage("cells.png", 480, 480, boxes, labels, synthetic=True, convention="cell")


def test_per_cell_boxes_convert_to_group_boxes() -> None:
    from medcloud.vision.annotations import convert, looks_per_cell, to_group

    cell = _per_cell_image()
    assert looks_per_cell([cell])
    (group,) = to_group([cell])
    assert group.convention == "group"
    assert sorted(group.labels) == ["bacillus", "rbc", "rbc", "s_aureus", "s_aureus", "s_aureus"]
    assert (20.0, 20.0, 39.0, 39.0) in group.boxes and (300.0, 300.0, 362.0, 306.0) in group.boxes
    assert not looks_per_cell([group])
    # Group boxes cannot be split back into cells: a clear refusal, not a guess.
    with pytest.raises(InvalidInput, match="cannot be split"):
        convert([group], "cell")
    with pytest.raises(InvalidInput, match="box convention"):
        convert([group], "cells")


def test_declared_convention_round_trips_and_converts_on_import(tmp_path: Path) -> None:
    cell = _per_cell_image()
    doc = json.loads(json.dumps(to_vott([cell])))
    assert doc["boxConvention"] == "cell"
    kept = from_vott(doc)
    assert kept[0].convention == "cell" and len(kept[0].boxes) == len(cell.boxes)
    grouped = from_vott(doc, convention="group")
    assert grouped[0].convention == "group" and len(grouped[0].boxes) == 6
    coco = to_coco([cell])
    assert coco["info"]["box_convention"] == "cell"
    assert len(from_coco(coco, convention="group")[0].boxes) == 6
    to_yolo([cell], tmp_path)
    sizes = {cell.file_name: (cell.width, cell.height)}
    assert from_yolo(tmp_path, sizes)[0].convention == "cell"
    assert len(from_yolo(tmp_path, sizes, convention="group")[0].boxes) == 6
    # Group files asked for per cell: refused with the reason.
    group_doc = to_coco(_images())
    assert group_doc["info"]["box_convention"] == "group"
    with pytest.raises(InvalidInput, match="cannot be split"):
        from_coco(group_doc, convention="cell")


def test_undeclared_per_cell_boxes_are_not_taken_for_groups() -> None:
    doc = to_vott([_per_cell_image()])
    del doc["boxConvention"]  # a plain VoTT export says nothing: group boxes are assumed, then checked
    with pytest.raises(InvalidInput, match="look like one box per cell"):
        from_vott(doc)
    assert from_vott(doc, convention="cell")[0].convention == "cell"
    assert from_vott(doc, check=False)[0].convention == "group"  # the caller vouches for them
    # The generator's group boxes pass the check; a bad declaration is refused.
    assert all(im.convention == "group" for im in from_coco(to_coco(_images())))
    bad = to_vott(_images())
    bad["boxConvention"] = "per-organism"
    with pytest.raises(InvalidInput, match="box convention"):
        from_vott(bad)
