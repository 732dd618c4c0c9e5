"""Person names and place names, in Latin letters and in Japanese.

Japanese: SudachiPy's morphological analysis (dictionary inside the `sudachidict-core` wheel) tags
family and given names (名詞,固有名詞,人名) and place names (地名) in kanji and katakana; names written in
hiragana or unknown to the dictionary are caught by their context (an honorific after, a label before).
Latin: an allow-list. Words of the medical/DICOM descriptor vocabulary and common English words are
kept; capitalised words that are person names or unknown are removed, and so are words after a title
("Dr.", "Mr.") or a label ("patient:", "referred by").
"""

from __future__ import annotations

import re
import threading
from functools import cache, lru_cache
from typing import Any

from medcloud.deid.freetext import vocab
from medcloud.deid.freetext.patterns import Span

_JA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f々〆ヶ]")
_KANA_KANJI_RUN = r"[\u3040-\u309f\u30a0-\u30ff\u4e00-\u9fff々ヶ・]"
_HONORIFIC = r"(?:さん|様|さま|サマ|くん|君|ちゃん|先生|せんせい|氏|殿|医師|Dr\.?|技師|看護師|主治医)"
# A run of kana/kanji right before an honorific is a name ("やまだたろうさん", "佐藤先生").
_JA_BEFORE_HONORIFIC = re.compile(rf"({_KANA_KANJI_RUN}{{2,8}}?)\s?(?={_HONORIFIC})")
_JA_LABEL = re.compile(
    r"(?:(?:患者名|患者氏名|氏名|名前|お名前|主治医|担当医|依頼医|紹介医|読影医|撮影者|記載者|報告者|連絡者|技師名)\s*[:：]?"
    r"|(?:患者|担当|技師|医師|紹介元|依頼者)\s*[:：])\s*"
)
_JA_NAME_AFTER_LABEL = re.compile(
    rf"[\u3040-\u309f\u30a0-\u30ff\u4e00-\u9fff々ヶ・]{{2,10}}(?:\s+{_KANA_KANJI_RUN}{{1,3}}(?!{_KANA_KANJI_RUN}))?"
)
# Words after a label that are not names: the label is often followed by ordinary nouns.
_JA_NOT_NAME_TAIL = re.compile(r"(?:の|は|が|を|に|で|と|より|から|へ|。|、)")


_KANJI_NUMBER = re.compile(r"[〇一二三四五六七八九十百千万]+")


@cache
def _dictionary() -> Any:
    from sudachipy import dictionary

    return dictionary.Dictionary(dict="core")


_LOCAL = threading.local()


def _tokenizer() -> Any:
    """One tokenizer per thread (a Deidentifier may be shared by threads); the dictionary is shared."""
    tok = getattr(_LOCAL, "tokenizer", None)
    if tok is None:
        tok = _LOCAL.tokenizer = _dictionary().create()
    return tok


def has_japanese(text: str) -> bool:
    """Kana or kanji present (the analyser is loaded only for such text)."""
    return _JA.search(text) is not None


def japanese_spans(text: str) -> list[Span]:
    """Names and places found by Sudachi, plus names found by honorifics and labels."""

    out: list[Span] = []
    for base, chunk in _chunks(text):
        if has_japanese(chunk):
            out.extend((base + s, base + e, k, r) for s, e, k, r in _morph_spans(chunk))
    out.extend(_context_spans(text))
    out.extend(_beside_names(text, out))
    return out


# Sudachi refuses input over ~49 KB; 8,000 characters stay under it in any script.
_CHUNK = 8_000


def _chunks(text: str) -> list[tuple[int, str]]:
    """Pieces of at most _CHUNK characters, cut after a line end, sentence end or space where one is near."""
    out: list[tuple[int, str]] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + _CHUNK)
        if end < len(text):
            cut = max(text.rfind(c, pos + _CHUNK // 2, end) for c in ("\n", "。", ". ", " ", "、"))
            end = cut + 1 if cut > pos else end
        out.append((pos, text[pos:end]))
        pos = end
    return out


def _morph_spans(text: str) -> list[Span]:
    from sudachipy import tokenizer

    out: list[Span] = []
    toks = _tokenizer().tokenize(text, tokenizer.Tokenizer.SplitMode.C)
    for i, m in enumerate(toks):
        pos = m.part_of_speech()
        surface = m.surface()
        if pos[0] != "名詞" or pos[1] != "固有名詞":
            # Dictionary-unknown kana/kanji words may be names; unknown Latin is judged by latin_spans.
            if m.is_oov() and _JA.search(surface) and len(surface) >= 2 and not _KANJI_NUMBER.fullmatch(surface):
                out.append((m.begin(), m.end(), "name", None))
            continue
        if pos[2] == "人名":
            out.append((m.begin(), m.end(), "name", None))
            if pos[3] != "姓":
                # A word before a given name that the dictionary also knows as a family name ("大橋 一輝").
                j = i - 1
                if j >= 0 and toks[j].surface() in (" ", "\u3000"):
                    j -= 1
                if j >= 0 and i - j <= 2 and _could_be(toks[j].surface(), "姓"):
                    out.append((toks[j].begin(), toks[j].end(), "name", None))
            if pos[3] == "姓":
                given = _GIVEN_AFTER_FAMILY.match(text, m.end())
                if given and _may_be_given_name(given.group(1)):
                    out.append((m.end(), given.end(), "name", None))
        elif pos[2] == "地名":
            out.append((m.begin(), m.end(), "address", None))
        elif pos[2] == "一般" and _JA.search(surface) and i + 1 < len(toks):
            # Organisation-like proper nouns followed by 病院/クリニック name an institution.
            nxt = toks[i + 1].surface()
            if nxt.startswith(("病院", "クリニック", "医院", "診療所", "大学", "センター")):
                out.append((m.begin(), toks[i + 1].end(), "institution", None))
    return out


def _context_spans(text: str) -> list[Span]:
    """Names told by an honorific after them or a label before them, and kana words beside a name."""
    out: list[Span] = []
    for m in _JA_BEFORE_HONORIFIC.finditer(text):
        run = m.group(1)
        # Trim leading particles and words that end a clause ("...の田中先生" keeps only 田中).
        cut = max(
            (run.rfind(p) + len(p) for p in ("の", "は", "が", "を", "に", "で", "と", "、", "・") if p in run[:-1]),
            default=0,
        )
        word = run[cut:]
        if len(word) >= 2 and not _job_word(word):
            out.append((m.start(1) + cut, m.end(1), "name", None))
    for m in _JA_LABEL.finditer(text):
        n = _JA_NAME_AFTER_LABEL.match(text, m.end())
        if n:
            stop = _JA_NOT_NAME_TAIL.search(n.group(0))
            end = n.start() + (stop.start() if stop else len(n.group(0)))
            if end - n.start() >= 2:
                out.append((n.start(), end, "name", None))
    return out


_KANA_BEFORE = re.compile(r"([\u3041-\u3096\u30a1-\u30fa\u30fc]{2,8})[ \u3000]$")
_KANA_AFTER = re.compile(r"[ \u3000]([\u3041-\u3096\u30a1-\u30fa\u30fc]{2,8})(?![\u3041-\u3096\u30a1-\u30fa\u30fc])")


def _beside_names(text: str, spans: list[Span]) -> list[Span]:
    """A kana word written next to a found name, space-separated, is the rest of it ("スズキ イチロウさん")."""
    out: list[Span] = []
    for s, e, kind, _r in spans:
        if kind != "name":
            continue
        lo = max(0, s - 9)
        before = _KANA_BEFORE.search(text[lo:s])
        if before:
            out.append((lo + before.start(1), s, "name", None))
        after = _KANA_AFTER.match(text, e)
        if after:
            n = _name_part(after.group(1))
            if n:
                out.append((e, after.start(1) + n, "name", None))
    return out


_GIVEN_AFTER_FAMILY = re.compile(
    r"[ \u3000]([\u3041-\u3096\u30a1-\u30fa\u30fc\u4e00-\u9fff々]{1,4})(?![\u3041-\u30ff\u4e00-\u9fff])"
)
_NOT_GIVEN = {
    "さん",
    "さま",
    "くん",
    "ちゃん",
    "です",
    "ます",
    "より",
    "から",
    "まで",
    "など",
    "なし",
    "あり",
    "せんせい",
}


@lru_cache(maxsize=4096)
def _could_be(word: str, kind: str) -> bool:
    """Some dictionary entry for this exact word is a person name of this kind (姓 or 名)."""
    return any(m.part_of_speech()[2] == "人名" and m.part_of_speech()[3] == kind for m in _dictionary().lookup(word))


def _job_word(word: str) -> bool:
    """An ordinary noun before 技師/医師/先生 ("検査技師", "担当医師") rather than a surname ("大橋先生")."""
    from sudachipy import tokenizer

    if re.search(r"[\u3041-\u30ff]", word) or _could_be(word, "姓") or _could_be(word, "名"):
        return False  # job titles are written in kanji; a kana word before an honorific is a name
    toks = _tokenizer().tokenize(word, tokenizer.Tokenizer.SplitMode.C)
    return all(t.part_of_speech()[1] in ("普通名詞", "数詞") and not t.is_oov() for t in toks)


def _may_be_given_name(word: str) -> bool:
    """After a family name and a space: one kanji, kana, or anything the dictionary does not call a common noun."""
    from sudachipy import tokenizer

    if word in _NOT_GIVEN:
        return False
    if len(word) == 1 or not re.search(r"[\u4e00-\u9fff]", word):
        return True
    toks = _tokenizer().tokenize(word, tokenizer.Tokenizer.SplitMode.C)
    return not (len(toks) == 1 and toks[0].part_of_speech()[1] == "普通名詞" and not toks[0].is_oov())


def _name_part(word: str) -> int:
    """How many leading characters of a kana word beside a name are the name's rest (0: none).

    Stops at an honorific or particle ("イチロウさん" -> 4); a lone ordinary word ("です") gives 0."""
    from sudachipy import tokenizer

    toks = _tokenizer().tokenize(word, tokenizer.Tokenizer.SplitMode.C)
    n = 0
    for t in toks:
        pos = t.part_of_speech()
        if pos[0] in ("接尾辞", "助詞", "助動詞") and not t.is_oov():
            break
        n = t.end()
    if n == len(word) and len(toks) == 1 and toks[0].part_of_speech()[1] != "固有名詞" and not toks[0].is_oov():
        return 0
    return n


# Latin letters with accents count ("François", "MÜLLER").
_L = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017f"
_WORD = re.compile(rf"[{_L}][{_L}'\-]*[{_L}]|[{_L}]")
# "MR BRAIN" and "DR CHEST" are modalities: an upper-case title counts only with its full stop.
_TITLE = re.compile(
    r"(?<![A-Za-z])(?:(?:Dr|Drs|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Doctor|Sir|Dame|Sra|Herr|Frau|Mme|Mlle)\.?"
    r"|(?:DR|MR|MRS|MS|PROF|dr|mr|mrs|ms|prof)\.|(?:DOCTOR|doctor|MRS|MISS|PROFESSOR))\s+"
    r"(?P<n>(?:[A-Z][.]\s?)*[A-Za-z][A-Za-z'\-]+(?:\s+(?:[A-Z]\.\s?)*[A-Z][A-Za-z'\-]+){0,2})"
)
_LATIN_LABEL = re.compile(
    r"(?<![A-Za-z])(?:patient(?:\s+name)?|pt(?:\s+name)?|name|referred\s+by|referring(?:\s+physician)?|ordered\s+by|"
    r"signed\s+by|read\s+by|dictated\s+by|reported\s+by|performed\s+by|requested\s+by|physician|technologist|"
    r"tech|attending|resident|radiologist|operator|contact|cc|attn|per|informed|called|discussed\s+with|"
    r"mother|father|wife|husband|son|daughter|spouse|guardian)\s*[:\-]?\s+"
    r"(?P<n>[A-Za-z][A-Za-z'\-]+(?:[\s,^]+[A-Za-z][A-Za-z'\-]+)?)",
    re.I,
)
# Given names that are mostly ordinary verbs and nouns in descriptors ("Will Call Back", "Mark Lesion").
_VERB_NAMES = frozenset(
    "will may can mark bill don art guy pat rob sue gene chase grant hope ray page dean sunny major king "  # noqa: SIM905
    "rich frank miles lane wade drew hunter".split()
)
_INITIALS_NAME = re.compile(
    r"(?<![A-Za-z.])(?:(?:[A-Z]\.\s?){1,2}(?P<w>[A-Z][a-z][A-Za-z'\-]*)"
    r"|(?P<w2>[A-Z][a-z][A-Za-z'\-]*),?\s(?:[A-Z]\.?){1,2}(?![A-Za-z]))"
)
_MIDDLE_INITIAL = re.compile(r"(?<![A-Za-z])[A-Za-z]+\s+(?P<i>[A-Z]\.?\s+)[A-Z][A-Za-z'\-]+")
_INITIAL = re.compile(r"(?<![A-Za-z])[A-Z]\.\s?(?=[A-Z][a-z])")
_SENTENCE_END = frozenset('.!?:;\n\r\t()[]"|/=')


def _mask(n: int, spans: list[Span]) -> bytearray:
    out = bytearray(n)
    for s, e, _k, _r in spans:
        out[s:e] = b"\x01" * (e - s)
    return out


def _opens_sentence(text: str, pos: int) -> bool:
    """Nothing but spaces since the start of the text or since sentence punctuation."""
    i = pos - 1
    while i >= 0 and text[i] == " ":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


_SUFFIXES = (
    ("ies", "y"),
    ("ied", "y"),
    ("ing", ""),
    ("ing", "e"),
    ("ed", ""),
    ("ed", "e"),
    ("es", ""),
    ("s", ""),
    ("ly", ""),
    ("er", ""),
    ("est", ""),
    ("al", ""),
    ("ation", "e"),
    ("ment", ""),
)


def _named(low: str, names: frozenset[str]) -> bool:
    """A name, or a hyphenated word with a name in it ("mary-jane", "smith-jones")."""
    return low in names or ("-" in low and any(p in names for p in low.split("-") if len(p) >= 2))


def _in(low: str, words: frozenset[str]) -> bool:
    """A word or its stem ("referred" -> "refer", "studies" -> "study") is in `words`; a hyphenated
    word when each of its parts is ("x-ray", "follow-up")."""
    if low in words:
        return True
    if "-" in low.strip("-"):
        parts = [p for p in low.split("-") if p]
        return all(len(p) == 1 or _in(p, words) for p in parts)
    for suf, rep in _SUFFIXES:
        if low.endswith(suf) and len(low) - len(suf) >= 3:
            stem = low[: -len(suf)] + rep
            if stem in words or (len(stem) >= 4 and stem[-1] == stem[-2] and stem[:-1] in words):
                return True
    return False


def latin_spans(text: str) -> list[Span]:
    """Person names in Latin letters (and unknown capitalised words, which may be names or places)."""
    out: list[Span] = []
    words = list(_WORD.finditer(text))
    if not words:
        return out
    desc = vocab.descriptor_words()
    eng = vocab.english_words()
    names = vocab.person_names()
    first = vocab.first_names()
    alpha = [w for w in words if len(w.group(0)) >= 2]
    capped = sum(1 for w in alpha if w.group(0)[0].isupper())
    # In Title Case or ALL CAPS text capitalisation says nothing about names.
    caps_signal = bool(alpha) and capped / len(alpha) < 0.6
    flagged: set[int] = set()
    for i, w in enumerate(words):
        word = w.group(0)
        low = word.lower().strip("'-")
        if len(word) < 2 or not word[0].isupper():
            # A DICOM person name ("YAMADA^TARO") is a name whatever its case.
            if "^" in text[max(0, w.start() - 1) : w.end() + 1] and len(word) >= 2:
                flagged.add(i)
            continue
        if low.endswith("'s"):
            low = low[:-2]
        initial = _opens_sentence(text, w.start())
        allcaps = word.isupper()
        in_desc, in_eng, in_names = _in(low, desc), _in(low, eng), _named(low, names)
        if "^" in text[max(0, w.start() - 1) : w.end() + 1]:
            flagged.add(i)
        elif initial and low in first and low not in _VERB_NAMES and not in_desc and not allcaps:
            flagged.add(i)  # "Jane called": a first name opening a sentence
        elif in_desc and not (caps_signal and not initial and not allcaps and in_names and not in_eng):
            continue
        elif caps_signal and not initial and not allcaps:
            if in_names or not in_eng:
                flagged.add(i)
        elif allcaps and len(word) <= 4 and not in_names:
            continue  # abbreviations
        elif (not in_eng and not in_desc) or (in_names and not in_eng):
            flagged.add(i)
    # A given name beside a family name is a person in any casing ("Mammo Screening Jane Doe").
    for i in range(len(words) - 1):
        a, b = words[i], words[i + 1]
        la, lb = a.group(0).lower(), b.group(0).lower()
        if not (a.group(0)[0].isupper() and b.group(0)[0].isupper()):
            continue
        if not re.fullmatch(r"\s*[,^]?\s*", text[a.end() : b.start()]):
            continue
        given_family = _named(la, first) and la not in _VERB_NAMES and _named(lb, names) and not _in(lb, desc)
        family_given = _named(lb, first) and lb not in _VERB_NAMES and _named(la, names) and not _in(la, desc)
        if (given_family or family_given) and not (_in(la, desc) and _in(lb, desc)):
            flagged.update((i, i + 1))
    # Lowercase pairs of a given and a family name, one of them no English word ("taro sato").
    for i in range(len(words) - 1):
        a, b = words[i], words[i + 1]
        la, lb = a.group(0).lower(), b.group(0).lower()
        if not (a.group(0).islower() and b.group(0).islower()) or text[a.end() : b.start()] != " ":
            continue
        if _in(la, desc) or _in(lb, desc) or (_in(la, eng) and _in(lb, eng)):
            continue
        if (la in first and lb in names and la not in _VERB_NAMES) or (lb in first and la in names):
            flagged.update((i, i + 1))
    # A name-list word next to a flagged word belongs to the same name ("John Brown", "TANAKA Hanako").
    changed = True
    while changed:
        changed = False
        for i, w in enumerate(words):
            if i in flagged:
                continue
            word = w.group(0)
            low = word.lower()
            if len(word) < 2 or not _named(low, names) or not word[0].isupper():
                continue
            for j in (i - 1, i + 1):
                if j in flagged and 0 <= j < len(words):
                    a, b = (words[j], w) if j < i else (w, words[j])
                    gap = text[a.end() : b.start()]
                    pair = (low in first) != (words[j].group(0).lower() in first)  # a given and a family name
                    if re.fullmatch(r"\s*[,^]?\s*", gap) and (low not in desc or pair):
                        flagged.add(i)
                        changed = True
                        break
    for i in flagged:
        out.append((words[i].start(), words[i].end(), "name", None))
    for m in _TITLE.finditer(text):
        out.append((m.start("n"), m.end("n"), "name", None))
    for m in _LATIN_LABEL.finditer(text):
        n = m.group("n")
        lead = n.split()[0].split(",")[0].split("^")[0].lower()
        labelled = ":" in m.group(0)[: m.start("n") - m.start()]
        if (n[0].isupper() or (labelled and lead in names)) and not (lead in desc and lead not in names):
            end = m.end("n")
            parts = re.split(r"[\s,^]+", n)
            if len(parts) > 1 and (parts[1].lower() in desc and parts[1].lower() not in names):
                end = m.start("n") + len(parts[0])
            out.append((m.start("n"), end, "name", None))
    # "J. Smith", "Smith J", "Smith, J.": initials beside a name-list word make it a person.
    for m in _INITIALS_NAME.finditer(text):
        word = m.group("w") or m.group("w2")
        if word.lower() in names and not _in(word.lower(), desc):
            out.append((m.start(), m.end(), "name", None))
    named: bytearray | None = None  # characters inside a name found so far, built when first needed
    # "John Q. Public": the word after a middle initial that follows a name is the family name.
    for m in _MIDDLE_INITIAL.finditer(text):
        if named is None:
            named = _mask(len(text), out)
        if named[m.start()]:
            out.append((m.start("i"), m.end(), "name", None))
    for m in _INITIAL.finditer(text):
        nxt = _WORD.match(text, m.end())
        if named is None:
            named = _mask(len(text), out)
        if nxt and named[nxt.start()]:
            out.append((m.start(), m.end(), "name", None))
    return out
