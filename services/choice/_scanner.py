"""Stage 1: the scanner — a normalised answer → typed :class:`~._tokens.Token` list.

Order of work:

1. claim exact option labels, longest first (so "Python 3.12" is not option 3);
2. find lexicon words (:func:`._lexicon.finditer`) and turn each into a token:
   numbers (``2``, ``二番目``, ``No.2``, ``option two``), ordinals (``first``,
   ``最後``, ``second to last``), counts, ``all``/``both``, exclusions,
   negators, consent words, questions, connectives, sarcasm, past markers,
   comparisons…;
3. match distinctive label/description keywords in what is left;
4. merge ranges (``1-3``, ``1から3``).

A number is only a candidate choice here; whether it *is* one is decided by
the clause stage (not in a question, a past clause, a comparison or a negation
scope). Numbers that are plainly something else — a quantity with a unit
(``3 files``, ``10分``), a version (``3.12``), a signed number (``-1``) — get
no token at all, so they stay in the unexplained residue.
"""

from __future__ import annotations

import itertools
import operator
import re
from typing import Final

from . import _lexicon
from ._lexicon_en import NW, NW_VAL, OW_VAL
from ._lexicon_ja import JC_VAL, KD
from ._options import OptionIndex
from ._tokens import KIND, SRC, Token

__all__ = ["MASK", "mask", "scan"]

MASK: Final = "\ue000"
"""Stands in for text already claimed (a label) so later stages skip it."""

_UNIT: Final = re.compile(
    r"\s*(?:分|秒|時間|時|日|週|ヶ月|か月|カ月|月|年|回|人|円|%|パーセント|倍|行|文字|ページ|枚|台|歳|度"
    r"|mb|gb|kb|tb|ms|mins?|minutes?|secs?|seconds?|hours?|hrs?|days?|weeks?|months?|years?|times|x|files?|lines?"
    r"|steps?|jobs?|px|pts?|percent|am|pm|k|people|persons?|users?|items\s+of|copies|tries|attempts?|kids|cores?)(?![a-z])",
    re.ASCII,
)
_NW_AFTER: Final = re.compile(
    r"\s+(?:of|more|times|things|steps|days|hours|minutes|seconds|files|people|ways|options|choices)\b", re.ASCII
)
_NOUN_BEFORE: Final = re.compile(
    r"(?:\b(?:steps?|phases?|stages?|parts?|lines?|tasks?|files?|pages?|chapters?|sections?|rounds?|commits?|tests?|days?)"
    r"|ステップ|手順|段階|工程|項目|行目?|タスク|フェーズ|パート|ファイル|ページ|章|節|日)\s*$",
    re.ASCII,
)
_NOUN_AFTER: Final = re.compile(
    r"\s+(?!(?:one|ones|option|options|choice|and|or|but|then|please|too|also|only|is|was|will|would|should|for|to|of"
    r"|in|on|with|without|thanks|instead)\b)[a-z]{3,}",
    re.ASCII,
)
_NOUN_AFTER_J: Final = re.compile(r"の?(?!やつ|もの|方|ほう|案|オプション|選択肢|番)[\u4e00-\u9fff\u30a1-\u30fa]")
_NW_BEFORE: Final = re.compile(r"\b(?:any|some|these|those|other)\s+$", re.ASCII)
_ONE_NEXT: Final = re.compile(rf"\s*(?:,|and|&|or|to|through|thru|-)\s*(?:\d|{NW}\b)", re.ASCII)
_ONE_PREV: Final = re.compile(rf"(?:\d|\b{NW})\s*(?:,|and|&|or|to|through|thru|-)\s*$", re.ASCII)
_ONE_WHOLE: Final = re.compile(r"\s*(?:please|pls|thanks)?\s*[.!。]*\s*$", re.ASCII)
_SELECTOR_PREV: Final = re.compile(
    r"(?:^|[,、;。.!:(]|\b(?:and|or|&|except|but|not|only|just|than|from|to|through|pick|choose|take|select|want"
    r"|with|maybe|probably|perhaps|actually|is|like|prefer|go|guess|think|mean|also|plus|then|instead|of|no))\s*$",
    re.ASCII,
)
_RANGE_GAP: Final = re.compile(r"(?:-|–|—|−|~|〜|から|to|through|thru|till|until|…|\.\.\.?)")
_GAP_STRIP: Final = " ,、;。.!?:" + MASK

# characters allowed right after a bare kanji numeral ("一と三", "二で") or after "1番"
# for it to be an option number rather than the superlative "一番安全な".
_PARTICLE_NEXT: Final = frozenset(" 、,。.!?とやかでをがにはものだまじっお~〜-・)」" + MASK)
_ADJ_START: Final = (
    "いい", "よい", "よさ", "やす", "はや", "おすすめ", "すき", "たか", "ひく", "らく", "まし", "あんぜん", "かんたん",
    "ちか", "おお", "すく", "つよ", "よわ", "あたら", "ふる", "おそ", "むずかし", "やさし", "大事", "重要", "まとも",
)
_POLITE: Final = frozenset(
    ("please", "thanks", "thank you", "お願い", "お願いします", "お願いいたします", "お願いね", "おねがい", "おねがいします",
     "よろしく", "よろしくお願いします", "頼む", "頼みます", "たのむ")
)
_WEAK_YES_CONF: Final = {
    "いいよ": 0.85, "いいね": 0.85, "どうぞ": 0.85, "いいです": 0.8, "いい": 0.8, "良い": 0.8, "よい": 0.8,
    "お願いします": 0.8, "お願い": 0.8, "よろしく": 0.8, "よろしくお願いします": 0.8, "頼む": 0.8, "頼みます": 0.8,
    "please": 0.75, "please do": 0.85, "fine": 0.8, "good": 0.8, "great": 0.8, "perfect": 0.85, "cool": 0.8,
}
_NUMERIC: Final = frozenset((SRC.NUMBER, SRC.ORDINAL))
_START: Final = operator.attrgetter("start")  # a sort key in C: a Python function is a frame per token
_FIRST_WORDS: Final = frozenset(("一番最初", "いちばん最初", "一番上", "最初", "はじめ", "初め", "始め", "先頭", "トップ"))
_MIDDLE_WORDS: Final = frozenset(("真ん中", "まんなか", "中間", "middle", "center", "centre"))
_VAGUE_SRC: Final = {"vague_unknown": (SRC.UNKNOWN, 0.2), "vague_delegate": (SRC.DELEGATE, 0.3),
                     "vague_noise": (SRC.NOISE, 0.1), "vague_pref": (SRC.PREF, 0.3)}
# lexicon entries that become a token of one kind with no further reading: name -> (kind, conf, src, pre, rej, strong)
_SIMPLE: Final = {
    "allx": (KIND.EXC, 0.9, SRC.ALLX, True, False, False),
    "exc_pre": (KIND.EXC, 0.88, SRC.NONE, True, False, False),
    "exc_post": (KIND.EXC, 0.88, SRC.NONE, False, False, False),
    "neg_pre": (KIND.NEG, 0.9, SRC.NONE, True, False, False),
    "neg_rej_en": (KIND.NEG, 0.95, SRC.NONE, True, True, False),
    "neg_post": (KIND.NEG, 0.9, SRC.NONE, False, False, False),
    "neg_rej_jp": (KIND.NEG, 0.95, SRC.NONE, False, True, False),
    "neg_strong": (KIND.NEG, 0.95, SRC.NONE, True, True, False),
    "neg_yet": (KIND.NEG, 0.85, SRC.YET, False, False, False),
    "yes_s": (KIND.YES, 0.95, SRC.NONE, False, False, True),
    "yesneg": (KIND.YES, 0.9, SRC.NONE, False, False, True),
    "yes_reluct": (KIND.YES, 0.7, SRC.RELUCTANT, False, False, False),
    "all": (KIND.ALL, 0.92, SRC.NONE, False, False, False),
    "compare": (KIND.COMPARE, 0.0, SRC.NONE, True, False, False),
    "recommend": (KIND.RECOMMEND, 0.0, SRC.NONE, False, False, False),
    "superlative": (KIND.SUPERLATIVE, 0.0, SRC.NONE, False, False, False),
    "suggest": (KIND.SUGGEST, 0.0, SRC.NONE, False, False, False),
    "correct": (KIND.CORRECT, 0.0, SRC.NONE, False, False, False),
    "hold": (KIND.HOLD, 0.0, SRC.NONE, False, False, False),
    "oblig": (KIND.OBLIG, 0.0, SRC.NONE, False, False, False),
    "fill": (KIND.FILL, 0.0, SRC.NONE, False, False, False),
    "ambig": (KIND.AMBIG, 0.0, SRC.NONE, False, False, False),
    "question": (KIND.QUESTION, 0.0, SRC.NONE, False, False, False),
    "concern": (KIND.CONCERN, 0.0, SRC.NONE, False, False, False),
    "qmark": (KIND.QMARK, 0.0, SRC.NONE, False, False, False),
    "cond": (KIND.COND, 0.0, SRC.NONE, False, False, False),
    "reason_pre": (KIND.REASON_PRE, 0.0, SRC.NONE, False, False, False),
    "reason_post": (KIND.REASON_POST, 0.0, SRC.NONE, False, False, False),
    "condk_pre": (KIND.CONDK_PRE, 0.0, SRC.NONE, False, False, False),
    "condk_seq": (KIND.CONDK_SEQ, 0.0, SRC.NONE, False, False, False),
    "condk_post": (KIND.CONDK_POST, 0.0, SRC.NONE, False, False, False),
    "without": (KIND.WITHOUT, 0.0, SRC.NONE, False, False, False),
    "only": (KIND.ONLY, 0.0, SRC.NONE, False, False, False),
    "rest": (KIND.REST, 0.0, SRC.NONE, False, False, False),
    "hedge": (KIND.HEDGE, 0.0, SRC.NONE, False, False, False),
    "same": (KIND.SAME, 0.0, SRC.NONE, False, False, False),
    "sarcasm": (KIND.SARCASM, 0.0, SRC.NONE, False, False, False),
    "past": (KIND.PAST, 0.0, SRC.NONE, False, False, False),
}


def _kanji_int(s: str) -> int:
    total = cur = 0
    for ch in s:
        if ch == "十":
            total += (cur or 1) * 10
            cur = 0
        else:
            cur = cur * 10 + KD[ch]
    return total + cur


def _count_val(v: str) -> int:
    if v.isdigit():
        return int(v)
    if v in NW_VAL:
        return NW_VAL[v]
    if v in JC_VAL:
        return JC_VAL[v]
    return _kanji_int(v)


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u30a1" <= ch <= "\u30fa" or ch == "々"


def _adverb(m: str, st: int) -> bool:
    """English "first"/"last" after a verb phrase is an adverb ("back up first")."""
    return _SELECTOR_PREV.search(m, max(0, st - 12), st) is None


def _superlative(m: str, end: int) -> bool:
    """``一番``/``1番`` followed by an adjective ("一番安全な") means "most", not option 1."""
    if end >= len(m):
        return False
    ch = m[end]
    if ch == "目" or ch in _PARTICLE_NEXT:
        return False
    if _is_cjk(ch):
        return True
    return m.startswith(_ADJ_START, end)


def _signed(m: str, ds: int) -> bool:
    """"-1", "+2": a signed number, not an option (but "1-3" is a range)."""
    if ds == 0 or m[ds - 1] not in "+-":
        return False
    j = ds - 2
    while j >= 0 and m[j] == " ":
        j -= 1
    return j < 0 or not (m[j].isdigit() or m[j] in "番目つ" or m[j].isalpha() and m[j].isascii())


def _middle(t: Token, n: int) -> None:
    """"the middle one" / "真ん中": defined only for an odd number of options."""
    if n % 2:
        t.val = (n + 1) // 2
        t.conf = 0.85
    else:
        t.amb = f"no single middle option among {n}"


def _pair(t: Token, n: int, word: str, *, second: bool) -> None:
    """"the former/latter" / "前者/後者": defined only for exactly two options."""
    if n == 2:
        t.val = 2 if second else 1
        t.conf = 0.85
    else:
        t.amb = f"{word!r} needs exactly two options"


def _lexicon_tokens(m: str, n: int, toks: list[Token], approval: bool) -> None:
    """Tokens for the lexicon words of ``m`` (labels already masked).

    In an approval prompt, "step 2" or "the first step" / "最初のステップ" talk
    about the plan, not about the options: they become ``PLANREF``.
    """
    ln = len(m)
    add = toks.append
    for mo in _lexicon.matches(m):
        name = mo.lastgroup
        st, en = mo.span()
        simple = _SIMPLE.get(name)  # type: ignore[arg-type]
        if simple is not None:
            kind, conf, src, pre, rej, strong = simple
            add(Token(kind, st, en, None, conf, src, pre, rej, strong))
            continue
        if name == "num":
            d, pre_, suf, cnt = mo.group("num_d", "num_p", "num_s", "num_c")
            ds, de = mo.span("num_d")
            if len(d) > 3:
                continue
            if not pre_:
                prev = m[ds - 1] if ds else ""
                if prev.isascii() and prev.isalpha():
                    continue  # v2, gpt4, mp3
                if prev in ".:" and ds >= 2 and m[ds - 2].isdigit():
                    continue  # decimal part, time
                if prev in "+-" and _signed(m, ds):
                    continue  # -1, +2
            if not suf and not cnt:
                if de + 1 < ln and m[de] in ".:" and m[de + 1].isdigit():
                    continue  # 3.12, 10:30
                if not pre_ and _UNIT.match(m, de):
                    continue  # 3 files, 10分
            v = int(d)
            if cnt:
                add(Token(KIND.CNT, st, en, v, 0.5, SRC.COUNT))
                continue
            if suf and suf.strip() == "番" and v == 1 and not pre_ and _superlative(m, en):
                continue
            if approval and not pre_ and _NOUN_BEFORE.search(m, max(0, ds - 12), ds):
                add(Token(KIND.PLANREF, st, en))  # "step 2", "ステップ2"
                continue
            add(Token(KIND.REF, st, en, v, 0.95, SRC.NUMBER))
        elif name == "yes_w":
            w = m[st:en]
            add(Token(KIND.YES, st, en, None, _WEAK_YES_CONF.get(w, 0.75), SRC.POLITE if w in _POLITE else SRC.NONE))
        elif name == "kanji":
            pre_ = mo.group("kn_p")
            suf = mo.group("kn_s")
            cnt = mo.group("kn_c")
            v = _kanji_int(mo.group("kn_d"))
            if not pre_ and not suf and not cnt:
                prev = m[st - 1] if st else " "
                nxt = m[en] if en < ln else " "
                if _is_cjk(prev) or nxt not in _PARTICLE_NEXT:
                    continue  # 一緒, 十分, 統一 ...
                add(Token(KIND.REF, st, en, v, 0.9, SRC.NUMBER))
                continue
            if cnt:
                add(Token(KIND.CNT, st, en, v, 0.5, SRC.COUNT))
                continue
            if suf == "番" and v == 1 and not pre_ and _superlative(m, en):
                continue
            if not pre_ and st and _is_cjk(m[st - 1]):
                continue  # 統一番号 ...
            add(Token(KIND.REF, st, en, v, 0.93, SRC.NUMBER))
        elif name == "jc":
            v = JC_VAL[mo.group("jc_d")]
            if mo.group("jc_m"):
                add(Token(KIND.REF, st, en, v, 0.93, SRC.ORDINAL))
            else:
                add(Token(KIND.CNT, st, en, v, 0.5, SRC.COUNT))
        elif name == "numword":
            w = mo.group("nw_d")
            pre_ = mo.group("nw_p")
            v = NW_VAL[w]
            if not pre_:
                if _NW_AFTER.match(m, en) or _NW_BEFORE.search(m, max(0, st - 8), st):
                    continue  # "two of them", "any two"
                if w == "one" and not (
                    _ONE_NEXT.match(m, en) or _ONE_PREV.search(m, 0, st) or (not m[:st].strip() and _ONE_WHOLE.match(m, en))
                ):
                    continue  # "the safe one", "this one"
            add(Token(KIND.REF, st, en, v, 0.9, SRC.NUMBER))
        elif name == "ord_en":
            w = mo.group("oe_w")
            if w == "second" and m[max(0, st - 2) : st] == "a ":
                continue
            if w in ("first", "last") and not mo.group("oe_the") and not mo.group("oe_one") and _adverb(m, st):
                continue  # "back up first", "do it last"
            if approval and not mo.group("oe_one") and _NOUN_AFTER.match(m, en):
                add(Token(KIND.PLANREF, st, en))  # "the first step"
                continue
            t = Token(KIND.REF, st, en, None, 0.92, SRC.ORDINAL)
            if w in ("last", "final"):
                t.val = n
            elif w in ("former", "latter"):
                _pair(t, n, w, second=w == "latter")
            elif w in _MIDDLE_WORDS:
                _middle(t, n)
            else:
                t.val = OW_VAL[w]
            add(t)
        elif name == "ord_j":
            w = mo.group("oj_w")
            if approval and _NOUN_AFTER_J.match(m, en):
                add(Token(KIND.PLANREF, st, en))  # "最初のステップ"
                continue
            t = Token(KIND.REF, st, en, None, 0.92, SRC.ORDINAL)
            if w in _FIRST_WORDS:
                t.val = 1
            elif w in _MIDDLE_WORDS:
                _middle(t, n)
            elif w in ("前者", "後者"):
                _pair(t, n, w, second=w == "後者")
            else:
                t.val = n
            add(t)
        elif name == "ordfrom_en":
            k = mo.group("ofe_k")
            back = 3 if k in ("third", "3rd") else 2
            add(Token(KIND.REF, st, en, n - back + 1, 0.88, SRC.ORDINAL))
        elif name == "ordfrom_j":
            v = _count_val(mo.group("ofj_v"))
            fwd = mo.group("ofj_dir") in ("上", "前", "頭", "最初")
            add(Token(KIND.REF, st, en, v if fwd else n - v + 1, 0.9, SRC.ORDINAL))
        elif name in ("firstn_en", "firstn_j"):
            v = _count_val(mo.group("fne_v" if name == "firstn_en" else "fnj_v"))
            add(Token(KIND.FIRSTN, st, en, v, 0.9))
        elif name in ("lastn_en", "lastn_j"):
            v = _count_val(mo.group("lne_v" if name == "lastn_en" else "lnj_v"))
            add(Token(KIND.LASTN, st, en, v, 0.9))
        elif name == "allcount":
            v = mo.group("ac_v") or mo.group("ac_j") or mo.group("ac_c")
            add(Token(KIND.ALLCOUNT, st, en, _count_val(v) if v else 2, 0.92))
        elif name in _VAGUE_SRC:
            src, c = _VAGUE_SRC[name]
            add(Token(KIND.VAGUE, st, en, None, c, src))
        else:  # pragma: no cover - every ORDER entry is handled above
            raise AssertionError(f"unhandled lexicon entry {name}")


def mask(s: str, toks: list[Token], skip_yes: bool = False) -> str:
    """``s`` with every token's span replaced by :data:`MASK` characters."""
    parts: list[str] = []
    cur = 0
    for t in toks:
        if skip_yes and t.kind is KIND.YES:
            continue
        if t.start >= cur:
            parts.append(s[cur : t.start])
            parts.append(MASK * (t.end - t.start))
            cur = t.end
    parts.append(s[cur:])
    return "".join(parts)


def _gap_is_range(s: str, a: Token, b: Token) -> bool:
    return _RANGE_GAP.fullmatch(s[a.end : b.start].strip(_GAP_STRIP)) is not None


def scan(s: str, idx: OptionIndex) -> list[Token]:
    """Tokenise the normalised answer ``s`` for the options in ``idx``.

    Parameters
    ----------
    s : str
        The answer after :func:`~._normalize.normalize_answer`.
    idx : OptionIndex

    Returns
    -------
    list of Token
        Sorted by position, non-overlapping.
    """
    n = idx.n
    toks: list[Token] = []
    m = s
    core = s.strip(" ,、;。.!:?\"'「」()[]…~〜-")
    if core in idx.single:
        a = s.index(core)
        toks.append(Token(KIND.REF, a, a + len(core), idx.single[core], 0.9, SRC.LABEL))
        m = s[:a] + MASK * len(core) + s[a + len(core) :]
    elif idx.label_re is not None:
        parts: list[str] = []
        cur = 0
        for mo in idx.label_re.finditer(s):
            a, b = mo.span()
            toks.append(Token(KIND.REF, a, b, idx.label_vals[mo.group()], 0.9, SRC.LABEL))
            parts.append(s[cur:a])
            parts.append(MASK * (b - a))
            cur = b
        if parts:
            parts.append(s[cur:])
            m = "".join(parts)
    labelled = bool(toks)
    _lexicon_tokens(m, n, toks, idx.approval)
    if labelled:
        toks.sort(key=_START)

    # keywords of labels/descriptions in what is left (soft yes words released in options mode)
    if idx.kw_re is not None and idx.kw_re.search(m) is not None:
        m2 = mask(m, toks, skip_yes=not idx.approval)
        kw_toks: list[Token] = []
        cover: dict[int, int] = {}
        for mo in idx.kw_re.finditer(m2):
            opt, length, is_label = idx.kw_info[mo.lastindex - 1]  # type: ignore[operator]
            a, b = mo.span()
            kw_toks.append(Token(KIND.REF, a, b, opt, 0.7, SRC.KEYWORD if is_label else SRC.DESCRIPTION))
            if m2.endswith("est", a, b) and b - a > length:  # "safest", "fastest": a superlative of the keyword
                toks.append(Token(KIND.SUPERLATIVE, b, b))  # zero-width: the keyword token keeps the text
            if is_label:
                cover[opt] = cover.get(opt, 0) + min(length, b - a)
        if kw_toks:
            for kt in kw_toks:
                if kt.src is SRC.KEYWORD:
                    v = kt.val
                    assert isinstance(v, int)
                    kt.conf = round(0.7 + 0.1 * min(1.0, cover.get(v, 0) / idx.label_chars[v - 1] * 1.5), 3)
            kept: list[Token] = []  # a consent word inside a keyword goes (loops: a generator is a function call)
            for t in toks:
                if t.kind is KIND.YES:
                    for k in kw_toks:
                        if k.start < t.end and t.start < k.end:
                            break
                    else:
                        kept.append(t)
                else:
                    kept.append(t)
            toks = kept
            toks.extend(kw_toks)
            toks.sort(key=_START)

    # ranges: ref <range gap> ref
    # (a range's gap is a substring of s: without one anywhere in s there is none between two references)
    refs: list[Token] = []
    for t in toks if len(toks) >= 2 and _RANGE_GAP.search(s) is not None else ():
        if t.kind is KIND.REF and t.src in _NUMERIC and t.val is not None and not t.amb:
            refs.append(t)
    if len(refs) >= 2:
        drop: set[int] = set()
        for a, b in itertools.pairwise(refs):
            if id(a) in drop:
                continue
            if _gap_is_range(s, a, b):
                toks.append(Token(KIND.RANGE, a.start, b.end, (a.val, b.val), 0.92))  # type: ignore[arg-type]
                drop.add(id(a))
                drop.add(id(b))
        if drop:
            toks = sorted((t for t in toks if id(t) not in drop), key=_START)
    return toks

