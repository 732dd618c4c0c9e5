"""The extractor: scoping of negation and uncertainty, spans into the original text, normalisation."""

from __future__ import annotations

import pytest

from medcloud.nlp import CODES, Finding, detect_language, extract_findings
from medcloud.nlp import vocabulary as vocab
from medcloud.nlp.findings import normalise


def pairs(text: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(f.code, f.status) for f in extract_findings(text, lang)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The brief's scoping examples: the cue governs its finding, not the sentence.
        (
            "No pneumothorax, but a small pleural effusion.",
            [("pneumothorax", "absent"), ("pleural_effusion", "present")],
        ),
        ("右肺に結節を認めるが、胸水は認めない。", [("nodule", "present"), ("pleural_effusion", "absent")]),
        ("肺炎の可能性は否定できない。", [("pneumonia", "uncertain")]),
        ("Pneumonia cannot be excluded.", [("pneumonia", "uncertain")]),
        ("A small pneumothorax cannot be ruled out.", [("pneumothorax", "uncertain")]),
        # English pre-cues run over a list, and stop at a conjunction or a new clause.
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            [("consolidation", "absent"), ("pleural_effusion", "absent"), ("pneumothorax", "absent")],
        ),
        (
            "There is no evidence of pneumonia, although atelectasis is present.",
            [("pneumonia", "absent"), ("atelectasis", "present")],
        ),
        (
            "No pneumothorax, small left pleural effusion.",
            [("pneumothorax", "absent"), ("pleural_effusion", "present")],
        ),
        ("Nodule without calcification.", [("nodule", "present"), ("calcification", "absent")]),
        ("Hepatic mass suspicious for metastasis.", [("mass", "present"), ("metastasis", "uncertain")]),
        (
            "The nodule is stable and the effusion has resolved.",
            [("nodule", "present"), ("pleural_effusion", "absent")],
        ),
        ("Atelectasis versus pneumonia.", [("atelectasis", "uncertain"), ("pneumonia", "uncertain")]),
        ("No consolidation to suggest pneumonia.", [("consolidation", "absent"), ("pneumonia", "absent")]),
        (
            "Right lower lobe consolidation, likely pneumonia.",
            [("consolidation", "present"), ("pneumonia", "uncertain")],
        ),
        # Pseudo-negations: about a change of a known finding, which therefore exists.
        ("No change in the right upper lobe nodule.", [("nodule", "present")]),
        ("No interval increase in the pleural effusion.", [("pleural_effusion", "present")]),
        ("結節は前回と比べ変化なし。", [("nodule", "present")]),
        ("結節の増大は認めない。", [("nodule", "present")]),
        # Japanese: the predicate after the finding decides; relative clauses stay local.
        ("肺炎を疑う所見は認めない。", [("pneumonia", "absent")]),
        ("転移を疑う結節を認める。", [("metastasis", "uncertain"), ("nodule", "present")]),
        ("結節、胸水は認めない。", [("nodule", "absent"), ("pleural_effusion", "absent")]),
        ("結節を認め胸水は認めない。", [("nodule", "present"), ("pleural_effusion", "absent")]),
        ("肺炎の疑いはない。", [("pneumonia", "absent")]),
        ("胸水は消失した。", [("pleural_effusion", "absent")]),
        ("胸水は消失したと考えられる。", [("pleural_effusion", "absent")]),
        ("骨折は否定的です。", [("fracture", "absent")]),
        ("無気肺か肺炎か鑑別を要する。", [("atelectasis", "uncertain"), ("pneumonia", "uncertain")]),
        ("気胸(-)、胸水(+)", [("pneumothorax", "absent"), ("pleural_effusion", "present")]),
        ("気胸：なし、胸水：少量", [("pneumothorax", "absent"), ("pleural_effusion", "present")]),
        ("肺門リンパ節腫大は認めず、胸水もない。", [("lymphadenopathy", "absent"), ("pleural_effusion", "absent")]),
        ("右肺に腫瘤を認める。転移は否定できない。", [("mass", "present"), ("metastasis", "uncertain")]),
        ("結節が多発しているが胸水は認めない。", [("nodule", "present"), ("pleural_effusion", "absent")]),
        # Joined alternatives share the hedge; a topic and its diagnosis do not share it.
        ("左下葉に無気肺あるいは肺炎を疑う。", [("atelectasis", "uncertain"), ("pneumonia", "uncertain")]),
        ("肝腫瘤は転移性腫瘍と考えられる。", [("mass", "present"), ("metastasis", "uncertain")]),
        ("結節の内部に石灰化は認めない。", [("nodule", "present"), ("calcification", "absent")]),
        ("胸水や腹水は認めない。", [("pleural_effusion", "absent"), ("ascites", "absent")]),
        ("気胸は指摘出来ない。", [("pneumothorax", "absent")]),
        ("骨折の可能性は低いと考えます。", [("fracture", "absent")]),
        ("縦隔・肺門リンパ節の有意な腫大なし。", [("lymphadenopathy", "absent")]),
        ("Lymph nodes are not enlarged.", [("lymphadenopathy", "absent")]),
        ("Enlarged right hilar lymph nodes.", [("lymphadenopathy", "present")]),
        ("Opacities which can be seen with infection or hemorrhage.", [("hemorrhage", "uncertain")]),
        ("A suspicious nodule in the right upper lobe.", [("nodule", "present")]),
        ("No suspicious nodules.", [("nodule", "absent")]),
        ("気胸を伴わない肋骨骨折を認める。", [("pneumothorax", "absent"), ("fracture", "present")]),
        ("右肺に結節を認めます。胸水はありません。", [("nodule", "present"), ("pleural_effusion", "absent")]),
        ("胸水は見られなかった。", [("pleural_effusion", "absent")]),
        ("The previously seen nodule is no longer visualized.", [("nodule", "absent")]),
        # LAD is lymphadenopathy, or the left anterior descending artery.
        ("Mediastinal LAD, likely reactive.", [("lymphadenopathy", "present")]),
        ("Moderate stenosis of the proximal LAD.", [("stenosis", "present")]),
        ("LAD#7に75%狭窄を認める。", [("stenosis", "present")]),
        ("No pneumothorax and a small left effusion.", [("pneumothorax", "absent"), ("pleural_effusion", "present")]),
        ("Pneumonia could not be excluded.", [("pneumonia", "uncertain")]),
        ("気胸(ー)、胸水(ｰ)", [("pneumothorax", "absent"), ("pleural_effusion", "absent")]),
        # A Japanese list goes on only through findings (look-alikes included), not a diagnosis.
        ("胸水、心嚢水、腹水の貯留は認めない。", [("pleural_effusion", "absent"), ("ascites", "absent")]),
        (
            "1) 右肺結節、肺癌疑い。2) 肺気腫。3) 胸水なし。",
            [("nodule", "present"), ("emphysema", "present"), ("pleural_effusion", "absent")],
        ),
        ("No pericardial effusion or pneumothorax.", [("pneumothorax", "absent")]),
        (
            "ｺﾝｿﾘﾃﾞｰｼｮﾝ(+)、ﾘﾝﾊﾟ節腫大(-)、ｽﾘｶﾞﾗｽ陰影あり",
            [("consolidation", "present"), ("lymphadenopathy", "absent"), ("ground_glass_opacity", "present")],
        ),
        ("RLL PNA. Small SDH.", [("pneumonia", "present"), ("hemorrhage", "present")]),
        # A topic (は) with a hedged diagnosis of its own: the hedge is about the diagnosis.
        ("肝S8の腫瘤は肝細胞癌を疑います。", [("mass", "present")]),
        ("胸水は両側にあると考えられる。", [("pleural_effusion", "uncertain")]),
        ("Pneumonia is unlikely.", [("pneumonia", "absent")]),
        ("Findings are unlikely to represent metastasis.", [("metastasis", "absent")]),
        ("The heart is enlarged.", [("cardiomegaly", "present")]),
        ("The heart is not enlarged.", [("cardiomegaly", "absent")]),
        ("気胸、縦隔気腫を認める。", [("pneumothorax", "present")]),
        # A relative clause on a negated head is negated with it; a hedge after a comma list is local.
        ("肺転移を疑う結節は認められない。", [("metastasis", "absent"), ("nodule", "absent")]),
        ("両側肺に多発結節、転移疑い。", [("nodule", "present"), ("metastasis", "uncertain")]),
        ("気胸、胸水なし。", [("pneumothorax", "absent"), ("pleural_effusion", "absent")]),
        ("胸部大動脈瘤の拡大は見られない。", [("aneurysm", "present")]),
        ("No interval enlargement of the thoracic aortic aneurysm.", [("aneurysm", "present")]),
        (
            "The ground-glass opacity has resolved and the consolidation has improved.",
            [("ground_glass_opacity", "absent"), ("consolidation", "present")],
        ),
        (
            "Left pneumothorax with partial collapse of the left lung.",
            [("pneumothorax", "present"), ("atelectasis", "present")],
        ),
        ("冠動脈の高度石灰化あり、狭窄の評価は困難。", [("calcification", "present"), ("stenosis", "uncertain")]),
        ("門脈内腫瘍栓は認めない。", []),
        ("No pleural or pericardial effusion.", [("pleural_effusion", "absent")]),
        ("肋骨骨折は指摘困難。", [("fracture", "uncertain")]),
        ("Rib fracture is difficult to exclude.", [("fracture", "uncertain")]),
        ("骨転移による病的骨折の可能性も否定できない。", [("metastasis", "uncertain"), ("fracture", "uncertain")]),
        ("左胸水は著明に減少し、ほぼ消失しています。", [("pleural_effusion", "absent")]),
        ("Neither infarction nor haemorrhage is seen.", [("infarction", "absent"), ("hemorrhage", "absent")]),
        # Negation inside the word itself.
        ("Noncalcified nodule.", [("calcification", "absent"), ("nodule", "present")]),
        ("非石灰化結節を認める。", [("calcification", "absent"), ("nodule", "present")]),
        # Look-alikes that are not the finding.
        ("Small pericardial effusion.", []),
        ("No mass effect.", []),
    ],
)
def test_scoping(text: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "surface"),
    [
        ("右S3にｽﾘｶﾞﾗｽ影を認める。", "ground_glass_opacity", "ｽﾘｶﾞﾗｽ影"),
        ("左上葉に磨りガラス影を認める。", "ground_glass_opacity", "磨りガラス影"),
        ("両肺にＧＧＯを認める。", "ground_glass_opacity", "ＧＧＯ"),
        ("Trace PTX at the apex.", "pneumothorax", "PTX"),
        ("Bilateral  pleural   fluid.", "pleural_effusion", "pleural   fluid"),
        ("Mediastinal LAD.", "lymphadenopathy", "LAD"),
        ("Ground-glass opacities in both lungs.", "ground_glass_opacity", "Ground-glass opacities"),
        ("Multiple pulmonary nodules.", "nodule", "pulmonary nodules"),
        ("Bone metastases.", "metastasis", "metastases"),
        ("肝S6に囊胞を認める。", "cyst", "囊胞"),
        ("腎のう胞あり。", "cyst", "のう胞"),
        ("縦隔リンパ節腫大を認める。", "lymphadenopathy", "リンパ節腫大"),
    ],
)
def test_spans_point_at_the_finding_in_the_original_text(text: str, code: str, surface: str) -> None:
    found = [f for f in extract_findings(text) if f.code == code]
    assert len(found) == 1
    start, end = found[0].span
    assert text[start:end] == surface


def test_span_offsets_survive_normalisation_that_changes_length() -> None:
    # Half-width voiced kana shrink under NFKC; the next finding's span must still be right.
    text = "ｽﾘｶﾞﾗｽ影と胸水を認めない。"
    spans = {f.code: text[f.span[0] : f.span[1]] for f in extract_findings(text)}
    assert spans == {"ground_glass_opacity": "ｽﾘｶﾞﾗｽ影", "pleural_effusion": "胸水"}
    norm, starts, ends = normalise("ｶﾞ  X")
    assert norm == "ガ x" and starts == [0, 2, 4] and ends == [2, 4, 5]


def test_every_code_is_found_in_both_languages() -> None:
    for code, (ja_terms, en_terms) in vocab.FINDINGS.items():
        assert pairs(f"{ja_terms[0]}を認める。", "ja") == [(code, "present")], code
        assert pairs(f"There is {en_terms[0]}.", "en")[0] == (code, "present"), code
    assert set(CODES) >= {
        "nodule",
        "mass",
        "pneumothorax",
        "pleural_effusion",
        "consolidation",
        "ground_glass_opacity",
        "emphysema",
        "atelectasis",
        "cardiomegaly",
        "lymphadenopathy",
        "calcification",
        "fracture",
        "metastasis",
        "ascites",
        "hemorrhage",
        "infarction",
        "cyst",
        "stenosis",
        "aneurysm",
        "pneumonia",
    }


@pytest.mark.parametrize("cue", ["認めない", "指摘できない", "なし", "認められない", "否定的", "見られない"])
def test_japanese_negation_cues(cue: str) -> None:
    assert pairs(f"胸水は{cue}。") == [("pleural_effusion", "absent")]


@pytest.mark.parametrize(
    "cue", ["疑い", "疑う", "否定できない", "の可能性がある", "が示唆される", "と考える", "と考えられる", "が疑われる"]
)
def test_japanese_uncertainty_cues(cue: str) -> None:
    assert pairs(f"肺炎{cue}。") == [("pneumonia", "uncertain")]


@pytest.mark.parametrize(
    "sentence",
    [
        "No {}.",
        "Without {}.",
        "Negative for {}.",
        "Free of {}.",
        "No evidence of {}.",
        "The {} has resolved.",
        "{} is not seen.",
        "Resolved {}.",
    ],
)
def test_english_negation_cues(sentence: str) -> None:
    assert pairs(sentence.format("pneumothorax")) == [("pneumothorax", "absent")]


@pytest.mark.parametrize(
    "sentence",
    [
        "Possible {}.",
        "Probable {}.",
        "Likely {}.",
        "{} cannot be excluded.",
        "{} cannot be ruled out.",
        "Suspicious for {}.",
        "Suggestive of {}.",
        "Concern for {}.",
        "This may represent {}.",
        "{} is suspected.",
    ],
)
def test_english_uncertainty_cues(sentence: str) -> None:
    assert pairs(sentence.format("pneumonia")) == [("pneumonia", "uncertain")]


def test_language_detection_and_explicit_language() -> None:
    assert detect_language("右肺に結節") == "ja" and detect_language("ｽﾘｶﾞﾗｽ") == "ja"
    assert detect_language("No nodule.") == "en"
    assert extract_findings("GGOなし") == [Finding("ground_glass_opacity", "absent", (0, 3))]
    with pytest.raises(ValueError, match="unsupported language"):
        extract_findings("nodule", "fr")


def test_empty_and_finding_free_text() -> None:
    assert extract_findings("") == []
    assert extract_findings("Heart size is normal. Lungs are clear.") == []
    assert extract_findings("特記すべき異常所見なし。") == []


def test_decimal_point_is_not_a_sentence_end() -> None:
    assert pairs("No 1.5 cm nodule or effusion.") == [("nodule", "absent"), ("pleural_effusion", "absent")]
