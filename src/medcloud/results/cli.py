"""`medcloud results push`: send boxes (JSON) or masks (PNG files) to a hub, stored there as SR or SEG."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import typer

from medcloud.errors import InvalidInput

app = typer.Typer(no_args_is_help=True, help="AI results back as DICOM SR (boxes) or SEG (masks).")


@app.command("push")
def push(
    source: list[str] = typer.Option(..., "--source", "-s", help="Source SOP Instance UID (repeat for several)."),
    algorithm: str = typer.Option(..., "--algorithm", help="Algorithm name, e.g. gram-detector"),
    version: str = typer.Option(..., "--algorithm-version", help="Algorithm version, e.g. 1.2.0"),
    boxes: Path | None = typer.Option(None, "--boxes", help='JSON file: [{"x","y","w","h","label","score"?}]'),
    mask: list[Path] = typer.Option([], "--mask", help="PNG mask, one per --source in the same order."),
    label: str = typer.Option("", "--label", help="The segment's label (masks)."),
    fractional: bool = typer.Option(False, "--fractional", help="Masks are 0-255 probabilities."),
    description: str = typer.Option("", "--description", help="Series description of the result."),
    hub: str = typer.Option("", "--hub", envvar="MEDCLOUD_HUB_URL", help="Hub base URL."),
    token: str = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN", help="Token (prefer --token-file)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the token."),
) -> None:
    """Store boxes as a DICOM SR, or masks as a DICOM SEG, in the source study; prints the new UIDs."""
    from medcloud.results.client import ResultsClient

    if (boxes is None) == (not mask):
        raise InvalidInput("give --boxes FILE or --mask PNG (one per --source), not both or neither")
    body: dict[str, Any] = {"sources": source, "algorithm": algorithm, "algorithm_version": version,
                            "series_description": description}  # fmt: skip
    if boxes is not None:
        try:
            items = json.loads(boxes.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{boxes}: not a JSON list of boxes ({exc})") from None
        if not isinstance(items, list):
            raise InvalidInput(f"{boxes}: not a JSON list of boxes")
        body.update(kind="boxes", boxes=items)
    else:
        if len(mask) != len(source):
            raise InvalidInput(f"{len(mask)} --mask file(s) for {len(source)} --source(s)")
        body.update(kind="mask", label=label, fractional=fractional,
                    masks=[{"sop_uid": uid, "png": base64.b64encode(p.read_bytes()).decode()}
                           for uid, p in zip(source, mask, strict=True)])  # fmt: skip
    if token_file is not None:
        token = token_file.read_text().strip()
    client = ResultsClient(hub, token)
    try:
        typer.echo(json.dumps(client.push(body), indent=2))
    finally:
        client.close()
