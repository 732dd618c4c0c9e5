"""Box annotations in the formats real teams use: VoTT JSON (the reference team's tool), COCO and YOLO.

One in-memory shape, `AnnotatedImage` (file name, size, boxes in pixels [x0, y0, x1, y1], label codes),
and a reader and writer per format. Label codes are the detector's (`medcloud.vision.labels`); unknown
names are refused rather than silently dropped.
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


@dataclass
class AnnotatedImage:
    file_name: str
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    synthetic: bool = False


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
        "synthetic": any(i.synthetic for i in images),
        "tags": [{"name": code, "color": "#%06x" % (hash(code) & 0xFFFFFF)} for code in LABEL_CODES],
        "assets": assets,
    }


def from_vott(doc: dict[str, Any]) -> list[AnnotatedImage]:
    """Read a VoTT export (with "assets") or a single VoTT *-asset.json document."""
    assets = doc["assets"].values() if "assets" in doc else [doc]
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
    return out


def read_vott(path: Path) -> list[AnnotatedImage]:
    """A VoTT export file, or a folder of VoTT *-asset.json files."""
    if path.is_dir():
        out = []
        for p in sorted(path.glob("*-asset.json")):
            out.extend(from_vott(json.loads(p.read_text(encoding="utf-8"))))
        return out
    return from_vott(json.loads(path.read_text(encoding="utf-8")))


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
        },
        "images": coco_images,
        "annotations": anns,
        "categories": cats,
    }


def from_coco(doc: dict[str, Any]) -> list[AnnotatedImage]:
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
    return list(by_id.values())


# ---- YOLO (one txt per image: "class cx cy w h", normalised; classes.txt lists the names) ----


def to_yolo(images: list[AnnotatedImage], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("\n".join(LABEL_CODES) + "\n", encoding="utf-8")
    for im in images:
        lines = []
        for (x0, y0, x1, y1), lab in zip(im.boxes, im.labels, strict=True):
            cx, cy = (x0 + x1) / 2 / im.width, (y0 + y1) / 2 / im.height
            w, h = (x1 - x0) / im.width, (y1 - y0) / im.height
            lines.append(f"{LABEL_CODES.index(lab)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (out_dir / (Path(im.file_name).stem + ".txt")).write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )


def from_yolo(label_dir: Path, sizes: dict[str, tuple[int, int]]) -> list[AnnotatedImage]:
    """Read YOLO txt files; `sizes` maps image file name to (width, height), which YOLO does not store."""
    classes_file = label_dir / "classes.txt"
    names = classes_file.read_text(encoding="utf-8").split() if classes_file.exists() else list(LABEL_CODES)
    codes = [canonical_label(n) for n in names]
    out = []
    for file_name, (w, h) in sorted(sizes.items()):
        im = AnnotatedImage(file_name, w, h)
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
    return out
