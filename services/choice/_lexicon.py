"""The lexicon: every word the grammar knows, in one ordered table, and its fast finder.

The English (:mod:`._lexicon_en`) and Japanese (:mod:`._lexicon_ja`) entries
share names; :data:`ORDER` fixes which entry wins when two can start at the
same position (the first listed: "no problem" before "no", "yeah right"
before "yeah"). :func:`finditer` yields the matches of the combined table
through a first-character dispatch: one character class finds candidate
positions and each candidate character gets a regex of only the entries that
can start with it (computed by :func:`._firstchars.first_chars`, compiled on
first use, so importing this module compiles nothing big).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from . import _lexicon_en as en
from . import _lexicon_ja as ja
from ._firstchars import first_chars

__all__ = ["ORDER", "entries", "filler_en", "filler_ja", "finditer", "master"]

# shared by both languages
_COMMON: Final = {
    "qmark": r"\?",
    "num": (
        r"(?P<num_p>(?:options?|opt|choices?|numbers?|num|items?|plans?|alternatives?|no\.|#|第|番号|案)\s*(?:#|no\.)?\s*)?"
        r"(?P<num_d>\d+)(?P<num_s>\s*(?:番目|ばんめ|番|つ目|個目|こめ|号|案)|(?:st|nd|rd|th)\b)?(?P<num_c>つ|個(?!目)|件)?"
    ),
}

ORDER: Final = (
    "sarcasm", "vague_unknown", "vague_delegate", "vague_noise", "vague_pref", "recommend", "superlative", "suggest", "correct", "hold",
    "neg_strong", "yesneg", "yes_reluct", "oblig", "fill", "ambig", "question", "concern", "qmark", "exc_pre", "cond",
    "exc_post", "allx", "allcount", "same", "past", "neg_yet", "neg_pre", "compare", "neg_rej_en", "neg_post",
    "neg_rej_jp", "yes_s", "yes_w", "all", "reason_pre", "reason_post", "condk_pre", "condk_seq", "condk_post",
    "without", "only", "rest", "hedge", "ordfrom_en", "ordfrom_j", "firstn_en", "firstn_j", "lastn_en", "lastn_j",
    "ord_en", "ord_j", "num", "kanji", "jc", "numword",
)
"""Entry names, first match wins at a position."""

# The guard makes every position inside an English word (and every space) fail before
# the entries are tried: tokens start at word starts, digits, symbols or CJK.
_GUARD: Final = r"(?! )(?:(?![a-z])|(?<![a-z0-9']))"


def entries() -> list[tuple[str, str]]:
    """(name, pattern) in :data:`ORDER`, both languages joined per name."""
    out = []
    for name in ORDER:
        pats = [p for p in (en.ENTRIES.get(name), ja.ENTRIES.get(name), _COMMON.get(name)) if p]
        if not pats:
            raise ValueError(f"lexicon entry {name!r} has no pattern")
        out.append((name, pats[0] if len(pats) == 1 else "|".join(f"(?:{p})" for p in pats)))
    unknown = (set(en.ENTRIES) | set(ja.ENTRIES)) - set(ORDER)
    if unknown:
        raise ValueError(f"lexicon entries missing from ORDER: {sorted(unknown)}")
    return out


class _Finder:
    """The compiled dispatch, built on first use."""

    def __init__(self) -> None:
        self.alts = entries()
        self.firsts = [first_chars(p) for _, p in self.alts]
        chars = sorted(set().union(*self.firsts))
        self.candidate = re.compile(_GUARD + "[" + "".join(re.escape(c) for c in chars) + "]", re.ASCII)
        self.by_char: dict[str, re.Pattern[str]] = {}
        self.by_subset: dict[tuple[int, ...], re.Pattern[str]] = {}
        self._master: re.Pattern[str] | None = None

    def compile(self, idx: tuple[int, ...]) -> re.Pattern[str]:
        body = "|".join(f"(?P<{self.alts[i][0]}>{self.alts[i][1]})" for i in idx)
        return re.compile(_GUARD + "(?:" + body + ")", re.ASCII)

    def dispatch(self, ch: str) -> re.Pattern[str]:
        rx = self.by_char.get(ch)
        if rx is None:
            subset = tuple(i for i, f in enumerate(self.firsts) if ch in f)
            rx = self.by_subset.get(subset)
            if rx is None:
                rx = self.by_subset[subset] = self.compile(subset)
            self.by_char[ch] = rx
        return rx

    @property
    def master(self) -> re.Pattern[str]:
        if self._master is None:
            self._master = self.compile(tuple(range(len(self.alts))))
        return self._master


_finder: _Finder | None = None


def _get() -> _Finder:
    global _finder
    if _finder is None:
        _finder = _Finder()
    return _finder


def finditer(text: str) -> Iterator[re.Match[str]]:
    """The lexicon's matches in ``text``, left to right, non-overlapping.

    Same result as ``master().finditer(text)``, faster: only the entries that
    can start with the character at a candidate position are tried there.
    """
    f = _finder or _get()
    search = f.candidate.search
    by_char = f.by_char
    pos = 0
    while True:
        c = search(text, pos)
        if c is None:
            return
        p = c.start()
        ch = text[p]
        rx = by_char.get(ch) or f.dispatch(ch)
        mo = rx.match(text, p)
        if mo is None:
            pos = p + 1
        else:
            yield mo
            pos = mo.end()


def master() -> re.Pattern[str]:
    """The whole lexicon as one regex (the reference :func:`finditer` must agree with)."""
    return _get().master


_FILL_EN: re.Pattern[str] | None = None
_FILL_JA: re.Pattern[str] | None = None


def filler_en() -> re.Pattern[str]:
    """English words that are grammar without a decision ("the", "please", "I'd")."""
    global _FILL_EN
    if _FILL_EN is None:
        _FILL_EN = re.compile(en.FILLERS, re.ASCII)
    return _FILL_EN


def filler_ja() -> re.Pattern[str]:
    """Japanese particles, politeness and choosing verbs ("を", "お願いします", "にします")."""
    global _FILL_JA
    if _FILL_JA is None:
        _FILL_JA = re.compile(ja.FILLERS)
    return _FILL_JA
