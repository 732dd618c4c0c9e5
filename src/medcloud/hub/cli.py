"""`medcloud hub ...`: serve the hub and administer it from the machine it runs on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)
token_app = typer.Typer(no_args_is_help=True, help="Issue, list and revoke bearer tokens.")
site_app = typer.Typer(no_args_is_help=True, help="Register sites and set collection targets.")
app.add_typer(token_app, name="token")
app.add_typer(site_app, name="site")
society_app = typer.Typer(no_args_is_help=True, help="Societies (contributing organisations) and their targets.")
app.add_typer(society_app, name="society")

DataOpt = typer.Option(None, "--data", help="Hub data folder (default: $MEDCLOUD_DATA_DIR or ./medcloud-data).")


def _settings(data: Path | None):  # type: ignore[no-untyped-def]
    from medcloud.config import load_settings

    return load_settings(data_dir=data)


def _catalog(data: Path | None):  # type: ignore[no-untyped-def]
    from medcloud.store import Catalog

    settings = _settings(data)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cat = Catalog.from_settings(settings)
    cat.migrate()
    return cat


@app.command("serve")
def serve(
    data: Path | None = DataOpt,
    host: str = typer.Option("127.0.0.1", help="Address to bind (keep loopback behind a TLS proxy)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
    ssl_certfile: Path | None = typer.Option(None, help="Serve HTTPS with this certificate (PEM)."),
    ssl_keyfile: Path | None = typer.Option(None, help="Private key for --ssl-certfile (PEM)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Run the hub (catalog migrated on start)."""
    import uvicorn

    from medcloud.hub.server import uvicorn_options

    settings = _settings(data)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEDCLOUD_DATA_DIR"] = str(settings.data_dir.resolve())
    # Migrate once here so several workers do not race to create the schema.
    _catalog(data).dispose()
    typer.echo(
        f"medcloud hub on {'https' if ssl_certfile else 'http'}://{host}:{port} data={settings.data_dir}", err=True
    )
    uvicorn.run(
        "medcloud.hub.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        access_log=False,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )


@app.command("check-blobs")
def check_blobs(data: Path | None = DataOpt) -> None:
    """Re-read every stored blob against its SHA-256 and check that every catalog row has its bytes.

    Read-only; safe while the hub runs. Exit code 7 if anything is damaged or missing.
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from medcloud.errors import IntegrityError
    from medcloud.security.envelope import store_envelope
    from medcloud.store.blobs import LocalBlobStore

    settings = _settings(data)
    catalog = _catalog(data)
    store = LocalBlobStore(
        settings.resolved_blob_dir, pack_below=settings.pack_below, envelope=store_envelope(settings)
    )
    console = Console(stderr=True)
    try:
        total = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress("[progress.description]{task.description}", *columns, console=console) as bar:
            task = bar.add_task("checking blobs", total=total)
            report = store.check(lambda n: bar.advance(task, n))
        refs = catalog.query.blob_refs()
        missing = [f"{res}: blob {sha} is not stored" for sha, res in refs if not store.exists(sha)]
    finally:
        store.close()
        catalog.dispose()
    summary = {
        "blobs_ok": report.ok,
        "pack_records": report.pack_records,
        "erased": report.erased,
        "damaged": report.bad,
        "missing": missing,
        "torn_tails": report.torn_tails,
    }
    typer.echo(json.dumps(summary, indent=2))
    if report.bad or missing:
        raise IntegrityError(f"{len(report.bad)} damaged and {len(missing)} missing blob(s); see the list above")


@app.command("new-key")
def new_key(out: Path = typer.Argument(..., help="Key file to create (refused if it exists).")) -> None:
    """Write a fresh key-encryption key (256 bits, hex) to a new file readable by its owner only.

    Point `encryption_key_file` (MEDCLOUD_ENCRYPTION_KEY_FILE) at it to encrypt the hub's data at rest;
    keep it off the data volume and in the hospital's key custody (a lost KEK is lost data).
    """
    from medcloud.errors import Conflict
    from medcloud.security.envelope import new_key_text

    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"{out} exists; a key file is never overwritten") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key_text() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    typer.echo(f"wrote a new key-encryption key to {out}", err=True)


@app.command("rotate-key")
def rotate_key(
    data: Path | None = DataOpt,
    keep_old: bool = typer.Option(False, "--keep-old", help="Key file: leave the old key(s) in the file afterwards."),
) -> None:
    """Rotate the key-encryption key: re-wrap every data key (the data itself is not re-encrypted).

    Safe while the hub runs, and resumable: a rotation killed half-way continues when run again. With
    `encryption_key_file`, a new key is put first in the file (old keys stay for reading), every data key
    is re-wrapped, then the old keys are removed from the file. With `encryption_key_env`, put the new key
    first in the variable (comma separated, old ones after), restart the hub, run this, then drop the old
    ones. With `encryption_kms_command`, the KMS's current key is the new one.
    """
    from rich.console import Console

    from medcloud.errors import ConfigError
    from medcloud.security.envelope import LocalKeyring, load_kek, rotate_key_file, store_envelope

    settings = _settings(data)
    kek = load_kek(settings)
    if kek is None:
        raise ConfigError("encryption at rest is off: set encryption_key_file, encryption_key_env or "
                          "encryption_kms_command first")  # fmt: skip
    env = store_envelope(settings)
    console = Console(stderr=True)
    try:
        if settings.encryption_key_file is not None and isinstance(env.kek, LocalKeyring):
            report = rotate_key_file(env, settings.encryption_key_file, retire=not keep_old)
        else:
            report = env.rewrap()
    finally:
        env.close()
    console.print(f"re-wrapped {report.rewrapped} data key(s) under {report.current}")
    typer.echo(json.dumps({"current_kek_id": report.current, "rewrapped": report.rewrapped,
                           "remaining": report.remaining, "retired": report.retired}, indent=2))  # fmt: skip


@app.command("encryption-status")
def encryption_status(data: Path | None = DataOpt) -> None:
    """Encryption at rest, as evidence: on or off, KEK source, data keys per KEK, share of blobs encrypted."""
    from medcloud.security.envelope import at_rest_status

    status = at_rest_status(_settings(data))
    typer.echo(json.dumps(status, indent=2))
    if not status["ok"]:
        sys.exit(1)  # not typer.Exit: the top-level CLI runs click with standalone_mode=False


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., help="site, researcher, clinician, auditor or admin."),
    site: str | None = typer.Option(None, help="Site name (site tokens)."),
    project: list[str] = typer.Option([], "--project", help="Project granted (repeatable)."),
    expires: str = typer.Option("365d", help="Lifetime, e.g. 90d, 12h, 30m, 2w, or never (0 is refused)."),
    label: str = typer.Option("", help="Free text to recognise the token by."),
    data: Path | None = DataOpt,
) -> None:
    """Issue a token. The token is printed once on stdout; the hub keeps only its hash."""
    from medcloud.security.tokens import issue_token, parse_duration

    cat = _catalog(data)
    try:
        issued = issue_token(
            cat,
            role=role,
            site=site,
            projects=project,
            label=label,
            expires_in=parse_duration(expires),
            issued_by=f"cli:{os.environ.get('USER', 'local')}",
        )
    except ValueError:
        from medcloud.errors import InvalidInput

        raise InvalidInput(f"unknown role {role!r}: use site, researcher, clinician, auditor or admin") from None
    finally:
        cat.dispose()
    p = issued.principal
    typer.echo(issued.token)
    exp = p.expires_at.isoformat() if p.expires_at else "never"
    typer.echo(
        f"token {p.token_id}: role={p.role.value} site={p.site or '-'} projects={','.join(sorted(p.projects)) or '-'} "
        f"expires={exp} (store it now: it is not shown again)",
        err=True,
    )


@token_app.command("list")
def token_list(data: Path | None = DataOpt) -> None:
    """List tokens (ids, roles, grants; never secrets)."""
    cat = _catalog(data)
    try:
        for row in cat.tokens.list_all():
            typer.echo(json.dumps(row, default=str))
    finally:
        cat.dispose()


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="Token id (the part after mct_)."), data: Path | None = DataOpt
) -> None:
    """Revoke a token at once."""
    from medcloud.errors import NotFound
    from medcloud.security.tokens import revoke_token

    cat = _catalog(data)
    try:
        if not revoke_token(cat, None, token_id, by=f"cli:{os.environ.get('USER', 'local')}"):
            raise NotFound(f"no active token {token_id}")
    finally:
        cat.dispose()
    typer.echo(f"revoked {token_id}", err=True)


@site_app.command("set")
def site_set(
    name: str = typer.Argument(..., help="Site name, as in its tokens."),
    display_name: str | None = typer.Option(None, help="Human-readable name."),
    target_cases: int | None = typer.Option(None, min=0, help="Target number of cases (patients)."),
    target_images: int | None = typer.Option(None, min=0, help="Target number of images."),
    society: str | None = typer.Option(None, help='The registered society it belongs to ("" for none).'),
    data: Path | None = DataOpt,
) -> None:
    """Register a site or change its collection targets and society."""
    from medcloud.security.tokens import validate_name

    validate_name("site", name)
    cat = _catalog(data)
    try:
        with cat.write() as conn:
            cat.sites.upsert(
                conn,
                name,
                display_name=display_name,
                target_cases=target_cases,
                target_images=target_images,
                society=society,
            )
            cat.audit.append(
                conn,
                subject=f"cli:{os.environ.get('USER', 'local')}",
                action="site.update",
                resource=f"site/{name}",
                outcome="ok",
                detail={"target_cases": target_cases, "target_images": target_images, "society": society},
            )
    finally:
        cat.dispose()


@site_app.command("list")
def site_list(data: Path | None = DataOpt) -> None:
    """Show collection progress per site."""
    from rich.console import Console
    from rich.table import Table

    cat = _catalog(data)
    try:
        rows = cat.sites.progress(None)
    finally:
        cat.dispose()
    table = Table("site", "cases", "target", "images", "target")
    for r in rows:
        table.add_row(
            r["site"], str(r["cases"]), str(r["target_cases"] or "-"), str(r["images"]), str(r["target_images"] or "-")
        )
    Console().print(table)


@society_app.command("set")
def society_set(
    name: str = typer.Argument(..., help="Society name (letters, digits, '.', '_', '-')."),
    display_name: str | None = typer.Option(None, help="Name shown in English."),
    display_name_ja: str | None = typer.Option(None, help="Name shown in Japanese."),
    target_cases: int | None = typer.Option(None, min=0, help="Target number of cases (patients)."),
    target_images: int | None = typer.Option(None, min=0, help="Target number of images."),
    data: Path | None = DataOpt,
) -> None:
    """Register a society or change its names and targets (add sites with `site set --society`)."""
    from medcloud.security.tokens import validate_name

    validate_name("society", name)
    fields = {
        "display_name": display_name,
        "display_name_ja": display_name_ja,
        "target_cases": target_cases,
        "target_images": target_images,
    }
    cat = _catalog(data)
    try:
        with cat.write() as conn:
            created = cat.societies.upsert(conn, name, **fields)
            cat.audit.append(
                conn,
                subject=f"cli:{os.environ.get('USER', 'local')}",
                action="society.update",
                resource=f"society/{name}",
                outcome="created" if created else "ok",
                detail=fields,
            )
    finally:
        cat.dispose()


@society_app.command("load")
def society_load(
    table: Path | None = typer.Argument(None, help="A JSON target table (default: the shipped EXAMPLE table)."),
    data: Path | None = DataOpt,
) -> None:
    """Register societies, their sites and all their targets from a JSON table, in one transaction."""
    from medcloud.errors import InvalidInput
    from medcloud.store.societies import example_targets

    if table is None:
        content = example_targets()
    else:
        try:
            content = json.loads(table.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"cannot read the target table {table}: {exc}") from None
    cat = _catalog(data)
    try:
        with cat.write() as conn:
            counts = cat.societies.load(conn, content)
            cat.audit.append(
                conn,
                subject=f"cli:{os.environ.get('USER', 'local')}",
                action="society.load",
                resource="society/*",
                outcome="ok",
                detail={"table": str(table) if table else "example", **counts},
            )
    finally:
        cat.dispose()
    typer.echo(json.dumps(counts))


@society_app.command("list")
def society_list(data: Path | None = DataOpt) -> None:
    """Show collection progress per society and its sites."""
    from rich.console import Console
    from rich.table import Table

    cat = _catalog(data)
    try:
        progress = cat.societies.progress(None)
    finally:
        cat.dispose()
    table = Table("society / site", "cases", "target", "images", "target")
    for soc in progress["societies"]:
        table.add_row(
            f"[bold]{soc['society'] or '(no society)'}[/]",
            str(soc["cases"]),
            str(soc["target_cases"] or "-"),
            str(soc["images"]),
            str(soc["target_images"] or "-"),
        )
        for r in soc["sites"]:
            table.add_row(
                f"  {r['site']}", str(r["cases"]), str(r["target_cases"] or "-"), str(r["images"]),
                str(r["target_images"] or "-"),
            )  # fmt: skip
    Console().print(table)
