"""First characters of a lexicon pattern, read from its source text.

The scanner tries, at each candidate position, only the lexicon entries that
can start with the character found there (a first-character dispatch). This
module computes those characters from the pattern text itself, for the subset
of regular-expression syntax the lexicon uses: literals and escapes, ``.``,
character classes, groups (``(?:``, ``(?P<name>``), lookarounds, anchors,
alternation and quantifiers. It uses no private ``re`` internals; a pattern it
cannot read raises :class:`ValueError` at build time, and a unit test compares
the dispatch with the plain combined regex on every tested answer.
"""

from __future__ import annotations

__all__ = ["first_chars"]

_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\n\r\f\v")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ZERO_WIDTH_ESCAPES = frozenset("bBAZ")


class _Reader:
    """A cursor over the pattern text."""

    __slots__ = ("i", "p")

    def __init__(self, p: str) -> None:
        self.p = p
        self.i = 0

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def take(self) -> str:
        ch = self.p[self.i]
        self.i += 1
        return ch


# an item: (first characters or None for "any", nullable)
_Item = tuple[frozenset[str] | None, bool]


def _escape(r: _Reader) -> tuple[str, frozenset[str] | None]:
    """Read an escape after the backslash: ("zero", _) | ("set", chars) | ("any", None)."""
    ch = r.take()
    if ch in _ZERO_WIDTH_ESCAPES:
        return "zero", frozenset()
    if ch == "d":
        return "set", _DIGITS
    if ch == "s":
        return "set", _SPACE
    if ch == "w":
        return "set", _WORD
    if ch in "DSW":
        return "any", None
    if ch == "u":
        code = r.p[r.i : r.i + 4]
        r.i += 4
        return "set", frozenset(chr(int(code, 16)))
    if ch == "n":
        return "set", frozenset("\n")
    if ch == "t":
        return "set", frozenset("\t")
    if ch.isdigit():
        raise ValueError("back-references are not supported in the lexicon")
    return "set", frozenset(ch)


def _class(r: _Reader) -> frozenset[str] | None:
    """Read a character class after ``[``."""
    if r.peek() == "^":
        while r.take() != "]":
            pass
        return None
    chars: set[str] = set()
    first = True
    while True:
        ch = r.take()
        if ch == "]" and not first:
            return frozenset(chars)
        first = False
        if ch == "\\":
            kind, s = _escape(r)
            if s is None or kind == "zero":
                return None
            if len(s) == 1 and r.peek() == "-" and r.p[r.i + 1] != "]":
                r.take()
                lo = next(iter(s))
                hi = r.take()
                if hi == "\\":
                    _, hs = _escape(r)
                    hi = next(iter(hs or {lo}))
                chars.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
            else:
                chars.update(s)
            continue
        if r.peek() == "-" and r.i + 1 < len(r.p) and r.p[r.i + 1] != "]":
            r.take()
            hi = r.take()
            if hi == "\\":
                _, hs = _escape(r)
                hi = next(iter(hs or {ch}))
            chars.update(chr(c) for c in range(ord(ch), ord(hi) + 1))
        else:
            chars.add(ch)


def _quantifier(r: _Reader) -> bool | None:
    """Read a quantifier if one follows; return whether it allows zero (None: no quantifier)."""
    ch = r.peek()
    if ch and ch in "?*+":
        r.take()
        zero = ch != "+"
    elif ch == "{" and (r.p[r.i + 1 : r.i + 2].isdigit() or r.p[r.i + 1 : r.i + 2] == ","):
        end = r.p.index("}", r.i)
        body = r.p[r.i + 1 : end]
        r.i = end + 1
        zero = body.split(",")[0].strip() in ("", "0")
    else:
        return None
    if r.peek() and r.peek() in "?+":
        r.take()  # lazy or possessive
    return zero


def _alternation(r: _Reader) -> _Item:
    """Read branches up to a closing ``)`` or the end."""
    acc: set[str] = set()
    nullable = False
    while True:
        f, n = _sequence(r)
        if f is None:
            return None, False
        acc |= f
        nullable = nullable or n
        if r.peek() == "|":
            r.take()
            continue
        return frozenset(acc), nullable


def _sequence(r: _Reader) -> _Item:
    acc: set[str] = set()
    done = False  # a non-nullable item was seen: later items add no first characters
    while True:
        ch = r.peek()
        if ch in ("", "|", ")"):
            return frozenset(acc), not done
        r.take()
        item: _Item
        if ch == "(":
            if r.peek() == "?":
                r.take()
                kind = r.take()
                if kind in "=!" or (kind == "<" and r.peek() in "=!"):
                    if kind == "<":
                        r.take()
                    _alternation(r)
                    item = (frozenset(), True)
                elif kind == ":":
                    item = _alternation(r)
                elif kind == "P" and r.peek() == "<":
                    r.i = r.p.index(">", r.i) + 1
                    item = _alternation(r)
                else:
                    raise ValueError(f"unsupported group (?{kind} in the lexicon")
            else:
                item = _alternation(r)
            if r.take() != ")":
                raise ValueError("unbalanced parenthesis")
        elif ch == "[":
            item = (_class(r), False)
        elif ch == "\\":
            kind, s = _escape(r)
            item = (frozenset(), True) if kind == "zero" else (s, False)
        elif ch == ".":
            item = (None, False)
        elif ch in "^$":
            item = (frozenset(), True)
        else:
            item = (frozenset(ch), False)
        zero = _quantifier(r)
        f, nullable = item
        if zero:
            nullable = True
        if not done:
            if f is None:
                return None, False
            acc |= f
            if not nullable:
                done = True


def first_chars(pattern: str) -> frozenset[str]:
    """The characters a match of ``pattern`` can start with.

    Parameters
    ----------
    pattern : str
        A regular expression in the lexicon's subset of the syntax.

    Returns
    -------
    frozenset of str

    Raises
    ------
    ValueError
        When the pattern can match the empty string, can start with any
        character, or uses syntax outside the subset.

    Examples
    --------
    >>> sorted(first_chars(r"\\b(?:yes|ok)\\b|はい"))
    ['o', 'y', 'は']
    """
    r = _Reader(pattern)
    f, nullable = _alternation(r)
    if r.i != len(pattern):
        raise ValueError(f"unbalanced parenthesis at {r.i} in {pattern[:40]!r}")
    if f is None or nullable or not f:
        raise ValueError(f"pattern can start anywhere or match nothing: {pattern[:60]!r}")
    return f
