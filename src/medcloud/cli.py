"""The `medcloud` command: one entry point for every unit (hub, gateway, de-identification, FL, demo).

Sub-command modules keep heavy imports inside their functions so that `medcloud --help` and
`medcloud serve-model` start fast.
"""

from __future__ import annotations

import sys

import typer

from medcloud.datasets.cli import cohort_app, dataset_app
from medcloud.deid.cli import deid_command, keygen_command
from medcloud.demo import demo_command
from medcloud.errors import MedcloudError
from medcloud.federated.cli import app as fl_app
from medcloud.gateway.cli import app as gateway_app
from medcloud.hub.cli import app as hub_app
from medcloud.jobs.cli import jobs_app
from medcloud.nlp.cli import app as nlp_app
from medcloud.results.cli import app as results_app
from medcloud.security.backup_cli import backup_app, restore_command
from medcloud.security.cli import audit_app
from medcloud.vision.cli import app as vision_app
from medcloud.vision.cli import serve_model_command

app = typer.Typer(
    name="medcloud",
    help="Multi-hospital medical-imaging AI: de-identify, collect, curate, serve, learn federated.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(hub_app, name="hub", help="Run and administer the hub.")
app.add_typer(gateway_app, name="gateway", help="Run a hospital gateway (de-identify and forward).")
app.add_typer(audit_app, name="audit", help="Inspect and verify the audit trail.")
app.add_typer(vision_app, name="vision", help="Train, evaluate and export vision models.")
app.add_typer(fl_app, name="fl", help="Federated learning with encrypted updates.")
app.add_typer(nlp_app, name="nlp", help="Findings from report text (ja/en) with negation and uncertainty.")
app.add_typer(dataset_app, name="dataset", help="Frozen dataset versions: freeze, list, show, download, export.")
app.add_typer(cohort_app, name="cohort", help="Cohorts: named, saved queries (image metadata and report findings).")
app.add_typer(results_app, name="results", help="AI results back as DICOM SR (boxes) or SEG (masks).")
app.add_typer(jobs_app, name="jobs", help="Jobs on frozen dataset versions: submit, status, logs, cancel, list.")
app.add_typer(backup_app, name="backup", help="Back the hub up in generations; export one offline.")
app.command("restore")(restore_command)
app.command("deid")(deid_command)
app.command("keygen")(keygen_command)
app.command("demo")(demo_command)
app.command("serve-model")(serve_model_command)


def main() -> None:
    """Console entry point: a MedcloudError becomes one line on stderr and its exit code."""
    try:
        # Outside standalone mode click returns a command's exit code instead of exiting with it.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except MedcloudError as exc:
        typer.echo(f"medcloud: {exc.title.lower()}: {exc.detail}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("medcloud: aborted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
