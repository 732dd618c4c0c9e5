"""Free-text cleaner on the labelled set: recall of planted identifiers per kind, false removals, speed.

    .venv/bin/python bench/freetext.py [--set tests/deid/data/freetext_labelled.jsonl] [--show-misses]

A planted identifier counts as removed when every one of its characters (spaces and punctuation
aside) lies inside something the cleaner replaced, or when the cleaner removed the whole field. False
removals: characters and words outside every planted identifier that the cleaner replaced, and
fields removed whole. Figures are given for the `tune` part, the two held-out parts and all.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_SET = ROOT / "tests" / "deid" / "data" / "freetext_labelled.jsonl"
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+|[\u3040-\u309f]+|[\u30a0-\u30ff]+|[\u4e00-\u9fff々]+")


def _covered(text: str) -> list[bool]:
    from medcloud.deid.freetext import find

    mask = [False] * len(text)
    for s, e, _kind, _repl in find(text):
        for i in range(s, e):
            mask[i] = True
    return mask


def evaluate(rows: list[dict[str, Any]], max_share: float | None = None) -> dict[str, Any]:
    """Recall per kind and false removals for these rows (max_share: see freetext.clean)."""
    from medcloud.deid.freetext import clean

    planted: dict[str, int] = defaultdict(int)
    caught: dict[str, int] = defaultdict(int)
    misses: list[dict[str, str]] = []
    false_words: list[str] = []
    other_chars = false_chars = other_words = removed_fields = in_whole = 0
    for row in rows:
        text = row["text"]
        result = clean(text) if max_share is None else clean(text, max_share=max_share)
        whole = result.text is None
        removed_fields += whole
        mask = [True] * len(text) if whole else _covered(text)
        inside = [False] * len(text)
        for sp in row["spans"]:
            kind = sp["kind"]
            planted[kind] += 1
            chars = [i for i in range(sp["start"], sp["end"]) if text[i].isalnum()]
            for i in range(sp["start"], sp["end"]):
                inside[i] = True
            if all(mask[i] for i in chars):
                caught[kind] += 1
            else:
                misses.append({"kind": kind, "value": sp["value"], "text": text, "out": str(result.text)})
        for i, c in enumerate(text):
            if not inside[i] and c.isalnum():
                other_chars += 1
                false_chars += mask[i]
        for m in _WORD.finditer(text):
            if any(inside[m.start() : m.end()]):
                continue
            other_words += 1
            if any(mask[m.start() : m.end()]):
                false_words.append(m.group(0))
                in_whole += whole
    recall = {
        k: {"planted": planted[k], "removed": caught[k], "recall": round(caught[k] / planted[k], 4)}
        for k in sorted(planted)
    }
    total = sum(planted.values())
    return {
        "sentences": len(rows),
        "planted": total,
        "recall_all": round(sum(caught.values()) / total, 4) if total else None,
        "recall": recall,
        "false_removals": {
            "words_other": other_words,
            "words_removed": len(false_words),
            "word_rate": round(len(false_words) / other_words, 4) if other_words else 0.0,
            "words_removed_with_whole_field": in_whole,
            "chars_rate": round(false_chars / other_chars, 4) if other_chars else 0.0,
            "fields_removed_whole": removed_fields,
            "examples": sorted(set(false_words))[:40],
        },
        "misses": misses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--show-misses", action="store_true", help="list every identifier that survived")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.set.read_text(encoding="utf-8").splitlines() if line.strip()]

    from medcloud.deid.freetext import _clean_short, clean

    t0 = time.process_time()
    clean("山田太郎 CT")  # analyser and word lists load once per process
    load_s = time.process_time() - t0
    _clean_short.cache_clear()
    t0 = time.process_time()
    for row in rows:
        clean(row["text"])
    per_text_ms = (time.process_time() - t0) / len(rows) * 1000

    out: dict[str, Any] = {"set": str(args.set.relative_to(ROOT) if args.set.is_relative_to(ROOT) else args.set)}
    for part in ("tune", "heldout", "heldout2", "all"):
        chosen = [r for r in rows if part == "all" or r["split"] == part]
        res = evaluate(chosen)
        if not args.show_misses:
            res["misses"] = res["misses"][:10]
        out[part] = res
    # The same with whole-field removal by identifier share turned off: what that rule costs.
    off = evaluate(rows, max_share=1.0)
    out["all_without_share_rule"] = {"recall_all": off["recall_all"], "false_removals": off["false_removals"]}
    out["cpu_ms_per_text_uncached"] = round(per_text_ms, 3)
    out["cpu_s_first_load"] = round(load_s, 3)
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
