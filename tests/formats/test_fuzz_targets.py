"""The atheris targets of bench/fuzz_atheris.py, run over their seed corpora and the checked-in regression
inputs (tests/formats/fuzz_regressions/<target>/*): no exception but the documented refusals, and fast.

The long coverage-guided runs are the bench's (>= 100,000 inputs per target); this keeps what they found
fixed, and keeps the targets themselves working, without atheris.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fuzz_atheris  # noqa: E402

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


@pytest.mark.parametrize("target", fuzz_atheris.TARGETS)
def test_target_passes_its_seeds_and_regressions(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = fuzz_atheris.write_corpus(target, corpus, 65536)
    assert seeds >= 4
    inputs = sorted(corpus.iterdir()) + sorted((REGRESSIONS / target).glob("*"))
    func = fuzz_atheris.TARGET_FUNCS[target]
    for f in inputs:
        t0 = time.monotonic()
        func(f.read_bytes())  # raises on a crash or a broken property
        assert time.monotonic() - t0 < 30, f"{f.name} took {time.monotonic() - t0:.1f} s (a hang)"


def test_targets_do_not_swallow_unexpected_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal (MedcloudError) is an answer; any other exception from the code under test is a crash."""
    from medcloud.errors import InvalidInput
    from medcloud.hub import multipart

    body = b"multipart/related; boundary=b\x00\n--b--\r\n"

    def refuse(_: str) -> bytes:
        raise InvalidInput("refused")

    monkeypatch.setattr(multipart, "boundary_of", refuse)
    fuzz_atheris.target_multipart(body)  # a refusal passes

    def broken(_: str) -> bytes:
        raise IndexError("a parser bug")

    monkeypatch.setattr(multipart, "boundary_of", broken)
    with pytest.raises(IndexError):
        fuzz_atheris.target_multipart(body)
    with pytest.raises(fuzz_atheris.Finding):
        fuzz_atheris._Parts().write(b"data before any part")
