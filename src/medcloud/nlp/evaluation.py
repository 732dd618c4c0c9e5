"""Scoring the extractor against a labelled set: micro-F1 over (code, status) pairs, per code, per status.

A labelled set is JSON lines: `{"text", "lang", "split", "findings": [{"code", "status"}]}`. Each
sentence contributes the set of its gold pairs and of the predicted pairs (a finding named twice
with one status counts once); a pair is a true positive only when both code and status agree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medcloud.errors import InvalidInput
from medcloud.nlp.findings import STATUSES, Finding, extract_findings

Pair = tuple[str, str]


@dataclass(frozen=True)
class Example:
    """One labelled sentence."""

    text: str
    lang: str
    split: str
    gold: tuple[Pair, ...]


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def f1(self) -> dict[str, float | int]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": self.tp + self.fn}


@dataclass
class Report:
    """Counts for one slice of the set, with the sentences it got wrong."""

    micro: _Counts = field(default_factory=_Counts)
    by_code: dict[str, _Counts] = field(default_factory=dict)
    by_status: dict[str, _Counts] = field(default_factory=dict)
    errors: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self, with_errors: bool = False) -> dict[str, object]:
        """Plain figures for JSON output: micro, per-code and per-status precision/recall/F1."""
        out: dict[str, object] = {
            "sentences": self.sentences,
            "micro": self.micro.f1(),
            "per_code": {c: k.f1() for c, k in sorted(self.by_code.items())},
            "per_status": {s: self.by_status[s].f1() for s in STATUSES if s in self.by_status},
        }
        if with_errors:
            out["errors"] = self.errors
        return out

    sentences: int = 0


def load_examples(path: Path) -> list[Example]:
    """Read a labelled JSON-lines set; a malformed line is an InvalidInput naming its line number."""
    out: list[Example] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            gold = tuple((f["code"], f["status"]) for f in row["findings"])
            out.append(Example(row["text"], row["lang"], row.get("split", "dev"), gold))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}:{n}: not a labelled example ({exc})") from None
    return out


def score(
    examples: Iterable[Example], extract: Callable[[str, str | None], list[Finding]] = extract_findings
) -> Report:
    """Compare the extractor's (code, status) pairs with the gold ones, sentence by sentence."""
    report = Report()
    for ex in examples:
        report.sentences += 1
        gold: Counter[Pair] = Counter(set(ex.gold))
        pred: Counter[Pair] = Counter({(f.code, str(f.status)) for f in extract(ex.text, ex.lang)})
        tp, fp, fn = gold & pred, pred - gold, gold - pred
        for pairs, attr in ((tp, "tp"), (fp, "fp"), (fn, "fn")):
            for (code, status), k in pairs.items():
                for counts in (
                    report.micro,
                    report.by_code.setdefault(code, _Counts()),
                    report.by_status.setdefault(status, _Counts()),
                ):
                    setattr(counts, attr, getattr(counts, attr) + k)
        if fp or fn:
            report.errors.append({"text": ex.text, "missed": sorted(fn.elements()), "spurious": sorted(fp.elements())})
    return report
