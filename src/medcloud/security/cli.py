"""`medcloud audit ...`: verify the hash chain, read and export events, signed checkpoints and proofs a
hospital checks offline, log reviews, and the self-check against the MHLW guideline."""

from __future__ import annotations

import json
import os
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
    typer.echo(
        f"audit chain intact: {report.checked} events, head {report.head_hash}{sealed}, "
        f"{report.checkpoints} signed checkpoint(s) match"
    )


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


DataOpt = typer.Option(None, "--data", help="Hub data folder.")


def _open_catalog(data: Path | None, *, create_key: bool = False):  # type: ignore[no-untyped-def]
    from medcloud.config import load_settings
    from medcloud.store import Catalog

    settings = load_settings(data_dir=data)
    cat = Catalog.from_settings(settings, create_key=create_key)
    cat.migrate()
    return settings, cat


def _who() -> str:
    return f"cli:{os.environ.get('USER', 'local')}"


def _write_json(doc: object, out: Path | None) -> None:
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")


@audit_app.command("checkpoint")
def checkpoint(
    data: Path | None = DataOpt,
    out: Path | None = typer.Option(None, "--out", help="Write the signed tree head here (else stdout)."),
) -> None:
    """Sign a Merkle checkpoint over every event now; print the signed tree head (a hospital saves it)."""
    _, cat = _open_catalog(data, create_key=True)
    try:
        head = cat.audit.checkpoint()
    finally:
        cat.dispose()
    _write_json(head.as_dict(), out)


@audit_app.command("log-key")
def log_key(
    data: Path | None = DataOpt,
    out: Path | None = typer.Option(None, "--out", help="Write the public key (PEM) here (else stdout)."),
) -> None:
    """Export the log's Ed25519 public key, which is all a hospital needs to check proofs."""
    _, cat = _open_catalog(data, create_key=True)
    try:
        assert cat.audit.log_key is not None
        pem = cat.audit.log_key.public_pem()
    finally:
        cat.dispose()
    if out is None:
        typer.echo(pem.decode("ascii"), nl=False)
    else:
        out.write_bytes(pem)


@audit_app.command("log-keys")
def log_keys(
    data: Path | None = DataOpt,
    out: Path | None = typer.Option(None, "--out", help="Write the keys document here (else stdout)."),
) -> None:
    """Export every public key the log was signed with and the rotation statements between them (JSON):
    a hospital that trusts one of the keys follows the others with `verify-proof --keys`."""
    _, cat = _open_catalog(data, create_key=True)
    try:
        doc = cat.audit.keys_document()
    finally:
        cat.dispose()
    _write_json(doc, out)


@audit_app.command("rotate-log-key")
def rotate_log_key(data: Path | None = DataOpt) -> None:
    """Replace the log's signing key: the old key signs a checkpoint over every event, both keys sign a
    rotation statement (and that checkpoint), the old public key stays in the catalog, the old private
    key is overwritten. Earlier checkpoints and proofs stay verifiable. Prints the statement (JSON)."""
    from medcloud.store.catalog import rotate_log_key as rotate

    settings, cat = _open_catalog(data, create_key=True)
    try:
        statement, finished = rotate(settings, cat, subject=_who())
    finally:
        cat.dispose()
    if finished:
        typer.echo(f"finished an interrupted rotation to {finished}", err=True)
    old_id, new_id = statement["old_log_id"], statement["new_log_id"]
    _write_json(statement, None)
    typer.echo(f"log key rotated: {old_id[:16]}… -> {new_id[:16]}… at size {statement['tree_head']['tree_size']}"
               "; export with `medcloud audit log-keys`", err=True)  # fmt: skip


@audit_app.command("prove")
def prove(
    event_id: int = typer.Argument(..., min=1, help="The event's seq."),
    data: Path | None = DataOpt,
    since: Path | None = typer.Option(None, "--since", help="A tree head saved earlier: add a consistency proof."),
    out: Path | None = typer.Option(None, "--out", help="Write the proof JSON here (else stdout)."),
) -> None:
    """Write a JSON proof that event EVENT_ID is in the signed log (and that the log only grew since --since)."""
    from medcloud.errors import InvalidInput
    from medcloud.security.merkle import ProofError, TreeHead

    saved = None
    if since is not None:
        try:
            saved = TreeHead.from_dict(json.loads(since.read_text(encoding="utf-8")))
        except (ValueError, ProofError) as exc:
            raise InvalidInput(f"{since} is not a saved tree head: {exc}") from None
    _, cat = _open_catalog(data, create_key=True)
    try:
        doc = cat.audit.prove(event_id, since=saved)
    finally:
        cat.dispose()
    _write_json(doc, out)


@audit_app.command("verify-proof")
def verify_proof(
    proof: Path = typer.Argument(..., exists=True, dir_okay=False, help="A proof from `medcloud audit prove`."),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, help="The log's public key (PEM)."),
    since: Path | None = typer.Option(
        None, "--since", help="The tree head you saved earlier: the proof's consistency must start from it."
    ),
    keys: Path | None = typer.Option(
        None,
        "--keys",
        exists=True,
        dir_okay=False,
        help="`medcloud audit log-keys` output: follow key rotations from the --key you trust.",
    ),
) -> None:
    """Check a proof offline with the public key alone. Exit 7 when it does not hold."""
    from medcloud.errors import IntegrityError
    from medcloud.security.merkle import ProofError, TreeHead, load_public_key, trusted_keys, verify_proof_document

    try:
        doc = json.loads(proof.read_text(encoding="utf-8"))
        trusted = load_public_key(key.read_bytes())
        rotations = json.loads(keys.read_text(encoding="utf-8")).get("rotations", []) if keys is not None else []
        if not isinstance(rotations, list):
            raise ProofError("the keys document's rotations are not a list")
        summary = verify_proof_document(doc, trusted_keys(trusted, rotations))
        if since is not None:
            saved = TreeHead.from_dict(json.loads(since.read_text(encoding="utf-8")))
            given = (doc.get("consistency") or {}).get("from")
            if given is None or TreeHead.from_dict(given) != saved:
                raise ProofError("the proof does not start from the tree head you saved")
    except (ValueError, ProofError) as exc:
        raise IntegrityError(f"proof refused: {exc}") from None
    typer.echo(json.dumps(summary))


@audit_app.command("export")
def export(
    data: Path | None = DataOpt,
    fmt: str = typer.Option("fhir", "--format", help="fhir: a FHIR R4 Bundle of AuditEvent (IHE BALP)."),
    after: int = typer.Option(0, "--after", min=0, help="Only events with seq greater than this."),
    since: str | None = typer.Option(None, "--since", help="Only events recorded at or after this ISO 8601 time."),
    out: Path | None = typer.Option(None, "--out", help="Write here (else stdout)."),
) -> None:
    """Export the audit trail (events after --after, recorded since --since) as FHIR AuditEvent JSON."""
    from datetime import datetime

    from medcloud.errors import InvalidInput
    from medcloud.security.fhir import bundle

    if fmt != "fhir":
        raise InvalidInput(f"unknown export format {fmt!r}: use fhir")
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    except ValueError:
        raise InvalidInput(f"--since {since!r} is not an ISO 8601 time") from None
    _, cat = _open_catalog(data)
    try:
        rows = []
        while page := cat.audit.page(after_seq=after, limit=1000, since=when):
            rows += page
            after = int(page[-1]["seq"])
    finally:
        cat.dispose()
    _write_json(bundle(rows), out)


@audit_app.command("review")
def review(
    note: str = typer.Option(..., "--note", help="What was reviewed and what was found."),
    data: Path | None = DataOpt,
) -> None:
    """Record a review of the audit log (after verifying it) as an audit event; the self-check looks for it."""
    from medcloud.errors import InvalidInput

    if not note.strip():
        raise InvalidInput("a review needs a --note")
    _, cat = _open_catalog(data, create_key=True)
    try:
        report = cat.audit.verify()
        head = cat.audit.head_seq()
        cat.audit.record(
            subject=_who(), action="audit.review", resource="audit", outcome="ok" if report.ok else "chain-broken",
            detail={"note": note.strip()[:1000], "reviewed_to_seq": head, "verify": report.as_dict()},
        )  # fmt: skip
    finally:
        cat.dispose()
    typer.echo(f"review recorded (events 1..{head}, chain {'intact' if report.ok else 'BROKEN: ' + report.reason})")


@audit_app.command("self-check")
def self_check(
    data: Path | None = DataOpt,
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON report here (else stdout)."),
    html_out: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
) -> None:
    """Check this deployment against the MHLW guideline v6.0's checkable items. Exit 9 when an item FAILs."""
    from medcloud.config import load_settings
    from medcloud.security.selfcheck import render_html, run_self_check

    settings = load_settings(data_dir=data)
    report = run_self_check(settings)
    _write_json(report, json_out)
    if html_out is not None:
        html_out.write_text(render_html(report), encoding="utf-8")
    failed = [i["id"] for i in report["items"] if i["status"] == "FAIL"]
    if failed:
        typer.echo(f"self-check FAILED: {', '.join(failed)}", err=True)
        raise typer.Exit(9)
