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

from typing import Final

__all__ = ["ANY", "first_chars", "first_pairs"]

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


# --------------------------------------------------------------------------- first two characters

ANY: Final = "\uffff"
"""Stands for "any character" in a prefix from :func:`first_pairs`."""

_CAP: Final = 4096  # prefix sets larger than this forget their second characters (still sound)


def _cat(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """Prefixes (up to two characters) of a match of ``a`` followed by one of ``b``."""
    out = {u if len(u) == 2 else (u + v)[:2] for u in a for v in (b if len(u) < 2 else ("",))}
    if len(out) > _CAP:
        out = {u[0] + ANY if len(u) == 2 else u for u in out}
    return frozenset(out)


def _p_escape(r: _Reader) -> frozenset[str]:
    kind, s = _escape(r)
    if kind == "zero":
        return frozenset(("",))
    return frozenset((ANY,)) if s is None else s


def _p_alternation(r: _Reader) -> frozenset[str]:
    acc: set[str] = set()
    while True:
        acc |= _p_sequence(r)
        if r.peek() == "|":
            r.take()
            continue
        return frozenset(acc)


def _p_sequence(r: _Reader) -> frozenset[str]:
    acc = frozenset(("",))
    while True:
        ch = r.peek()
        if ch in ("", "|", ")"):
            return acc
        r.take()
        item: frozenset[str]
        if ch == "(":
            if r.peek() == "?":
                r.take()
                kind = r.take()
                if kind in "=!" or (kind == "<" and r.peek() in "=!"):
                    if kind == "<":
                        r.take()
                    _p_alternation(r)
                    item = frozenset(("",))
                elif kind == ":":
                    item = _p_alternation(r)
                elif kind == "P" and r.peek() == "<":
                    r.i = r.p.index(">", r.i) + 1
                    item = _p_alternation(r)
                else:
                    raise ValueError(f"unsupported group (?{kind} in the lexicon")
            else:
                item = _p_alternation(r)
            if r.take() != ")":
                raise ValueError("unbalanced parenthesis")
        elif ch == "[":
            c = _class(r)
            item = frozenset((ANY,)) if c is None else c
        elif ch == "\\":
            item = _p_escape(r)
        elif ch == ".":
            item = frozenset((ANY,))
        elif ch in "^$":
            item = frozenset(("",))
        else:
            item = frozenset(ch)
        start = r.i
        zero = _quantifier(r)
        if zero is not None:  # repeated: once, twice or (when allowed) not at all; more adds nothing to two characters
            quant = r.p[start : r.i]
            if quant[0] == "{":
                body = quant[1 : quant.index("}")]
                lo, comma, hi = body.partition(",")
                most = (hi.strip() or "2") if comma else lo
                twice = int(most) >= 2
            else:
                twice = quant[0] in "*+"
            item = item | (_cat(item, item) if twice else frozenset()) | (frozenset(("",)) if zero else frozenset())
        acc = _cat(acc, item)
        if all(len(u) == 2 for u in acc):
            _skip(r)
            return acc


def _skip(r: _Reader) -> None:
    """Move past the rest of the current sequence (up to ``|`` or ``)`` at this depth)."""
    depth = 0
    while r.i < len(r.p):
        ch = r.peek()
        if ch == "\\":
            r.i += 2 if r.p[r.i + 1] != "u" else 6
            continue
        if ch == "[":
            r.take()
            _class(r)
            continue
        if depth == 0 and ch in "|)":
            return
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        r.take()


def first_pairs(pattern: str) -> dict[str, frozenset[str] | None]:
    """The first two characters a match of ``pattern`` can start with.

    Parameters
    ----------
    pattern : str
        A regular expression in the lexicon's subset of the syntax.

    Returns
    -------
    dict
        First character → the characters that can follow it, or ``None``
        when any character (or the end of the text) can. Sound, not exact:
        lookarounds are ignored, so it may list more than can match.

    Raises
    ------
    ValueError
        As :func:`first_chars`.

    Examples
    --------
    >>> first_pairs(r"\\b(?:yes|ok)\\b|は[いあ]")
    {'y': frozenset({'e'}), 'o': frozenset({'k'}), 'は': frozenset({'あ', 'い'})}
    """
    r = _Reader(pattern)
    prefixes = _p_alternation(r)
    if r.i != len(pattern):
        raise ValueError(f"unbalanced parenthesis at {r.i} in {pattern[:40]!r}")
    if "" in prefixes or any(u[0] == ANY for u in prefixes):
        raise ValueError(f"pattern can start anywhere or match nothing: {pattern[:60]!r}")
    out: dict[str, set[str] | None] = {}
    for u in prefixes:
        seconds = out.setdefault(u[0], set())
        if seconds is None:
            continue
        if len(u) == 1 or u[1] == ANY:
            out[u[0]] = None
        else:
            seconds.add(u[1])
    return {c: None if s is None else frozenset(s) for c, s in out.items()}
