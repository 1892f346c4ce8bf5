"""Built-in commands under hostile input: regex time budgets, output caps, worker threads (issue 10)."""

from __future__ import annotations

import time

import anyio
import pytest

from tandem.services.errors import CommandError, ExecutionError
from tandem.services.textcmd import (
    DEFAULT_LIMITS,
    CommandTimeout,
    Limits,
    OutputTooLarge,
    RegexTimeout,
    buffered_chars,
    regex_search,
    run_builtin,
    run_command,
)

LINE_31 = "a" * 30 + "!"  # the 31-character line
LINE_1MB = "a" * 1_000_000 + "!"
EXPONENTIAL = "(a|aa)+$"  # still exponential on the regex engine (unlike (a+)+$)
LINE_41 = "a" * 40 + "!"  # 2^40-ish paths: no machine finishes it
GENEROUS_S = 5.0  # the budget is 0.3 s of CPU time: longer in wall-clock time on a loaded machine


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - handed back to the test, which asserts on it
        return exc, time.monotonic() - started


# ------------------------------------------------------------------ regex budgets


def test_nested_quantifier_on_31_chars_is_answered_correctly_at_once() -> None:
    # re needs ~190 s for this; the regex engine's optimisations answer it outright
    out, seconds = timed(run_command, "grep", ["-E", "(a+)+$"], LINE_31 + "\n" + "aaa\n")
    assert out == "aaa\n"
    assert seconds < GENEROUS_S


@pytest.mark.parametrize(
    ("cmd", "args", "text"),
    [
        ("grep", ["-E", "(a+)+$"], LINE_1MB + "\n"),
        ("grep", ["-E", EXPONENTIAL], LINE_41 + "\n"),
        ("grep", ["-c", "-E", EXPONENTIAL], "ok\n" + LINE_41 + "\n"),
        ("grep", ["-o", "-E", EXPONENTIAL], LINE_41 + "\n"),
        ("grep", ["-x", "-E", "(a|aa)+"], LINE_41 + "\n"),
        ("sed", ["-E", f"s/{EXPONENTIAL}/x/"], LINE_41 + "\n"),
        ("sed", ["-E", f"s/{EXPONENTIAL}/x/g"], LINE_41 + "\n"),
        ("sed", ["-E", f"/{EXPONENTIAL}/d"], LINE_41 + "\n"),
        ("sed", ["-E", f"1,/{EXPONENTIAL}/d"], "x\n" + LINE_41 + "\n"),
        ("sed", ["-E", "s/(a+)+$/x/"], LINE_1MB + "\n"),
        ("sed", ["s/\\(a\\|aa\\)*$/x/"], LINE_41 + "\n"),  # BRE
    ],
)
def test_catastrophic_regex_fails_with_regex_timeout_naming_the_pattern(cmd: str, args: list[str], text: str) -> None:
    err, seconds = timed(run_command, cmd, args, text)
    assert isinstance(err, RegexTimeout), err
    assert err.code == "regex_timeout"
    assert isinstance(err, CommandError) and isinstance(err, ExecutionError)
    assert err.cmd == cmd
    assert err.pattern in " ".join(args)  # the pattern as the plan wrote it
    assert f"'{err.pattern}'" in str(err) and "regex_timeout" in str(err)
    assert err.seconds == DEFAULT_LIMITS.regex_timeout_s
    assert seconds < GENEROUS_S


def test_regex_timeout_is_configurable() -> None:
    err, _ = timed(run_command, "grep", ["-E", EXPONENTIAL], LINE_41, limits=Limits(regex_timeout_s=0.05))
    assert isinstance(err, RegexTimeout) and err.seconds == 0.05


def test_step_time_limit_bounds_many_slow_searches() -> None:
    # each line alone fits the per-search budget; together they pass the step's limit
    slow = "a" * 22 + "!\n"
    err, seconds = timed(run_command, "grep", ["-E", EXPONENTIAL], slow * 400,
                         limits=Limits(regex_timeout_s=0.5, time_limit_s=0.3))
    assert isinstance(err, RegexTimeout)
    assert err.seconds == 0.3  # named after the budget that ran out: the step's
    assert seconds < GENEROUS_S


def test_long_line_with_many_matches_is_not_a_timeout() -> None:
    # one s///g scan over 200k matches takes longer than a tiny per-search budget; the
    # scan restarts after non-empty matches, so only a single slow search times out
    text = "ab" * 100_000 + "\n"
    expected = "xb" * 100_000 + "\n"
    assert run_command("sed", ["s/a/x/g"], text, limits=Limits(regex_timeout_s=0.05)) == expected
    assert run_command("grep", ["-o", "a"], text, limits=Limits(regex_timeout_s=0.05)) == "a\n" * 100_000


@pytest.mark.parametrize(
    ("args", "text", "expected"),
    [
        (["s/x*/-/g"], "abxd\n", "-a-b-d-\n"),  # empty matches, GNU rule
        (["s/^a/X/g"], "aaa\n", "Xaa\n"),  # ^ only at the real start
        (["-E", "s/\\<./\\u&/g"], "one two\n", "One Two\n"),
        (["s/b*/X/2"], "abc\n", "aXc\n"),
    ],
)
def test_restarting_scans_change_no_result(args: list[str], text: str, expected: str) -> None:
    assert run_command("sed", args, text) == expected
    long = text.rstrip("\n") * 1
    assert run_command("sed", args, long + "\n", limits=Limits(regex_timeout_s=1e-3)) == expected


def test_regex_compile_errors_stay_command_errors() -> None:
    with pytest.raises(CommandError, match="grep: invalid regular expression"):
        run_command("grep", ["-E", "a{2,1}"], "aa\n")
    # the engine unrolls repeat counts when it compiles, before any time budget applies
    for args in (["-E", "((a{99}){99}){99}"], ["\\(\\(a\\{999\\}\\)\\{999\\}\\)"], ["-E", "(a{1000,}){1000}"]):
        err, seconds = timed(run_command, "grep", args, "aa\n")
        assert isinstance(err, CommandError) and "too large" in str(err), err
        assert seconds < 0.5
    with pytest.raises(CommandError, match="too large"):
        run_command("sed", ["-E", "s/((a{99}){99}){99}/x/"], "aa\n")
    with pytest.raises(CommandError, match="too large"):
        anyio.run(regex_search, "(?:(?:a{99}){99}){99}", "aa")
    assert run_command("grep", ["-cE", "(a{9}){9}|b{300}"], "aa\n") == "0\n"  # modest counts still work


# ------------------------------------------------------------------ output caps


def test_sed_doubling_fails_with_output_too_large_before_building_it() -> None:
    text = "x" * 1000 + "\n"
    step = text
    for _ in range(5):  # a plan of repeated doubling steps: the cap stops it
        step = run_command("sed", ["s/.*/&&/"], step, limits=Limits(max_output_chars=40_000))
    assert len(step) == 32 * 1000 + 1
    with pytest.raises(OutputTooLarge) as info:
        run_command("sed", ["s/.*/&&/"], step, limits=Limits(max_output_chars=40_000))
    assert info.value.code == "output_too_large"
    assert info.value.limit == 40_000
    assert "output_too_large" in str(info.value) and "40,000" in str(info.value)


@pytest.mark.parametrize(
    ("cmd", "args", "text"),
    [
        ("sed", ["s/.*/" + "&" * 100 + "/"], "x" * 20_000 + "\n"),  # one line, 100 copies
        ("sed", ["-e", "s/.*/&&&&&&&&/;" * 8], "xy\n"),  # 8^8 times longer
        ("sed", ["p;p;p;p;p;p;p;p;p;p"], "line\n" * 20_000),
        ("cat", ["-n"], "\n" * 200_000),
        ("nl", ["-w", "1000000000"], "a\n"),
        ("nl", ["-s", "-" * 100], "a\n" * 10_000),
        ("grep", ["-n", "-o", "."], "a" * 300_000),
        ("cut", ["-d", ",", "-f", "1-", "--output-delimiter", "-" * 100], "," * 100_000 + "\n"),
        ("cut", ["-c", "1,3,5,7,9", "--output-delimiter", "-" * 100], "abcdefghij\n" * 10_000),
        ("paste", ["-d", "x", "-", "-"], "a\n" * 2_000_000),
        ("uniq", ["-c"], "".join(f"{i}\n" for i in range(200_000))),
    ],
)
def test_growing_commands_stop_at_the_cap(cmd: str, args: list[str], text: str) -> None:
    with pytest.raises(OutputTooLarge):
        run_command(cmd, args, text, limits=Limits(max_output_chars=1_000_000))


def test_output_at_the_cap_passes() -> None:
    text = "x" * 99 + "\n"  # 100 characters
    assert run_command("cat", [], text, limits=Limits(max_output_chars=100)) == text
    with pytest.raises(OutputTooLarge):
        run_command("cat", [], text, limits=Limits(max_output_chars=99))


def test_plan_memory_leaves_the_step_what_is_left() -> None:
    limits = Limits(max_output_chars=1000, max_plan_chars=1500)
    assert run_command("cat", [], "x" * 499 + "\n", limits=limits, held_chars=1000) == "x" * 499 + "\n"
    with pytest.raises(OutputTooLarge) as info:
        run_command("cat", [], "x" * 600 + "\n", limits=limits, held_chars=1000)
    assert info.value.limit == 500 and "1,000 are in use" in str(info.value)
    with pytest.raises(OutputTooLarge):
        run_command("cat", [], "x\n", limits=limits, held_chars=1500)


def test_buffered_chars_counts_shared_buffers_once() -> None:
    doc = "d" * 100
    other = "o" * 7
    assert buffered_chars([doc, doc, other, doc]) == 107
    assert buffered_chars([]) == 0


def test_default_limits_allow_a_5_mb_output() -> None:
    # issue 10: a plan producing 5 MB of output must still work (it goes through the object store)
    text = "0123456789" * 524_288  # 5 MiB
    assert len(run_command("cat", [], text)) == len(text)
    assert DEFAULT_LIMITS.max_output_chars >= 5 * 2**20


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        Limits(regex_timeout_s=0)
    with pytest.raises(ValueError):
        Limits(max_output_chars=0)


def test_time_limit_stops_a_long_non_regex_step() -> None:
    with pytest.raises(CommandTimeout) as info:
        run_command("sed", ["p"], "x\n" * 400_000, limits=Limits(time_limit_s=0.01))
    assert info.value.code == "command_timeout"


# ------------------------------------------------------------------ worker threads


async def test_run_builtin_keeps_the_event_loop_serving() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with pytest.raises(RegexTimeout):
            await run_builtin("grep", ["-E", "(a+)+$"], LINE_1MB)
        tg.cancel_scope.cancel()
    assert ticks >= 10  # the loop went on ticking during the search (0.3 s of CPU time at least)


async def test_run_builtin_results_and_errors_match_run_command() -> None:
    assert await run_builtin("sed", ["s/a/b/"], "aa\n") == run_command("sed", ["s/a/b/"], "aa\n") == "ba\n"
    with pytest.raises(CommandError, match="unknown command"):
        await run_builtin("sh", ["-c", "id"], "")
    with pytest.raises(OutputTooLarge):
        await run_builtin("sed", ["s/.*/&&/"], "x" * 600 + "\n", limits=Limits(max_output_chars=1000))


async def test_run_builtin_limits_threads() -> None:
    limits = Limits(max_threads=2)
    results = []

    async def one(i: int) -> None:
        results.append(await run_builtin("tr", ["a-z", "A-Z"], f"x{i}\n", limits=limits))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert sorted(results) == sorted(f"X{i}\n" for i in range(8))


async def test_regex_search_for_conditions() -> None:
    assert await regex_search(r"^## ", "# a\n## b\n") is True  # MULTILINE, as conditions are
    assert await regex_search(r"^## ", "# a\n## b\n", multiline=False) is False
    assert await regex_search(r"\d{3}", "ab12") is False
    with pytest.raises(RegexTimeout) as info:
        await regex_search("(a|aa)+$", LINE_41)
    assert info.value.cmd == "conditional_branch" and info.value.pattern == "(a|aa)+$"
    with pytest.raises(CommandError, match="invalid regular expression"):
        await regex_search("(", "x")
