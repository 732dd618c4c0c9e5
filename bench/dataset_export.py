"""Dataset export benchmark: files/s and MB/s of `medcloud dataset export` per format, and of a resumed run.

    .venv/bin/python bench/dataset_export.py [--series 10] [--slices 40]

A download folder (as `medcloud dataset download` leaves it) is built from SYNTHETIC CT series: pydicom's
bundled CT slice (128x128, 16-bit) restacked with fresh UIDs and 5 mm spacing, split over train/val/test,
plus one DICOM SR result per series (TID 1500, three boxes, built with `medcloud.results.build_sr`) so that
COCO and YOLO have labels. Each format is exported into a fresh folder (timed), then exported again into
the same folder (the resume path: every output re-hashed and kept). For scale, `floor` is the cost of
reading every file with pydicom and decoding its pixels, with no output at all. MB/s counts input bytes.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build(folder: Path, n_series: int, n_slices: int) -> tuple[int, int]:
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    from medcloud.datasets.manifest import FORMAT, manifest_lines
    from medcloud.results import Box, ResultSpec, build_sr

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base = template.pixel_array.astype(np.int16)
    (folder / "files").mkdir(parents=True)
    files: list[dict[str, Any]] = []
    splits = ["train", "train", "train", "val", "test"]

    def add(ds: pydicom.Dataset, split: str) -> None:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        (folder / "files" / f"{ds.SOPInstanceUID}.dcm").write_bytes(data)
        files.append({"index": len(files), "labels": {}, "patient": str(ds.PatientID),
                      "series_uid": str(ds.SeriesInstanceUID), "sha256": hashlib.sha256(data).hexdigest(),
                      "size": len(data), "sop_uid": str(ds.SOPInstanceUID), "split": split,
                      "study_uid": str(ds.StudyInstanceUID)})  # fmt: skip

    for s in range(n_series):
        study, series, split = f"2.25.{900000 + s}", f"2.25.{900000 + s}.1", splits[s % len(splits)]
        slices = []
        for k in range(n_slices):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.PatientID = ds.PatientName = f"BENCH-{s}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{k + 1}"
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [-158.0, -179.0, 5.0 * k]
            ds.PixelData = (base + np.int16(k)).tobytes()
            ds.PatientIdentityRemoved = "YES"
            slices.append(ds)
            add(ds, split)
        mid = slices[n_slices // 2]
        boxes = [Box(10 + 5 * j, 20, 30, 25, ["nodule", "mass", "cyst"][j], 0.9, sop_uid=str(mid.SOPInstanceUID))
                 for j in range(3)]  # fmt: skip
        add(build_sr([mid], boxes, ResultSpec("bench-detector", "1")), split)
    body = b"".join(manifest_lines({"format": FORMAT, "name": "bench-export"}, files))
    (folder / "manifest.jsonl").write_bytes(body)
    return len(files), sum(int(f["size"]) for f in files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=10)
    p.add_argument("--slices", type=int, default=40)
    args = p.parse_args()
    import pydicom

    from medcloud.datasets.export import export

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n, size = build(root / "d", args.series, args.slices)
        mb = size / 1e6
        t = time.perf_counter()
        for f in sorted((root / "d" / "files").iterdir()):
            ds = pydicom.dcmread(f)
            if "PixelData" in ds:
                _ = ds.pixel_array
        floor = time.perf_counter() - t
        out: dict[str, Any] = {
            "data": "SYNTHETIC CT series from pydicom's CT_small.dcm + one SR result per series",
            "files": n, "input_mb": round(mb, 2), "series": args.series, "slices_per_series": args.slices,
            "floor_read_decode": {"seconds": round(floor, 3), "files_per_s": round(n / floor, 1),
                                  "mb_per_s": round(mb / floor, 1)},
            "formats": {},
        }  # fmt: skip
        for fmt, bits in [("dicom", 8), ("png", 8), ("png", 16), ("nifti", 8), ("coco", 8), ("yolo", 8)]:
            name = fmt if fmt != "png" else f"png{bits}"
            dest = root / f"out-{name}"
            t = time.perf_counter()
            report = export(root / "d", dest, fmt=fmt, png_bits=bits)
            first = time.perf_counter() - t
            t = time.perf_counter()
            again = export(root / "d", dest, fmt=fmt, png_bits=bits)
            resumed = time.perf_counter() - t
            written = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
            out["formats"][name] = {
                "seconds": round(first, 3), "files_per_s": round(n / first, 1), "mb_per_s": round(mb / first, 1),
                "outputs_written": report.written, "output_mb": round(written / 1e6, 2), "boxes": report.boxes,
                "skipped": len(report.skipped),
                "resume_seconds": round(resumed, 3), "resume_kept": again.kept, "resume_written": again.written,
            }  # fmt: skip
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
