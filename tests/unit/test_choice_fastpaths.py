"""The pattern path's fast paths against the full pipeline: same result, refusals, guards and unexplained words.

The fast paths (:func:`tandem.services.choice._pipeline.fast_lane` and the
single-reference readings) are optimisations only; these property tests build
answers from the pieces they take — numbers, ordinals, hedges, question marks,
negators, exclusions — and from pieces that must make them step aside.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tandem.messages.choice import ChoiceContext
from tandem.services.choice import analyse

from .test_choice_patterns import EN5, JP3, PLAN

_PIECES = [
    "1", "2", "3", "5", "9", "二番目", "the second", "the last one", "最初の2つ", "first two", "option 2", "3番", "2つ目",
    "maybe ", "maybe", "perhaps ", "probably ", "たぶん", "かな", "かも", "how about ", "?", "？", "? ", "only ", "だけ",
    "not ", "not", "don't want ", "以外", "except ", "all but ", "everything except ", "はいらない", "じゃない", "やめて",
    "は", "で", "と", " and ", " or ", "か", ", ", "、", "。", " ", "please", "お願いします", "thanks", "the", "lint",
    "ファイル作成", "all", "全部", "both", "yes", "no", "cancel", "idk", "last time ", "前回", "than ", "より",
    "but ", "けど", "actually ", "やっぱり", "as if ", "2 files", "-1", "3.12", "deplyo",
    "whatever", "うーん", "hmm", "up to you", "おまかせ", "not yet", "いいよ", "却下", "承認", "いいえ", "!",
]
_CONTEXTS = [JP3, EN5, PLAN, ChoiceContext(available_options=["Python 3.11", "Python 3.12"]),
             ChoiceContext(available_options=["Approve", "Reject"], kind="approval"),
             ChoiceContext(available_options=["Option", "and", "番目のやつ"]),
             ChoiceContext(available_options=["x", "y", "z"], option_descriptions=["opt in", "個目", "tap"]),
             ChoiceContext(available_options=["a", "b"]),
             ChoiceContext(available_options=["only", "maybe", "not"]),
             ChoiceContext(available_options=["Fast", "Safe (recommended)"]), ChoiceContext(available_options=["Go"])]


def _same(answer: str, ctx: ChoiceContext) -> None:
    fast, full = analyse(answer, ctx), analyse(answer, ctx, lane=False)
    assert fast.result == full.result, answer
    assert (fast.refused, fast.guards, fast.unexplained) == (full.refused, full.guards, full.unexplained), answer


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4), st.sampled_from(_CONTEXTS))
def test_fast_paths_give_the_full_pipelines_reading(pieces: list[str], ctx: ChoiceContext) -> None:
    _same("".join(pieces), ctx)


@pytest.mark.parametrize("answer", [
    "maybe 2", "2番かな", "how about 3", "2?", "perhaps the second", "1と3かな", "maybe 1 and 3", "only 2?",
    "maybe? 3", "1, maybe?", "2? 3", "2 maybe 3", "maybe all", "全部かな", "2??", "2? the", "2番?かな",
    "not 2", "2以外", "all but 2", "2はいらない", "not 2?", "maybe not 2", "2じゃない", "except 2", "not 2 but 3",
])
@pytest.mark.parametrize("ctx", _CONTEXTS)
def test_fast_paths_on_hedges_questions_and_negations(answer: str, ctx: ChoiceContext) -> None:
    _same(answer, ctx)


def test_hedged_and_asked_answers_take_the_fast_lane() -> None:
    from tandem.services.choice import normalize_answer
    from tandem.services.choice._options import index_for
    from tandem.services.choice._pipeline import fast_lane
    from tandem.services.choice._scanner import scan

    for answer, reasoning in [("maybe 2", "number '2' (hedged)"), ("2番かな", "number '2番' (hedged)"),
                              ("2?", "number '2' (asked as a question)")]:
        idx = index_for(JP3)
        s = normalize_answer(answer)
        quick = fast_lane(s, scan(s, idx), idx)
        assert quick is not None and quick.reasoning == reasoning and quick.confidence == 0.7, answer


@pytest.mark.parametrize(("answer", "selected", "refused"), [
    ("not 2", [], {2}), ("2はいらない", [], {2}), ("2じゃない", [], {2}),
    ("2以外", [1, 3], {2}), ("all but 2", [1, 3], {2}), ("except the second", [1, 3], {2}),
])
def test_one_refused_option_is_read_without_the_clause_stage(answer: str, selected: list[int], refused: set[int]) -> None:
    from tandem.services.choice import normalize_answer
    from tandem.services.choice._options import index_for
    from tandem.services.choice._pipeline import _refused_one
    from tandem.services.choice._scanner import scan

    idx = index_for(JP3)
    s = normalize_answer(answer)
    quick = _refused_one(s, scan(s, idx), idx.n)
    assert quick is not None and quick.result is not None, answer
    assert (quick.result.selected_options, quick.refused) == (selected, refused)
    _same(answer, JP3)


@pytest.mark.parametrize("answer", ["yes", "はい", "no", "cancel", "やめて", "not yet", "idk", "whatever", "うーん", "hmm",
                                    "up to you", "おまかせ", "please", "yes!", "、はい", "no.", "idk?"])
@pytest.mark.parametrize("ctx", _CONTEXTS)
def test_one_word_answers(answer: str, ctx: ChoiceContext) -> None:
    _same(answer, ctx)


@pytest.mark.parametrize(("answer", "selected", "intent"), [
    ("2", [2], "reject"), ("the second", [2], "reject"), ("二番目", [2], "reject"), ("1番", [1], "approve"),
    ("3", [3], "select 3"), ("no", [2], "reject"), ("not yet", [2], "reject"), ("cancel", [2], "reject"),
])
def test_approval_prompt_one_reference_or_refusal_takes_the_fast_lane(answer: str, selected: list[int],
                                                                     intent: str) -> None:
    from tandem.services.choice import normalize_answer
    from tandem.services.choice._options import index_for
    from tandem.services.choice._pipeline import fast_lane
    from tandem.services.choice._scanner import scan

    idx = index_for(PLAN)
    s = normalize_answer(answer)
    quick = fast_lane(s, scan(s, idx), idx)
    assert quick is not None and (quick.selected_options, quick.extracted_intent) == (selected, intent), answer
    _same(answer, PLAN)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["1", "23", "456", "option", "no.", "#", "第", "番", "番目", "つ目", "号", "案", " ",
                                 "と", "&", ",", "、", "and", "で", "です", "でお願いします", "please", ".", "!", "。",
                                 "x", "お願いします"]), min_size=1, max_size=12))
def test_fast_number_guards(pieces: list[str]) -> None:
    """The length and last-character guards before the bare-number regexes never skip a match of theirs."""
    from tandem.services.choice import _pipeline as p
    from tandem.services.choice._normalize import normalize_answer

    s = normalize_answer("".join(pieces))
    if not s:
        return
    body = s.rstrip(p._FAST_TAIL)
    if p._FAST.fullmatch(s) is not None:
        assert len(body) <= p._FAST_MAX
    if p._FAST_LIST.fullmatch(s) is not None:
        assert body[-1:] in p._FAST_LIST_LAST
