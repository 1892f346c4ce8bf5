"""Issue 16 conformance over real NATS (mock model over HTTP): truncation, routing as configured,
the note's config spelling, the poor-performance fallback, loud credential errors, built-in limits, skills."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
from tandem.actors import PlannerActor, RouterActor
from tandem.actors.executor import ExecutorActor
from tandem.actors.router import TwoStageHealth, match_skill
from tandem.messages import ShapeDecision, ShapeRequest, TaskSubmit, subjects
from tandem.services.bus import Bus
from tandem.services.config import (
    BuiltinsConfig,
    Capabilities,
    Config,
    ModelConfig,
    SkillConfig,
    TwoStageConfig,
    TwoStageFallback,
    load_config,
)
from tandem.services.errors import ConfigError, RemoteError
from tandem.services.runtime import start_actors
from tandem.services.usage import load_usage, summarize_usage

from ..conftest import MockModel, chat_response, make_config, run_task

DOC = "# Title\n\nSome **bold** text.\n"

PLAN = {
    "version": "1.0",
    "metadata": {"task_type": "text_conversion", "complexity": "medium", "estimated_steps": 3,
                 "fallback_strategy": "abort"},
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3", "type": "markdown"}},
        {"step": 2, "action": "manual_transform", "params": {"instructions": "Make bold Textile."}},
        {"step": 3, "action": "write_output", "params": {"destination": "fd:1", "format": "textile"}},
    ],
}


def cut_off(content: str, model: str) -> httpx.Response:
    body = chat_response(content, model=model, completion_tokens=50)
    body["choices"][0]["finish_reason"] = "length"
    return httpx.Response(200, json=body)


@asynccontextmanager
async def tandem(bus: Bus, model: MockModel, config: Config) -> AsyncIterator[Config]:
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=[])}
    async with start_actors(bus, config, ["planner", "router", "executor", "task"], factories=factories):
        yield config


def spec(**kw) -> TaskSubmit:
    return TaskSubmit(task="Rewrite this Markdown as Textile", inputs={3: DOC}, input_types={3: "markdown"}, **kw)


# -- item 2: no silent truncation ------------------------------------------------------------------------------


async def test_truncated_transform_fails_its_step_with_the_limit_and_writes_nothing(bus: Bus) -> None:
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: cut_off("h1. Tit", body["model"]))
    async with tandem(bus, model, make_config()):
        with pytest.raises(RemoteError) as caught:
            await run_task(bus, spec(mode="two_stage"))
    assert caught.value.code == "step_failed"
    assert "step 2 (manual_transform) failed: truncated_output" in caught.value.message
    assert "max_tokens 8000" in caught.value.message  # note 000's default, within the mock's 8192 context
    writer_calls = [b for b in model.requests if "response_format" not in b]
    assert writer_calls and writer_calls[0]["max_tokens"] == 8000


async def test_small_context_caps_the_budget_and_the_step_says_so(bus: Bus) -> None:
    config = make_config()
    small = msgspec.structs.replace(config.models["writer-model"], capabilities=Capabilities(context_length=4096))
    config = msgspec.structs.replace(config, models={**config.models, "writer-model": small})
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "h1. Title\n\nSome *bold* text.\n")
    async with tandem(bus, model, config):
        result = await run_task(bus, spec(mode="two_stage"))
    asked = [b for b in model.requests if "response_format" not in b][0]["max_tokens"]
    assert 64 < asked < 4096
    assert f"max_tokens {asked}: the model's context of 4096 tokens" in result.steps[1].detail


async def test_truncated_plan_is_reported_as_truncated_and_falls_back(bus: Bus) -> None:
    model = MockModel(planner=lambda body: cut_off(json.dumps(PLAN)[:80], body["model"]),
                      writer=lambda body: "h1. Title\n")
    async with tandem(bus, model, make_config()):
        result = await run_task(bus, spec(mode="two_stage"))
    assert result.mode == "single_stage"
    assert "truncated_output" in result.fallback and "max_planning_tokens 2000" in result.fallback
    assert "not valid JSON" not in result.fallback
    assert len([b for b in model.requests if "response_format" in b]) == 1  # the same cap is not retried


async def test_degenerate_answer_fails_the_step(bus: Bus) -> None:
    loop = "\n\n".join(["The quick brown fox jumps over the lazy dog again."] * 30)
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: loop)
    async with tandem(bus, model, make_config()):
        with pytest.raises(RemoteError) as caught:
            await run_task(bus, spec(mode="two_stage"))
    assert "degenerate_output" in caught.value.message


# -- item 5: single stage routed as single_stage -------------------------------------------------------------------


async def test_single_stage_runs_on_the_single_stage_tier_and_the_log_agrees(bus: Bus) -> None:
    config = make_config()
    config = msgspec.structs.replace(
        config, models={**config.models, "big-model": ModelConfig(provider="mock", model="big-model")},
        tiers={**config.tiers, "standard": ["big-model"]},
        tasks={**config.tasks, "single_stage": "standard"})
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "h1. Title\n")
    async with tandem(bus, model, config):
        result = await run_task(bus, spec(mode="single_stage"))
    assert result.mode == "single_stage"
    assert [b["model"] for b in model.requests] == ["big-model"]
    records = [r for r in load_usage(Path(os.environ["TANDEM_USAGE_LOG"])) if r.request_id == result.task_id]
    assert [(r.task, r.tier, r.model) for r in records] == [("single_stage", "standard", "big-model")]


# -- item 7: note 000's configuration loads ------------------------------------------------------------------------


def test_note_000_configuration_extension_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("""
providers: {openai: {kind: openai, base_url: "http://x.invalid/v1"}}
models:
  gpt-4o: {provider: openai, model: gpt-4o}
  mini: {provider: openai, model: gpt-4o-mini}
tiers: {heavy: [mini], cheap: [mini]}
tasks: {planning: heavy, manual_transform: cheap, single_stage: cheap}
llm:
  two_stage:
    enabled: false
    complexity_threshold: 0.5
  planning_model: "gpt-4o"
  execution_model: "gpt-4o-mini"
  max_planning_tokens: 1500
  max_execution_tokens: 6000
""")
    config = load_config(path)
    assert config.two_stage.enabled is False and config.two_stage.complexity_threshold == 0.5
    assert (config.two_stage.max_planning_tokens, config.two_stage.max_execution_tokens) == (1500, 6000)
    assert config.tiers[config.tier_for("planning")] == ["gpt-4o", "mini"]  # the tier's models stay as fallbacks
    assert config.tiers[config.tier_for("manual_transform")] == ["mini"]
    assert config.tier_for("single_stage") == config.tier_for("manual_transform")


def test_note_000_unknown_model_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers: {p: {kind: openai}}\nmodels: {m: {provider: p, model: m}}\nllm: {planning_model: nope}\n")
    with pytest.raises(ConfigError, match=r"llm\.planning_model: no model key or model id is 'nope'"):
        load_config(path)


def test_shipped_defaults_follow_note_000() -> None:
    config = load_config()
    assert (config.two_stage.max_planning_tokens, config.two_stage.max_execution_tokens) == (2000, 8000)
    assert config.two_stage.enabled and config.nats.store == "persistent"
    assert config.builtins == BuiltinsConfig()


async def test_two_stage_disabled_in_config_runs_single_stage(bus: Bus) -> None:
    config = msgspec.structs.replace(make_config(), two_stage=TwoStageConfig(enabled=False))
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "h1. Title\n")
    async with tandem(bus, model, config):
        result = await run_task(bus, spec())
    assert result.mode == "single_stage" and "two_stage.enabled: false" in result.shape_reason
    assert not [b for b in model.requests if "response_format" in b]


# -- item 8: switch to single stage when two stage performs poorly -----------------------------------------------------


async def test_failing_plans_switch_new_tasks_to_single_stage_with_the_reason(bus: Bus) -> None:
    config = msgspec.structs.replace(make_config(), two_stage=TwoStageConfig(
        fallback=TwoStageFallback(min_runs=2, max_failure_rate=0.5, bucket="test_health")))
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: cut_off("x", body["model"]))
    async with tandem(bus, model, config):
        for _ in range(2):  # two plans fail (truncated step)
            with pytest.raises(RemoteError):
                await run_task(bus, spec(mode="two_stage"))
        decision = await bus.request(subjects.ROUTER_SHAPE, ShapeRequest(task="t", complexity=0.9), ShapeDecision,
                                     timeout=5)
    assert decision.mode == "single_stage"
    assert "two stage performing poorly: 2 of the last 2 plans failed" in decision.reason


async def test_slow_planning_switches_to_single_stage(bus: Bus) -> None:
    config = msgspec.structs.replace(make_config(), two_stage=TwoStageConfig(
        fallback=TwoStageFallback(min_runs=2, max_planning_latency_s=5, bucket="test_health_latency")))
    health = TwoStageHealth(await bus.key_value("test_health_latency"), config)
    assert await health.verdict() is None
    for seconds in (9.0, 12.0):
        await health.record_planning(seconds)
    await health.record_plan(True)
    assert "planning took 10.5s on average over the last 2 calls" in (await health.verdict() or "")


# -- item 10: a rejected credential is loud --------------------------------------------------------------------------


async def test_rejected_key_moves_on_but_is_reported(bus: Bus, tmp_path: Path, caplog) -> None:
    from tandem.services.config import ProviderConfig, RouterConfig

    config = make_config()
    config = msgspec.structs.replace(
        config,
        providers={**config.providers, "keyed": ProviderConfig(kind="openai", base_url="http://keyed.invalid/v1")},
        models={**config.models, "keyed-model": ModelConfig(provider="keyed", model="keyed-model")},
        tiers={**config.tiers, "execution": ["keyed-model", "writer-model"]},
        router=RouterConfig(usage_log=str(tmp_path / "usage.jsonl")))
    keyed = msgspec.structs.replace(config.providers["keyed"], api_key_env="TANDEM_TEST_KEY")
    config = msgspec.structs.replace(config, providers={**config.providers, "keyed": keyed})

    def writer(body: dict) -> httpx.Response | str:
        if body["model"] == "keyed-model":
            return httpx.Response(401, json={"error": {"message": "Incorrect API key provided"}})
        return "h1. Title\n"

    os.environ["TANDEM_TEST_KEY"] = "wrong"
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=writer)
    caplog.set_level(logging.ERROR, logger="tandem.router")
    old = os.environ.get("TANDEM_USAGE_LOG")
    os.environ["TANDEM_USAGE_LOG"] = str(tmp_path / "usage.jsonl")
    try:
        async with tandem(bus, model, config):
            for _ in range(2):
                result = await run_task(bus, spec(mode="single_stage"))
                assert result.outputs[0].text == "h1. Title\n"
    finally:
        if old is not None:
            os.environ["TANDEM_USAGE_LOG"] = old
    assert [b["model"] for b in model.requests] == ["keyed-model", "writer-model"] * 2  # never retried on a 401
    loud = [r.getMessage() for r in caplog.records if "credential rejected" in r.getMessage()]
    assert len(loud) == 1 and "'keyed'" in loud[0] and "TANDEM_TEST_KEY" in loud[0]
    records = load_usage(tmp_path / "usage.jsonl")
    assert [r.credential_rejected for r in records if not r.ok] == [True, True]
    assert summarize_usage(records).by_model["keyed-model"].credential_rejected == 2


# -- builtins limits from config -------------------------------------------------------------------------------------


async def test_builtin_limits_come_from_config_and_the_cause_code_reaches_the_client(bus: Bus) -> None:
    config = msgspec.structs.replace(make_config(), builtins=BuiltinsConfig(max_output_chars=20))
    plan = {"version": "1.0", "metadata": {"task_type": "t", "complexity": "low", "estimated_steps": 3,
                                           "fallback_strategy": "abort"},
            "workflow": [{"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
                         {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["p"]}},
                         {"step": 3, "action": "write_output", "params": {}}]}
    assert ExecutorActor(bus, config).limits.max_output_chars == 20
    model = MockModel(planner=lambda body: json.dumps(plan), writer=lambda body: "unused")
    async with tandem(bus, model, config):
        with pytest.raises(RemoteError) as caught:
            await run_task(bus, spec(mode="two_stage"))
    assert caught.value.code == "step_failed"
    assert "step 2 (spawn_command) failed: " in caught.value.message
    assert "output_too_large" in caught.value.message


# -- item 6: skills ----------------------------------------------------------------------------------------------------


def test_shipped_skills_are_reached_by_the_analyser_rules() -> None:
    config = load_config()
    assert match_skill(config, "Convert this Markdown to Textile").skill == "conversion"
    assert match_skill(config, "この文書を要約して").skill == "summarization"
    assert match_skill(config, "Translate into Japanese").skill == "translation"
    assert match_skill(config, "hello there") is None
    assert all(s.category and s.capabilities for s in config.skills.values())


async def test_skill_is_chosen_for_the_model_step_and_said_why(bus: Bus) -> None:
    config = make_config()
    config = msgspec.structs.replace(
        config, models={**config.models, "conv-model": ModelConfig(provider="mock", model="conv-model")},
        skills={"conversion": SkillConfig(preferred="conv-model", category="transformation",
                                          capabilities=["format_conversion"], keywords=[r"\bas textile\b"])})
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "h1. Title\n")
    async with tandem(bus, model, config):
        result = await run_task(bus, spec(mode="two_stage"))
    assert [b["model"] for b in model.requests if "response_format" not in b] == ["conv-model"]
    assert "skill conversion (rule: 'as Textile' matches conversion)" in result.steps[1].detail


async def test_model_stage_of_the_analyser_classifies_with_constrained_output(bus: Bus) -> None:
    from tandem.services.config import AnalyserConfig

    config = make_config()
    config = msgspec.structs.replace(
        config, models={**config.models, "sum-model": ModelConfig(provider="mock", model="sum-model")},
        tasks={**config.tasks, "skill_analysis": "execution"},
        analyser=AnalyserConfig(use_model=True),
        skills={"summarization": SkillConfig(preferred="sum-model", description="condense a text")})

    def planner(body: dict) -> str:
        if body["response_format"]["json_schema"]["name"] == "skill_choice":
            assert body["response_format"]["json_schema"]["schema"]["properties"]["skill"]["enum"] == [
                "summarization", "none"]
            return '{"skill": "summarization"}'
        return json.dumps(PLAN)

    model = MockModel(planner=planner, writer=lambda body: "short\n")
    async with tandem(bus, model, config):
        result = await run_task(bus, spec(mode="two_stage"))
    assert "skill summarization (model: " in result.steps[1].detail
    assert [b["model"] for b in model.requests if "response_format" not in b] == ["sum-model"]
