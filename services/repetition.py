"""Degenerate repetition in model-written text: the pure finder behind the guards.

Used twice: by the executor on a finished answer
(:func:`tandem.actors._guards.check_degenerate`) and by a streaming provider
on the text streamed so far (:mod:`tandem.services.llm`), which stops a model
that loops instead of letting it run to ``max_tokens`` (issue 11; the
embedded 135M model loops on open prose).
"""

from __future__ import annotations

import re
from collections import Counter

import msgspec

__all__ = ["STREAM_THRESHOLDS", "Repetition", "find_repetition"]


class Repetition(msgspec.Struct, frozen=True, kw_only=True):
    """A repeated piece of text.

    Parameters
    ----------
    unit : str
        The repeated sentence, paragraph or phrase (whitespace collapsed).
    count : int
        Times it occurs in the output.
    in_source : int
        Times it occurs in the source text.
    kind : {"unit", "loop"}
        ``unit``: a sentence/paragraph repeated anywhere; ``loop``: the text
        ends in the same phrase over and over.
    """

    unit: str
    count: int
    in_source: int = 0
    kind: str = "unit"

    @property
    def shown(self) -> str:
        """The unit cut to 60 characters, for an error message."""
        return self.unit if len(self.unit) <= 60 else self.unit[:57] + "..."


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WS = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


def _norm(unit: str) -> str:
    return _WS.sub(" ", unit).strip().lower()


def _units(text: str, min_chars: int) -> Counter[str]:
    """Sentences (or lines) and paragraphs of ``text``, normalised, at least ``min_chars`` long."""
    counts: Counter[str] = Counter()
    for part in _SENTENCE_END.split(text):
        unit = _norm(part)
        if len(unit) >= min_chars and len(set(_LETTER.findall(unit))) >= 3:
            counts[unit] += 1
    for part in _PARAGRAPH.split(text):
        unit = _norm(part)
        if len(unit) >= min_chars and "\n" in part.strip() and len(set(_LETTER.findall(unit))) >= 3:
            counts[unit] += 1  # a multi-line paragraph, counted besides its lines
    return counts


def _tail_loop(text: str, *, min_period: int, max_period: int, repeats: int) -> tuple[str, int] | None:
    """The phrase the text ends with ``repeats`` (≥ 2) or more times in a row, with its count.

    The shortest such phrase of ``min_period`` (≥ 1) to ``max_period`` characters with at least two
    different letters. Text that ends in ``repeats`` copies of a ``period``-character phrase has
    its last ``min_period`` characters again ``period`` characters earlier (``repeats`` ≥ 2,
    ``min_period`` ≤ ``period``), so only the periods where ``str.rfind`` finds them are tested;
    the letters are looked at once (a longer tail has every letter a shorter one has), and copies
    are counted without building the repeated phrase again for each.
    """
    flat = _WS.sub(" ", text.strip())
    n = len(flat)
    top = min(max_period, n // repeats)
    periods = []
    tail = flat[n - min_period:]
    end = n - min_period  # a copy of the tail ends here at the latest (period min_period)
    start = n - top - min_period  # ... and starts here at the earliest (period top)
    while start >= 0 and (at := flat.rfind(tail, start, end)) >= 0:
        periods.append(n - min_period - at)
        end = at + min_period - 1
    if not periods:
        return None
    lettered = _two_letters(flat, top)
    for period in periods:
        if period < lettered:
            continue
        unit = flat[-period:]
        if flat.endswith(unit * repeats):
            count = repeats
            while flat.endswith(unit, 0, n - count * period):  # one more copy before those counted
                count += 1
            return unit, count
    return None


def _two_letters(flat: str, top: int) -> int:
    """The length of the shortest end of ``flat`` with two different letters (``top + 1`` when none is
    ``top`` characters long or shorter)."""
    back = flat[:len(flat) - top - 1:-1] if top < len(flat) else flat[::-1]
    last = _LETTER.search(back)
    if last is None:
        return top + 1
    other = re.compile(f"(?!{re.escape(last.group())})[^\\W\\d_]").search(back, last.end())
    return top + 1 if other is None else other.start() + 1


def find_repetition(text: str, source: str = "", *, min_chars: int = 24, min_extra: int = 8,
                    min_share: float = 0.25, loop_repeats: int = 6, min_repeats: int = 2) -> Repetition | None:
    """Return the worst degenerate repetition in ``text``, or ``None``.

    A sentence, line or paragraph of at least ``min_chars`` characters (with
    at least three different letters, so rules and table borders do not
    count) is degenerate when it occurs at least twice more than in
    ``source`` (the text the model was given) and the extra copies make up
    ``min_share`` of the output, or at least ``min_extra`` times more and a
    fifth of that share (a real document repeats a code line or two, a
    handful of times: rich's README has ``from rich.console import Console``
    six times). A text that ends with the same phrase (8–200 characters)
    ``loop_repeats`` times in a row, where ``source`` has no such run, is
    degenerate too.

    Parameters
    ----------
    text : str
        The model's output (or what it has streamed so far).
    source : str
        The input it worked on; repetition already there is legitimate.
    min_chars, min_extra, min_share, loop_repeats
        Thresholds, see above.
    min_repeats : int
        Extra copies a unit needs before its share counts at all (2: any
        repeat; a stream checked early uses more, see :data:`STREAM_THRESHOLDS`).

    Returns
    -------
    Repetition or None

    Examples
    --------
    >>> para = "The quick brown fox jumps over the lazy dog."
    >>> find_repetition("\\n\\n".join([para] * 25)).count
    25
    >>> find_repetition("# Title\\n\\nOne sentence. Another one here.") is None
    True
    """
    out = _units(text, min_chars)
    src = _units(source, min_chars) if source else Counter()
    worst: Repetition | None = None
    for unit, count in out.items():
        extra = count - src.get(unit, 0)
        if extra < min_repeats:
            continue
        share = extra * len(unit) / max(len(_norm(text)), 1)
        if share >= min_share or (extra >= min_extra and share >= min_share / 5):
            if worst is None or count > worst.count:
                worst = Repetition(unit=unit, count=count, in_source=src.get(unit, 0))
    if worst is not None:
        return worst
    loop = _tail_loop(text, min_period=8, max_period=200, repeats=loop_repeats)
    if loop is not None:
        unit, count = loop
        if unit * count not in _WS.sub(" ", source.strip()):
            return Repetition(unit=unit.strip(), count=count, kind="loop")
    return None


STREAM_THRESHOLDS = {"min_repeats": 8, "min_extra": 16, "loop_repeats": 12}
"""Stricter :func:`find_repetition` thresholds for text still being streamed.

Early in an answer two copies of a sentence are a large share of it, which
the finished answer may dilute; a stream is stopped only when the repetition
is far past anything the check on the finished answer would let through
(8 extra copies and a quarter of the text, 16 and a twentieth, or a phrase 12
times in a row at the end).
"""
