"""The executor records a plan that ran in the two-stage health numbers after its reply, a failed one before."""

from __future__ import annotations

import json

import anyio
import msgspec
import nats.js.errors
import pytest
from tandem.actors import ExecutorActor, executor
from tandem.messages import (
    ExecuteReply,
    ExecuteRequest,
    ExecutionPlan,
    decoder,
    subjects,
)
from tandem.services.bus import Bus
from tandem.services.errors import RemoteError
from tandem.services.runtime import start_actors

from ..conftest import make_config

PLAN = decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
    {"step": 3, "action": "write_output"},
]}))
FAILING = decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-E", "("]}},  # a bad regex
    {"step": 3, "action": "write_output"},
]}))


async def plans_recorded(bus: Bus) -> list[bool]:
    kv = await bus.key_value(make_config().two_stage.fallback.bucket)
    try:
        return msgspec.json.decode((await kv.get("plans")).value or b"[]")
    except nats.js.errors.KeyNotFoundError:  # nothing recorded yet
        return []


async def execute(bus: Bus, plan: ExecutionPlan) -> ExecuteReply:
    return await bus.request(subjects.EXECUTOR_EXECUTE, ExecuteRequest(plan=plan, inputs={3: "b\na\n"}, task="t"),
                             ExecuteReply, timeout=10)


async def test_a_plan_that_ran_is_recorded_after_the_reply_and_a_failed_one_before(bus: Bus) -> None:
    async with start_actors(bus, make_config(), ["executor"]):
        reply = await execute(bus, PLAN)
        assert reply.outputs[0].text == "a\nb\n"
        with anyio.fail_after(5):
            while await plans_recorded(bus) != [True]:
                await anyio.sleep(0.01)
        with pytest.raises(RemoteError):
            await execute(bus, FAILING)
        assert await plans_recorded(bus) == [True, False]  # at once: the next shape decision counts it


async def test_with_many_records_pending_the_next_one_is_made_before_the_reply(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "HEALTH_IN_FLIGHT", 0)
    made: list[ExecutorActor] = []

    def make(b: Bus, c: object) -> ExecutorActor:
        made.append(ExecutorActor(b, c))
        return made[-1]

    async with start_actors(bus, make_config(), ["executor"], factories={"executor": make}):
        await execute(bus, PLAN)
        assert await plans_recorded(bus) == [True]
        assert made[-1]._health_pending == 0
