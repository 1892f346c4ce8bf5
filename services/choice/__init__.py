"""Choice parsing's fast path: the pattern matcher (design note 001 §2.1 "Pattern Matcher").

A pipeline of named stages — :mod:`._normalize`, :mod:`._scanner` (with the
lexicons :mod:`._lexicon_en` and :mod:`._lexicon_ja`), :mod:`._clauses`,
:mod:`._decide` — behind :func:`match_choice`; :mod:`._pipeline` states the
safety rule (act only on a total parse).
"""

from ._decide import CAP_UNEXPLAINED
from ._normalize import normalize_answer
from ._pipeline import Analysis, analyse, match_choice

__all__ = ["CAP_UNEXPLAINED", "Analysis", "analyse", "match_choice", "normalize_answer"]
