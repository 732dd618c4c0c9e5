"""`medcloud deid` and `medcloud keygen`. Heavy imports stay inside the functions so `--help` is fast."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from medcloud.deid.engine import DeidOptions

OPTION_HELP = (
    "Profile option, repeatable: retain-modified-dates, retain-full-dates, retain-patient-characteristics, "
    "retain-device-identity, retain-institution-identity, retain-uids, no-clean-descriptors, "
    "allow-burned-in, retain-safe-private=CREATOR:ELEMENT (ELEMENT is the low byte, e.g. 0x10)."
)
_FLAGS = {
    "retain-modified-dates": "retain_longitudinal_modified_dates",
    "retain-full-dates": "retain_longitudinal_full_dates",
    "retain-patient-characteristics": "retain_patient_characteristics",
    "retain-device-identity": "retain_device_identity",
    "retain-institution-identity": "retain_institution_identity",
    "retain-uids": "retain_uids",
    "allow-burned-in": "allow_burned_in",
}


def parse_options(values: list[str]) -> DeidOptions:
    """Turn `--option` strings into DeidOptions; unknown names are an InvalidInput."""
    from medcloud.deid.engine import DeidOptions
    from medcloud.errors import InvalidInput

    kwargs: dict[str, object] = {}
    allow: set[tuple[str, int]] = set()
    for raw in values:
        name, _, arg = raw.strip().partition("=")
        if name in _FLAGS:
            kwargs[_FLAGS[name]] = True
        elif name == "no-clean-descriptors":
            kwargs["clean_descriptors"] = False
        elif name == "retain-safe-private":
            creator, _, elem = arg.rpartition(":")
            try:
                allow.add((creator, int(elem, 0)))
            except ValueError:
                raise InvalidInput(f"--option {raw}: expected retain-safe-private=CREATOR:ELEMENT") from None
            kwargs["retain_safe_private"] = True
        else:
            known = ", ".join([*_FLAGS, "no-clean-descriptors", "retain-safe-private"])
            raise InvalidInput(f"unknown --option {name!r}; known: {known}")
    return DeidOptions(**kwargs, safe_private_allowlist=frozenset(allow))  # type: ignore[arg-type]


@dataclass
class RunSummary:
    written: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def collect_sources(src: Path, summary: RunSummary) -> list[tuple[Path, Path]]:
    """(file, path relative to SRC) for every regular file under SRC; symlinks leading outside are
    refused, symlinked folders are not entered."""
    root = src.resolve()
    if src.is_file():
        return [(src, Path(src.name))]
    out: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    summary.failed.append((str(rel), "symlink points outside the source folder; not followed"))
                    continue
            if not path.is_file():
                continue
            if name.upper() == "DICOMDIR":
                summary.skipped.append((str(rel), "DICOMDIR index (rebuilt by the receiver, not copied)"))
                continue
            out.append((path, rel))
    return out


def run_deid(
    src: Path,
    dst: Path,
    key_file: Path,
    options: DeidOptions,
    *,
    write_quarantined: bool = False,
    rename: bool = False,
    progress: bool = True,
) -> RunSummary:
    """De-identify SRC (file or folder) into DST; per-file errors are collected, not raised."""
    from medcloud.deid.engine import Deidentifier
    from medcloud.deid.keys import SiteKey
    from medcloud.errors import InvalidInput, MedcloudError, PathEscape, UnsupportedFormat
    from medcloud.fsio import write_atomic

    if not src.exists():
        raise InvalidInput(f"source {src} does not exist")
    src_root, dst_root = src.resolve(), dst.resolve()
    if src.is_dir() and (dst_root == src_root or dst_root.is_relative_to(src_root)):
        raise PathEscape(f"destination {dst} lies inside the source {src}; choose a folder outside it")
    deid = Deidentifier(SiteKey.load(key_file), options)
    summary = RunSummary()
    files = collect_sources(src, summary)
    single = src.is_file()
    if single and dst.suffix and not dst.is_dir():
        dst_root = dst.parent.resolve()

    def target(rel: Path, name: str, quarantine: bool) -> Path:
        base = dst_root / "quarantine" if quarantine else dst_root
        if single and dst.suffix and not dst.is_dir() and not quarantine:
            out = dst.resolve()
        else:
            out = base / rel.parent / (name if rename else rel.name)
        if not out.resolve().is_relative_to(dst_root):  # defence in depth; rel never holds '..'
            raise PathEscape(f"{rel} would be written outside {dst}")
        return out

    def one(path: Path, rel: Path) -> None:
        try:
            outcome = deid.deidentify_file(path)
            if outcome.quarantine_reason:
                summary.quarantined.append((str(rel), outcome.quarantine_reason))
                if not write_quarantined:
                    return
            out = target(rel, outcome.suggested_name, bool(outcome.quarantine_reason))
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, outcome.data)
            if not outcome.quarantine_reason:
                summary.written += 1
        except UnsupportedFormat as exc:
            summary.skipped.append((str(rel), exc.detail))
        except MedcloudError as exc:
            summary.failed.append((str(rel), exc.detail))
        except OSError as exc:
            summary.failed.append((str(rel), f"{exc.strerror}"))
        except Exception as exc:  # one file that breaks the reader must not stop the rest of the folder
            summary.failed.append((str(rel), f"de-identification failed: {type(exc).__name__}: {exc}"[:300]))

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("de-identifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task("deid", total=len(files))
            for path, rel in files:
                one(path, rel)
                bar.advance(task)
    else:
        for path, rel in files:
            one(path, rel)
    return summary


def deid_command(
    src: Path = typer.Argument(..., help="File or folder to de-identify."),
    dst: Path = typer.Argument(..., help="Output file or folder (must not lie inside SRC)."),
    key_file: Path = typer.Option(..., "--key-file", help="Site secret key file (see `medcloud keygen`)."),
    option: list[str] = typer.Option([], "--option", "-o", help=OPTION_HELP),
    quarantine: bool = typer.Option(
        False, "--quarantine", help="Write quarantined files (burned-in text) to DST/quarantine/ instead of skipping."
    ),
    rename: bool = typer.Option(False, "--rename", help="Name outputs by their new UID instead of the source name."),
) -> None:
    """De-identify DICOM and image files (PS3.15 Basic Profile plus options) from SRC into DST."""
    from rich.console import Console

    summary = run_deid(src, dst, key_file, parse_options(option), write_quarantined=quarantine, rename=rename)
    console = Console(stderr=True)
    console.print(f"[green]{summary.written}[/] written to {dst}")
    if summary.quarantined:
        where = f"{dst}/quarantine/" if quarantine else "nowhere (use --quarantine to keep them)"
        console.print(f"[yellow]{len(summary.quarantined)} quarantined[/], written {where}:")
        for rel, reason in summary.quarantined[:20]:
            console.print(f"  {rel}: {reason}", markup=False)
    if summary.skipped:
        console.print(f"{len(summary.skipped)} skipped:")
        for rel, reason in summary.skipped[:20]:
            console.print(f"  {rel}: {reason}", markup=False)
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} failed[/]:")
        for rel, reason in summary.failed[:50]:
            console.print(f"  {rel}: {reason}", markup=False)
        raise typer.Exit(1)


def keygen_command(
    path: Path = typer.Argument(..., help="Where to write the new site key (mode 0600)."),
) -> None:
    """Create a site key. Keep it at the hospital and back it up: pseudonyms depend on it."""
    from medcloud.deid.keys import SiteKey

    SiteKey.generate(path)
    typer.echo(f"wrote a new site key to {path} (mode 0600); back it up and never send it to the hub")
