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
ca_app = typer.Typer(no_args_is_help=True, help="A small CA for mutual TLS between gateways and hub.")
app.add_typer(ca_app, name="ca")

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
    ssl_certfile: Path | None = typer.Option(None, help="Serve HTTPS with this certificate (PEM; tls_cert_file)."),
    ssl_keyfile: Path | None = typer.Option(None, help="Private key for --ssl-certfile (PEM; tls_key_file)."),
    client_ca: Path | None = typer.Option(
        None, "--client-ca", help="Require client certificates from this CA (mutual TLS; tls_client_ca_file)."
    ),
    crl: Path | None = typer.Option(None, "--crl", help="Revocation list of the client CA (tls_crl_file)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Run the hub (catalog migrated on start)."""
    import uvicorn

    from medcloud.config import load_settings
    from medcloud.hub.server import uvicorn_options

    settings = load_settings(
        data_dir=data,
        tls_cert_file=ssl_certfile,
        tls_key_file=ssl_keyfile,
        tls_client_ca_file=client_ca,
        tls_crl_file=crl,
    )
    for name, value in (
        ("TLS_CERT_FILE", settings.tls_cert_file),
        ("TLS_KEY_FILE", settings.tls_key_file),
        ("TLS_CLIENT_CA_FILE", settings.tls_client_ca_file),
        ("TLS_CRL_FILE", settings.tls_crl_file),
    ):
        if value is not None:  # the app (site binding) reads its settings again in each worker
            os.environ[f"MEDCLOUD_{name}"] = str(Path(value).resolve())
    options = uvicorn_options(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEDCLOUD_DATA_DIR"] = str(settings.data_dir.resolve())
    # Encryption at rest on and the catalog still in clear: convert it now, before any worker opens it.
    _encrypt_catalog_at_start(settings)
    # Migrate once here so several workers do not race to create the schema.
    _catalog(data).dispose()
    scheme = "https" if settings.tls_cert_file else "http"
    mutual = " (mutual TLS)" if settings.tls_client_ca_file else ""
    typer.echo(f"medcloud hub on {scheme}://{host}:{port}{mutual} data={settings.data_dir}", err=True)
    uvicorn.run(
        "medcloud.hub.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        **options,
    )


def _encrypt_catalog_at_start(settings) -> None:  # type: ignore[no-untyped-def]
    from medcloud.security.catalog_cipher import catalog_path, encrypt_catalog, file_state
    from medcloud.security.envelope import load_kek

    path = catalog_path(settings.resolved_database_url)
    if path is None or load_kek(settings) is None or file_state(path) != "plain":
        return
    typer.echo(f"encryption at rest is on and the catalog {path} is in clear: encrypting it (SQLCipher)", err=True)
    done = encrypt_catalog(settings, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"the catalog is encrypted ({done['rows']} rows kept)", err=True)


@app.command("encrypt-catalog")
def encrypt_catalog_cmd(data: Path | None = DataOpt) -> None:
    """Encrypt a plain SQLite catalog in place with SQLCipher (encryption at rest must be on).

    Stop the hub first (refused while another process has the catalog open). The old file stays until the
    encrypted copy is complete, checked row for row and fsynced; a run killed half-way is run again. The
    page key is a data key wrapped by the KEK (`rotate-key` re-wraps it). A no-op on an encrypted catalog.
    """
    from medcloud.security.catalog_cipher import encrypt_catalog

    settings = _settings(data)
    done = encrypt_catalog(settings, log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps(done, indent=2))


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


CaDirOpt = typer.Option(..., "--ca-dir", help="The CA's folder (keep it off the hub once certificates are issued).")


@ca_app.command("init")
def ca_init(
    ca_dir: Path = CaDirOpt,
    name: str = typer.Option("medcloud hub CA", "--name", help="The CA's common name."),
    key_type: str = typer.Option("ec", "--key-type", help="ec (P-256) or rsa (3072 bits)."),
    days: int = typer.Option(3650, "--days", min=1, help="Validity of the CA certificate."),
) -> None:
    """Create the CA: key (0600), certificate, empty revocation list."""
    from medcloud.security.ca import init_ca

    path = init_ca(ca_dir, name=name, key_type=key_type, days=days)  # type: ignore[arg-type]
    typer.echo(f"CA certificate {path}; revocation list {ca_dir / 'crl.pem'}", err=True)


@ca_app.command("issue")
def ca_issue(
    name: str = typer.Argument(..., help="Site id (--kind site), host label (server) or operator name."),
    ca_dir: Path = CaDirOpt,
    kind: str = typer.Option("site", "--kind", help="site (a gateway), server (the hub) or operator."),
    host: list[str] = typer.Option([], "--host", help="Server certificates: DNS name or IP (repeatable)."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for NAME.crt and NAME.key."),
    key_type: str = typer.Option("ec", "--key-type", help="ec (P-256) or rsa (3072 bits)."),
    days: int = typer.Option(397, "--days", min=1, help="Validity in days."),
) -> None:
    """Issue a certificate and key (the key is written 0600; hand it to its site out of band)."""
    from typing import cast

    from medcloud.errors import InvalidInput
    from medcloud.security.ca import KeyType, Kind, issue_certificate

    if kind not in ("site", "server", "operator"):
        raise InvalidInput(f"--kind {kind!r}: use site, server or operator")
    if kind == "site":
        from medcloud.security.tokens import validate_name

        validate_name("site", name)
    crt, key, row = issue_certificate(
        ca_dir, cast(Kind, kind), name, out, hosts=host, key_type=cast(KeyType, key_type), days=days
    )
    typer.echo(json.dumps({**row.as_dict(), "certificate": str(crt), "key": str(key)}))


@ca_app.command("revoke")
def ca_revoke(
    who: str = typer.Argument(..., help="Serial (hex) or name: all unrevoked certificates of that name."),
    ca_dir: Path = CaDirOpt,
    reason: str = typer.Option("", "--reason", help="Why (kept in the CA's index)."),
) -> None:
    """Revoke and re-sign the CRL; a hub with `tls_crl_file` refuses the certificate at its next connection."""
    from medcloud.security.ca import revoke_certificate

    for row in revoke_certificate(ca_dir, who, reason):
        typer.echo(json.dumps(row.as_dict()))


@ca_app.command("crl")
def ca_crl(ca_dir: Path = CaDirOpt) -> None:
    """Re-sign the revocation list (it is valid 30 days: run this from cron, e.g. weekly)."""
    from medcloud.security.ca import refresh_crl

    typer.echo(str(refresh_crl(ca_dir)), err=True)


@ca_app.command("list")
def ca_list(ca_dir: Path = CaDirOpt) -> None:
    """Every certificate the CA issued, with expiry and revocation."""
    from medcloud.security.ca import list_certificates

    for row in list_certificates(ca_dir):
        typer.echo(json.dumps(row.as_dict()))


glass_app = typer.Typer(no_args_is_help=True, help="Sealed emergency (break-glass) administrator accounts.")
app.add_typer(glass_app, name="break-glass")


def _operator() -> str:
    return f"cli:{os.environ.get('USER', 'local')}"


@glass_app.command("create")
def glass_create(
    name: str = typer.Argument(..., help="Account name, e.g. night-duty."), data: Path | None = DataOpt
) -> None:
    """Make a sealed account. Its token is printed once: seal it (envelope, safe); it works only after `use`."""
    from medcloud.security import breakglass

    cat = _catalog(data)
    try:
        issued = breakglass.create(cat, name, by=_operator())
    finally:
        cat.dispose()
    typer.echo(issued.token)
    typer.echo(f"break-glass account {name}: sealed (token {issued.principal.token_id}; not shown again)", err=True)


@glass_app.command("use")
def glass_use(
    reason: str = typer.Option(..., "--reason", help="Why the glass is broken (recorded, reviewed later)."),
    minutes: int = typer.Option(60, "--minutes", min=1, help="How long the account stays open."),
    data: Path | None = DataOpt,
) -> None:
    """Open a sealed account for a limited time. The token is read from $MEDCLOUD_BREAK_GLASS_TOKEN or a prompt."""
    from medcloud.security import breakglass

    token = os.environ.get("MEDCLOUD_BREAK_GLASS_TOKEN") or typer.prompt("break-glass token", hide_input=True)
    settings = _settings(data)
    cat = _catalog(data)
    try:
        opened = breakglass.use(
            cat, token, reason=reason, minutes=minutes, by=_operator(), max_minutes=settings.break_glass_max_minutes
        )
    finally:
        cat.dispose()
    typer.echo(f"break-glass account {opened['name']} OPEN until {opened['expires_at']}: every act is audited")


@glass_app.command("close")
def glass_close(name: str = typer.Argument(...), data: Path | None = DataOpt) -> None:
    """Revoke an account for good (make a new sealed one after a use); its use then awaits review."""
    from medcloud.security import breakglass

    cat = _catalog(data)
    try:
        breakglass.close(cat, name, by=_operator())
    finally:
        cat.dispose()
    typer.echo(f"break-glass account {name} closed")


@glass_app.command("review")
def glass_review(
    name: str = typer.Argument(...),
    note: str = typer.Option(..., "--note", help="What was checked in the audit trail of the use."),
    data: Path | None = DataOpt,
) -> None:
    """Record that the acts done during a use were reviewed."""
    from medcloud.security import breakglass

    cat = _catalog(data)
    try:
        breakglass.review(cat, name, note=note, by=_operator())
    finally:
        cat.dispose()
    typer.echo(f"break-glass account {name}: use reviewed")


@glass_app.command("list")
def glass_list(data: Path | None = DataOpt) -> None:
    """Every account with its state, as JSON lines."""
    from medcloud.security import breakglass

    cat = _catalog(data)
    try:
        for a in breakglass.status(cat):
            typer.echo(json.dumps(a, default=str))
    finally:
        cat.dispose()


code_app = typer.Typer(no_args_is_help=True, help="One-time passkey enrolment codes (lost passkey, new device).")
app.add_typer(code_app, name="passkey-code")


@code_app.command("issue")
def code_issue(
    person: str = typer.Argument(..., help="The person's subject at the identity provider."),
    minutes: int | None = typer.Option(
        None, "--minutes", min=1, help="Life (default and most: mfa_enrol_code_seconds)."
    ),
    data: Path | None = DataOpt,
) -> None:
    """Issue a code for one person; printed once (give it to the person in person or by phone).

    The person signs in, redeems it, and registers one passkey; issuing again revokes their earlier codes."""
    from medcloud.security import enrolment_codes

    settings = _settings(data)
    most = settings.mfa_enrol_code_seconds
    cat = _catalog(data)
    try:
        issued = enrolment_codes.issue(
            cat, person, by=_operator(), seconds=most if minutes is None else minutes * 60, max_seconds=most
        )
    finally:
        cat.dispose()
    typer.echo(issued.code)
    typer.echo(f"enrolment code {issued.code_id} for {issued.person}: one use, until {issued.expires_at.isoformat()}"
               " (not shown again)", err=True)  # fmt: skip


@code_app.command("list")
def code_list(
    person: str | None = typer.Option(None, "--person", help="Only this person's codes."), data: Path | None = DataOpt
) -> None:
    """Every code with its state (open, redeemed, spent, revoked, expired), as JSON lines; never the code."""
    from medcloud.security import enrolment_codes

    cat = _catalog(data)
    try:
        for item in enrolment_codes.listing(cat, person):
            typer.echo(json.dumps(item, default=str))
    finally:
        cat.dispose()


@code_app.command("revoke")
def code_revoke(
    code_id: str = typer.Argument(..., help="The code's id (from issue or list)."), data: Path | None = DataOpt
) -> None:
    """Revoke an open code."""
    from medcloud.errors import NotFound
    from medcloud.security import enrolment_codes

    cat = _catalog(data)
    try:
        if not enrolment_codes.revoke(cat, code_id, by=_operator()):
            raise NotFound(f"no open enrolment code {code_id!r}")
    finally:
        cat.dispose()
    typer.echo(f"enrolment code {code_id} revoked")
