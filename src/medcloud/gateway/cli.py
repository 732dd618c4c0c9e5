"""`medcloud gateway run | status | retry-dead | retry-rejected`: the hospital side of the platform."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medcloud.errors import ConfigError

if TYPE_CHECKING:
    from medcloud.gateway.intake import Deidentify

app = typer.Typer(no_args_is_help=True, help="De-identify images at the hospital and forward them to the hub.")

_STATE_HELP = "Gateway state folder (outbox, quarantine). Back it up together with the site key."
_DEFAULT_STATE = Path("medcloud-gateway")


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("medcloud.gateway")
    logger.setLevel(level)
    logger.propagate = False
    if logger.handlers:
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)


def _read_token(token: str | None, token_file: Path | None) -> str:
    if token_file is not None:
        try:
            value = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror or exc}") from None
        if not value:
            raise ConfigError(f"token file {token_file} is empty")
        return value
    if token:
        return token.strip()
    raise ConfigError("no hub token: pass --token-file FILE (or --token, or set MEDCLOUD_GATEWAY_TOKEN)")


def _load_deidentifier(key_file: Path, options: list[str], allow_burned_in: bool, max_file_bytes: int) -> Deidentify:
    if not key_file.is_file():
        raise ConfigError(f"site key {key_file} not found (create one once with `medcloud keygen`, then back it up)")
    from medcloud.deid import Deidentifier, SiteKey
    from medcloud.deid.cli import parse_options

    opts = parse_options([*options, *(["allow-burned-in"] if allow_burned_in else [])])
    # A deflated file may not inflate past the size the gateway accepts for any file.
    engine: Deidentify = Deidentifier(SiteKey.load(key_file), opts, max_inflated=max_file_bytes)
    return engine


# Encryption at rest of the outbox: the same setting names as the hub's (docs/security.md).
_ENC_FILE = typer.Option(
    None, "--encryption-key-file", envvar="MEDCLOUD_ENCRYPTION_KEY_FILE",
    help="Encrypt queued payloads at rest with the key-encryption key in this file (`medcloud hub new-key`).",
)  # fmt: skip
_ENC_ENV = typer.Option(
    None, "--encryption-key-env", envvar="MEDCLOUD_ENCRYPTION_KEY_ENV",
    help="Name of an environment variable holding the key-encryption key (hex or base64).",
)  # fmt: skip
_ENC_KMS = typer.Option(
    None, "--encryption-kms-command", envvar="MEDCLOUD_ENCRYPTION_KMS_COMMAND",
    help="KMS-style command that wraps and unwraps data keys (JSON over stdin/stdout).",
)  # fmt: skip


@app.command("run")
def run_command(
    hub: str | None = typer.Option(
        None, "--hub", help="Hub base URL, e.g. https://hub.example.org (not with --profile one-way)."
    ),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the site token (preferred)."),
    token: str | None = typer.Option(
        None, "--token", envvar="MEDCLOUD_GATEWAY_TOKEN", help="Site token (visible in `ps`; prefer --token-file)."
    ),
    watch: Path | None = typer.Option(None, "--watch", help="Folder to watch (recursively) for new files."),
    files: Path | None = typer.Option(None, "--files", help="File listing paths to send, one per line ('-': stdin)."),
    root: Path | None = typer.Option(
        None, "--root", help="Folder that listed paths must stay inside (default: --watch, else the list's folder)."
    ),
    key_file: Path = typer.Option(..., "--key-file", help="Site secret key (from `medcloud keygen`)."),
    state: Path = typer.Option(_DEFAULT_STATE, "--state", help=_STATE_HELP),
    once: bool = typer.Option(False, "--once", help="Send what is there now, wait until delivered, then exit."),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="De-identification profile option, repeatable (as `medcloud deid`)."
    ),
    allow_burned_in: bool = typer.Option(
        False, "--allow-burned-in", help="Forward images flagged for burned-in text instead of quarantining them."
    ),
    max_file_bytes: int = typer.Option(2 * 1024**3, "--max-file-bytes", help="Reject source files larger than this."),
    settle: float = typer.Option(2.0, "--settle", help="Seconds a file must stay unchanged before it is read."),
    workers: int = typer.Option(4, "--workers", min=1, max=64, help="Parallel uploads."),
    batch_size: int = typer.Option(
        50, "--batch-size", min=1, max=1000, help="Files per request when several wait (1: one per request)."
    ),
    retry_cap: float = typer.Option(60.0, "--retry-cap", help="Longest wait between retries (seconds)."),
    poll: float = typer.Option(2.0, "--poll", help="Polling interval when file-system events are unavailable."),
    no_watchdog: bool = typer.Option(False, "--no-watchdog", help="Poll the folder instead of using OS events."),
    dicom_port: int | None = typer.Option(
        None, "--dicom-port", help="Also receive images by DICOM C-STORE on this port (e.g. 11112)."
    ),
    dicom_host: str = typer.Option(
        "127.0.0.1", "--dicom-host", help="Address the C-STORE receiver binds (the modality network's)."
    ),
    ae_title: str = typer.Option("MEDCLOUD", "--ae-title", help="The receiver's AE title."),
    calling_ae: list[str] = typer.Option(
        [], "--calling-ae", help="Accept associations only from these AE titles (repeatable)."
    ),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="CA certificates to verify the hub's TLS."),
    client_cert: Path | None = typer.Option(
        None, "--client-cert", help="This site's client certificate (mutual TLS; from `medcloud hub ca issue`)."
    ),
    client_key: Path | None = typer.Option(None, "--client-key", help="Private key of --client-cert."),
    profile: str | None = typer.Option(
        None, "--profile", help="Network profile: vdi, one-way or sase (docs/deployment-profiles.md)."
    ),
    proxy: str | None = typer.Option(None, "--proxy", help="Outbound HTTP(S) proxy to reach the hub through."),
    relay_dir: Path | None = typer.Option(
        None, "--relay-dir", help="one-way profile: spool folder the one-way relay carries out (no hub connection)."
    ),
    encryption_key_file: Path | None = _ENC_FILE,
    encryption_key_env: str | None = _ENC_ENV,
    encryption_kms_command: str | None = _ENC_KMS,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every delivery."),
) -> None:
    """De-identify files from a folder and/or a list and forward them to the hub (never losing one)."""
    from rich.console import Console

    from medcloud.gateway.outbox import StateLocked
    from medcloud.gateway.runner import Gateway, GatewayConfig

    _setup_logging(verbose)
    if watch is None and files is None and dicom_port is None:
        raise ConfigError("nothing to do: give --watch DIR, --files LIST and/or --dicom-port PORT")
    if once and dicom_port is not None:
        raise ConfigError("--once and --dicom-port do not go together: a receiver waits for senders")
    if watch is not None and not watch.is_dir():
        raise ConfigError(f"watch folder {watch} does not exist or is not a folder")
    if files is not None and str(files) != "-" and not files.is_file():
        raise ConfigError(f"file list {files} not found")
    if profile == "one-way":
        if hub is not None:
            raise ConfigError("profile one-way: the gateway connects to nothing; give --hub to `gateway relay`")
        hub = ""
    elif hub is None:
        raise ConfigError("give --hub URL (or --profile one-way --relay-dir DIR)")
    elif not hub.startswith(("http://", "https://")):
        raise ConfigError(f"--hub must be an http(s) URL, got {hub!r}")
    from medcloud.gateway.profiles import NetworkChoices, apply_profile

    choices = apply_profile(
        profile,
        NetworkChoices(
            hub_url=hub,
            dicom_port=dicom_port,
            dicom_host=dicom_host,
            client_cert=client_cert,
            client_key=client_key,
            ca_bundle=ca_bundle,
            proxy=proxy,
            relay_dir=relay_dir,
        ),
    )
    hub_token = _read_token(token, token_file) if choices.relay_dir is None else ""
    deidentifier = _load_deidentifier(key_file, option, allow_burned_in, max_file_bytes)
    config = GatewayConfig(
        hub_url=hub,
        token=hub_token,
        state_dir=state,
        watch=watch,
        files=files,
        root=root,
        once=once,
        max_file_bytes=max_file_bytes,
        settle_seconds=settle,
        workers=workers,
        batch_size=batch_size,
        backoff_cap=retry_cap,
        poll_seconds=poll,
        use_watchdog=not no_watchdog,
        verify=choices.verify(),
        dicom_port=choices.dicom_port,
        dicom_host=choices.dicom_host,
        ae_title=ae_title,
        calling_aets=calling_ae,
        proxy=choices.proxy,
        relay_dir=choices.relay_dir,
        encryption_key_file=encryption_key_file,
        encryption_key_env=encryption_key_env,
        encryption_kms_command=encryption_kms_command,
    )
    try:
        gateway = Gateway(config, deidentifier, console=Console(stderr=True))
    except StateLocked as exc:
        raise ConfigError(str(exc)) from None
    try:
        summary = gateway.run()
    finally:
        gateway.close()
    if summary.needs_attention:
        typer.echo(
            f"medcloud gateway: {summary.dead} dead letter(s), {summary.rejected} rejected file(s) this run; "
            f"see `medcloud gateway status --state {state}`",
            err=True,
        )
        sys.exit(2)  # not typer.Exit: the top-level CLI runs click with standalone_mode=False


@app.command("relay")
def relay_command(
    spool: Path = typer.Option(..., "--spool", help="The spool a one-way relay delivered (from --relay-dir)."),
    hub: str = typer.Option(..., "--hub", help="Hub base URL."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the site token (preferred)."),
    token: str | None = typer.Option(
        None, "--token", envvar="MEDCLOUD_GATEWAY_TOKEN", help="Site token (visible in `ps`; prefer --token-file)."
    ),
    state: Path = typer.Option(Path("medcloud-relay"), "--state", help="The relay's own outbox folder."),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="CA certificates to verify the hub's TLS."),
    client_cert: Path | None = typer.Option(None, "--client-cert", help="The site's client certificate (mTLS)."),
    client_key: Path | None = typer.Option(None, "--client-key", help="Private key of --client-cert."),
    proxy: str | None = typer.Option(None, "--proxy", help="Outbound HTTP(S) proxy to reach the hub through."),
    once: bool = typer.Option(False, "--once", help="Send what the spool holds now, wait until delivered, exit."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between looks at the spool."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Parallel uploads."),
) -> None:
    """The outer half of the one-way profile: send an isolated gateway's spool on to the hub.

    Needs no site key (the spool is already de-identified); every payload is checked against its SHA-256."""
    from medcloud.gateway.forwarder import Forwarder, ForwarderConfig
    from medcloud.gateway.outbox import Outbox, StateLocked
    from medcloud.gateway.profiles import NetworkChoices
    from medcloud.gateway.relay import relay_spool

    _setup_logging(False)
    if not spool.is_dir():
        raise ConfigError(f"spool {spool} is not a folder")
    net = NetworkChoices(hub_url=hub, client_cert=client_cert, client_key=client_key, ca_bundle=ca_bundle, proxy=proxy)
    outbox = Outbox(state)
    try:
        try:
            outbox.acquire_process_lock()
        except StateLocked as exc:
            raise ConfigError(str(exc)) from None
        forwarder = Forwarder(
            outbox,
            ForwarderConfig(
                hub_url=hub, token=_read_token(token, token_file), workers=workers, verify=net.verify(), proxy=proxy
            ),
        )
        forwarder.start()
        try:
            while True:
                moved, bad = relay_spool(spool, outbox)
                if moved:
                    forwarder.wake()
                if once and not any(spool.glob("*.json")):
                    while outbox.queued_count() or forwarder.inflight:
                        time.sleep(0.1)
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            pass
        finally:
            forwarder.stop()
        counts = outbox.counts()
    finally:
        outbox.close()
    typer.echo(json.dumps(counts.as_dict()))
    if counts.dead or bad:
        sys.exit(2)


@app.command("rotate-key")
def rotate_key_command(
    state: Path = typer.Option(_DEFAULT_STATE, "--state", help=_STATE_HELP),
    encryption_key_file: Path | None = _ENC_FILE,
    encryption_key_env: str | None = _ENC_ENV,
    encryption_kms_command: str | None = _ENC_KMS,
    keep_old: bool = typer.Option(False, "--keep-old", help="Key file: leave the old key(s) in the file afterwards."),
) -> None:
    """Re-wrap the outbox's data keys under a new key-encryption key (as `medcloud hub rotate-key`)."""
    import json
    from types import SimpleNamespace

    from medcloud.security.envelope import Envelope, LocalKeyring, load_kek, rotate_key_file

    kek = load_kek(SimpleNamespace(encryption_key_file=encryption_key_file, encryption_key_env=encryption_key_env,
                                   encryption_kms_command=encryption_kms_command))  # fmt: skip
    if kek is None:
        raise ConfigError("give --encryption-key-file, --encryption-key-env or --encryption-kms-command")
    env = Envelope(kek, state / "keys.sqlite3")
    try:
        if encryption_key_file is not None and isinstance(kek, LocalKeyring):
            report = rotate_key_file(env, encryption_key_file, retire=not keep_old)
        else:
            report = env.rewrap()
    finally:
        env.close()
    typer.echo(json.dumps({"current_kek_id": report.current, "rewrapped": report.rewrapped,
                           "remaining": report.remaining, "retired": report.retired}, indent=2))  # fmt: skip


@app.command("status")
def status_command(
    state: Path = typer.Option(_DEFAULT_STATE, "--state", help=_STATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    show: int = typer.Option(10, "--show", help="How many dead letters / rejections / quarantined files to list."),
) -> None:
    """Show queued, delivered, dead, quarantined and rejected counts, and why things failed."""
    from medcloud.gateway.outbox import Outbox

    try:
        outbox = Outbox(state, readonly=True)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    try:
        counts = outbox.counts()
        dead = outbox.dead_items(show)
        rejected = outbox.rejected_sources(show)
        quarantined = outbox.quarantined(show)
        queued = outbox.queued_items(show)
    finally:
        outbox.close()
    running = _running_pid(state)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "state": str(state),
                    "running_pid": running,
                    "counts": counts.as_dict(),
                    "queued": queued,
                    "dead": dead,
                    "rejected": rejected,
                    "quarantined": quarantined,
                },
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    now = time.time()
    table = Table(title=f"gateway state {state}" + (f" (running, pid {running})" if running else " (not running)"))
    table.add_column("state")
    table.add_column("files", justify="right")
    table.add_column("meaning")
    age = f"; oldest waiting {now - counts.oldest_queued_at:.0f} s" if counts.oldest_queued_at else ""
    table.add_row("queued", str(counts.queued), "de-identified, waiting for the hub" + age)
    table.add_row("delivered", str(counts.delivered), "acknowledged by the hub")
    table.add_row("dead", str(counts.dead), "refused by the hub; fix the cause, then `retry-dead`")
    table.add_row("quarantined", str(counts.quarantined), "held back (burned-in text suspected); never sent")
    table.add_row("rejected", str(counts.rejected), "unreadable, not an image, too large or outside the folder")
    console.print(table)
    for title, rows, cols in (
        ("dead letters", dead, ("id", "source", "last_status", "last_error")),
        ("rejected files", rejected, ("path", "reason")),
        ("quarantined files", quarantined, ("source", "stored_as", "reason")),
        ("waiting (with errors)", [q for q in queued if q["last_error"]], ("id", "source", "attempts", "last_error")),
    ):
        if not rows:
            continue
        t = Table(title=title)
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*("" if r[c] is None else str(r[c]) for c in cols))
        console.print(t)


def _running_pid(state: Path) -> int | None:
    """The pid of the gateway holding the state folder's lock, if one does."""
    import fcntl

    lock = state / "gateway.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@app.command("retry-dead")
def retry_dead_command(
    state: Path = typer.Option(_DEFAULT_STATE, "--state", help=_STATE_HELP),
    item: list[int] = typer.Option([], "--id", help="Only these item ids (repeatable); default: all."),
) -> None:
    """Put dead letters back in the queue (after fixing the cause, e.g. a new token)."""
    from medcloud.gateway.outbox import Outbox

    outbox = Outbox(state)
    try:
        n = outbox.retry_dead(item)
    finally:
        outbox.close()
    typer.echo(f"{n} dead letter(s) queued again; a running gateway sends them within seconds")


@app.command("retry-rejected")
def retry_rejected_command(state: Path = typer.Option(_DEFAULT_STATE, "--state", help=_STATE_HELP)) -> None:
    """Forget rejected files so the next scan reads them again (after replacing or fixing them)."""
    from medcloud.gateway.outbox import Outbox

    outbox = Outbox(state)
    try:
        n = outbox.forget_rejected()
    finally:
        outbox.close()
    typer.echo(f"{n} rejected file(s) will be read again at the next scan (restart a --once gateway)")


@app.command("reports")
def reports_command(
    sources: list[Path] = typer.Argument(..., help="RIS exports (CSV/TSV, UTF-8 or Shift_JIS) and/or DICOM SR files."),
    key_file: Path = typer.Option(..., "--key-file", help="Site secret key: the same one the images use."),
    hub: str | None = typer.Option(None, "--hub", help="Hub base URL; without it, --out must be given."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the site token (preferred)."),
    token: str | None = typer.Option(
        None, "--token", envvar="MEDCLOUD_GATEWAY_TOKEN", help="Site token (visible in `ps`; prefer --token-file)."
    ),
    project: str | None = typer.Option(None, "--project", help="Hub project (needed when the token has several)."),
    images: Path | None = typer.Option(
        None, "--images", help="Folder of the original images: maps accession numbers to study UIDs."
    ),
    accession_map: Path | None = typer.Option(
        None, "--accession-map", help="CSV with accession number, study UID and patient id columns."
    ),
    column: list[str] = typer.Option(
        [],
        "--column",
        help="FIELD=HEADER for a RIS export (fields: study_uid, accession, patient_id, text, date, "
        "patient_name); repeat a field to give several headers (text columns are joined).",
    ),
    dates: str = typer.Option("shift", "--dates", help="Dates in the text: shift (as the images), remove or keep."),
    out: Path | None = typer.Option(None, "--out", help="Also write the de-identified reports here (JSON lines)."),
    batch_size: int = typer.Option(200, "--batch-size", min=1, max=1000, help="Reports per request."),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="CA certificates to verify the hub's TLS."),
) -> None:
    """De-identify report text with the site key (linked to the images' studies) and send it to the hub."""
    import json
    from typing import cast

    from medcloud.deid import SiteKey
    from medcloud.deid.freetext import DateMode
    from medcloud.deid.reports import AccessionIndex, Columns, DeidReport, ReportDeidentifier, Skipped, read_reports

    if dates not in ("shift", "remove", "keep"):
        raise ConfigError(f"--dates must be shift, remove or keep, not {dates!r}")
    if hub is None and out is None:
        raise ConfigError("nothing to do: give --hub URL (to send) and/or --out FILE")
    if hub is not None and not hub.startswith(("http://", "https://")):
        raise ConfigError(f"--hub must be an http(s) URL, got {hub!r}")
    hub_token = _read_token(token, token_file) if hub is not None else ""
    if not key_file.is_file():
        raise ConfigError(f"site key {key_file} not found: reports need the key the images were de-identified with")
    overrides: dict[str, list[str]] = {}
    for spec in column:
        field_name, sep, header = spec.partition("=")
        if not sep or not header.strip():
            raise ConfigError(f"--column {spec!r}: write FIELD=HEADER, e.g. text=所見")
        overrides.setdefault(field_name.strip(), []).append(header.strip())
    columns = Columns.with_overrides(overrides) if overrides else None
    index: AccessionIndex | None = None
    if images is not None or accession_map is not None:
        index = AccessionIndex()
        for part in (
            AccessionIndex.from_images(images) if images is not None else None,
            AccessionIndex.from_csv(accession_map) if accession_map is not None else None,
        ):
            if part is not None:
                for acc, (uid, pid) in part.items():
                    index.add(acc, uid, pid)
    deid = ReportDeidentifier(SiteKey.load(key_file), accessions=index, dates=cast(DateMode, dates))
    done: list[DeidReport] = []
    skipped: list[Skipped] = []
    for path in sources:
        got, missed = deid.deidentify_all(read_reports(path, columns))
        done.extend(got)
        skipped.extend(missed)
    for s in skipped:
        # Reasons name rows and kinds, never the text: this stays on the site's terminal anyway.
        typer.echo(f"skipped {s.source}: {s.reason}", err=True)
    if out is not None:
        with out.open("w", encoding="utf-8") as fh:
            for r in done:
                fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    line = f"{len(done)} report(s) de-identified, {len(skipped)} skipped"
    rejected = 0
    if hub is not None and done:
        import httpx

        from medcloud.gateway.reports import send_reports

        timeout = httpx.Timeout(120.0, connect=10.0)
        verify: bool | str = str(ca_bundle) if ca_bundle else True
        headers = {"Authorization": f"Bearer {hub_token}"}
        with httpx.Client(base_url=hub.rstrip("/"), headers=headers, timeout=timeout, verify=verify) as client:
            summary = send_reports(client, done, project=project, batch_size=batch_size)
        for where, reason in summary.rejected:
            typer.echo(f"rejected by the hub {where}: {reason}", err=True)
        rejected = len(summary.rejected)
        line += f"; hub: {summary.stored} stored, {summary.duplicate} already there, {rejected} rejected"
    typer.echo(line)
    if skipped or rejected:
        sys.exit(2)  # not typer.Exit: the top-level CLI runs click with standalone_mode=False
