"""Stage 2: clauses and scopes — tokens → a :class:`Reading` of the answer.

The answer is cut into clauses at punctuation and connectives; each clause
gets a role:

``ACTIVE``
    part of the answer proper (it chooses, refuses, asks…);
``MOD``
    a condition or request attached to the answer ("but keep the logs") →
    ``modifications``;
``NONE``
    ignored (a reason without a choice, text before a correction).

Then, clause by clause, the scopes: a negator or an exclusion applies to the
adjacent group of option references (English to the right: "not 2",
Japanese to the left: "2じゃない"); a comparison ("better than 3", "3より")
makes its reference a *mention*; a past-tense clause ("last time I picked 2",
"前回は2番だった") makes every reference in it a mention. A correction
("actually", "やっぱり", "just kidding") drops everything before it.

The reading also records what forbids acting (``guards``): sarcasm, a double
negative, a negation that follows a choice without saying what it negates,
a past reference, a comparison. The decision stage turns guards into a
clarification or a confidence cap.
"""

from __future__ import annotations

import bisect
import re
from enum import IntEnum
from typing import Final

from . import _lexicon
from ._scanner import MASK, mask
from ._tokens import DECISIVE, KIND, SRC, STRUCTURAL, TARGETABLE, Kind, Token, plain

__all__ = ["Clause", "Flag", "Reading", "Role", "gap", "has_kind", "read", "residue_words"]

_LIST_GAP: Final = re.compile(r"(?:と|や|and|&|\+|および|及び|・|も|plus|as\s+well\s+as|と,|とか)?")
_OR_GAP: Final = re.compile(r"(?:か|or|または|もしくは|それか|or\s+maybe|/|か,|either)")
_RANGE_GAP: Final = re.compile(r"(?:-|–|—|−|~|〜|から|to|through|thru|till|until|…|\.\.\.?)")
_GAP_STRIP: Final = " ,、;。.!?:" + MASK
# "[,、;。.!:()[]「」『』—]+|\s-\s", written to start with one character class (which lets the regex engine
# skip ahead when searching): punctuation never is a space, so the first character picks the branch
_PUNCT_RE: Final = re.compile(r"[,、;。.!:()\[\]「」『』—\s](?:(?<=[,、;。.!:()\[\]「」『』—])[,、;。.!:()\[\]「」『』—]*|(?<=\s)-\s)")
# the same without the " - " branch, for a text without "-" (where it cannot match): the engine then skips
# spaces at the character class instead of trying the branches at each one. Written ``[…][…]*``, not ``[…]+``:
# a regex that starts with a character class lets the engine skip ahead to the next listed character when
# searching, one that starts with a repetition is tried at every position (a third of the punctuation step)
_PUNCT_ONLY: Final = re.compile(r"[,、;。.!:()\[\]「」『』—][,、;。.!:()\[\]「」『』—]*")
_TWO_WORDCH: Final = re.compile(r"\w.*?\w", re.DOTALL)  # at least two word characters
_PUNCT_SPACE: Final = " ,、;。.!:?\"'「」()[]…~〜-—"
_WORD_RE: Final = re.compile(r"[a-z0-9_]+|[^\W\d_a-z]+")
# characters that are never word characters (``\w``): ASCII punctuation, controls and spaces, the common Japanese
# punctuation (NFKC turns the full-width forms into ASCII), the mask; a text of these only holds no word
_NON_WORD: Final = "".join(ch for ch in map(chr, range(128)) if not (ch.isalnum() or ch == "_")) + (
    "、。「」『』…〜・—–\u3000" + MASK)
_OBJECT_GAP: Final = re.compile(r"\s*(?:は|を|も|だけ)?\s*")


class Flag(IntEnum):
    """How a clause was introduced."""

    MAIN = 0
    COND = 1  # "but", "けど", "if", "てから"
    SEQ = 2  # "then", "also", "あと"
    WITHOUT = 3
    REASON = 4  # "because", "ので"


class Role(IntEnum):
    """What a clause does for the answer."""

    UNSET = 0
    ACTIVE = 1
    MOD = 2
    NONE = 3


FLAG: Final = plain(Flag)
ROLE: Final = plain(Role)
_UNSET: Final = ROLE.UNSET
_MAIN: Final = FLAG.MAIN
_NAMING: Final = frozenset(k for k in TARGETABLE if k is not KIND.YES)  # a token of these kinds names an option
# member tests against constants: a tuple of class attributes would be built on every test
_ONLY_FILL: Final = frozenset((KIND.ONLY, KIND.FILL))
_CHOICES: Final = frozenset((KIND.REF, KIND.RANGE, KIND.FIRSTN, KIND.LASTN))
_NUMERIC: Final = frozenset((SRC.NUMBER, SRC.ORDINAL))
_WORDED: Final = frozenset((SRC.KEYWORD, SRC.DESCRIPTION))
_ATTACHED: Final = frozenset((FLAG.COND, FLAG.WITHOUT, FLAG.SEQ))
_COND_SEQ: Final = frozenset((FLAG.COND, FLAG.SEQ))
_FIRST_LAST: Final = frozenset((KIND.FIRSTN, KIND.LASTN))
_EXC_QUESTION: Final = frozenset((KIND.EXC, KIND.QUESTION))
_ALL_REST: Final = frozenset((KIND.ALL, KIND.ALLCOUNT, KIND.REST))
_QUESTION_HOLD: Final = frozenset((KIND.QUESTION, KIND.HOLD))
_SCOPING: Final = frozenset((KIND.PAST, KIND.NEG, KIND.EXC, KIND.COMPARE))  # kinds _scopes acts on
_DECISIVE_PAST: Final = DECISIVE | {KIND.PAST}  # a main clause with one of these is active
_REASON_MORE: Final = frozenset((KIND.NEG, KIND.SARCASM, KIND.QUESTION, KIND.PAST))  # a reason that says more
_SCOPED: Final = _SCOPING | {KIND.WITHOUT}  # and the connective of a "without" clause, whose targets it excludes


class Clause:
    """A span of the answer with its tokens."""

    __slots__ = ("end", "flag", "kinds", "role", "start", "toks")

    def __init__(self, start: int, end: int, flag: Flag, toks: list[Token]) -> None:
        self.start = start
        self.end = end
        self.flag = flag
        self.toks = toks  # (never changed in place: a stage that drops tokens gives the clause a new list)
        self.role = _UNSET
        self.kinds: set[Kind] | None = None  # the kinds of ``toks`` (``None``: not computed, or toks changed since)


# token kind -> (cut at its end?, resume at its end?, flag of the next clause, flag of the previous one or None)
_CUTS: Final = {
    KIND.COND: (False, True, FLAG.COND, None),
    KIND.CONDK_PRE: (False, False, FLAG.COND, None),
    KIND.WITHOUT: (False, False, FLAG.WITHOUT, None),
    KIND.CONDK_SEQ: (False, False, FLAG.SEQ, None),
    KIND.CONDK_POST: (True, True, FLAG.MAIN, FLAG.COND),
    KIND.REASON_PRE: (False, False, FLAG.REASON, None),
    KIND.REASON_POST: (True, True, FLAG.MAIN, FLAG.REASON),
    KIND.QMARK: (True, True, FLAG.MAIN, None),
    KIND.CORRECT: (True, True, FLAG.MAIN, None),
}


class Reading:
    """What the clause stage understood.

    Attributes
    ----------
    act : list of Token
        Tokens of the active clauses, in order.
    mods : list of str
        Condition texts (``modifications``).
    guards : list of str
        Why the answer must not be acted on as read (sarcasm, past reference…).
    cap_guards : list of str
        Why the confidence is capped below acting (comparison, past clause).
    unexplained : list of str
        Words of active clauses the grammar does not explain.
    mentioned : set of int
        Options named but not chosen (past, comparison).
    refused : set of int
        Options a sarcastic or trailing negation may refuse.
    double_neg : Token or None
    neg_mod : bool
        A negation was read as a condition ("yes, don't delete the logs").
    defer : bool
        The pattern path declines: only a model can read this answer.
    early : tuple or None
        ``(confidence, reasoning, intent)`` of a clarification decided here.
    """

    __slots__ = (
        "act",
        "cap_guards",
        "clauses",
        "defer",
        "double_neg",
        "early",
        "guards",
        "mentioned",
        "mods",
        "neg_mod",
        "orig",
        "refused",
        "s",
        "toks",
        "unexplained",
    )

    def __init__(self, s: str, orig: str, clauses: list[Clause], toks: list[Token]) -> None:
        self.s = s
        self.orig = orig
        self.clauses = clauses
        self.toks = toks
        self.act: list[Token] = []
        self.mods: list[str] = []
        self.guards: list[str] = []
        self.cap_guards: list[str] = []
        self.unexplained: list[str] = []
        self.mentioned: set[int] = set()
        self.refused: set[int] = set()
        self.double_neg: Token | None = None
        self.neg_mod = False
        self.defer = False
        self.early: tuple[float, str, str] | None = None


def gap(s: str, a: Token, b: Token) -> str:
    """Classify the text between two tokens: ``list`` | ``or`` | ``range`` | ``other``."""
    g = s[a.end : b.start].strip(_GAP_STRIP)
    if _LIST_GAP.fullmatch(g):
        return "list"
    if _OR_GAP.fullmatch(g):
        return "or"
    if _RANGE_GAP.fullmatch(g):
        return "range"
    return "other"


_SPAN: Final = re.Match.span
_EARLY_KINDS: Final = frozenset((KIND.ONLY, KIND.QUESTION, KIND.HOLD))


def _punct_spans(s: str, toks: list[Token], starts: list[int], ends: list[int]) -> list[tuple[int, int]]:
    """The spans of cutting punctuation: found in ``s`` with the tokens masked (punctuation inside a token does not cut).

    Masking changes nothing unless a punctuation match of ``s`` overlaps a token (outside tokens the
    two texts are the same, and a token's masked characters are never punctuation): then the spans
    are found again in the masked text. ``starts``, ``ends``: the tokens' (sorted, non-overlapping).
    """
    spans = list(map(_SPAN, (_PUNCT_RE if "-" in s else _PUNCT_ONLY).finditer(s)))
    if not toks or not spans:
        return spans
    n = len(toks)
    for a, b in spans:
        i = bisect.bisect_right(ends, a)  # the first token ending after a
        if i < n and starts[i] < b:
            return list(map(_SPAN, _PUNCT_RE.finditer(mask(s, toks))))
    return spans


def _split(s: str, spans: list[tuple[int, int]], toks: list[Token], present: set[Kind],
           starts: list[int]) -> list[Clause]:
    """Cut at punctuation (``spans``, from :func:`_punct_spans`) and connectives (``present``: the tokens' kinds)."""
    clauses: list[Clause] = []
    cur = 0
    pending = _MAIN
    if present.isdisjoint(_CUTS):
        # punctuation only: the spans are sorted and apart, every clause is a main one
        for cut, resume in spans:
            if s[cur:cut].strip(_PUNCT_SPACE):
                clauses.append(Clause(cur, cut, _MAIN, toks))
            cur = resume
    else:
        cuts: list[tuple[int, int, Flag, Flag | None]] = []
        for a, b in spans:
            cuts.append((a, b, _MAIN, None))
        for t in toks:
            if t.kind in _CUTS:
                cut_at_end, resume_at_end, nxt, prev = _CUTS[t.kind]
                cuts.append((t.end if cut_at_end else t.start, t.end if resume_at_end else t.start, nxt, prev))
        if len(cuts) > 1:
            # by (cut, resume): no two cuts share both (punctuation spans are apart from tokens and from each
            # other; two tokens share a position only end-to-start, where the ending one's next flag is MAIN and
            # the starting one's is not), so the whole tuples sort the same, without a key function
            cuts.sort()
        for cut, resume, nxt, prev in cuts:
            if cut < cur:
                continue
            if s[cur:cut].strip(_PUNCT_SPACE):
                clauses.append(Clause(cur, cut, prev if prev is not None else pending, toks))
                pending = nxt
            elif prev is not None and clauses:
                clauses[-1].flag = prev
                pending = nxt
            elif nxt is not _MAIN:
                pending = nxt
            cur = resume
    if s[cur:].strip(_PUNCT_SPACE) or not clauses:
        clauses.append(Clause(cur, len(s), pending, toks))
    else:
        clauses[-1].end = len(s)
    # every clause was made with all the tokens: one clause keeps them, several get their own below
    if len(clauses) == 1:
        clauses[0].kinds = present
        return clauses
    # a token goes to the last clause starting at or before it (the first clause takes any before it)
    lo = 0
    bisect_left = bisect.bisect_left
    prev_c = clauses[0]
    for c in clauses[1:]:
        hi = bisect_left(starts, c.start, lo)
        prev_c.toks = toks[lo:hi]
        lo = hi
        prev_c = c
    prev_c.toks = toks[lo:]
    return clauses


def _uncovered(s: str, start: int, end: int, toks: list[Token]) -> str:
    """The text of ``s[start:end]`` not covered by tokens (each token leaves a space)."""
    if not toks:
        return s[start:end]
    if len(toks) == 1:  # (most clauses)
        t = toks[0]
        b = t.end
        return s[start : t.start] + " " + s[b if b > start else start : end]  # noqa: FURB136 - max() is a call
    # the gaps joined by spaces; a gap of a token starting before the text already passed is empty
    # (``s[cur:a]`` with ``a <= cur``), and so is the tail when a token reaches past ``end``
    parts: list[str] = []
    add = parts.append
    cur = start
    for t in toks:
        add(s[cur : t.start])
        b = t.end
        if b > cur:  # noqa: PLR1730 - max() is a call per token, this loop is hot
            cur = b
    add(s[cur:end])
    return " ".join(parts)


def _unfilled_words(r: str) -> str:
    """``r`` with the fillers replaced by spaces.

    The English fillers are ASCII words (nothing to do without a Latin
    letter), the Japanese ones have no ASCII character (nothing to do in ASCII
    text).
    """
    if r.isascii():  # no Japanese filler; the English regex at once (without a letter it finds nothing)
        return (_FILL_EN or _fillers()[0]).sub(" ", r)
    if _LATIN.search(r) is not None:
        r = (_FILL_EN or _fillers()[0]).sub(" ", r)
    return (_FILL_JA or _fillers()[1]).sub(" ", r)


_FILL_EN: re.Pattern[str] | None = None
_FILL_JA: re.Pattern[str] | None = None
_LATIN: Final = re.compile(r"[a-z]")


def _fillers() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The filler regexes, compiled on first use (kept here: one global read per residue)."""
    global _FILL_EN, _FILL_JA
    _FILL_EN, _FILL_JA = _lexicon.filler_en(), _lexicon.filler_ja()
    return _FILL_EN, _FILL_JA


def residue_words(s: str, start: int, end: int, toks: list[Token]) -> list[str]:
    """Words of ``s[start:end]`` that no token and no filler explains."""
    r = _uncovered(s, start, end, toks)
    if not r.strip(_NON_WORD):
        return []  # no word character: no word, before the fillers or after (the common case, without a regex)
    if r.isascii():  # as in _unfilled_words: the English regex at once, a regex call fewer
        r = (_FILL_EN or _fillers()[0]).sub(" ", r)
    else:
        if _LATIN.search(r) is not None:
            r = (_FILL_EN or _fillers()[0]).sub(" ", r)
        if not r.isascii():
            r = (_FILL_JA or _fillers()[1]).sub(" ", r)
    if not r.strip(_NON_WORD):
        return []  # the fillers took every word
    return _WORD_RE.findall(r.replace(MASK, " ") if MASK in r else r)


def _two_words(s: str, c: Clause, toks: list[Token] | None = None) -> bool:
    """Whether at least two word characters of the clause are left unexplained."""
    r = _uncovered(s, c.start, c.end, c.toks if toks is None else toks)
    if not _two_word_chars(r):
        return False  # removing fillers only removes word characters
    return _two_word_chars(_unfilled_words(r))


def _two_word_chars(r: str) -> bool:
    """Whether ``r`` holds at least two word characters (``\\w``).

    Told without a regex call when ``r`` stripped of :data:`_NON_WORD` is
    empty (none) or starts and ends with a word character (two, at its ends,
    when it is longer than one); else the regex decides.
    """
    core = r.strip(_NON_WORD)
    if not core:
        return False
    a = core[0]
    b = core[-1]
    if (a.isalnum() or a == "_") and (b.isalnum() or b == "_"):  # (``str.isalnum`` is the regex engine's \w)
        return len(core) > 1
    return _TWO_WORDCH.search(core) is not None


def _scope(s: str, toks: list[Token], i: int, pre: bool) -> list[Token]:
    """The group of targetable tokens a negator/exclusion at ``toks[i]`` applies to."""
    group: list[Token] = []
    rng = range(i + 1, len(toks)) if pre else range(i - 1, -1, -1)
    for j in rng:
        t = toks[j]
        if not t.tgt or t.neg is not None or t.exc is not None or t.src is SRC.POLITE:
            if group and t.kind not in _ONLY_FILL:
                break
            continue
        if group:
            a, b = (group[-1], t) if pre else (t, group[-1])
            if gap(s, a, b) == "other":
                break
        group.append(t)
    return group


def _mod_text(orig: str, c: Clause) -> str:
    return orig[c.start : c.end].strip(" ,、;。.!—-")


def has_kind(toks: list[Token], kinds: frozenset[Kind]) -> bool:
    """Whether a token of ``toks`` is of one of ``kinds`` (a loop: ``any()`` over a generator costs a frame)."""
    for t in toks:
        if t.kind in kinds:
            return True
    return False


def _is_choice(t: Token) -> bool:
    return t.kind in _CHOICES


def _naming(kinds: set[Kind], toks: list[Token]) -> bool:
    """Whether a token names an option: a targetable one other than a consent word (``Token.tgt``)."""
    return not kinds.isdisjoint(_NAMING) or (KIND.NEG in kinds and any(t.rej for t in toks if t.kind is KIND.NEG))


def _structural(kinds: set[Kind], toks: list[Token]) -> bool:
    """Whether a token is a structural reference: a range, a count, a number or an ordinal."""
    if not kinds.isdisjoint(STRUCTURAL):
        return True
    if KIND.REF in kinds:
        for t in toks:
            if t.kind is KIND.REF and t.src in _NUMERIC:
                return True
    return False


def _roles(s: str, clauses: list[Clause]) -> None:
    """Reason clauses are ignored, conditional clauses without a choice are modifications."""
    chooses = False  # an active clause names an option (more than a "yes")
    active = ROLE.ACTIVE
    for c in clauses:
        toks = c.toks
        kinds = c.kinds
        if kinds is None:  # (a loop, not a comprehension: a comprehension is a function call)
            if len(toks) > 1:
                kinds = c.kinds = set()
                for t in toks:
                    kinds.add(t.kind)
            else:  # (most clauses hold one token or none)
                kinds = c.kinds = {toks[0].kind} if toks else set()
        flag = c.flag
        if flag is _MAIN:
            if not kinds.isdisjoint(_DECISIVE_PAST):
                role = active
            else:
                role = ROLE.MOD if _two_words(s, c) else ROLE.NONE
        elif flag is FLAG.REASON:
            if _structural(kinds, toks):  # "2番が安全だから": the choice sits inside the reason clause
                c.toks = [t for t in toks if not (t.kind is KIND.REF and t.src in _WORDED)]  # a structural one stays
                c.kinds = None
                role = active
            elif not kinds.isdisjoint(_REASON_MORE):
                role = active  # "2, because I'd never pick 1": a reason that says more than a reason
            else:
                role = ROLE.NONE
        elif flag is FLAG.WITHOUT and (KIND.YES in kinds or _naming(kinds, toks)):  # a targetable token
            role = active
        elif flag is FLAG.SEQ and _naming(kinds, toks):
            role = active  # "test then deploy", "2, also 3"
        elif _structural(kinds, toks) or KIND.SARCASM in kinds:
            role = active
        elif _two_words(s, c):
            role = ROLE.MOD
        else:  # "1, but no", "yes but never": a bare reversal is no condition
            role = active if not kinds.isdisjoint(DECISIVE) else ROLE.NONE
        c.role = role
        if not chooses and role is active and _naming(kinds, toks):
            chooses = True
    # "the one with the backup": a descriptive clause is the choice when nothing else chooses
    if not chooses:
        for c in clauses:
            if c.role is not active and c.flag in _COND_SEQ and any(t.kind is KIND.REF for t in c.toks):
                c.role = active


def _correction(toks: list[Token], clauses: list[Clause]) -> None:
    """A correction ("やっぱり", "actually", "いや、3番", "kidding, 3") drops what came before it."""
    for t in toks:
        if t.kind is KIND.CORRECT:
            break
    else:
        return  # no correction word
    # the last target, and the last correction before it (loops: a generator is a function call)
    last_target = -1
    for t in toks:
        if t.tgt and t.start > last_target:
            last_target = t.start
    last_fix = -1
    for t in toks:
        if t.kind is KIND.CORRECT and last_fix < t.start < last_target:
            last_fix = t.start
    if last_fix >= 0:
        for c in clauses:
            if c.end <= last_fix:
                c.role = ROLE.NONE
            elif c.start < last_fix:
                c.toks = [t for t in c.toks if t.start > last_fix]
                c.kinds = None


def _vals_of(t: Token, n: int) -> list[int]:
    if t.kind is KIND.REF:
        v = t.val
        return [v] if isinstance(v, int) and 1 <= v <= n else []
    if t.kind is KIND.RANGE:
        a, b = t.val  # type: ignore[misc]
        a, b = min(a, b), max(a, b)
        return list(range(max(a, 1), min(b, n) + 1))
    if t.kind in _FIRST_LAST:
        v = t.val
        assert isinstance(v, int)
        if not 1 <= v <= n:
            return []
        return list(range(1, v + 1)) if t.kind is KIND.FIRSTN else list(range(n - v + 1, n + 1))
    return []


def _scopes(r: Reading, c: Clause, approval: bool, n: int) -> bool:
    """Negation, exclusion, comparison and past scopes in one active clause; ``False``: defer to the model."""
    s = r.s
    st = c.toks
    if c.flag is FLAG.WITHOUT:
        for t in st:
            if t.tgt:
                t.exc = t
    kinds = c.kinds  # the passes below only act on these kinds: skip those with nothing to do
    if kinds is None:
        kinds = c.kinds = {t.kind for t in st}
    if kinds.isdisjoint(_SCOPING):
        return True  # no past marker, negator, exclusion or comparison: no scope to resolve
    # a past-tense clause only mentions the options it names
    past = next((t for t in st if t.kind is KIND.PAST), None) if KIND.PAST in kinds else None
    if past is not None:
        named = [t for t in st if _is_choice(t) or t.kind is KIND.YES or (t.kind is KIND.NEG and t.rej)]
        for t in named:
            t.mention = past
            r.mentioned.update(_vals_of(t, n))
        if named:
            r.cap_guards.append("past reference " + ", ".join(repr(s[t.start:t.end]) for t in named))
        st = [t for t in st if t.mention is None]
        kinds = {t.kind for t in st}
    has_neg = KIND.NEG in kinds
    for phase in ((0, 1) if has_neg or KIND.EXC in kinds or KIND.COMPARE in kinds else ()):
        for i, t in enumerate(st):
            if t.kind is KIND.EXC and phase == 0:
                for g in _scope(s, st, i, t.pre):
                    g.exc = t
            elif t.kind is KIND.COMPARE and phase == 0:
                for g in _scope(s, st, i, s.startswith("than", t.start)):
                    if _is_choice(g):
                        g.mention = t
            elif t.kind is KIND.NEG and t.neg is None and t.rej == bool(phase) and t.src is not SRC.YET:
                for g in _scope(s, st, i, t.pre):
                    if g.kind is KIND.NEG:
                        r.double_neg = t
                    g.neg = t
    # a negated verb negates its object: "3は実行しないで", "3を実行しない" ("don't run 3" is a list already)
    for i, t in enumerate(st if has_neg else ()):
        if t.kind is KIND.YES and t.neg is not None and i and _is_choice(st[i - 1]):
            obj = st[i - 1]
            if obj.neg is None and obj.exc is None and _OBJECT_GAP.fullmatch(s[obj.end : t.start]):
                obj.neg = t.neg
    mentions = [t for t in st if t.mention is not None] if KIND.COMPARE in kinds else ()  # only a comparison marks
    if mentions:
        for t in mentions:
            r.mentioned.update(_vals_of(t, n))
        r.cap_guards.append("comparison " + ", ".join(repr(s[t.start:t.end]) for t in mentions))
        st = [t for t in st if t.mention is None]
    # two negations in a row in one clause: "don't not run it", "I wouldn't say no", "ダメじゃない"
    prev_neg: Token | None = None
    for t in st if has_neg else ():
        if t.kind is KIND.NEG and t.src is not SRC.YET:
            if prev_neg is not None and r.double_neg is None:
                r.double_neg = t
            prev_neg = t
        elif t.tgt or t.kind in _EXC_QUESTION:
            prev_neg = None
    # "deploy, but not on friday": an exclusion of something that is no option is a
    # condition on an explicit choice (with "all" or in an approval it changes the choice
    # itself, and the model decides)
    for t in list(st) if KIND.EXC in kinds else ():
        if t.kind is not KIND.EXC or t.src is SRC.ALLX or approval or any(u.exc is t for u in st):
            continue
        if any(u.kind in _ALL_REST for u in r.toks):
            continue
        if t.pre:
            a = t.start + 4 if s.startswith("but ", t.start) else t.start
            r.mods.append(r.orig[a : c.end].strip(" ,、;。.!"))
            c.toks = [u for u in c.toks if u.start < t.start]
            st = [u for u in st if u.start < t.start]
            c.end = t.start
        else:
            r.mods.append(r.orig[c.start : t.end].strip(" ,、;。.!"))
            c.toks = [u for u in c.toks if u.start >= t.end]
            st = [u for u in st if u.start >= t.end]
            c.start = t.end
    # a bare pure negator in a clause with other content is about that content:
    # "yes, don't delete the logs" -> modification "don't delete the logs"
    if not has_neg:
        return True  # both checks below need a negator
    dec: list[Token] = []  # the decisive tokens; whether one is a negator, whether all are pure negators
    neg_dec = False
    pure = True
    for t in st:
        if t.kind in DECISIVE:
            dec.append(t)
            if t.kind is KIND.NEG:
                neg_dec = True
                if t.rej or t.src is SRC.YET:
                    pure = False
            else:
                pure = False
    has_object = neg_dec and _two_words(s, c, st)
    if dec and pure:
        if not any(t.neg is not None for t in st) and has_object and len(dec) == 1:
            c.role = ROLE.MOD
            r.neg_mod = True
    elif approval and has_object and any(t.kind is KIND.NEG and t.rej and not any(u.neg is t for u in st) for t in dec):
        return False  # "skip step 3", "設定変更はやめて": refuses part of the plan, not the plan
    return True


def _trailing_negation(r: Reading, n: int) -> None:
    """A negation after a choice that negates nothing named ("2, not", "2 is not it", "2番、だめ")."""
    for t in r.act:
        if t.kind is KIND.NEG:
            break
    else:
        return  # no negation
    used: set[int] = set()  # the negators and exclusions that apply to a token; where the last choice starts
    last_choice = -1
    for u in r.act:
        if u.neg is not None:
            used.add(id(u.neg))
        if u.exc is not None:
            used.add(id(u.exc))
        if u.kind in _CHOICES and u.start > last_choice:
            last_choice = u.start
    chosen: list[Token] = []
    for t in r.act:
        if t.kind in _CHOICES and t.neg is None and t.exc is None:
            chosen.append(t)
        elif (t.kind is KIND.NEG and chosen and t.neg is None and id(t) not in used and t.src is not SRC.YET
              and last_choice < t.end):  # "2, no, 3" is decided later
            for u in chosen:
                r.refused.update(_vals_of(u, n))
            r.guards.append(f"negation {r.s[t.start:t.end]!r} after the choice")
            return


def read(s: str, orig: str, toks: list[Token], approval: bool, n: int) -> Reading:
    """Split ``s`` into clauses, give them roles and resolve scopes.

    Parameters
    ----------
    s : str
        The normalised answer.
    orig : str
        The answer with its case kept (modification texts are cut from it).
    toks : list of Token
        From :func:`._scanner.scan`.
    approval : bool
        Yes/no words apply.
    n : int
        Number of options.

    Returns
    -------
    Reading
    """
    present: set[Kind] = set()  # clauses only ever drop tokens: checks for absent kinds are skipped
    starts: list[int] = []
    ends: list[int] = []
    for t in toks:  # one loop for the three (a comprehension is a function call each)
        present.add(t.kind)
        starts.append(t.start)
        ends.append(t.end)
    clauses = _split(s, _punct_spans(s, toks, starts, ends), toks, present, starts)
    r = Reading(s, orig, clauses, toks)
    _roles(s, clauses)
    if KIND.CORRECT in present:
        _correction(toks, clauses)
    scoped = not present.isdisjoint(_SCOPED)
    for c in clauses if scoped else ():  # without these kinds no clause has a scope to resolve
        if c.role is ROLE.ACTIVE and not _scopes(r, c, approval, n):
            r.defer = True
            return r
    # sarcasm anywhere the answer still stands: never a choice
    for c in clauses if KIND.SARCASM in present else ():
        if c.role is not ROLE.NONE and any(t.kind is KIND.SARCASM for t in c.toks):
            sarc = next(t for t in c.toks if t.kind is KIND.SARCASM)
            for t in r.toks:
                if _is_choice(t) or t.kind is KIND.YES:
                    r.refused.update(_vals_of(t, n))
            r.guards.append(f"sarcasm or a rhetorical negation ({s[sarc.start:sarc.end]!r})")
            r.early = (0.1, f"sarcasm or a rhetorical negation ({s[sarc.start:sarc.end]!r}): not a choice", "sarcasm")
            return r
    if approval and KIND.PLANREF in present and any(
            t.kind is KIND.PLANREF for c in clauses if c.role is not ROLE.NONE for t in c.toks):
        r.defer = True  # "yes to step 1", "skip the first step": about parts of the plan, for the model
        return r
    for c in clauses if not present.isdisjoint(_EARLY_KINDS) else ():
        if approval and c.role is ROLE.MOD and any(t.kind is KIND.ONLY for t in c.toks):
            r.defer = True  # "yes, but only the first step": a partial approval, for the model
            return r
        if c.role is not ROLE.ACTIVE and c.flag is not FLAG.REASON and has_kind(c.toks, _QUESTION_HOLD):
            hold = any(t.kind is KIND.HOLD for t in c.toks)
            r.early = (0.2, f"{'hold' if hold else 'question'} in {_mod_text(orig, c)!r}",
                       "hold" if hold else "question: " + orig[:80])
            return r
    act: list[Token] = []
    mods: list[str] = []
    for c in clauses:
        role = c.role
        if role is ROLE.ACTIVE:
            act += c.toks
            if c.flag is not FLAG.REASON:  # a reason's words are explained as a reason
                r.unexplained += residue_words(s, c.start, c.end, c.toks)
        elif role is ROLE.MOD:
            x = _mod_text(orig, c)
            if x:
                mods.append(x)
    if scoped:  # only a scope makes a mention
        r.act = []
        for t in act:
            if t.mention is None:
                r.act.append(t)
    else:
        r.act = act
    if r.mods:
        mods += [x for x in r.mods if x]
    r.mods = mods
    if KIND.NEG in present:
        _trailing_negation(r, n)
    return r
