"""How a model travels to sites it never saw: the headline of its card and the robustness warning.

Leave-one-style-out is the standard evaluation: every site style is scored on its own, and the styles
that training never saw are the ones that predict how the model does at a new hospital. The card leads
with the *worst* never-seen style (its organism mAP50 and its Gram-verdict accuracy), not the average.

A model is flagged when the worst never-seen style has mAP50 below `MIN_UNSEEN_MAP50` (0.70), or more
than `MAX_SEEN_GAP` (0.15) below the mean over the styles it was trained on. The flag is computed from
the per-site metrics a card records, so a card written before this rule existed is judged the same way.

Pure Python (no numpy): the hub and `serve-model` read it for every model listing.
"""

from __future__ import annotations

from typing import Any

MIN_UNSEEN_MAP50 = 0.70
MAX_SEEN_GAP = 0.15


def _verdict(site: dict[str, Any]) -> float | None:
    value = site.get("verdict_accuracy", site.get("crop_vote_accuracy"))
    return None if value is None else float(value)


def robustness(per_site: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The card's headline and warning from per-site metrics (`map50`, `seen_in_training`, verdict).

    Returns `headline` (worst never-seen site, its mAP50 and verdict accuracy, the seen-site mean
    mAP50 and the gap) and `robustness_warning` / `robustness_warning_ja` (text, or None when the
    model holds up). A card with no never-seen site gets a warning too: robustness is then unmeasured.
    Metrics without any per-site mAP50 (not a detector's) give an empty dict.
    """
    scored = {name: m for name, m in per_site.items() if isinstance(m, dict) and m.get("map50") is not None}
    if not scored:
        return {}
    seen = {n: float(m["map50"]) for n, m in scored.items() if m.get("seen_in_training")}
    unseen = {n: float(m["map50"]) for n, m in scored.items() if not m.get("seen_in_training")}
    seen_mean = round(sum(seen.values()) / len(seen), 4) if seen else None
    if not unseen:
        return {
            "headline": {"worst_unseen_site": None, "seen_mean_map50": seen_mean, "unseen_sites": []},
            "robustness_warning": "No site style held out of training was evaluated: how this model does on "
            "another laboratory's microscope, stain and camera is unmeasured.",
            "robustness_warning_ja": "学習に使っていない施設様式での評価がありません。"
            "他施設の顕微鏡・染色・カメラでの性能は未測定です。",
        }
    worst = min(unseen, key=lambda n: (unseen[n], n))
    worst_map = unseen[worst]
    verdict = _verdict(scored[worst])
    worst_verdict = min((v for n in unseen if (v := _verdict(scored[n])) is not None), default=None)
    gap = round(seen_mean - worst_map, 4) if seen_mean is not None else None
    headline = {
        "worst_unseen_site": worst,
        "worst_unseen_map50": round(worst_map, 4),
        "worst_unseen_verdict_accuracy": verdict,
        "lowest_unseen_verdict_accuracy": worst_verdict,
        "seen_mean_map50": seen_mean,
        "seen_minus_worst_unseen": gap,
        "unseen_sites": sorted(unseen),
        "rule": f"flag when the worst never-seen style has mAP50 < {MIN_UNSEEN_MAP50:.2f} "
        f"or is more than {MAX_SEEN_GAP:.2f} below the training-style mean",
    }
    low = worst_map < MIN_UNSEEN_MAP50
    far = gap is not None and gap > MAX_SEEN_GAP
    warning = warning_ja = None
    if low or far:
        verdict_en = f", Gram verdict {verdict:.0%}" if verdict is not None else ""
        verdict_ja = f"、グラム判定正解率 {verdict:.0%}" if verdict is not None else ""
        seen_en = f" against {seen_mean:.2f} on the styles it was trained on" if seen_mean is not None else ""
        seen_ja = f"(学習した様式では {seen_mean:.2f})" if seen_mean is not None else ""
        warning = (
            f"Not robust to new sites: on {worst}, a microscope/stain/camera style never seen in training, "
            f"organism mAP50 is {worst_map:.2f}{verdict_en}{seen_en}. Expect poorer boxes and verdicts on "
            "images unlike the training data; check results by eye."
        )
        warning_ja = (
            f"施設間の頑健性に注意: 学習に使っていない様式 {worst} で"
            f"菌検出 mAP50 {worst_map:.2f}{seen_ja}{verdict_ja}。"
            "学習データと異なる画像では結果が劣る可能性があります。目視で確認してください。"
        )
    return {"headline": headline, "robustness_warning": warning, "robustness_warning_ja": warning_ja}


def card_robustness(card: dict[str, Any]) -> dict[str, Any]:
    """The headline and warning a card states, or derives from its per-site metrics if it states none."""
    if "robustness_warning" in card and "headline" in card:
        return {
            "headline": card["headline"],
            "robustness_warning": card["robustness_warning"],
            "robustness_warning_ja": card.get("robustness_warning_ja"),
        }
    metrics = card.get("metrics")
    per_site = metrics.get("per_site") if isinstance(metrics, dict) else None
    if not isinstance(per_site, dict):
        return {}
    return robustness(per_site)
