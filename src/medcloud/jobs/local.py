"""The default backend: a bounded pool of subprocesses on the hub, each in its own process group.

A job runs as `python -u <entrypoint> <args...>` in its unpacked folder with a minimal environment
(`runner.child_env`): none of the hub's settings or secrets, only its scoped token. Cancel and timeout
stop the whole process group (SIGTERM, then SIGKILL after a grace period), children included.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from medcloud.errors import InvalidInput
from medcloud.jobs.runner import JobEvents, JobSpec, Runner, child_env, read_tail

__all__ = ["LocalPool"]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class LocalPool(Runner):
    """`workers` jobs at a time; the rest wait in submission order."""

    name = "local"

    def __init__(self, events: JobEvents, *, workers: int = 2, kill_grace_s: float = 3.0) -> None:
        self._events = events
        self._grace = kill_grace_s
        self._queue: queue.Queue[JobSpec | None] = queue.Queue()
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"medcloud-job-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def submit(self, spec: JobSpec) -> None:
        if spec.num_gpus > 0:
            raise InvalidInput("the local pool schedules no GPUs: run GPU jobs on Ray (MEDCLOUD_RAY_ADDRESS)")
        self._queue.put(spec)

    def _work(self) -> None:
        while (spec := self._queue.get()) is not None:
            try:
                self._run(spec)
            except Exception as exc:  # a job's failure must never take a worker down with it
                self._events.finished(spec.job_id, "failed", None, f"could not run: {exc}")

    def _run(self, spec: JobSpec) -> None:
        with self._lock:
            if spec.job_id in self._cancelled or self._closed:
                return
        token_env = self._events.prepare(spec.job_id)
        if token_env is None:
            return
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        threads = str(max(1, int(spec.num_cpus)))
        env = child_env(spec.env | token_env | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        with spec.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-u", spec.entrypoint, *spec.args],
                cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel reaches its children too
            )  # fmt: skip
        with self._lock:
            self._procs[spec.job_id] = proc
            cancelled = spec.job_id in self._cancelled
        if cancelled or not self._events.started(spec.job_id, str(proc.pid)):
            self._stop(proc)
        timed_out = False
        try:
            rc = proc.wait(timeout=spec.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._stop(proc)
            rc = proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # whatever the script left behind in its group
        with self._lock:
            self._procs.pop(spec.job_id, None)
            cancelled = spec.job_id in self._cancelled
        if cancelled:
            self._events.finished(spec.job_id, "cancelled", rc, "cancelled")
        elif timed_out:
            self._events.finished(spec.job_id, "timed_out", rc, f"stopped after its {spec.timeout_s} s timeout")
        elif rc == 0:
            self._events.finished(spec.job_id, "succeeded", 0, "")
        else:
            self._events.finished(spec.job_id, "failed", rc, f"exited with code {rc}")

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the group, SIGKILL it after the grace period; returns once the leader is gone."""
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            self._cancelled.add(job_id)
            proc = self._procs.get(job_id)
        if proc is not None:
            self._stop(proc)
        return True

    def logs(self, job_id: str, log_path: Path, max_bytes: int) -> str:
        return read_tail(log_path, max_bytes)

    def running(self) -> int:
        with self._lock:
            return len(self._procs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = list(self._procs.values())
            self._cancelled.update(self._procs)
        for proc in procs:
            self._stop(proc)
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + 10
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
