"""The hub side of jobs: submit, start, finish and cancel, each recorded and audited; the job's scoped token.

A job gets its token when it starts, not when it is submitted: a `job` role token scoped to that job and
its dataset version, living the job's timeout plus a margin, and revoked the moment the job ends. The
job's process receives it as MEDCLOUD_JOB_TOKEN with MEDCLOUD_HUB_URL, MEDCLOUD_DATASET_ID and
MEDCLOUD_JOB_ID, and nothing else of the hub's environment.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.errors import Conflict, InvalidInput
from medcloud.jobs.code import CodeLimits, check_archive, extract
from medcloud.jobs.runner import JobSpec, Runner
from medcloud.security.policy import Principal, Role
from medcloud.security.tokens import TokenVerifier, issue_job_token, revoke_token
from medcloud.store import Catalog, LocalBlobStore
from medcloud.store.jobs import FINISHED

if TYPE_CHECKING:
    from medcloud.config import Settings

__all__ = ["SUBJECT", "JobService", "make_runner"]

SUBJECT = "hub:jobs"  # how the runner appears in the audit trail
TOKEN_MARGIN = timedelta(minutes=10)
MAX_ARGS = 100
MAX_ARG_CHARS = 4096


def make_runner(settings: Settings, service: JobService) -> Runner:
    """The Ray backend when `ray_address` is set, else the local pool."""
    if settings.ray_address:
        from medcloud.jobs.ray_backend import RayRunner, ray_token

        return RayRunner(
            service, settings.ray_address, token=ray_token(settings.ray_token_file), python=settings.ray_python
        )
    from medcloud.jobs.local import LocalPool

    return LocalPool(service, workers=settings.jobs_workers)


class JobService:
    """One per hub process; `runner` is made from the settings unless given."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        blobs: LocalBlobStore,
        verifier: TokenVerifier,
        runner: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.verifier = verifier
        self.root = settings.data_dir.resolve() / "jobs"
        self.limits = CodeLimits(max_bytes=settings.jobs_max_code_bytes)
        self._fail_lost()
        self.runner = runner or make_runner(settings, self)

    @property
    def hub_url(self) -> str:
        if self.settings.jobs_hub_url:
            return self.settings.jobs_hub_url.rstrip("/")
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    def _fail_lost(self) -> None:
        """Jobs a previous hub process left queued or running: nobody watches them any more."""
        for job in self.catalog.jobs.unfinished():
            self.finished(job["id"], "failed", None, "lost: the hub restarted while the job was queued or running")

    def _audit(self, conn: Any, action: str, job_id: str, outcome: str, subject: str = SUBJECT, **detail: Any) -> None:
        self.catalog.audit.append(
            conn, subject=subject, action=action, resource=f"job/{job_id}", outcome=outcome, client="", detail=detail
        )

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def submit(
        self,
        principal: Principal,
        *,
        dataset_id: str,
        code: bytes,
        entrypoint: str,
        args: list[str],
        name: str = "",
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        timeout_s: int = 3600,
        client: str = "",
    ) -> dict[str, Any]:
        """Check and record a job, then queue it. The caller must see every project of the dataset version."""
        version = self.catalog.datasets.get_version(dataset_id, principal.readable_projects())
        if version["status"] != "active":
            raise Conflict(f"dataset version {dataset_id} was withdrawn: {version['withdrawn_reason']}")
        if not 0 < timeout_s <= self.settings.jobs_max_timeout_seconds:
            raise InvalidInput(f"timeout_s must be 1-{self.settings.jobs_max_timeout_seconds}")
        if not 0 < num_cpus <= 256 or not 0 <= num_gpus <= 64:
            raise InvalidInput("num_cpus must be in (0, 256] and num_gpus in [0, 64]")
        if num_gpus and self.runner.name == "local":
            raise InvalidInput("the local pool schedules no GPUs: run GPU jobs on Ray (MEDCLOUD_RAY_ADDRESS)")
        if len(args) > MAX_ARGS or any(len(a) > MAX_ARG_CHARS or "\x00" in a for a in args):
            raise InvalidInput(f"at most {MAX_ARGS} arguments of {MAX_ARG_CHARS} characters each")
        if len(name) > 100 or not name.isprintable():
            raise InvalidInput("a job name is at most 100 printable characters")
        check_archive(code, entrypoint, self.limits)
        stored = self.blobs.put_bytes(code, self.limits.max_bytes + 1)
        job_id = secrets.token_hex(16)
        workdir = self._dir(job_id) / "code"
        extract(code, workdir, self.limits)
        row = {
            "id": job_id, "name": name, "dataset_id": dataset_id, "projects": ",".join(version["projects"]),
            "backend": self.runner.name, "entrypoint": entrypoint, "args": json.dumps(args),
            "code_sha256": stored.sha256, "code_bytes": len(code), "num_cpus": num_cpus, "num_gpus": num_gpus,
            "timeout_s": timeout_s, "submitted_by": principal.subject,
        }  # fmt: skip
        with self.catalog.write() as conn:
            self.catalog.jobs.insert(conn, row)
            self.catalog.audit.append(
                conn, subject=principal.subject, action="job.submit", resource=f"job/{job_id}", outcome="queued",
                client=client, detail={
                    "dataset": dataset_id, "backend": self.runner.name, "entrypoint": entrypoint,
                    "code_sha256": stored.sha256, "num_cpus": num_cpus, "num_gpus": num_gpus, "timeout_s": timeout_s,
                },
            )  # fmt: skip
        env = {"MEDCLOUD_HUB_URL": self.hub_url, "MEDCLOUD_DATASET_ID": dataset_id, "MEDCLOUD_JOB_ID": job_id}
        spec = JobSpec(
            job_id, workdir, entrypoint, tuple(args), env, num_cpus, num_gpus, timeout_s, self._dir(job_id) / "log.txt"
        )
        try:
            self.runner.submit(spec)
        except Exception as exc:
            self.finished(job_id, "failed", None, f"the {self.runner.name} backend refused the job: {exc}")
            raise
        return self.catalog.jobs.get(job_id)

    # --- events from the backend (runner.JobEvents) ---

    def prepare(self, job_id: str) -> dict[str, str] | None:
        job = self.catalog.jobs.get(job_id)
        if job["state"] != "queued":
            return None
        issued = issue_job_token(
            self.catalog, job_id=job_id, dataset_id=job["dataset"], projects=tuple(job["projects"]),
            lifetime=timedelta(seconds=job["timeout_s"]) + TOKEN_MARGIN, issued_by=SUBJECT,
        )  # fmt: skip
        with self.catalog.write() as conn:
            self.catalog.jobs.set_token(conn, job_id, issued.principal.token_id)
        return {"MEDCLOUD_JOB_TOKEN": issued.token}

    def started(self, job_id: str, external_id: str | None) -> bool:
        """queued -> running (audited once); True also when the job was marked running already (by its own
        first request, see `running_job`), False when it is no longer queued or running (cancelled)."""
        with self.catalog.write() as conn:
            ok = self.catalog.jobs.start(conn, job_id, external_id=external_id)
            if ok:
                self._audit(conn, "job.start", job_id, "running", backend=self.runner.name, external_id=external_id)
            elif external_id is not None:
                ok = self.catalog.jobs.note_external_id(conn, job_id, external_id)
        return ok

    def finished(self, job_id: str, state: str, exit_code: int | None, message: str) -> None:
        with self.catalog.write() as conn:
            done = self.catalog.jobs.finish(conn, job_id, state, exit_code=exit_code, message=message)
            if done:
                self._audit(conn, "job.finish", job_id, state, exit_code=exit_code, message=message[:300])
        token_id = self.catalog.jobs.token_of(job_id)
        if token_id:
            revoke_token(self.catalog, self.verifier, token_id, by=SUBJECT)

    # --- requests ---

    def get(self, job_id: str, principal: Principal) -> dict[str, Any]:
        principal.require_job(job_id)
        return self.catalog.jobs.get(job_id, principal.readable_projects())

    def cancel(self, job_id: str, principal: Principal) -> dict[str, Any]:
        """Stop a queued or running job (its process group is killed before this returns, locally)."""
        job = self.get(job_id, principal)
        if job["state"] in FINISHED:
            raise Conflict(f"job {job_id} has finished already ({job['state']})")
        self.runner.cancel(job_id)
        self.finished(job_id, "cancelled", None, f"cancelled by {principal.subject}")
        return self.catalog.jobs.get(job_id)

    def logs(self, job_id: str, principal: Principal, max_bytes: int) -> str:
        self.get(job_id, principal)
        return self.runner.logs(job_id, self._dir(job_id) / "log.txt", max_bytes)

    def running_job(self, job_id: str, principal: Principal) -> dict[str, Any]:
        """The job a job token acts for, while it runs (artefacts are written by a running job only)."""
        job = self.get(job_id, principal)
        if job["state"] == "queued" and principal.role is Role.JOB and principal.job == job_id:
            # The job's own token is issued only as the job is handed to its runner: a request carrying
            # it proves the job runs, even before the runner's monitor (Ray: polled) has seen it start.
            self.started(job_id, None)
            job = self.get(job_id, principal)
        if job["state"] != "running":
            raise Conflict(f"job {job_id} is {job['state']}: artefacts are written while it runs")
        return job

    def register_model(
        self, job_id: str, principal: Principal, *, name: str, version: str, artifact: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Put one of the job's artefacts in the model registry; its card names the dataset version and job."""
        from medcloud.vision.registry import register_files

        job = self.get(job_id, principal)
        found = self.catalog.jobs.artifact(job_id, artifact)
        dataset = self.catalog.datasets.get_version(job["dataset"], None)
        filename = Path(artifact).name
        training = {
            "dataset_version": job["dataset"], "dataset_name": dataset["name"], "dataset_projects": job["projects"],
            "job": job_id, "backend": job["backend"], "entrypoint": job["entrypoint"], "args": job["args"],
            "code_sha256": job["code_sha256"], "submitted_by": job["submitted_by"],
        }  # fmt: skip
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            src = Path(tmp) / filename
            with src.open("wb") as out:
                for chunk in self.blobs.iter_chunks(found["sha256"]):
                    out.write(chunk)
            card = register_files(self.settings.data_dir, name, version, [src], fields | {"training": training})
        with self.catalog.write() as conn:
            self.catalog.audit.append(
                conn, subject=principal.subject, action="model.register", resource=f"model/{name}/{version}",
                outcome="ok", client="", detail={"job": job_id, "dataset": job["dataset"], "artifact": artifact},
            )  # fmt: skip
        return card

    def close(self) -> None:
        self.runner.close()
