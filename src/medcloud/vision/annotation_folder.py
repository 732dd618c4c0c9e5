"""Check and convert a folder of box annotations (VoTT, COCO, YOLO) with its images.

`locate` finds the annotation files in a folder (or takes one file), `check_folder` reads them leniently
and reports every problem per file instead of stopping at the first one, and `convert_folder` reads them
with the strict readers of `medcloud.vision.annotations` and writes another format into a new folder,
all or nothing (a hidden temporary folder beside the target, renamed into place at the end).

Problems (`Problem.code`), errors unless said otherwise:
  malformed            a file that is not valid JSON / not the format / a bad YOLO line
  unsafe-path          an image name that is absolute, holds "..", or resolves outside the image folder
                       (the image is never opened)
  duplicate-image      one image annotated twice
  missing-image        the annotated image is not there;  unreadable-image: it is not an image
  size-mismatch        the annotation's width x height differs from the image's
  unknown-label        a label that is none of the 17 detector labels (codes, English or Japanese names)
  bad-box              a coordinate that is not a finite number, or a YOLO class index out of range
  empty-box            zero or negative width or height
  box-outside          a box entirely outside the image, or more than 1 pixel beyond its edge
                       (a warning under `clip=True`: convert then clips it to the image)
  duplicate-box        the same box (within 0.5 pixel) with the same label twice
  conflicting-labels   (warning) the same box with two different labels
  looks-per-cell       boxes taken as one per organism group that look one per cell (the strict readers
                       refuse them); say `from_boxes="cell"` if they are per cell
  bad-convention       a declared box convention that is neither "group" nor "cell", or one that
                       contradicts `from_boxes`
  unannotated-image    (warning) an image in the folder that no annotation names (VoTT, COCO)
  ignored-region       (warning) a VoTT region that is not a rectangle or has no tag
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import medcloud.vision.annotations as ann
from medcloud.errors import InvalidInput, PathEscape
from medcloud.vision.labels import LABEL_CODES

FORMATS: tuple[str, ...] = ("vott", "coco", "yolo")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
EDGE_TOLERANCE = 1.0  # pixels a box may stick out of the image (rounding in annotation tools)
SAME_BOX = 0.5  # pixels: boxes this close on every side are the same box
OUTPUT_NAMES = {"vott": "vott-export.json", "coco": "coco.json", "yolo": "yolo"}
YOLO_SIDE_FILES = frozenset({"classes.txt", "box_convention.txt", ann.YOLO_SYNTHETIC_MARKER})

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    file: str
    severity: str  # "error" | "warning"
    code: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"file": self.file, "severity": self.severity, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Source:
    """Where a folder's annotations are: `annotations` is a file (VoTT export, COCO) or a folder
    (VoTT `*-asset.json` files, YOLO labels); `images` the folder the image names are relative to."""

    format: str
    annotations: Path
    images: Path


@dataclass
class _Raw:
    """One image as the file says it, before any check: labels as written, boxes in pixels (YOLO:
    normalised until the image's size is known)."""

    file_name: str
    source: str
    width: int | None = None
    height: int | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    normalised: bool = False


@dataclass
class CheckReport:
    source: Source | None
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    boxes: int = 0
    images_without_boxes: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    unknown_labels: Counter[str] = field(default_factory=Counter)
    convention: dict[str, Any] = field(default_factory=dict)
    synthetic_images: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    synthetic_names: set[str] = field(default_factory=set)

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)

    def add(self, file: str, code: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(file, severity, code, message))

    def as_json(self) -> dict[str, Any]:
        src = self.source
        return {
            "ok": self.errors == 0,
            "errors": self.errors,
            "warnings": self.warnings,
            "format": src.format if src else None,
            "annotations": str(src.annotations) if src else None,
            "images_folder": str(src.images) if src else None,
            "images": self.images,
            "boxes": self.boxes,
            "images_without_boxes": self.images_without_boxes,
            "labels": dict(sorted(self.labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            "unknown_labels": dict(self.unknown_labels),
            "box_convention": self.convention,
            "synthetic_images": self.synthetic_images,
            "problems": [p.as_json() for p in self.problems],
        }


# ---- finding the annotations ----


def _read_json(path: Path) -> Any:
    """Parsed JSON, or InvalidInput naming the file and where it breaks."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path.name}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}: not UTF-8 text") from None


def _kind(doc: Any) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("assets"), dict):
        return "vott"
    if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
        return "coco"
    if isinstance(doc, dict) and isinstance(doc.get("asset"), dict):
        return "vott"
    return None


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _yolo_images(labels: Path) -> Path:
    for cand in (labels, labels.parent, labels.parent / "images"):
        if _has_images(cand):
            return cand
    return labels


def locate(
    path: Path, fmt: str | None = None, images: Path | None = None, format_option: str = "--from"
) -> tuple[Source | None, list[Problem]]:
    """The annotations in `path` (a folder, or one annotation file), in format `fmt` (None: whichever is
    there). JSON files that cannot be parsed come back as problems; a folder with no annotations, or with
    several candidates and no `fmt`, is refused (InvalidInput, naming the command's `format_option`)."""
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown annotation format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    problems: list[Problem] = []
    found: list[tuple[str, Path, Path]] = []  # format, annotations, default image folder
    if path.is_file():
        if path.name == "classes.txt":
            found.append(("yolo", path.parent, _yolo_images(path.parent)))
        else:
            try:
                kind = _kind(_read_json(path))
            except InvalidInput as exc:
                if fmt in (None, "vott", "coco"):
                    problems.append(Problem(path.name, "error", "malformed", exc.detail))
                    return None, problems
                raise
            if kind is None or (fmt is not None and kind != fmt):
                raise InvalidInput(f"{path.name}: not a {fmt or 'VoTT or COCO'} annotation file")
            found.append((kind, path, path.parent))
    else:
        if any(path.glob("*-asset.json")):
            found.append(("vott", path, path))
        for p in sorted(path.glob("*.json")):
            if p.name.endswith("-asset.json"):
                continue
            try:
                kind = _kind(_read_json(p))
            except InvalidInput as exc:
                problems.append(Problem(p.name, "error", "malformed", exc.detail))
                continue
            if kind is not None:
                found.append((kind, p, path))
        for labels in (path, path / "yolo", path / "labels"):
            if (labels / "classes.txt").is_file() or (labels / "box_convention.txt").is_file():
                found.append(("yolo", labels, _yolo_images(labels)))
        if fmt == "yolo" and not any(f[0] == "yolo" for f in found) and any(path.glob("*.txt")):
            found.append(("yolo", path, _yolo_images(path)))  # YOLO without classes.txt: medcloud's label order
    if fmt is not None:
        found = [f for f in found if f[0] == fmt]
    if not found:
        if problems:
            return None, problems
        raise InvalidInput(f"{path}: no {fmt or 'VoTT, COCO or YOLO'} annotations found")
    if len(found) > 1:
        names = ", ".join(f"{k} ({a.name or a})" for k, a, _ in found)
        hint = (
            "pass the annotation file itself" if len({k for k, _, _ in found}) == 1 else f"pass {format_option} FORMAT"
        )
        raise InvalidInput(f"{path}: several annotation sets found: {names}; {hint}")
    kind, where, default_images = found[0]
    return Source(kind, where, images or default_images), problems


def safe_image_path(root: Path, name: str) -> Path:
    """`root / name`, refused (PathEscape) for an absolute name, a ".." part, or a path resolving outside."""
    if not name or "\x00" in name:
        raise PathEscape(f"{name!r}: empty image name or NUL byte")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise PathEscape(f"{name!r}: absolute image path; image names must be relative to the image folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise PathEscape(f"{name!r}: image name climbs out of the image folder ('..')")
    target = root / posix
    base = root.resolve()
    if not target.resolve().is_relative_to(base):
        raise PathEscape(f"{name!r}: resolves outside the image folder {root}")
    return target


# ---- lenient readers: everything the strict readers would refuse, as problems ----


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"not a finite number: {value!r}")
    return out


def _vott_asset(doc: Any, where: str, rep: CheckReport) -> _Raw | None:
    try:
        meta = doc["asset"]
        name = meta["name"]
        if not isinstance(name, str):
            raise TypeError("asset name is not text")
        raw = _Raw(name, where, int(meta["size"]["width"]), int(meta["size"]["height"]))
    except (KeyError, TypeError, ValueError) as exc:
        rep.add(where, "malformed", f"not a VoTT asset: missing or bad {exc}")
        return None
    regions = doc.get("regions", [])
    if not isinstance(regions, list):
        rep.add(where, "malformed", f"{name}: 'regions' is not a list")
        return raw
    for k, r in enumerate(regions):
        if not isinstance(r, dict):
            rep.add(name, "malformed", f"region {k} is not an object")
            continue
        if r.get("type", "RECTANGLE") != "RECTANGLE":
            rep.add(name, "ignored-region", f"region {k} is a {r.get('type')!r}, not a rectangle: ignored", "warning")
            continue
        tags = r.get("tags")
        if not isinstance(tags, list) or not tags:
            rep.add(name, "ignored-region", f"region {k} has no tag: ignored", "warning")
            continue
        try:
            bb = r["boundingBox"]
            x0, y0 = _number(bb["left"]), _number(bb["top"])
            box = (x0, y0, x0 + _number(bb["width"]), y0 + _number(bb["height"]))
        except (KeyError, TypeError, ValueError) as exc:
            rep.add(name, "bad-box", f"region {k}: missing or bad boundingBox {exc}")
            continue
        for tag in tags:
            raw.boxes.append(box)
            raw.labels.append(str(tag))
    return raw


def _read_vott(src: Source, rep: CheckReport) -> tuple[list[_Raw], object]:
    if src.annotations.is_dir():
        out: list[_Raw] = []
        for p in sorted(src.annotations.glob("*-asset.json")):
            try:
                doc = _read_json(p)
            except InvalidInput as exc:
                rep.add(p.name, "malformed", exc.detail)
                continue
            raw = _vott_asset(doc, p.name, rep)
            if raw is not None:
                out.append(raw)
        return out, None
    where = src.annotations.name
    doc = _read_json(src.annotations)
    if isinstance(doc, dict) and isinstance(doc.get("asset"), dict):
        raw = _vott_asset(doc, where, rep)
        return ([raw] if raw else []), doc.get("boxConvention")
    out = []
    for aid, asset in doc["assets"].items():
        raw = _vott_asset(asset, f"{where} (asset {aid})", rep)
        if raw is not None:
            out.append(raw)
    return out, doc.get("boxConvention")


def _read_coco(src: Source, rep: CheckReport) -> tuple[list[_Raw], object]:
    where = src.annotations.name
    doc = _read_json(src.annotations)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    cats: dict[Any, str] = {}
    for c in doc.get("categories") or []:
        try:
            cats[c["id"]] = str(c["name"])
        except (KeyError, TypeError):
            rep.add(where, "malformed", f"category without id or name: {c!r}"[:200])
    if not cats:
        rep.add(where, "malformed", "no 'categories': label names unknown")
    by_id: dict[Any, _Raw] = {}
    images = doc["images"] if isinstance(doc["images"], list) else []
    for im in images:
        try:
            name = im["file_name"]
            if not isinstance(name, str):
                raise TypeError("file_name is not text")
            raw = _Raw(name, where, int(im["width"]), int(im["height"]))
            if im["id"] in by_id:
                rep.add(where, "malformed", f"image id {im['id']!r} appears twice")
                continue
            by_id[im["id"]] = raw
        except (KeyError, TypeError, ValueError) as exc:
            rep.add(where, "malformed", f"image entry missing or bad {exc}")
    anns = doc["annotations"] if isinstance(doc["annotations"], list) else []
    for k, a in enumerate(anns):
        try:
            raw = by_id[a["image_id"]]
        except (KeyError, TypeError):
            rep.add(where, "malformed", f"annotation {k} names no known image_id")
            continue
        try:
            label = cats[a["category_id"]]
        except (KeyError, TypeError):
            rep.add(raw.file_name, "unknown-label", f"annotation {k}: category_id not in 'categories'")
            continue
        try:
            bbox = a["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError("bbox is not [x, y, width, height]")
            x, y, w, h = (_number(v) for v in bbox)
        except (KeyError, TypeError, ValueError) as exc:
            rep.add(raw.file_name, "bad-box", f"annotation {k}: missing or bad {exc}")
            continue
        raw.boxes.append((x, y, x + w, y + h))
        raw.labels.append(label)
    # The strict reader refuses a file naming any unknown category, used or not.
    for cid, name in cats.items():
        try:
            ann.canonical_label(name)
        except InvalidInput:
            if not any(name in r.labels for r in by_id.values()):
                rep.add(where, "unknown-label", f"category {name!r} (id {cid}) is not a known label (unused)")
    return list(by_id.values()), info.get("box_convention")


def _read_yolo(src: Source, rep: CheckReport) -> tuple[list[_Raw], object]:
    labels_dir = src.annotations
    classes_file = labels_dir / "classes.txt"
    if classes_file.is_file():
        names = classes_file.read_text(encoding="utf-8").split()
    else:
        names = list(LABEL_CODES)
        rep.add("classes.txt", "no-classes", "no classes.txt: class numbers read in medcloud's label order", "warning")
    declared_file = labels_dir / "box_convention.txt"
    declared = declared_file.read_text(encoding="utf-8").strip() if declared_file.is_file() else None
    images: dict[str, list[Path]] = {}
    if src.images.is_dir():
        for p in sorted(src.images.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                images.setdefault(p.stem, []).append(p)
    out: dict[str, _Raw] = {}
    for stem, paths in images.items():
        if len(paths) > 1:
            rep.add(
                paths[0].name,
                "duplicate-image",
                f"{len(paths)} images share the name {stem!r}: " + ", ".join(p.name for p in paths),
            )
        out[stem] = _Raw(paths[0].name, paths[0].name, normalised=True)
    for txt in sorted(labels_dir.glob("*.txt")):
        if txt.name in YOLO_SIDE_FILES:
            continue
        raw = out.get(txt.stem)
        if raw is None:
            rep.add(txt.name, "missing-image", f"no image named {txt.stem}.* in {src.images}")
            continue
        raw.source = txt.name
        for n, line in enumerate(txt.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 5:
                    raise ValueError("expected 'class cx cy w h'")
                c = int(parts[0])
                cx, cy, bw, bh = (_number(v) for v in parts[1:])
            except ValueError as exc:
                rep.add(txt.name, "malformed", f"line {n}: not a YOLO box line ({exc}): {line[:80]!r}")
                continue
            if not 0 <= c < len(names):
                rep.add(txt.name, "bad-box", f"line {n}: class {c} is not in classes.txt ({len(names)} classes)")
                continue
            raw.boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
            raw.labels.append(names[c])
    return list(out.values()), declared


# ---- the checks ----


def _check_boxes(raw: _Raw, rep: CheckReport, clip: bool) -> None:
    w, h = raw.width or 0, raw.height or 0
    seen: dict[tuple[int, ...], str] = {}
    unknown: Counter[str] = Counter()
    for k, (box, label) in enumerate(zip(raw.boxes, raw.labels, strict=True)):
        try:
            code = ann.canonical_label(label)
        except InvalidInput:
            unknown[label] += 1
            code = None
        x0, y0, x1, y1 = box
        rounded = f"[{x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}]"
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            rep.add(raw.file_name, "empty-box", f"box {k} {rounded} ({label}) has zero or negative size")
            continue
        if w and h:
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                rep.add(raw.file_name, "box-outside", f"box {k} {rounded} ({label}) lies outside the {w}x{h} image")
                continue
            beyond = max(-x0, -y0, x1 - w, y1 - h)
            if beyond > EDGE_TOLERANCE:
                what = "clipped to the image" if clip else "use convert --clip to clip it"
                rep.add(
                    raw.file_name,
                    "box-outside",
                    f"box {k} {rounded} ({label}) reaches {beyond:.1f} px outside the {w}x{h} image; {what}",
                    "warning" if clip else "error",
                )
        key = tuple(round(v / SAME_BOX) for v in box)
        other = seen.get(key)
        if other is not None:
            if other == (code or label):
                rep.add(raw.file_name, "duplicate-box", f"box {k} {rounded} ({label}) is there twice")
            else:
                rep.add(
                    raw.file_name,
                    "conflicting-labels",
                    f"box {k} {rounded} is labelled both {other!r} and {code or label!r}",
                    "warning",
                )
        else:
            seen[key] = code or label
        if code is not None:
            rep.labels[code] += 1
    for label, n in unknown.items():
        rep.unknown_labels[label] += n
        rep.add(
            raw.file_name,
            "unknown-label",
            f"unknown label {label!r} ({n} box{'es' if n > 1 else ''}); expected one of the 17 label codes "
            "or their English/Japanese names",
        )


def _open_image(path: Path) -> tuple[int, int, bool]:
    """(width, height, synthetic) from the image's header; OSError/ValueError when it is not an image."""
    from PIL import Image

    with Image.open(path) as im:
        synthetic = "medcloud:synthetic" in im.info or str(im.info.get("Description", "")).startswith("SYNTHETIC")
        return im.width, im.height, synthetic


def check_folder(
    src: Source,
    *,
    clip: bool = False,
    from_boxes: str | None = None,
    pre: list[Problem] | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Every problem of the annotations in `src`, per file (see the module doc); never raises for a
    problem in the data, only for a folder it cannot read at all."""
    rep = CheckReport(src, list(pre or []))
    if from_boxes is not None and from_boxes not in ann.BOX_CONVENTIONS:
        raise InvalidInput(f"--from-boxes must be one of {', '.join(ann.BOX_CONVENTIONS)}, not {from_boxes!r}")
    reader = {"vott": _read_vott, "coco": _read_coco, "yolo": _read_yolo}[src.format]
    try:
        raws, declared = reader(src, rep)
    except (InvalidInput, KeyError, TypeError, AttributeError) as exc:
        detail = exc.detail if isinstance(exc, InvalidInput) else f"not a {src.format} file: missing or bad {exc}"
        rep.add(src.annotations.name, "malformed", detail)
        return rep
    names: Counter[str] = Counter(r.file_name for r in raws)
    for name, n in names.items():
        if n > 1 and src.format != "yolo":
            rep.add(name, "duplicate-image", f"annotated {n} times")
    safe: dict[str, Path] = {}
    total = len(raws)
    for i, raw in enumerate(raws):
        if progress is not None:
            progress(i, total)
        try:
            path = safe_image_path(src.images, raw.file_name)
        except PathEscape as exc:
            rep.add(raw.source, "unsafe-path", f"{exc.detail}; refused, the file was not opened")
            continue
        safe[raw.file_name] = path
        rep.images += 1
        if not path.is_file():
            rep.add(raw.file_name, "missing-image", f"not found in {src.images}")
        else:
            try:
                width, height, synthetic = _open_image(path)
            except (OSError, ValueError, SyntaxError) as exc:
                rep.add(raw.file_name, "unreadable-image", f"not an image Pillow can read ({type(exc).__name__})")
            else:
                rep.synthetic_images += synthetic
                if synthetic:
                    rep.synthetic_names.add(raw.file_name)
                if raw.normalised:
                    raw.width, raw.height = width, height
                    raw.boxes = [(a * width, b * height, c * width, d * height) for a, b, c, d in raw.boxes]
                    raw.normalised = False
                elif (raw.width, raw.height) != (width, height):
                    rep.add(
                        raw.file_name,
                        "size-mismatch",
                        f"annotated as {raw.width}x{raw.height}, the image is {width}x{height}",
                    )
                rep.sizes[raw.file_name] = (width, height)
        if raw.normalised:  # YOLO without a readable image: no pixel size to check against
            continue
        rep.boxes += len(raw.boxes)
        rep.images_without_boxes += not raw.boxes
        _check_boxes(raw, rep, clip)
    if progress is not None:
        progress(total, total)
    if src.format != "yolo" and src.images.is_dir():
        named = {p.resolve() for p in safe.values()}
        for p in sorted(src.images.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in named:
                rep.add(p.name, "unannotated-image", "no annotation names this image", "warning")
    rep.convention = _convention(raws, declared, from_boxes, src, rep)
    return rep


def _convention(
    raws: list[_Raw], declared: object, from_boxes: str | None, src: Source, rep: CheckReport
) -> dict[str, Any]:
    where = {"vott": "boxConvention", "coco": "info.box_convention", "yolo": "box_convention.txt"}[src.format]
    if declared is not None and declared not in ann.BOX_CONVENTIONS:
        rep.add(src.annotations.name, "bad-convention", f"{where} is {declared!r}; expected 'group' or 'cell'")
        declared = None
    if declared is not None and from_boxes is not None and declared != from_boxes:
        rep.add(
            src.annotations.name,
            "bad-convention",
            f"the file declares {declared!r} boxes ({where}) but --from-boxes says {from_boxes!r}",
        )
    used = str(declared or from_boxes or ann.DEFAULT_CONVENTION)
    images = []
    for r in raws:
        if r.normalised:
            continue
        kept = [(b, lab) for b, lab in zip(r.boxes, r.labels, strict=True) if _known(lab)]
        images.append(
            ann.AnnotatedImage(
                r.file_name,
                r.width or 0,
                r.height or 0,
                [b for b, _ in kept],
                [ann.canonical_label(lab) for _, lab in kept],
            )
        )
    share, counted = ann.touching_share(images)
    looks = ann.looks_per_cell(images)
    if used == "group" and looks:
        rep.add(
            src.annotations.name,
            "looks-per-cell",
            f"the boxes are taken as one per organism group ({'declared' if declared else 'assumed'}) but "
            f"{share:.0%} of {counted} boxes touch another box of the same label, as per-cell boxes do; "
            "if they are per cell, say so with --from-boxes cell (convert --boxes group merges them)",
        )
    return {
        "declared": declared,
        "used": used,
        "looks_like": "undecided" if counted < ann.CELL_MIN_BOXES else ("cell" if looks else "group"),
        "touching_share": round(share, 3),
        "boxes_considered": counted,
    }


def _known(label: str) -> bool:
    try:
        ann.canonical_label(label)
    except InvalidInput:
        return False
    return True


# ---- conversion ----


def read_annotations(src: Source, rep: CheckReport, from_boxes: str | None) -> list[ann.AnnotatedImage]:
    """The images and boxes of a folder `check_folder` passed (labels as codes, boxes in pixels)."""
    if src.format == "vott":
        if src.annotations.is_dir():
            return ann.read_vott(src.annotations, from_boxes)
        return ann.from_vott(_read_json(src.annotations), from_boxes)
    if src.format == "coco":
        return ann.from_coco(_read_json(src.annotations), from_boxes)
    return ann.from_yolo(src.annotations, rep.sizes, from_boxes)


def _clip(im: ann.AnnotatedImage) -> ann.AnnotatedImage:
    boxes = [
        (max(0.0, x0), max(0.0, y0), min(float(im.width), x1), min(float(im.height), y1)) for x0, y0, x1, y1 in im.boxes
    ]
    return ann.AnnotatedImage(im.file_name, im.width, im.height, boxes, im.labels, im.synthetic, im.convention)


def convert_folder(
    src: Source,
    dst: Path,
    to: str,
    *,
    boxes: str | None = None,
    from_boxes: str | None = None,
    clip: bool = False,
    copy_images: bool = True,
    pre: list[Problem] | None = None,
    progress: Progress | None = None,
) -> tuple[CheckReport, dict[str, Any]]:
    """Check `src`, then write it as `to` (with its images unless `copy_images` is False) into the new
    folder `dst`, converting boxes to `boxes` ("group", "cell"; None: as they are). Refused, with nothing
    written, when the check finds errors or `dst` exists; the result appears complete or not at all."""
    if to not in FORMATS:
        raise InvalidInput(f"unknown target format {to!r}; expected one of {', '.join(FORMATS)}")
    if boxes is not None and boxes not in ann.BOX_CONVENTIONS:
        raise InvalidInput(f"--boxes must be one of {', '.join(ann.BOX_CONVENTIONS)}, not {boxes!r}")
    if dst.exists() or dst.is_symlink():
        raise InvalidInput(f"{dst} exists; converting writes a new folder and never replaces one")
    dst_abs = dst.absolute().resolve()
    for root in {src.images, src.annotations if src.annotations.is_dir() else src.annotations.parent}:
        if dst_abs.is_relative_to(root.resolve()):
            raise InvalidInput(f"{dst} is inside the source folder {root}; write the conversion elsewhere")
    if not dst_abs.parent.is_dir():
        raise InvalidInput(f"{dst.parent}: no such folder to create {dst.name} in")
    rep = check_folder(src, clip=clip, from_boxes=from_boxes, pre=pre, progress=None)
    if rep.errors:
        return rep, {}
    images = read_annotations(src, rep, from_boxes)
    images = [
        ann.AnnotatedImage(
            im.file_name,
            im.width,
            im.height,
            im.boxes,
            im.labels,
            im.synthetic or im.file_name in rep.synthetic_names,
            im.convention,
        )
        for im in images
    ]
    if clip:
        images = [_clip(im) for im in images]
    if boxes is not None:
        images = ann.convert(images, boxes)
    if to == "yolo":
        stems = Counter(Path(im.file_name).stem for im in images)
        clash = [s for s, n in stems.items() if n > 1]
        if clash:
            raise InvalidInput(f"YOLO keeps one label file per image stem; these stems repeat: {', '.join(clash[:5])}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst_abs.name}.partial-", dir=dst_abs.parent))
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for the temporary name, not the result
        if to == "vott":
            doc = ann.to_vott(images)
            (tmp / OUTPUT_NAMES["vott"]).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        elif to == "coco":
            doc = ann.to_coco(images)
            (tmp / OUTPUT_NAMES["coco"]).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            ann.to_yolo(images, tmp / OUTPUT_NAMES["yolo"])
        copied = 0
        if copy_images:
            for i, im in enumerate(images):
                if progress is not None:
                    progress(i, len(images))
                source = safe_image_path(src.images, im.file_name)
                target = safe_image_path(tmp, im.file_name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                copied += 1
            if progress is not None:
                progress(len(images), len(images))
        os.rename(tmp, dst_abs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {
        "written": str(dst),
        "format": to,
        "annotations": str(dst / OUTPUT_NAMES[to]),
        "images": len(images),
        "images_copied": copied,
        "boxes": sum(len(im.boxes) for im in images),
        "box_convention": images[0].convention if images else (boxes or rep.convention.get("used")),
        "synthetic": any(im.synthetic for im in images),
    }
    return rep, summary
