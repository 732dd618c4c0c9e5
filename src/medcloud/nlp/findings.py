"""A compact ConText engine: dictionary matching over normalised text, then scoped cues.

Matching runs on an NFKC, lower-cased copy of the text with a map back to the original offsets, so
spans always point into the caller's string. Every table entry becomes an `_Item` (a finding, a
cue, a clause boundary); one pass of two trie-shaped regular expressions finds them left to right,
longest first. Scope is then worked out per language:

- English (Chapman's ConText): a pre-cue ("no", "possible") governs the findings after it up to a
  clause boundary, a conjunction ("but"), an asserting verb ("is seen") or another cue; a comma
  continues a list ("no A, B or C") unless what follows reads as a new clause. A post-cue
  ("cannot be excluded") governs the findings just before it back to the clause start. The nearest
  cue wins.
- Japanese (head-final): the predicate after a finding decides. From each finding the engine walks
  forward collecting cues until the clause ends; verbal cues close the chain unless a generic head
  noun follows (肺炎を疑う所見は認めない), nominal cues (疑い, 可能性, 消失) leave it open. Findings
  joined by 、 や あるいは share the predicate; a case particle or a predicate between two findings
  separates them. Any negation in the chain makes the finding absent, else any uncertainty makes it
  uncertain. Pre-cues (r/o, s/o and English ones inside Japanese text) apply as in English.

docs/nlp.md lists the rules with examples.

Its length: matching and both languages' scope rules work on one item stream; they are one algorithm.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from medcloud.nlp import vocabulary as v

Status = Literal["present", "absent", "uncertain"]
STATUSES: tuple[Status, ...] = ("present", "absent", "uncertain")
CODES: tuple[str, ...] = tuple(v.FINDINGS)

_FIND, _NEG, _UNC, _PSEUDO, _AFF, _CONJ, _SENT, _LIST, _BLOCK, _JOIN = range(10)
_EN_AUX = frozenset({"is", "are", "was", "were", "has", "have", "had"})
# Characters NFKC leaves alone that reports use interchangeably.
_UNIFY = str.maketrans({"囊": "嚢", "−": "-", "‐": "-", "‑": "-", "–": "-", "—": "-", "〜": "~"})
_JA_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
_HIRAGANA = re.compile(r"[\u3041-\u3096]")
# Text between items that ends a Japanese clause: a predicate followed by the conjunctive が.
_JA_GAP_BOUNDARY = re.compile(r"(?<=[\u3041-\u3096])が(?![\u3041-\u3096])")
# A case particle between two findings means they are arguments of different predicates
# (肝腫瘤は転移性腫瘍と考えられる, 結節の内部に石灰化は認めない), not items of one list.
_JA_CASE_PARTICLE = re.compile(r"[はがをにで]")
# ... except when the particle only links a cause to its effect (骨転移による病的骨折): one noun phrase.
_JA_CAUSAL_LINK = re.compile(r"による|に伴う|に起因する|からの|に由来する")
# "Xは<diagnosis>を疑う": a topic, then a noun marked as the object (を) or quoted (と) of a hedge. The hedge is
# about the diagnosis, not about X (肝S8の腫瘤は肝細胞癌を疑う: the mass is present).
_JA_OBJECT_BEFORE_CUE = re.compile(r"[^\sはをと、,][をと]\s*$")
# Spelling variants of Japanese cues, generated rather than listed twice.
_JA_CUE_VARIANTS = (
    ("でき", "出来"),
    ("しえ", "し得"),
    ("みられ", "見られ"),
    ("見られ", "みられ"),
    ("ありません", "有りません"),
)
# After a comma inside an English negation, these mark a new clause rather than a list item.
_EN_NEW_CLAUSE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|be|been|seen|noted|present|persists?|remains?|stable|unchanged|"
    r"increased|decreased|improved|worse|worsened|new|there|small|large|moderate|mild|minimal|trace|tiny|"
    r"severe|left|right|bilateral|a|an|the|with|\d+)\b"
)
_EN_LIST_JOIN = re.compile(r"^\s*(?:or|nor|and/or)\b")
# "No pneumothorax and a small effusion": "and" before an article or a size starts a new assertion.
_EN_AND_NEW = re.compile(
    r"\band (?:a|an|the|there|small|large|moderate|mild|minimal|trace|tiny|severe|stable|persistent)\b"
)
# "cannot" is written several ways; the tables use one.
_EN_CANNOT = ("can not", "can't", "could not", "couldn't")
_EN_QUALIFIERS = ("interval ", "significant ", "significant interval ", "definite ")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding mention: its code, its status and where it sits in the original text."""

    code: str
    status: Status
    span: tuple[int, int]

    def to_json(self) -> dict[str, object]:
        """The JSON-lines shape: code, status, span as a two-item list."""
        return {"code": self.code, "status": self.status, "span": [self.span[0], self.span[1]]}


@dataclass(frozen=True, slots=True)
class _Item:
    kind: int
    codes: tuple[str, ...] = ()
    pre: bool = False
    post: bool = False
    nominal: bool = False
    forced: Status | None = None
    bidirectional: bool = False


@dataclass(slots=True)
class _Match:
    start: int
    end: int
    text: str
    item: _Item


def normalise(text: str) -> tuple[str, list[int], list[int]]:
    """NFKC + lower case + whitespace collapsed, with each output char's original start and end offsets."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        # Keep a base character with its combining marks (half-width voiced marks included) so that
        # NFKC can compose them: ｶﾞ -> ガ.
        while j < n and (unicodedata.combining(text[j]) or text[j] in "\uff9e\uff9f\u3099\u309a"):
            j += 1
        chunk = text[i:j]
        norm = chunk if chunk.isascii() else unicodedata.normalize("NFKC", chunk).translate(_UNIFY)
        norm = norm.lower()
        for ch in norm:
            if ch.isspace() and ch != "\n":
                if out and out[-1] == " ":
                    ends[-1] = j
                    continue
                ch = " "
            out.append(ch)
            starts.append(i)
            ends.append(j)
        i = j
    return "".join(out), starts, ends


def _norm_term(term: str) -> str:
    return normalise(term)[0].strip()


_Trie = dict[str, "_Trie"]


def _trie_pattern(words: list[str]) -> str:
    """One regex for many literals, shaped as a character trie so matching does not try each word in turn."""
    trie: _Trie = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}  # end-of-word marker

    def emit(node: _Trie) -> str:
        terminal = "" in node
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if terminal:
            return "(?:" + body + ")?" if len(alts) > 1 or len(body) > 1 else body + "?"
        return body

    return emit(trie)


def _english_variants(term: str, plural: bool) -> set[str]:
    forms = {term}
    if " " in term:
        forms.add(term.replace(" ", "-"))
    if "-" in term:
        forms.add(term.replace("-", " "))
        forms.add(term.replace("-", ""))
    if plural and term[-1:].isalpha():
        forms |= {f + ("es" if f.endswith(("s", "x", "sh", "ch")) else "s") for f in list(forms)}
    return forms


# Inflections written out once here rather than in every table entry: past and connective forms.
_JA_ENDINGS = (
    ("ない", ("なかった", "なく", "ません", "ませんでした")),
    ("ません", ("ませんでした",)),
    ("れる", ("れた",)),
    ("する", ("した",)),
)


def _japanese_variants(term: str) -> set[str]:
    forms = {term, *(term.replace(a, b) for a, b in _JA_CUE_VARIANTS)}
    for form in list(forms):
        for ending, others in _JA_ENDINGS:
            if form.endswith(ending):
                forms |= {form[: -len(ending)] + o for o in others}
    return forms


class _Lexicon:
    """Every table entry as a normalised surface form, plus the two regexes that find them."""

    def __init__(self) -> None:
        self.items: dict[str, _Item] = {}
        for code, (ja_terms, en_terms) in v.FINDINGS.items():
            for term in ja_terms:
                self._add(term, _Item(_FIND, codes=(code,)))
            for term in en_terms:
                for form in _english_variants(_norm_term(term), plural=True):
                    self._add(form, _Item(_FIND, codes=(code,)))
        for term, codes in v.MULTI_CODE_TERMS.items():
            for form in _english_variants(_norm_term(term), plural=True):
                self._add(form, _Item(_FIND, codes=codes))
        for term, code in v.NEGATED_TERMS.items():
            for form in _english_variants(_norm_term(term), plural=False):
                self._add(form, _Item(_FIND, codes=(code,), forced="absent"))
        for term in v.BLOCKERS:
            for form in _english_variants(_norm_term(term), plural=True):
                self._add(form, _Item(_BLOCK))
        for kind, terms, nominal in (
            (_NEG, v.JA_NEGATION_VERBAL, False),
            (_NEG, v.JA_NEGATION_NOMINAL, True),
            (_UNC, v.JA_UNCERTAIN_VERBAL, False),
            (_UNC, v.JA_UNCERTAIN_NOMINAL, True),
        ):
            for term in terms:
                for form in _japanese_variants(term):
                    self._add(form, _Item(kind, post=True, nominal=nominal))
        for term in v.JA_JOINS:
            self._add(term, _Item(_JOIN))
        for term in v.JA_PSEUDO:
            self._add(term, _Item(_PSEUDO))
        for term in v.EN_PSEUDO:
            # "no change in" also reads "no interval change in", "no significant change in".
            extra = {"no " + q + term[3:] for q in _EN_QUALIFIERS} if term.startswith("no ") else set()
            for form in {term, *extra}:
                self._add(form, _Item(_PSEUDO))
        for term in v.JA_AFFIRMATIVE + v.EN_AFFIRMATIVE:
            self._add(term, _Item(_AFF))
        for term in v.JA_CONJUNCTIONS + v.EN_CONJUNCTIONS:
            self._add(term, _Item(_CONJ))
        for term in v.SENTENCE_BOUNDARIES:
            self.items[term] = _Item(_SENT)
        for term in v.LIST_SEPARATORS:
            self.items[term] = _Item(_LIST)
        pre = {(_NEG, _norm_term(t)) for t in v.EN_NEGATION_PRE} | {(_UNC, _norm_term(t)) for t in v.EN_UNCERTAIN_PRE}
        post = {(_NEG, _norm_term(t)) for t in v.EN_NEGATION_POST}
        post |= {(_UNC, _norm_term(t)) for t in v.EN_UNCERTAIN_POST}
        # "not seen" and "no longer seen" are the same negation; write the table once.
        post |= {(_NEG, "no longer " + t[4:]) for k, t in list(post) if k == _NEG and t.startswith("not ")}
        for table in (pre, post):
            table |= {(k, t.replace("cannot", alt)) for k, t in list(table) if "cannot" in t for alt in _EN_CANNOT}
        for kind, term in pre | post:
            self._add(
                term,
                _Item(
                    kind,
                    pre=(kind, term) in pre,
                    post=(kind, term) in post,
                    bidirectional=term in ("versus", "vs", "vs."),
                ),
            )
        self.patterns: list[tuple[str, str, Status | None]]
        self.patterns = [(code, rx, None) for code, pats in v.FINDING_PATTERNS.items() for rx in pats]
        self.patterns += [(code, rx, "absent") for code, pats in v.NEGATED_PATTERNS.items() for rx in pats]
        self.pattern_rx = re.compile("|".join(f"(?P<p{i}>{rx})" for i, (_, rx, _) in enumerate(self.patterns)))
        bounded = [t for t in self.items if t[0].isascii() and t[0].isalnum()]
        plain = [t for t in self.items if not (t[0].isascii() and t[0].isalnum())]
        # A word needs a boundary on each side that is a letter or digit ("lad#7" ends in "#", so it needs none).
        self.bounded = re.compile(r"(?<![a-z0-9])(?:" + _trie_pattern(bounded) + r")(?:(?<![a-z0-9])|(?![a-z0-9]))")
        self.plain = re.compile(_trie_pattern(plain))
        self.ja_heads = tuple(_norm_term(h) for h in v.JA_CHAIN_HEADS)

    def _add(self, term: str, item: _Item) -> None:
        key = _norm_term(term)
        old = self.items.get(key)
        if old is not None and old != item:
            # A finding term beats a cue that happens to share its spelling; equal kinds merge directions.
            if old.kind == _FIND:
                return
            if old.kind == item.kind and item.kind in (_NEG, _UNC):
                item = _Item(item.kind, pre=old.pre or item.pre, post=old.post or item.post, nominal=old.nominal)
            elif item.kind != _FIND:
                return
        self.items[key] = item

    def scan(self, norm: str) -> list[_Match]:
        """All items in the text, leftmost-longest, non-overlapping."""
        found = [
            _Match(m.start(), m.end(), m.group(), self.items[m.group()])
            for rx in (self.bounded, self.plain)
            for m in rx.finditer(norm)
            if m.group() in self.items
        ]
        for pm in self.pattern_rx.finditer(norm):
            code, _, forced = self.patterns[int((pm.lastgroup or "p0")[1:])]
            found.append(_Match(pm.start(), pm.end(), pm.group(), _Item(_FIND, codes=(code,), forced=forced)))
        found.sort(key=lambda m: (m.start, -(m.end - m.start)))
        out: list[_Match] = []
        last_end = 0
        for m in found:
            if m.start < last_end:
                continue
            if (
                m.text == "."
                and 0 < m.start < len(norm) - 1
                and norm[m.start - 1].isdigit()
                and norm[m.start + 1].isdigit()
            ):
                continue  # a decimal point, not a sentence end
            out.append(m)
            last_end = m.end
        return out


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon()


def detect_language(text: str) -> str:
    """'ja' when the text holds any kana or kanji, else 'en'."""
    return "ja" if _JA_CHARS.search(text) else "en"


def extract_findings(text: str, lang: str | None = None) -> list[Finding]:
    """Findings in one report, each with its status and its span in `text`, in text order."""
    if lang is None:
        lang = detect_language(text)
    if lang not in ("ja", "en"):
        raise ValueError(f"unsupported language {lang!r}; expected 'ja' or 'en'")
    norm, starts, ends = normalise(text)
    lexicon = _lexicon()
    matches = lexicon.scan(norm)
    governed = _cue_scopes(norm, matches, lang)
    out: list[Finding] = []
    for idx, m in enumerate(matches):
        if m.item.kind != _FIND:
            continue
        status: Status
        if m.item.forced is not None:
            status = m.item.forced
        elif lang == "ja":
            chain = _japanese_chain(norm, matches, idx, lexicon.ja_heads)
            pre = governed.get(idx)
            kinds = set(chain) | ({pre[1]} if pre else set())
            status = "absent" if _NEG in kinds else "uncertain" if _UNC in kinds else "present"
        else:
            pre = governed.get(idx)
            status = "present" if pre is None else "absent" if pre[1] == _NEG else "uncertain"
        span = (starts[m.start], ends[m.end - 1])
        out.extend(Finding(code, status, span) for code in m.item.codes)
    return out


def _cue_scopes(norm: str, matches: list[_Match], lang: str) -> dict[int, tuple[int, int]]:
    """Finding index -> (distance, cue kind) of the nearest pre- or post-cue whose scope covers it."""
    best: dict[int, tuple[int, int]] = {}

    def govern(f: int, cue: _Match, outer: bool = False) -> None:
        m = matches[f]
        # An outer negation ("no consolidation to suggest pneumonia") beats any nearer hedge.
        dist = -1 if outer else m.start - cue.end if cue.start < m.start else cue.start - m.end
        if f not in best or dist < best[f][0]:
            best[f] = (dist, cue.item.kind)

    n = len(matches)
    for c, cue in enumerate(matches):
        item = cue.item
        if item.kind not in (_NEG, _UNC):
            continue
        if item.pre:
            crossed_list = through_hedge = False
            for j in range(c + 1, n):
                if _EN_AND_NEW.search(norm, matches[j - 1].end, matches[j].start):
                    break
                k = matches[j].item.kind
                if k == _FIND:
                    govern(j, cue, outer=through_hedge)
                    if item.bidirectional:
                        break
                elif k == _UNC and item.kind == _NEG and matches[j].item.pre and not crossed_list:
                    through_hedge = True
                elif k in (_JOIN, _BLOCK):
                    continue
                elif k == _LIST:
                    crossed_list = True
                    nxt = matches[j + 1].start if j + 1 < n else len(norm)
                    segment = norm[matches[j].end : nxt]
                    if lang == "ja" or (_EN_NEW_CLAUSE.search(segment) and not _EN_LIST_JOIN.match(segment)):
                        break
                else:
                    break
        trailing = c + 1 >= n or matches[c + 1].item.kind in (_SENT, _CONJ, _LIST)
        # "the opacity has resolved and ...": after an auxiliary the cue is a predicate, so it looks back.
        trailing = trailing or (c > 0 and matches[c - 1].item.kind == _AFF and matches[c - 1].text in _EN_AUX)
        if item.post and lang == "en" and (not item.pre or trailing or item.bidirectional):
            seen_finding = False
            for j in range(c - 1, -1, -1):
                m = matches[j]
                k = m.item.kind
                if k == _FIND:
                    govern(j, cue)
                    seen_finding = True
                    if item.bidirectional:
                        break
                elif k == _AFF and m.text in _EN_AUX and not seen_finding:
                    continue  # "is" in "pneumonia is suspected" belongs to the cue
                elif k in (_JOIN, _BLOCK):
                    continue
                else:
                    break
    return best


def _japanese_chain(norm: str, matches: list[_Match], f: int, heads: tuple[str, ...]) -> list[int]:
    """Cue kinds that the predicate after finding `f` applies to it, up to the clause end."""
    chain: list[int] = []
    prev_end = matches[f].end
    particle = listed = False
    topic = norm.startswith("は", prev_end)
    for j in range(f + 1, len(matches)):
        m = matches[j]
        gap = norm[prev_end : m.start]
        if _JA_GAP_BOUNDARY.search(gap):
            break
        if topic and m.item.kind == _UNC and _JA_OBJECT_BEFORE_CUE.search(gap):
            break
        particle = particle or _JA_CASE_PARTICLE.search(_JA_CAUSAL_LINK.sub("", gap)) is not None
        k = m.item.kind
        if k in (_SENT, _CONJ):
            break
        if k == _LIST:
            before = norm[m.start - 1] if m.start else ""
            if chain or _HIRAGANA.match(before):
                break
            # A list goes on only with another finding: in 右肺結節、肺癌疑い the hedge is on the cancer.
            following = next((x for x in matches[j + 1 :] if x.item.kind != _JOIN), None)
            if following is None or following.item.kind not in (_FIND, _BLOCK):
                break
            listed = True
        elif k in (_FIND, _BLOCK):
            if chain or particle:
                break
        elif k == _PSEUDO:
            if _resolves_later(matches, j):
                chain.append(_NEG)
            break
        elif k in (_NEG, _UNC):
            if not m.item.post or (k == _UNC and listed):
                # 多発結節、転移疑い: after a comma list a hedge names a diagnosis of the last item; a
                # negation (気胸、胸水なし) still covers the whole list.
                break
            chain.append(k)
            if not m.item.nominal and not _followed_by_head(norm, m.end, heads):
                chain += _negated_head(norm, matches, j, heads)
                break
        elif k == _AFF:
            chain.append(_AFF)
            if not _followed_by_head(norm, m.end, heads):
                break
        prev_end = m.end
    return [k for k in chain if k != _AFF]


def _resolves_later(matches: list[_Match], change: int) -> bool:
    """True when a change word is followed, in the same sentence, by resolution (減少し、ほぼ消失)."""
    for m in matches[change + 1 :]:
        if m.item.kind in (_SENT, _CONJ, _FIND):
            return False
        if m.item.kind == _NEG and m.text.startswith(v.JA_RESOLUTION):
            return True
    return False


def _negated_head(norm: str, matches: list[_Match], cue: int, heads: tuple[str, ...]) -> list[int]:
    """[NEG] when a relative clause ends on a finding that is itself negated (肺転移を疑う結節は認められない)."""
    nxt = cue + 1
    adjacent = (
        nxt < len(matches)
        and matches[nxt].item.kind == _FIND
        and not norm[matches[cue].end : matches[nxt].start].strip()
    )
    return [_NEG] if adjacent and _NEG in _japanese_chain(norm, matches, nxt, heads) else []


def _followed_by_head(norm: str, pos: int, heads: tuple[str, ...]) -> bool:
    return norm.startswith(heads, pos) or norm.startswith(tuple(" " + h for h in heads), pos)
