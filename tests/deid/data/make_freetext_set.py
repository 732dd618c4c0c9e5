"""Write freetext_labelled.jsonl: descriptor- and comment-like sentences, Japanese and English, with planted
identifiers of every kind and their spans labelled.

    python tests/deid/data/make_freetext_set.py

Two parts with their own templates and their own fillers (names, numbers, places): `tune` was used
while building the cleaner; `heldout` was written at the same time and only measured, never tuned on.
Every line: {"id", "split", "lang", "text", "spans": [{"start", "end", "kind", "value"}]}.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).with_name("freetext_labelled.jsonl")

FILLERS: dict[str, dict[str, list[str]]] = {
    "tune": {
        "name_kanji": [
            "山田太郎",
            "佐藤花子",
            "鈴木一郎",
            "高橋美咲",
            "田中健太",
            "伊藤直樹",
            "渡辺陽子",
            "中村由美",
            "小林翔太",
            "加藤大輔",
            "吉田恵子",
            "山本和也",
            "松本真由美",
            "井上拓也",
            "木村さくら",
        ],
        "name_kana": [
            "やまだ たろう",
            "さとう はなこ",
            "スズキ イチロウ",
            "タカハシ ミサキ",
            "たなか けんた",
            "イトウ ナオキ",
        ],
        "name_latin": [
            "John Smith",
            "Mary Johnson",
            "Robert Miller",
            "Linda Davis",
            "James Wilson",
            "Patricia Moore",
            "Michael Taylor",
            "Barbara Anderson",
            "David Thomas",
            "Susan Jackson",
            "Dr. Emily Clark",
        ],
        "name_romaji": ["Yamada Taro", "TANAKA HANAKO", "Suzuki Ichiro", "SATO^KENJI", "Takahashi Yuko", "ITO^NAOKI"],
        "phone": [
            "03-1234-5678",
            "090-2345-6789",
            "(03)3456-7890",
            "0120-123-456",
            "+81-3-5555-0199",
            "(555) 123-4567",
            "555-234-5678",
            "+1 415 555 0134",
            "06 6345 1234",
        ],
        "email": [
            "yamada@example.com",
            "t.suzuki@hospital.example.jp",
            "jsmith@mail.example.org",
            "info+ct@clinic.example.net",
        ],
        "id": ["12345678", "MRN 7654321", "A1234567", "ID: 00123456", "0098765432", "ACC88123", "P-2024-00815"],
        "address_ja": [
            "東京都新宿区西新宿2-8-1",
            "大阪府大阪市北区梅田3丁目1番1号",
            "〒160-0023 東京都新宿区西新宿",
            "神奈川県横浜市中区本町6-50-10",
            "京都市左京区吉田近衛町",
            "北海道旭川市1条通8丁目",
            "兵庫県神戸市中央区加納町6-5-1",
            "福岡市中央区天神1丁目8番1号",
        ],
        "address_en": [
            "123 Main Street, Springfield, IL 62704",
            "45 Oak Avenue",
            "1-2-3 Hongo, Bunkyo-ku, Tokyo",
            "77 Sunset Blvd, Los Angeles, CA 90028",
            "9 Elm Road",
            "21 Church Lane",
            "4-1-1 Nishi-Ikebukuro, Toshima-ku, Tokyo",
            "8 Rue de Rivoli, 75004 Paris",
        ],
        "date_west": [
            "2024-04-01",
            "04/01/2024",
            "April 1, 2024",
            "1 Apr 2024",
            "2023/12/25",
            "15.03.2022",
            "20240401",
            "Mar 3 2021",
        ],
        "date_ja": ["2024年4月1日", "2023年12月25日", "4月1日", "2022年3月"],
        "date_era": ["令和6年4月1日", "平成30年12月5日", "昭和55年3月3日", "R6.4.1", "H30/12/5", "令和元年5月1日"],
        "age": ["92", "95", "101", "90"],
    },
    "heldout": {
        "name_kanji": [
            "長谷川健一",
            "石井裕子",
            "前田隆",
            "藤田浩二",
            "岡田美穂",
            "後藤亮介",
            "村上彩",
            "近藤悠斗",
            "坂本結衣",
            "遠藤蓮",
            "青木陽菜",
            "西村颯太",
            "五十嵐凛",
            "勅使河原湊",
            "東海林智子",
        ],
        "name_kana": ["いしい ゆうこ", "フジタ ケンイチ", "おかだ みほ", "ゴトウ リョウスケ", "むらかみ あや"],
        "name_latin": [
            "Thomas Becker",
            "Anna Kowalski",
            "George Harris",
            "Olivia Martin",
            "William Turner",
            "Sophie Laurent",
            "Daniel Price",
            "Grace Mitchell",
            "Prof. Henry Collins",
        ],
        "name_romaji": ["Kurosawa Akiko", "HOSHINO GENTA", "Nishimura Kenji", "OKUBO^MAYUMI", "Fujimori Haruki"],
        "phone": [
            "045-987-6543",
            "080-1111-2222",
            "０３－９８７６－５４３２",
            "TEL 0312345678",
            "(212) 555-0187",
            "+44 20 7946 0958",
            "092 123 4567",
        ],
        "email": ["k.ishii@example.co.jp", "radiology.desk@example.com", "h_collins@uni.example.edu"],
        "id": ["87654321", "患者ID 20481234", "カルテ番号 556677", "MRN: 4455667", "B7654321", "Chart #9081726"],
        "address_ja": [
            "愛知県名古屋市中区栄3-4-5",
            "福岡県福岡市博多区博多駅前2丁目1番",
            "北海道札幌市中央区北1条西2丁目",
            "〒530-0001 大阪府大阪市北区",
            "埼玉県さいたま市浦和区高砂3-15-1",
        ],
        "address_en": [
            "500 Pine Street, Seattle, WA 98101",
            "12 Baker Lane",
            "3-5-8 Kita-Aoyama, Minato-ku, Tokyo",
            "210 Harbor Drive, San Diego, CA 92101",
        ],
        "date_west": ["2021-11-30", "11/30/2021", "November 30, 2021", "30 Nov 2021", "2020/2/29", "08.07.2019"],
        "date_ja": ["2021年11月30日", "2019年7月8日", "11月30日"],
        "date_era": ["令和3年11月30日", "平成元年1月8日", "昭和64年1月7日", "H31.4.30", "令和五年六月一日"],
        "age": ["93", "97", "104"],
    },
    # Written after the cleaner had been tuned (and after `heldout` had been seen); measured once, not tuned on.
    "heldout2": {
        "name_kanji": [
            "小松原 恵美",
            "大橋 一輝",
            "宮下 千尋",
            "野村 雄大",
            "菅野 真央",
            "樋口 光",
            "水野 紗希",
            "桑原 隼人",
            "関 あかね",
            "平田 俊介",
            "久保田 美和",
            "土屋 航",
        ],
        "name_kana": ["はしもと けいこ", "ノムラ ユウダイ", "みやした ちひろ", "スガノ マオ"],
        "name_latin": [
            "Margaret Oconnor",
            "Ahmed Hassan",
            "Chen Wei",
            "Lucas Fernandez",
            "Ingrid Svensson",
            "Dr. Rebecca Stone",
            "Kevin O'Brien",
            "Priya Raman",
            "Mr. Tomasz Nowak",
        ],
        "name_romaji": ["Komatsubara Emi", "OHASHI KAZUKI", "Miyashita Chihiro", "HIGUCHI^HIKARU", "Kuwabara Hayato"],
        "phone": [
            "03-6789-0123",
            "070-9876-5432",
            "0467-23-4567",
            "(044) 555-1234",
            "+81 90 8765 4321",
            "617-555-0142",
            "電話 0298-76-5432",
        ],
        "email": ["e.komatsu@example.ne.jp", "ahmed.hassan@example.org", "rad-office@hosp.example.com"],
        "id": ["31415926", "MRN 27182818", "受付番号 8675309", "Z9081726", "保険者番号 06139876", "ID-44556677"],
        "address_ja": [
            "千葉県船橋市本町1-3-1",
            "宮城県仙台市青葉区国分町2丁目",
            "沖縄県那覇市泉崎1-2-2",
            "〒980-0811 宮城県仙台市",
            "静岡県浜松市中区元城町103-2",
        ],
        "address_en": [
            "1600 Pennsylvania Avenue, Washington, DC 20500",
            "22 Acacia Road",
            "742 Evergreen Terrace",
            "5-2-1 Ginza, Chuo-ku, Tokyo",
        ],
        "date_west": ["2018-06-15", "06/15/2018", "June 15, 2018", "15 June 2018", "2018.6.15", "15-Jun-2018"],
        "date_ja": ["2018年6月15日", "2017年10月3日", "6月15日"],
        "date_era": ["平成30年6月15日", "令和2年10月3日", "昭和60年1月20日", "R2.10.3"],
        "age": ["91", "99", "102"],
    },
}

# Templates: (lang, text with {slot} placeholders). Slots: NK (kanji name), NA (kana name), NL (Latin
# name), NR (romaji name), PH, EM, ID, AJ (Japanese address), AE (Western address), DW, DJ, DE (dates), AGE.
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "tune": [
        ("ja", "胸部CT {NK}"),
        ("ja", "{NK}様 頭部MRI 単純"),
        ("ja", "依頼医：{NK} 腹部造影CT"),
        ("ja", "{NA}さん 術前評価"),
        ("ja", "連絡先 {PH} 至急読影希望"),
        ("ja", "問い合わせは{EM}まで"),
        ("ja", "他院ID {ID} 比較読影"),
        ("ja", "住所 {AJ} 在住"),
        ("ja", "撮影日 {DJ} 前回比較"),
        ("ja", "{DE}撮影の前回CTと比較"),
        ("ja", "{AGE}歳 女性 骨粗鬆症疑い"),
        ("ja", "主治医 {NK} 先生より依頼 {DJ}"),
        ("ja", "前回検査 {DW} 左肺結節 フォロー"),
        ("ja", "患者名 {NA} 造影剤アレルギーあり"),
        ("ja", "{AJ}の{NK}さんより紹介"),
        ("ja", "紹介元 {PH} 担当 {NK}"),
        ("ja", "頭部CT 外傷 {AGE}歳男性"),
        ("en", "CT CHEST {NL}"),
        ("en", "MR BRAIN W/WO {NR}"),
        ("en", "Referred by {NL} for follow-up of RLL nodule"),
        ("en", "Prior exam {DW} at outside hospital"),
        ("en", "Call {PH} with results"),
        ("en", "Send report to {EM}"),
        ("en", "Outside MRN {ID}"),
        ("en", "Patient lives at {AE}"),
        ("en", "{AGE} year old female, fall, r/o hip fracture"),
        ("en", "{NL} called on {DW} regarding contrast allergy"),
        ("en", "CT ABD PELVIS W CONTRAST {DW}"),
        ("en", "Comparison: {DW}. Technologist: {NL}"),
        ("en", "Pt {NR}, DOB {DW}, age {AGE}"),
        ("en", "Protocol per {NL}, phone {PH}"),
        ("en", "Study performed at {AE} on {DW}"),
        ("en", "Scanned by {NR} {DJ}"),
    ],
    "heldout": [
        ("ja", "{NK}　胸腹部造影CT　肝転移精査"),
        ("ja", "検査依頼者：{NK}（消化器内科）"),
        ("ja", "{NA}様の付き添いあり"),
        ("ja", "緊急連絡先：{PH}（家族）"),
        ("ja", "画像送付先 {EM}"),
        ("ja", "{ID} 前医画像あり"),
        ("ja", "現住所：{AJ}"),
        ("ja", "{DE}に他院でMRI施行"),
        ("ja", "{DJ}の単純写真と比較し著変なし"),
        ("ja", "{AGE}才 男性 認知症のため鎮静下に撮影"),
        ("ja", "読影医 {NK}　{DJ}"),
        ("ja", "{NK}医師に電話報告済み（{PH}）"),
        ("ja", "前回 {DW} 施行分と比較"),
        ("en", "CTA HEAD NECK {NR}"),
        ("en", "Requested by {NL}; urgent read"),
        ("en", "Family contact {PH}"),
        ("en", "Forward images to {EM} please"),
        ("en", "Reference number {ID}"),
        ("en", "Home address {AE}"),
        ("en", "Previous CT dated {DW} shows stable nodule"),
        ("en", "{AGE}-year-old male with dementia, sedated"),
        ("en", "Results discussed with {NL} on {DW}"),
        ("en", "XR KNEE 3 VIEWS {NR}"),
        ("en", "Transferred from {AE}, records {ID}"),
        ("en", "Images reviewed by {NL}, {DJ}"),
        ("en", "Follow up in 3 months; contact {EM} or {PH}"),
    ],
    "heldout2": [
        ("ja", "骨盤MRI　{NK}　子宮筋腫"),
        ("ja", "担当医：{NK}　緊急"),
        ("ja", "{NA}さまより電話あり、{PH}へ折り返し"),
        ("ja", "結果は{EM}へ送付"),
        ("ja", "{ID}　他院紹介"),
        ("ja", "{AJ}在住、交通事故"),
        ("ja", "{DE}に手術、今回術後評価"),
        ("ja", "{DJ}撮影分と比較、変化なし"),
        ("ja", "{AGE}歳女性、嚥下障害"),
        ("ja", "{NK}先生　{DW}依頼"),
        ("en", "MRI LUMBAR SPINE {NR}"),
        ("en", "Ordered by {NL}"),
        ("en", "Patient daughter phone {PH}"),
        ("en", "Copy to {EM}"),
        ("en", "Prior imaging {ID} from another facility"),
        ("en", "Lives at {AE}"),
        ("en", "Compared with CT of {DW}"),
        ("en", "{AGE} y/o male, shortness of breath"),
        ("en", "Read by {NL} on {DW}"),
        ("en", "US ABDOMEN {NR} {DJ}"),
    ],
}

# Sentences with nothing identifying: every word removed from these is a false removal.
CLEAN: dict[str, list[tuple[str, str]]] = {
    "tune": [
        ("ja", "胸部単純CT 肺野条件"),
        ("ja", "頭部MRI 拡散強調像 脳梗塞疑い"),
        ("ja", "腹部造影CT 動脈相 門脈相 平衡相"),
        ("ja", "左上葉に10mmの結節影あり 経過観察"),
        ("ja", "造影剤アレルギー歴なし 腎機能正常"),
        ("ja", "右膝関節 MRI 半月板損傷疑い"),
        ("ja", "術後フォロー 再発所見なし"),
        ("en", "CT CHEST WITH CONTRAST"),
        ("en", "MR BRAIN W/WO"),
        ("en", "Chest Routine Low Dose"),
        ("en", "AX T2 FLAIR"),
        ("en", "Follow-up of pulmonary nodule, 5 mm, stable"),
        ("en", "Patient moved during acquisition; repeat series 3"),
        ("en", "No contrast given due to renal function"),
        ("en", "CT ABDOMEN PELVIS PORTAL VENOUS PHASE"),
        ("en", "SAG T1 MPRAGE 1mm"),
        ("en", "Screening mammogram, bilateral"),
    ],
    "heldout": [
        ("ja", "冠動脈CT 石灰化スコア"),
        ("ja", "腰椎MRI 椎間板ヘルニア L4/5"),
        ("ja", "乳腺超音波 左乳房腫瘤精査"),
        ("ja", "肝細胞癌治療後 造影効果なし"),
        ("ja", "胸部X線 正面 側面"),
        ("en", "CTA HEAD AND NECK"),
        ("en", "PET CT WHOLE BODY FDG"),
        ("en", "Knee Left 3 Views"),
        ("en", "Motion artifact on series 4, repeated"),
        ("en", "Renal mass, Bosniak classification requested"),
        ("en", "Lumbar Spine Without Contrast"),
        ("en", "DWI b1000 ADC map"),
    ],
    "heldout2": [
        ("ja", "骨盤MRI 子宮筋腫疑い"),
        ("ja", "頸部CT 造影 リンパ節腫大"),
        ("ja", "右肩関節MRI 腱板断裂疑い"),
        ("en", "MRI LUMBAR SPINE WITHOUT CONTRAST"),
        ("en", "US Abdomen Complete"),
        ("en", "Shortness of breath, rule out pulmonary embolism"),
        ("en", "Sagittal T2 fat saturated, 3 mm slices"),
    ],
}

SLOT_KIND = {
    "NK": ("name", "name_kanji"),
    "NA": ("name", "name_kana"),
    "NL": ("name", "name_latin"),
    "NR": ("name", "name_romaji"),
    "PH": ("phone", "phone"),
    "EM": ("email", "email"),
    "ID": ("id", "id"),
    "AJ": ("address", "address_ja"),
    "AE": ("address", "address_en"),
    "DW": ("date", "date_west"),
    "DJ": ("date", "date_ja"),
    "DE": ("date", "date_era"),
    "AGE": ("age", "age"),
}
# Labels inside a filler ("MRN ", "ID: ", "Dr. ", "TEL ") are not themselves identifying.
_LABEL = re.compile(
    r"^(?:MRN:? |ID: |ID-|Dr\. |Prof\. |Mr\. |TEL |電話 |患者ID |カルテ番号 |受付番号 |保険者番号 |Chart #|〒)"
)


def _render(template: str, fill: dict[str, list[str]], rng: random.Random) -> tuple[str, list[dict[str, object]]]:
    out, spans, pos = "", [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += template[pos : m.start()]
        kind, pool = SLOT_KIND[m.group(1)]
        value = rng.choice(fill[pool])
        label = _LABEL.match(value)
        start = len(out) + (label.end() if label else 0)
        out += value
        spans.append({"start": start, "end": len(out), "kind": kind, "value": out[start:]})
        pos = m.end()
    return out + template[pos:], spans


def build(seed: int = 20261129, per_template: int = 5) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for split in ("tune", "heldout", "heldout2"):
        rng = random.Random(f"{seed}-{split}")
        n = 0
        for lang, tpl in TEMPLATES[split]:
            seen: set[str] = set()
            for _ in range(per_template * 4):
                text, spans = _render(tpl, FILLERS[split], rng)
                if text in seen:
                    continue
                seen.add(text)
                rows.append({"id": f"{split}-{n:03d}", "split": split, "lang": lang, "text": text, "spans": spans})
                n += 1
                if len(seen) == per_template:
                    break
        for lang, text in CLEAN[split]:
            rows.append({"id": f"{split}-{n:03d}", "split": split, "lang": lang, "text": text, "spans": []})
            n += 1
    return rows


if __name__ == "__main__":
    rows = build()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} sentences -> {OUT}")
