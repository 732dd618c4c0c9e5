"""`medcloud deid` (placeholder until the engine lands)."""

from __future__ import annotations

from pathlib import Path

import typer


def deid_command(
    src: Path = typer.Argument(..., help="File or folder to de-identify."),
    dst: Path = typer.Argument(..., help="Output file or folder."),
    key_file: Path = typer.Option(..., "--key-file", help="Site secret key file."),
) -> None:
    """De-identify DICOM and image files."""
    raise NotImplementedError
