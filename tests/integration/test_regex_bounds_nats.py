"""Issue 10 regressions over a real nats-server: a ReDoS or doubling plan fails its step, fast, while the
other actors of the same process keep answering pings.

Before: ``grep -E '(a+)+$'`` ran on the event loop with Python's ``re``: ~190 s on a 31-character line,
never on a 1 MB line, and every actor of the process froze; ``sed 's/.*/&&/'`` reached 2.24 GB.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tandem.actors import Actor, Endpoint
from tandem.actors.executor import ExecutorActor
from tandem.messages import ExecuteReply, ExecuteRequest, ExecutionPlan, Ping, Pong, subjects
from tandem.messages.plan import (
    Condition,
    ConditionalBranch,
    ConditionalBranchParams,
    ReadInput,
    ReadInputParams,
    SpawnCommand,
    SpawnCommandParams,
    WriteOutput,
    WriteOutputParams,
)
from tandem.services.bus import Bus
from tandem.services.errors import RemoteError
from tandem.services.textcmd import DEFAULT_LIMITS
from ..conftest import make_config

LINE_31 = "a" * 30 + "!"
LINE_1MB = "a" * 1_000_000 + "!"
ISSUE_BOUND_S = 2.0  # "fails its step with regex_timeout in under 2 s"
PING_TIMEOUT_S = 0.5


class Bystander(Actor):
    """Another actor in the same process: it only answers ``tandem.bystander.ping``."""

    name = "bystander"

    def endpoints(self) -> list[Endpoint]:
        return []


class Pinger:
    """Pings the bystander back to back and records every round trip."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.bus.request(subjects.ping("bystander"), Ping(), Pong, timeout=PING_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                self.failures.append(repr(exc))
            else:
                self.latencies.append(time.monotonic() - started)
            await anyio.sleep(0.02)


@asynccontextmanager
async def executor_and_bystander(bus: Bus) -> AsyncIterator[Pinger]:
    async with anyio.create_task_group() as tg:
        await tg.start(ExecutorActor(bus, make_config()).run)
        await tg.start(Bystander(bus).run)
        pinger = Pinger(bus)
        tg.start_soon(pinger.run)
        yield pinger
        tg.cancel_scope.cancel()


def plan(*middle, first_step: int = 2) -> ExecutionPlan:
    steps = [ReadInput(step=1, params=ReadInputParams(source="fd:3"))]
    steps += middle
    steps.append(WriteOutput(step=first_step + len(middle), params=WriteOutputParams()))
    return ExecutionPlan(workflow=steps)


def spawn(step: int, cmd: str, *args: str) -> SpawnCommand:
    return SpawnCommand(step=step, params=SpawnCommandParams(cmd=cmd, args=list(args)))


async def execute(bus: Bus, the_plan: ExecutionPlan, text: str) -> tuple[ExecuteReply | RemoteError, float]:
    started = time.monotonic()
    try:
        reply = await bus.request(subjects.EXECUTOR_EXECUTE, ExecuteRequest(plan=the_plan, inputs={3: text}),
                                  ExecuteReply, timeout=60)
    except RemoteError as exc:
        return exc, time.monotonic() - started
    return reply, time.monotonic() - started


def assert_pings_answered_throughout(pinger: Pinger, seconds: float) -> None:
    assert not pinger.failures, pinger.failures
    # one answered ping per 0.25 s of work (at least one: on a fast machine the work may end within 60 ms)
    assert len(pinger.latencies) >= max(1, int(seconds / 0.25)), (len(pinger.latencies), seconds)
    assert max(pinger.latencies) < PING_TIMEOUT_S


# named ids: pytest 8.0 puts the whole id in PYTEST_CURRENT_TEST, and a 1 MB one is too long for exec (E2BIG)
@pytest.mark.parametrize(("pattern", "text"), [("(a+)+$", LINE_1MB), ("(a|aa)+$", "a" * 40 + "!")],
                         ids=["nested-plus-1MB-line", "alternation-40"])
async def test_redos_step_fails_with_regex_timeout_while_pings_are_answered(bus: Bus, pattern: str, text: str) -> None:
    async with executor_and_bystander(bus) as pinger:
        await anyio.sleep(0.1)
        pinger.latencies.clear()
        error, seconds = await execute(bus, plan(spawn(2, "grep", "-E", pattern)), text)
        await anyio.sleep(0.1)
    assert isinstance(error, RemoteError), error
    assert error.code == "step_failed"
    assert "regex_timeout" in error.message and f"'{pattern}'" in error.message and "step 2" in error.message
    print(f"\n{pattern} on {len(text):,} chars: step failed after {seconds:.2f} s; "
          f"{len(pinger.latencies)} pings answered, slowest {max(pinger.latencies) * 1000:.0f} ms")
    assert seconds < ISSUE_BOUND_S
    assert_pings_answered_throughout(pinger, seconds)


async def test_issue_pattern_on_31_chars_just_works(bus: Bus) -> None:
    async with executor_and_bystander(bus):
        reply, seconds = await execute(bus, plan(spawn(2, "grep", "-E", "(a+)+$")), LINE_31 + "\nbaa\n")
    assert isinstance(reply, ExecuteReply), reply
    assert reply.outputs[0].text == "baa\n"
    assert seconds < ISSUE_BOUND_S


async def test_redos_in_a_condition_fails_with_regex_timeout(bus: Bus) -> None:
    branch = ConditionalBranch(step=2, params=ConditionalBranchParams(
        condition=Condition(kind="matches", value="^(a+)+$"), then_step=3))
    async with executor_and_bystander(bus) as pinger:
        error, seconds = await execute(bus, plan(branch), LINE_1MB)
    assert isinstance(error, RemoteError), error
    assert "regex_timeout" in error.message and "'^(a+)+$'" in error.message
    assert seconds < ISSUE_BOUND_S
    assert_pings_answered_throughout(pinger, seconds)


async def test_sed_doubling_plan_fails_with_output_too_large(bus: Bus) -> None:
    doubling = [spawn(n, "sed", "s/.*/&&/") for n in range(2, 24)]  # 22 doublings of 1 KB: 4 GB unbounded
    async with executor_and_bystander(bus) as pinger:
        error, seconds = await execute(bus, plan(*doubling), "x" * 1024 + "\n")
    assert isinstance(error, RemoteError), error
    assert error.code == "step_failed" and "output_too_large" in error.message
    # 1,024 x's doubled 14 times (step 15) is 16 MiB plus the newline: the first output past the default cap
    assert DEFAULT_LIMITS.max_output_chars == 16 * 2**20
    assert "step 15 " in error.message, error.message
    print(f"\nsed doubling: failed at step 15 after {seconds:.2f} s")
    assert_pings_answered_throughout(pinger, seconds)
