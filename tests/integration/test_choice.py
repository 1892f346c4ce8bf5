"""The choice-parser actor over a real nats-server, and free-text plan approval (design note 001)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from tandem.actors import RouterActor
from tandem.messages import (
    ChoiceContext,
    ChoiceReply,
    ChoiceRequest,
    ExecutionPlan,
    TaskSubmit,
    decoder,
    subjects,
)
from tandem.services.approval import ask_approval, edit_plan
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.runtime import start_actors

from ..conftest import MockModel, make_config, run_task

OPTIONS = ["ファイル作成", "安全モード実行", "完全実行"]


def config() -> Config:
    base = make_config()
    import msgspec

    return msgspec.structs.replace(base, tasks={**base.tasks, "choice": "execution"})


@asynccontextmanager
async def parser(bus: Bus, model: MockModel | None = None) -> AsyncIterator[Config]:
    cfg = config()
    model = model or MockModel(planner=lambda b: "{}", writer=lambda b: "")
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport)}
    async with start_actors(bus, cfg, ["choice", "router", "planner", "executor", "task"], factories=factories):
        yield cfg


async def parse(bus: Bus, answer: str, options=OPTIONS, **kw) -> ChoiceReply:
    ctx = ChoiceContext(available_options=list(options), **kw)
    return await bus.request(subjects.CHOICE_PARSE, ChoiceRequest(answer=answer, context=ctx), ChoiceReply, timeout=10)


@pytest.mark.parametrize(("answer", "selected", "confidence"), [
    ("1番で", [1], 0.95), ("2つ目を実行", [2], 0.9), ("ファイル作成だけ", [1], 0.8),
    ("1と3番", [1, 3], 0.85), ("最初の2つ", [1, 2], 0.8), ("1番だけど、バックアップ取って", [1], 0.7),
])
async def test_seed_table_resolves_on_the_pattern_path(bus: Bus, answer: str, selected: list[int],
                                                       confidence: float) -> None:
    async with parser(bus):
        result = (await parse(bus, answer)).result
    assert result.decided_by == "pattern"
    assert result.selected_options == selected and result.confidence >= confidence
    assert result.action in ("execute", "confirm")


@pytest.mark.parametrize("answer", ["いい感じのやつ", "よくわからない"])
async def test_vague_answers_ask_for_clarification(bus: Bus, answer: str) -> None:
    async with parser(bus):
        result = (await parse(bus, answer)).result
    assert result.selected_options == [] and result.action == "clarify" and result.clarification_needed
    assert "1. ファイル作成" in result.question and "3. 完全実行" in result.question


async def test_out_of_range_selects_nothing(bus: Bus) -> None:
    async with parser(bus):
        result = (await parse(bus, "5番")).result
    assert result.selected_options == [] and result.action == "clarify"


async def test_thresholds_and_critical_risk(bus: Bus) -> None:
    async with parser(bus):
        normal = (await parse(bus, "1番で")).result
        critical = (await parse(bus, "1番で", risk_level="critical")).result
        conditional = (await parse(bus, "1番だけど、バックアップ取って")).result
    assert normal.action == "execute"
    assert critical.action == "confirm" and "critical" in critical.question
    assert conditional.modifications  # the condition is kept
    assert conditional.action == ("execute" if conditional.confidence >= 0.8 else "confirm")


async def test_llm_path_validates_and_drops_missing_options(bus: Bus) -> None:
    def model_says(body: dict) -> str:
        return json.dumps({"selected_options": [3, 7], "confidence": 0.95, "reasoning": "the full one",
                           "modifications": [], "clarification_needed": False, "extracted_intent": "full"})

    model = MockModel(planner=model_says, writer=lambda b: "")
    async with parser(bus, model):
        result = (await parse(bus, "the thorough variant please")).result
    assert result.decided_by == "llm"
    assert "dropped options that do not exist: [7]" in result.reasoning
    # the half-wrong reading is capped below the confirm threshold; note 001's contract: no selection, confidence 0
    assert result.selected_options == [] and result.confidence == 0.0
    assert result.action == "clarify" and result.clarification_needed
    body = model.requests[-1]
    assert body["response_format"]["json_schema"]["name"] == "choice_result"


async def test_llm_failure_falls_back_to_clarification_never_a_guess(bus: Bus) -> None:
    model = MockModel(planner=lambda b: httpx.Response(500, json={"error": {"message": "down"}}), writer=lambda b: "")
    async with parser(bus, model):
        result = (await parse(bus, "the thorough variant please")).result
    assert result.selected_options == [] and result.action == "clarify"


async def test_cache_answers_repeated_questions(bus: Bus) -> None:
    async with parser(bus):
        first = (await parse(bus, "1と3番")).result
        second = (await parse(bus, "  1と3番 ")).result
    assert first.decided_by == "pattern" and second.decided_by == "cache"
    assert second.selected_options == first.selected_options


async def test_malformed_choice_request_names_the_field(bus: Bus) -> None:
    async with parser(bus):
        msg = await bus.nc.request(subjects.CHOICE_PARSE,
                                   b'{"type":"choice_request","answer":"1","context":{"available_options":[]}}',
                                   timeout=5)
    err = json.loads(msg.data)
    assert err["type"] == "error" and err["path"] == "$.context.available_options"


PLAN = {
    "version": "1.0",
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sort", "output_fd": 5}},
        {"step": 3, "action": "spawn_command", "params": {"cmd": "uniq", "args": ["-c"], "input_fd": 5}},
        {"step": 4, "action": "write_output"},
    ],
}


def plan() -> ExecutionPlan:
    return decoder(ExecutionPlan).decode(json.dumps(PLAN))


def test_edit_plan_reports_steps_that_lose_their_input() -> None:
    edited, problems = edit_plan(plan(), {1, 3, 4})
    assert edited is None and problems and "step 3" in problems[0] and "input_fd 5" in problems[0]
    edited, problems = edit_plan(plan(), {1, 2, 4})
    assert problems == [] and [s.step for s in edited.workflow] == [1, 2, 4]


@pytest.mark.parametrize(("answer", "decision", "kept"), [
    ("yes", "approved", [1, 2, 3, 4]),
    ("はい、お願いします", "approved", [1, 2, 3, 4]),
    ("no, don't run it", "rejected", []),
    ("承認しないで", "rejected", []),
    ("skip step 3", "partial", [1, 2, 4]),
    ("1, 2 and 4 only", "partial", [1, 2, 4]),
])
async def test_free_text_approval_per_step(bus: Bus, answer: str, decision: str, kept: list[int]) -> None:
    async with parser(bus):
        approval = await ask_approval(bus, plan(), answer)
    assert approval.decision == decision
    assert approval.kept_steps == kept
    if decision == "partial":
        assert [s.step for s in approval.plan.workflow] == kept


async def test_approve_drives_run_end_to_end_in_one_trace(bus: Bus, spans) -> None:
    asked: list[str] = []

    async def approver(question: str) -> str:
        asked.append(question)
        return "skip step 3"

    async with parser(bus):
        result = await run_task(bus, TaskSubmit(task="count lines", inputs={3: "b\na\nb\n"}, plan=plan(),
                                                approval="ask"), approver=approver)
        rejected = await run_task(bus, TaskSubmit(task="count lines", inputs={3: "b\na\nb\n"}, plan=plan(),
                                                  approval="ask"), approver=lambda q: _const("いいえ、実行しないで"))
    assert "1. read fd:3" in asked[0]
    assert result.approval == "partial" and result.approved_steps == [1, 2, 4]
    assert result.outputs[0].text == "a\nb\nb\n"  # sorted, step 3 (uniq -c) skipped
    assert rejected.mode == "not_run" and rejected.approval == "rejected" and rejected.outputs == []
    finished = spans.get_finished_spans()
    trace_ids = {s.context.trace_id for s in finished if s.name in (
        "process tandem.choice.parse", "process tandem.executor.execute")}
    assert len({s.context.trace_id for s in finished if s.name == "invoke_agent task"}) == 2
    first = next(s for s in finished if s.name == "invoke_agent task").context.trace_id
    assert first in trace_ids
    choice_spans = [s for s in finished if s.name == "process tandem.choice.parse" and s.context.trace_id == first]
    assert len(choice_spans) == 2  # approve/reject reading and the step reading, inside the task's trace


async def _const(text: str) -> str:
    return text


def model_answers(selected: list[int], confidence: float, **extra) -> MockModel:
    """A model that always returns this reading (whatever the answer)."""
    def reply(body: dict) -> str:
        return json.dumps({"selected_options": selected, "confidence": confidence, "reasoning": "model reading",
                           "modifications": [], "clarification_needed": False, "extracted_intent": "x", **extra})

    return MockModel(planner=reply, writer=lambda b: "")


async def test_contract_of_note_001_on_the_wire(bus: Bus) -> None:
    """0.6–0.8: the selection with clarification_needed; below 0.6: no selection, confidence 0 (issue 16.4)."""
    async with parser(bus, model_answers([2], 0.75)):
        medium = (await parse(bus, "the thorough variant please")).result
    async with parser(bus, model_answers([2], 0.4)):
        low = (await parse(bus, "the thorough variant please")).result
    async with parser(bus):
        high = (await parse(bus, "2番で")).result
        hedged = (await parse(bus, "たぶん2番")).result
    assert medium.decided_by == "llm" and medium.selected_options == [2] and medium.confidence == 0.75
    assert medium.action == "confirm" and medium.clarification_needed and "2. 安全モード実行" in medium.question
    assert low.selected_options == [] and low.confidence == 0.0 and low.clarification_needed and low.action == "clarify"
    assert high.action == "execute" and not high.clarification_needed
    assert hedged.action == "confirm" and hedged.clarification_needed and hedged.selected_options == [2]


async def test_model_is_told_why_the_pattern_path_declined(bus: Bus) -> None:
    model = model_answers([1], 0.9)
    async with parser(bus, model):
        result = (await parse(bus, "ファイル作成 for the reports")).result
    prompt = model.requests[-1]["messages"][-1]["content"]
    assert "Why the pattern matcher did not decide" in prompt and '"reports"' in prompt
    assert result.decided_by == "llm" and result.unexplained == ["reports"]


@pytest.mark.parametrize(("answer", "model_pick", "selected", "action"), [
    ("not 3, the thorough variant please", [3], [], "clarify"),  # the model picks the refused option
    ("not 3, the thorough variant please", [2, 3], [2], "confirm"),  # refused option removed, rest confirmed
    ("as if I'd pick 2, lol", [2], [], "clarify"),  # sarcasm: the named option is refused
    ("last time I picked 2, weird", [2], [2], "confirm"),  # a past mention: never acted on
    ("2 is better than 3 honestly", [3], [3], "confirm"),  # a comparison: never acted on
])
async def test_unsafe_model_readings_are_downgraded(bus: Bus, answer: str, model_pick: list[int],
                                                    selected: list[int], action: str) -> None:
    async with parser(bus, model_answers(model_pick, 0.95)):
        result = (await parse(bus, answer)).result
    assert result.decided_by == "llm"
    assert result.selected_options == selected and result.action == action
    assert result.action != "execute"
    if action == "confirm":  # a confirm question never proposes a refused option
        proposal = result.question.split("— not")[0]
        assert all(f"{refused}. " not in proposal for refused in result.refused_options)


async def test_confirm_question_names_the_refused_options(bus: Bus) -> None:
    async with parser(bus, model_answers([2, 3], 0.95)):
        result = (await parse(bus, "not 3, the thorough variant please")).result
    assert result.refused_options == [3]
    assert result.question.startswith("Did you mean: 2. 安全モード実行 — not 3. 完全実行?")


async def test_in_process_pattern_reading_equals_the_actors(bus: Bus) -> None:
    """`tandem choose --no-llm` reads in process (no NATS); it must answer exactly as the actor does."""
    from tandem.services.choice._result import pattern_choice

    answers = ["1番で", "2つ目を実行", "最初の2つ", "いい感じのやつ", "not 2", "the second one, no wait, 3",
               "yeah right, 1", "全部", "1番だけど、バックアップ取って", "何番がいい?"]
    async with parser(bus):
        for answer in answers:
            ctx = ChoiceContext(available_options=list(OPTIONS))
            over_nats = await bus.request(subjects.CHOICE_PARSE, ChoiceRequest(answer=answer, context=ctx,
                                                                               use_llm=False),
                                          ChoiceReply, timeout=10)
            assert pattern_choice(answer, ctx) == over_nats.result, answer
