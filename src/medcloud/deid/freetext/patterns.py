"""Identifiers that have a shape: e-mail, URLs, phone numbers, IDs and digit runs, dates, ages over 89, addresses.

Every finder returns spans `(start, end, kind, replacement)` on the text it was given; a replacement of
None means "redact". Finders run on a copy where full-width ASCII is folded to ASCII one character for
one, so offsets hold for the original text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

Span = tuple[int, int, str, "str | None"]

# Full-width ASCII (FF01-FF5E) and the ideographic space fold to ASCII, one character each.
# The katakana long-vowel mark is left alone: it is a dash only between digits.
_FOLD = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FOLD.update({ord(d): 0x2D for d in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"})


def fold(text: str) -> str:
    """Full-width ASCII and dash variants to ASCII, keeping every offset."""
    return text.translate(_FOLD)


# Matches start only where a run of address characters starts, so a long run is scanned once.
EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+\s?(?:@|\(at\)|\[at\])\s?[A-Za-z0-9\-]+(?:\s?(?:\.|\(dot\)|\[dot\])\s?[A-Za-z0-9\-]+)+"
)
URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"'、。]+", re.IGNORECASE)

# ---- dates -------------------------------------------------------------------------------------
_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for m in names
}
_MON = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_KNUM = "〇一二三四五六七八九十"
_NUM = rf"(?:\d{{1,4}}|[{_KNUM}]{{1,4}}|元)"
# Era start years (the era's year 1 is this year).
_ERAS = {
    "令和": 2019,
    "平成": 1989,
    "昭和": 1926,
    "大正": 1912,
    "明治": 1868,
    "R": 2019,
    "H": 1989,
    "S": 1926,
    "T": 1912,
    "M": 1868,
}

_DATE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Japanese era, e.g. 令和6年4月1日, 平成30年12月, R6.4.1, H30/4/1
    (
        re.compile(
            rf"(?P<era>令和|平成|昭和|大正|明治)\s*(?P<y>{_NUM})\s*年\s*(?:(?P<m>{_NUM})\s*月\s*(?:(?P<d>{_NUM})\s*日)?)?"
        ),
        "era",
    ),
    (
        re.compile(
            r"(?<![A-Za-z0-9])(?P<era>令和|平成|昭和|大正|明治|[RHSTM])\.?\s?(?P<y>\d{1,2}|元)"
            r"[./\-](?P<m>\d{1,2})[./\-](?P<d>\d{1,2})(?!\d)"
        ),
        "era",
    ),
    # 2024年4月1日, 2024年4月, 24年4月1日
    (re.compile(rf"(?P<y>\d{{2,4}}|[{_KNUM}]{{2,4}})\s*年\s*(?P<m>{_NUM})\s*月(?:\s*(?P<d>{_NUM})\s*日)?"), "ymd"),
    # 4月1日 (no year)
    (re.compile(rf"(?<![\d年])(?P<m>{_NUM})\s*月\s*(?P<d>{_NUM})\s*日"), "md"),
    # ISO-like 2024-04-01, 2024/4/1, 2024.04.01, 20240401T..., also with a time after
    (re.compile(r"(?<![\d.])(?P<y>(?:19|20)\d\d)(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})(?![\d])"), "ymd"),
    (re.compile(r"(?<!\d)(?P<y>(?:19|20)\d\d)(?P<m>0[1-9]|1[0-2])(?P<d>0[1-9]|[12]\d|3[01])(?!\d)"), "ymd"),
    # 04/01/2024, 1.4.2024, 01-04-24 (day/month order is ambiguous; both readings are dates)
    (re.compile(r"(?<![\d.])(?P<a>\d{1,2})(?P<s>[-/.])(?P<b>\d{1,2})(?P=s)(?P<y>(?:19|20)?\d\d)(?![\d])"), "abY"),
    # April 1, 2024 / Apr 1st 2024 / April 2024
    (
        re.compile(
            rf"(?<![A-Za-z]){_MON}[\s\-/.]+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?[\s\-/.]+(?P<y>(?:19|20)\d\d)(?!\d)", re.I
        ),
        "mdy",
    ),
    # 2024-Apr-01, 2024 April 1
    (re.compile(rf"(?<!\d)(?P<y>(?:19|20)\d\d)[\s\-/.]+{_MON}[\s\-/.]+(?P<d>\d{{1,2}})(?!\d)", re.I), "ymd"),
    (
        re.compile(
            rf"(?<![A-Za-z0-9])(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+|-|\s*of\s+)?{_MON}[\s,\-]*(?P<y>(?:19|20)?\d\d)(?!\d)",
            re.I,
        ),
        "dmy",
    ),
    (re.compile(rf"(?<![A-Za-z]){_MON}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?![\d:])", re.I), "md_en"),
    (re.compile(rf"(?<![A-Za-z]){_MON},?\s+(?P<y>(?:19|20)\d\d)(?!\d)", re.I), "my"),
    (re.compile(r"(?<![\d.])(?P<y>(?:19|20)\d\d)[-/.](?P<m>0?[1-9]|1[0-2])(?![\d./\-])"), "ym"),
    # 3/14, 4/1撮影: month/day without a year ("L4/5", "T1/T2" have a letter before them)
    (re.compile(r"(?<![A-Za-z0-9./\-])(?P<m>0?[1-9]|1[0-2])/(?P<d>0?[1-9]|[12]\d|3[01])(?![\d/.])"), "md"),
    (re.compile(r"(?<![\d./])(?P<m>0?[1-9]|1[0-2])/(?P<y>(?:19|20)\d\d)(?![\d])"), "ym"),
]


def _knum(s: str) -> int | None:
    """Arabic or kanji numerals (up to 99) and 元 (the first year of an era)."""
    if s.isdigit():
        return int(s)
    if s == "元":
        return 1
    digits = {c: i for i, c in enumerate(_KNUM[:10])}
    if "十" in s:
        tens, _, ones = s.partition("十")
        t = digits.get(tens, 0) if tens else 1
        o = digits.get(ones, 0) if ones else 0
        return t * 10 + o
    if s and all(c in digits for c in s):
        return int("".join(str(digits[c]) for c in s))
    return None


def _ymd(m: re.Match[str], style: str) -> tuple[int | None, int | None, int | None]:
    g = m.groupdict()
    y = mo = d = None
    if style == "era":
        n = _knum(g["y"] or "")
        y = _ERAS[g["era"]] + n - 1 if n is not None else None
    elif style == "abY":
        a, b = int(g["a"]), int(g["b"])
        # Read as day/month when the first part cannot be a month, month/day otherwise.
        mo, d = (b, a) if a > 12 else (a, b)
    elif g.get("y"):
        y = _knum(g["y"])
    if style == "abY" or style == "era" or g.get("y"):
        yy = _knum(g["y"]) if g.get("y") and style != "era" else y
        if yy is not None and yy < 100:
            yy += 2000 if yy < 50 else 1900
        y = yy
    if style != "abY":
        mon = g.get("mon")
        mo = _MONTHS.get(mon.lower().rstrip(".")) if mon else (_knum(g["m"]) if g.get("m") else None)
        d = _knum(g["d"]) if g.get("d") else None
    return y, mo, d


def find_dates(text: str, mode: str, shift_days: int) -> list[Span]:
    """Dates in Western, 年月日 and era forms. `mode`: remove, shift (by shift_days) or keep."""
    if mode == "keep":
        return []
    spans: list[Span] = []
    taken = bytearray(len(text))  # characters already inside a date (earlier patterns win)
    for pat, style in _DATE_PATTERNS:
        for m in pat.finditer(text):
            s, e = m.span()
            if any(taken[s:e]):
                continue
            y, mo, d = _ymd(m, style)
            if mo is not None and not 1 <= mo <= 12:
                continue
            if d is not None and not 1 <= d <= 31:
                continue
            taken[s:e] = b"\x01" * (e - s)
            repl: str | None = None
            if mode == "shift" and y is not None and mo is not None and d is not None:
                try:
                    new = date(y, mo, d) + timedelta(days=shift_days)
                    repl = (
                        new.isoformat()
                        if style not in ("ymd", "era") or "年" not in m.group(0)
                        else (f"{new.year}年{new.month}月{new.day}日")
                    )
                except (ValueError, OverflowError):
                    repl = None
            spans.append((s, e, "date", repl))
    return spans


# ---- ages over 89 --------------------------------------------------------------------------------
_AGES = [
    re.compile(r"(?<!\d)(?P<n>\d{2,3}|[一二三四五六七八九十百]{2,4})\s*(?:歳|才|さい)(?:以上)?"),
    re.compile(r"(?<![\dA-Za-z])(?P<n>\d{2,3})\s*(?:years?|yrs?)(?![A-Za-z])", re.I),
    re.compile(r"(?<![\dA-Za-z])(?P<n>\d{2,3})\s*(?:-|\s)?\s*(?:years?|yrs?|y)[\s\-]*(?:old|o)\b\.?", re.I),
    re.compile(r"(?<![\dA-Za-z])(?P<n>\d{2,3})\s*(?:yo|y/o|y\.o\.?|yrs?|Y|M|F)(?![A-Za-z0-9])"),
    re.compile(r"(?<![A-Za-z])(?:age[ds]?|aged|年齢|享年|満)\s*[:：=]?\s*(?P<n>\d{2,3})(?!\d)", re.I),
    re.compile(r"(?<!\d)0?(?P<n>\d{2,3})Y(?![A-Za-z0-9])"),
]


# Ages spelled out: "ninety-two year old", "one hundred and one years".
_AGE_WORDS = re.compile(
    r"(?<![A-Za-z])(?:ninety(?:[\s\-](?:one|two|three|four|five|six|seven|eight|nine))?|one\s+hundred(?:\s+and)?"
    r"(?:[\s\-]\w+)?|hundred)(?=[\s\-]+(?:years?|yrs?|y/?o)\b)",
    re.I,
)


def find_ages(text: str) -> list[Span]:
    """Ages of 90 and over become "90+" (HIPAA Safe Harbor's aggregate)."""
    out: list[Span] = [(m.start(), m.end(), "age", "90+") for m in _AGE_WORDS.finditer(text)]
    for pat in _AGES:
        for m in pat.finditer(text):
            n = _knum(m.group("n").replace("百", "")) if not m.group("n").isdigit() else int(m.group("n"))
            if "百" in m.group("n") or (n is not None and n >= 90):
                s, e = m.span("n")
                out.append((s, e, "age", "90+"))
    return out


# ---- phone numbers, IDs, digit runs ----------------------------------------------------------------
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s\-.]?)?(?:\(\d{1,5}\)\s?)?\d{1,5}(?:[\s\-.]\d{1,5}){1,4}(?!\w)")
_PHONE_LABEL = re.compile(
    r"(?:tel|phone|ph|fax|mobile|cell|電話|携帯|連絡先|TEL|FAX)\s*(?:no\.?|番号)?\s*[:：.]?\s*$", re.I
)
ID_LABEL = re.compile(
    r"(?:(?<![A-Za-z])(?:id|mrn|mr#|pid|no|nr|num|number|acc|accession|chart|record|case|patient|pt|ins|insurance)"
    r"(?![A-Za-z])|ＩＤ|番号|患者番号|カルテ|診察券|受付|保険証|記号)\s*(?:no\.?|番号|#)?\s*[:：#.=]?\s*",
    re.I,
)
# "03(1234)5678": the area code's parentheses sit between the groups.
_PAREN_PHONE = re.compile(r"(?<!\d)\d{2,5}\s?\(\d{1,5}\)\s?\d{3,5}(?!\d)")
# Groups of two or more digits joined by a space or hyphen ("1234 5678", "150-0002"): IDs, postal codes.
_DIGIT_GROUPS = re.compile(r"(?<![\d.\-])\d{2,}(?:[ \-]\d{2,}){1,3}(?![\d.]\d)")
_DATE_SHAPE = re.compile(r"(?:19|20)\d\d[ \-]\d{1,2}[ \-]\d{1,2}|\d{1,2}[ \-]\d{1,2}[ \-](?:19|20)\d\d")
_DIGIT_RUN = re.compile(r"(?<![\d.])\d{5,}(?![\d.]\d)")
# Letters then digits ("MRN8841203", "A1234567", "SN99817XQ"): record and device numbers.
_ALNUM_ID = re.compile(r"(?<![A-Za-z0-9\-])(?=[A-Za-z0-9\-]*\d{4})[A-Za-z]{1,6}[\-]?\d[A-Za-z0-9\-]*(?![A-Za-z0-9])")
_TOKEN_AFTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/]*")
# Units after a number ("2000ms", "1500HU") are measurements, not IDs.
_UNIT_AFTER = re.compile(
    r"^\s?(?:ms|mm|cm|m|hu|kv|kvp|mas|ma|ml|mg|mgy|msv|sec|s|min|hz|mt|t|kg|g|%)(?![A-Za-z])", re.I
)


def find_numbers(text: str) -> list[Span]:
    """Phone numbers, IDs after a label, alphanumeric record numbers and runs of five or more digits."""
    out: list[Span] = []
    for m in PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group(0))
        before = text[max(0, m.start() - 24) : m.start()]
        if digits >= 9 or (digits >= 6 and _PHONE_LABEL.search(before)):
            out.append((m.start(), m.end(), "phone", None))
    for m in _PAREN_PHONE.finditer(text):
        out.append((m.start(), m.end(), "phone", None))
    for m in _DIGIT_GROUPS.finditer(text):
        # Dates are the date finder's to remove, shift or keep.
        if sum(c.isdigit() for c in m.group(0)) >= 7 and not _DATE_SHAPE.fullmatch(m.group(0)):
            out.append((m.start(), m.end(), "id", None))
    for m in _DIGIT_RUN.finditer(text):
        if not _UNIT_AFTER.match(text[m.end() : m.end() + 5]):
            out.append((m.start(), m.end(), "id", None))
    for m in _ALNUM_ID.finditer(text):
        tok = m.group(0)
        if re.fullmatch(r"[A-Za-z]{1,2}\d{1,2}[A-Za-z]?", tok):  # T1, T2W, L4: anatomy and sequences
            continue
        out.append((m.start(), m.end(), "id", None))
    for m in ID_LABEL.finditer(text):
        t = _TOKEN_AFTER.match(text, m.end())
        # "No. 3" and "case 2" are counts; a labelled value with three digits or more is a number of record.
        if t and sum(c.isdigit() for c in t.group(0)) >= 3:
            out.append((t.start(), t.end(), "id", None))
    return out


# ---- addresses ---------------------------------------------------------------------------------------
_PREF = (
    "北海道|東京都|京都府|大阪府|青森県|岩手県|宮城県|秋田県|山形県|福島県|茨城県|栃木県|群馬県|埼玉県|千葉県|神奈川県|"
    "新潟県|富山県|石川県|福井県|山梨県|長野県|岐阜県|静岡県|愛知県|三重県|滋賀県|兵庫県|奈良県|和歌山県|鳥取県|島根県|"
    "岡山県|広島県|山口県|徳島県|香川県|愛媛県|高知県|福岡県|佐賀県|長崎県|熊本県|大分県|宮崎県|鹿児島県|沖縄県"
)
_JA_BLOCK = r"(?:\s*(?:\d+|[〇一二三四五六七八九十]+)\s*(?:丁目|番地|番|号|の|-)?)+"
_JA_ADDRESS = [
    re.compile(
        rf"(?:〒\s*\d{{3}}-?\d{{4}}\s*)?(?:{_PREF})[一-龥ぁ-んァ-ヶ々ヶ]*?(?:市|区|町|村|郡)[一-龥ぁ-んァ-ヶ々ヶ]*(?:{_JA_BLOCK})?"
    ),
    re.compile(rf"(?:{_PREF})"),
    re.compile(rf"[一-龥々ヶ]{{1,5}}(?:市|区|郡)[一-龥ぁ-んァ-ヶ々ヶ]{{0,8}}?(?:町|村)?[一-龥々ヶ]{{0,6}}?{_JA_BLOCK}"),
    re.compile(r"[一-龥々ヶ]{1,8}\s*\d+\s*丁目(?:\s*\d+\s*(?:番地?|-)\s*(?:\d+\s*号?)?)?"),
    re.compile(r"〒\s*\d{3}-?\d{4}"),
    re.compile(r"(?<![\d\-])\d{3}-\d{4}(?![\d\-])"),  # postal code without its mark
    re.compile(r"(?:[\u30a0-\u30ff\u4e00-\u9fffA-Za-z々ヶ]{1,15}\s*)?(?<!\d)\d+\s*(?:号室|号棟|階)"),  # building, room
    re.compile(r"[\u4e00-\u9fff々ヶ]{1,8}(?:町|通|台|条|丁|が丘|ヶ丘)\s*[1-9]\d*(?:-\d+){1,3}"),
    re.compile(r"[\u4e00-\u9fff々ヶ]{2,8}[1-9]\d{0,3}-\d{1,4}-\d{1,4}"),  # 0 opens phone numbers, not blocks
    re.compile(r"(?<![\d\-])\d{1,3}-\d{1,4}-\d{1,4}(?:-\d{1,4})?(?![\d\-])"),  # chome-banchi-go
]
_STREET = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|place|pl|terrace|ter|"
    r"parkway|pkwy|highway|hwy|square|sq|circle|cir|crescent|close|row|alley|trail)"
)
_WEST_ADDRESS = [
    re.compile(
        rf"(?<![\w\-])\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'\-]*\.?\s+){{1,4}}{_STREET}\b\.?"
        r"(?:\s*,?\s*(?:apt|apartment|suite|ste|unit|room|fl|floor|#)\.?\s*#?\s*[A-Za-z0-9\-]+)?"
        r"(?:\s*,\s*[A-Z][A-Za-z'\-]+(?:\s+[A-Z][A-Za-z'\-]+){0,2})?"
        r"(?:\s*,?\s*[A-Z]{2}\b)?(?:\s*\d{5}(?:-\d{4})?)?",
        re.I,
    ),
    re.compile(r"(?<![\w])(?:P\.?\s?O\.?\s+Box|Postfach)\s+\d+", re.I),
    re.compile(r"(?<![\w\-])\d{1,4}-\d{1,4}(?:-\d{1,4})?\s+(?:[A-Z][a-z]+(?:-[a-z]+)?\s*,?\s*){1,4}"),
]


# Institutions: a hospital's name places the patient (PS3.15 removes InstitutionName by default).
_JA_INSTITUTION = re.compile(
    r"[\u3041-\u3096\u30a0-\u30ff\u4e00-\u9fff々ヶA-Za-z]{2,20}?(?:大学医学部附属病院|附属病院|医療センター|病院|医院|クリニック|診療所|大学)"
)
# Words that make an institution generic rather than named ("総合病院", "大学病院", "当院").
_JA_GENERIC = re.compile(
    r"^(?:当|本|他|前|同|貴|総合|大学|市民|一般|専門|地域|近医|近くの|精神科|の)*(?:病院|医院|クリニック|診療所|大学)$"
)
_JA_PARTICLE_RUN = re.compile(r".*(?:は|が|を|に|で|と|の|へ|や|より|から|CT|MRI|MR)")
_EN_INSTITUTION = re.compile(
    r"(?<![A-Za-z])(?:(?:St\.?|Saint|Mt\.?|Mount)\s+)?(?:[A-Z][A-Za-z'\.\-]*\s+){1,5}"
    r"(?:Hospital|Clinic|Medical\s+Cent(?:er|re)|Health(?:\s+System)?|Infirmary|Institute|Imaging\s+Cent(?:er|re))\b"
)
_EN_GENERIC = frozenset(
    "the a an general memorial regional community university medical children's childrens international "  # noqa: SIM905
    "city county state district teaching private public outside other referring local same".split()
)


def find_institutions(text: str) -> list[Span]:
    """Named hospitals and clinics, Japanese and English; generic mentions ("総合病院", "outside hospital") stay."""
    out: list[Span] = []
    for m in _JA_INSTITUTION.finditer(text):
        # The match may start inside the sentence before the name: cut after its last particle.
        lead = _JA_PARTICLE_RUN.search(m.group(0))
        start = m.start() + (lead.end() if lead else 0)
        if not _JA_GENERIC.match(text[start : m.end()]):
            out.append((start, m.end(), "institution", None))
    for m in _EN_INSTITUTION.finditer(text):
        words = m.group(0).split()[:-1]
        if any(
            w.lower().rstrip(".") not in _EN_GENERIC and w.lower() not in ("st", "saint", "mt", "mount") for w in words
        ):
            out.append((m.start(), m.end(), "institution", None))
    return out


def find_addresses(text: str) -> list[Span]:
    """Japanese addresses (prefecture, city/ward, chome-banchi), postal codes and Western street addresses."""
    out: list[Span] = []
    for pat in _JA_ADDRESS + _WEST_ADDRESS:
        for m in pat.finditer(text):
            s, e = m.span()
            while e > s and text[e - 1] in " ,、-":
                e -= 1
            if e > s:
                out.append((s, e, "address", None))
    return out


FINDERS: tuple[Callable[[str], list[Span]], ...] = (find_numbers, find_addresses, find_institutions, find_ages)


def find_shaped(text: str, date_mode: str, shift_days: int) -> list[Span]:
    """Every shaped identifier in `text` (already folded)."""
    spans: list[Span] = []
    for m in EMAIL.finditer(text):
        spans.append((m.start(), m.end(), "email", None))
    for m in URL.finditer(text):
        spans.append((m.start(), m.end(), "url", None))
    spans.extend(find_dates(text, date_mode, shift_days))
    for f in FINDERS:
        spans.extend(f(text))
    return spans
