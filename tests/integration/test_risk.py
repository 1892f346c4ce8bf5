"""Issue 16.3: a plan's risk from its steps reaches the approval; critical plans get note 001's four options."""

from __future__ import annotations

import json

from tandem.messages import ExecutionPlan, decoder
from tandem.services.approval import approve_plan, assess_risk
from tandem.services.bus import Bus

from .test_approval import parser


def make(steps: list[dict]) -> ExecutionPlan:
    return decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": steps}))


SAFE = make([{"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
             {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
             {"step": 3, "action": "write_output"}])

RISKY = make([{"step": 1, "action": "read_input", "params": {"source": "fd:3", "expected_size": "large"}},
              {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-v", "x"]}},
              {"step": 3, "action": "manual_transform", "params": {"instructions": "rewrite it"}},
              {"step": 4, "action": "write_output"}])


def test_risk_rules() -> None:
    assert assess_risk(SAFE).level == "low"
    assert assess_risk(RISKY).level == "high"
    assert assess_risk(RISKY).reasons == ["a model writes text (+1)", "a model step on a large input (+2)"]
    assert assess_risk(RISKY, writes_file=True).level == "critical"
    assert assess_risk(SAFE, input_sizes={3: 50_000}, writes_file=True).level == "medium"
    many = make([{"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
                 *({"step": i, "action": "spawn_command", "params": {"cmd": "sort"}} for i in range(2, 19)),
                 {"step": 19, "action": "write_output"}])
    assert "19 steps (+2)" in assess_risk(many).reasons


def answers(*texts: str):
    questions: list[str] = []
    queue = list(texts)

    async def approver(question: str) -> str:
        questions.append(question)
        return queue.pop(0)

    return approver, questions


async def test_critical_plan_offers_four_options_and_shows_details(bus: Bus) -> None:
    approver, questions = answers("詳細確認", "1", "yes")
    async with parser(bus):
        approval = await approve_plan(bus, RISKY, approver, writes_file=True)
    assert "risk: critical" in questions[0] and "代替案選択" in questions[0] and "詳細確認" in questions[0]
    assert questions[1].startswith("Plan details:") and '"instructions":"rewrite it"' in questions[1]
    assert '3. manual_transform' in questions[1]
    # critical always confirms: "run" is asked once more, and that yes approves the whole plan
    assert questions[2].startswith("Run steps 1, 2, 3, 4")
    assert approval.decision == "approved" and approval.kept_steps == [1, 2, 3, 4]


async def test_critical_alternative_asks_which_steps(bus: Bus) -> None:
    approver, questions = answers("代替案選択", "skip 3", "yes")
    async with parser(bus):
        approval = await approve_plan(bus, RISKY, approver, writes_file=True)
    assert questions[1].startswith("Which steps should run?")
    assert approval.decision == "partial" or approval.proposed_steps == [1, 2, 4]
    assert 3 not in approval.kept_steps


async def test_low_risk_plan_is_approved_by_one_yes(bus: Bus) -> None:
    approver, questions = answers("yes")
    async with parser(bus):
        approval = await approve_plan(bus, SAFE, approver)
    assert approval.decision == "approved" and len(questions) == 1 and "risk" not in questions[0]
