"""The labelled set meets the bars, and `medcloud nlp findings` behaves as an operator expects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medcloud.errors import InvalidInput
from medcloud.nlp import CODES, STATUSES
from medcloud.nlp.cli import decode_report_bytes
from medcloud.nlp.evaluation import load_examples, score

DATA = Path(__file__).parent / "data" / "findings_eval.jsonl"
CLI = [sys.executable, "-m", "medcloud.cli", "nlp", "findings"]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=60, check=False)


def test_evaluation_set_covers_every_code_and_status_in_both_languages() -> None:
    examples = load_examples(DATA)
    assert len(examples) >= 300
    for lang in ("ja", "en"):
        mine = [e for e in examples if e.lang == lang]
        assert {e.split for e in mine} == {"dev", "heldout", "heldout2", "heldout3", "heldout4", "heldout5"}
        labels = {pair for e in mine for pair in e.gold}
        assert {c for c, _ in labels} == set(CODES)
        assert {s for _, s in labels} == set(STATUSES)


@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize("split", ["dev", "heldout", "heldout2", "heldout3", "heldout4", "heldout5"])
def test_micro_f1_bar_per_language(lang: str, split: str) -> None:
    report = score([e for e in load_examples(DATA) if e.lang == lang and e.split == split])
    assert report.micro.f1()["f1"] >= 0.90, report.errors


def test_scoring_counts_wrong_status_as_a_miss_and_a_spurious_pair() -> None:
    from medcloud.nlp.evaluation import Example
    from medcloud.nlp.findings import Finding

    ex = Example("x", "en", "dev", (("nodule", "absent"),))
    report = score([ex], lambda text, lang: [Finding("nodule", "present", (0, 1))])
    assert (report.micro.tp, report.micro.fp, report.micro.fn) == (0, 1, 1)
    assert report.micro.f1()["f1"] == 0.0


def test_malformed_evaluation_line_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "lang": "en", "findings": []}\n{"text": "no labels"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"bad.jsonl:2"):
        load_examples(bad)


def test_cli_reads_one_report_per_line_on_stdin() -> None:
    r = run(stdin="右肺に結節を認めるが、胸水は認めない。\n\nNo pneumothorax, but a small pleural effusion.\n".encode())
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
    assert [row["text"] for row in lines] == [
        "右肺に結節を認めるが、胸水は認めない。",
        "No pneumothorax, but a small pleural effusion.",
    ]
    assert lines[0]["findings"] == [
        {"code": "nodule", "status": "present", "span": [3, 5]},
        {"code": "pleural_effusion", "status": "absent", "span": [11, 13]},
    ]
    assert "結節" in r.stdout.decode("utf-8")  # ensure_ascii=False: readable Japanese
    assert [f["status"] for f in lines[1]["findings"]] == ["absent", "present"]
    assert run("-", stdin=b"No PTX.\n").stdout == run(stdin=b"No PTX.\n").stdout


def test_cli_reads_a_file_in_utf8_and_shift_jis(tmp_path: Path) -> None:
    text = "気胸なし。\nｽﾘｶﾞﾗｽ影を認め、肺炎を疑う。\n"
    for encoding in ("utf-8", "shift_jis", "cp932"):
        path = tmp_path / f"reports.{encoding}.txt"
        path.write_bytes(text.encode(encoding))
        r = run(str(path))
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
        assert [[(f["code"], f["status"]) for f in row["findings"]] for row in rows] == [
            [("pneumothorax", "absent")],
            [("ground_glass_opacity", "present"), ("pneumonia", "uncertain")],
        ]
        span = rows[1]["findings"][0]["span"]
        assert rows[1]["text"][span[0] : span[1]] == "ｽﾘｶﾞﾗｽ影"
    sjis = tmp_path / "reports.shift_jis.txt"
    assert run(str(sjis), "--encoding", "shift_jis").returncode == 0
    whole = run(str(sjis), "--whole")
    assert len(whole.stdout.decode("utf-8").splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (["{missing}"], b"", "cannot read"),
        (["{sjis}", "--encoding", "utf-8"], b"", "not valid utf-8 at byte"),
        (["{garbage}"], b"", "neither UTF-8 nor Shift_JIS"),
        (["--encoding", "klingon"], b"x", "unknown --encoding"),
        (["--lang", "fr"], b"x", "--lang must be ja or en"),
        (["--encoding", "latin-1"], b"a\x00b", "binary data"),
    ],
)
def test_cli_refuses_bad_input_with_one_line(tmp_path: Path, args: list[str], stdin: bytes, words: str) -> None:
    (tmp_path / "s.txt").write_bytes("胸水なし".encode("shift_jis"))
    (tmp_path / "g.bin").write_bytes(b"\xff\xfe\x80\x80\x00\x01")
    paths = {"missing": str(tmp_path / "nope.txt"), "sjis": str(tmp_path / "s.txt"), "garbage": str(tmp_path / "g.bin")}
    r = run(*[a.format(**paths) for a in args], stdin=stdin)
    err = r.stderr.decode("utf-8")
    assert r.returncode == 2, err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert r.stdout == b""


def test_decode_prefers_utf8_and_strips_a_bom() -> None:
    assert decode_report_bytes("\ufeff結節".encode(), "auto", "x") == "結節"
    assert decode_report_bytes("結節".encode("cp932"), "auto", "x") == "結節"
