"""The Gram-stain label set: 17 detector labels (English and Japanese names) and the 5 crop classes.

The detector labels follow the reference blood-culture service. The crop classifier only knows the four
Gram/shape groups plus background; yeast and red blood cells count as background for its vote because
they are neither rods nor cocci. They are not bacteria: crops the detector shows to hold only yeast or red
cells do not vote at all, and a smear whose only organisms are yeast answers `YEAST_NOTE` ("yeast seen
(Candida)") with no bacterial Gram verdict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    """One detector label: a stable code, display names, and the Gram/shape group its crops vote for."""

    code: str
    en: str
    ja: str
    gram: str  # "positive" | "negative" | "n/a"
    shape: str  # "cocci" | "rods" | "yeast" | "cell"
    crop_class: str  # one of CROP_CLASSES


CROP_CLASSES: tuple[str, ...] = ("gp_rods", "gn_rods", "gp_cocci", "gn_cocci", "background")
CROP_CLASS_NAMES: dict[str, tuple[str, str]] = {
    "gp_rods": ("Gram-positive rods", "グラム陽性桿菌"),
    "gn_rods": ("Gram-negative rods", "グラム陰性桿菌"),
    "gp_cocci": ("Gram-positive cocci", "グラム陽性球菌"),
    "gn_cocci": ("Gram-negative cocci", "グラム陰性球菌"),
    "background": ("Background", "背景"),
}

LABELS: tuple[Label, ...] = (
    Label("enterobacterales", "Enterobacterales", "腸内細菌目", "negative", "rods", "gn_rods"),
    Label("p_aeruginosa", "Pseudomonas aeruginosa", "緑膿菌", "negative", "rods", "gn_rods"),
    Label("enterococcus", "Enterococcus spp.", "腸球菌属", "positive", "cocci", "gp_cocci"),
    Label("cns", "Coagulase-negative staphylococci", "コアグラーゼ陰性ブドウ球菌", "positive", "cocci", "gp_cocci"),
    Label("bacillus", "Bacillus spp.", "バシラス属", "positive", "rods", "gp_rods"),
    Label("s_aureus", "Staphylococcus aureus", "黄色ブドウ球菌", "positive", "cocci", "gp_cocci"),
    Label("gbs", "Group B streptococci", "B群溶血性レンサ球菌", "positive", "cocci", "gp_cocci"),
    Label("streptococcus", "Streptococcus spp.", "レンサ球菌属", "positive", "cocci", "gp_cocci"),
    Label("haemophilus", "Haemophilus spp.", "ヘモフィルス属", "negative", "rods", "gn_rods"),
    Label("s_pneumoniae", "Streptococcus pneumoniae", "肺炎球菌", "positive", "cocci", "gp_cocci"),
    Label("s_pyogenes", "Streptococcus pyogenes", "化膿レンサ球菌", "positive", "cocci", "gp_cocci"),
    Label("listeria", "Listeria", "リステリア属", "positive", "rods", "gp_rods"),
    Label("pseudomonas_other", "Pseudomonas spp. (other)", "その他のシュードモナス属", "negative", "rods", "gn_rods"),
    Label("corynebacterium", "Corynebacterium", "コリネバクテリウム属", "positive", "rods", "gp_rods"),
    Label("gn_cocci", "Gram-negative cocci", "グラム陰性球菌", "negative", "cocci", "gn_cocci"),
    Label("candida", "Candida", "カンジダ属", "positive", "yeast", "background"),
    Label("rbc", "Red blood cells", "赤血球", "n/a", "cell", "background"),
)

LABEL_CODES: tuple[str, ...] = tuple(label.code for label in LABELS)
LABEL_INDEX: dict[str, int] = {code: i for i, code in enumerate(LABEL_CODES)}
NUM_CLASSES = len(LABELS)


def crop_class_of(label_index: int) -> int:
    """Index into CROP_CLASSES of the group a detector label votes for."""
    return CROP_CLASSES.index(LABELS[label_index].crop_class)


def label_json(label_index: int) -> dict[str, str]:
    """The label as the API returns it: code and both display names."""
    label = LABELS[label_index]
    return {"code": label.code, "en": label.en, "ja": label.ja}


# Labels that are not bacteria (yeast, red blood cells): excluded from the Gram crop vote.
NON_BACTERIAL_LABELS: frozenset[int] = frozenset(i for i, lab in enumerate(LABELS) if lab.shape in ("yeast", "cell"))
YEAST_LABELS: frozenset[int] = frozenset(i for i, lab in enumerate(LABELS) if lab.shape == "yeast")
# The answer for yeast, shown instead of (yeast-only smear) or beside (mixed smear) the bacterial verdict.
YEAST_NOTE: dict[str, str] = {"code": "yeast", "en": "yeast seen (Candida)", "ja": "酵母様真菌 (カンジダ)"}
