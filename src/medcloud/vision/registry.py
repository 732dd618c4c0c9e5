"""The model registry: plain folders with a JSON card, no database.

Layout: ``<root>/<name>/<version>/{detector.onnx, classifier.onnx, card.json}`` for the Gram-stain
detector, ``<root>/<name>/<version>/{model.onnx, card.json}`` for a federated image classifier
(card ``task`` = ``FL_TASK``; see `write_fl_card`). Roots are searched in
order: ``<data_dir>/models`` first, then the models shipped inside the package, so a hub serves the
shipped SYNTHETIC demo model until someone registers another version.

A card says what a model is and where it came from: version, SHA-256 of each ONNX file, label set,
training data sites (and that they are synthetic), the exact training command, and metrics per class
and per site, including sites whose style was never seen in training.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medcloud.errors import Conflict, IntegrityError, InvalidInput, NotFound

PACKAGED_MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = "gram-stain"
MODEL_FILES = ("detector.onnx", "classifier.onnx")
FL_TASK = "federated-image-classification"  # card `task` of models from `medcloud fl train-images`
FL_MODEL_FILE = "model.onnx"
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    card: dict[str, Any]

    def verify(self) -> None:
        """Refuse a model whose files no longer match the hashes its card recorded."""
        for fname, meta in self.card.get("files", {}).items():
            if sha256_file(self.path / fname) != meta["sha256"]:
                raise IntegrityError(f"{self.name}/{self.version}: {fname} does not match its card's sha256")

    @property
    def task(self) -> str:
        """The card's task: `FL_TASK` for federated classifiers, a description for the detector."""
        return str(self.card.get("task", ""))

    @property
    def is_detector(self) -> bool:
        """Whether it is the detector (detector.onnx); a federated classifier (`FL_TASK`) is served as one."""
        return self.task != FL_TASK and "detector.onnx" in self.card.get("files", {})

    def summary(self) -> dict[str, Any]:
        keep = (
            "name",
            "version",
            "created",
            "synthetic",
            "notice",
            "sha256",
            "task",
            "labels",
            "crop_classes",
            "training",
            "metrics",
            "license",
            "input",
        )
        from medcloud.vision.robustness import card_robustness

        # The headline (worst never-seen site) and the robustness warning lead, as they lead the card.
        summary = card_robustness(self.card) if self.is_detector else {}
        summary |= {k: self.card[k] for k in keep if k in self.card}
        return summary | {"packaged": _is_relative(self.path, PACKAGED_MODELS)}


def _is_relative(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def roots(data_dir: Path | None) -> list[Path]:
    out = []
    if data_dir is not None:
        out.append(Path(data_dir) / "models")
    out.append(PACKAGED_MODELS)
    return out


def list_models(data_dir: Path | None = None) -> list[ModelVersion]:
    """Every registered version, newest first within each name; data-dir versions shadow packaged ones."""
    found: dict[tuple[str, str], ModelVersion] = {}
    for root in roots(data_dir):
        if not root.is_dir():
            continue
        for card_path in sorted(root.glob("*/*/card.json")):
            card = json.loads(card_path.read_text(encoding="utf-8"))
            key = (card_path.parent.parent.name, card_path.parent.name)
            found.setdefault(key, ModelVersion(key[0], key[1], card_path.parent, card))
    return sorted(found.values(), key=lambda m: (m.name, m.card.get("created", "")), reverse=True)


def resolve(data_dir: Path | None = None, name: str = DEFAULT_MODEL, version: str | None = None) -> ModelVersion:
    """One version by name (newest when `version` is None)."""
    for m in list_models(data_dir):
        if m.name == name and (version is None or m.version == version):
            return m
    raise NotFound(f"model {name}{'/' + version if version else ''} is not in the registry")


def load_dir(path: Path) -> ModelVersion:
    """A model folder given directly (e.g. `serve-model --model DIR`)."""
    card_path = path / "card.json"
    if not card_path.is_file():
        raise NotFound(f"{path} has no card.json")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    return ModelVersion(card.get("name", path.parent.name), card.get("version", path.name), path, card)


def write_card(
    model_dir: Path,
    name: str,
    version: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash the ONNX files and write card.json; returns the card.

    The card leads with its `headline` (the worst site style training never saw: mAP50 and verdict
    accuracy) and `robustness_warning` (text, or null), computed from `metrics["per_site"]`.
    """
    from medcloud.vision.labels import CROP_CLASS_NAMES, CROP_CLASSES, LABELS
    from medcloud.vision.robustness import robustness
    from medcloud.vision.runtime import INPUT_LONG_SIDE, STRIDE, TILE
    from medcloud.vision.synth import SITES, SYNTHETIC_NOTICE

    files = {}
    for fname in MODEL_FILES:
        p = model_dir / fname
        if p.exists():
            files[fname] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    if "detector.onnx" not in files:
        raise InvalidInput(f"{model_dir} has no detector.onnx")
    card = {
        "name": name,
        "version": version,
        **robustness(metrics.get("per_site") or {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": "Gram-stain smear detection (17 labels) + 5-class crop vote",
        "synthetic": True,
        "notice": "Trained and evaluated on SYNTHETIC smears only (" + SYNTHETIC_NOTICE + "). "
        "Not validated on real specimens; not for clinical use.",
        "license": "Apache-2.0",
        "sha256": files["detector.onnx"]["sha256"],
        "files": files,
        "labels": [
            {
                "code": lab.code,
                "en": lab.en,
                "ja": lab.ja,
                "gram": lab.gram,
                "shape": lab.shape,
                "crop_class": lab.crop_class,
            }
            for lab in LABELS
        ],
        "crop_classes": [{"code": c, "en": CROP_CLASS_NAMES[c][0], "ja": CROP_CLASS_NAMES[c][1]} for c in CROP_CLASSES],
        "input": {"long_side": INPUT_LONG_SIDE, "stride": STRIDE, "tile": TILE, "layout": "NCHW float 0..255 RGB"},
        "training": training,
        "sites": {
            n: {"seen_in_training": n in training.get("sites", []), "description": s.description, "synthetic": True}
            for n, s in SITES.items()
        },
        "metrics": metrics,
    } | (extra or {})
    (model_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def write_fl_card(model_dir: Path, name: str, version: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash `model.onnx` and write card.json for a federated image classifier; returns the card.

    `fields` carries what the run knows: `labels`, `input`, `training` (protocol, mode, rounds, sites,
    local steps, DP budget, command), `sites` (per-site acquisition shift and class mix, each marked
    synthetic) and `metrics` (per site, and against single-site models). Its `notice` must say how
    the data were made; the card is marked synthetic and never named like the served detector.
    """
    if name == DEFAULT_MODEL:
        raise InvalidInput(f"{name!r} is the served Gram-stain detector; give the federated model another name")
    p = model_dir / FL_MODEL_FILE
    if not p.is_file():
        raise InvalidInput(f"{model_dir} has no {FL_MODEL_FILE}")
    files = {FL_MODEL_FILE: {"sha256": sha256_file(p), "bytes": p.stat().st_size}}
    card = {
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": FL_TASK,
        "synthetic": True,
        "license": "Apache-2.0",
        "sha256": files[FL_MODEL_FILE]["sha256"],
        "files": files,
    } | fields
    if not card.get("notice"):
        raise InvalidInput("a federated model card needs a `notice` saying what data it was trained on")
    (model_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def register(src_dir: Path, data_dir: Path, name: str, version: str) -> ModelVersion:
    """Copy a trained, evaluated model folder into `<data_dir>/models/<name>/<version>`."""
    dest = Path(data_dir) / "models" / name / version
    if dest.exists():
        raise InvalidInput(f"{name}/{version} is already registered; versions are immutable")
    if not (src_dir / "card.json").is_file():
        raise InvalidInput(f"{src_dir} has no card.json: run `medcloud vision evaluate` first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_dir, dest)
    m = load_dir(dest)
    m.verify()
    return m


def check_new_version(data_dir: Path, name: str, version: str) -> None:
    """Refuse, before any training is spent, a name or version the registry would refuse at the end."""
    for label, value in (("model name", name), ("model version", version)):
        if not _REGISTRY_NAME.match(value):
            raise InvalidInput(f"{label} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if name == DEFAULT_MODEL:
        raise InvalidInput(f"{name!r} is the served Gram-stain detector; give the model another name")
    if (Path(data_dir) / "models" / name / version).exists():
        raise Conflict(f"{name}/{version} is already registered; versions are immutable")


JOB_TASK = "job-model"  # card `task` of models registered by a job (`medcloud.jobs`)


def register_files(
    data_dir: Path, name: str, version: str, files: list[Path], fields: dict[str, Any]
) -> dict[str, Any]:
    """Register model files a job produced under `<data_dir>/models/<name>/<version>` with a card.

    `fields` must hold `training` (the dataset version and job it came from); `task`, `metrics`,
    `labels`, `notice` and the like are kept as given. Versions are immutable; returns the card.
    """
    check_new_version(data_dir, name, version)
    if not fields.get("training", {}).get("dataset_version"):
        raise InvalidInput("a job's model card must name the dataset version it was trained on")
    dest = Path(data_dir) / "models" / name / version
    staging = dest.parent / f".{version}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        entries = {}
        for f in files:
            shutil.copyfile(f, staging / f.name)
            entries[f.name] = {"sha256": sha256_file(staging / f.name), "bytes": (staging / f.name).stat().st_size}
        card = (
            {
                "name": name,
                "version": version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "task": JOB_TASK,
                "synthetic": False,
            }
            | fields
            | {"files": entries, "sha256": entries[files[0].name]["sha256"]}
        )
        (staging / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card
