"""Export formats over a download folder built here (synthetic CT series, SR results as labels):
NIfTI affine and voxels against the DICOM series, PNG values, COCO and YOLO files, resuming, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from medcloud.datasets.client import FILES, MANIFEST
from medcloud.datasets.export import PNG16_SIGNED_OFFSET, export
from medcloud.datasets.manifest import FORMAT, manifest_lines
from medcloud.errors import InvalidInput
from medcloud.results import Box, ResultSpec, build_sr
from tests.results.conftest import ct_series, to_bytes


def make_download(folder: Path, items: list[tuple[pydicom.Dataset, str, dict[str, Any]]]) -> str:
    """A download folder as `medcloud dataset download` leaves it: files/<uid>.dcm and the canonical manifest."""
    (folder / FILES).mkdir(parents=True)
    files = []
    for index, (ds, split, labels) in enumerate(items):
        data = to_bytes(ds)
        (folder / FILES / f"{ds.SOPInstanceUID}.dcm").write_bytes(data)
        files.append({"index": index, "labels": labels, "patient": str(ds.PatientID),
                      "series_uid": ds.SeriesInstanceUID, "sha256": hashlib.sha256(data).hexdigest(),
                      "size": len(data), "sop_uid": ds.SOPInstanceUID, "split": split,
                      "study_uid": ds.StudyInstanceUID})  # fmt: skip
    body = b"".join(manifest_lines({"format": FORMAT, "name": "export-test"}, files))
    (folder / MANIFEST).write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def sagittal_series() -> list[pydicom.Dataset]:
    """An oblique case for the affine: sagittal slices (rows along -z, columns along +y), stored out of order."""
    ct = ct_series(study="2.25.6001", series="2.25.6001.1", n=5, patient="PSEUDO-N1")
    for k, ds in enumerate(ct):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [10.0 + 2.5 * k, -100.0, 50.0]  # normal = row x col = (-1, 0, 0)... see below
        ds.PixelSpacing = [0.8, 0.6]
    return [ct[3], ct[0], ct[4], ct[1], ct[2]]


def test_nifti_affine_and_voxels_match_the_series(tmp_path: Path) -> None:
    series = sagittal_series()
    make_download(tmp_path / "d", [(ds, "train", {}) for ds in series])
    report = export(tmp_path / "d", tmp_path / "o", fmt="nifti")
    (path,) = (tmp_path / "o").rglob("*.nii.gz")
    assert path.name == "2.25.6001.1.nii.gz" and report.written == 1 and report.per_split == {"train": 5}
    img: Any = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.shape == (128, 128, 5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    # Slices go along the normal row x col = (0,1,0) x (0,0,-1) = (-1, 0, 0): decreasing x first.
    ordered = sorted(series, key=lambda d: -float(d.ImagePositionPatient[0]))
    affine = img.affine
    for k, ds in enumerate(ordered):
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        values = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(data[:, :, k].T, values)  # voxel (i, j) is column i, row j
        for i, j in [(0, 0), (127, 0), (0, 127), (37, 91)]:
            lps = ipp + i * 0.6 * np.array([0, 1, 0]) + j * 0.8 * np.array([0, 0, -1])
            ras = affine @ np.array([i, j, k, 1.0])
            np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
    np.testing.assert_allclose(img.header.get_zooms(), [0.6, 0.8, 2.5], atol=1e-5)


def test_nifti_skips_results_and_irregular_series_with_reasons(tmp_path: Path) -> None:
    ct = ct_series(n=3)
    sr = build_sr(ct, [Box(1, 1, 5, 5, "nodule", sop_uid=ct[0].SOPInstanceUID)], ResultSpec("d", "1"))
    bad = ct_series(study="2.25.6002", series="2.25.6002.1", n=3, patient="PSEUDO-N2")
    bad[2].ImagePositionPatient = [-158.0, -179.0, 40.0]  # gaps 5 and 110 mm
    make_download(tmp_path / "d", [*[(d, "train", {}) for d in ct], (sr, "train", {}), *[(d, "test", {}) for d in bad]])
    report = export(tmp_path / "d", tmp_path / "o", fmt="nifti")
    assert report.written == 1
    reasons = {s["sop_uid"]: s["reason"] for s in report.skipped}
    assert "SR" in reasons[sr.SOPInstanceUID]
    assert all("unevenly spaced" in reasons[d.SOPInstanceUID] for d in bad)
    assert json.loads((tmp_path / "o" / "dataset.json").read_text())["skipped"] == report.skipped


def test_png_8_bit_windowed_and_16_bit_raw(tmp_path: Path) -> None:
    (ds,) = ct_series(n=1)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    make_download(tmp_path / "d", [(ds, "train", {})])
    export(tmp_path / "d", tmp_path / "p16", fmt="png", png_bits=16)
    (p16,) = (tmp_path / "p16").rglob("*.png")
    raw = np.asarray(Image.open(p16))
    assert raw.dtype == np.uint16 or Image.open(p16).mode.startswith("I")
    np.testing.assert_array_equal(raw.astype(np.int32) - PNG16_SIGNED_OFFSET, ds.pixel_array.astype(np.int32))
    export(tmp_path / "d", tmp_path / "p8", fmt="png")
    (p8,) = (tmp_path / "p8").rglob("*.png")
    got = np.asarray(Image.open(p8)).astype(np.int32)
    hu = ds.pixel_array.astype(np.float64) - 1024
    expect = np.clip((hu - (40 - 200)) / 400 * 255, 0, 255).astype(np.int32)
    np.testing.assert_array_equal(got, expect)


def _labelled(tmp_path: Path) -> tuple[list[pydicom.Dataset], str]:
    ct = ct_series(n=3)
    boxes = [Box(10, 20, 30, 40, "nodule", 0.9, sop_uid=ct[1].SOPInstanceUID),
             Box(0, 0, 128, 64, "mass", 0.4, sop_uid=ct[1].SOPInstanceUID)]  # fmt: skip
    sr = build_sr(ct, boxes, ResultSpec("d", "1"))
    manifest_box = {"boxes": [{"x": 64, "y": 64, "w": 32, "h": 16, "label": "nodule"}]}
    items = [(ct[0], "train", manifest_box), (ct[1], "train", {}), (ct[2], "train", {}), (sr, "train", {})]
    return ct, make_download(tmp_path / "d", items)


def test_coco_from_sr_results_and_manifest_labels(tmp_path: Path) -> None:
    ct, _ = _labelled(tmp_path)
    report = export(tmp_path / "d", tmp_path / "c", fmt="coco")
    assert report.boxes == 3
    doc = json.loads((tmp_path / "c" / "annotations" / "instances_train.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(cats.values()) == ["mass", "nodule"] and len(cats) == 2
    images = {i["id"]: i for i in doc["images"]}
    assert len(images) == 3 and len({i["file_name"] for i in images.values()}) == 3
    for im in images.values():
        assert (im["width"], im["height"]) == (128, 128)
        assert (tmp_path / "c" / im["file_name"]).read_bytes()[:4] == b"\x89PNG"
    ids = [a["id"] for a in doc["annotations"]]
    assert len(set(ids)) == len(ids) == 3
    by_uid = {im["sop_instance_uid"]: im["id"] for im in images.values()}
    got = sorted((a["image_id"], cats[a["category_id"]], a["bbox"], a["area"]) for a in doc["annotations"])
    assert got == sorted([
        (by_uid[ct[0].SOPInstanceUID], "nodule", [64.0, 64.0, 32.0, 16.0], 512.0),
        (by_uid[ct[1].SOPInstanceUID], "nodule", [10.0, 20.0, 30.0, 40.0], 1200.0),
        (by_uid[ct[1].SOPInstanceUID], "mass", [0.0, 0.0, 128.0, 64.0], 8192.0),
    ])  # fmt: skip
    assert all(a["iscrowd"] == 0 and a["image_id"] in images for a in doc["annotations"])
    # Resumed: images kept, the SR's boxes taken from the state file, the same annotations written.
    again = export(tmp_path / "d", tmp_path / "c", fmt="coco")
    assert (again.kept, again.written, again.boxes) == (3, 0, 3)
    assert json.loads((tmp_path / "c" / "annotations" / "instances_train.json").read_text()) == doc


def test_yolo_lines_are_normalised(tmp_path: Path) -> None:
    ct, _ = _labelled(tmp_path)
    export(tmp_path / "d", tmp_path / "y", fmt="yolo")
    yaml = (tmp_path / "y" / "data.yaml").read_text()
    assert 'names:\n  0: "mass"\n  1: "nodule"\n' in yaml and "train: images/train" in yaml
    lines = (tmp_path / "y" / "labels" / "train" / f"{ct[1].SOPInstanceUID}.txt").read_text().splitlines()
    parsed = sorted(tuple(float(v) for v in line.split()) for line in lines)
    expect = sorted([(1, 25 / 128, 40 / 128, 30 / 128, 40 / 128), (0, 0.5, 0.25, 1.0, 0.5)])
    np.testing.assert_allclose(parsed, expect, atol=1e-6)
    assert all(0 <= v <= 1 for line in parsed for v in line[1:])
    assert (tmp_path / "y" / "labels" / "train" / f"{ct[2].SOPInstanceUID}.txt").read_text() == ""  # a negative
    assert len(list((tmp_path / "y" / "images" / "train").glob("*.png"))) == 3


def test_resume_keeps_matching_outputs_and_redoes_the_rest(tmp_path: Path) -> None:
    make_download(tmp_path / "d", [(d, "train", {}) for d in ct_series(n=4)])
    calls = 0

    def killer() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "d", tmp_path / "p", fmt="png", on_file=killer)
    stale = next((tmp_path / "p").rglob("*.png")).with_name(".x.png.999.tmp")
    stale.write_bytes(b"half")  # as a kill between write and rename leaves it
    again = export(tmp_path / "d", tmp_path / "p", fmt="png")
    assert (again.kept, again.written) == (2, 2) and not stale.exists()
    victim = next((tmp_path / "p").rglob("*.png"))
    victim.write_bytes(b"damaged")
    third = export(tmp_path / "d", tmp_path / "p", fmt="png")
    assert (third.kept, third.written) == (3, 1) and victim.read_bytes()[:4] == b"\x89PNG"
    # Another depth is another export: nothing of the 8-bit one is kept.
    assert export(tmp_path / "d", tmp_path / "p", fmt="png", png_bits=16).written == 4
    assert export(tmp_path / "d", tmp_path / "x", fmt="dicom").written == 4
    assert export(tmp_path / "d", tmp_path / "x", fmt="dicom").kept == 4


def test_unsupported_combinations_say_so(tmp_path: Path) -> None:
    make_download(tmp_path / "d", [(d, "train", {}) for d in ct_series(n=2)])
    with pytest.raises(InvalidInput, match="no box annotations"):
        export(tmp_path / "d", tmp_path / "o", fmt="coco")
    with pytest.raises(InvalidInput, match="png only"):
        export(tmp_path / "d", tmp_path / "o", fmt="nifti", png_bits=16)
    with pytest.raises(InvalidInput, match="format must be"):
        export(tmp_path / "d", tmp_path / "o", fmt="tiff")


def test_cli_export_nifti_and_refusal(tmp_path: Path) -> None:
    from medcloud.cli import app

    make_download(tmp_path / "d", [(d, "val", {}) for d in ct_series(n=3)])
    r = CliRunner().invoke(app, ["dataset", "export", str(tmp_path / "d"), str(tmp_path / "o"), "--format", "nifti"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert out["per_split"] == {"val": 3} and out["written"] == 1
    r = CliRunner().invoke(app, ["dataset", "export", str(tmp_path / "d"), str(tmp_path / "o"), "--format", "yolo"])
    assert r.exit_code != 0
