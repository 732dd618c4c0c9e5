"""The ingest fuzz harness (bench/fuzz_ingest.py): a short seeded run against a real hub, and proof that the
harness itself reports a 500, a hang, a reset connection and an accepted broken file when a server gives them
(so the smoke run cannot pass by not looking)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fuzz_ingest  # noqa: E402

SEED = 20261129
SERVER_FAULTS = ("server_error", "timeout", "crash", "connection_error", "memory")


@pytest.fixture(scope="module")
def corpus() -> fuzz_ingest.Corpus:
    return fuzz_ingest.Corpus(SEED)


@pytest.mark.slow
def test_fuzz_smoke_no_server_errors_or_hangs(tmp_path: Path, corpus: fuzz_ingest.Corpus) -> None:
    """A few hundred mutants over the single, batch and pydicom (>= 4 MiB) paths against a real hub."""
    cfg = fuzz_ingest.Config(
        count=300, seed=SEED, workers=2, timeout=20.0, out=tmp_path / "fuzz", confirm_max=4, progress=False,
        seed_check=False,
    )  # fmt: skip
    summary = fuzz_ingest.run(cfg, corpus)
    assert summary["count"] == 300
    assert set(summary["outcomes"]) == {"single", "batch", "pydicom"}
    totals = summary["totals"]
    # The run reached both the hub's acceptance and its refusals, so the mutants were not all trivially bad.
    assert totals.get("2xx", 0) > 0
    assert totals.get("4xx", 0) > 0
    faults = {k: summary["findings"][k] for k in SERVER_FAULTS if summary["findings"][k]}
    classes = [
        {k: c.get(k) for k in ("path", "outcome", "key", "count", "examples", "repro")}
        | {"hub": [(r["status"], r["signature"]) for r in c.get("replayed", [])]}
        for c in summary["finding_classes"]
        if c["outcome"] in SERVER_FAULTS
    ]
    assert not faults, json.dumps(classes, indent=1, default=str)[:8000]
    assert summary["hub"]["peak_rss_mib"] < cfg.rss_limit_mb


class _StubHandler(BaseHTTPRequestHandler):
    """Answers like a hub that accepts everything, except: 500 for one body, a hang for another, and a
    dropped connection for a third (chosen by SHA-256)."""

    server: _Stub

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self) -> None:
        self._answer(200, b"{}")

    def do_POST(self) -> None:
        sha = hashlib.sha256(self._body()).hexdigest()
        if sha == self.server.fail:
            return self._answer(500, b'{"title": "Internal error"}')
        if sha == self.server.hang:
            time.sleep(3)
        if sha == self.server.drop:
            self.close_connection = True
            self.connection.close()
            return None
        if self.path.endswith("/batch"):
            items = [{"index": i, "status": "stored"} for i in range(64)]
            return self._answer(200, json.dumps({"items": items}).encode())
        return self._answer(201, b'{"status": "stored"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail: str, hang: str, drop: str) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.fail, self.hang, self.drop = fail, hang, drop


@pytest.fixture
def stub(corpus: fuzz_ingest.Corpus) -> Iterator[_Stub]:
    sha = {m: hashlib.sha256(corpus.mutant(*fuzz_ingest._split(m)).body).hexdigest() for m in _PLANTED}
    server = _Stub(sha["single:3"], sha["single:5"], sha["batch:2"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


_PLANTED = ("single:3", "single:5", "batch:2")


def test_harness_reports_500_hang_reset_and_accepted_broken_input(
    tmp_path: Path, corpus: fuzz_ingest.Corpus, stub: _Stub
) -> None:
    out = tmp_path / "fuzz"
    cfg = fuzz_ingest.Config(
        count=40, seed=SEED, paths=("single", "batch"), workers=2, timeout=1.0, out=out, confirm_max=20,
        url=f"http://127.0.0.1:{stub.server_address[1]}", token="t", progress=False,
    )  # fmt: skip
    summary = fuzz_ingest.run(cfg, corpus)
    findings = summary["findings"]
    assert findings["server_error"] == ["single:3"]
    assert findings["timeout"] == ["single:5"]
    assert findings["connection_error"] == ["batch:2"]
    # The stub accepts everything: exactly the mutants the oracle knows are broken must be flagged.
    broken = set()
    for path, index in fuzz_ingest.plan(cfg):
        req = corpus.mutant(path, index)
        if req.must_reject or req.reject_parts:
            broken.add(f"{path}:{index}")
    assert broken - set(_PLANTED), "the plan holds no mutant the oracle judges: the check would be vacuous"
    assert set(findings["accepted_invalid"]) == broken - set(_PLANTED)
    # Each planted failure is replayed and its exact input written out for reproduction.
    for mid in _PLANTED:
        req = corpus.mutant(*fuzz_ingest._split(mid))
        stem = mid.replace(":", "-")
        assert (out / f"{stem}.bin").read_bytes() == req.body
        info = json.loads((out / f"{stem}.json").read_text())
        assert info["replay"]["outcome"] == info["first"]["outcome"]


def test_mutants_are_reproducible_from_seed_and_index(corpus: fuzz_ingest.Corpus) -> None:
    again = fuzz_ingest.Corpus(SEED)
    for path in fuzz_ingest.PATHS:
        for index in (0, 7, 123):
            a, b = corpus.mutant(path, index), again.mutant(path, index)
            assert (a.body, a.headers, a.ops) == (b.body, b.headers, b.ops)
    assert corpus.mutant("single", 1).body != fuzz_ingest.Corpus(SEED + 1).mutant("single", 1).body


def test_pydicom_path_mutants_are_at_least_4_mib(corpus: fuzz_ingest.Corpus) -> None:
    for index in range(25):
        req = corpus.mutant("pydicom", index)
        assert len(req.body) >= fuzz_ingest.PYDICOM_THRESHOLD, req.ops


def test_nested_sequence_lengths_are_consistent(corpus: fuzz_ingest.Corpus) -> None:
    """The deep-nesting operator builds well-formed sequences (defined and undefined lengths), so the hub
    sees depth, not a length error."""
    seed = next(s for s in corpus.dicom if fuzz_ingest.walk(s.data).explicit)  # type: ignore[union-attr]
    lay = fuzz_ingest.walk(seed.data)
    assert lay is not None and lay.complete
    for style in (lambda lv: True, lambda lv: False, lambda lv: lv % 3 == 0):
        m = fuzz_ingest.FileMutant(seed, seed.data)
        fuzz_ingest._insert_top(m, lay, 0x0040A730, fuzz_ingest.nested_sequence(150, "<", True, style))
        deep = fuzz_ingest.walk(m.data, max_depth=400)
        assert deep is not None and deep.complete
        assert max(e.depth for e in deep.elems) >= 150


def test_truncation_oracle_flags_only_cuts_inside_an_element(corpus: fuzz_ingest.Corpus) -> None:
    """A DICOM cut between two top-level elements (or not cut at all) parses cleanly and cannot be told from a
    whole file without a hash: the oracle must only call a cut broken when it lies inside an element."""
    judged = 0
    for index in range(600):
        req = corpus.mutant("single", index)
        if len(req.ops) != 1 or req.ops[0]["op"] not in ("truncate", "truncate_boundary") or not req.must_reject:
            continue
        seed = next((s for s in corpus.dicom if s.name == req.seeds[0]), None)
        if seed is None:  # an image: its oracle is the end marker, checked by the hub's reader
            continue
        lay = fuzz_ingest.walk(fuzz_ingest.unique_sop_uid(seed.data, fuzz_ingest.walk(seed.data), f"single:{index}"))  # type: ignore[arg-type]
        assert lay is not None
        cut = req.ops[0]["at"]
        assert cut < len(seed.data), req.ops
        assert cut not in lay.top_boundaries(), req.ops
        assert any(e.off < cut < e.end for e in lay.elems) or cut < lay.meta_end, req.ops
        judged += 1
    assert judged >= 10
