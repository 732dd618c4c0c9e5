"""`medcloud backup [list | verify | export | mark-offline | status]` and `medcloud restore`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

backup_app = typer.Typer(
    invoke_without_command=True,
    help="Back the hub up in generations (catalog, blobs, secrets); export one to offline media.",
)
DataOpt = typer.Option(None, "--data", help="Hub data folder (default: $MEDCLOUD_DATA_DIR or ./medcloud-data).")
ToOpt = typer.Option(None, "--to", help="Backup folder (default: backup_dir / $MEDCLOUD_BACKUP_DIR).")


def _settings(data: Path | None, to: Path | None) -> Any:
    from medcloud.config import load_settings

    return load_settings(data_dir=data, backup_dir=to)


@backup_app.callback()
def backup_command(ctx: typer.Context, data: Path | None = DataOpt, to: Path | None = ToOpt) -> None:
    """Write one generation (or finish an interrupted one); keep the newest `backup_generations`."""
    ctx.obj = (data, to)
    if ctx.invoked_subcommand is not None:
        return
    from medcloud.security.backup import run_backup

    gen = run_backup(_settings(data, to), log=lambda line: typer.echo(line, err=True))
    typer.echo(str(gen))


def _ctx_settings(ctx: typer.Context) -> Any:
    data, to = ctx.obj or (None, None)
    return _settings(data, to)


@backup_app.command("list")
def backup_list(ctx: typer.Context) -> None:
    """Complete generations, oldest first, with their size and offline marker."""
    from medcloud.security.backup import OFFLINE, complete_generations

    for g in complete_generations(_ctx_settings(ctx)):
        files = g.manifest["files"]
        typer.echo(
            json.dumps(
                {
                    "generation": g.name,
                    "created_at": g.manifest["created_at"],
                    "files": len(files),
                    "bytes": sum(f["size"] for f in files.values()),
                    "offline": (g.path / OFFLINE).is_file(),
                }
            )
        )


@backup_app.command("verify")
def backup_verify(ctx: typer.Context, generation: str | None = typer.Argument(None)) -> None:
    """Re-read a generation (default: the newest) against its manifest's SHA-256s."""
    from medcloud.security.backup import _find, verify_generation

    gen = _find(_ctx_settings(ctx), generation)
    manifest = verify_generation(gen)
    typer.echo(f"{gen.name}: {len(manifest['files'])} files match their SHA-256", err=True)


@backup_app.command("export")
def backup_export(
    ctx: typer.Context,
    dest: Path = typer.Argument(..., help="Mounted offline medium (removable disk, tape staging folder)."),
    generation: str | None = typer.Option(None, "--generation", help="Default: the newest."),
    label: str = typer.Option(..., "--label", help="The medium's label, for the record."),
) -> None:
    """Copy a generation to offline media, verify the copy, and mark it as the offline generation."""
    from medcloud.security.backup import export_offline

    out = export_offline(_ctx_settings(ctx), generation, dest=dest, label=label)
    typer.echo(str(out))


@backup_app.command("mark-offline")
def backup_mark_offline(
    ctx: typer.Context,
    generation: str | None = typer.Argument(None),
    label: str = typer.Option(..., "--label", help="The medium's label."),
    where: str = typer.Option("", "--where", help="Where the medium is kept."),
) -> None:
    """Record that a generation was copied offline by other means (tape robot, vendor service)."""
    from medcloud.security.backup import mark_offline

    typer.echo(str(mark_offline(_ctx_settings(ctx), generation, label=label, where=where)))


@backup_app.command("status")
def backup_status_command(ctx: typer.Context) -> None:
    """Generations present, newest age, offline copy (JSON; the self-check's evidence)."""
    from medcloud.security.backup import backup_status

    typer.echo(json.dumps(backup_status(_ctx_settings(ctx)), indent=2))


def restore_command(
    target: Path = typer.Option(..., "--data", help="New, empty hub data folder to restore into."),
    generation: str | None = typer.Option(None, "--generation", help="Default: the newest complete one."),
    source: Path | None = typer.Option(None, "--from", help="Backup folder (default: backup_dir)."),
) -> None:
    """Restore a generation into a new data folder, after checking every file's SHA-256."""
    from medcloud.security.backup import restore_generation

    settings = _settings(target, source)
    gen = restore_generation(settings, generation, target=target)
    typer.echo(f"restored {gen.name} into {target}", err=True)
