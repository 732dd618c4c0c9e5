"""The CLI as an operator uses it: one-line errors with exit codes, tokens printed once, the demo."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "medcloud.cli"]


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180, **kw)  # type: ignore[call-overload]


def test_token_create_prints_only_the_token_on_stdout(tmp_path: Path) -> None:
    r = run("hub", "token", "create", "--data", str(tmp_path), "--role", "researcher", "--project", "lung")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("mct_") and "\n" not in token
    assert "not shown again" in r.stderr
    listed = run("hub", "token", "list", "--data", str(tmp_path)).stdout
    assert token.split(".")[1] not in listed and json.loads(listed.splitlines()[0])["role"] == "researcher"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["hub", "token", "create", "--role", "root"], 2, "unknown role"),
        (["hub", "token", "create", "--role", "researcher"], 2, "needs at least one --project"),
        (["hub", "token", "create", "--role", "site", "--site", "../x"], 2, "site name"),
        (["hub", "token", "revoke", "0123456789abcdef"], 4, "no active token"),
        (["hub", "token", "create", "--role", "site", "--site", "a", "--expires", "soon"], 2, "cannot read duration"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(tmp_path: Path, args: list[str], code: int, words: str) -> None:
    r = run(*args, "--data", str(tmp_path))
    assert r.returncode == code, (r.stdout, r.stderr)
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_feeds_a_hub_with_deidentified_samples(tmp_path: Path) -> None:
    port = _free_port()
    r = run("demo", "--data", str(tmp_path / "demo"), "--port", str(port), "--limit", "12", "--no-serve")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"http://127.0.0.1:{port}" in r.stdout and "researcher token:" in r.stdout
    tokens = json.loads((tmp_path / "demo" / "tokens.json").read_text())
    assert oct((tmp_path / "demo" / "tokens.json").stat().st_mode & 0o777) == "0o600"
    # The hub is stopped with the demo; start it again on the same data and look at what arrived.
    hub = subprocess.Popen([*CLI, "hub", "serve", "--data", str(tmp_path / "demo" / "hub"), "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            import time

            time.sleep(0.2)
        h = {"Authorization": f"Bearer {tokens['researcher']}"}
        instances = httpx.get(f"{base}/api/v1/instances?limit=1000", headers=h).json()
        assert instances["total"] >= 3
        # The example per-society target table is loaded; the researcher's page is served.
        progress = httpx.get(f"{base}/api/v1/progress", headers=h).json()
        assert {s["society"] for s in progress["societies"]} == {"radiology-example", "pathology-example"}
        assert httpx.get(f"{base}/research").status_code == 200
        images = httpx.get(f"{base}/api/v1/images", headers=h).json()
        assert {i["media_type"] for i in images["items"]} >= {"image/jpeg", "image/tiff"}
        # What arrived is de-identified: no planted EXIF owner in the photos, identity removed in DICOM.
        photo = next(i for i in images["items"] if i["media_type"] == "image/jpeg")
        body = httpx.get(f"{base}/api/v1/images/{photo['id']}/file", headers=h).content
        assert b"Yamada" not in body and b"DemoCam" not in body
        sop = instances["items"][0]["sop_uid"]
        dcm = httpx.get(f"{base}/api/v1/instances/{sop}/file", headers=h).content
        import io

        import pydicom

        assert pydicom.dcmread(io.BytesIO(dcm)).PatientIdentityRemoved == "YES"
        audit = run("audit", "verify", "--data", str(tmp_path / "demo" / "hub"))
        assert audit.returncode == 0 and "intact" in audit.stdout
    finally:
        hub.terminate()
        hub.wait(10)


def test_societies_from_the_command_line(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path)]
    r = run("hub", "society", "load", *data)  # the shipped EXAMPLE table
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"societies": 2, "sites": 2}
    assert (
        run(
            "hub", "society", "set", "hosp-group", "--target-cases", "30", "--display-name-ja", "病院群", *data
        ).returncode
        == 0
    )
    assert run("hub", "site", "set", "kyoto", "--society", "hosp-group", "--target-cases", "5", *data).returncode == 0
    listed = run("hub", "society", "list", *data)
    assert listed.returncode == 0, listed.stderr
    assert "hosp-group" in listed.stdout and "kyoto" in listed.stdout and "radiology-example" in listed.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"societies": [{"name": "x", "target_cases": -1}]}')
    for args, words in (
        (["hub", "society", "load", str(bad)], "target"),
        (["hub", "society", "load", str(tmp_path / "missing.json")], "cannot read"),
        (["hub", "site", "set", "osaka", "--society", "nope"], "not registered"),
        (["hub", "society", "set", "bad name"], "society name"),
    ):
        r = run(*args, *data)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
