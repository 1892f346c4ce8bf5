"""Tests for ``tandem.services.choice.match_choice``, the fast pattern path of the choice parser.

Design note 001 is the specification: §5.1 (natural-language selections) and
§5.2 (plan approval phrases) are reproduced first, then every pattern family in
Japanese and English, the negation rules ("negation is never consent"),
out-of-range numbers, ambiguous answers, questions and conditions.
"""

from __future__ import annotations

import pytest
from tandem.messages.choice import ChoiceContext, ChoiceResult
from tandem.services.choice import match_choice, normalize_answer

CLARIFY = "clarify"  # expected: no selection, clarification_needed=True, confidence <= 0.3
NONE = "none"  # expected: None (the LLM path decides)

# --------------------------------------------------------------------------- contexts

JP3 = ChoiceContext(available_options=["ファイル作成", "安全モード実行", "完全実行"])
SAFE_FIRST = ChoiceContext(available_options=["安全モード実行", "ファイル作成", "完全実行"])
EN3 = ChoiceContext(available_options=["Create the file", "Run in safe mode", "Full run"])
EN5 = ChoiceContext(available_options=["Lint", "Test", "Build", "Package", "Deploy"])
TWO = ChoiceContext(available_options=["Keep the logs", "Delete the logs"])
PY = ChoiceContext(available_options=["Python 3.11", "Python 3.12"])
DESC = ChoiceContext(
    available_options=["Quick", "Careful", "Full"],
    option_descriptions=["Skip the slow checks", "Take a backup first, then apply", "Apply everything including migrations"],
)
REC = ChoiceContext(available_options=["最小構成", "標準構成（推奨）", "全部入り"])
PLAN = ChoiceContext(  # note 001 §2.3 LLMPlanApprovalHandler
    available_options=["承認", "却下", "修正要求"],
    option_descriptions=["プランをそのまま実行", "プランを実行しない", "プランの一部修正"],
    current_plan="ファイルA.pyを作成し、設定ファイルを更新する",
    kind="approval",
)
CRIT = ChoiceContext(available_options=["実行", "却下", "代替案選択", "詳細確認"], risk_level="critical", kind="approval")
ENAPP = ChoiceContext(available_options=["Approve", "Reject"], kind="approval")
YESNO = ChoiceContext(available_options=["はい", "いいえ"])  # kind "options": detected from the labels
RUNSKIP = ChoiceContext(available_options=["Run the migrations", "Skip"])


def check(ctx: ChoiceContext, answer: str, expected: object, min_conf: float = 0.0) -> ChoiceResult | None:
    result = match_choice(answer, ctx)
    if expected == NONE:
        assert result is None, result
        return None
    assert result is not None, f"{answer!r} was not resolved"
    assert result.decided_by == "pattern"
    assert result.action == "clarify" and result.question == ""  # the actor fills these in
    assert result.reasoning
    if expected == CLARIFY:
        assert result.selected_options == [], result
        assert result.clarification_needed, result
        assert result.confidence <= 0.3, result
    else:
        assert result.selected_options == expected, result
        assert not result.clarification_needed, result
        assert result.confidence >= min_conf, result
    assert result.selected_options == sorted(set(result.selected_options))
    assert all(1 <= v <= len(ctx.available_options) for v in result.selected_options)
    return result


# --------------------------------------------------------------------------- note 001 §5.1

SEED_CLEAR = [
    ("1番で", [1], 0.95),
    ("2つ目を実行", [2], 0.9),
    ("ファイル作成だけ", [1], 0.8),
    ("1と3番", [1, 3], 0.85),
    ("最初の2つ", [1, 2], 0.8),
    ("1番だけど、バックアップ取って", [1], 0.7),
    ("安全なやつで", [2], 0.7),  # the safe option is 2 in this list
]


@pytest.mark.parametrize(("answer", "expected", "min_conf"), SEED_CLEAR)
def test_seed_5_1_clear_answers(answer: str, expected: list[int], min_conf: float) -> None:
    check(JP3, answer, expected, min_conf)


def test_seed_5_1_safe_option_first() -> None:
    """The seed's comment: "安全なやつで" → [1] when the safe option is option 1."""
    r = check(SAFE_FIRST, "安全なやつで", [1], 0.7)
    assert r is not None and r.confidence <= 0.85  # a partial keyword, not the exact label


def test_seed_5_1_condition_is_a_modification() -> None:
    r = check(JP3, "1番だけど、バックアップ取って", [1], 0.7)
    assert r is not None
    assert r.modifications == ["バックアップ取って"]
    assert r.confidence < 0.8  # conditional answers are confirmed, not executed directly


@pytest.mark.parametrize(("answer", "min_conf"), [("いい感じのやつ", 0.3), ("よくわからない", 0.1)])
def test_seed_5_1_vague(answer: str, min_conf: float) -> None:
    r = check(JP3, answer, CLARIFY)
    assert r is not None and min_conf <= r.confidence <= 0.3
    assert r.extracted_intent == "vague"


# --------------------------------------------------------------------------- note 001 §5.2


def test_seed_5_2_run_everything_is_approval() -> None:
    r = check(PLAN, "全部実行していいです", [1], 0.85)
    assert r is not None and r.extracted_intent == "approve"


def test_seed_5_2_concern_is_never_approval() -> None:
    r = check(PLAN, "ちょっと待って、設定変更は危険じゃない？", CLARIFY)
    assert r is not None and r.clarification_needed


def test_seed_5_2_partial_approval_requests_changes() -> None:
    """"ファイル作成だけお願いします" approves only part of the plan: not a plain approval.

    Issue 13 declares the old reading (hand it to the model, then ask again)
    wrong when the prompt has a "request changes" option: it is option 3 with
    the answer as the modification.
    """
    r = check(PLAN, "ファイル作成だけお願いします", [3], 0.8)
    assert r is not None and r.extracted_intent == "request changes"
    assert r.modifications == ["ファイル作成だけお願いします"]


# --------------------------------------------------------------------------- numbers

NUMBERS = [
    ("1", [1], 0.9),
    ("１", [1], 0.9),
    ("２番", [2], 0.9),
    ("①", [1], 0.9),
    ("❸", [3], 0.9),
    ("一番で", [1], 0.9),
    ("二番目", [2], 0.9),
    ("三つ目", [3], 0.9),
    ("ふたつ目", [2], 0.9),
    ("2個目", [2], 0.9),
    ("3号", [3], 0.9),
    ("第2案", [2], 0.9),
    ("No.2", [2], 0.9),
    ("Ｎｏ．３", [3], 0.9),
    ("#3", [3], 0.9),
    ("option 2", [2], 0.9),
    ("Option #2", [2], 0.9),
    ("the 2nd", [2], 0.9),
    ("the 3rd one", [3], 0.9),
    ("option two", [2], 0.9),
    ("two", [2], 0.9),
    ("one", [1], 0.85),
    ("number three", [3], 0.9),
    ("二番目でお願いします", [2], 0.9),
    ("その2番目のやつを実行して", [2], 0.9),
    ("2番にします", [2], 0.9),
    ("2でお願いします", [2], 0.9),
    ("2番がいいと思います", [2], 0.9),
    ("I'll go with 3", [3], 0.9),
    ("let's do option 1", [1], 0.9),
    ("I think option 2 is the best", [2], 0.85),
    ("2番、速いから", [2], 0.9),  # a reason, not a condition
    ("2 because it is faster", [2], 0.9),
]


NUMBERS += [
    ("一番最初のやつ", [1], 0.9),
    ("第一案", [1], 0.9),
    ("2番です。", [2], 0.9),
    ("(2)", [2], 0.9),
    ("go with number 2 please", [2], 0.9),
    ("I'd pick the second one", [2], 0.9),
    ("2番でいいよ", [2], 0.9),
]


@pytest.mark.parametrize(("answer", "expected", "min_conf"), NUMBERS)
def test_numbers(answer: str, expected: list[int], min_conf: float) -> None:
    r = check(JP3, answer, expected, min_conf)
    assert r is not None and r.modifications == []


def test_superlative_ichiban_is_not_option_one() -> None:
    """"一番安全なやつ" means "the safest one", not option 1."""
    check(JP3, "一番安全なやつで", [2], 0.7)
    check(JP3, "いちばん安全なやつ", [2], 0.7)


@pytest.mark.parametrize(
    "answer",
    ["3 files please", "10分後に", "in 2 minutes", "version 2.5", "gpt4"],
)
def test_numbers_that_are_not_options(answer: str) -> None:
    r = match_choice(answer, JP3)
    assert r is None or r.selected_options == []


# --------------------------------------------------------------------------- ordinals

ORDINALS = [
    (JP3, "first", [1]),
    (JP3, "the first one", [1]),
    (JP3, "second", [2]),
    (JP3, "the second option", [2]),
    (JP3, "the third option", [3]),
    (JP3, "last", [3]),
    (JP3, "the last one", [3]),
    (JP3, "最初の", [1]),
    (JP3, "最初のやつ", [1]),
    (JP3, "最初のだけでいいです", [1]),
    (JP3, "最後の", [3]),
    (JP3, "最後のやつでお願い", [3]),
    (JP3, "2番目", [2]),
    (JP3, "一番最後", [3]),
    (JP3, "真ん中", [2]),
    (JP3, "the middle one", [2]),
    (EN5, "second to last", [4]),
    (EN5, "the second-last one", [4]),
    (EN5, "最後から2番目", [4]),
    (EN5, "上から3番目", [3]),
    (TWO, "前者", [1]),
    (TWO, "後者", [2]),
    (TWO, "the latter", [2]),
    (TWO, "the former", [1]),
]


@pytest.mark.parametrize(("ctx", "answer", "expected"), ORDINALS)
def test_ordinals(ctx: ChoiceContext, answer: str, expected: list[int]) -> None:
    check(ctx, answer, expected, 0.8)


# --------------------------------------------------------------------------- lists, ranges, counts

LISTS = [
    ("1と3", [1, 3]),
    ("1, 3", [1, 3]),
    ("1,3", [1, 3]),
    ("1 and 3", [1, 3]),
    ("1、3、5", [1, 3, 5]),
    ("2番と3番", [2, 3]),
    ("①と③", [1, 3]),
    ("①③", [1, 3]),
    ("options 2 and 4", [2, 4]),
    ("1番も3番も", [1, 3]),
    ("first and third", [1, 3]),
    ("最初と最後", [1, 5]),
    ("1-3", [1, 2, 3]),
    ("1〜3", [1, 2, 3]),
    ("1～3", [1, 2, 3]),
    ("1から3", [1, 2, 3]),
    ("1番から3番まで", [1, 2, 3]),
    ("2 to 4", [2, 3, 4]),
    ("options 2 through 4", [2, 3, 4]),
    ("最初の2つ", [1, 2]),
    ("最初の二つ", [1, 2]),
    ("最初のふたつ", [1, 2]),
    ("上から3つ", [1, 2, 3]),
    ("first two", [1, 2]),
    ("the first 3", [1, 2, 3]),
    ("last two", [4, 5]),
    ("the last 2 options", [4, 5]),
    ("最後の2つ", [4, 5]),
    ("top 3", [1, 2, 3]),
    ("bottom two", [4, 5]),
    ("1st and 2nd", [1, 2]),
    ("#1 and #3", [1, 3]),
    ("option one and option three", [1, 3]),
    ("the first and the last", [1, 5]),
    ("一と三", [1, 3]),
    ("1 2 3", [1, 2, 3]),
    ("3-5", [3, 4, 5]),
]


@pytest.mark.parametrize(("answer", "expected"), LISTS)
def test_lists_ranges_counts(answer: str, expected: list[int]) -> None:
    check(EN5, answer, expected, 0.85)


# --------------------------------------------------------------------------- all / both

ALL = [
    (JP3, "全部", [1, 2, 3]),
    (JP3, "すべて", [1, 2, 3]),
    (JP3, "全て", [1, 2, 3]),
    (JP3, "全部お願いします", [1, 2, 3]),
    (JP3, "all", [1, 2, 3]),
    (JP3, "all of them", [1, 2, 3]),
    (JP3, "everything", [1, 2, 3]),
    (JP3, "3つとも", [1, 2, 3]),
    (JP3, "all three", [1, 2, 3]),
    (TWO, "両方", [1, 2]),
    (TWO, "both", [1, 2]),
    (TWO, "both of them", [1, 2]),
    (TWO, "どちらも", [1, 2]),
    (EN5, "both 1 and 3", [1, 3]),
    (EN5, "1と3の両方", [1, 3]),
]


@pytest.mark.parametrize(("ctx", "answer", "expected"), ALL)
def test_all_and_both(ctx: ChoiceContext, answer: str, expected: list[int]) -> None:
    check(ctx, answer, expected, 0.85)


# --------------------------------------------------------------------------- exclusions

EXCLUSIONS = [
    ("3以外", [1, 2, 4, 5]),
    ("3番以外全部", [1, 2, 4, 5]),
    ("3以外の全部", [1, 2, 4, 5]),
    ("2は除いて", [1, 3, 4, 5]),
    ("2と3以外", [1, 4, 5]),
    ("最後以外", [1, 2, 3, 4]),
    ("全部、ただし2は除いて", [1, 3, 4, 5]),
    ("1はいらない、残り全部", [2, 3, 4, 5]),
    ("all but 2", [1, 3, 4, 5]),
    ("all except 2", [1, 3, 4, 5]),
    ("all except 2 and 4", [1, 3, 5]),
    ("everything except the first", [2, 3, 4, 5]),
    ("everything but the last two", [1, 2, 3]),
    ("except the last", [1, 2, 3, 4]),
    ("all of them without 5", [1, 2, 3, 4]),
]


@pytest.mark.parametrize(("answer", "expected"), EXCLUSIONS)
def test_exclusions(answer: str, expected: list[int]) -> None:
    r = check(EN5, answer, expected, 0.85)
    assert r is not None and "except" in r.extracted_intent


# --------------------------------------------------------------------------- only

ONLY = [
    ("only the first", [1]),
    ("1番だけ", [1]),
    ("ファイル作成だけ", [1]),
    ("just 2", [2]),
    ("2のみ", [2]),
    ("3 only", [3]),
    ("完全実行だけお願いします", [3]),
]


@pytest.mark.parametrize(("answer", "expected"), ONLY)
def test_only(answer: str, expected: list[int]) -> None:
    r = check(JP3, answer, expected, 0.8)
    assert r is not None and r.extracted_intent.startswith("only")


# --------------------------------------------------------------------------- labels and descriptions

LABELS = [
    (JP3, "ファイル作成", [1], 0.85, 1.0),
    (JP3, "安全モード実行で", [2], 0.85, 1.0),
    (JP3, "完全実行でお願いします", [3], 0.85, 1.0),
    (JP3, "安全モードで", [2], 0.75, 0.85),
    (JP3, "ファイルを作成して", [1], 0.75, 0.85),
    (JP3, "完全に実行して", [3], 0.7, 0.85),
    (JP3, "作成だけ", [1], 0.7, 0.85),
    (EN3, "Create the file", [1], 0.85, 1.0),
    (EN3, "create the file please", [1], 0.85, 1.0),
    (EN3, "creating it is enough", [1], 0.7, 0.85),
    (EN3, "the safe one", [2], 0.7, 0.85),
    (EN3, "safe mode", [2], 0.7, 0.85),
    (EN3, "full run", [3], 0.85, 1.0),
    (EN3, "the full one", [3], 0.7, 0.85),
    (DESC, "the one with the backup", [2], 0.7, 0.8),
    (DESC, "including migrations", [3], 0.7, 0.8),
    (PY, "3.12", [2], 0.7, 0.85),
    (PY, "Python 3.12", [2], 0.85, 1.0),
    (PY, "python 3.11 please", [1], 0.85, 1.0),
    (PY, "2", [2], 0.9, 1.0),
    (EN5, "lint and build", [1, 3], 0.85, 1.0),
    (EN5, "Deploy", [5], 0.85, 1.0),
    (EN5, "the linter", [1], 0.7, 0.85),
    (EN5, "testing only", [2], 0.7, 0.85),
    (EN5, "test then deploy", [2, 5], 0.85, 1.0),
    (EN5, "please don't deploy, just build", [3], 0.8, 0.9),
    (EN5, "everything except lint and test", [3, 4, 5], 0.85, 1.0),
    (EN5, "lint, test, build", [1, 2, 3], 0.85, 1.0),
    (JP3, "ファイル作成と完全実行", [1, 3], 0.85, 1.0),
    (JP3, "2番が安全だから", [2], 0.9, 1.0),
    (JP3, "安全だから2番", [2], 0.9, 1.0),
    (JP3, "2番でお願いします（安全なので）", [2], 0.9, 1.0),
]


@pytest.mark.parametrize(("ctx", "answer", "expected", "lo", "hi"), LABELS)
def test_labels_and_descriptions(ctx: ChoiceContext, answer: str, expected: list[int], lo: float, hi: float) -> None:
    r = check(ctx, answer, expected, lo)
    assert r is not None and r.confidence <= hi


def test_shared_keyword_is_not_used() -> None:
    """"実行" is in two labels: it selects nothing by itself."""
    r = match_choice("実行", JP3)
    assert r is None or r.selected_options == []


def test_number_and_label_disagree() -> None:
    check(JP3, "1番の完全実行", CLARIFY)


def test_number_and_label_agree() -> None:
    check(JP3, "1番のファイル作成", [1], 0.85)


RECOMMENDED = [
    ("おすすめで", [2]),
    ("推奨のやつ", [2]),
    ("the recommended one", [2]),
    ("whatever you think", [2]),
    ("お任せします", [2]),
]


@pytest.mark.parametrize(("answer", "expected"), RECOMMENDED)
def test_recommended_option(answer: str, expected: list[int]) -> None:
    r = check(REC, answer, expected, 0.7)
    assert r is not None and r.confidence < 0.8  # always confirmed


@pytest.mark.parametrize("answer", ["おすすめで", "お任せします", "whatever you think", "up to you", "you decide"])
def test_delegation_without_recommendation_asks(answer: str) -> None:
    check(JP3, answer, CLARIFY)


def test_same_as_before_uses_previous_choices() -> None:
    ctx = ChoiceContext(available_options=["A案", "B案", "C案"], previous_choices=["B案"])
    check(ctx, "前回と同じで", [2], 0.7)
    check(ctx, "same as before", [2], 0.7)
    assert match_choice("same as before", JP3) is None  # nothing to go on: the model may know


# --------------------------------------------------------------------------- approvals

APPROVE = [
    (PLAN, "はい"),
    (PLAN, "承認"),
    (PLAN, "承認します"),
    (PLAN, "OK"),
    (PLAN, "ok!"),
    (PLAN, "いいよ"),
    (PLAN, "実行して"),
    (PLAN, "全部実行していいです"),
    (PLAN, "お願いします"),
    (PLAN, "進めてください"),
    (PLAN, "了解"),
    (PLAN, "もちろん"),
    (PLAN, "どうぞ"),
    (PLAN, "問題ない"),
    (PLAN, "1"),
    (PLAN, "1番で"),
    (PLAN, "yes"),
    (PLAN, "sure"),
    (PLAN, "go ahead"),
    (PLAN, "lgtm"),
    (PLAN, "no problem, go ahead"),
    (ENAPP, "approve"),
    (ENAPP, "Approve it"),
    (ENAPP, "y"),
    (ENAPP, "yes please"),
    (ENAPP, "sounds good"),
    (ENAPP, "why not"),
    (YESNO, "はい"),
    (YESNO, "うん"),
    (CRIT, "実行"),
    (CRIT, "実行してください"),
    (RUNSKIP, "run it"),
    (PLAN, "OKです"),
    (PLAN, "全部OK"),
    (PLAN, "いいんじゃない"),
    (PLAN, "構いません"),
    (PLAN, "はい、お願いします"),
    (PLAN, "やっぱり承認"),
]


@pytest.mark.parametrize(("ctx", "answer"), APPROVE)
def test_approval_words(ctx: ChoiceContext, answer: str) -> None:
    r = check(ctx, answer, [1], 0.75)
    assert r is not None and r.extracted_intent == "approve"


REJECT = [
    (PLAN, "いいえ"),
    (PLAN, "却下"),
    (PLAN, "却下で"),
    (PLAN, "中止"),
    (PLAN, "やめて"),
    (PLAN, "やめておく"),
    (PLAN, "今回はやめておく"),
    (PLAN, "今日はしないで"),
    (PLAN, "まだ"),
    (PLAN, "2"),
    (PLAN, "no"),
    (PLAN, "nope"),
    (PLAN, "no thanks"),
    (PLAN, "cancel"),
    (PLAN, "reject"),
    (PLAN, "stop"),
    (PLAN, "not yet"),
    (PLAN, "absolutely not"),
    (PLAN, "of course not"),
    (PLAN, "not really"),
    (ENAPP, "n"),
    (ENAPP, "not now"),
    (ENAPP, "Reject it"),
    (YESNO, "いいえ"),
    (YESNO, "やめとく"),
    (CRIT, "却下"),
    (RUNSKIP, "skip"),
    (PLAN, "承認は無理"),
    (PLAN, "無理"),
    (PLAN, "later"),
    (PLAN, "後で"),
    (PLAN, "never mind"),
    (PLAN, "forget it"),
    (PLAN, "全部やめて"),
    (PLAN, "全部却下"),
    (PLAN, "いいえ、ありがとう"),
    (PLAN, "no, but thanks"),
    (PLAN, "reject, too risky"),
    (PLAN, "危険なのでやめておく"),
    (PLAN, "none of the above"),
]


@pytest.mark.parametrize(("ctx", "answer"), REJECT)
def test_rejection_words(ctx: ChoiceContext, answer: str) -> None:
    r = check(ctx, answer, [2], 0.8)
    assert r is not None and r.extracted_intent == "reject"


@pytest.mark.parametrize(
    ("ctx", "answer", "expected"),
    [
        (PLAN, "修正要求", [3]),
        (PLAN, "3", [3]),
        (PLAN, "修正して", [3]),
        (PLAN, "修正をお願いします", [3]),
        (CRIT, "代替案で", [3]),
        (CRIT, "詳細確認", [4]),
        (CRIT, "4番", [4]),
    ],
)
def test_approval_third_options(ctx: ChoiceContext, answer: str, expected: list[int]) -> None:
    check(ctx, answer, expected, 0.7)


@pytest.mark.parametrize("answer", ["仕方ない", "まあいいか", "I guess so"])
def test_reluctant_approval_is_confirmed(answer: str) -> None:
    r = check(PLAN, answer, [1], 0.6)
    assert r is not None and r.confidence < 0.8


def test_ambiguous_iidesu_is_only_a_confirmation() -> None:
    """"いいです" alone can mean "no thanks": approve, but below the execute threshold."""
    r = check(PLAN, "いいです", [1], 0.5)
    assert r is not None and r.confidence < 0.8


def test_all_in_an_approval_prompt_is_a_weak_approval() -> None:
    r = check(PLAN, "全部", [1], 0.6)
    assert r is not None and r.confidence < 0.8


@pytest.mark.parametrize(
    ("ctx", "answer"),
    [
        (PLAN, "結構です"),
        (PLAN, "大丈夫です"),
        (PLAN, "大丈夫？"),
        (PLAN, "本当に大丈夫？"),
        (PLAN, "what happens if I approve?"),
        (PLAN, "wait"),
        (PLAN, "hold on"),
        (PLAN, "hmm"),
        (PLAN, "I don't know"),
        (PLAN, "はい？"),
        (ENAPP, "yes and no"),
        (ENAPP, "yes, no"),
        (ENAPP, "no, approve"),
        (ENAPP, "yes, don't"),
        (PLAN, "はい、却下"),
        (PLAN, "いや、いいよ"),
        (PLAN, "yes, 2"),
        (PLAN, "ok but wait"),
        (PLAN, "実行は待って"),
        (PLAN, "いいんじゃない？"),
        (PLAN, "これ危険？"),
    ],
)
def test_approval_needs_clarification(ctx: ChoiceContext, answer: str) -> None:
    check(ctx, answer, CLARIFY)


def test_correction_in_an_approval() -> None:
    r = check(ENAPP, "approve, no wait, reject", [2], 0.8)
    assert r is not None and r.extracted_intent == "reject"


# --------------------------------------------------------------------------- negation is never consent

NEGATED_APPROVALS = [
    (PLAN, "no, don't approve"),
    (PLAN, "承認しないで"),
    (PLAN, "承認はしません"),
    (PLAN, "don't run it"),
    (PLAN, "実行しないで"),
    (PLAN, "実行はやめて"),
    (PLAN, "not yet"),
    (PLAN, "やめておく"),
    (PLAN, "I don't want option 1"),
    (PLAN, "1はやめて"),
    (PLAN, "1番はダメ"),
    (PLAN, "承認じゃなくて"),
    (ENAPP, "no, don't approve"),
    (ENAPP, "don't approve"),
    (ENAPP, "do not approve this"),
    (ENAPP, "I do not approve"),
    (ENAPP, "I wouldn't approve this"),
    (ENAPP, "never"),
    (ENAPP, "don't"),
    (ENAPP, "no, don't do it"),
    (RUNSKIP, "don't run it"),
    (RUNSKIP, "please don't run the migrations"),
    (YESNO, "はいじゃない"),
]


@pytest.mark.parametrize(("ctx", "answer"), NEGATED_APPROVALS)
def test_negated_approval_rejects(ctx: ChoiceContext, answer: str) -> None:
    r = check(ctx, answer, [2], 0.8)
    assert r is not None and r.extracted_intent == "reject"


@pytest.mark.parametrize(
    ("ctx", "answer"),
    [
        (PLAN, "やめないで"),
        (ENAPP, "don't reject"),
        (ENAPP, "don't cancel"),
        (ENAPP, "I wouldn't reject it"),
        (PLAN, "却下しないで"),
        (PLAN, "却下じゃない"),
        (PLAN, "修正はいらない"),
    ],
)
def test_double_negation_asks(ctx: ChoiceContext, answer: str) -> None:
    """"Don't cancel" is not "go": a negated rejection is never read as consent."""
    check(ctx, answer, CLARIFY)


NEGATED_OPTIONS = [
    "1はやめて",
    "1はいらない",
    "I don't want option 1",
    "not 1",
    "don't do option 2",
    "don't pick the last one",
    "anything but 1",
    "完全実行はしないで",
    "1と2はいらない",
    "全部はいらない",
    "not all of them",
    "no",
    "none of them",
    "どれもいらない",
    "cancel",
]


@pytest.mark.parametrize("answer", NEGATED_OPTIONS)
def test_negated_option_never_selects_it(answer: str) -> None:
    check(JP3, answer, CLARIFY)


NEGATION_WITH_CHOICE = [
    ("1はやめて2で", [2]),
    ("1じゃなくて2", [2]),
    ("2, not 1", [2]),
    ("not 1 but 2", [2]),
    ("3 instead of 2", [3]),
    ("2 but not 3", [2]),
    ("安全モードはやめて、ファイル作成で", [1]),
    ("2番、いや3番", [3]),
    ("2, no wait, 3", [3]),
    ("やっぱり3番", [3]),
    ("2番にしようと思ったけどやっぱり1番", [1]),
    ("actually, the first one", [1]),
]


NEGATION_WITH_CHOICE += [
    ("1番で2はいらない", [1]),
    ("1番と2番、3はいらない", [1, 2]),
    ("the first one, not the last", [1]),
    ("1はだめ、2で", [2]),
]


@pytest.mark.parametrize(("answer", "expected"), NEGATION_WITH_CHOICE)
def test_negation_with_an_explicit_choice(answer: str, expected: list[int]) -> None:
    check(JP3, answer, expected, 0.7)


# --------------------------------------------------------------------------- conditions

CONDITIONS = [
    (JP3, "1番だけど、バックアップ取って", [1], ["バックアップ取って"]),
    (JP3, "2番で、ログも残して", [2], ["ログも残して"]),
    (JP3, "1番、ただしテストは省略", [1], ["テストは省略"]),
    (JP3, "2番目でお願いします、ただ急ぎで", [2], ["急ぎで"]),
    (JP3, "バックアップしてから2番", [2], ["バックアップしてから"]),
    (JP3, "3, but keep the logs", [3], ["keep the logs"]),
    (JP3, "option 2 with a dry run first", [2], ["with a dry run first"]),
    (JP3, "2, and please double-check the config", [2], ["and please double-check the config"]),
    (ENAPP, "OK, but don't touch the database", [1], ["don't touch the database"]),
    (ENAPP, "はい、でもログは残して", [1], ["ログは残して"]),
    (ENAPP, "yes, but keep the logs", [1], ["keep the logs"]),
    (ENAPP, "Yes, but Keep The Logs", [1], ["Keep The Logs"]),
    (ENAPP, "yes as long as you back up first", [1], ["as long as you back up first"]),
    (ENAPP, "yes, don't delete the logs", [1], ["don't delete the logs"]),
    (JP3, "1番にして、ログは消さないで", [1], ["ログは消さないで"]),
    (JP3, "1番でお願い。あと通知もして", [1], ["あと通知もして"]),
    (EN5, "deploy, but not on friday", [5], ["not on friday"]),
    (EN5, "backup first then 2", [2], ["backup first"]),
    (ENAPP, "sure, go ahead but make a backup first", [1], ["make a backup first"]),
    (PLAN, "修正要求：ログ出力を追加", [3], ["ログ出力を追加"]),
]


@pytest.mark.parametrize(("ctx", "answer", "expected", "mods"), CONDITIONS)
def test_conditions_become_modifications(
    ctx: ChoiceContext, answer: str, expected: list[int], mods: list[str]
) -> None:
    r = check(ctx, answer, expected, 0.6)
    assert r is not None
    assert r.modifications == mods
    assert r.confidence < 0.8  # a condition is always confirmed


CONDITIONAL_APPROVALS = [
    ("承認、ただしバックアップを取ってから", ["バックアップを取ってから"]),
    ("はい、でもログは残して", ["ログは残して"]),
    ("バックアップを取ってから実行して", ["バックアップを取ってから"]),
    ("OK, but don't touch the database", ["don't touch the database"]),
    ("承認。ログは残しておいて", ["ログは残しておいて"]),
    ("sure, go ahead but make a backup first", ["make a backup first"]),
    ("approve, but only the first step", ["approve, but only the first step"]),
    ("approve only the first step", ["approve only the first step"]),
    ("ステップ2だけ承認", ["ステップ2だけ承認"]),
    ("最初のステップだけ実行して", ["最初のステップだけ実行して"]),
    ("承認。ステップ3は飛ばして", ["承認。ステップ3は飛ばして"]),
    ("yes to step 1", ["yes to step 1"]),
]


@pytest.mark.parametrize(("answer", "mods"), CONDITIONAL_APPROVALS)
def test_conditional_approval_requests_changes(answer: str, mods: list[str]) -> None:
    """With a "request changes" option (修正要求), an approval with a condition or of part of the plan is that option.

    Issue 13 declares the old readings wrong: these were approvals at confirm
    level (the condition only "noted") or handed to the model and asked again.
    """
    r = check(PLAN, answer, [3], 0.8)
    assert r is not None and r.extracted_intent == "request changes"
    assert r.modifications == mods


@pytest.mark.parametrize(
    ("ctx", "answer"),
    [
        (ENAPP, "approve, but only the first step"),
        (ENAPP, "approve only the first step"),
        (ENAPP, "ステップ2だけ承認"),
        (ENAPP, "yes to step 1"),
        (PLAN, "yes, but not the config change"),
        (PLAN, "設定変更以外"),
        (PLAN, "please change the plan to add logging"),
        (PLAN, "skip step 3"),
        (ENAPP, "yes, skip step 3"),
        (PLAN, "設定変更はやめて"),
        (ENAPP, "cancel the deployment step"),
        (EN5, "everything except the slow stuff"),
    ],
)
def test_partial_approval_or_exclusion_of_non_options_goes_to_the_model(ctx: ChoiceContext, answer: str) -> None:
    """"Only the first step" is about the plan, not option 1: never a plain approval."""
    assert match_choice(answer, ctx) is None


def test_condition_alone_is_not_a_choice() -> None:
    r = check(ENAPP, "don't delete the logs", CLARIFY)
    assert r is not None and r.modifications == ["don't delete the logs"]


# --------------------------------------------------------------------------- questions

QUESTIONS = [
    "どういう意味？",
    "what does option 2 do?",
    "2番って何？",
    "どれがおすすめ？",
    "もう少し詳しく教えて",
    "which one is safer?",
    "what's the difference between 1 and 2?",
    "is option 3 safe?",
    "2番はどうなるの？",
    "why?",
    "安全モードって何？",
]


@pytest.mark.parametrize("answer", QUESTIONS)
def test_questions_ask_back(answer: str) -> None:
    r = check(JP3, answer, CLARIFY)
    assert r is not None and r.extracted_intent.startswith("question")


def test_question_inside_a_condition_asks() -> None:
    check(JP3, "1番にしたいけど大丈夫？", CLARIFY)
    check(JP3, "2, but what happens to the logs?", CLARIFY)


def test_tentative_number_with_question_mark_is_confirmed() -> None:
    r = check(JP3, "2?", [2], 0.6)
    assert r is not None and r.confidence <= 0.7


# --------------------------------------------------------------------------- out of range

OUT_OF_RANGE = [
    ("5番", "5"),
    ("option 5", "5"),
    ("5", "5"),
    ("⑤", "5"),
    ("五番目", "5"),
    ("1と5", "5"),
    ("1 and 4", "4"),
    ("the fourth", "4"),
    ("4th", "4"),
    ("option 0", "0"),
    ("0番", "0"),
    ("1-5", "5"),
    ("第10案", "10"),
    ("十番", "10"),
    ("最初の4つ", "4"),
    ("last 4", "4"),
    ("all four", "3"),
    ("5は除いて", "5"),
    ("5はやめて", "5"),
]


@pytest.mark.parametrize(("answer", "missing"), OUT_OF_RANGE)
def test_out_of_range_selects_nothing(answer: str, missing: str) -> None:
    r = check(JP3, answer, CLARIFY)
    assert r is not None and missing in r.reasoning


def test_out_of_range_in_an_approval_prompt() -> None:
    r = check(PLAN, "4番で", CLARIFY)
    assert r is not None and "4" in r.reasoning and "not exist" in r.reasoning


# --------------------------------------------------------------------------- ambiguous and vague

AMBIGUOUS = [
    (JP3, "1か2"),
    (JP3, "1 or 2"),
    (JP3, "either 1 or 2"),
    (JP3, "1番か2番かな"),
    (JP3, "2 or 3 I guess"),
    (JP3, "either"),
    (JP3, "どっちでもいい"),
    (JP3, "both"),
    (JP3, "2つ"),
    (ChoiceContext(available_options=["a", "b", "c", "d"]), "真ん中"),
    (JP3, "後者"),
    (JP3, "yes"),
    (JP3, "はい"),
    (JP3, ""),
    (JP3, "   "),
    (JP3, "？"),
    (JP3, "ファイル作成か完全実行"),
    (EN5, "test? or build?"),
    (EN5, "1, 2, or 3"),
    (JP3, "二つとも"),
    (EN5, "none of the above"),
]


@pytest.mark.parametrize(("ctx", "answer"), AMBIGUOUS)
def test_ambiguous_answers_ask(ctx: ChoiceContext, answer: str) -> None:
    check(ctx, answer, CLARIFY)


VAGUE = [
    "いい感じのやつ",
    "よくわからない",
    "わかんない",
    "うーん",
    "えーと",
    "適当に",
    "任せる",
    "どれでもいい",
    "hmm",
    "idk",
    "not sure",
    "I don't know",
    "whatever",
    "you decide",
    "the best one",
]


@pytest.mark.parametrize("answer", VAGUE)
def test_vague_answers_ask(answer: str) -> None:
    r = check(JP3, answer, CLARIFY)
    assert r is not None and r.extracted_intent == "vague"


def test_hesitant_choice_is_confirmed() -> None:
    for answer in ("わからないけど1番かな", "maybe 2", "probably the first", "たぶん3"):
        r = match_choice(answer, JP3)
        assert r is not None and len(r.selected_options) == 1 and r.confidence <= 0.7, (answer, r)


def test_single_option_yes_selects_it() -> None:
    check(ChoiceContext(available_options=["続ける"]), "yes", [1], 0.85)


# --------------------------------------------------------------------------- left to the model

FREE_TEXT = [
    (JP3, "バックアップの方がいい"),
    (JP3, "速いほうで"),
    (JP3, "the faster one"),
    (EN3, "something that does not touch production"),
    (JP3, "ユーザーに影響が出ないやり方で進めたい"),
    (JP3, "十分です"),
    (EN5, "any two"),
    (PLAN, "too risky"),
]


@pytest.mark.parametrize(("ctx", "answer"), FREE_TEXT)
def test_free_text_is_left_to_the_model(ctx: ChoiceContext, answer: str) -> None:
    assert match_choice(answer, ctx) is None


# --------------------------------------------------------------------------- normalisation and speed


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("  ＯＫ、　２番で ", "ok、 2番で"),
        ("Ｙｅｓ", "yes"),
        ("①と③", "1 と 3"),
        ("a   b\tc\n", "a b c"),
        ("ｷｬﾝｾﾙ", "キャンセル"),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_normalized_answers_match_the_same() -> None:
    for raw in ("  ＯＫ、　２番で ", "１と３番", "ＮＯ，ＤＯＮ'Ｔ　ＡＰＰＲＯＶＥ"):
        for ctx in (JP3, PLAN):
            assert match_choice(raw, ctx) == match_choice(normalize_answer(raw), ctx)


def _all_answers() -> list[tuple[ChoiceContext, str]]:
    cases: list[tuple[ChoiceContext, str]] = [(JP3, a) for a, *_ in SEED_CLEAR + NUMBERS + ONLY]
    cases += [(EN5, a) for a, _ in LISTS + EXCLUSIONS] + [(c, a) for c, a, _ in ORDINALS + ALL]
    cases += [(c, a) for c, a in APPROVE + REJECT + NEGATED_APPROVALS + AMBIGUOUS + FREE_TEXT]
    cases += [(JP3, a) for a in NEGATED_OPTIONS + QUESTIONS + VAGUE] + [(c, a) for c, a, *_ in CONDITIONS + LABELS]
    return cases


def test_every_result_is_well_formed() -> None:
    for ctx, answer in _all_answers():
        r = match_choice(answer, ctx)
        if r is None:
            continue
        assert r.decided_by == "pattern"
        assert r.selected_options == sorted(set(r.selected_options))
        assert all(1 <= v <= len(ctx.available_options) for v in r.selected_options)
        assert 0.0 <= r.confidence <= 1.0
        if r.clarification_needed:
            assert r.selected_options == [] and r.confidence <= 0.3, (answer, r)
        else:
            assert r.selected_options, (answer, r)


def test_first_character_dispatch_matches_the_master_regex() -> None:
    """The dispatch is an optimisation only: it finds exactly the combined lexicon regex's tokens."""
    from tandem.services.choice import _lexicon

    extra = ["okです", "yesで", "2ndで", "いいえいいよ", "はいらない", "1はいらない", "no.2 no 2", "wait a second", "all but 2",
             "as if i'd pick 2", "前回は2番だった", "2 is better than 3", "冗談でしょ", "kidding, 3"]
    for _ctx, answer in _all_answers() + [(JP3, a) for a in extra]:
        s = normalize_answer(answer)
        fast = [(mo.lastgroup, mo.span()) for mo in _lexicon.finditer(s)]
        slow = [(mo.lastgroup, mo.span()) for mo in _lexicon.master().finditer(s)]
        assert fast == slow, answer
