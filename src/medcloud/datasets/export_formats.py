"""The derived export formats (PNG, NIfTI, COCO, YOLO) of `medcloud.datasets.export`; numpy, pydicom, nibabel
and highdicom are imported here only, when such an export runs."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medcloud.datasets.export import (
    LABEL_MODALITIES,
    ExportReport,
    _inputs_key,
    _read,
    _safe,
    _State,
    _write,
    put,
    render_png,
)
from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats.records import DicomRecord
from medcloud.fsio import write_atomic

Entry = dict[str, Any]


@dataclass
class Context:
    out: Path
    state: _State
    report: ExportReport
    rows: list[list[str]]
    check: Callable[[Entry], Path]
    on_file: Callable[[], None] | None
    png_bits: int

    def row(self, path: str, e: Entry) -> None:
        self.rows.append([path, e["split"], _safe(str(e["patient"])), e["study_uid"], e["series_uid"], e["sop_uid"],
                          e["sha256"]])  # fmt: skip
        self.report.per_split[e["split"]] = self.report.per_split.get(e["split"], 0) + 1

    def tick(self) -> None:
        if self.on_file:
            self.on_file()

    def skip(self, e: Entry, reason: str) -> None:
        self.report.skipped.append({"sop_uid": e["sop_uid"], "reason": reason})
        self.tick()


def _is_label(ds: Dataset) -> bool:
    # Rows, not PixelData: headers are read without pixels.
    return str(getattr(ds, "Modality", "")).upper() in LABEL_MODALITIES or "Rows" not in ds


def png(ctx: Context, files: list[Entry]) -> None:
    """One PNG per image instance: out/<split>/<patient>/<SOP UID>.png."""
    for e in files:
        rel = f"{e['split']}/{_safe(str(e['patient']))}/{e['sop_uid']}.png"
        if ctx.state.current(ctx.out, rel, e["sha256"]):
            ctx.report.kept += 1
            ctx.row(rel, e)
            ctx.tick()
            continue
        ds = _read(ctx.check(e))
        if _is_label(ds):
            ctx.skip(e, f"{ds.get('Modality', '?')} holds no image to render")
            continue
        data, _ = render_png(ds, e["sop_uid"], ctx.png_bits)
        _write(ctx.out, rel, data, ctx.state, e["sha256"], ctx.report)
        ctx.row(rel, e)
        ctx.tick()


def volume(datasets: list[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """A series' voxels as (columns, rows, slices) in modality units, and its RAS affine (mm).

    Slices are ordered along the normal of Image Orientation (Patient); voxel (i, j, k) lies at
    IPP_0 + i*dx*row_dir + j*dy*col_dir + k*step in DICOM's LPS, flipped to NIfTI's RAS."""
    first = datasets[0]
    try:
        iop = np.array([float(v) for v in first.ImageOrientationPatient])
        dy, dx = (float(v) for v in first.PixelSpacing)
        for ds in datasets:
            _ = ds.ImagePositionPatient
    except AttributeError as exc:
        raise UnsupportedFormat(f"no volume geometry ({exc}); export this series as png") from None
    for ds in datasets:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise UnsupportedFormat("multi-frame instances are not stacked into volumes; export as dicom")
        same = np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4)
        if not same or (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise UnsupportedFormat("slices differ in orientation or size: not one volume")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    ordered = sorted(datasets, key=lambda d: float(np.dot([float(v) for v in d.ImagePositionPatient], normal)))
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in ordered])
    if len(ordered) > 1:
        gaps = np.diff(ipp @ normal)
        if np.any(gaps <= 1e-6) or np.ptp(gaps) > 0.01 * float(np.mean(gaps)) + 1e-4:
            raise UnsupportedFormat("slice positions repeat or are unevenly spaced: not one regular volume")
        step = (ipp[-1] - ipp[0]) / (len(ordered) - 1)
    else:
        step = normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    slopes = [float(getattr(d, "RescaleSlope", 1) or 1) for d in ordered]
    intercepts = [float(getattr(d, "RescaleIntercept", 0) or 0) for d in ordered]
    stack = np.stack([d.pixel_array.astype(np.float64) * s + i for d, s, i in zip(ordered, slopes, intercepts,
                                                                                 strict=True)])  # fmt: skip
    integral = all(s == 1 for s in slopes) and all(float(i).is_integer() for i in intercepts)
    if integral and stack.min() >= -32768 and stack.max() <= 32767:
        data = stack.astype(np.int16)
    else:
        data = stack.astype(np.float32)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dx, col_dir * dy, step, ipp[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), ras


def nifti(ctx: Context, files: list[Entry]) -> None:
    """One .nii.gz per series: out/<split>/<patient>/<Series UID>.nii.gz (a series sits in one split)."""
    import importlib

    nib: Any = importlib.import_module("nibabel")  # untyped: one Any at the edge

    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in files:
        groups.setdefault((e["split"], e["series_uid"]), []).append(e)
    for (split, series), entries in groups.items():
        rel = f"{split}/{_safe(str(entries[0]['patient']))}/{series}.nii.gz"
        inputs = _inputs_key([e["sha256"] for e in entries])
        if ctx.state.current(ctx.out, rel, inputs):
            ctx.report.kept += 1
            for e in entries:
                ctx.row(rel, e)
                ctx.tick()
            continue
        images: list[tuple[Entry, Dataset]] = []
        for e in entries:
            ds = _read(ctx.check(e))
            if _is_label(ds):
                ctx.skip(e, f"{ds.get('Modality', '?')} holds no image slice")
            else:
                images.append((e, ds))
        if not images:
            continue
        try:
            data, affine = volume([ds for _, ds in images])
        except UnsupportedFormat as exc:
            for e, _ in images:
                ctx.skip(e, f"series {series}: {exc.detail}")
            continue
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)  # scanner coordinates
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units("mm")
        raw = nib.Nifti1Image.to_bytes(img)
        import gzip

        _write(ctx.out, rel, gzip.compress(raw, compresslevel=1, mtime=0), ctx.state, inputs, ctx.report)
        for e, _ in images:
            ctx.row(rel, e)
            ctx.tick()


@dataclass(frozen=True)
class _Box:
    sop_uid: str
    x: float
    y: float
    w: float
    h: float
    label: str


def _sr_boxes(ds: Dataset) -> list[_Box]:
    """Boxes of a TID 1500 report: each planar ROI's bounding box in its source image's pixels."""
    import highdicom as hd

    for cls in (hd.sr.Comprehensive3DSR, hd.sr.ComprehensiveSR, hd.sr.EnhancedSR):
        try:
            report = cls.from_dataset(ds)
            groups = report.content.get_planar_roi_measurement_groups()
            break
        except Exception:  # noqa: S112 - not this IOD, or not TID 1500: try the next, else no boxes
            continue
    else:
        return []
    out = []
    for g in groups:
        roi = g.roi
        if roi is None:
            continue
        pts = np.asarray(roi.value, dtype=float).reshape(-1, 2)
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        label = str(g.finding_type.meaning) if g.finding_type is not None else "finding"
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        out.append(_Box(str(ref), float(x0), float(y0), float(x1 - x0), float(y1 - y0), label))
    return out


def _collect_boxes(ctx: Context, files: list[Entry]) -> tuple[list[_Box], dict[str, DicomRecord]]:
    """Boxes from the manifest's labels and the dataset's SR files; each file's catalog record by SOP UID.

    Records come from the hub's own header scanner (no pixel decoding, a fraction of pydicom's time);
    only SR files are parsed with pydicom and highdicom."""
    from medcloud.ingest.dicom import read_dicom

    boxes: list[_Box] = []
    records: dict[str, DicomRecord] = {}
    for e in files:
        for b in (e.get("labels") or {}).get("boxes", []) or []:
            try:
                boxes.append(_Box(e["sop_uid"], float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"]),
                                  str(b["label"])))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                raise InvalidInput(f"manifest labels of {e['sop_uid']}: a box needs x, y, w, h, label") from None
        src = ctx.check(e)
        try:
            rec = read_dicom(src, require_deidentified=False)
        except InvalidInput as exc:
            raise UnsupportedFormat(f"{e['sop_uid']}: not readable DICOM ({exc.detail}); download again") from None
        if rec.modality == "SR":
            # highdicom's parse of a report takes about as long as rendering dozens of images: keep it.
            cached = ctx.state.parsed.get(e["sha256"])
            if cached is None:
                cached = [b.__dict__ for b in _sr_boxes(_read(src))]
                ctx.state.parsed[e["sha256"]] = cached
            boxes += [_Box(**b) for b in cached]
        records[e["sop_uid"]] = rec
    return boxes, records


def detection(ctx: Context, files: list[Entry], fmt: str) -> None:
    """COCO (annotations/instances_<split>.json) or YOLO (labels/<split>/*.txt, data.yaml) over 8-bit PNGs."""
    boxes, headers = _collect_boxes(ctx, files)
    if not boxes:
        raise InvalidInput(
            f"no box annotations in this dataset: a {fmt} export needs boxes (SR results stored with "
            "`medcloud results push` frozen into the dataset, or labels.boxes in the manifest); use png instead"
        )
    names = sorted({b.label for b in boxes})
    cat = {n: i for i, n in enumerate(names)}
    per_image: dict[str, list[_Box]] = {}
    for b in boxes:
        per_image.setdefault(b.sop_uid, []).append(b)
    coco: dict[str, dict[str, Any]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    image_ids: dict[str, int] = {}
    for e in files:
        rec = headers[e["sop_uid"]]
        if rec.modality in LABEL_MODALITIES or not rec.rows or not rec.columns:
            ctx.skip(e, f"{rec.modality or '?'}: a label source, not an image")
            continue
        if (rec.frames or 1) > 1:
            ctx.skip(e, "multi-frame image: boxes per frame are not exported")
            continue
        rel = f"images/{e['split']}/{e['sop_uid']}.png"
        if not ctx.state.current(ctx.out, rel, e["sha256"]):
            data, _ = render_png(_read(ctx.check(e)), e["sop_uid"], 8)
            _write(ctx.out, rel, data, ctx.state, e["sha256"], ctx.report)
        else:
            ctx.report.kept += 1
        width, height = int(rec.columns), int(rec.rows)
        sizes[e["sop_uid"]] = (width, height)
        image_ids[e["sop_uid"]] = len(image_ids) + 1
        part = coco.setdefault(e["split"], {"images": [], "annotations": []})
        part["images"].append({"id": image_ids[e["sop_uid"]], "file_name": rel, "width": width, "height": height,
                                "sop_instance_uid": e["sop_uid"]})  # fmt: skip
        lines = []
        for b in per_image.get(e["sop_uid"], []):
            if b.w <= 0 or b.h <= 0 or b.x < 0 or b.y < 0 or b.x + b.w > width or b.y + b.h > height:
                ctx.report.skipped.append({"sop_uid": e["sop_uid"], "reason": f"box {b.label!r} outside the image"})
                continue
            ctx.report.boxes += 1
            part["annotations"].append({"id": ctx.report.boxes, "image_id": image_ids[e["sop_uid"]],
                                         "category_id": cat[b.label] + 1, "bbox": [b.x, b.y, b.w, b.h],
                                         "area": b.w * b.h, "iscrowd": 0})  # fmt: skip
            xc, yc = (b.x + b.w / 2) / width, (b.y + b.h / 2) / height
            lines.append(f"{cat[b.label]} {xc:.6f} {yc:.6f} {b.w / width:.6f} {b.h / height:.6f}")
        if fmt == "yolo":
            label_path = ctx.out / "labels" / e["split"] / f"{e['sop_uid']}.txt"
            put(label_path, ("\n".join(lines) + "\n" if lines else "").encode())
        ctx.row(rel, e)
        ctx.tick()
    missing = {b.sop_uid for b in boxes} - set(image_ids)
    for uid in sorted(missing):
        ctx.report.skipped.append({"sop_uid": uid, "reason": "boxes on an image that is not in this dataset"})
    categories = [{"id": i + 1, "name": n, "supercategory": "finding"} for i, n in enumerate(names)]
    if fmt == "coco":
        for split, doc in coco.items():
            body = {"info": {"description": f"medcloud dataset {ctx.report.version}"}, "licenses": [],
                    "categories": categories, **doc}  # fmt: skip
            (ctx.out / "annotations").mkdir(exist_ok=True)
            write_atomic(ctx.out / "annotations" / f"instances_{split}.json", json.dumps(body).encode(), mode=0o644)
    else:
        yaml = io.StringIO()
        yaml.write(f"path: {ctx.out.resolve()}\n")
        for split in sorted(coco):
            yaml.write(f"{split}: images/{split}\n")
        yaml.write("names:\n" + "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names)))
        write_atomic(ctx.out / "data.yaml", yaml.getvalue().encode(), mode=0o644)
