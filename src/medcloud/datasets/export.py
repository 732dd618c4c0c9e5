"""Lay a downloaded dataset version out for a trainer: DICOM, PNG (8-bit windowed or 16-bit raw), NIfTI, COCO, YOLO.

Every format writes `index.csv` (one row per source instance: the output path, split, patient, UIDs and
the instance's SHA-256) and `dataset.json`. Exports resume: `.medcloud-export.json` records, per output,
the SHA-256s of the inputs it was made from and of the bytes written, so a second run (after a kill, or
to finish) keeps every output whose inputs and bytes still match and rewrites the rest. Outputs are
written to a temporary name and renamed, so a kill never leaves half a file under its real name.

SR and SEG instances (AI results, `medcloud.results`) are labels, not images: PNG and NIfTI skip them, and
COCO/YOLO read their boxes (TID 1500 planar ROIs) as annotations, with boxes carried in the manifest's
`labels.boxes`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.datasets.client import FILES, read_manifest, sha256_file
from medcloud.errors import IntegrityError, InvalidInput, NotFound, UnsupportedFormat
from medcloud.fsio import write_atomic

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

__all__ = ["FORMATS", "ExportReport", "export"]

FORMATS = ("dicom", "png", "nifti", "coco", "yolo")
STATE = ".medcloud-export.json"
LABEL_MODALITIES = frozenset({"SR", "SEG"})
PNG16_SIGNED_OFFSET = 32768


@dataclass
class ExportReport:
    """What an export did: files per split, outputs written and kept (resumed), instances skipped and why."""

    version: str
    out: Path
    fmt: str = "dicom"
    per_split: dict[str, int] = field(default_factory=dict)
    written: int = 0
    kept: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    boxes: int = 0


class _State:
    """Which outputs are done: rel path -> {inputs: SHA-256 of the input hashes, sha256: of the output}."""

    def __init__(self, out: Path, key: dict[str, Any]) -> None:
        self.path = out / STATE
        self.key = key
        self.outputs: dict[str, dict[str, str]] = {}
        # What was read from inputs and is costly to read again (an SR's boxes), by the input's SHA-256.
        self.parsed: dict[str, Any] = {}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except ValueError:
                old = {}
            if isinstance(old, dict) and old.get("key") == key:
                self.outputs = dict(old.get("outputs", {}))
                self.parsed = dict(old.get("parsed", {}))
        self._dirty = 0

    def current(self, out: Path, rel: str, inputs: str) -> bool:
        rec = self.outputs.get(rel)
        p = out / rel
        return bool(rec and rec["inputs"] == inputs and p.is_file() and sha256_file(p) == rec["sha256"])

    def record(self, rel: str, inputs: str, sha256: str) -> None:
        self.outputs[rel] = {"inputs": inputs, "sha256": sha256}
        self._dirty += 1
        if self._dirty >= 200:  # bound the work a kill loses to a few hundred outputs
            self.save()

    def save(self) -> None:
        body = json.dumps({"key": self.key, "outputs": self.outputs, "parsed": self.parsed}, sort_keys=True).encode()
        write_atomic(self.path, body, mode=0o644, sync_dir=False)
        self._dirty = 0


def _inputs_key(shas: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def _safe(text: str) -> str:
    """A folder name from hub data: safe characters only, never "." or ".."."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64].lstrip(".") or "_"


def _read(src: Path) -> Dataset:
    import pydicom

    try:
        return pydicom.dcmread(src)
    except Exception as exc:  # not DICOM at all: a damaged download exported with --no-verify
        raise UnsupportedFormat(f"{src.name}: not a readable DICOM file ({exc}); download again") from None


def _pixels(ds: Dataset, name: str) -> np.ndarray:
    try:
        arr: np.ndarray = ds.pixel_array
    except Exception as exc:  # no pixel data, or a codec this install lacks
        raise UnsupportedFormat(f"{name}: cannot decode pixels ({exc}); export as dicom instead") from None
    if (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.ndim == 4:
        arr = arr[arr.shape[0] // 2]  # multi-frame: the middle frame
    return arr


def _first(value: Any) -> float | None:
    """The first of a possibly multi-valued DS (Window Center/Width), or None."""
    from pydicom.multival import MultiValue

    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        return None


def render_png(ds: Dataset, name: str, bits: int = 8) -> tuple[bytes, dict[str, float]]:
    """PNG bytes of an image and how its values map back.

    8-bit: modality values (rescale applied) windowed by the file's first Window Center/Width, else by the
    0.5-99.5 percentiles; MONOCHROME1 inverted. 16-bit: the stored values unchanged (signed ones plus
    32768), so `value = (png - offset) * slope + intercept`. Colour images stay 8-bit RGB."""
    import io

    import numpy as np
    from PIL import Image

    arr = _pixels(ds, name)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    info = {"slope": slope, "intercept": intercept, "offset": 0.0}
    if arr.ndim == 3:  # colour
        img = Image.fromarray(arr[..., :3].astype(np.uint8), mode="RGB")
    elif bits == 16:
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        info["offset"] = float(PNG16_SIGNED_OFFSET if signed else 0)
        raw = arr.astype(np.int32) + int(info["offset"])
        img = Image.fromarray(raw.clip(0, 65535).astype(np.uint16))
    else:
        values = arr.astype(np.float32) * slope + intercept
        center, width = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
        if center is not None and width is not None and width > 0:
            lo, hi = center - width / 2.0, center + width / 2.0
            info.update(window_center=center, window_width=width)
        else:
            lo, hi = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
        scaled = np.clip((values - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            scaled = 255 - scaled
        img = Image.fromarray(scaled)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), info


def put(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: a kill leaves no partial file under `path`.

    No fsync: every output is re-hashed against the state file before a resumed export keeps it, so one
    torn by a power loss is rewritten, and syncing each small file cost most of an export's time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(out: Path, rel: str, data: bytes, state: _State, inputs: str, report: ExportReport) -> None:
    put(out / rel, data)
    state.record(rel, inputs, hashlib.sha256(data).hexdigest())
    report.written += 1
    report.bytes_out += len(data)


def export(
    download_dir: Path,
    out: Path,
    *,
    fmt: str = "dicom",
    verify: bool = True,
    png_bits: int = 8,
    on_file: Callable[[], None] | None = None,
) -> ExportReport:
    """Export a downloaded version (see the module docstring); `on_file` is called once per manifest file."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
    if png_bits not in (8, 16):
        raise InvalidInput("PNG depth must be 8 (windowed) or 16 (raw stored values)")
    if png_bits == 16 and fmt != "png":
        raise InvalidInput(f"--png-bits 16 applies to --format png only; {fmt} images are 8-bit")
    version, header, files = read_manifest(download_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp"):  # left by an export killed between writing and renaming
        stale.unlink(missing_ok=True)
    report = ExportReport(version, out, fmt)
    state = _State(out, {"version": version, "format": fmt, "png_bits": png_bits})
    sources: dict[str, Path] = {}
    for entry in files:
        src = download_dir / FILES / f"{entry['sop_uid']}.dcm"
        if not src.is_file():
            raise NotFound(f"{src} is missing: run `medcloud dataset download` again to resume")
        sources[entry["sop_uid"]] = src
    rows: list[list[str]] = []
    from medcloud.datasets import export_formats as formats

    checked: set[str] = set()

    def check(entry: dict[str, Any]) -> Path:
        """The entry's downloaded file, hashed once per export (when `verify`) before it is read."""
        src = sources[entry["sop_uid"]]
        if entry["sop_uid"] not in checked:
            if verify and sha256_file(src) != entry["sha256"]:
                raise IntegrityError(f"{src} does not hash to {entry['sha256']}: download again")
            checked.add(entry["sop_uid"])
            report.bytes_in += int(entry["size"])
        return src

    ctx = formats.Context(out, state, report, rows, check, on_file, png_bits)
    try:
        if fmt == "dicom":
            _dicom(ctx, files)
        elif fmt == "png":
            formats.png(ctx, files)
        elif fmt == "nifti":
            formats.nifti(ctx, files)
        else:
            formats.detection(ctx, files, fmt)
    finally:
        state.save()
    head = ["path", "split", "patient", "study_uid", "series_uid", "sop_uid", "sha256"]
    body = "\n".join(",".join(r) for r in [head, *rows]) + "\n"
    write_atomic(out / "index.csv", body.encode(), mode=0o644)
    summary = {"id": version, "header": header, "format": fmt, "per_split": report.per_split,
               "skipped": report.skipped, "png_bits": png_bits if fmt == "png" else None}  # fmt: skip
    write_atomic(out / "dataset.json", json.dumps(summary, indent=2, ensure_ascii=False).encode(), mode=0o644)
    return report


def _dicom(ctx: Any, files: list[dict[str, Any]]) -> None:
    """The files as stored, hard-linked (a copy across file systems)."""
    for entry in files:
        src = ctx.check(entry)
        rel = Path(entry["split"]) / _safe(str(entry["patient"])) / f"{entry['sop_uid']}.dcm"
        dst = ctx.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_file() and sha256_file(dst) == entry["sha256"]:
            ctx.report.kept += 1
        else:
            dst.unlink(missing_ok=True)
            try:  # a hard link costs no space; another file system gets a copy
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            ctx.report.written += 1
            ctx.report.bytes_out += int(entry["size"])
        ctx.row(rel.as_posix(), entry)
        ctx.tick()
