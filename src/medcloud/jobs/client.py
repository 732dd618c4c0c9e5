"""A researcher's client for a hub's jobs: submit code against a dataset version, watch, cancel, fetch artefacts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.fsio import write_atomic
from medcloud.hubclient import HubClient
from medcloud.hubclient import raise_for as _raise_for
from medcloud.jobs.code import pack

if TYPE_CHECKING:
    import httpx

__all__ = ["FINISHED", "JobClient"]

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class JobClient(HubClient):
    """Jobs on one hub, over an `httpx.Client` (made from `base_url` and `token` if not given)."""

    agent = "medcloud-jobs"
    timeout_s = 120.0

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = self._client.request(method, path, headers=self._headers | kwargs.pop("headers", {}), **kwargs)
        _raise_for(r)
        return r

    def submit(
        self,
        code: Path,
        dataset: str,
        *,
        entrypoint: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        name: str = "",
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        timeout_s: int = 3600,
    ) -> dict[str, Any]:
        """Pack a script or folder and submit it; returns the queued job."""
        data, default_entry = pack(code)
        params: dict[str, Any] = {
            "dataset": dataset, "entrypoint": entrypoint or default_entry, "name": name or Path(code).name,
            "num_cpus": num_cpus, "num_gpus": num_gpus, "timeout_s": timeout_s, "arg": list(args),
        }  # fmt: skip
        r = self._call("POST", "/api/v1/jobs", params=params, content=data, headers={"Content-Type": "application/zip"})
        job: dict[str, Any] = r.json()
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/api/v1/jobs/{job_id}").json()
        return job

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params = {"limit": limit} | ({"state": state} if state else {})
        items: list[dict[str, Any]] = self._call("GET", "/api/v1/jobs", params=params).json()["items"]
        return items

    def logs(self, job_id: str, max_bytes: int = 1024 * 1024) -> str:
        return self._call("GET", f"/api/v1/jobs/{job_id}/logs", params={"max_bytes": max_bytes}).text

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("POST", f"/api/v1/jobs/{job_id}/cancel").json()
        return job

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["items"]
        return items

    def download_artifact(self, job_id: str, name: str, dest: Path) -> Path:
        r = self._call("GET", f"/api/v1/jobs/{job_id}/artifacts/{name}")
        write_atomic(dest, r.content, mode=0o644)
        return dest

    def wait(self, job_id: str, timeout_s: float = 3600.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until the job has finished; returns its final state (TimeoutError if it takes longer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.status(job_id)
            if job["state"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:g} s")
            time.sleep(poll_s)
