"""`medcloud nlp findings`: report text in, one JSON line of findings per report out."""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path

import typer

from medcloud.errors import InvalidInput

app = typer.Typer(no_args_is_help=True)

# cp932 is what "Shift_JIS" means in Japanese hospital exports (Windows RIS); it is a superset.
_AUTO_ORDER = ("utf-8-sig", "cp932")
# cp932 maps almost any byte to something; text that decodes to controls or private-use
# characters was not text in that encoding.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff]")


def decode_report_bytes(data: bytes, encoding: str, source: str) -> str:
    """Decode report bytes; 'auto' tries UTF-8 (with or without BOM), then Shift_JIS (cp932)."""
    if encoding.lower() == "auto":
        for candidate in _AUTO_ORDER:
            try:
                text = data.decode(candidate)
            except UnicodeDecodeError:
                continue
            if not _NOT_TEXT.search(text):
                return text
        raise InvalidInput(f"{source}: neither UTF-8 nor Shift_JIS text; pass --encoding")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidInput(f"unknown --encoding {encoding!r}") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not valid {encoding} at byte {exc.start}") from None
    if "\x00" in text:
        raise InvalidInput(f"{source}: binary data, not report text")
    return text


def _read_source(file: Path | None, encoding: str) -> tuple[str, bytes]:
    if file is None or str(file) == "-":
        return "stdin", sys.stdin.buffer.read()
    try:
        return str(file), file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror or exc}") from None


@app.command("findings")
def findings_command(
    file: Path | None = typer.Argument(None, help="Report file; '-' or nothing reads stdin."),
    encoding: str = typer.Option(
        "auto", "--encoding", help="Input encoding: auto (UTF-8, then Shift_JIS), or a codec name."
    ),
    lang: str | None = typer.Option(None, "--lang", help="ja or en; detected per report when omitted."),
    whole: bool = typer.Option(
        False, "--whole", help="Treat the whole input as one report instead of one report per line."
    ),
) -> None:
    """Print one JSON line per report: its findings with status (present, absent, uncertain) and span.

    FILE is a text file of reports (one per line unless --whole); without FILE, or with '-', stdin.
    """
    from medcloud.nlp.findings import extract_findings

    if lang is not None and lang not in ("ja", "en"):
        raise InvalidInput(f"--lang must be ja or en, not {lang!r}")
    source, data = _read_source(file, encoding)
    text = decode_report_bytes(data, encoding, source)
    reports = [text] if whole else [line for line in text.splitlines() if line.strip()]
    out = sys.stdout
    for report in reports:
        found = [f.to_json() for f in extract_findings(report, lang)]
        out.write(json.dumps({"text": report, "findings": found}, ensure_ascii=False) + "\n")
    out.flush()
