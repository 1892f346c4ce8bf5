"""Stage 0: normalisation (NFKC, circled numbers, case, whitespace)."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["normalize_answer", "prep"]

# circled numbers become " N " (NFKC alone would glue "①③" into "13");
# ❶..❿, ➀..➉ and ➊..➓ have no NFKC decomposition at all.
_CIRCLED: Final = {0x2460 + i: f" {i + 1} " for i in range(20)}
for _i in range(10):
    _CIRCLED[0x2776 + _i] = _CIRCLED[0x2780 + _i] = _CIRCLED[0x278A + _i] = f" {_i + 1} "
_CIRCLED[0x2212] = "-"  # minus sign
_CIRCLED[0x2013] = "-"  # en dash (ranges "1–3")
_HAS_CIRCLED: Final = re.compile("[" + "".join(map(chr, sorted(_CIRCLED))) + "]")  # translate() is slow on CJK text


def prep(text: str) -> str:
    """NFKC, extra circled digits, collapsed whitespace (case kept)."""
    if not text.isascii() and _HAS_CIRCLED.search(text) is not None:  # (every listed character is non-ASCII)
        text = text.translate(_CIRCLED)
    t = unicodedata.normalize("NFKC", text)
    return " ".join(t.split())


def normalize_answer(text: str) -> str:
    """Normalise an answer for matching and as a cache key.

    Parameters
    ----------
    text : str
        The raw answer.

    Returns
    -------
    str
        NFKC-normalised (full-width digits and letters become ASCII, ``①``
        becomes ``1``), lower-cased, trimmed, with runs of whitespace collapsed
        to one space.

    Examples
    --------
    >>> normalize_answer("  ＯＫ、　２番で ")
    'ok、 2番で'
    >>> normalize_answer("①と③")
    '1 と 3'
    """
    return prep(text).lower()
