"""Jobs on a Ray cluster through the Ray Jobs API (`ray.job_submission.JobSubmissionClient`).

Chosen when `MEDCLOUD_RAY_ADDRESS` is set (the dashboard's HTTP address, e.g. http://10.0.0.5:8265).
Ray 2.60 clusters require a token by default: it is read from `MEDCLOUD_RAY_TOKEN_FILE`, else from
`RAY_AUTH_TOKEN`, else from `~/.ray/auth_token`, and sent as `Authorization: Bearer` on every call.
The job's folder is uploaded as its `working_dir` (Ray caps it at 100 MB; the hub caps job code far
lower), its scoped hub token travels in `env_vars`, and `num_cpus`/`num_gpus` are reserved for the
entry point. A monitor thread polls each job, enforces the timeout and copies the final log to the hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcloud.errors import ConfigError
from medcloud.fsio import write_atomic
from medcloud.jobs.runner import JobEvents, JobSpec, Runner, read_tail

__all__ = ["RayRunner", "ray_token"]

log = logging.getLogger("medcloud.jobs")
SUBMIT_RETRY_S = 120.0  # how long a transient refusal of a submission is retried
_FINAL = {"SUCCEEDED": "succeeded", "FAILED": "failed", "STOPPED": "cancelled"}


def ray_token(token_file: Path | None) -> str | None:
    """The cluster's auth token: the configured file, RAY_AUTH_TOKEN, or ~/.ray/auth_token (None if none)."""
    if token_file is not None:
        try:
            return token_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read the Ray token file {token_file}: {exc}") from None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    default = Path.home() / ".ray" / "auth_token"
    return default.read_text().strip() if default.is_file() else None


@dataclass
class _Active:
    spec: JobSpec
    submission_id: str
    deadline: float
    started: bool = False
    stopping: str | None = None  # the state to record once Ray says STOPPED


class RayRunner(Runner):
    name = "ray"

    def __init__(
        self, events: JobEvents, address: str, *, token: str | None, python: str = "python", poll_s: float = 0.25
    ) -> None:
        from ray.job_submission import JobSubmissionClient

        self._events = events
        self._python = python
        self._poll = poll_s
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self._client: Any = JobSubmissionClient(address, headers=headers)
        except Exception as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._submitter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="medcloud-ray-submit")
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="medcloud-ray-monitor", daemon=True)
        self._monitor.start()

    def submit(self, spec: JobSpec) -> None:
        self._submitter.submit(self._submit, spec)

    def _submit(self, spec: JobSpec) -> None:
        token_env = self._events.prepare(spec.job_id)
        if token_env is None:
            return
        submission_id = f"medcloud-{spec.job_id}"
        deadline = time.monotonic() + SUBMIT_RETRY_S
        tries = 0
        while True:
            try:
                self._client.submit_job(
                    entrypoint=shlex.join([self._python, "-u", spec.entrypoint, *spec.args]),
                    submission_id=submission_id,
                    runtime_env={"working_dir": str(spec.workdir), "env_vars": spec.env | token_env},
                    entrypoint_num_cpus=spec.num_cpus,
                    entrypoint_num_gpus=spec.num_gpus or None,
                    metadata={"medcloud_job": spec.job_id},
                )
                break
            except Exception as exc:
                text = str(exc).lower()
                if "already exists" in text and tries:
                    break  # an earlier try reached the cluster before its answer was lost
                # A fresh or busy head answers "No available agent ... try again later" or drops the
                # connection for a while; a refused token or a bad request is final.
                final = any(w in text for w in ("auth", "401", "403", "400", "invalid"))
                if final or time.monotonic() > deadline or self._stop.is_set():
                    self._events.finished(spec.job_id, "failed", None, f"Ray refused the job: {exc}"[:1000])
                    return
                log.warning("Ray did not take job %s yet (%s): retrying", spec.job_id, exc)
                tries += 1
                time.sleep(1.0)
        with self._lock:
            self._active[spec.job_id] = _Active(spec, submission_id, time.monotonic() + spec.timeout_s)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                active = list(self._active.items())
            for job_id, a in active:
                try:
                    self._check(job_id, a)
                except Exception as exc:  # the cluster may be briefly unreachable: try again next round
                    log.warning("cannot read the state of Ray job %s: %s", a.submission_id, exc)

    def _check(self, job_id: str, a: _Active) -> None:
        info = self._client.get_job_info(a.submission_id)
        status = str(getattr(info.status, "value", info.status))
        # A short job can go from PENDING to its end between two polls: it started all the same.
        if (status == "RUNNING" or status in _FINAL) and not a.started:
            a.started = True
            if not self._events.started(job_id, a.submission_id):
                a.stopping = "cancelled"
                self._client.stop_job(a.submission_id)
        if status in _FINAL:
            self._save_log(a)
            with self._lock:
                self._active.pop(job_id, None)
            state = a.stopping or _FINAL[status]
            code = info.driver_exit_code
            message = "" if state == "succeeded" else (info.message or status)[:1000]
            if state == "timed_out":
                message = f"stopped after its {a.spec.timeout_s} s timeout"
            self._events.finished(job_id, state, code, message)
        elif time.monotonic() > a.deadline and a.stopping is None:
            a.stopping = "timed_out"
            self._client.stop_job(a.submission_id)

    def _save_log(self, a: _Active) -> None:
        try:
            text = self._client.get_job_logs(a.submission_id)
        except Exception as exc:
            text = f"[medcloud] could not fetch the job's log from Ray: {exc}\n"
        a.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(a.spec.log_path, text.encode("utf-8", errors="replace"))

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            a = self._active.get(job_id)
        if a is None:
            return False
        a.stopping = "cancelled"
        try:
            self._client.stop_job(a.submission_id)
        except Exception:
            return False
        return True

    def logs(self, job_id: str, log_path: Path, max_bytes: int) -> str:
        with self._lock:
            a = self._active.get(job_id)
        if a is not None:
            try:
                text: str = self._client.get_job_logs(a.submission_id)
                return text[-max_bytes:]
            except Exception as exc:
                log.warning("cannot read the log of Ray job %s: %s", a.submission_id, exc)
        return read_tail(log_path, max_bytes)

    def close(self) -> None:
        """Stop this hub's jobs on the cluster (their tokens die with the hub's record of them) and stop watching."""
        self._submitter.shutdown(wait=True, cancel_futures=True)
        self._stop.set()
        self._monitor.join(timeout=5)
        with self._lock:
            active = list(self._active.items())
            self._active.clear()
        for job_id, a in active:
            with contextlib.suppress(Exception):  # the cluster may be gone already
                self._client.stop_job(a.submission_id)
            self._events.finished(job_id, "cancelled", None, "the hub shut down")
