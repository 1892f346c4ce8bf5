"""Free-text plan approval over a real nats-server (issue 16 item 1).

An exclusion the user stated is never overridden by a broader reading; a
confirm question states the exact edited plan it proposes and its "yes"
approves exactly that; conditions that cannot be enforced are refused and
asked again, never "noted".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
from tandem.actors import RouterActor
from tandem.messages import ExecutionPlan, decoder
from tandem.services.approval import Approval, approve_plan, ask_approval
from tandem.services.bus import Bus
from tandem.services.runtime import start_actors

from ..conftest import MockModel, make_config

PLAN = {
    "version": "1.0",
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sort", "output_fd": 5}},
        {"step": 3, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-v", "x"]}},
        {"step": 4, "action": "write_output"},
    ],
}


def plan() -> ExecutionPlan:
    return decoder(ExecutionPlan).decode(json.dumps(PLAN))


def model_says(reading: dict | None) -> MockModel:
    """A model that returns ``reading`` for every choice request (``None``: a broken reply)."""
    def reply(body: dict) -> str:
        if reading is None:
            return "{}"
        return json.dumps({"reasoning": "model", "modifications": [], "clarification_needed": False,
                           "extracted_intent": "x", **reading})

    return MockModel(planner=reply, writer=lambda b: "")


@asynccontextmanager
async def parser(bus: Bus, model: MockModel | None = None) -> AsyncIterator[None]:
    base = make_config()
    cfg = msgspec.structs.replace(base, tasks={**base.tasks, "choice": "execution"})
    model = model or model_says(None)
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport)}
    async with start_actors(bus, cfg, ["choice", "router"], factories=factories):
        yield


def answers(*texts: str):
    """An approver that replies with ``texts`` in turn and records the questions."""
    asked: list[str] = []
    it = iter(texts)

    async def approver(question: str) -> str:
        asked.append(question)
        return next(it)

    approver.asked = asked  # type: ignore[attr-defined]
    return approver


@pytest.mark.parametrize("answer", [
    "step 2 is fine, but don't run step 3",
    "2番はいいけど、3番は実行しないで",
    "yes, but not step 3",
    "OK. ステップ3は飛ばして",
    "approve it — without step 3",
])
async def test_exclusion_is_never_overridden_by_an_approval(bus: Bus, answer: str) -> None:
    """The reproduction of issue 16.1: one step named, another excluded, and the approve/reject reading says yes."""
    # the model says "approve everything" to every question: a broader reading than the user's
    async with parser(bus, model_says({"selected_options": [1], "confidence": 0.95})):
        first = await ask_approval(bus, plan(), answer)
        assert 3 not in first.kept_steps and 3 in first.excluded_steps
        if first.decision == "unclear":
            assert first.proposed_steps == [1, 2, 4]
            assert first.question == "Run steps 1, 2, 4 — skip 3? (yes / no)"
            second = await ask_approval(bus, plan(), "yes", pending=first)
        else:
            second = first
    assert second.decision == "partial" and second.kept_steps == [1, 2, 4]
    assert [s.step for s in second.plan.workflow] == [1, 2, 4]


async def test_yes_to_a_proposal_approves_exactly_it_over_the_full_loop(bus: Bus) -> None:
    ask = answers("step 2 is fine, but don't run step 3", "yes")
    async with parser(bus):
        approval = await approve_plan(bus, plan(), ask)
    assert ask.asked[1] == "Run steps 1, 2, 4 — skip 3? (yes / no)"
    assert approval.decision == "partial" and approval.kept_steps == [1, 2, 4]


async def test_no_to_a_proposal_keeps_the_exclusion(bus: Bus) -> None:
    ask = answers("don't run step 3", "no", "go ahead")
    async with parser(bus):
        approval = await approve_plan(bus, plan(), ask)
    assert "which steps should run" in ask.asked[2].lower()
    # "go ahead" is broader than the stated exclusion: it never brings step 3 back
    assert approval.decision != "approved"
    assert 3 not in approval.kept_steps and (approval.proposed_steps == [1, 2, 4] or approval.kept_steps == [1, 2, 4])


async def test_a_later_plain_yes_after_an_exclusion_is_not_all_steps(bus: Bus) -> None:
    """The old flow re-parsed a later "yes" from scratch and ran every step."""
    async with parser(bus):
        first = await ask_approval(bus, plan(), "3はいらない")
        later = await ask_approval(bus, plan(), "はい", pending=first)
    assert first.decision == "unclear" and first.proposed_steps == [1, 2, 4]
    assert later.decision == "partial" and later.kept_steps == [1, 2, 4]


@pytest.mark.parametrize("answer", [
    "yes, but keep the logs",
    "承認。ただしバックアップを取ってから",
    "go ahead as long as it does not touch prod",
])
async def test_conditions_that_cannot_be_enforced_are_refused(bus: Bus, answer: str) -> None:
    async with parser(bus):
        approval = await ask_approval(bus, plan(), answer)
    assert approval.decision == "unclear" and approval.plan is None and approval.kept_steps == []
    assert approval.question.startswith("I cannot enforce") and approval.modifications
    assert "noted" not in approval.question


async def test_enforceable_condition_is_applied(bus: Bus) -> None:
    async with parser(bus):
        approval = await ask_approval(bus, plan(), "yes, but skip step 3")
    assert approval.decision == "partial" and approval.kept_steps == [1, 2, 4]


@pytest.mark.parametrize(("answer", "decision", "kept"), [
    ("yes", "approved", [1, 2, 3, 4]),
    ("no, don't run it", "rejected", []),
    ("skip step 3", "partial", [1, 2, 4]),
    ("1, 2 and 4, not 3", "partial", [1, 2, 4]),
    ("only steps 1, 2 and 4", "partial", [1, 2, 4]),
    ("3以外", "partial", [1, 2, 4]),
])
async def test_clear_answers_act_directly(bus: Bus, answer: str, decision: str, kept: list[int]) -> None:
    async with parser(bus):
        approval = await ask_approval(bus, plan(), answer)
    assert approval.decision == decision and approval.kept_steps == kept, approval


async def test_confirm_level_approval_proposes_the_whole_plan_explicitly(bus: Bus) -> None:
    async with parser(bus):
        first = await ask_approval(bus, plan(), "まあいいか")
        second = await ask_approval(bus, plan(), "yes", pending=first)
    assert first.decision == "unclear" and first.question == "Run steps 1, 2, 3, 4? (yes / no)"
    assert second.decision == "approved" and second.kept_steps == [1, 2, 3, 4]


async def test_step_that_does_not_exist_is_asked_about(bus: Bus) -> None:
    async with parser(bus):
        approval = await ask_approval(bus, plan(), "only step 7")
    assert approval.decision == "unclear" and approval.plan is None


def test_approval_record_evolves_with_defaults() -> None:
    old = msgspec.json.encode({"decision": "unclear"})
    assert msgspec.json.decode(old, type=Approval).proposed_steps == []
