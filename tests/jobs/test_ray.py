"""Jobs on a real local Ray head (Ray Jobs API, token auth on, one pretend GPU), end to end through the hub."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.conftest import LiveHub, expected_digest, serve

pytest.importorskip("ray.job_submission")

from tests.jobs.raycluster import RayHead, start_head, stop_head

pytestmark = pytest.mark.slow

GPU_JOB = """
import hashlib, json, os
from medcloud.jobs.runtime import dataset, register_model, save_artifact

ds = dataset()
h = hashlib.sha256()
for f in ds.files:
    h.update(ds.read(f))
out = {"files": len(ds.files), "digest": h.hexdigest(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
       "token_env": sorted(k for k in os.environ if k.startswith("MEDCLOUD_"))}
print("RESULT", json.dumps(out))
save_artifact("result.json", json.dumps(out).encode())
save_artifact("weights.bin", h.digest())
register_model("ray-tiny", "1", "weights.bin", notice="SYNTHETIC test data", synthetic=True)
"""


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    # MEDCLOUD_TEST_RAY_HEAD: a JSON file {address, token_file, root} of a head kept up while developing.
    reuse = os.environ.get("MEDCLOUD_TEST_RAY_HEAD")
    if reuse:
        info = json.loads(Path(reuse).read_text())
        yield RayHead(info["address"], Path(info["token_file"]), Path(info["root"]), None)  # type: ignore[arg-type]
        return
    try:
        head = start_head(num_gpus=1)
    except RuntimeError:  # a loaded machine can miss Ray's fixed 30 s raylet start window once
        head = start_head(num_gpus=1)
    try:
        yield head
    finally:
        stop_head(head)


@pytest.fixture
def ray_hub(tmp_path: Path, ray_head: RayHead) -> Iterator[LiveHub]:
    yield from serve(tmp_path, ray_address=ray_head.address, ray_token_file=ray_head.token_file)


def test_the_cluster_refuses_a_client_without_its_token(ray_head: RayHead) -> None:
    from ray.job_submission import JobSubmissionClient

    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}):
        with pytest.raises(Exception, match=r"(?i)auth|token|401|403"):
            JobSubmissionClient(ray_head.address, headers=headers).list_jobs()


def test_a_gpu_job_runs_on_ray_end_to_end(ray_hub: LiveHub, ray_head: RayHead, tmp_path: Path) -> None:
    code = tmp_path / "gpu_job.py"
    code.write_text(GPU_JOB)
    client = ray_hub.client()
    lung = ray_hub.datasets["lung"]
    job = client.submit(code, lung, num_gpus=1, timeout_s=240)
    assert job["backend"] == "ray" and job["num_gpus"] == 1
    done = client.wait(job["id"], timeout_s=240, poll_s=0.5)
    log = client.logs(job["id"])
    assert done["state"] == "succeeded", (done["message"], log)
    assert done["external_id"] == f"medcloud-{job['id']}" and done["exit_code"] == 0

    result = json.loads(client.download_artifact(job["id"], "result.json", tmp_path / "r.json").read_bytes())
    assert result["files"] == len(ray_hub.blobs["lung"]) and result["digest"] == expected_digest(ray_hub.blobs["lung"])
    assert result["cuda"] == "0", "Ray did not give the job its GPU"
    assert result["token_env"] == ["MEDCLOUD_DATASET_ID", "MEDCLOUD_HUB_URL", "MEDCLOUD_JOB_ID", "MEDCLOUD_JOB_TOKEN"]
    assert "RESULT" in log

    from ray.job_submission import JobSubmissionClient

    ray = JobSubmissionClient(ray_head.address, headers={"Authorization": f"Bearer {ray_head.token}"})
    info = ray.get_job_info(done["external_id"])
    assert str(info.status.value) == "SUCCEEDED" and info.metadata == {"medcloud_job": job["id"]}
    actions = [a for a, _ in ray_hub.audit_actions(f"job/{job['id']}")]
    assert actions[0] == "job.submit" and "job.start" in actions and "job.finish" in actions

    # Cancel stops the job on the cluster.
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    job2 = client.submit(sleeper, lung, timeout_s=600)
    for _ in range(240):
        if client.status(job2["id"])["state"] == "running":
            break
        import time

        time.sleep(0.5)
    assert client.cancel(job2["id"])["state"] == "cancelled"
    for _ in range(120):
        status = str(ray.get_job_status(f"medcloud-{job2['id']}").value)
        if status == "STOPPED":
            break
        time.sleep(0.5)
    assert status == "STOPPED"
