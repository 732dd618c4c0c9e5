"""The images task on real Flower processes: `medcloud fl server --task images --register DATA`
(SuperLink), two `medcloud fl site` SuperNodes and `medcloud fl submit`, plaintext FedAvg.

Each SuperNode's ClientApp generates its own SYNTHETIC images from its `--site-index`, trains the
small CNN and, after the last round, scores the global model on its own held-out images; the
ServerApp writes model.onnx + card.json (per-site accuracy, worst site first) and registers it.
The model equals the in-process FedAvg (`images.train_federated`). Every process started here is
killed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.federated.test_fl_deploy import MEDCLOUD, Processes, _free_ports, _wait_for_log

pytest.importorskip("flwr")
pytest.importorskip("torch")

SITES = ["site1", "site2"]
# One local epoch (`fl submit --run-config images-epochs=1`, read by the ServerApp and each
# ClientApp): the same training code as the default two, half the work in every ClientApp, and the
# in-process reference is the very run test_fl_flower_images compares with (trained once a session).
ROUNDS, N_TRAIN, N_TEST, EPOCHS = 2, 32, 16, 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_images_task_on_superlink_and_supernodes_registers_the_model(
    tmp_path: Path, images_plain_fedavg: Callable[..., Any]
) -> None:
    if not MEDCLOUD.exists():
        pytest.skip("the medcloud console script is not installed next to this Python")
    import medcloud
    from medcloud.federated import images
    from medcloud.vision.registry import FL_TASK, resolve

    t_start = time.monotonic()
    link_port, *ports = _free_ports(len(SITES) + 1)
    superlink = f"127.0.0.1:{link_port}"
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")  # never the user's ~/.flwr
    env["PATH"] = os.pathsep.join([str(MEDCLOUD.parent), env.get("PATH", "")])
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    # The code under test, whatever folder Flower starts its app processes in.
    src = str(Path(medcloud.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    (tmp_path / "logs").mkdir()
    procs = Processes(env, tmp_path / "logs")
    srv, data = tmp_path / "srv", tmp_path / "data"
    try:
        procs.start(
            "superlink",
            [str(MEDCLOUD), "fl", "server", "--public", str(tmp_path / "public"), "--mode", "plain",
             "--sites", str(len(SITES)), "--rounds", str(ROUNDS), "--workdir", str(srv), "--insecure",
             "--port", str(link_port), "--state-in-memory", "--no-evaluate", "--task", "images",
             "--images-train", str(N_TRAIN), "--images-test", str(N_TEST), "--register", str(data)],
        )  # fmt: skip
        for i, name in enumerate(SITES):
            procs.start(
                name,
                [str(MEDCLOUD), "fl", "site", "--site", name, "--site-index", str(i), "--site-dir",
                 str(tmp_path / name), "--public", str(tmp_path / "public"), "--superlink", superlink, "--insecure",
                 "--port", str(ports[i])],
            )  # fmt: skip
        _wait_for_log(procs, "superlink", "running on", 30)
        for name in SITES:
            _wait_for_log(procs, name, "SuperNode ID", 30)
        submit = procs.start(
            "submit",
            [str(MEDCLOUD), "fl", "submit", "--workdir", str(srv), "--superlink", superlink, "--insecure",
             "--run-config", f"images-epochs={EPOCHS}"],
        )  # fmt: skip
        try:
            rc = submit.wait(timeout=max(1.0, t_start + 270 - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not finish:\n{procs.log('submit')[-3000:]}\n{procs.log('superlink')[-3000:]}")
        assert rc == 0, procs.log("submit")[-3000:]
        run_card = srv / "model" / "model_card.json"
        assert run_card.is_file(), procs.log("submit")[-3000:]
    finally:
        procs.stop()
    assert procs.leftover == [], "processes survived the test"
    print(f"images task on SuperLink + {len(SITES)} SuperNodes: {time.monotonic() - t_start:.1f} s", file=sys.stderr)

    card = json.loads(run_card.read_text())
    assert card["task"] == "images" and card["sites"] == SITES
    m = resolve(data, "fl-shapes", "flower-plain-r2")
    m.verify()
    assert m.card["task"] == FL_TASK and "SYNTHETIC" in m.card["notice"] and m.card["training"]["rounds"] == ROUNDS
    assert m.card["training"]["local_epochs"] == EPOCHS  # the submitted run config reached the ServerApp
    ref = images_plain_fedavg(len(SITES), ROUNDS, EPOCHS, N_TRAIN, N_TEST).weights  # train_federated("plain", ...)
    w = np.load(srv / "model" / "model.npy")
    assert np.max(np.abs(w - ref)) <= 1e-5  # plaintext Flower FedAvg = in-process FedAvg
    # each SuperNode scored the final model on its own held-out images
    sites = images.load_sites(len(SITES), N_TRAIN, N_TEST)
    rows = {r["site"]: r for r in m.card["metrics"]["per_site_worst_first"]}
    assert set(rows) == set(SITES)
    for s in sites:
        assert rows[s.name]["n"] == N_TEST and rows[s.name]["accuracy"] == round(
            images.evaluate(ref, s.x_test, s.y_test), 4
        )
    accs = [r["accuracy"] for r in m.card["metrics"]["per_site_worst_first"]]
    assert (
        accs == sorted(accs) and m.card["metrics"]["worst_site"] == m.card["metrics"]["per_site_worst_first"][0]["site"]
    )
    assert m.card["sites"]["site1"]["shift"]["description"] == images.site_shift(0).description
