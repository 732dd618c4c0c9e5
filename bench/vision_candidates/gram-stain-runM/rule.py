"""Run M's rule (PLAN.md beside this file), applied to bench/vision_yeast_floor.py's JSON; written before M
was scored.

    python rule.py DIR   # DIR holds {choose,check}-{M,0.8.0}.json

Prints each criterion with its figures and whether it holds, then SHIP or NOT SHIPPED.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NEVER = (
    "site-d-webcam",
    "site-e-halogen",
    "site-f-paleblue",
    "site-g-lowmag",
    "blind-clean",
    "blind-field",
    "blind-phone",
)


def sets(d: Path, tag: str) -> dict[str, tuple[int, int]]:
    """{set: (right, of)} over the choose and check sets of one model."""
    out: dict[str, tuple[int, int]] = {}
    for which in ("choose", "check"):
        for name, v in json.loads((d / f"{which}-{tag}.json").read_text())["per_set"].items():
            out[name] = (v["none"], v["n"])
    return out


def main() -> None:
    d = Path(sys.argv[1])
    new, old = sets(d, "M"), sets(d, "0.8.0")
    checks: list[tuple[str, bool, object]] = []
    va = sum(new[s][0] / new[s][1] for s in NEVER) / len(NEVER)
    vb = sum(old[s][0] / old[s][1] for s in NEVER) / len(NEVER)
    checks.append(
        ("(a) mean never-trained verdict >= 0.8.0 + 0.02", va >= vb + 0.02 - 1e-9, (round(vb, 4), round(va, 4)))
    )
    never_all = [s for s in new if s in NEVER or (s.endswith("/mixed") and s.split("/")[0] in NEVER)]
    drops = {s: round((new[s][0] - old[s][0]) / new[s][1], 4) for s in never_all}
    checks.append(("(b) no never-trained set below 0.8.0 - 0.03", min(drops.values()) >= -0.03 - 1e-9, drops))
    choose = [s for s in new if s not in never_all and not s.endswith("/mixed")]
    right = {k: sum(v[s][0] for s in choose) for k, v in (("M", new), ("0.8.0", old))}
    checks.append(
        ("(c) choose set >= 0.8.0 - 5 smears", right["M"] >= right["0.8.0"] - 5, (right["0.8.0"], right["M"]))
    )
    mixed = {k: sum(v[s][0] for s in v if s.endswith("/mixed")) for k, v in (("M", new), ("0.8.0", old))}
    checks.append(("(d) mixed smears >= 0.8.0 - 4", mixed["M"] >= mixed["0.8.0"] - 4, (mixed["0.8.0"], mixed["M"])))
    for name, ok, detail in checks:
        print(f"{'held  ' if ok else 'FAILED'} {name}: {detail}")
    print("SHIP as 0.8.1-synthetic" if all(ok for _, ok, _ in checks) else "NOT SHIPPED")


if __name__ == "__main__":
    main()
