"""`medcloud vision annotations check|convert` on small hand-made (SYNTHETIC) folders, bad input included."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medcloud.vision import annotation_folder as af
from medcloud.vision.annotations import AnnotatedImage, read_vott, to_coco, to_vott, to_yolo
from medcloud.vision.cli import app


def _png(path: Path, w: int = 120, h: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (230, 225, 235)).save(path)


def _images() -> list[AnnotatedImage]:
    return [
        AnnotatedImage("a.png", 120, 90, [(10, 10, 40, 30), (50, 40, 70, 80)], ["s_aureus", "rbc"], synthetic=True),
        AnnotatedImage("b.png", 120, 90, [(5, 5, 25, 15)], ["enterobacterales"], synthetic=True),
        AnnotatedImage("c.png", 120, 90, [], [], synthetic=True),
    ]


def _folder(root: Path, images: list[AnnotatedImage] | None = None, doc: dict | None = None) -> Path:
    images = images if images is not None else _images()
    root.mkdir(parents=True, exist_ok=True)
    for im in images:
        if "/" not in im.file_name and "\\" not in im.file_name:
            _png(root / im.file_name, im.width, im.height)
    (root / "vott-export.json").write_text(json.dumps(doc if doc is not None else to_vott(images)))
    return root


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["annotations", *args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def _check(folder: Path, *extra: str) -> tuple[int, dict]:
    code, out = _run("check", str(folder), "--json", "--no-progress", *extra)
    return code, json.loads(out)


def _codes(report: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report["problems"]:
        out.setdefault(p["code"], []).append(p["file"])
    return out


def test_clean_folder_checks_and_round_trips_through_every_format(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src")
    code, rep = _check(src)
    assert code == 0 and rep["ok"] and rep["problems"] == []
    assert rep["format"] == "vott" and rep["images"] == 3 and rep["boxes"] == 3
    assert rep["labels"] == {"enterobacterales": 1, "rbc": 1, "s_aureus": 1}
    assert rep["images_without_boxes"] == 1
    assert rep["box_convention"]["declared"] == "group" and rep["box_convention"]["used"] == "group"
    prev = src
    for fmt in ("coco", "yolo", "vott"):
        dst = tmp_path / f"out-{fmt}"
        code, out = _run("convert", str(prev), str(dst), "--to", fmt, "--no-progress")
        assert code == 0, out
        summary = json.loads(out)
        assert summary["format"] == fmt and summary["images_copied"] == 3 and summary["boxes"] == 3
        assert summary["synthetic"] is True
        code, rep = _check(dst)
        assert code == 0 and rep["format"] == fmt and rep["boxes"] == 3, rep["problems"]
        prev = dst
    back = sorted(read_vott(prev / "vott-export.json"), key=lambda i: i.file_name)
    for a, b in zip(_images(), back, strict=True):
        assert a.labels == b.labels
        for x, y in zip(a.boxes, b.boxes, strict=True):
            assert max(abs(p - q) for p, q in zip(x, y, strict=True)) < 0.01
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_every_problem_is_reported_per_file_and_the_exit_code_says_so(tmp_path: Path) -> None:
    images = [
        AnnotatedImage(
            "a.png",
            120,
            90,
            [(10, 10, 40, 30), (10, 10, 40, 30), (50, 40, 50, 60), (100, 70, 130, 95), (200, 200, 220, 220)],
            ["s_aureus", "s_aureus", "cns", "rbc", "rbc"],
        ),
        AnnotatedImage("b.png", 120, 90, [(5, 5, 25, 15)], ["enterobacterales"]),
        AnnotatedImage("gone.png", 120, 90, [(5, 5, 25, 15)], ["listeria"]),
        AnnotatedImage("d.png", 640, 480, [(5, 5, 25, 15)], ["cns"]),
    ]
    doc = to_vott(images)
    for asset in doc["assets"].values():
        if asset["asset"]["name"] == "b.png":
            asset["regions"][0]["tags"] = ["E. coli O157"]
    src = _folder(tmp_path / "src", images[:2], doc)
    _png(src / "d.png", 320, 240)  # annotated as 640x480
    _png(src / "extra.png")  # in the folder, in no annotation
    code, rep = _check(src)
    assert code == 1 and not rep["ok"]
    codes = _codes(rep)
    assert codes["duplicate-box"] == ["a.png"]
    assert codes["empty-box"] == ["a.png"]
    assert codes["box-outside"] == ["a.png", "a.png"]  # partly (10 px) and entirely outside
    assert codes["unknown-label"] == ["b.png"]
    assert codes["missing-image"] == ["gone.png"]
    assert codes["size-mismatch"] == ["d.png"]
    assert codes["unannotated-image"] == ["extra.png"]
    assert rep["unknown_labels"] == {"E. coli O157": 1}
    severities = {p["code"]: p["severity"] for p in rep["problems"]}
    assert severities["unannotated-image"] == "warning" and severities["box-outside"] == "error"
    # Human-readable output names file and problem; exit code 1 as well.
    code, out = _run("check", str(src), "--no-progress")
    assert code == 1 and "b.png: [unknown-label]" in out and "error(s)" in out


def test_convert_refuses_a_folder_with_errors_and_writes_nothing(tmp_path: Path) -> None:
    images = _images()
    images[0].labels[0] = "mystery-bug"
    src = _folder(tmp_path / "src", images)
    dst = tmp_path / "dst"
    code, out = _run("convert", str(src), str(dst), "--to", "coco", "--no-progress")
    assert code == 1 and "nothing written" in out and "mystery-bug" in out
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "C:/x.png", "a/../../b"]
)
def test_image_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    images = [*_images(), AnnotatedImage(name, 120, 90, [(1, 1, 5, 5)], ["cns"])]
    src = _folder(tmp_path / "src", images)
    code, rep = _check(src)
    assert code == 1
    unsafe = [p for p in rep["problems"] if p["code"] == "unsafe-path"]
    assert len(unsafe) == 1 and "not opened" in unsafe[0]["message"]
    dst = tmp_path / "dst"
    code, _ = _run("convert", str(src), str(dst), "--to", "yolo", "--no-progress")
    assert code == 1 and not dst.exists()


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    _png(outside)
    src = _folder(tmp_path / "src", _images())
    os.symlink(outside, src / "link.png")
    images = [*_images(), AnnotatedImage("link.png", 120, 90, [(1, 1, 5, 5)], ["cns"])]
    (src / "vott-export.json").write_text(json.dumps(to_vott(images)))
    code, rep = _check(src)
    assert code == 1 and _codes(rep)["unsafe-path"] == ["vott-export.json (asset " + _aid("link.png") + ")"]


def _aid(name: str) -> str:
    return next(iter(to_vott([AnnotatedImage(name, 1, 1)])["assets"]))


def test_safe_image_path_direct() -> None:
    root = Path("/tmp/imgs")
    assert af.safe_image_path(root, "sub/a.png") == root / "sub" / "a.png"
    for bad in ("", "../x", "/abs", "x\x00y", "\\\\server\\share\\x"):
        with pytest.raises(af.PathEscape):
            af.safe_image_path(root, bad)


def test_malformed_json_is_a_clear_per_file_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _png(src / "a.png")
    (src / "vott-export.json").write_text('{"assets": {"x": ')
    code, rep = _check(src)
    assert code == 1
    (p,) = rep["problems"]
    assert p["file"] == "vott-export.json" and p["code"] == "malformed" and "line 1" in p["message"]
    # Well-formed JSON of the wrong shape: a clear error, not a traceback.
    (src / "vott-export.json").write_text(json.dumps({"assets": {"x": {"asset": {"name": "a.png"}}}}))
    code, rep = _check(src)
    assert code == 1 and _codes(rep)["malformed"] and "size" in rep["problems"][0]["message"]
    (src / "vott-export.json").write_text(json.dumps({"assets": {"x": {"asset": {"name": 5, "size": 3}}}}))
    code, rep = _check(src)
    assert code == 1 and _codes(rep)["malformed"]
    # A file that is not an image at all.
    (src / "vott-export.json").write_text(json.dumps(to_vott([AnnotatedImage("a.png", 120, 90)])))
    (src / "a.png").write_bytes(b"not a png")
    code, rep = _check(src)
    assert code == 1 and _codes(rep)["unreadable-image"] == ["a.png"]


def test_folders_without_annotations_or_with_several_sets_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["annotations", "check", str(empty)])
    assert r.exit_code != 0 and "no VoTT, COCO or YOLO annotations found" in str(r.exception)
    r = CliRunner().invoke(app, ["annotations", "check", str(tmp_path / "nowhere")])
    assert r.exit_code != 0 and "no such file or folder" in str(r.exception)
    src = _folder(tmp_path / "src")
    (src / "coco.json").write_text(json.dumps(to_coco(_images())))
    r = CliRunner().invoke(app, ["annotations", "check", str(src), "--json"])
    assert r.exit_code != 0 and "pass --from" in str(r.exception)
    code, rep = _check(src, "--from", "coco")
    assert code == 0 and rep["format"] == "coco"
    with pytest.raises(af.InvalidInput, match="unknown annotation format"):
        af.locate(src, "pascal-voc")


def test_per_cell_boxes_are_recognised_declared_and_merged(tmp_path: Path) -> None:
    boxes: list[tuple[float, float, float, float]] = []
    for ox, oy in ((10, 10), (60, 10), (10, 50)):
        for dx, dy in ((0, 0), (6, 0), (0, 6), (6, 6)):
            boxes.append((ox + dx, oy + dy, ox + dx + 7, oy + dy + 7))
    cell = AnnotatedImage("a.png", 120, 90, boxes, ["s_aureus"] * 12, convention="cell")
    doc = to_vott([cell])
    del doc["boxConvention"]  # plain VoTT says nothing: group assumed
    src = _folder(tmp_path / "src", [cell], doc)
    code, rep = _check(src)
    assert code == 1 and _codes(rep)["looks-per-cell"] and rep["box_convention"]["looks_like"] == "cell"
    code, rep = _check(src, "--from-boxes", "cell")
    assert code == 0 and rep["box_convention"] == {
        "declared": None,
        "used": "cell",
        "looks_like": "cell",
        "touching_share": 1.0,
        "boxes_considered": 12,
    }
    dst = tmp_path / "grouped"
    code, out = _run("convert", str(src), str(dst), "--to", "coco", "--from-boxes", "cell", "--boxes", "group")
    assert code == 0, out
    coco = json.loads((dst / "coco.json").read_text())
    assert coco["info"]["box_convention"] == "group" and len(coco["annotations"]) == 3
    # Group boxes cannot become per-cell boxes: refused, nothing written.
    r = CliRunner().invoke(
        app, ["annotations", "convert", str(dst), str(tmp_path / "x"), "--to", "vott", "--boxes", "cell"]
    )
    assert r.exit_code != 0 and "cannot be split" in str(r.exception) and not (tmp_path / "x").exists()
    # A declaration contradicting --from-boxes is an error.
    code, rep = _check(dst, "--from-boxes", "cell")
    assert code == 1 and _codes(rep)["bad-convention"]


def test_clip_turns_edge_boxes_into_warnings_and_clips_them(tmp_path: Path) -> None:
    images = [AnnotatedImage("a.png", 120, 90, [(100, 70, 130, 95)], ["rbc"])]
    src = _folder(tmp_path / "src", images)
    dst = tmp_path / "dst"
    code, _ = _run("convert", str(src), str(dst), "--to", "coco", "--no-progress")
    assert code == 1 and not dst.exists()
    code, out = _run("convert", str(src), str(dst), "--to", "coco", "--clip", "--no-progress")
    assert code == 0 and json.loads(out)["warnings"][0]["code"] == "box-outside"
    (ann,) = json.loads((dst / "coco.json").read_text())["annotations"]
    assert ann["bbox"] == [100.0, 70.0, 20.0, 20.0]


def test_destination_rules_and_no_half_written_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    r = CliRunner().invoke(app, ["annotations", "convert", str(src), str(tmp_path / "taken"), "--to", "coco"])
    assert r.exit_code != 0 and "exists" in str(r.exception)
    r = CliRunner().invoke(app, ["annotations", "convert", str(src), str(src / "inner"), "--to", "coco"])
    assert r.exit_code != 0 and "inside the source" in str(r.exception) and not (src / "inner").exists()
    # A failure half-way through copying images leaves neither the target nor a temporary folder.
    calls = {"n": 0}
    real_copy = shutil.copy2

    def failing_copy(a: Path, b: Path) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_copy(a, b)

    monkeypatch.setattr(af.shutil, "copy2", failing_copy)
    dst = tmp_path / "dst"
    with pytest.raises(OSError, match="No space"):
        af.convert_folder(af.locate(src)[0], dst, "coco")  # type: ignore[arg-type]
    assert calls["n"] == 2 and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "taken"]


def test_yolo_and_coco_specific_problems(tmp_path: Path) -> None:
    ydir = tmp_path / "y"
    to_yolo(_images(), ydir / "yolo")
    for im in _images():
        _png(ydir / im.file_name)
    (ydir / "yolo" / "a.txt").write_text("5 0.2 0.2 0.1 0.1\n99 0.5 0.5 0.1 0.1\nfoo bar\n")
    (ydir / "yolo" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    code, rep = _check(ydir)
    assert code == 1 and rep["format"] == "yolo"
    codes = _codes(rep)
    assert (
        codes["bad-box"] == ["a.txt"] and codes["malformed"] == ["a.txt"] and codes["missing-image"] == ["orphan.txt"]
    )
    assert rep["labels"]["s_aureus"] == 1

    cdir = tmp_path / "c"
    cdir.mkdir()
    for im in _images():
        _png(cdir / im.file_name)
    doc = to_coco(_images())
    doc["annotations"][0]["bbox"] = [1, 2, "wide", 4]
    doc["annotations"][1]["category_id"] = 999
    doc["annotations"].append({"id": 77, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]})
    doc["categories"].append({"id": 500, "name": "unicorn"})
    (cdir / "coco.json").write_text(json.dumps(doc))
    code, rep = _check(cdir)
    assert code == 1
    codes = _codes(rep)
    assert codes["bad-box"] == ["a.png"] and "a.png" in codes["unknown-label"] and "coco.json" in codes["unknown-label"]
    assert codes["malformed"] == ["coco.json"]
