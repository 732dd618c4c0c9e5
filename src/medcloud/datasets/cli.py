"""`medcloud dataset ...` and `medcloud cohort ...`: a researcher's commands against a hub, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from medcloud.errors import InvalidInput

if TYPE_CHECKING:
    from medcloud.datasets.client import DatasetClient

dataset_app = typer.Typer(no_args_is_help=True, help="Freeze, list, show, download and export dataset versions.")
cohort_app = typer.Typer(no_args_is_help=True, help="Save, list and show cohorts (named queries).")

HubOpt = typer.Option("", "--hub", envvar="MEDCLOUD_HUB_URL", help="Hub base URL, e.g. https://hub.example:8443")
TokenOpt = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN", help="Researcher token (prefer --token-file).")
TokenFileOpt = typer.Option(None, "--token-file", help="File holding the researcher token.")
ProjectOpt = typer.Option(None, "--project", "-p", help="Project (repeat for several). Default: every granted.")


def _client(hub: str, token: str, token_file: Path | None) -> DatasetClient:
    """A client of the hub (httpx is imported only here)."""
    from medcloud.datasets.client import DatasetClient

    if token_file is not None:
        token = token_file.read_text().strip()
    return DatasetClient(hub, token)


@contextmanager
def _connected(hub: str, token: str, token_file: Path | None) -> Iterator[DatasetClient]:
    """A client for one command, closed when the command ends."""
    client = _client(hub, token, token_file)
    try:
        yield client
    finally:
        client.close()


def _echo(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _query(
    query: str | None,
    where: str | None,
    site: str | None,
    modality: str | None,
    body_part: str | None,
    date_from: str | None,
    date_to: str | None,
    sex: str | None,
    age_min: int | None,
    age_max: int | None,
) -> list[dict[str, Any]] | None:
    """The query from `--query JSON`, or the `--where` terms and one image term from the filter options
    (None when none is given)."""
    term = {
        k: v
        for k, v in {
            "site": site,
            "modality": modality,
            "body_part": body_part,
            "date_from": date_from,
            "date_to": date_to,
            "sex": sex,
            "age_min": age_min,
            "age_max": age_max,
        }.items()
        if v is not None
    }
    if query is not None:
        if term or where is not None:
            raise InvalidInput("give --query, or --where and filter options, not both")
        try:
            parsed = json.loads(query)
        except ValueError as exc:
            raise InvalidInput(f"--query is not JSON: {exc}") from None
        if not isinstance(parsed, list):
            raise InvalidInput("--query must be a JSON list of terms")
        return parsed
    terms: list[dict[str, Any]] = [{"kind": "image", **term}] if term else []
    if where is not None:
        from medcloud.datasets.where import parse_where

        terms += parse_where(where)
    return terms or None


def _split(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, frac = part.partition("=")
        try:
            out[name.strip()] = float(frac)
        except ValueError:
            raise InvalidInput(f"--split part {part!r}: use NAME=FRACTION, e.g. train=0.8,val=0.1,test=0.1") from None
    return out


QueryOpt = typer.Option(None, "--query", help='Terms as JSON, e.g. \'[{"modality":"CT"},{"sex":"F","negate":true}]\'')
WhereOpt = typer.Option(
    None, "--where", help="e.g. 'pneumothorax=present AND NOT pleural_effusion=present AND modality=CR'"
)
SiteOpt = typer.Option(None, "--site")
ModalityOpt = typer.Option(None, "--modality")
BodyPartOpt = typer.Option(None, "--body-part")
DateFromOpt = typer.Option(None, "--date-from", help="Study date from, YYYY-MM-DD")
DateToOpt = typer.Option(None, "--date-to", help="Study date to, YYYY-MM-DD")
SexOpt = typer.Option(None, "--sex", help="M, F or O")
AgeMinOpt = typer.Option(None, "--age-min", help="Age band lower bound, years")
AgeMaxOpt = typer.Option(None, "--age-max", help="Age band upper bound, years")


@cohort_app.command("save")
def cohort_save(
    name: str,
    project: list[str] = ProjectOpt,
    query: str | None = QueryOpt,
    where: str | None = WhereOpt,
    site: str | None = SiteOpt,
    modality: str | None = ModalityOpt,
    body_part: str | None = BodyPartOpt,
    date_from: str | None = DateFromOpt,
    date_to: str | None = DateToOpt,
    sex: str | None = SexOpt,
    age_min: int | None = AgeMinOpt,
    age_max: int | None = AgeMaxOpt,
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Save a named cohort query (filter options make one term; --query takes several, with negation)."""
    terms = _query(query, where, site, modality, body_part, date_from, date_to, sex, age_min, age_max)
    if terms is None:
        raise InvalidInput("a cohort needs a condition: --query or a filter option")
    with _connected(hub, token, token_file) as client:
        _echo(client.save_cohort(name, terms, project or None))


@cohort_app.command("preview")
def cohort_preview(
    project: list[str] = ProjectOpt,
    query: str | None = QueryOpt,
    where: str | None = WhereOpt,
    site: str | None = SiteOpt,
    modality: str | None = ModalityOpt,
    body_part: str | None = BodyPartOpt,
    date_from: str | None = DateFromOpt,
    date_to: str | None = DateToOpt,
    sex: str | None = SexOpt,
    age_min: int | None = AgeMinOpt,
    age_max: int | None = AgeMaxOpt,
    limit: int = typer.Option(20, "--limit", min=0, max=1000, help="Studies listed."),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """What a query matches now (instances, series, studies, patients) and the newest matched studies."""
    terms = _query(query, where, site, modality, body_part, date_from, date_to, sex, age_min, age_max)
    if terms is None:
        raise InvalidInput("a preview needs a condition: --where, --query or a filter option")
    with _connected(hub, token, token_file) as client:
        _echo(client.preview_cohort(terms, project or None, limit))


@cohort_app.command("list")
def cohort_list(hub: str = HubOpt, token: str = TokenOpt, token_file: Path | None = TokenFileOpt) -> None:
    """Cohorts of your projects."""
    with _connected(hub, token, token_file) as client:
        for c in client.list_cohorts():
            typer.echo(f"{c['name']}\t{','.join(c['projects'])}\t{json.dumps(c['query'], ensure_ascii=False)}")


@cohort_app.command("show")
def cohort_show(
    name: str,
    project: str | None = typer.Option(None, "--project", "-p"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """One cohort and how many instances it matches now."""
    with _connected(hub, token, token_file) as client:
        _echo(client.get_cohort(name, project))


@dataset_app.command("freeze")
def dataset_freeze(
    name: str,
    cohort: str | None = typer.Option(None, "--cohort", help="A saved cohort's name."),
    project: list[str] = ProjectOpt,
    split: str | None = typer.Option(None, "--split", help="e.g. train=0.8,val=0.1,test=0.1 (by patient)"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the patient-level split."),
    query: str | None = QueryOpt,
    where: str | None = WhereOpt,
    site: str | None = SiteOpt,
    modality: str | None = ModalityOpt,
    body_part: str | None = BodyPartOpt,
    date_from: str | None = DateFromOpt,
    date_to: str | None = DateToOpt,
    sex: str | None = SexOpt,
    age_min: int | None = AgeMinOpt,
    age_max: int | None = AgeMaxOpt,
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Freeze an immutable dataset version from a cohort or filters; the same inputs give the same id."""
    terms = _query(query, where, site, modality, body_part, date_from, date_to, sex, age_min, age_max)
    if (cohort is None) == (terms is None):
        raise InvalidInput("give --cohort or a query (--query or filter options), not both or neither")
    body: dict[str, Any] = {"name": name, "seed": seed, "projects": project or None, "split": _split(split)}
    body["cohort" if cohort is not None else "query"] = cohort if cohort is not None else terms
    with _connected(hub, token, token_file) as client:
        _echo(client.freeze(body))


@dataset_app.command("list")
def dataset_list(
    name: str | None = typer.Option(None, "--name"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Dataset versions of your projects, newest first."""
    with _connected(hub, token, token_file) as client:
        for v in client.list_versions(name):
            counts = " ".join(f"{k}={n}" for k, n in sorted(v["split_counts"].items()))
            typer.echo(f"{v['id']}\t{v['name']}\t{v['status']}\t{v['file_count']} files\t{counts}\t{v['created_at']}")


@dataset_app.command("show")
def dataset_show(
    ref: str = typer.Argument(..., help="Version id, or a name for its newest version."),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """One version's summary: query, split, counts, status."""
    with _connected(hub, token, token_file) as client:
        _echo(client.show(ref))


@dataset_app.command("download")
def dataset_download(
    ref: str = typer.Argument(..., help="Version id, or a name for its newest version."),
    dest: Path = typer.Argument(..., help="Folder (resumes what is there)."),
    workers: int = typer.Option(4, "--workers", min=1, max=32, help="Parallel requests."),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Download a version's files, resuming and checking every SHA-256."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with (
        _connected(hub, token, token_file) as client,
        Progress("[progress.description]{task.description}", *columns, console=Console(stderr=True)) as bar,
    ):
        task = bar.add_task("downloading", total=None)
        report = client.download(
            ref,
            dest,
            workers=workers,
            on_total=lambda n: bar.update(task, total=n),
            on_bytes=lambda n: bar.advance(task, n),
        )
    _echo({"id": report.version, "fetched": report.fetched, "kept": report.kept, "bytes": report.bytes_fetched})


@dataset_app.command("export")
def dataset_export(
    download_dir: Path = typer.Argument(..., help="A folder `medcloud dataset download` filled."),
    out: Path = typer.Argument(..., help="Where to lay files out per split."),
    fmt: str = typer.Option(
        "dicom", "--format", help="dicom (as stored, hard-linked), png, nifti (a volume per series), coco or yolo"
    ),
    png_bits: int = typer.Option(8, "--png-bits", help="png only: 8 (windowed) or 16 (raw stored values)"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Re-hash every file before exporting it."),
) -> None:
    """Lay a downloaded version out for a trainer, with index.csv and dataset.json; resumes what is done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from medcloud.datasets.client import read_manifest
    from medcloud.datasets.export import FORMATS, export

    if fmt not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}")
    _, _, files = read_manifest(download_dir)
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"exporting {fmt}", total=len(files))
        report = export(download_dir, out, fmt=fmt, verify=verify, png_bits=png_bits, on_file=lambda: bar.advance(task))
    _echo({"id": report.version, "out": str(report.out), "format": fmt, "per_split": report.per_split,
           "written": report.written, "kept": report.kept, "boxes": report.boxes,
           "skipped": len(report.skipped)})  # fmt: skip
