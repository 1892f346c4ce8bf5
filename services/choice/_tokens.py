"""Typed tokens: what the scanner recognised in an answer.

A :class:`Token` is a span of the normalised answer with a :class:`Kind` (what
it is) and, for references, a :class:`Src` (how it names an option). Later
stages attach a negator (``neg``), an exclusion (``exc``) or a mention marker
(``mention``: a comparison such as "better than 3") to the tokens in their
scope.
"""

from __future__ import annotations

from enum import IntEnum
from types import ModuleType

__all__ = ["DECISIVE", "KIND", "NEGATIONS", "SRC", "STRUCTURAL", "TARGETABLE", "Kind", "Src", "Token", "plain"]


class Kind(IntEnum):
    """What a token is."""

    REF = 1  # one option: a number, an ordinal, a label or a keyword
    RANGE = 2  # "1-3", "1から3"
    FIRSTN = 3  # "the first two", "最初の2つ"
    LASTN = 4  # "the last two"
    ALL = 5  # "all", "全部"
    ALLCOUNT = 6  # "both", "all three", "3つとも"
    REST = 7  # "the rest", "残り"
    SAME = 8  # "same as before"
    RECOMMEND = 9  # "the recommended one", "おすすめ"
    YES = 10  # consent words
    NEG = 11  # negators and refusal words
    EXC = 12  # "except", "以外"
    VAGUE = 13  # "I don't know", "任せる", "hmm"
    QUESTION = 14
    CONCERN = 15  # "危険", "risky"
    QMARK = 16
    HOLD = 17  # "wait", "ちょっと待って"
    AMBIG = 18  # "結構です", "大丈夫"
    CNT = 19  # a bare count: "2つ"
    ONLY = 20
    FILL = 21  # "go with", "I'd like"
    HEDGE = 22  # "maybe", "たぶん"
    SUGGEST = 23  # "how about"
    CORRECT = 24  # "actually", "やっぱり", "just kidding"
    COND = 25  # "but", "けど"
    CONDK_PRE = 26  # "if", "as long as", "with"
    CONDK_SEQ = 27  # "then", "also", "あと"
    CONDK_POST = 28  # "てから", "前に"
    WITHOUT = 29
    REASON_PRE = 30  # "because"
    REASON_POST = 31  # "から", "ので"
    OBLIG = 32  # "しないと"
    PLANREF = 33  # "step 2" in an approval prompt
    SARCASM = 34  # "as if", "yeah right", "わけない", "ないでしょ"
    PAST = 35  # "last time", "前回", "だった"
    COMPARE = 36  # "than", "より"
    MENTION = 37  # a number that is not a choice: "-1", "3 files", "10分"
    SUPERLATIVE = 38  # "the most", "一番" + adjective: names an option through a quality


class Src(IntEnum):
    """How a token names an option, or its flavour."""

    NONE = 0
    NUMBER = 1
    ORDINAL = 2
    LABEL = 3
    KEYWORD = 4
    DESCRIPTION = 5
    COUNT = 6
    ALLX = 7  # "all but"
    YET = 8  # "not yet"
    RELUCTANT = 9  # "仕方ない"
    POLITE = 10  # "please", "お願いします"
    UNKNOWN = 11  # vague: "I don't know"
    DELEGATE = 12  # vague: "up to you"
    NOISE = 13  # vague: "hmm"
    PREF = 14  # vague: "the best one"


def plain(enum: type) -> ModuleType:
    """A namespace with the enum's members as attributes.

    ``Kind.REF`` goes through the enum machinery on every access (about 10x a
    plain attribute on Python 3.11); the hot stages read ``KIND.REF`` instead.
    The namespace is a module object: Python 3.11 specialises attribute reads
    on modules, not on classes (a class attribute is looked up in the type's
    cache on every read, about 40 % slower; a few hundred reads per answer).
    """
    ns = ModuleType(f"{enum.__name__}Members")
    for m in enum:
        setattr(ns, m.name, m)
    return ns


KIND = plain(Kind)
SRC = plain(Src)

TARGETABLE = frozenset(
    (Kind.REF, Kind.RANGE, Kind.FIRSTN, Kind.LASTN, Kind.ALL, Kind.ALLCOUNT, Kind.REST, Kind.SAME, Kind.RECOMMEND,
     Kind.YES)
)
"""Kinds a negator or an exclusion can apply to."""

DECISIVE = TARGETABLE | frozenset(
    (Kind.NEG, Kind.EXC, Kind.VAGUE, Kind.QUESTION, Kind.CONCERN, Kind.QMARK, Kind.HOLD, Kind.AMBIG, Kind.CNT,
     Kind.SARCASM)
)
"""Kinds that make a clause part of the answer proper (not a condition)."""

STRUCTURAL = frozenset((Kind.RANGE, Kind.FIRSTN, Kind.LASTN, Kind.ALLCOUNT))

NEGATIONS = frozenset((Kind.NEG,))


_NEG = Kind.NEG


class Token:
    """One recognised span of the normalised answer.

    Parameters
    ----------
    kind : Kind
    start, end : int
        The span in the normalised answer.
    val : int or tuple of int or None
        The option (``REF``), the bounds (``RANGE``) or the count.
    conf : float
        The confidence this token alone gives.
    src : Src
    pre : bool
        For negators and exclusions: the scope lies after the token (English
        "not 2"); otherwise before it (Japanese "2じゃない").
    rej : bool
        A refusal word ("cancel", "却下") rather than a plain negator.
    strong : bool
        A strong consent word ("yes", "承認") rather than politeness.
    """

    __slots__ = ("amb", "conf", "end", "exc", "kind", "mention", "neg", "pre", "rej", "src", "start", "strong", "tgt",
                 "val")

    def __init__(self, kind: Kind, start: int, end: int, val: int | tuple[int, int] | None = None, conf: float = 0.0,
                 src: Src = Src.NONE, pre: bool = False, rej: bool = False, strong: bool = False) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.val = val
        self.conf = conf
        self.src = src
        self.pre = pre
        self.rej = rej
        self.strong = strong
        self.neg: Token | None = None  # the negator that negates this token
        self.exc: Token | None = None  # the exclusion marker that excludes it
        self.amb = ""  # why this reference is ambiguous
        self.mention: Token | None = None  # the comparison that makes it a mention, not a choice
        # targetable(), read on hot paths; a refusal word ("cancel") is targetable too
        self.tgt = (rej and kind is _NEG) or kind in TARGETABLE

    def targetable(self) -> bool:
        """Whether a negator or an exclusion can apply to this token."""
        return self.tgt

    def __repr__(self) -> str:
        return f"Token({self.kind.name}, {self.start}:{self.end}, val={self.val!r}, src={self.src.name})"
