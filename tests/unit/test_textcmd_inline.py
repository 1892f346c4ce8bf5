"""run_builtin runs a quick command on the event loop and goes to a worker thread only when it is not quick."""

from __future__ import annotations

import threading
import time

import anyio.to_thread
import pytest
from tandem.services import textcmd
from tandem.services.textcmd import (
    CommandError,
    Limits,
    OutputTooLarge,
    RegexTimeout,
    run_builtin,
    run_command,
)

pytestmark = pytest.mark.anyio

LINE_41 = "a" * 40 + "b"  # (a|aa)+$ backtracks for minutes on it


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands handed to a worker thread."""
    handed: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def spy(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        handed.append(fn.args[0])
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    return handed


@pytest.fixture
def roomy_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short budget no loaded machine outruns: these tests are about where a command runs, not how fast."""
    monkeypatch.setattr(textcmd, "INLINE_BUDGET_S", 5.0)
    monkeypatch.setattr(textcmd, "_INLINE_LIMITS", {})


@pytest.mark.usefixtures("roomy_budget")
async def test_a_quick_command_on_a_small_input_runs_without_a_thread(threads: list[str]) -> None:
    text = "name,age\nalice,30\n" * 8
    assert await run_builtin("sed", ["-E", "s/,/ | /g"], text) == run_command("sed", ["-E", "s/,/ | /g"], text)
    assert await run_builtin("sort", [], "b\na\n") == "a\nb\n"
    assert threads == []


@pytest.mark.usefixtures("roomy_budget")
async def test_errors_of_the_command_itself_come_at_once(threads: list[str]) -> None:
    with pytest.raises(CommandError, match="unknown command"):
        await run_builtin("sh", ["-c", "id"], "")
    with pytest.raises(OutputTooLarge):  # the sizes are the real ones on the event loop too
        await run_builtin("sed", ["s/.*/&&/"], "x" * 600 + "\n", limits=Limits(max_output_chars=1000))
    assert threads == []


async def test_a_command_that_outruns_the_short_budget_runs_again_in_a_thread(threads: list[str]) -> None:
    started = time.perf_counter()
    with pytest.raises(RegexTimeout) as info:  # the real budget (0.3 s of CPU) decided, in the thread
        await run_builtin("grep", ["-E", "(a|aa)+$"], LINE_41)
    assert threads == ["grep"] and info.value.cmd == "grep"
    assert time.perf_counter() - started >= 0.2
    # a long input never tries the event loop
    assert await run_builtin("tr", ["a-z", "A-Z"], "x" * (textcmd.INLINE_MAX_CHARS + 1)) == "X" * (
        textcmd.INLINE_MAX_CHARS + 1)
    assert threads == ["grep", "tr"]


async def test_the_try_on_the_event_loop_has_the_short_budget_and_the_thread_the_real_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bool, float, float]] = []
    real = textcmd.run_command

    def spy(cmd, args, text, *, limits, held_chars=0):  # type: ignore[no-untyped-def]
        calls.append((threading.current_thread() is threading.main_thread(), limits.regex_timeout_s,
                      limits.time_limit_s))
        return real(cmd, args, text, limits=limits, held_chars=held_chars)

    monkeypatch.setattr(textcmd, "run_command", spy)
    with pytest.raises(RegexTimeout):
        await run_builtin("grep", ["-E", "(a|aa)+$"], LINE_41)
    short = textcmd.INLINE_BUDGET_S
    real_limits = textcmd.DEFAULT_LIMITS
    assert calls == [(True, short, short), (False, real_limits.regex_timeout_s, real_limits.time_limit_s)]
