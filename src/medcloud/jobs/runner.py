"""What a backend runs (`JobSpec`), what it reports back (`JobEvents`), and the backend interface (`Runner`)."""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import medcloud

__all__ = ["JobEvents", "JobSpec", "Runner", "child_env", "read_tail"]

# Environment a job process inherits from the hub: enough to run Python, nothing of the hub's own settings.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")


@dataclass(frozen=True)
class JobSpec:
    """One job as a backend sees it: unpacked code, how to start it, what it may use, where its log goes."""

    job_id: str
    workdir: Path
    entrypoint: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # MEDCLOUD_HUB_URL, MEDCLOUD_DATASET_ID, MEDCLOUD_JOB_ID
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    timeout_s: int = 3600
    log_path: Path = Path("job.log")


class JobEvents(Protocol):
    """How a backend tells the hub what happened; the hub records, audits and scopes tokens."""

    def prepare(self, job_id: str) -> dict[str, str] | None:
        """Just before a job is handed to its runtime: its token env, or None when it is no longer queued."""

    def started(self, job_id: str, external_id: str | None) -> bool:
        """The job's process runs now; False when it was cancelled meanwhile (the backend then stops it)."""

    def finished(self, job_id: str, state: str, exit_code: int | None, message: str) -> None:
        """The job ended in `state` (succeeded, failed, cancelled, timed_out)."""


class Runner(ABC):
    """A backend: runs jobs, stops them on request, and reads their logs."""

    name: str = ""

    @abstractmethod
    def submit(self, spec: JobSpec) -> None:
        """Queue a job; returns at once. Its start and end arrive through `JobEvents`."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Stop a queued or running job and wait (briefly) until it is gone; False if it was not known."""

    @abstractmethod
    def logs(self, job_id: str, log_path: Path, max_bytes: int) -> str:
        """The last `max_bytes` of the job's output."""

    @abstractmethod
    def close(self) -> None:
        """Stop every job this backend runs and release its resources."""


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """A job process's environment: a few basics from the hub, `medcloud` importable, and `extra`."""
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    # The job imports medcloud.jobs.runtime from the hub's own installation.
    package_parent = str(Path(medcloud.__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_parent
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("PATH", os.path.dirname(sys.executable))
    return env | extra


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log file, decoded leniently ('' when there is none yet)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
