"""The lexicon: every word the grammar knows, in one ordered table, and its fast finder.

The English (:mod:`._lexicon_en`) and Japanese (:mod:`._lexicon_ja`) entries
share names; :data:`ORDER` fixes which entry wins when two can start at the
same position (the first listed: "no problem" before "no", "yeah right"
before "yeah"). :func:`finditer` yields the matches of the combined table
through a two-character dispatch: one character class finds candidate
positions, and the first two characters there pick a regex of only the
entries — and within an entry only the alternatives — that can start with
them (:func:`._firstchars.first_pairs`, precomputed in :mod:`._lexicon_table`;
each regex is compiled on first use, so importing this module compiles
nothing big).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from . import _lexicon_en as en
from . import _lexicon_ja as ja

__all__ = ["ORDER", "entries", "factor", "filler_en", "filler_ja", "finditer", "master", "matches", "table_source",
           "write_table"]

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


def _candidates(chars: list[str]) -> str:
    """A regex for the positions where an entry starting with one of ``chars`` may match: the guard, inverted.

    :data:`_GUARD` passes at a character that is no space and either no
    ASCII letter or a letter that starts a word; so a candidate is one of the
    other characters anywhere, or one of the letters after no letter, digit or
    apostrophe. Letters inside words (most characters of English text) fail at
    the character class, before any lookbehind (a unit test checks that both
    find the same positions).
    """

    def cls(cs: list[str]) -> str:
        return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in cs) + "]"

    letters = [c for c in chars if "a" <= c <= "z"]
    other = [c for c in chars if not "a" <= c <= "z" and c != " "]
    if not letters:
        return cls(other) if other else "(?!)"
    # one character class first (the regex engine skips to the next listed character in C), then a letter
    # must not follow a letter, digit or apostrophe; ``[other]|(?<![a-z0-9'])[letters]`` reads the same but
    # starts with a branch, which the engine tries at every position
    return cls(other + letters) + r"(?<![a-z0-9']" + cls(letters) + ")"


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


def _structure(pattern: str) -> Iterator[tuple[int, str, int]]:
    """Yield ``(index, char, depth)`` for every ``(``, ``)`` and ``|`` of ``pattern`` outside escapes and
    character classes; ``depth`` is the group depth after the character."""
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 2 if pattern[i + 1 : i + 2] == "]" else 1
            while pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif ch in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[ch]
            yield i, ch, depth
        i += 1


def _branches(pattern: str) -> list[str]:
    """The top-level alternatives of ``pattern``, a group that wraps a whole alternative opened up."""
    out: list[str] = []
    cur = 0
    for i, ch, depth in _structure(pattern):
        if ch == "|" and depth == 0:
            out.append(pattern[cur:i])
            cur = i + 1
    out.append(pattern[cur:])
    if len(out) == 1:
        b = out[0]
        if b.startswith("(?:") and b.endswith(")") and _closes_at_end(b):
            inner = _branches(b[3:-1])
            if len(inner) > 1:
                return inner
        return out
    return [x for b in out for x in (_branches(b) if b.startswith("(?:") else [b])]


def _closes_at_end(b: str) -> bool:
    """Whether the group opened at ``b[0]`` closes at the last character."""
    for i, ch, depth in _structure(b):
        if ch == ")" and depth == 0:
            return i == len(b) - 1
    return False


_GROUP_NAME: Final = re.compile(r"\(\?P<(\w+)>")
_KEYS_KEPT: Final = 8192  # two-character keys remembered (their regexes are shared: one per distinct set of entries)


def _table_row(name: str, pattern: str) -> tuple[str, str, tuple[tuple[str, dict[str, str | None]], ...]]:
    """(name, pattern, branches with their first two characters) of one entry."""
    from ._firstchars import first_pairs

    rows = []
    for b in _branches(pattern):
        pairs = first_pairs(b)
        rows.append((b, {c: None if f is None else "".join(sorted(f)) for c, f in sorted(pairs.items())}))
    return name, pattern, tuple(rows)


def table_source() -> str:
    """The text of :mod:`._lexicon_table`: every entry's branches and their first two characters.

    Computing them takes longer than a ``tandem choose`` start-up can spare, so
    they are generated once, as JSON in a string (which compiles at once, where
    the same data as Python literals would take milliseconds on a start without
    cached bytecode); a unit test checks the module is current, and an entry
    whose pattern changed since is recomputed at first use.

    Examples
    --------
    Regenerate after editing a lexicon::

        .venv/bin/python -c "from tandem.services.choice._lexicon import write_table; write_table()"
    """
    import json

    rows = [json.dumps(_table_row(name, pattern), ensure_ascii=False) for name, pattern in entries()]
    text = "[\n" + ",\n".join(rows) + "\n]"
    if '"""' in text or "\r" in text:  # pragma: no cover - the raw string below could not hold it
        raise ValueError("the lexicon table cannot be written as a raw string")
    return ('"""Generated by ``_lexicon.write_table()`` from the lexicons — do not edit (a unit test checks it).\n\n'
            'TABLE: JSON, a list of ``[entry name, pattern, [[branch, {first character: following characters or '
            'null}], ...]]``.\n"""\n\nTABLE = r"""' + text + '"""\n')


def write_table() -> None:
    """Rewrite :mod:`._lexicon_table` from the lexicons."""
    from pathlib import Path

    Path(__file__).with_name("_lexicon_table.py").write_text(table_source(), encoding="utf-8")


class _Keys(dict):
    """Two-character key -> the regex to try there (``None``: no entry starts so); filled on first use."""

    __slots__ = ("finder",)

    def __init__(self, finder: _Finder) -> None:
        super().__init__()
        self.finder = finder

    def __missing__(self, key: str) -> re.Pattern[str] | None:
        return self.finder.dispatch(key)


class _Finder:
    """The compiled dispatch, built on first use.

    At a candidate position the first two characters pick the regex to try:
    only the entries, and within an entry only the alternatives, that can
    start with them (:func:`._firstchars.first_pairs`), in :data:`ORDER`.
    Dropping alternatives that cannot match there changes no match.
    """

    def __init__(self) -> None:
        import json

        from ._lexicon_table import TABLE

        self.alts = entries()
        stored = {name: (pattern, rows) for name, pattern, rows in json.loads(TABLE)}
        self.branches = []
        for name, pattern in self.alts:
            pattern_rows = stored.get(name)
            rows = pattern_rows[1] if pattern_rows is not None and pattern_rows[0] == pattern else \
                _table_row(name, pattern)[2]  # edited since the table was generated
            self.branches.append([(b, {c: None if f is None else frozenset(f) for c, f in pairs.items()})
                                  for b, pairs in rows])
        chars = sorted({c for rows in self.branches for _, pairs in rows for c in pairs})
        self.candidate = re.compile(_candidates(chars), re.ASCII)
        # the candidates the guard always passes at (no letter, no space): the character alone tells
        self.plain = frozenset(c for c in chars if not "a" <= c <= "z" and c != " ")
        self.groups = [_GROUP_NAME.findall(p) for _, p in self.alts]
        self.by_key = _Keys(self)
        self.by_body: dict[str, re.Pattern[str]] = {}
        self._master: re.Pattern[str] | None = None

    def compile(self, idx: tuple[int, ...]) -> re.Pattern[str]:
        body = "|".join(f"(?P<{self.alts[i][0]}>{self.alts[i][1]})" for i in idx)
        return re.compile(_GUARD + "(?:" + body + ")", re.ASCII)

    def dispatch(self, key: str) -> re.Pattern[str] | None:
        """The regex for a candidate position whose text starts with ``key`` (two characters, one at the end).

        Only for positions :attr:`candidate` finds: the regex leaves out :data:`_GUARD`, which passes there.
        """
        if key in self.by_key:
            return self.by_key[key]
        if len(self.by_key) >= _KEYS_KEPT:  # arbitrary text brings arbitrary pairs: stay bounded
            self.by_key.clear()
        c = key[0]
        second = key[1:]
        parts = []
        for (name, _), branches, groups in zip(self.alts, self.branches, self.groups, strict=True):
            keep = []
            for b, pairs in branches:
                if c in pairs:
                    follow = pairs[c]
                    if follow is None or not second or second in follow:
                        keep.append(b)
            if keep:
                present = set(_GROUP_NAME.findall("|".join(keep)))
                missing = [g for g in groups if g != name and g not in present]
                keep += [f"(?!)(?P<{g}>)" for g in missing]  # never match; keep group names valid
                parts.append(f"(?P<{name}>{'|'.join(keep)})")
        rx = None
        if parts:  # no _GUARD: the candidate regex found the position where it passes
            body = "|".join(parts)
            rx = self.by_body.get(body)
            if rx is None:
                rx = self.by_body[body] = re.compile(body, re.ASCII)
        self.by_key[key] = rx
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
    can start with the two characters at a candidate position are tried there.
    """
    return iter(matches(text))


def matches(text: str) -> list[re.Match[str]]:
    """:func:`finditer` as a list (the scanner's form: no generator to resume per match)."""
    f = _finder or _get()
    by_key = f.by_key  # a key seen for the first time is dispatched by _Keys.__missing__
    search = f.candidate.search  # from the end of the last match: candidates inside a match are never seen
    plain = f.plain
    last = len(text) - 1
    out: list[re.Match[str]] = []
    pos = 0
    while (c := search(text, pos)) is not None:
        p = c.start()
        rx = by_key[text[p : p + 2]]
        while rx is None and p < last and text[p + 1] in plain:
            # no entry starts with these two characters, and the next one is a candidate the guard passes at
            # (as in a run of kanji and kana): it is the next candidate, found without a search
            p += 1
            rx = by_key[text[p : p + 2]]
        if rx is None or (mo := rx.match(text, p)) is None:
            pos = p + 1
        else:
            out.append(mo)
            pos = mo.end()
            if pos == p:  # pragma: no cover - no entry matches the empty string
                pos += 1
    return out


def master() -> re.Pattern[str]:
    """The whole lexicon as one regex (the reference :func:`finditer` must agree with)."""
    return _get().master


_FILL_EN: re.Pattern[str] | None = None
_FILL_JA: re.Pattern[str] | None = None


_META: Final = frozenset("\\.^$*+?{}[]()|")


def factor(pattern: str) -> str:
    """``pattern`` with its alternatives grouped by their first character: the same matches, found faster.

    At a position only the alternatives that start with the character there
    can match, and they keep their order, so the first to match is the same
    one; the regex engine then checks one character per group instead of one
    per alternative. A pattern with an alternative that does not start with a
    plain character is returned unchanged.

    Examples
    --------
    >>> factor("ab|c|ad")
    'a(?:b|d)|c(?:)'
    """
    groups: dict[str, list[str]] = {}
    for b in _branches(pattern):
        if not b or b[0] in _META or b[1:2] in ("*", "+", "?", "{"):
            return pattern
        groups.setdefault(b[0], []).append(b[1:])
    return "|".join(f"{c}(?:{'|'.join(rests)})" for c, rests in groups.items())


def filler_en() -> re.Pattern[str]:
    """English words that are grammar without a decision ("the", "please", "I'd")."""
    global _FILL_EN
    if _FILL_EN is None:
        body = en.FILLERS
        if body.startswith(r"\b(?:") and body.endswith(r")\b") and _closes_at_end(body[2:-2]):
            body = r"\b(?:" + factor(body[5:-3]) + r")\b"
        _FILL_EN = re.compile(body, re.ASCII)
    return _FILL_EN


def filler_ja() -> re.Pattern[str]:
    """Japanese particles, politeness and choosing verbs ("を", "お願いします", "にします")."""
    global _FILL_JA
    if _FILL_JA is None:
        _FILL_JA = re.compile(factor(ja.FILLERS))
    return _FILL_JA
