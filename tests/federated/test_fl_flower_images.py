"""The images task (SYNTHETIC site-shifted images, small CNN) on Flower's simulation engine.

Two sites, two rounds, 32 training and 16 held-out images each, one local epoch: plaintext and aes
runs match the in-process FedAvg of `medcloud.federated.images` (`run_fedavg`, the same model and
data code) to 1e-5 in every weight; the card holds each site's accuracy on its own held-out images,
worst site first; the plaintext model is registered by the ServerApp and served by
`medcloud serve-model`; the aes model, which the aggregator cannot read, is opened at a site.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from medcloud.federated import images
from medcloud.federated.flower.settings import FLSettings
from medcloud.vision.registry import FL_TASK, resolve

SITES, ROUNDS, N_TRAIN, N_TEST, EPOCHS = 2, 2, 32, 16, 1
# aes is fixed point at 2^-32 with exact sums; the torch sites train in float32, so a weight may land
# one float32 step apart (measured: 5.4e-8 after two rounds). Plaintext Flower FedAvg: 0.0 measured.
TOLERANCE = 1e-5
TOKEN = "flower-images-serve-token-0123456789"


def _settings(mode: str, data: Path) -> FLSettings:
    return FLSettings(
        mode=mode, task="images", rounds=ROUNDS, num_sites=SITES, images_train=N_TRAIN, images_test=N_TEST,
        images_epochs=EPOCHS, evaluate=False, register_dir=str(data),
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, images_plain_fedavg: Callable[..., Any]) -> dict[str, Any]:
    from medcloud.federated.simulate import simulate

    root = tmp_path_factory.mktemp("flower-images")
    out: dict[str, Any] = {"root": root, "data": root / "data"}
    t0 = time.monotonic()
    for mode in ("plain", "aes"):
        out[mode] = simulate(_settings(mode, out["data"]), root / mode)
    out["seconds"] = time.monotonic() - t0
    print(f"two Flower image simulations: {out['seconds']:.1f} s", file=sys.stderr)
    out["reference"] = images_plain_fedavg(SITES, ROUNDS, EPOCHS, N_TRAIN, N_TEST)  # train_federated("plain", ...)
    return out


@pytest.mark.slow
def test_plaintext_flower_matches_in_process_fedavg_and_is_registered(runs: dict[str, Any]) -> None:
    card, root = runs["plain"], runs["root"]
    w = np.load(root / "plain" / "model" / "model.npy")
    ref = runs["reference"].weights
    assert w.shape == (images.n_params(),) and np.max(np.abs(ref)) > 0.05
    assert np.max(np.abs(w - ref)) <= TOLERANCE
    assert card["task"] == "images" and card["sites"] == ["site1", "site2"]
    m = resolve(runs["data"], "fl-shapes", "flower-plain-r2")
    m.verify()
    assert card["registry"]["registered"] == str(m.path)
    assert m.card["task"] == FL_TASK and m.card["synthetic"] is True and "SYNTHETIC" in m.card["notice"]
    assert m.card["training"]["mode"] == "plain" and m.card["training"]["rounds"] == ROUNDS
    assert m.card["sites"]["site2"]["synthetic"] is True and m.card["sites"]["site2"]["n_test"] == N_TEST
    # the ONNX file predicts what the aggregated weights predict
    import onnxruntime as ort

    x = images.make_site(1, 4, 12).x_test
    logits = ort.InferenceSession(str(m.path / "model.onnx")).run(None, {"image": x})[0]
    assert np.array_equal(logits.argmax(1), images.predict(ref, x))


@pytest.mark.slow
def test_card_has_each_sites_evaluation_worst_first(runs: dict[str, Any]) -> None:
    ref = runs["reference"].weights
    sites = images.load_sites(SITES, N_TRAIN, N_TEST)
    expected = {s.name: images.evaluate(ref, s.x_test, s.y_test) for s in sites}
    for mode in ("plain", "aes"):
        metrics = runs[mode]["per_site_evaluation"]
        rows = metrics["per_site_worst_first"]
        assert [r["site"] for r in rows] == sorted(expected, key=lambda s: (round(expected[s], 4), s)), mode
        assert [r["accuracy"] for r in rows] == sorted(r["accuracy"] for r in rows)
        for r in rows:  # each site scored the global model on its own held-out images
            assert r["n"] == N_TEST and r["accuracy"] == round(expected[r["site"]], 4), (mode, r)
        assert metrics["worst_site"] == rows[0]["site"]
        x, y = images.pooled_test(sites)
        assert metrics["test_acc_all_sites"] == round(images.evaluate(ref, x, y), 4)
        assert metrics["n_test_all_sites"] == SITES * N_TEST and "not_evaluated" not in metrics
        assert "SYNTHETIC" in metrics["evaluation"]
    assert runs["plain"]["client_metrics"] == {}  # no round-averaged figure stands in for the per-site one
    registered = resolve(runs["data"], "fl-shapes", "flower-plain-r2").card["metrics"]
    assert registered == runs["plain"]["per_site_evaluation"]


@pytest.mark.slow
def test_aes_model_stays_encrypted_until_a_site_opens_it(runs: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from medcloud.cli import app
    from medcloud.federated.he import NoSecretKey
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend

    root, card = runs["root"] / "aes", runs["aes"]
    model = root / "model"
    assert card["model_readable_by_aggregator"] is False and "registry" not in card
    assert not (model / "model.npy").exists() and not (model / "model.onnx").exists()
    with pytest.raises(NoSecretKey):
        agg = aggregator_backend("aes", root / "keys" / "public")
        agg.decrypt(agg.deserialize((model / "model.ciphertext").read_bytes()))
    keys = root / "keys"
    args = ["fl", "open-model", "--model", str(model), "--site", "site1", "--site-dir", str(keys / "site1")]
    args += ["--public", str(keys / "public"), "--out", str(root / "opened"), "--register", str(runs["data"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = resolve(runs["data"], "fl-shapes", "flower-aes-r2")
    m.verify()
    assert m.card["training"]["mode"] == "aes" and m.card["metrics"] == card["per_site_evaluation"]
    # what the site decrypted is the in-process plaintext FedAvg's model, to the tolerance
    site = site_backend("aes", KeyPaths("site1", keys / "site1", keys / "public"))
    w = site.decrypt(site.deserialize((model / "model.ciphertext").read_bytes())) / card["total_weight"]
    ref = runs["reference"].weights
    assert np.max(np.abs(w - ref)) <= TOLERANCE
    # and the ONNX file it wrote computes what those weights compute
    import onnxruntime as ort

    x = images.make_site(0, 4, 12).x_test
    logits = ort.InferenceSession(str(m.path / "model.onnx")).run(None, {"image": x})[0]
    assert np.array_equal(logits.argmax(1), images.predict(ref, x))
    # a second open of the same version is refused before anything is decrypted or written
    again = CliRunner().invoke(app, [*args[:-4], "--out", str(root / "again"), "--register", str(runs["data"])])
    assert again.exit_code != 0 and "already registered" in str(again.exception or again.output)
    assert not (root / "again").exists()


def test_settings_refuse_what_the_images_task_cannot_do(tmp_path: Path) -> None:
    from medcloud.errors import InvalidInput

    with pytest.raises(InvalidInput, match="FedAvg"):
        FLSettings(mode="aes", task="images", protocol="deepprotect")
    with pytest.raises(InvalidInput, match=">= 1"):
        FLSettings(mode="plain", task="images", images_test=0)
    with pytest.raises(InvalidInput, match="unknown task"):
        FLSettings(mode="plain", task="xray")


def test_server_refuses_a_taken_version_before_training(tmp_path: Path) -> None:
    """`fl server --register` checks the registry before it becomes the SuperLink."""
    from typer.testing import CliRunner

    from medcloud.cli import app

    data = tmp_path / "data"
    (data / "models" / "fl-shapes" / "flower-plain-r2").mkdir(parents=True)
    base = ["fl", "server", "--public", str(tmp_path / "pub"), "--mode", "plain", "--sites", "2", "--rounds", "2"]
    base += ["--workdir", str(tmp_path / "srv"), "--insecure", "--task", "images", "--register", str(data)]
    result = CliRunner().invoke(app, base)
    assert result.exit_code != 0 and "already registered" in str(result.exception or result.output)
    result = CliRunner().invoke(app, [*base, "--name", "gram-stain", "--version", "v9"])
    assert result.exit_code != 0 and "Gram-stain detector" in str(result.exception or result.output)
    assert not (tmp_path / "srv" / "flower-app").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_model_serves_the_flower_trained_classifier(runs: dict[str, Any]) -> None:
    import httpx
    import onnxruntime as ort
    from PIL import Image

    m = resolve(runs["data"], "fl-shapes", "flower-plain-r2")
    medcloud = Path(sys.executable).with_name("medcloud")
    if not medcloud.exists():
        pytest.skip("the medcloud console script is not installed next to this Python")
    port = _free_port()
    env = dict(os.environ, MEDCLOUD_SERVE_TOKEN_SHA256=hashlib.sha256(TOKEN.encode()).hexdigest())
    src = str(Path(images.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    argv = [str(medcloud), "serve-model", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    argv += ["--data", str(runs["data"]), "--name", "fl-shapes", "--version", "flower-plain-r2"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else b""
        health = httpx.get(url + "/healthz").json()
        assert health["model"] == "flower-plain-r2" and health["torch_imported"] is False
        # a SYNTHETIC image of site 2 (a ring, the class it sees most), as a PNG
        site = images.make_site(1, 1, 8)
        arr = np.clip(np.round(site.x_test[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        png = buf.getvalue()
        refused = httpx.post(url + "/api/v1/inference", content=png, headers={"Content-Type": "image/png"})
        assert refused.status_code == 401
        r = httpx.post(
            url + "/api/v1/inference",
            content=png,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        # what the registered ONNX model says about the same 8-bit image
        x = (arr.astype(np.float32).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
        logits = ort.InferenceSession(str(m.path / "model.onnx")).run(None, {"image": x})[0][0]
        assert body["label"] == images.CLASSES[int(logits.argmax())]
        assert body["scores"][0]["label"] == body["label"] and len(body["scores"]) == len(images.CLASSES)
        assert abs(sum(s["score"] for s in body["scores"]) - 1.0) < 1e-3
        assert body["synthetic_model"] is True and body["kept"] is False
        assert body["model"]["name"] == "fl-shapes" and body["model"]["sha256"] == m.card["sha256"]
        # a larger photo of the same image is resized to the card's 28 x 28 input
        big = io.BytesIO()
        Image.fromarray(arr).resize((56, 56), Image.Resampling.NEAREST).save(big, "PNG")
        r = httpx.post(
            url + "/api/v1/inference", content=big.getvalue(), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["image"] == {"width": 56, "height": 56}
        assert r.json()["label"] in images.CLASSES
        card = httpx.get(url + "/api/v1/models/fl-shapes/flower-plain-r2", headers={"Authorization": f"Bearer {TOKEN}"})
        assert card.status_code == 200 and card.json()["metrics"]["worst_site"] in ("site1", "site2")
        bad = httpx.post(
            url + "/api/v1/inference", content=b"not an image", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert bad.status_code == 415
    finally:
        proc.terminate()
        proc.wait(10)


def test_open_flower_model_opens_only_an_encrypted_images_run(tmp_path: Path, aes_key: tuple[bytes, bytes]) -> None:
    """`images.open_flower_model` (what `fl open-model` runs) without Flower: a sum of two
    encrypted uploads opens to the average; anything else is refused with a clear message."""
    from medcloud.errors import InvalidInput
    from medcloud.federated.he.aes import AesCtrBackend

    site = AesCtrBackend(aes_key[0])
    w = images.initial_weights()
    fields = images.card_fields({"mode": "aes"}, {}, images.per_site_metrics({"site1": (0.5, 4), "site2": (1.0, 4)}))
    summed = site.serialize(site.add(site.encrypt(w * 3), site.encrypt(w * 5)))

    def run_dir(name: str, blob: bytes = summed, **card: Any) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "model.ciphertext").write_bytes(blob)
        body = {"task": "images", "mode": "aes", "rounds": 1, "total_weight": 8.0, "image_card": fields} | card
        (d / "model_card.json").write_text(json.dumps(body))
        return d

    card = images.open_flower_model(run_dir("ok"), site, tmp_path / "out", "fl-shapes", "v1")
    assert card["metrics"]["worst_site"] == "site1" and card["metrics"]["test_acc_all_sites"] == 0.75
    import onnxruntime as ort

    x = images.make_site(0, 1, 6).x_test
    logits = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(None, {"image": x})[0]
    assert np.array_equal(logits.argmax(1), images.predict(w, x))
    refusals = {
        "encrypted in mode 'ckks'": run_dir("ckks", mode="ckks"),
        "no encrypted images model": run_dir("tabular", task="breast-cancer"),
        "no positive total_weight": run_dir("total", total_weight=0),
        "not the image CNN's": run_dir("short", site.serialize(site.encrypt(np.ones(31)))),
    }
    for message, folder in refusals.items():
        with pytest.raises(InvalidInput, match=message):
            images.open_flower_model(folder, site, tmp_path / f"out-{folder.name}", "fl-shapes", "v1")
        assert not (tmp_path / f"out-{folder.name}").exists()
    with pytest.raises(InvalidInput, match="not an encrypted Flower images run"):
        images.open_flower_model(tmp_path / "missing", site, tmp_path / "out-missing", "fl-shapes", "v1")
