"""`medcloud jobs ...`: submit a script against a dataset version, watch it, read its log, cancel it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from medcloud.jobs.client import JobClient

jobs_app = typer.Typer(no_args_is_help=True, help="Run scripts on frozen dataset versions (local pool or Ray).")

HubOpt = typer.Option("", "--hub", envvar="MEDCLOUD_HUB_URL", help="Hub base URL, e.g. https://hub.example:8443")
TokenOpt = typer.Option("", "--token", envvar="MEDCLOUD_TOKEN", help="Researcher token (prefer --token-file).")
TokenFileOpt = typer.Option(None, "--token-file", help="File holding the researcher token.")


@contextmanager
def _connected(hub: str, token: str, token_file: Path | None) -> Iterator[JobClient]:
    from medcloud.jobs.client import JobClient

    if token_file is not None:
        token = token_file.read_text().strip()
    client = JobClient(hub, token)
    try:
        yield client
    finally:
        client.close()


def _echo(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


@jobs_app.command("submit")
def submit_command(
    code: Path = typer.Argument(..., help="A Python script, or a folder whose entry point is main.py"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The frozen dataset version the job reads"),
    entrypoint: str | None = typer.Option(None, "--entrypoint", help="Script to run inside a folder"),
    arg: list[str] = typer.Option([], "--arg", help="An argument to the script (repeat)"),
    name: str = typer.Option("", "--name"),
    cpus: float = typer.Option(1.0, "--cpus", help="CPUs to reserve"),
    gpus: float = typer.Option(0.0, "--gpus", help="GPUs to reserve (Ray only)"),
    timeout: int = typer.Option(3600, "--timeout", help="Seconds before the job is stopped"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end, print the log, exit 1 unless it succeeded"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Submit a job; prints the job (or, with --wait, its log and final state)."""
    with _connected(hub, token, token_file) as client:
        job = client.submit(
            code, dataset, entrypoint=entrypoint, args=arg, name=name, num_cpus=cpus, num_gpus=gpus, timeout_s=timeout
        )
        if not wait:
            _echo(job)
            return
        job = client.wait(job["id"], timeout_s=timeout + 120)
        sys.stdout.write(client.logs(job["id"]))
        _echo(job)
        if job["state"] != "succeeded":
            raise typer.Exit(1)


@jobs_app.command("status")
def status_command(
    job_id: str, hub: str = HubOpt, token: str = TokenOpt, token_file: Path | None = TokenFileOpt
) -> None:
    """One job's state, exit code and times."""
    with _connected(hub, token, token_file) as client:
        _echo(client.status(job_id))


@jobs_app.command("list")
def list_command(
    state: str | None = typer.Option(None, "--state", help="queued, running, succeeded, failed, cancelled, timed_out"),
    limit: int = typer.Option(100, "--limit"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """Jobs on dataset versions of your projects, newest first."""
    with _connected(hub, token, token_file) as client:
        for job in client.list_jobs(state, limit):
            typer.echo(f"{job['id']}  {job['state']:<10} {job['backend']:<6} {job['created_at']}  {job['name']}")


@jobs_app.command("logs")
def logs_command(
    job_id: str,
    max_bytes: int = typer.Option(1024 * 1024, "--max-bytes", help="Print at most this much of the end"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """The end of a job's output."""
    with _connected(hub, token, token_file) as client:
        sys.stdout.write(client.logs(job_id, max_bytes))


@jobs_app.command("cancel")
def cancel_command(
    job_id: str, hub: str = HubOpt, token: str = TokenOpt, token_file: Path | None = TokenFileOpt
) -> None:
    """Stop a queued or running job (its processes are killed)."""
    with _connected(hub, token, token_file) as client:
        _echo(client.cancel(job_id))


@jobs_app.command("artifacts")
def artifacts_command(
    job_id: str,
    download: str | None = typer.Option(None, "--download", help="Fetch this artefact"),
    out: Path | None = typer.Option(None, "--out", help="Where to write it (default: its name)"),
    hub: str = HubOpt,
    token: str = TokenOpt,
    token_file: Path | None = TokenFileOpt,
) -> None:
    """List a job's artefacts, or download one."""
    with _connected(hub, token, token_file) as client:
        if download is None:
            _echo(client.artifacts(job_id))
        else:
            typer.echo(str(client.download_artifact(job_id, download, out or Path(download))))
