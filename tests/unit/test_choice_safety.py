"""The safety rule of the choice pattern path (issue 13), as properties and as a table.

Properties: any clear pick wrapped in a negation, a question, a past reference
or sarcasm never produces ``execute`` for that pick (and, except for
negations of an approval — which are rejections — nothing is executed at
all). The table is written from the categories of issue 13 (not from any
held-out answer), in Japanese and English: mentioned-not-chosen numbers,
trailing negations, approvals of something else, double negatives, clear
answers that must act (hesitation fillers, corrections, "both of the first
N"), and confirm questions that never propose a refused option.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tandem.messages.choice import ChoiceContext, ChoiceResult
from tandem.services.choice import CAP_UNEXPLAINED, analyse, match_choice

EXECUTE = 0.8  # the default acting threshold (config choice.execute_threshold)

JP3 = ChoiceContext(available_options=["ファイル作成", "安全モード実行", "完全実行"])
EN5 = ChoiceContext(available_options=["Lint", "Test", "Build", "Package", "Deploy"])
ENAPP = ChoiceContext(available_options=["Approve", "Reject"], kind="approval")
PLAN = ChoiceContext(available_options=["承認", "却下", "修正要求"], kind="approval")
EN3 = ChoiceContext(available_options=["Create the file", "Run in safe mode", "Full run"])


def acts(result: ChoiceResult | None) -> bool:
    """Whether the actor would act on the result (non-critical risk, default thresholds)."""
    return (result is not None and bool(result.selected_options) and not result.clarification_needed
            and result.confidence >= EXECUTE)


# (context, the pick's text, the option it names); each one alone is acted on
PICKS = [
    (JP3, "2", 2), (JP3, "2番", 2), (JP3, "二番目", 2), (JP3, "2つ目", 2), (JP3, "安全モード実行", 2),
    (JP3, "option 2", 2), (JP3, "the second one", 2), (JP3, "No.3", 3), (JP3, "最後の", 3),
    (EN5, "Test", 2), (EN5, "option two", 2), (EN5, "the fourth one", 4), (EN5, "4", 4), (EN5, "#5", 5),
    (ENAPP, "approve", 1), (ENAPP, "yes", 1), (PLAN, "承認", 1), (PLAN, "はい", 1),
]

NEGATIONS = [
    "not {p}", "don't pick {p}", "I don't want {p}", "never {p}", "{p}, not", "{p} - no.", "{p} is not it",
    "{p}じゃない", "{p}はやめて", "{p}はいらない", "{p}はダメ", "{p}は嫌です", "{p}、だめ", "{p}じゃなくて",
]
QUESTIONS = [
    "{p}?", "is it {p}?", "should I pick {p}?", "what about {p}?", "{p}ですか？", "{p}でいいの？", "{p}って何？",
    "{p}はどうなるの？", "why {p}?",
]
PAST = [
    "last time I picked {p}", "I chose {p} yesterday", "previously {p}", "{p} was what I used last time",
    "前回は{p}だった", "昨日{p}を選んだ", "この前{p}にしたら失敗した", "以前{p}でした",
]
SARCASM = [
    "as if I'd pick {p}", "{p}, yeah right", "yeah right, {p}", "like I would choose {p}", "{p}? in your dreams",
    "{p}なわけない", "{p}にするわけないでしょ", "{p}とかありえない", "まさか{p}", "{p}でいいはずがない",
]
DECORATIONS = ["", "please ", "えっと、", "ok so ", "うーん、"]
ENDINGS = ["", " please", "。", "!", " お願いします"]


def _check_never_acts(template: str, ctx: ChoiceContext, pick: str, option: int, prefix: str, suffix: str,
                      *, nothing: bool) -> None:
    answer = prefix + template.format(p=pick) + suffix
    result = match_choice(answer, ctx)
    assert not (acts(result) and option in result.selected_options), (answer, result)
    if nothing:
        assert not acts(result), (answer, result)


@pytest.mark.parametrize(("ctx", "pick", "option"), PICKS)
def test_every_pick_alone_is_acted_on(ctx: ChoiceContext, pick: str, option: int) -> None:
    """The properties below start from picks that act when given alone."""
    r = match_choice(pick, ctx)
    assert acts(r) and r.selected_options == [option], r


_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(st.sampled_from(PICKS), st.sampled_from(NEGATIONS), st.sampled_from(DECORATIONS), st.sampled_from(ENDINGS))
def test_negated_pick_is_never_executed(pick, template, prefix, suffix) -> None:
    ctx, text, option = pick
    # a negated approval is a rejection (acted on); a negated option chooses nothing
    _check_never_acts(template, ctx, text, option, prefix, suffix, nothing=ctx.kind == "options")


@_settings
@given(st.sampled_from(PICKS), st.sampled_from(QUESTIONS), st.sampled_from(DECORATIONS))
def test_pick_in_a_question_is_never_executed(pick, template, prefix) -> None:
    ctx, text, option = pick
    _check_never_acts(template, ctx, text, option, prefix, "", nothing=True)


@_settings
@given(st.sampled_from(PICKS), st.sampled_from(PAST), st.sampled_from(DECORATIONS), st.sampled_from(ENDINGS))
def test_pick_in_a_past_reference_is_never_executed(pick, template, prefix, suffix) -> None:
    ctx, text, option = pick
    _check_never_acts(template, ctx, text, option, prefix, suffix, nothing=True)


@_settings
@given(st.sampled_from(PICKS), st.sampled_from(SARCASM), st.sampled_from(DECORATIONS), st.sampled_from(ENDINGS))
def test_sarcastic_pick_is_never_executed(pick, template, prefix, suffix) -> None:
    ctx, text, option = pick
    _check_never_acts(template, ctx, text, option, prefix, suffix, nothing=True)


@_settings
@given(st.sampled_from(PICKS), st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=4, max_size=9))
def test_unexplained_word_caps_below_acting(pick, word) -> None:
    """The totality rule: an unknown word next to a clear pick never lets it act."""
    ctx, text, _option = pick
    answer = f"{text} {word}zq"  # "zq": never a lexicon word
    out = analyse(answer, ctx)
    assert not acts(out.result), (answer, out.result)
    if out.result is not None and out.result.selected_options:
        assert out.result.confidence <= CAP_UNEXPLAINED
        assert any(w.endswith("zq") for w in out.unexplained)


@_settings
@given(st.sampled_from(PICKS), st.sampled_from(NEGATIONS + QUESTIONS + PAST + SARCASM))
def test_refused_or_mentioned_option_is_never_selected_with_confidence(pick, template) -> None:
    ctx, text, option = pick
    out = analyse(template.format(p=text), ctx)
    if option in out.refused and out.result is not None:
        assert option not in out.result.selected_options


# --------------------------------------------------------------------------- the table (issue 13 categories)

# numbers that are mentioned, not chosen: never acted on as a choice of that number
MENTIONED = [
    (JP3, "3人で使うので", 3), (JP3, "10分以内に終わるやつ", None), (JP3, "-1", 1), (JP3, "+2", 2),
    (EN5, "I have 3 kids", 3), (EN5, "in 2 minutes", 2), (EN5, "-3", 3), (EN5, "version 2.5", 2),
    (EN5, "last time I went with 4", 4), (EN5, "4 was a mistake", 4), (JP3, "前回は1番でした", 1),
    (EN5, "2 is better than 3", 3), (JP3, "3より2の方がいい", 3),
]


@pytest.mark.parametrize(("ctx", "answer", "option"), MENTIONED)
def test_mentioned_numbers_are_not_chosen(ctx: ChoiceContext, answer: str, option: int | None) -> None:
    r = match_choice(answer, ctx)
    if option is not None:
        assert r is None or option not in r.selected_options or not acts(r), r
        assert r is None or option not in r.selected_options, r
    assert not acts(r) or (r.confidence <= CAP_UNEXPLAINED), r


# a negation after the number it negates (English), sarcasm, double negatives
NEVER_ACT = [
    (EN5, "2, not"), (EN5, "3 no"), (EN5, "option 4? no."), (EN5, "2 is not what I want"), (EN5, "4, never"),
    (EN5, "deploy, definitely not"), (JP3, "2番、だめ"), (JP3, "1番、いや"),
    (EN5, "as if"), (EN5, "yeah right, 2"), (JP3, "2番なわけない"), (JP3, "完全実行とかありえない"),
    (ENAPP, "I wouldn't say no"), (ENAPP, "don't not run it"), (ENAPP, "not no"), (PLAN, "ダメじゃない"),
    (PLAN, "やめなくていい"), (PLAN, "承認しないわけじゃない"), (PLAN, "却下しないでもない"),
    (JP3, "3番は実行しないで"), (JP3, "2を実行しない"), (EN5, "not deplyo"), (EN5, "deplyo? as if"),
    (EN5, "the least safe one"),
    (ENAPP, "yeah right"), (ENAPP, "approve? as if"), (PLAN, "承認するわけないでしょ"),
]


@pytest.mark.parametrize(("ctx", "answer"), NEVER_ACT)
def test_never_acted_on(ctx: ChoiceContext, answer: str) -> None:
    r = match_choice(answer, ctx)
    assert not acts(r), r


# an approval verb whose object is something other than the plan: confirm at most
OTHER_OBJECT = [
    (ENAPP, "approve the budget first"), (ENAPP, "run the tests"), (ENAPP, "go to the docs"),
    (PLAN, "テストを実行して"), (PLAN, "別のプランを承認"), (ENAPP, "I approve of your attitude"),
]


@pytest.mark.parametrize(("ctx", "answer"), OTHER_OBJECT)
def test_approval_of_something_else_is_not_acted_on(ctx: ChoiceContext, answer: str) -> None:
    out = analyse(answer, ctx)
    assert not acts(out.result), out.result
    assert out.result is None or out.unexplained or out.result.clarification_needed


# clear answers that must act: hesitation fillers, corrections, "both of the first N"
CLEAR = [
    (JP3, "えーと、2番", [2]), (JP3, "うーん、2番で", [2]), (EN5, "um, 3", [3]), (EN5, "hmm, option 2 please", [2]),
    (EN5, "well, 4", [4]), (JP3, "あのー、最初のやつ", [1]),
    (EN5, "not 2 but 3", [3]), (EN5, "2, no wait, 3", [3]), (EN5, "just kidding, 4", [4]),
    (EN5, "kidding — 5", [5]), (JP3, "1じゃなくて3", [3]), (JP3, "冗談、3番で", [3]), (JP3, "やっぱり2番", [2]),
    (EN5, "both of the first two", [1, 2]), (EN5, "both of the last two", [4, 5]), (JP3, "最初の2つ両方", [1, 2]),
    (EN5, "actually, make that 4", [4]),
    # superlatives that name an option through its label or description
    (EN3, "the safest one", [2]), (EN3, "the fullest", [3]), (JP3, "一番安全なやつで", [2]), (JP3, "いちばん安全なの", [2]),
    # a typo in a label
    (EN5, "deplyo", [5]), (EN5, "tset and biuld", [2, 3]), (JP3, "ファイル作製", [1]), (JP3, "安全モード実効で", [2]),
]


@pytest.mark.parametrize(("ctx", "answer", "expected"), CLEAR)
def test_clear_answers_act(ctx: ChoiceContext, answer: str, expected: list[int]) -> None:
    r = match_choice(answer, ctx)
    assert acts(r) and r.selected_options == expected, r


# exclusions are refused and never proposed
EXCLUDED = [
    (EN5, "everything except 3", [1, 2, 4, 5], {3}), (EN5, "all but the last", [1, 2, 3, 4], {5}),
    (JP3, "2以外", [1, 3], {2}), (JP3, "1はいらない、残り全部", [2, 3], {1}), (EN5, "1 and 2, not 3", [1, 2], {3}),
    (EN5, "all except 2, if that's ok", [1, 3, 4, 5], {2}),
    (EN5, "2番はいいけど、3番は実行しないで", [2], {3}), (EN5, "don't run 3, just 1 and 2", [1, 2], {3}),
]


@pytest.mark.parametrize(("ctx", "answer", "expected", "refused"), EXCLUDED)
def test_exclusions_are_refused(ctx: ChoiceContext, answer: str, expected: list[int], refused: set[int]) -> None:
    out = analyse(answer, ctx)
    assert out.result is not None and out.result.selected_options == expected, out.result
    assert refused <= out.refused
    assert not refused & set(out.result.selected_options)


@pytest.mark.parametrize(("answer", "expected"), [
    ("Test packagzq", False), ("packagzq", False), ("test deployxx", False), ("deployqq", False),
    ("Test packages", True), ("the packaged one", True), ("build deploys", True),
])
def test_a_keyword_counts_with_an_inflection_not_with_any_letters(answer: str, expected: bool) -> None:
    """A label's stem followed by arbitrary letters is an unexplained word, not the label (hypothesis found it)."""
    assert acts(match_choice(answer, EN5)) is expected
