"""Box annotations in the formats real teams use: VoTT JSON (the reference team's tool), COCO and YOLO.

One in-memory shape, `AnnotatedImage` (file name, size, boxes in pixels [x0, y0, x1, y1], label codes,
box convention), and a reader and writer per format. Label codes are the detector's
(`medcloud.vision.labels`); unknown names are refused rather than silently dropped.

Box conventions (`BOX_CONVENTIONS`): "group" is one box per organism group (a cluster, a chain, a pair:
what the reference service's VoTT boxes hold, and the default), "cell" is one box per cell. Red cells are
one box each in both. A file may declare its convention (VoTT `boxConvention`, COCO
`info.box_convention`, YOLO `box_convention.txt`); readers take `convention=` to say what the caller
wants: per-cell boxes are converted to group boxes (`to_group`: touching boxes of one label merged),
group boxes can never be split into cells (refused with an explanation). Undeclared files are checked
(`check=True`): boxes said or assumed to be per group, most of which touch a box of the same label, are
refused as looking per-cell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput
from medcloud.vision.labels import LABEL_CODES, LABELS

# Display names (English, Japanese) accepted as aliases of the codes when importing.
_ALIASES: dict[str, str] = {}
for _lab in LABELS:
    for _name in (_lab.code, _lab.en, _lab.ja):
        _ALIASES[_name.lower()] = _lab.code


def canonical_label(name: str) -> str:
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise InvalidInput(f"unknown label {name!r}; expected one of {', '.join(LABEL_CODES)}") from None


BOX_CONVENTIONS: tuple[str, ...] = ("group", "cell")
DEFAULT_CONVENTION = "group"  # the reference service's VoTT boxes: one per organism group
# `looks_per_cell`: at least this many boxes (red cells aside), and at least this share touching another.
CELL_MIN_BOXES = 8
CELL_TOUCHING_SHARE = 0.6


@dataclass
class AnnotatedImage:
    file_name: str
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    synthetic: bool = False
    convention: str = DEFAULT_CONVENTION


# ---- box conventions ----


def _valid_convention(value: object, where: str) -> str:
    if value not in BOX_CONVENTIONS:
        raise InvalidInput(f"{where}: box convention must be one of {', '.join(BOX_CONVENTIONS)}, not {value!r}")
    return str(value)


def touching_share(images: list[AnnotatedImage]) -> tuple[float, int]:
    """Share of boxes (red cells aside) that overlap or touch another box of the same label, and how many."""
    touching = total = 0
    for im in images:
        by_label: dict[str, list[tuple[float, float, float, float]]] = {}
        for box, lab in zip(im.boxes, im.labels, strict=True):
            if lab != "rbc":
                by_label.setdefault(lab, []).append(box)
        for boxes in by_label.values():
            total += len(boxes)
            for i, a in enumerate(boxes):
                touching += any(
                    j != i and min(a[2], b[2]) >= max(a[0], b[0]) and min(a[3], b[3]) >= max(a[1], b[1])
                    for j, b in enumerate(boxes)
                )
    return (touching / total if total else 0.0), total


def looks_per_cell(images: list[AnnotatedImage]) -> bool:
    """Whether the boxes look like one per cell: many, and most touching a box of the same label."""
    share, total = touching_share(images)
    return total >= CELL_MIN_BOXES and share >= CELL_TOUCHING_SHARE


def check_convention(images: list[AnnotatedImage], convention: str) -> None:
    """Refuse boxes said to be per group that look per cell (group boxes of one label rarely touch)."""
    _valid_convention(convention, "check_convention")
    if convention == "group" and looks_per_cell(images):
        share, total = touching_share(images)
        raise InvalidInput(
            f"these boxes look like one box per cell, not per organism group: {share:.0%} of {total} boxes "
            "touch another box of the same label. Read them with convention='cell' (they are converted to "
            "group boxes when a group convention is asked for), or pass check=False if they really are groups"
        )


def to_group(images: list[AnnotatedImage]) -> list[AnnotatedImage]:
    """Per-cell boxes to per-group boxes: touching or overlapping boxes of one label become their union.

    Red cells stay one box each. Images already in the group convention are returned unchanged.
    """
    from medcloud.vision.labels import LABEL_INDEX
    from medcloud.vision.metrics import merge_touching

    out = []
    for im in images:
        if im.convention == "group":
            out.append(im)
            continue
        import numpy as np

        boxes, labels, _ = merge_touching(
            np.array(im.boxes, dtype=np.float32).reshape(-1, 4),
            np.array([LABEL_INDEX[lab] for lab in im.labels], dtype=np.int64),
            keep_separate=frozenset({LABEL_INDEX["rbc"]}),
        )
        out.append(
            AnnotatedImage(
                im.file_name,
                im.width,
                im.height,
                [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes],
                [LABEL_CODES[int(k)] for k in labels],
                synthetic=im.synthetic,
                convention="group",
            )
        )
    return out


def convert(images: list[AnnotatedImage], convention: str) -> list[AnnotatedImage]:
    """Images in the asked convention: per cell to per group merges; per group to per cell is refused."""
    _valid_convention(convention, "convert")
    if convention == "group":
        return to_group(images)
    grouped = [im.file_name for im in images if im.convention == "group" and im.boxes]
    if grouped:
        raise InvalidInput(
            f"{grouped[0]} has one box per organism group; a group box cannot be split into per-cell boxes "
            "without annotating the cells again. Evaluate at group level instead (per-cell predictions are "
            "merged into group boxes) or annotate per cell"
        )
    return [im if im.convention == "cell" else _with(im, "cell") for im in images]


def _with(im: AnnotatedImage, convention: str) -> AnnotatedImage:
    return AnnotatedImage(im.file_name, im.width, im.height, im.boxes, im.labels, im.synthetic, convention)


def _settle(
    images: list[AnnotatedImage], declared: object, convention: str | None, check: bool, where: str
) -> list[AnnotatedImage]:
    """Apply what the file declares and what the caller asks for (see the module doc)."""
    source = _valid_convention(declared, where) if declared is not None else None
    wanted = _valid_convention(convention, where) if convention is not None else None
    source = source or wanted or DEFAULT_CONVENTION
    images = [_with(im, source) for im in images]
    if check and source == "group":
        check_convention(images, "group")
    return convert(images, wanted) if wanted is not None and wanted != source else images


def _declared(images: list[AnnotatedImage]) -> str:
    conventions = {im.convention for im in images}
    if len(conventions) > 1:
        raise InvalidInput("images mix box conventions; convert them to one first (to_group)")
    return conventions.pop() if conventions else DEFAULT_CONVENTION


# ---- VoTT (v2 "VoTT JSON" export and per-asset *-asset.json files) ----


def _asset_id(name: str) -> str:
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def to_vott(images: list[AnnotatedImage], project: str = "medcloud-gram-stain") -> dict[str, Any]:
    """A VoTT 2.x JSON export document."""
    assets: dict[str, Any] = {}
    for im in images:
        aid = _asset_id(im.file_name)
        regions = []
        for k, ((x0, y0, x1, y1), lab) in enumerate(zip(im.boxes, im.labels, strict=True)):
            regions.append(
                {
                    "id": f"{aid[:8]}-{k}",
                    "type": "RECTANGLE",
                    "tags": [lab],
                    "boundingBox": {"height": y1 - y0, "width": x1 - x0, "left": x0, "top": y0},
                    "points": [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}],
                }
            )
        assets[aid] = {
            "asset": {
                "format": Path(im.file_name).suffix.lstrip(".") or "png",
                "id": aid,
                "name": im.file_name,
                "path": f"file:{im.file_name}",
                "size": {"width": im.width, "height": im.height},
                "state": 2,
                "type": 1,
            },
            "regions": regions,
            "version": "2.2.0",
        }
    return {
        "name": project,
        "securityToken": f"{project} Token",
        "boxConvention": _declared(images),
        "synthetic": any(i.synthetic for i in images),
        "tags": [{"name": code, "color": "#%06x" % (hash(code) & 0xFFFFFF)} for code in LABEL_CODES],
        "assets": assets,
    }


def from_vott(doc: dict[str, Any], convention: str | None = None, check: bool = True) -> list[AnnotatedImage]:
    """Read a VoTT export (with "assets") or a single VoTT *-asset.json document.

    `convention`: the box convention wanted ("group", "cell"; None: as the file declares, else group).
    """
    if not isinstance(doc, dict):
        raise InvalidInput("not a VoTT document: expected a JSON object")
    assets = doc["assets"].values() if isinstance(doc.get("assets"), dict) else [doc]
    out = []
    for a in assets:
        try:
            meta = a["asset"]
            im = AnnotatedImage(
                meta["name"],
                int(meta["size"]["width"]),
                int(meta["size"]["height"]),
                synthetic=bool(doc.get("synthetic", False)),
            )
            for r in a.get("regions", []):
                if r.get("type", "RECTANGLE") != "RECTANGLE":
                    continue
                bb = r["boundingBox"]
                x0, y0 = float(bb["left"]), float(bb["top"])
                for tag in r["tags"]:
                    im.boxes.append((x0, y0, x0 + float(bb["width"]), y0 + float(bb["height"])))
                    im.labels.append(canonical_label(tag))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"not a VoTT asset: missing or bad {exc}") from exc
        out.append(im)
    return _settle(out, doc.get("boxConvention"), convention, check, "VoTT boxConvention")


def read_vott(path: Path, convention: str | None = None, check: bool = True) -> list[AnnotatedImage]:
    """A VoTT export file, or a folder of VoTT *-asset.json files."""
    if path.is_dir():
        out = []
        for p in sorted(path.glob("*-asset.json")):
            out.extend(from_vott(json.loads(p.read_text(encoding="utf-8")), convention, check=False))
        if check and convention != "cell" and all(im.convention == "group" for im in out):
            check_convention(out, "group")
        return out
    return from_vott(json.loads(path.read_text(encoding="utf-8")), convention, check)


# ---- COCO ----


def to_coco(images: list[AnnotatedImage]) -> dict[str, Any]:
    cats = [
        {"id": i + 1, "name": lab.code, "supercategory": lab.crop_class, "name_en": lab.en, "name_ja": lab.ja}
        for i, lab in enumerate(LABELS)
    ]
    cat_id = {c["name"]: c["id"] for c in cats}
    coco_images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, im in enumerate(images, start=1):
        coco_images.append({"id": i, "file_name": im.file_name, "width": im.width, "height": im.height})
        for (x0, y0, x1, y1), lab in zip(im.boxes, im.labels, strict=True):
            w, h = x1 - x0, y1 - y0
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat_id[lab],
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    synthetic = any(i.synthetic for i in images)
    return {
        "info": {
            "description": "medcloud Gram-stain annotations" + (" (SYNTHETIC)" if synthetic else ""),
            "synthetic": synthetic,
            "box_convention": _declared(images),
        },
        "images": coco_images,
        "annotations": anns,
        "categories": cats,
    }


def from_coco(doc: dict[str, Any], convention: str | None = None, check: bool = True) -> list[AnnotatedImage]:
    """Read a COCO detection document; `convention` as for `from_vott`."""
    try:
        cats = {c["id"]: canonical_label(c["name"]) for c in doc["categories"]}
        synthetic = bool(doc.get("info", {}).get("synthetic", False))
        by_id = {
            im["id"]: AnnotatedImage(im["file_name"], int(im["width"]), int(im["height"]), synthetic=synthetic)
            for im in doc["images"]
        }
        for a in doc["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            im = by_id[a["image_id"]]
            im.boxes.append((x, y, x + w, y + h))
            im.labels.append(cats[a["category_id"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not a COCO detection file: missing or bad {exc}") from exc
    declared = doc.get("info", {}).get("box_convention") if isinstance(doc.get("info"), dict) else None
    return _settle(list(by_id.values()), declared, convention, check, "COCO info.box_convention")


# ---- YOLO (one txt per image: "class cx cy w h", normalised; classes.txt lists the names) ----

YOLO_SYNTHETIC_MARKER = "SYNTHETIC.txt"


def to_yolo(images: list[AnnotatedImage], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("\n".join(LABEL_CODES) + "\n", encoding="utf-8")
    (out_dir / "box_convention.txt").write_text(_declared(images) + "\n", encoding="utf-8")
    if any(i.synthetic for i in images):  # YOLO has no metadata field: a marker file says it
        (out_dir / YOLO_SYNTHETIC_MARKER).write_text(
            "These annotations describe SYNTHETIC images (medcloud.vision.synth), not specimens.\n", encoding="utf-8"
        )
    for im in images:
        lines = []
        for (x0, y0, x1, y1), lab in zip(im.boxes, im.labels, strict=True):
            cx, cy = (x0 + x1) / 2 / im.width, (y0 + y1) / 2 / im.height
            w, h = (x1 - x0) / im.width, (y1 - y0) / im.height
            lines.append(f"{LABEL_CODES.index(lab)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (out_dir / (Path(im.file_name).stem + ".txt")).write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )


def from_yolo(
    label_dir: Path, sizes: dict[str, tuple[int, int]], convention: str | None = None, check: bool = True
) -> list[AnnotatedImage]:
    """Read YOLO txt files; `sizes` maps image file name to (width, height), which YOLO does not store.

    `convention` as for `from_vott`; the folder may declare its own in `box_convention.txt`.
    """
    classes_file = label_dir / "classes.txt"
    names = classes_file.read_text(encoding="utf-8").split() if classes_file.exists() else list(LABEL_CODES)
    codes = [canonical_label(n) for n in names]
    out = []
    synthetic = (label_dir / YOLO_SYNTHETIC_MARKER).is_file()
    for file_name, (w, h) in sorted(sizes.items()):
        im = AnnotatedImage(file_name, w, h, synthetic=synthetic)
        txt = label_dir / (Path(file_name).stem + ".txt")
        if txt.exists():
            for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    c, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
                    code = codes[c]
                except (ValueError, IndexError) as exc:
                    raise InvalidInput(f"{txt.name}:{n}: not a YOLO box line: {line!r}") from exc
                im.boxes.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
                im.labels.append(code)
        out.append(im)
    declared_file = label_dir / "box_convention.txt"
    declared = declared_file.read_text(encoding="utf-8").strip() if declared_file.exists() else None
    return _settle(out, declared, convention, check, "box_convention.txt")
