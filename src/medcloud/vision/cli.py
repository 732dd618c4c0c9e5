"""`medcloud vision ...` (synthetic data, train, evaluate, registry) and `medcloud serve-model`.

Heavy imports (torch, onnxruntime) stay inside the commands so `medcloud --help` and `serve-model` are fast.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True)


_FROM_BOXES_HELP = "What the boxes are when the files do not say: 'group' (one per organism group) or 'cell'."


@app.command("train")
def train_command(
    out: Path = typer.Option(..., "--out", help="Folder for detector.onnx, classifier.onnx, weights and log."),
    images: int = typer.Option(2000, help="Synthetic training smears to render."),
    det_steps: int = typer.Option(3000, help="Detector optimisation steps."),
    cls_steps: int = typer.Option(800, help="Crop-classifier optimisation steps."),
    batch: int = typer.Option(16),
    crop: int = typer.Option(160, help="Detector training crop (pixels of the 320-pixel input)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch CPU threads."),
    det_minutes: float = typer.Option(0.0, help="Wall-time budget for the detector (schedule follows time)."),
    cls_minutes: float = typer.Option(0.0, help="Wall-time budget for the classifier."),
    cache: Path | None = typer.Option(None, help="Folder to cache the rendered training smears."),
    init: str | None = typer.Option(
        None, help="Continue from the weights in this model folder, or of this shipped version (e.g. 0.8.0-synthetic)."
    ),
    lr: float = typer.Option(3e-3, help="Peak learning rate (cosine schedule)."),
    boxes: str = typer.Option("group", help='Annotation convention: "group" (one box per organism group) or "cell".'),
    colour: str = typer.Option("white-balance", help='Input colour convention: "white-balance" or "none".'),
    random_share: float = typer.Option(0.7, help="Share of smears drawn with domain randomisation (site-random)."),
    stain_jitter: float = typer.Option(0.08, help="Optical-density stain augmentation strength (0 = off)."),
    scale_jitter: float = typer.Option(
        0.0, help="Multi-scale training: zoom each detector image by exp(U(-j, j)) before the crop (0 = off)."
    ),
    vector_share: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of smears drawn by the second renderer (medcloud.vision.synth_vector), for renderer diversity.",
    ),
    textbook_share: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of synth.py smears with organisms at 0.45-0.8 of their usual size against the red cells "
        "(textbook proportions).",
    ),
    highmag_share: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of synth.py smears drawn at 1.3-2x magnification (large organisms, e.g. a 2x camera coupler).",
    ),
    cls_scale_jitter: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Multi-scale crop classifier: its tiles cut at five scales over exp(+-j) and resized to 64 pixels "
        "(0 = off). With --det-steps 0 and --init, retrains the classifier alone.",
    ),
    negative_share: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of synth.py smears with no bacterium (hard negatives): Candida alone or red cells alone, "
        "over debris and precipitate, at 0.5-1x magnification.",
    ),
) -> None:
    """Train the Gram-stain detector and crop classifier from scratch on SYNTHETIC smears; export ONNX."""
    from medcloud.vision.train import TrainConfig, train_model

    cfg = TrainConfig(
        images=images,
        det_steps=det_steps,
        cls_steps=cls_steps,
        batch=batch,
        crop=crop,
        seed=seed,
        threads=threads,
        det_minutes=det_minutes,
        cls_minutes=cls_minutes,
        init=init,
        lr=lr,
        boxes=boxes,
        colour=colour,
        random_share=random_share,
        stain_jitter=stain_jitter,
        scale_jitter=scale_jitter,
        vector_share=vector_share,
        textbook_share=textbook_share,
        highmag_share=highmag_share,
        cls_scale_jitter=cls_scale_jitter,
        negative_share=negative_share,
    )
    command = "medcloud vision train " + " ".join(shlex.quote(a) for a in sys.argv[2:] if a != "train")
    result = train_model(cfg, out, command, progress=lambda m: typer.echo(m, err=True), cache=cache)
    typer.echo(f"trained in {result['seconds']} s -> {out}")


@app.command("sites")
def sites_command() -> None:
    """List the synthetic sites (training styles and never-seen styles)."""
    from medcloud.vision.synth import SITES

    for site in SITES.values():
        typer.echo(f"{site.name:16} {'training' if site.seen else 'UNSEEN  '}  {site.description}")


@app.command("evaluate")
def evaluate_command(
    model: Path = typer.Option(..., "--model", help="Model folder (detector.onnx, classifier.onnx, training.json)."),
    images: int = typer.Option(40, help="Held-out smears per site for detection metrics."),
    verdict_images: int = typer.Option(40, help="Monomicrobial smears per site (Candida included) for the verdict."),
    sites: str | None = typer.Option(None, help="Comma-separated site styles to score (default: all)."),
    truth_boxes: str = typer.Option("group", "--truth-boxes", help="Truth boxes: 'group' (VoTT-style) or 'cell'."),
    model_boxes: str | None = typer.Option(
        None, "--model-boxes", help="The model's box convention (default: from its training.json, else 'group')."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Evaluation JSON to write (default: a new evaluation-<name>-<version>-<time>.json here)."
    ),
    write_card: bool = typer.Option(
        False, "--write-card", help="Also write card.json into the model folder (replaces the card there)."
    ),
    name: str = typer.Option("gram-stain"),
    version: str | None = typer.Option(None, help="Version to name (default: the card's, else the folder's name)."),
    card: bool | None = typer.Option(None, "--card/--no-card", hidden=True, help="Deprecated: use --write-card."),
    threads: int = typer.Option(2, "--threads", min=1, help="onnxruntime threads (1 on a shared machine)."),
    folder: Path | None = typer.Option(
        None, "--folder", help="Your own annotated photos (VoTT, COCO or YOLO folder), scored as a never-seen site."
    ),
    folder_format: str | None = typer.Option(None, "--folder-format", help="vott, coco or yolo (default: detect)."),
    folder_images: Path | None = typer.Option(None, "--folder-images", help="Folder the image names are relative to."),
    folder_boxes: str | None = typer.Option(None, "--folder-boxes", help=_FROM_BOXES_HELP),
    site_name: str | None = typer.Option(None, "--site-name", help="Name of the --folder site (default: lab-FOLDER)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on long folders."),
) -> None:
    """Leave-one-style-out evaluation (SYNTHETIC held-out split): the worst never-seen style first.

    Per-site mAP50, recall and Gram-verdict accuracy (Candida counted), sites marked seen/UNSEEN. Writes
    the figures to --out; the model's card.json is only touched with --write-card.

    With --folder, your laboratory's own annotated photos are one more never-seen site (`--sites none`
    scores them alone). With --write-card the card's headline and robustness warning then count them, so
    the clinician page warns when the model does poorly on your own microscope.
    """
    import json
    from datetime import datetime, timezone

    from medcloud.errors import InvalidInput
    from medcloud.vision.evaluate import evaluate_folder, evaluate_model, training_record, with_site
    from medcloud.vision.registry import write_card as write_model_card
    from medcloud.vision.synth import SITES

    write = write_card or bool(card)
    only_folder = sites is not None and sites.strip().lower() == "none"
    site_list = tuple(x.strip() for x in sites.split(",") if x.strip()) if sites and not only_folder else None
    if only_folder and folder is None:
        raise InvalidInput("--sites none scores no synthetic site: name your photos with --folder")
    if only_folder and write:
        raise InvalidInput("--write-card records the synthetic sites too: leave out --sites none")
    old = json.loads((model / "card.json").read_text()) if (model / "card.json").is_file() else {}
    version = version or old.get("version") or model.name
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = out or Path.cwd() / f"evaluation-{name}-{version}-{stamp}.json"
    if target.resolve() == (model / "card.json").resolve():
        raise InvalidInput("--out must not be the model's card.json; pass --write-card to update the card")
    if out is None and target.exists():
        raise InvalidInput(f"{target} exists; pass --out")
    if folder is not None:
        lab_name = site_name or f"lab-{folder.resolve().name}"
        if lab_name in SITES:
            raise InvalidInput(f"--site-name {lab_name!r} is a synthetic style's name; choose another")
    metrics: dict[str, Any] = (
        {}
        if only_folder
        else evaluate_model(
            model,
            images_per_site=images,
            verdict_images_per_site=verdict_images,
            sites=site_list,
            truth_boxes=truth_boxes,
            model_boxes=model_boxes,
            threads=threads,
        )
    )
    if folder is not None:
        with _progress_bar(_count_hint(folder), progress) as bar:
            lab = evaluate_folder(
                model, folder, folder_format, folder_images, folder_boxes, model_boxes, threads,
                progress=_advance(bar, f"scoring {lab_name}"),
            )  # fmt: skip
        metrics = with_site(metrics, lab_name, lab)
    args = sys.argv[sys.argv.index("evaluate") + 1 :] if "evaluate" in sys.argv else []
    metrics["command"] = "medcloud vision evaluate " + " ".join(shlex.quote(a) for a in args)
    target.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": {"name": name, "version": version, "path": str(model), "card_written": write}, **metrics}
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if write:
        write_model_card(model, name, version, training_record(model), metrics)
    head = metrics.get("headline", {})
    summary = {
        "worst_unseen_site": head.get("worst_unseen_site"),
        "worst_unseen_map50": head.get("worst_unseen_map50"),
        "worst_unseen_verdict_accuracy": head.get("worst_unseen_verdict_accuracy"),
        "robustness_warning": metrics.get("robustness_warning"),
        "seen_mean_map50": head.get("seen_mean_map50"),
        "per_site": {
            k: {
                "seen_in_training": v["seen_in_training"],
                "map50": v["map50"],
                "verdict_accuracy": v["verdict_accuracy"],
            }
            for k, v in metrics["per_site"].items()
        },
        "written": str(target),
        "card_written": str(model / "card.json") if write else None,
    }
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))


@app.command("models")
def models_command(
    data: Path | None = typer.Option(None, "--data", help="Hub data dir (default: packaged only)."),
) -> None:
    """List the model registry."""
    from medcloud.vision.registry import list_models

    for m in list_models(data):
        summary = m.summary()
        head = summary.get("headline") or {}
        worst = (
            f"  worst-unseen {head.get('worst_unseen_site')} mAP50={head.get('worst_unseen_map50')}"
            if head.get("worst_unseen_site")
            else ""
        )
        flag = "  ROBUSTNESS WARNING" if summary.get("robustness_warning") else ""
        seen_map = m.card.get("metrics", {}).get("map50")
        typer.echo(
            f"{m.name}/{m.version}  sha256={m.card.get('sha256', '')[:12]}{worst}"
            f"  seen-mAP50={seen_map}  synthetic={m.card.get('synthetic')}{flag}  {m.path}"
        )


@app.command("register")
def register_command(
    model: Path = typer.Option(..., "--model", help="Evaluated model folder (with card.json)."),
    data: Path = typer.Option(..., "--data", help="Hub data dir."),
    name: str = typer.Option("gram-stain"),
    version: str = typer.Option(..., help="Immutable version string."),
) -> None:
    """Copy an evaluated model into `<data>/models/<name>/<version>`."""
    from medcloud.vision.registry import register

    m = register(model, data, name, version)
    typer.echo(f"registered {m.name}/{m.version} at {m.path}")


@app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", help="Folder for PNG images and annotation files."),
    count: int = typer.Option(20),
    site: str = typer.Option("site-a", help="Style: see `medcloud vision sites`."),
    size: int = typer.Option(640),
    seed: int = typer.Option(500_000_000, help="First seed (training uses seeds below 10,000,000)."),
    formats: str = typer.Option("vott,coco,yolo", help="Annotation formats to write."),
    boxes: str = typer.Option("group", "--boxes", help="'group' (one box per organism group) or 'cell'."),
) -> None:
    """Write SYNTHETIC smear PNGs with VoTT / COCO / YOLO annotations."""
    import inspect
    import json

    from medcloud.errors import InvalidInput
    from medcloud.vision.annotations import AnnotatedImage, to_coco, to_vott, to_yolo
    from medcloud.vision.labels import LABEL_CODES
    from medcloud.vision.synth import SITES, render_smear, save_png

    if site not in SITES:
        raise InvalidInput(f"unknown site {site!r}; see `medcloud vision sites`")
    if boxes not in ("group", "cell"):
        raise InvalidInput(f"--boxes must be 'group' or 'cell', not {boxes!r}")
    per_cell: dict[str, Any] = {"boxes": boxes} if boxes != "group" else {}
    if per_cell and "boxes" not in inspect.signature(render_smear).parameters:
        raise InvalidInput("this generator draws one box per organism group only")
    out.mkdir(parents=True, exist_ok=True)
    anns = []
    for i in range(count):
        s = render_smear(seed + i, site, (size, size), size / 640, **per_cell)
        name = f"synthetic-{site}-{seed + i}.png"
        save_png(s, str(out / name))
        anns.append(
            AnnotatedImage(
                name,
                size,
                size,
                [tuple(map(float, b)) for b in s.boxes],  # type: ignore[misc]
                [LABEL_CODES[int(k)] for k in s.labels],
                synthetic=True,
                convention=boxes,
            )
        )
    wanted = {f.strip() for f in formats.split(",")}
    if "vott" in wanted:
        (out / "vott-export.json").write_text(json.dumps(to_vott(anns), indent=1))
    if "coco" in wanted:
        (out / "coco.json").write_text(json.dumps(to_coco(anns), indent=1, ensure_ascii=False))
    if "yolo" in wanted:
        to_yolo(anns, out / "yolo")
    typer.echo(f"wrote {count} SYNTHETIC smears to {out}")


annotations_app = typer.Typer(no_args_is_help=True)
app.add_typer(annotations_app, name="annotations", help="Check an annotation folder (VoTT, COCO, YOLO) or convert it.")


def _progress_bar(total_hint: int, show: bool) -> Any:
    """A Rich progress bar on stderr for folders of 20 images or more (none when `show` is False)."""
    from contextlib import nullcontext

    if not show or total_hint < 20:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _advance(bar: Any, description: str) -> Any:
    if bar is None:
        return None
    task = bar.add_task(description, total=None)

    def step(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return step


def _count_hint(folder: Path) -> int:
    base = folder if folder.is_dir() else folder.parent
    return sum(1 for _ in base.iterdir()) if base.is_dir() else 0


def _print_report(report: Any, as_json: bool, err: bool = False) -> None:
    import json

    doc = report.as_json()
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False), err=err)
        return
    conv = doc["box_convention"]
    conv_text = (
        f"box convention {conv['used']} ({'declared' if conv['declared'] else 'assumed'}; boxes look "
        f"{conv['looks_like']}, {conv['touching_share']:.0%} touching)"
        if conv
        else "box convention unknown"
    )
    typer.echo(
        f"{doc['annotations']}: {doc['format']}, {doc['images']} images, {doc['boxes']} boxes, {conv_text}", err=err
    )
    for p in doc["problems"]:
        typer.echo(f"  {p['severity']:7} {p['file']}: [{p['code']}] {p['message']}", err=err)
    if doc["labels"]:
        typer.echo("labels: " + ", ".join(f"{k} {v}" for k, v in doc["labels"].items()), err=err)
    typer.echo(f"{doc['errors']} error(s), {doc['warnings']} warning(s)", err=err)


@annotations_app.command("check")
def annotations_check_command(
    folder: Path = typer.Argument(..., help="Annotation folder (or one VoTT/COCO file) with its images."),
    fmt: str | None = typer.Option(None, "--from", "--format", help="vott, coco or yolo (default: detect)."),
    images: Path | None = typer.Option(None, "--images", help="Folder the image names are relative to."),
    from_boxes: str | None = typer.Option(None, "--from-boxes", help=_FROM_BOXES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Warnings count as errors for the exit code."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on long folders."),
) -> None:
    """Report per-file problems of an annotation folder; exit code 1 when there are errors.

    Unknown labels, boxes outside the image or of zero size, missing or unreadable images, image size
    mismatches, duplicate boxes, unsafe image names (absolute, '..'), malformed files, and the box
    convention (one box per organism group, VoTT-style, or one per cell), with box counts per label.
    """
    from medcloud.vision.annotation_folder import check_folder, locate

    source, pre = locate(folder, fmt, images)
    if source is None:
        from medcloud.vision.annotation_folder import CheckReport

        report = CheckReport(None, pre)
    else:
        with _progress_bar(_count_hint(folder), progress) as bar:
            report = check_folder(source, from_boxes=from_boxes, pre=pre, progress=_advance(bar, "checking"))
    _print_report(report, as_json)
    if report.errors or (strict and report.warnings):
        raise typer.Exit(1)


@annotations_app.command("convert")
def annotations_convert_command(
    src: Path = typer.Argument(..., help="Annotation folder (or one VoTT/COCO file) with its images."),
    dst: Path = typer.Argument(..., help="New folder to write (must not exist)."),
    fmt: str | None = typer.Option(None, "--from", help="Source format: vott, coco or yolo (default: detect)."),
    to: str = typer.Option(..., "--to", help="Target format: vott, coco or yolo."),
    boxes: str | None = typer.Option(
        None, "--boxes", help="Target box convention: 'group' (per-cell boxes are merged) or 'cell'."
    ),
    from_boxes: str | None = typer.Option(None, "--from-boxes", help=_FROM_BOXES_HELP),
    images: Path | None = typer.Option(None, "--images", help="Folder the image names are relative to."),
    clip: bool = typer.Option(False, "--clip", help="Clip boxes that reach outside the image to its edge."),
    copy_images: bool = typer.Option(True, "--copy-images/--no-images", help="Copy the images into DST."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on long folders."),
) -> None:
    """Convert an annotation folder to VoTT, COCO or YOLO (and group/cell boxes) in a new folder.

    The source is checked first; with any error nothing is written (exit code 1). The result is built in
    a hidden folder beside DST and renamed into place when complete.
    """
    import json

    from medcloud.vision.annotation_folder import convert_folder, locate

    source, pre = locate(src, fmt, images)
    if source is None:
        from medcloud.vision.annotation_folder import CheckReport

        _print_report(CheckReport(None, pre), False, err=True)
        raise typer.Exit(1)
    with _progress_bar(_count_hint(src), progress) as bar:
        report, summary = convert_folder(
            source,
            dst,
            to,
            boxes=boxes,
            from_boxes=from_boxes,
            clip=clip,
            copy_images=copy_images,
            pre=pre,
            progress=_advance(bar, "copying images"),
        )
    if not summary:
        _print_report(report, False, err=True)
        typer.echo(f"not converted: {report.errors} error(s) in {src}; nothing written", err=True)
        raise typer.Exit(1)
    summary["warnings"] = [p.as_json() for p in report.problems]
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))


def serve_model_command(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    model: Path | None = typer.Option(None, "--model", help="Model folder; default: newest registered/packaged."),
    data: Path | None = typer.Option(None, "--data", help="Data dir whose models/ registry to use."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File holding the token or 'sha256:<hex>'; else MEDCLOUD_SERVE_TOKEN_SHA256."
    ),
    threads: int = typer.Option(2, help="onnxruntime intra-op threads."),
    name: str = typer.Option("gram-stain", "--name", help="Registered model to serve (with --data), e.g. fl-shapes."),
    version: str = typer.Option("", "--version", help="Its version (default: the newest)."),
) -> None:
    """Serve a model with onnxruntime only (no torch): the detector, or a federated image classifier."""
    from medcloud.vision.serve import run

    run(model, data, host, port, token_file, threads, name=name, version=version or None)


if __name__ == "__main__":
    app()
