"""Run L's rule (PLAN.md beside this file), applied to the benches' JSON; written before L was scored.

    python rule.py DIR   # DIR holds loso.json, ood.json and mixed-{choose,check}-{L,0.7.0}.json

Prints each criterion with its figures and whether it holds, then SHIP or NOT SHIPPED.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NEW, OLD = "runL", "0.7.0-synthetic"
NEVER_LOSO = ("site-d-webcam", "site-e-halogen", "site-f-paleblue", "site-g-lowmag")
NEVER_OOD = ("blind-clean", "blind-field", "blind-phone")
SEEN_LOSO = ("site-a", "site-b", "site-c", "site-random")
SEEN_OOD = ("ood-1x", "ood-varied")


def figures(d: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {set: {"map50", "verdict", "n"}}} over the loso and vision_ood sets."""
    loso = json.loads((d / "loso.json").read_text())["leave_one_style_out"]
    ood = json.loads((d / "ood.json").read_text())
    out: dict[str, dict[str, dict[str, float]]] = {NEW: {}, OLD: {}}
    for m in out:
        for site, row in loso["per_site"].items():
            out[m][site] = {"map50": row[m]["map50"], "verdict": row[m]["verdict_accuracy"], "n": 96}
        for per_style in ood["per_renderer"].values():
            for style, row in per_style.items():
                out[m][style] = {"map50": row[m]["map50"], "verdict": row[m]["verdict_accuracy"], "n": 64}
    return out


def mixed(d: Path, tag: str) -> int:
    total = 0
    for which in ("choose", "check"):
        per_set = json.loads((d / f"mixed-{which}-{tag}.json").read_text())["per_set"]
        total += sum(v["none"] for k, v in per_set.items() if k.endswith("/mixed"))
    return total


def main() -> None:
    d = Path(sys.argv[1])
    f = figures(d)
    never = NEVER_LOSO + NEVER_OOD
    seen = SEEN_LOSO + SEEN_OOD
    checks: list[tuple[str, bool, Any]] = []

    def mean(m: str, sets: tuple[str, ...], key: str) -> float:
        return sum(f[m][s][key] for s in sets) / len(sets)

    va, vb = mean(NEW, never, "verdict"), mean(OLD, never, "verdict")
    checks.append(
        ("(a) mean never-trained verdict >= 0.7.0 + 0.02", va >= vb + 0.02 - 1e-9, (round(vb, 4), round(va, 4)))
    )
    drops = {s: round(f[NEW][s]["verdict"] - f[OLD][s]["verdict"], 4) for s in never}
    checks.append(("(b) no never-trained verdict below 0.7.0 - 0.03", min(drops.values()) >= -0.03 - 1e-9, drops))
    ma, mb = mean(NEW, never, "map50"), mean(OLD, never, "map50")
    mdrops = {s: round(f[NEW][s]["map50"] - f[OLD][s]["map50"], 4) for s in never}
    ok_c = ma >= mb - 0.01 - 1e-9 and min(mdrops.values()) >= -0.03 - 1e-9
    checks.append(
        (
            "(c) never-trained mAP50: mean >= 0.7.0 - 0.01, none below - 0.03",
            ok_c,
            ((round(mb, 4), round(ma, 4)), mdrops),
        )
    )
    right = {m: sum(round(f[m][s]["verdict"] * f[m][s]["n"]) for s in seen) for m in (NEW, OLD)}
    sa, sb = mean(NEW, seen, "map50"), mean(OLD, seen, "map50")
    ok_d = right[NEW] >= right[OLD] - 5 and sa >= sb - 0.02 - 1e-9
    checks.append(
        (
            "(d) choose set: verdicts >= 0.7.0 - 5 smears, mean mAP50 >= 0.7.0 - 0.02",
            ok_d,
            ((right[OLD], right[NEW]), (round(sb, 4), round(sa, 4))),
        )
    )
    mx = {NEW: mixed(d, "L"), OLD: mixed(d, "0.7.0")}
    checks.append(("(e) mixed smears (of 256) >= 0.7.0 - 4", mx[NEW] >= mx[OLD] - 4, (mx[OLD], mx[NEW])))
    for name, ok, detail in checks:
        print(f"{'held  ' if ok else 'FAILED'} {name}: {detail}")
    print("SHIP as 0.8.0-synthetic" if all(ok for _, ok, _ in checks) else "NOT SHIPPED")


if __name__ == "__main__":
    main()
