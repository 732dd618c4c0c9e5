"""`medcloud audit ...`: verify the hash chain and read events from the hub's catalog."""

from __future__ import annotations

import json
from pathlib import Path

import typer

audit_app = typer.Typer(no_args_is_help=True)


@audit_app.command("verify")
def verify(data: Path | None = typer.Option(None, "--data", help="Hub data folder.")) -> None:
    """Check the audit chain end to end; name the first altered event. Exit 7 when broken."""
    from medcloud.config import load_settings
    from medcloud.errors import IntegrityError
    from medcloud.store import Catalog

    settings = load_settings(data_dir=data)
    cat = Catalog.from_settings(settings, create_key=False)
    try:
        report = cat.audit.verify()
    finally:
        cat.dispose()
    if not report.ok:
        raise IntegrityError(f"audit chain broken at event {report.first_bad_seq}: {report.reason}")
    sealed = f", sealed at {report.sealed_seq}" if report.sealed_seq is not None else ", not sealed (no key yet)"
    typer.echo(f"audit chain intact: {report.checked} events, head {report.head_hash}{sealed}")


@audit_app.command("tail")
def tail(
    data: Path | None = typer.Option(None, "--data", help="Hub data folder."),
    n: int = typer.Option(20, "-n", min=1, help="How many recent events."),
) -> None:
    """Print the most recent events as JSON lines."""
    from medcloud.config import load_settings
    from medcloud.store import Catalog

    settings = load_settings(data_dir=data)
    cat = Catalog.from_settings(settings, create_key=False)
    try:
        start = max(0, cat.audit.head_seq() - n)
        for row in cat.audit.page(after_seq=start, limit=n):
            typer.echo(json.dumps(row, ensure_ascii=False))
    finally:
        cat.dispose()
