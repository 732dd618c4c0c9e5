"""Jobs in the local process pool, end to end against a real hub: data in, artefacts and a model out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from medcloud.jobs.runner import JobEvents, JobSpec, Runner
from tests.jobs.conftest import LiveHub, expected_digest

SRC = Path(__file__).resolve().parents[2] / "src"

TRAIN = """
import hashlib, json, sys
from medcloud.jobs.runtime import dataset, register_model, save_artifact
from helper import summary

ds = dataset()
h = hashlib.sha256()
total = 0
for f in ds.files:
    data = ds.read(f)
    h.update(data)
    total += len(data)
bulk = hashlib.sha256()
for f, data in ds.iter_files(batch=10):
    bulk.update(data)
assert bulk.hexdigest() == h.hexdigest()
result = summary(ds, total, h.hexdigest())
print("RESULT", json.dumps(result))
save_artifact("result.json", json.dumps(result).encode())
save_artifact("model.bin", b"weights:" + h.digest())
card = register_model("tiny", "1", "model.bin", metrics={"files": result["files"]},
                      notice="SYNTHETIC test data", synthetic=True)
print("REGISTERED", card["name"], card["training"]["dataset_version"])
"""

HELPER = """
def summary(ds, total, digest):
    return {"files": len(ds.files), "bytes": total, "digest": digest, "train": len(ds.split("train")),
            "dataset": ds.id}
"""


def _wait(hub: LiveHub, job_id: str, timeout_s: float = 60) -> dict[str, object]:
    return hub.client().wait(job_id, timeout_s=timeout_s, poll_s=0.1)


def test_a_job_reads_its_dataset_and_writes_artefacts_and_a_model(
    live_hub: LiveHub, script: Callable[[str, str], Path]
) -> None:
    folder = script(TRAIN, "main.py").parent
    script(HELPER, "helper.py")
    client = live_hub.client()
    lung = live_hub.datasets["lung"]
    job = client.submit(folder, lung, name="train-tiny")
    assert job["state"] in ("queued", "running") and job["backend"] == "local"
    done = _wait(live_hub, job["id"])
    log = client.logs(job["id"])
    assert done["state"] == "succeeded", log
    assert done["exit_code"] == 0 and done["started_at"] and done["finished_at"]

    blobs = live_hub.blobs["lung"]
    expected = {"files": len(blobs), "bytes": sum(map(len, blobs)), "digest": expected_digest(blobs), "dataset": lung}
    assert "RESULT" in log and "REGISTERED tiny " + lung in log
    names = {a["name"]: a for a in client.artifacts(job["id"])}
    assert set(names) == {"result.json", "model.bin"}
    dest = client.download_artifact(job["id"], "result.json", Path(live_hub.state.settings.data_dir) / "r.json")
    got = json.loads(dest.read_bytes())
    assert {k: got[k] for k in expected} == expected
    _, files = live_hub.state.catalog.datasets.manifest(lung, None)
    assert got["train"] == sum(f["split"] == "train" for f in files) > 0

    # The model is in the registry, its card naming the dataset version and job it came from.
    r = httpx.get(
        f"{live_hub.url}/api/v1/models/tiny/1", headers={"Authorization": f"Bearer {live_hub.tokens['researcher']}"}
    )
    assert r.status_code == 200, r.text
    card = r.json()
    assert card["training"]["dataset_version"] == lung and card["training"]["job"] == job["id"]
    assert card["files"]["model.bin"]["sha256"] == names["model.bin"]["sha256"]
    assert card["synthetic"] is True and card["metrics"] == {"files": len(blobs)}

    actions = live_hub.audit_actions(f"job/{job['id']}")
    kinds = [a for a, _ in actions]
    assert kinds[0] == "job.submit" and "job.start" in kinds and ("job.finish", "succeeded") in actions
    assert kinds.count("job.dataset.read") == len(blobs) + -(-len(blobs) // 10)  # per file, then per batch of 10
    assert kinds.count("job.artifact") == 2
    assert live_hub.audit_actions("model/tiny/1") == [("model.register", "ok")]


PROBE = """
import json, os, urllib.request, urllib.error
hub, token, job = os.environ["MEDCLOUD_HUB_URL"], os.environ["MEDCLOUD_JOB_TOKEN"], os.environ["MEDCLOUD_JOB_ID"]
other_dataset, other_job = os.environ["PROBE_ARGS"].split(",")
own = os.environ["MEDCLOUD_DATASET_ID"]
open("token.txt", "w").write(token)
def call(method, path, body=None):
    req = urllib.request.Request(hub + path, data=body, method=method, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
codes = {
    "own_manifest": call("GET", f"/api/v1/jobs/{job}/dataset/manifest"),
    "own_file": call("GET", f"/api/v1/jobs/{job}/dataset/files/0"),
    "dataset_route_own": call("GET", f"/api/v1/datasets/{own}/manifest"),
    "dataset_route_other": call("GET", f"/api/v1/datasets/{other_dataset}/manifest"),
    "other_file": call("GET", f"/api/v1/datasets/{other_dataset}/files/0/file"),
    "other_job_manifest": call("GET", f"/api/v1/jobs/{other_job}/dataset/manifest"),
    "other_job_batch": call("GET", f"/api/v1/jobs/{other_job}/dataset/batch?start=0&count=5"),
    "other_job_artifact": call("PUT", f"/api/v1/jobs/{other_job}/artifacts/x.bin", b"x"),
    "studies": call("GET", "/api/v1/studies"),
    "instances_qido": call("GET", "/dicom-web/studies"),
    "ingest": call("POST", "/api/v1/ingest", b"DICM"),
    "submit_job": call("POST", f"/api/v1/jobs?dataset={own}", b"PK"),
    "list_jobs": call("GET", "/api/v1/jobs"),
    "cancel_self": call("POST", f"/api/v1/jobs/{job}/cancel"),
    "own_artifact": call("PUT", f"/api/v1/jobs/{job}/artifacts/ok.txt", b"fine"),
    "tokens": call("GET", "/api/v1/tokens"),
}
print(json.dumps(codes))
"""


def test_the_job_token_reaches_only_its_own_dataset_and_artefacts(
    live_hub: LiveHub, script: Callable[[str, str], Path]
) -> None:
    client = live_hub.client()
    lung = live_hub.datasets["lung"]
    # Another job of the same researcher, on the same data: its artefacts are not this job's to write.
    other = client.submit(script("import time; time.sleep(30)", "sleeper.py"), lung, timeout_s=60)
    probe = script(PROBE.replace('os.environ["PROBE_ARGS"]', repr(f"{live_hub.datasets['brain']},{other['id']}")))
    job = client.submit(probe, lung)
    done = _wait(live_hub, job["id"])
    log = client.logs(job["id"])
    assert done["state"] == "succeeded", log
    codes = json.loads(log.strip().splitlines()[-1])
    assert codes["own_manifest"] == 200 and codes["own_file"] == 200 and codes["own_artifact"] == 201
    refused = {k: v for k, v in codes.items() if not k.startswith("own_")}
    assert all(v == 403 for v in refused.values()), refused
    assert [a["name"] for a in client.artifacts(other["id"])] == []
    client.cancel(other["id"])

    # Once the job has ended its token is revoked.
    token = (live_hub.state.settings.data_dir / "jobs" / job["id"] / "code" / "token.txt").read_text()
    url = f"{live_hub.url}/api/v1/jobs/{job['id']}/dataset/manifest"
    r = httpx.get(url, headers={"Authorization": "Bearer " + token})
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    refusals = [o for a, o in live_hub.audit_actions(f"/api/v1/datasets/{live_hub.datasets['brain']}")]
    assert refusals and all(o.startswith("refused:403") for o in refusals)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has been killed; only its parent's reaping is left


SLEEPER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open("pids.txt", "w").write(f"{os.getpid()} {child.pid}")
print("sleeping", flush=True)
time.sleep(600)
"""


def test_cancel_kills_the_job_and_its_children(live_hub: LiveHub, script: Callable[[str, str], Path]) -> None:
    client = live_hub.client()
    job = client.submit(script(SLEEPER), live_hub.datasets["lung"], timeout_s=600)
    pids_file = live_hub.state.settings.data_dir / "jobs" / job["id"] / "code" / "pids.txt"
    deadline = time.monotonic() + 30
    while not (pids_file.exists() and pids_file.read_text() and "sleeping" in client.logs(job["id"])):
        assert time.monotonic() < deadline, client.logs(job["id"])
        time.sleep(0.05)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert client.status(job["id"])["state"] == "running"
    assert all(_alive(p) for p in pids)
    cancelled = client.cancel(job["id"])
    assert cancelled["state"] == "cancelled"
    assert not any(_alive(p) for p in pids)
    assert ("job.cancel", "cancelled") in live_hub.audit_actions(f"job/{job['id']}")
    # Cancelling a finished job is a conflict, not a silent success.
    auth = {"Authorization": f"Bearer {live_hub.tokens['researcher']}"}
    r = httpx.post(f"{live_hub.url}/api/v1/jobs/{job['id']}/cancel", headers=auth)
    assert r.status_code == 409


def test_a_job_over_its_timeout_is_stopped(live_hub: LiveHub, script: Callable[[str, str], Path]) -> None:
    client = live_hub.client()
    t0 = time.monotonic()
    code = "import time\nprint('start', flush=True)\ntime.sleep(120)"
    job = client.submit(script(code), live_hub.datasets["lung"], timeout_s=2)
    done = _wait(live_hub, job["id"], 30)
    assert done["state"] == "timed_out" and "2 s timeout" in done["message"]
    assert time.monotonic() - t0 < 15
    assert "start" in client.logs(job["id"])


def test_a_failing_script_reports_its_exit_code_and_output(
    live_hub: LiveHub, script: Callable[[str, str], Path]
) -> None:
    client = live_hub.client()
    code = "import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)"
    job = client.submit(script(code), live_hub.datasets["lung"], args=["--epochs", "1"])
    done = _wait(live_hub, job["id"])
    assert done["state"] == "failed" and done["exit_code"] == 3 and "code 3" in done["message"]
    assert "about to fail" in client.logs(job["id"])
    assert done["args"] == ["--epochs", "1"]


def test_the_cli_submits_waits_and_lists(live_hub: LiveHub, script: Callable[[str, str], Path]) -> None:
    path = script("import sys\nprint('hello from', sys.argv[1:])", "hello.py")
    env = {**os.environ, "PYTHONPATH": str(SRC), "MEDCLOUD_HUB_URL": live_hub.url,
           "MEDCLOUD_TOKEN": live_hub.tokens["researcher"]}  # fmt: skip
    cli = [sys.executable, "-c", "from medcloud.cli import main; main()", "jobs"]
    done = subprocess.run(
        [*cli, "submit", str(path), "--dataset", live_hub.datasets["lung"], "--arg", "x", "--wait"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hello from ['x']" in done.stdout and '"state": "succeeded"' in done.stdout
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "succeeded" in listed.stdout and "hello.py" in listed.stdout
    failed = subprocess.run([*cli, "status", "0" * 32], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 4 and "not found" in failed.stderr


class _UnpolledRunner(Runner):
    """A backend whose runtime has launched the job but whose monitor has not yet seen it start (Ray's
    monitor polls): `submit` only prepares the token, the test plays the job and the monitor."""

    name = "unpolled"

    def __init__(self) -> None:
        self.events: JobEvents | None = None
        self.env: dict[str, dict[str, str]] = {}

    def submit(self, spec: JobSpec) -> None:
        assert self.events is not None
        env = self.events.prepare(spec.job_id)
        assert env is not None
        self.env[spec.job_id] = env

    def cancel(self, job_id: str) -> bool:
        return job_id in self.env

    def logs(self, job_id: str, log_path: Path, max_bytes: int) -> str:
        return ""

    def close(self) -> None:
        self.env.clear()


def test_a_job_writing_before_its_runner_saw_it_start_is_running_not_refused(
    live_hub: LiveHub, script: Callable[[str, str], Path]
) -> None:
    from medcloud.jobs.service import JobService

    state = live_hub.state
    runner = _UnpolledRunner()
    state.jobs = svc = JobService(state.settings, state.catalog, state.blobs, state.verifier, runner=runner)
    runner.events = svc
    client = live_hub.client()
    job = client.submit(script("print('hi')"), live_hub.datasets["lung"])
    other = client.submit(script("print('hi')"), live_hub.datasets["lung"])
    assert client.status(job["id"])["state"] == "queued"
    token = runner.env[job["id"]]["MEDCLOUD_JOB_TOKEN"]
    url = f"{live_hub.url}/api/v1/jobs/{job['id']}/artifacts/result.json"
    # Neither a researcher nor another job's token may write it, and neither starts the job.
    r = httpx.put(url, content=b"{}", headers={"Authorization": f"Bearer {live_hub.tokens['researcher']}"})
    assert r.status_code == 403
    other_token = runner.env[other["id"]]["MEDCLOUD_JOB_TOKEN"]
    r = httpx.put(url, content=b"{}", headers={"Authorization": f"Bearer {other_token}"})
    assert r.status_code == 403
    assert client.status(job["id"])["state"] == "queued"
    # The job's own token proves it runs: its artefact is stored and the job is running, audited once.
    r = httpx.put(url, content=b'{"ok": 1}', headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    assert client.status(job["id"])["state"] == "running"
    # The monitor's late start neither cancels the job nor audits a second start; it records the runtime's id.
    assert svc.started(job["id"], "ray-42") is True
    assert state.catalog.jobs.get(job["id"])["external_id"] == "ray-42"
    assert [a for a in live_hub.audit_actions(f"job/{job['id']}") if a[0] == "job.start"] == [("job.start", "running")]
    svc.finished(job["id"], "succeeded", 0, "")
    assert client.status(job["id"])["state"] == "succeeded"
    # Once finished, its token is revoked and nothing more is written.
    r = httpx.put(url, content=b"{}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    # A cancelled job's monitor start is refused (the backend then stops it).
    client.cancel(other["id"])
    assert svc.started(other["id"], "ray-43") is False
