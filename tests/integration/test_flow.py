"""The two-stage flow over a real nats-server, with the model behind httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tandem.actors import PlannerActor, RouterActor
from tandem.messages import ExecutionPlan, decoder
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import RemoteError
from tandem.messages import TaskSubmit
from tandem.services.runtime import start_actors

from ..conftest import MockModel, make_config, run_task

DOC = "# Title\n\nSome **bold** text.\n\n## Part\n\n- one\n- two\n"

PLAN = {
    "version": "1.0",
    "metadata": {"task_type": "text_conversion", "complexity": "medium", "estimated_steps": 4},
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3", "type": "markdown"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["-E", "s/^## (.*)/h2. \\1/"]}},
        {"step": 3, "action": "manual_transform", "params": {"instructions": "Make bold Textile."}},
        {"step": 4, "action": "write_output", "params": {"destination": "fd:1", "format": "textile"}},
    ],
}


def writer(body: dict) -> str:
    text = body["messages"][-1]["content"].split("Text:\n", 1)[1]
    return text.replace("**bold**", "*bold*")


@asynccontextmanager
async def tandem(bus: Bus, model: MockModel, config: Config | None = None) -> AsyncIterator[Config]:
    config = config or make_config()
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=[])}  # these tests script the written plan
    async with start_actors(bus, config, ["planner", "router", "executor", "task"], factories=factories):
        yield config


def spec(**kw) -> TaskSubmit:
    return TaskSubmit(task="Convert this Markdown to Textile", inputs={3: DOC}, input_types={3: "markdown"}, **kw)


async def test_two_stage_runs_plan_in_one_trace(bus: Bus, spans) -> None:
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=writer)
    async with tandem(bus, model) as config:
        result = await run_task(bus, spec(mode="two_stage"))
    assert result.mode == "two_stage" and not result.plan_cached and result.fallback == ""
    assert result.outputs[0].text == "# Title\n\nSome *bold* text.\n\nh2. Part\n\n- one\n- two\n"
    assert [s.status for s in result.steps] == ["ok"] * 4

    # planning call: structured output with the generated plan schema, planning tier model
    plan_call = model.requests[0]
    assert plan_call["model"] == "planner-model"
    assert plan_call["response_format"]["type"] == "json_schema"
    assert "workflow" in plan_call["response_format"]["json_schema"]["schema"]["properties"]
    assert model.requests[1]["model"] == "writer-model"

    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {result.trace_id}  # one task, one trace
    names = [s.name for s in finished]
    for expected in ("invoke_agent task", "send tandem.planner.plan", "process tandem.planner.plan",
                     "send tandem.router.complete", "process tandem.router.complete", "chat planner-model",
                     "chat writer-model", "process tandem.executor.execute", "execute_tool sed"):
        assert expected in names, expected
    chat = next(s for s in finished if s.name == "chat planner-model")
    assert chat.kind.name == "CLIENT"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 11
    assert chat.attributes["gen_ai.usage.output_tokens"] == 7
    process = next(s for s in finished if s.name == "process tandem.executor.execute")
    assert process.kind.name == "CONSUMER"
    assert process.attributes["messaging.system"] == "nats"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.consumer.group.name"] == "tandem.executor"
    assert not process.links  # parented on the producer, not also linked to it
    send = next(s for s in finished if s.name == "send tandem.executor.execute")
    assert process.parent.span_id == send.context.span_id
    step = next(s for s in finished if s.name == "execute_tool sed")
    assert step.attributes["tandem.plan.step"] == 2 and step.attributes["tandem.plan.action"] == "spawn_command"


async def test_successful_plan_is_cached_and_reused(bus: Bus) -> None:
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=writer)
    async with tandem(bus, model) as config:
        first = await run_task(bus, spec(mode="two_stage"))
        second = await run_task(bus, TaskSubmit(task="  convert this markdown   to TEXTILE", inputs={3: "# x\n"},
                                                      input_types={3: "markdown"}, mode="two_stage"))
        bypass = await run_task(bus, spec(mode="two_stage", use_cache=False))
    assert not first.plan_cached and second.plan_cached and not bypass.plan_cached
    assert second.plan == first.plan
    assert sum("response_format" in r for r in model.requests) == 2  # planned twice, not three times


async def test_invalid_plan_is_retried_with_feedback_then_falls_back_to_single_stage(bus: Bus) -> None:
    bad = json.loads(json.dumps(PLAN))
    bad["workflow"][1]["params"]["cmd"] = "bash"
    model = MockModel(planner=lambda body: json.dumps(bad), writer=lambda body: "SINGLE")
    async with tandem(bus, model) as config:
        result = await run_task(bus, spec(mode="two_stage"))
    assert result.mode == "single_stage"
    assert "planning failed" in result.fallback and "$.workflow[1].params.cmd" in result.fallback
    planning = [r for r in model.requests if "response_format" in r]
    assert len(planning) == 2
    assert "invalid" in planning[1]["messages"][-1]["content"]  # the second attempt saw the error
    assert result.outputs[0].text == "SINGLE"


async def test_useless_plan_is_rejected(bus: Bus) -> None:
    useless = {"version": "1.0", "workflow": [{"step": 1, "action": "write_output"}]}
    model = MockModel(planner=lambda body: json.dumps(useless), writer=lambda body: "SINGLE")
    async with tandem(bus, model) as config:
        result = await run_task(bus, spec(mode="two_stage"))
    assert result.mode == "single_stage" and "no read_input" in result.fallback


async def test_auto_mode_uses_complexity_threshold(bus: Bus) -> None:
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "ANSWER")
    async with tandem(bus, model) as config:
        simple = await run_task(bus, TaskSubmit(task="What is the capital of France?"))
        hard = await run_task(bus, spec())
    assert simple.mode == "single_stage" and simple.complexity < config.two_stage.complexity_threshold
    assert simple.outputs[0].text == "ANSWER"
    assert hard.mode == "two_stage" and hard.complexity >= config.two_stage.complexity_threshold


async def test_plan_only_and_execute_plan(bus: Bus) -> None:
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=writer)
    async with tandem(bus, model) as config:
        planned = await run_task(bus, spec(plan_only=True))
        assert planned.mode == "plan_only" and planned.outputs == [] and planned.plan is not None
        calls = len(model.requests)
        ran = await run_task(bus, spec(plan=planned.plan))
    assert ran.mode == "execute_plan"
    assert "h2. Part" in ran.outputs[0].text
    assert sum("response_format" in r for r in model.requests[calls:]) == 0  # no planning


def plan(*steps: dict) -> ExecutionPlan:
    return decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": list(steps)}))


async def test_failed_step_without_recovery_fails_task_with_typed_error(bus: Bus) -> None:
    model = MockModel(planner=lambda body: "{}", writer=lambda body: "x")
    p = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
             {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-Z", "x"]}},
             {"step": 3, "action": "write_output"})
    async with tandem(bus, model) as config:
        with pytest.raises(RemoteError) as info:
            await run_task(bus, spec(plan=p))
    assert info.value.code == "step_failed" and "step 2" in info.value.message


async def test_error_recovery_and_conditional_branch(bus: Bus) -> None:
    model = MockModel(planner=lambda body: "{}", writer=lambda body: "RECOVERED")
    p = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
             {"step": 2, "action": "conditional_branch",
              "params": {"condition": {"kind": "contains", "value": "**"}, "then_step": 3, "else_step": 5}},
             {"step": 3, "action": "spawn_command", "params": {"cmd": "grep", "args": ["--bogus"]}},
             {"step": 4, "action": "error_recovery", "params": {"covers": [3], "strategy": "manual_transform",
                                                               "instructions": "fix it"}},
             {"step": 5, "action": "write_output"})
    async with tandem(bus, model) as config:
        result = await run_task(bus, spec(plan=p))
        skipped = await run_task(bus, TaskSubmit(task="t", inputs={3: "plain"}, plan=p))
    assert [(s.step, s.status) for s in result.steps] == [(1, "ok"), (2, "ok"), (3, "recovered"), (5, "ok")]
    assert result.outputs[0].text == "RECOVERED"
    assert [s.step for s in skipped.steps] == [1, 2, 5]  # branch jumped over step 3
    assert skipped.outputs[0].text == "plain"


async def test_unreachable_model_is_a_typed_failure(bus: Bus) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    model = MockModel(planner=lambda body: "{}", writer=lambda body: "x")
    model.transport = httpx.MockTransport(refuse)
    async with tandem(bus, model) as config:
        with pytest.raises(RemoteError) as info:
            await run_task(bus, TaskSubmit(task="hello", mode="single_stage"))
    assert info.value.code == "step_failed" and "cannot reach" in info.value.message


async def test_failed_recovery_fails_the_step_and_reports_it(bus: Bus) -> None:
    model = MockModel(planner=lambda body: "{}", writer=lambda body: "x")
    p = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
             {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-E", "("]}},
             {"step": 3, "action": "error_recovery", "params": {"covers": [2], "strategy": "retry", "max_retries": 2}},
             {"step": 4, "action": "write_output"})
    events = await bus.subscribe("tandem.events.executor.step")
    await bus.flush()
    async with tandem(bus, model) as config:
        with pytest.raises(RemoteError) as info:
            await run_task(bus, spec(plan=p))
    assert "recovery retry failed" in info.value.message
    seen = []
    while True:
        try:
            seen.append(json.loads((await events.next_msg(timeout=1)).data))
        except Exception:
            break
    assert [(e["step"], e["status"]) for e in seen] == [(1, "ok"), (2, "failed")]


async def test_single_stage_with_several_inputs_gives_the_model_all_of_them(bus: Bus) -> None:
    model = MockModel(planner=lambda body: "{}", writer=lambda body: "MERGED")
    async with tandem(bus, model) as config:
        result = await run_task(bus, TaskSubmit(task="Merge these", inputs={3: "first doc", 4: "second doc"},
                                                      mode="single_stage"))
    assert result.outputs[0].text == "MERGED"
    prompt = model.requests[-1]["messages"][-1]["content"]
    assert "Text:\nfirst doc" in prompt and "[context fd:4]\nsecond doc" in prompt and "Merge these" in prompt
