"""Guards on model output: degenerate repetition, the execution budget, suspect lengths."""

from __future__ import annotations


import pytest

from ..conftest import package_readme

from tandem.actors._guards import (
    DegenerateOutput,
    InputTooLarge,
    check_degenerate,
    execution_budget,
    find_repetition,
    suspect_length,
)

INVENTED = ("HTTPX is a fully featured HTTP client for Python 3, which provides sync and async APIs, "
            "and support for both HTTP/1.1 and HTTP/2.")


def readme(package: str) -> str:
    return package_readme(package)


def test_one_paragraph_repeated_25_times_is_degenerate() -> None:
    """The failure of issue 11: one invented paragraph, about 25 times."""
    with pytest.raises(DegenerateOutput, match=r"degenerate_output: the output repeats .* 25 times") as info:
        check_degenerate("h1. HTTPX\n\n" + "\n\n".join([INVENTED] * 25), source=readme("httpx"))
    assert info.value.code == "degenerate_output"


def test_a_repeated_sentence_inside_paragraphs_is_found() -> None:
    text = " ".join(f"Point {i} is new. The library supports every HTTP feature you need." for i in range(6))
    found = find_repetition(text)
    assert found is not None and found.unit == "the library supports every http feature you need." and found.count == 6


def test_a_looping_tail_without_punctuation_is_degenerate() -> None:
    found = find_repetition("Here is the answer: " + "and then the server " * 12)
    assert found is not None and found.kind == "loop" and found.unit == "and then the server" and found.count >= 6


@pytest.mark.parametrize("package", ["httpx", "anyio", "msgspec", "pytest", "rich"])
def test_real_documents_are_not_degenerate(package: str) -> None:
    text = readme(package)
    assert len(text) > 500
    assert find_repetition(text) is None
    assert find_repetition(text.upper() + "\n" + text, source=text + text) is None


def test_repetition_already_in_the_input_is_legitimate() -> None:
    source = "\n".join(["| value | meaning of this value |"] * 3 + ["- [ ] review the pull request carefully"] * 6)
    assert find_repetition(source.replace("value", "VALUE"), source=source) is None
    assert find_repetition(source + "\n" + "- [ ] review the pull request carefully\n" * 6, source=source) is not None


def test_short_or_letterless_lines_do_not_count() -> None:
    text = "\n".join(["}", "----------------------------------------", "|---|---|---|---|---|---|---|"] * 20)
    assert find_repetition(text) is None


def test_two_extra_copies_count_when_they_make_up_much_of_the_output() -> None:
    para = "This paragraph was invented by the model and is not in the input at all."
    assert find_repetition(f"{para}\n\n{para}\n\n{para}\n\nEnd.") is not None
    assert find_repetition(f"{para}\n\n{para}\n\n" + readme("httpx")) is None  # one extra copy, lost in a long text


def test_budget_scales_with_the_input_within_the_context() -> None:
    small = execution_budget(400, 600, configured=2000, context_tokens=8192)
    assert small.max_tokens == 2000 and not small.truncated
    doc = execution_budget(12_000, 12_400, configured=2000, context_tokens=8192)
    assert doc.max_tokens == doc.needed > 2000 and doc.max_tokens + 12_400 // 4 <= 8192
    big = execution_budget(20_000, 20_400, configured=2000, context_tokens=8192)
    assert big.truncated and big.max_tokens < big.needed and big.max_tokens + 20_400 // 4 <= 8192


def test_an_input_that_does_not_fit_is_reported_before_the_call() -> None:
    with pytest.raises(InputTooLarge, match="does not fit the model's context of 8192 tokens") as info:
        execution_budget(40_000, 40_400, configured=2000, context_tokens=8192)
    assert info.value.code == "input_too_large"


def test_suspect_lengths() -> None:
    source = readme("httpx")
    assert suspect_length(source[: len(source) // 5], source).startswith("suspect result:")
    assert "for a conversion" in suspect_length(source * 3, source)
    assert suspect_length(source.replace("#", "h1."), source) is None
    assert suspect_length("", "short") is None
