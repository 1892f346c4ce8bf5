"""Choice parsing's fast path: the pattern matcher (design note 001 §2.1 "Pattern Matcher")."""

from ._patterns import match_choice, normalize_answer

__all__ = ["match_choice", "normalize_answer"]
