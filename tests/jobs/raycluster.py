"""A real single-node Ray head for tests: loopback, free ports, token auth on, its own temp dir and HOME.

Stopping it never uses `ray stop` (which stops every Ray cluster of the user on the machine): it signals
the `ray start --block` process, then kills only processes in its process group or whose command line
names this cluster's own temp dir.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.jobs.conftest import free_port

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class RayHead:
    address: str  # the dashboard (Jobs API) URL
    token_file: Path
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()


def start_head(num_gpus: int = 1, timeout_s: float = 180.0) -> RayHead:
    # A short root: Ray's unix sockets live under it and socket paths are limited to ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mcray", dir="/tmp"))
    token = secrets.token_hex(32)
    token_file = root / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    ports = {
        name: free_port()
        for name in (
            "port", "dashboard-port", "node-manager-port", "object-manager-port", "ray-client-server-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        )
    }  # fmt: skip
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "HOME": str(root),  # nothing of ours lands in the user's ~/.ray
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` on the cluster is this venv's
        "PYTHONPATH": str(SRC),  # the cluster's Python has medcloud (the job imports medcloud.jobs.runtime)
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cmd = [
        str(bin_dir / "ray"), "start", "--head", "--block", f"--temp-dir={root / 't'}",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        *(f"--{k}={v}" for k, v in ports.items()),
        "--num-cpus=2", f"--num-gpus={num_gpus}", "--object-store-memory=200000000", "--disable-usage-stats",
    ]  # fmt: skip
    log = (root / "ray-start.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{ports['dashboard-port']}", token_file, root, proc)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            text = (root / "ray-start.log").read_text(errors="replace")[-3000:]
            stop_head(head)
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{text}")
        try:
            req = urllib.request.Request(  # noqa: S310 - an http URL we built
                head.address + "/api/jobs/", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
                # The dashboard answers before `ray start` has seen its raylet register (and may still give up).
                started = b"Ray runtime started" in (root / "ray-start.log").read_bytes()
                if r.status == 200 and started:
                    return head
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_head(head)
            raise RuntimeError(f"the Ray head did not answer within {timeout_s:g} s")
        time.sleep(0.5)


def _ours(pid: int, pgid: int, marker: str) -> bool:
    try:
        if os.getpgid(pid) == pgid:
            return True
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ProcessLookupError):
        return False


def log_tails(head: RayHead, lines: int = 15) -> str:
    """The ends of the head's main logs (printed at teardown: pytest shows them when a test failed)."""
    out = []
    logs = head.root / "t" / "session_latest" / "logs"
    for path in [head.root / "ray-start.log", *(logs / n for n in ("dashboard.log", "raylet.out", "gcs_server.out"))]:
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(out)


def stop_head(head: RayHead) -> None:
    """Stop this cluster's processes only, then remove its folder."""
    print(log_tails(head), file=sys.stderr)
    pgid = head.proc.pid
    with_signal = head.proc.poll() is None
    if with_signal:
        os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.proc.wait(timeout=5)  # `ray start --block` takes 30 s and more to wind down on SIGTERM
    marker = str(head.root)
    for _ in range(3):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
        left = [p for p in pids if _ours(p, pgid, marker)]
        if not left:
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.5)
    if head.proc.poll() is None:
        head.proc.kill()
        head.proc.wait()
    shutil.rmtree(head.root, ignore_errors=True)
