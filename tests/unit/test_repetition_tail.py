"""The looping-tail finder of :mod:`tandem.services.repetition` finds what it found when it tested every period."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from tandem.services import repetition
from tandem.services.repetition import find_repetition


def tail_loop_as_first_written(text: str, *, min_period: int, max_period: int,
                               repeats: int) -> tuple[str, int] | None:
    """Every period from ``min_period`` up, letters counted first (the version before the search)."""
    flat = repetition._WS.sub(" ", text.strip())
    for period in range(min_period, min(max_period, len(flat) // repeats) + 1):
        unit = flat[-period:]
        if len(set(repetition._LETTER.findall(unit))) < 2:
            continue
        if flat.endswith(unit * repeats):
            count = repeats
            while flat.endswith(unit * (count + 1)):
                count += 1
            return unit, count
    return None


# few letters, so periods, loops and near-loops come up often; a space and a newline, so whitespace collapses
pieces = st.text(alphabet="ab a\n1.", min_size=0, max_size=12)


@st.composite
def looping(draw: st.DrawFn) -> str:
    """A prefix, a phrase repeated a number of times (sometimes cut short), and sometimes a stray end."""
    unit = draw(st.text(alphabet="abc a.\n", min_size=1, max_size=30))
    times = draw(st.integers(0, 16))
    text = draw(pieces) + unit * times
    if draw(st.booleans()):
        text = text[:len(text) - draw(st.integers(0, len(unit)))]
    return text + draw(st.sampled_from(["", " ", "\n", "x", unit[:3]]))


@settings(max_examples=3000, deadline=None)
@given(text=st.one_of(looping(), st.text(max_size=300)), min_period=st.integers(1, 12),
       max_period=st.integers(0, 220), repeats=st.integers(2, 14))
@example(text="and then the server " * 12, min_period=8, max_period=200, repeats=6)
@example(text="ab" * 200, min_period=8, max_period=200, repeats=6)
@example(text="x" * 50, min_period=8, max_period=200, repeats=6)
@example(text="", min_period=8, max_period=200, repeats=6)
@example(text="x" * 300 + "y", min_period=1, max_period=200, repeats=2)
@example(text="1. " * 100, min_period=3, max_period=200, repeats=6)
def test_the_tail_loop_is_the_one_found_by_testing_every_period(text: str, min_period: int, max_period: int,
                                                                 repeats: int) -> None:
    options = {"min_period": min_period, "max_period": max_period, "repeats": repeats}
    assert repetition._tail_loop(text, **options) == tail_loop_as_first_written(text, **options)


def test_find_repetition_still_reports_a_looping_tail() -> None:
    found = find_repetition("Here is the answer: " + "and then the server " * 12)
    assert found is not None and found.kind == "loop" and found.count == 12
    assert found.unit == "and then the server"
    assert find_repetition("name | age | city\n" * 3 + "alice | 30 | paris\n") is None
