"""`medcloud vision ...` and `medcloud serve-model` (placeholder until vision lands)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def serve_model_command() -> None:
    """Serve the detector with onnxruntime only (no torch)."""
    raise NotImplementedError
