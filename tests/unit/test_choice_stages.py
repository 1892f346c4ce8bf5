"""Each stage of the choice pattern path on its own: first characters, lexicon, scanner, clauses, decision, fast lane."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tandem.messages.choice import ChoiceContext
from tandem.services.choice import (
    _lexicon,
    _lexicon_en,
    _lexicon_ja,
    analyse,
    normalize_answer,
)
from tandem.services.choice._clauses import Flag, Role, read
from tandem.services.choice._firstchars import first_chars, first_pairs
from tandem.services.choice._options import index_for
from tandem.services.choice._pipeline import fast_lane
from tandem.services.choice._scanner import scan
from tandem.services.choice._tokens import Kind, Src

from .test_choice_patterns import EN5, JP3, PLAN, _all_answers
from .test_choice_safety import CLEAR, EXCLUDED, MENTIONED, NEVER_ACT

# --------------------------------------------------------------------------- first characters


@pytest.mark.parametrize(("pattern", "chars"), [
    (r"\b(?:yes|ok)\b|はい", "oyは"),
    (r"(?:option\s*)?\d", "o0123456789"),
    (r"[a-c]x|y?z", "abcyz"),
    (r"(?<=[、,])ただ|でも(?=[、,])", "たで"),
    (r"(?P<n>第|案)?[一二]", "第案一二"),
    (r"x{0,2}y", "xy"),
    (r"\?", "?"),
])
def test_first_chars(pattern: str, chars: str) -> None:
    assert first_chars(pattern) == frozenset(chars)


@pytest.mark.parametrize("pattern", [r"a?", r".x", r"[^a]b", r"(?i)x", r"(a)\1"])
def test_first_chars_refuses_what_it_cannot_bound(pattern: str) -> None:
    with pytest.raises(ValueError):
        first_chars(pattern)


def test_first_chars_cover_every_match() -> None:
    """Soundness on the real lexicon: every match in every tested answer starts with a listed character."""
    alts = _lexicon.entries()
    firsts = {name: first_chars(p) for name, p in alts}
    for _ctx, answer in _all_answers():
        s = normalize_answer(answer)
        for mo in _lexicon.master().finditer(s):
            assert s[mo.start()] in firsts[mo.lastgroup], (answer, mo.lastgroup)


@pytest.mark.parametrize(("pattern", "pairs"), [
    (r"\b(?:yes|ok)\b|は[いあ]", {"y": "e", "o": "k", "は": "いあ"}),
    (r"a?b|c\s*d", {"a": "b", "b": None, "c": " \t\n\r\x0c\x0bd"}),
    (r"x(?=y)z|\?", {"x": "z", "?": None}),
    (r"(?P<n>第|案)?[一二]+", {"第": "一二", "案": "一二", "一": None, "二": None}),
    (r"x.", {"x": None}),
])
def test_first_pairs(pattern: str, pairs: dict) -> None:
    assert first_pairs(pattern) == {c: None if s is None else frozenset(s) for c, s in pairs.items()}


def test_first_pairs_cover_every_match() -> None:
    """Soundness on the real lexicon: every match starts with two characters its entry lists."""
    pairs = {name: first_pairs(p) for name, p in _lexicon.entries()}
    for _ctx, answer in _all_answers():
        s = normalize_answer(answer)
        for mo in _lexicon.master().finditer(s):
            follow = pairs[mo.lastgroup][s[mo.start()]]
            assert follow is None or mo.end() - mo.start() < 2 or s[mo.start() + 1] in follow, (answer, mo.lastgroup)


# --------------------------------------------------------------------------- lexicon


def test_lexicon_names_are_ordered_and_complete() -> None:
    names = [n for n, _ in _lexicon.entries()]
    assert names == list(_lexicon.ORDER)
    assert set(_lexicon_en.ENTRIES) <= set(names) and set(_lexicon_ja.ENTRIES) <= set(names)


def test_lexicon_compiles_nothing_at_import() -> None:
    """Importing must stay cheap for the CLI: the dispatch is built on first use."""
    import importlib
    import sys

    code = ("import sys; import tandem.services.choice._lexicon as L; "
            "sys.exit(0 if L._finder is None else 1)")
    import subprocess

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    importlib.import_module("tandem.services.choice")


@pytest.mark.parametrize(("text", "name"), [
    ("yeah right", "sarcasm"), ("as if", "sarcasm"), ("わけない", "sarcasm"), ("ないでしょ", "sarcasm"),
    ("last time", "past"), ("前回", "past"), ("だった", "past"), ("than", "compare"), ("より", "compare"),
    ("just kidding", "correct"), ("冗談、", "correct"), ("前回と同じ", "same"), ("no problem", "yesneg"),
    ("2にしました", "num"),
])
def test_lexicon_entry_wins_at_its_position(text: str, name: str) -> None:
    mo = next(_lexicon.finditer(text))
    assert mo.lastgroup == name and mo.start() == 0


# --------------------------------------------------------------------------- scanner


@pytest.mark.parametrize(("ctx", "answer", "kinds"), [
    (JP3, "1と3番", [(Kind.REF, Src.NUMBER, 1), (Kind.REF, Src.NUMBER, 3)]),
    (JP3, "ファイル作成だけ", [(Kind.REF, Src.LABEL, 1), (Kind.ONLY, Src.NONE, None)]),
    (EN5, "1-3", [(Kind.RANGE, Src.NONE, (1, 3))]),
    (EN5, "the first two", [(Kind.FIRSTN, Src.NONE, 2)]),
    (EN5, "-1", []),  # a signed number is no option
    (EN5, "3 files", []),  # a quantity
    (EN5, "version 2.5", []),
    (JP3, "一番安全なやつ", [(Kind.SUPERLATIVE, Src.NONE, None), (Kind.REF, Src.KEYWORD, 2)]),  # not option 1
    (PLAN, "skip step 3", [(Kind.NEG, Src.NONE, None), (Kind.PLANREF, Src.NONE, None)]),
])
def test_scanner_tokens(ctx: ChoiceContext, answer: str, kinds: list) -> None:
    toks = scan(normalize_answer(answer), index_for(ctx))
    assert [(t.kind, t.src, t.val) for t in toks] == kinds


def test_tokens_are_enums() -> None:
    toks = scan("not 2 but 3", index_for(EN5))
    assert all(isinstance(t.kind, Kind) and isinstance(t.src, Src) for t in toks)


# --------------------------------------------------------------------------- clauses


def _read(ctx: ChoiceContext, answer: str):
    idx = index_for(ctx)
    s = normalize_answer(answer)
    return read(s, s, scan(s, idx), idx.approval, idx.n)


def test_clause_roles() -> None:
    r = _read(JP3, "1番だけど、バックアップ取って")
    assert [(c.flag, c.role) for c in r.clauses] == [(Flag.MAIN, Role.ACTIVE), (Flag.COND, Role.MOD)]
    assert r.mods == ["バックアップ取って"]
    r = _read(JP3, "2番が安全だから")
    assert [(c.flag, c.role) for c in r.clauses] == [(Flag.REASON, Role.ACTIVE)] and r.unexplained == []


def test_negation_scope_english_right_japanese_left() -> None:
    r = _read(EN5, "not 2 but 3")
    neg = {t.val for t in r.act if t.kind is Kind.REF and t.neg is not None}
    assert neg == {2}
    r = _read(EN5, "2じゃなくて3")
    assert {t.val for t in r.act if t.kind is Kind.REF and t.neg is not None} == {2}


def test_past_and_comparison_make_mentions() -> None:
    r = _read(EN5, "last time I picked 2, now 3")
    assert r.mentioned == {2} and any("past reference" in g for g in r.cap_guards)
    r = _read(EN5, "2 is better than 3")
    assert r.mentioned == {3} and any("comparison" in g for g in r.cap_guards)


def test_correction_drops_what_came_before() -> None:
    r = _read(EN5, "2, just kidding, 4")
    assert [t.val for t in r.act if t.kind is Kind.REF] == [4]


@pytest.mark.parametrize("answer", ["don't not run it", "I wouldn't say no", "ダメじゃない"])
def test_double_negative(answer: str) -> None:
    assert _read(PLAN, answer).double_neg is not None


def test_trailing_negation_refuses_the_choice() -> None:
    r = _read(EN5, "2, not")
    assert r.refused == {2} and r.guards


# --------------------------------------------------------------------------- decision and fast lane


def test_unexplained_words_are_reported() -> None:
    out = analyse("2 for the quarterly reports", EN5)
    assert out.result is not None and out.result.selected_options == [2] and out.result.confidence <= 0.75
    assert "quarterly" in out.unexplained and "reports" in out.unexplained


def test_fast_lane_agrees_with_the_full_pipeline() -> None:
    """The fast lane is an optimisation only: where it decides, it decides as every stage would."""
    cases = _all_answers() + [(c, a) for c, a, *_ in CLEAR + EXCLUDED + MENTIONED] + [(c, a) for c, a in NEVER_ACT]
    taken = 0
    for ctx, answer in cases:
        idx = index_for(ctx)
        s = normalize_answer(answer)
        quick = fast_lane(s, scan(s, idx), idx)
        if quick is None:
            continue
        taken += 1
        full = analyse(answer, ctx, lane=False)
        got = (quick.selected_options, quick.confidence, quick.extracted_intent, quick.modifications)
        want = (full.result.selected_options, full.result.confidence, full.result.extracted_intent,
                full.result.modifications)
        assert got == want and not full.result.clarification_needed, (answer, quick, full.result)
        assert not full.refused and not full.guards and not full.unexplained, answer
    assert taken >= 100  # it does cover the common answers


_LANE_PIECES = [
    "1", "2", "3", "4", "7", "12", "0", "1と3", "2 and 4", "1, 3", "3、1", "2&5", "1and3", " and 2", "個目", "号", "第", "案", "番", "番目", "つ目", "option ", "#", "no.", "No. ", "と", " and ", ", ",
    "、", "や", "&", "+", " or ", "か", "で", "です", "お願いします", " please", "!", "。", ".", "?", " ", "全部", "both",
    "all", "the last one", "最初の2つ", "first two", "the second", "はい", "いいえ", "yes", "no", "ok", "承認", "却下",
    "cancel", "やめて", "only ", "だけ", "lint", "test", "deploy", "ファイル作成", "完全実行", "-", "~", "から", "to ", "まで",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_LANE_PIECES), min_size=1, max_size=4),
       st.sampled_from([JP3, EN5, PLAN, ChoiceContext(available_options=["Python 3.11", "Python 3.12"]),
                        ChoiceContext(available_options=["Approve", "Reject"], kind="approval"),
                        ChoiceContext(available_options=["Option", "and", "番目のやつ"]),  # labels a list could hold
                        ChoiceContext(available_options=["x", "y", "z"], option_descriptions=["opt in", "個目", "tap"])]))
def test_fast_paths_give_the_full_pipelines_result(pieces: list[str], ctx: ChoiceContext) -> None:
    """The bare-number path and the fast lane are optimisations only: the same result, reasoning included."""
    answer = "".join(pieces)
    fast, full = analyse(answer, ctx), analyse(answer, ctx, lane=False)
    assert fast.result == full.result, answer
    assert (fast.refused, fast.guards, fast.unexplained) == (full.refused, full.guards, full.unexplained), answer


@pytest.mark.parametrize(("answer", "ctx"), [
    ("3, だけ", JP3), ("only 、3", EN5), ("first two。only ", EN5), ("だけ、最初の2つ", JP3),  # "only" in a clause of its own
    ("3 please", EN5), ("3番目です", JP3), ("No. 2お願いします", JP3),  # the bare-number path names the number token
    ("1と3", JP3), ("2 and 4", EN5), ("1, 3番", JP3), ("1と1", JP3), ("1and3", EN5), ("1と5", JP3),  # lists of numbers
    ("option 1 and option 3", ChoiceContext(available_options=["Option", "and", "番目のやつ"])),
])
def test_fast_paths_agree_where_they_once_did_not(answer: str, ctx: ChoiceContext) -> None:
    assert analyse(answer, ctx).result == analyse(answer, ctx, lane=False).result


def test_no_private_stdlib_api() -> None:
    from pathlib import Path

    import tandem.services.choice as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"re\._|sre_parse|sre_compile|_constants", text), path.name


def test_lexicon_table_is_current() -> None:
    """The generated first-two-character table matches the lexicons (regenerate with ``_lexicon.write_table()``)."""
    from pathlib import Path

    path = Path(_lexicon.__file__).with_name("_lexicon_table.py")
    assert path.read_text(encoding="utf-8") == _lexicon.table_source()


def test_factored_fillers_remove_the_same_text() -> None:
    """The filler regexes are grouped by first character (speed only): same substitutions as written."""
    plain_en = re.compile(_lexicon_en.FILLERS, re.ASCII)
    plain_ja = re.compile(_lexicon_ja.FILLERS)
    assert _lexicon.filler_en().pattern != plain_en.pattern and _lexicon.filler_ja().pattern != plain_ja.pattern
    for _ctx, answer in _all_answers():
        s = normalize_answer(answer)
        assert _lexicon.filler_en().sub(" ", s) == plain_en.sub(" ", s), answer
        assert _lexicon.filler_ja().sub(" ", s) == plain_ja.sub(" ", s), answer


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(",、;。.!:()[]「」『』— -\tab1あ_")), max_size=14))
def test_rewritten_clause_regexes_match_as_written(text: str) -> None:
    """The clause stage's punctuation and two-word regexes are rewritten for speed: same matches."""
    from tandem.services.choice._clauses import _PUNCT_RE, _TWO_WORDCH

    plain = re.compile(r"[,、;。.!:()\[\]「」『』—]+|\s-\s")
    assert [m.span() for m in _PUNCT_RE.finditer(text)] == [m.span() for m in plain.finditer(text)]
    assert (_TWO_WORDCH.search(text) is not None) == (len(re.findall(r"\w", text)) >= 2)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(",、。 .!-_a1Zé二あ①→★\u3000\ue000\t")), max_size=8))
def test_word_character_checks_without_a_regex(text: str) -> None:
    """The clause stage tells "no word character" and "two word characters" without a regex when it can:
    the same answers as ``\\w``."""
    from tandem.services.choice._clauses import _NON_WORD, _two_word_chars

    count = len(re.findall(r"\w", text))
    assert _two_word_chars(text) == (count >= 2)
    assert (not text.strip(_NON_WORD)) <= (count == 0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abnoty '1,-#?はいや番目二、 A_")), max_size=16))
def test_lexicon_candidates_are_where_the_guard_passes(text: str) -> None:
    """The finder's candidate regex (the guard inverted, for speed) finds the positions the guard passes at."""
    finder = _lexicon._get()
    chars = {c for rows in finder.branches for _, pairs in rows for c in pairs}
    guard = re.compile(_lexicon._GUARD, re.ASCII)
    want = [i for i, c in enumerate(text) if c in chars and guard.match(text, i)]
    assert [m.start() for m in finder.candidate.finditer(text)] == want


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("はいや後で説明しますのよろく残り一二番目1、。 ab?")), max_size=24))
def test_lexicon_matches_skip_runs_without_a_search(text: str) -> None:
    """The finder takes the next character of a run of kanji and kana as the next candidate without a search
    (the guard passes at every ``plain`` character): the matches are still the combined regex's."""
    finder = _lexicon._get()
    guard = re.compile(_lexicon._GUARD, re.ASCII)
    assert all(guard.match(c) for c in finder.plain)
    found = [(m.span(), m.lastgroup) for m in _lexicon.matches(text)]
    assert found == [(m.span(), m.lastgroup) for m in _lexicon.master().finditer(text)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(",、;。.!:()[]「」『』—- a二")), max_size=16))
def test_punctuation_runs(text: str) -> None:
    """The clause stage's punctuation regex for a text without " - " (written to start with a character
    class, for speed) finds the runs ``[…]+`` finds."""
    from tandem.services.choice._clauses import _PUNCT_ONLY

    runs = re.compile(r"[,、;。.!:()\[\]「」『』—]+")
    assert [m.span() for m in _PUNCT_ONLY.finditer(text)] == [m.span() for m in runs.finditer(text)]


def _uncovered_as_written(s: str, start: int, end: int, spans: list[tuple[int, int]]) -> str:
    parts, cur = [], start
    for a, b in spans:
        if a > cur:
            parts.append(s[cur:a])
        cur = max(cur, b)
        parts.append(" ")
    if end > cur:
        parts.append(s[cur:end])
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=5))
def test_uncovered_text_is_the_text_between_tokens(start: int, end: int, spans: list[tuple[int, int]]) -> None:
    """The clause stage's uncovered text (gaps joined by spaces, for speed) is the text as first written,
    for any spans: before the start, past the end, overlapping or nested."""
    from tandem.services.choice._clauses import _uncovered
    from tandem.services.choice._tokens import Token

    s = "abcdefghijkl"
    spans = sorted(spans)
    toks = [Token(Kind.REF, a, b) for a, b in spans]
    assert _uncovered(s, start, end, toks) == _uncovered_as_written(s, start, end, spans)
