"""The findings vocabulary and the ConText cue lists, as data.

Everything the extractor recognises lives in these tables; the engine (`findings.py`) holds no word
lists of its own. Entries are written as a radiologist would type them: the engine applies NFKC,
lower-casing and a few character unifications before matching, so half-width kana (ｽﾘｶﾞﾗｽ影),
full-width Latin (ＧＧＯ) and upper case need no separate entries. English finding terms also match
their plural with -s/-es; irregular plurals are listed. Multi-word English entries match with a
space or a hyphen between words.
"""

from __future__ import annotations

from typing import Final

# code -> (Japanese terms, English terms). Longest match wins, so compounds such as
# "リンパ節腫大" or "pleural effusion" beat their parts.
FINDINGS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "nodule": (
        ("結節", "結節影", "小結節", "微小結節", "結節性病変", "粒状影", "ノジュール", "肺結節"),
        ("nodule", "nodular opacity", "nodular lesion", "pulmonary nodule", "micronodule", "spn"),
    ),
    "mass": (
        ("腫瘤", "腫瘤影", "腫瘤性病変", "腫瘍", "腫瘍性病変", "占拠性病変", "マス"),
        ("mass", "mass lesion", "tumor", "tumour", "space-occupying lesion", "sol"),
    ),
    "pneumothorax": (
        ("気胸", "緊張性気胸"),
        ("pneumothorax", "pneumothoraces", "ptx", "tension pneumothorax"),
    ),
    "pleural_effusion": (
        ("胸水", "胸水貯留", "胸腔内液体貯留", "胸膜液", "胸腔液"),
        ("pleural effusion", "effusion", "pleural fluid", "hydrothorax", "fluid in the pleural space"),
    ),
    "consolidation": (
        ("浸潤影", "浸潤陰影", "コンソリデーション", "濃厚影", "肺胞性陰影", "consolidation"),
        (
            "consolidation",
            "consolidative opacity",
            "consolidated",
            "airspace opacity",
            "airspace opacities",
            "air-space opacity",
            "airspace disease",
            "airspace consolidation",
            "infiltrate",
            "infiltration",
        ),
    ),
    "ground_glass_opacity": (
        (
            "すりガラス影",
            "すりガラス陰影",
            "すりガラス状陰影",
            "すりガラス状影",
            "すりガラス濃度",
            "すりガラス状濃度上昇",
            "すりガラス様陰影",
            "すりガラス",
            "スリガラス影",
            "スリガラス",
            "ｽﾘｶﾞﾗｽ影",
            "磨りガラス影",
            "磨りガラス状陰影",
            "磨りガラス",
            "摺りガラス影",
            "摺りガラス",
            "すりがらす影",
        ),
        (
            "ground-glass opacity",
            "ground-glass opacities",
            "ground-glass opacification",
            "ground-glass attenuation",
            "ground-glass density",
            "ground-glass change",
            "ground-glass",
            "ggo",
            "gga",
        ),
    ),
    "emphysema": (
        ("肺気腫", "気腫", "気腫性変化", "小葉中心性肺気腫", "汎小葉性肺気腫", "傍隔壁性肺気腫", "気腫性嚢胞"),
        ("emphysema", "emphysematous change", "emphysematous", "centrilobular emphysema", "paraseptal emphysema"),
    ),
    "atelectasis": (
        ("無気肺", "板状無気肺", "円形無気肺", "肺虚脱", "虚脱"),
        ("atelectasis", "atelectases", "atelectatic", "atelectatic change", "lobar collapse", "collapsed lung"),
    ),
    "cardiomegaly": (
        ("心拡大", "心陰影拡大", "心陰影の拡大", "心胸郭比拡大", "心胸郭比の拡大", "ctr拡大", "ctr増大", "心肥大"),
        (
            "cardiomegaly",
            "enlarged heart",
            "heart enlargement",
            "cardiac enlargement",
            "enlarged cardiac silhouette",
            "enlargement of the cardiac silhouette",
            "enlargement of the heart",
        ),
    ),
    "lymphadenopathy": (
        (
            "リンパ節腫大",
            "リンパ節腫脹",
            "リンパ節の腫大",
            "リンパ節の腫脹",
            "腫大リンパ節",
            "リンパ節腫",
            "ln腫大",
            "リンパ節が腫大",
        ),
        (
            "lymphadenopathy",
            "lymphadenopathies",
            "adenopathy",
            "lad",
            "enlarged lymph node",
            "enlarged node",
            "lymph node enlargement",
            "enlarged mediastinal lymph node",
        ),
    ),
    "calcification": (
        ("石灰化", "石灰化巣", "石灰沈着", "石灰化病変"),
        ("calcification", "calcified", "calcific", "calcific density", "calcium deposit"),
    ),
    "fracture": (
        ("骨折", "骨折線", "圧迫骨折", "肋骨骨折", "椎体骨折"),
        ("fracture", "fractured", "fx", "compression deformity"),
    ),
    "metastasis": (
        ("転移", "転移巣", "遠隔転移", "肺転移", "骨転移", "肝転移", "脳転移", "リンパ節転移", "転移性"),
        ("metastasis", "metastases", "metastatic disease", "metastatic", "mets", "metastatic lesion"),
    ),
    "ascites": (
        ("腹水", "腹水貯留", "腹腔内液体貯留"),
        ("ascites", "ascitic fluid", "peritoneal fluid", "free fluid", "free intraperitoneal fluid"),
    ),
    "hemorrhage": (
        ("出血", "出血巣", "脳出血", "脳内出血", "くも膜下出血", "クモ膜下出血", "肺胞出血", "血腫", "出血性変化"),
        (
            "hemorrhage",
            "haemorrhage",
            "hemorrhagic",
            "haemorrhagic",
            "bleeding",
            "bleed",
            "hematoma",
            "haematoma",
            "sah",
            "ich",
        ),
    ),
    "infarction": (
        ("梗塞", "脳梗塞", "心筋梗塞", "肺梗塞", "腎梗塞", "脾梗塞", "ラクナ梗塞", "梗塞巣"),
        ("infarction", "infarct", "infarcted", "ischemic stroke", "lacunar infarct"),
    ),
    "cyst": (
        ("嚢胞", "囊胞", "のう胞", "嚢腫", "肝嚢胞", "腎嚢胞", "嚢胞性病変", "嚢胞性変化", "シスト"),
        ("cyst", "cystic lesion", "cystic change", "simple cyst"),
    ),
    "stenosis": (
        ("狭窄", "高度狭窄", "狭小化", "内腔狭小化"),
        ("stenosis", "stenoses", "stenotic", "narrowing", "luminal narrowing"),
    ),
    "aneurysm": (
        ("動脈瘤", "大動脈瘤", "腹部大動脈瘤", "脳動脈瘤", "瘤化"),
        ("aneurysm", "aneurysmal", "aneurysmal dilatation", "aaa"),
    ),
    "pneumonia": (
        ("肺炎", "間質性肺炎", "誤嚥性肺炎", "気管支肺炎", "器質化肺炎", "肺炎像"),
        ("pneumonia", "pneumonitis", "bronchopneumonia", "aspiration pneumonia"),
    ),
}

# Terms that carry their own status: the negation is part of the word.
NEGATED_TERMS: Final[dict[str, str]] = {
    "非石灰化": "calcification",
    "石灰化を伴わない": "calcification",
    "noncalcified": "calcification",
    "non-calcified": "calcification",
    "uncalcified": "calcification",
}

# Phrases that contain a finding word but are not the finding: matched so that their words are used up.
BLOCKERS: Final[tuple[str, ...]] = (
    "pericardial effusion",
    "joint effusion",
    "心嚢水",
    "心嚢液",
    "mass effect",
    "body mass",
    "cystic duct",
    "転移性の評価",
    "fracture fixation",
)

# --- ConText cues -------------------------------------------------------------------------------
# Japanese cues follow what they govern (post-position): 胸水は認めない. "Nominal" cues are nouns
# (疑い, 可能性, 消失) after which a later predicate may still qualify the finding (肺炎の疑いはない);
# "verbal" cues end the chain unless a generic head noun (所見, 像, ...) or a quotation と follows.
JA_NEGATION_VERBAL: Final[tuple[str, ...]] = (
    "認めない", "認めず", "認めません", "認められない", "認められず", "認められません", "認めなかった",
    "指摘できない", "指摘できず", "指摘できません", "指摘されない", "指摘されず", "指摘し得ない", "指摘しえない",
    "見られない", "見られず", "みられない", "みられず", "見られません", "みられません",
    "見当たらない", "見当たらず", "確認できない", "確認できず", "確認されない", "同定できない", "同定されない",
    "検出されない", "描出されない", "描出されず", "明らかでない", "明らかではない", "明らかでは無い",
    "否定的", "否定的です", "否定される", "否定された", "否定できる", "否定します", "除外される", "除外できる",
    "考えにくい", "考え難い", "可能性は低い", "可能性が低い", "可能性は乏しい", "可能性は否定的",
    "はない", "もない", "がない", "ではない", "はありません", "もありません", "はみられない", "消失した",
    "消失している", "消失しました", "消退した", "消退している", "陰性",
)
JA_NEGATION_NOMINAL: Final[tuple[str, ...]] = (
    "なし", "無し", "ナシ", "(-)", "(−)", "消失", "消退", "否定", "指摘なし", "所見なし", "ありません",
)
JA_UNCERTAIN_VERBAL: Final[tuple[str, ...]] = (
    "疑う", "疑います", "疑われる", "疑われます", "疑われ", "疑わしい", "疑いたい",
    "否定できない", "否定できず", "否定できません", "否定し得ない", "否定しえない", "否定しきれない",
    "否定はできない", "否定は困難", "否定困難", "除外できない", "除外できず", "除外は困難", "除外困難",
    "示唆する", "示唆される", "示唆されます", "示唆",
    "考える", "考えます", "考えられる", "考えられます", "考えられ", "考慮される", "考慮します", "考慮",
    "思われる", "思われます", "思われ", "推察される", "推定される", "推測される", "懸念される", "懸念",
    "かもしれない", "可能性がある", "可能性あり", "可能性も", "鑑別を要する", "鑑別が必要", "鑑別に挙がる",
    "鑑別となる", "鑑別", "を思わせる", "らしい", "判定困難", "評価困難", "断定できない", "断定困難",
    "確定できない", "はっきりしない", "不確か", "ありうる", "あり得る", "(±)", "?", "疑診",
)
JA_UNCERTAIN_NOMINAL: Final[tuple[str, ...]] = ("疑い", "疑", "可能性", "可能性が", "の可能性")

# A finding followed by one of these is being described as changing, so it exists:
# 結節の増大は認めない, 胸水は変化なし.
JA_PSEUDO: Final[tuple[str, ...]] = (
    "増大", "縮小", "変化", "著変", "増悪", "改善", "減少", "増加", "軽減", "悪化", "不変", "新出", "残存",
    "遺残", "拡大傾向", "進行", "退縮",
)

# Predicates that assert something: neutral for status, but they close a clause (結節を認め胸水は認めない).
JA_AFFIRMATIVE: Final[tuple[str, ...]] = (
    "認める", "認め", "認めます", "認められる", "認められ", "認められます", "あり", "有り", "あります", "ある",
    "見られる", "見られ", "みられる", "みられ", "指摘される", "指摘され", "指摘できる", "指摘します", "呈する",
    "呈し", "伴う", "伴い", "存在する", "存在し", "描出される", "描出され", "示す", "示し", "確認される", "確認され",
    "確認できる", "おり", "しており", "しています", "した", "する", "です", "である", "であり", "を疑わない",
)
JA_CONJUNCTIONS: Final[tuple[str, ...]] = (
    "が、", "けれども", "けれど", "ものの", "一方", "一方で", "しかし", "ただし", "なお", "また", "その他",
)

# English cues, by direction: "pre" governs findings after it, "post" findings before it.
EN_NEGATION_PRE: Final[tuple[str, ...]] = (
    "no", "not", "without", "negative for", "free of", "no evidence of", "no signs of", "absence of",
    "absent", "resolution of", "resolved", "rather than", "instead of", "fails to reveal", "nor",
    "never", "ruled out", "excluding", "removal of", "clear of", "no longer", "interval resolution of",
    "no definite", "no significant", "there is no", "there are no",
)
EN_NEGATION_POST: Final[tuple[str, ...]] = (
    "not seen", "not identified", "not visualized", "not visualised", "not demonstrated", "not present",
    "not detected", "not appreciated", "not evident", "not noted", "not apparent", "not found",
    "not visible", "no longer seen", "no longer visible", "no longer present", "no longer identified",
    "absent", "resolved", "ruled out", "excluded", "negative", "none", "cleared", "gone",
)
EN_UNCERTAIN_PRE: Final[tuple[str, ...]] = (
    "possible", "possibly", "probable", "probably", "likely", "most likely", "more likely", "presumed",
    "presumably", "suspected", "suspect", "suspicious for", "suspicious of", "suspicion for", "suspicion of",
    "suggestive of", "suggests", "suggesting", "suggest", "concern for", "concerning for", "worrisome for",
    "may represent", "may reflect", "may be", "may indicate", "could represent", "could reflect", "could be",
    "might represent", "might be", "can represent", "question of", "questionable", "equivocal",
    "cannot exclude", "can not exclude", "can't exclude", "cannot rule out", "can not rule out",
    "can't rule out", "not excluded", "not ruled out", "rule out", "r/o", "to exclude", "differential includes",
    "differential diagnosis includes", "differential considerations include", "differential of",
    "favor", "favored", "favoured", "potential", "borderline", "versus", "vs", "vs.", "s/o", "evaluate for",
    "evaluation for", "concerning", "suspicious", "indeterminate for", "raises the possibility of",
    "possibility of", "consider", "considered", "query",
)
EN_UNCERTAIN_POST: Final[tuple[str, ...]] = (
    "cannot be excluded", "can not be excluded", "can't be excluded", "cannot be ruled out",
    "can not be ruled out", "can't be ruled out", "cannot be entirely excluded", "cannot be completely excluded",
    "cannot be totally excluded", "cannot be fully excluded", "cannot be definitely excluded",
    "cannot be entirely ruled out", "cannot be completely ruled out", "not entirely excluded",
    "not excluded", "not ruled out", "not completely excluded", "not entirely ruled out",
    "suspected", "is suspected", "are suspected", "is possible", "are possible", "is likely", "are likely",
    "is probable", "is favored", "is favoured", "is questioned", "is considered", "should be considered",
    "is not excluded", "are not excluded", "is not ruled out", "questioned", "?", "versus", "vs", "vs.",
    "is a consideration", "is a possibility", "remains a possibility", "is in the differential",
    "less likely", "not entirely certain", "uncertain", "may be present", "likely", "possible", "probable",
)
# Phrases that look like negations but describe change, not absence: the finding exists.
EN_PSEUDO: Final[tuple[str, ...]] = (
    "no change in", "no change", "no significant change in", "no significant change", "no interval change in",
    "no interval change", "no significant interval change", "no increase in", "no decrease in",
    "no growth", "no interval growth", "no interval increase", "not only", "without change",
    "without significant change", "without interval change", "no further", "not significantly changed",
    "not changed", "no worsening", "no progression", "no evidence of progression", "not increased",
    "no enlargement of", "no increase", "unchanged", "stable", "no new or enlarging", "gram negative",
    "not necessarily",
)
# Verbs that assert: they close a scope (No nodule is seen and the effusion ...).
EN_AFFIRMATIVE: Final[tuple[str, ...]] = (
    "there is", "there are", "there has been", "seen", "noted", "identified", "demonstrated", "shows",
    "show", "demonstrates", "reveals", "persists", "persist", "remains", "remain", "redemonstrated",
    "again seen", "present", "is", "are", "was", "were", "has", "have", "had", "which", "who",
    "measuring", "measures", "involving", "extending",
)
EN_CONJUNCTIONS: Final[tuple[str, ...]] = (
    "but", "however", "although", "though", "whereas", "yet", "except", "except for", "aside from",
    "apart from", "with the exception of", "while", "otherwise", "since", "because",
    "due to", "secondary to", "which is", "that is",
)
# Sentence-level boundaries for both languages (decimal points are handled in the engine).
SENTENCE_BOUNDARIES: Final[tuple[str, ...]] = ("。", ".", ";", "!", "\n", "■", "●", "□", "◆")
LIST_SEPARATORS: Final[tuple[str, ...]] = (",", "、")

# After a Japanese verbal cue, these heads keep the chain open: 肺炎を疑う所見は認めない.
JA_CHAIN_HEADS: Final[tuple[str, ...]] = (
    "所見", "像", "陰影", "影", "変化", "病変", "状態", "もの", "と", "とは", "ところ", "こと", "領域", "域",
    "部分", "ような", "様な", "ように", "ため",
)
