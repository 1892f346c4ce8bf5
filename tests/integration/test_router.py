"""Router over a real nats-server with providers behind httpx.MockTransport: fallback, budgets,
cooldown, capability filtering, skill weighting, usage log, routing events and the shape decision."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tandem.actors import RouterActor
from tandem.messages import ChatMessage, CompletionReply, CompletionRequest, ShapeDecision, ShapeRequest, decoder, subjects
from tandem.messages.routing import RoutingEvent
from tandem.services.bus import Bus
from tandem.services.config import (
    AllowedParams,
    Capabilities,
    Config,
    CooldownPolicy,
    FallbackPolicy,
    ModelConfig,
    NatsConfig,
    Price,
    ProviderConfig,
    RouterConfig,
    SkillConfig,
    StatusPolicy,
)
from tandem.services.errors import RemoteError
from tandem.messages import TaskSubmit
from tandem.services.runtime import start_actors
from tandem.services.usage import load_usage, summarize_usage

from ..conftest import run_task, chat_response

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture(autouse=True)
def usage_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the router's usage log (``$TANDEM_USAGE_LOG`` wins over the config) into the test's directory."""
    path = tmp_path / "usage.jsonl"
    monkeypatch.setenv("TANDEM_USAGE_LOG", str(path))
    return path


def config(tmp_path: Path, *, fallback: FallbackPolicy | None = None, cooldown: CooldownPolicy | None = None,
           models: dict[str, ModelConfig] | None = None, **kw) -> Config:
    models = models or {m: ModelConfig(provider="mock", model=f"{m}-model", price=Price(input_per_1m=1, output_per_1m=2))
                        for m in MODELS}
    return Config(
        nats=NatsConfig(request_timeout_s=10),
        providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1")},
        models=models,
        tiers={"standard": list(models)},
        tasks={"planning": "standard", "single_stage": "standard", "manual_transform": "standard", "chat": "standard"},
        router=RouterConfig(fallback=fallback or FallbackPolicy(), cooldown=cooldown or CooldownPolicy(failures=99),
                            usage_log=str(tmp_path / "usage.jsonl")),
        **kw,
    )


class Script:
    """Per-model scripted answers: a list of responses (or exceptions) consumed in order."""

    def __init__(self, **answers: list) -> None:
        self.answers = {f"{k}-model": list(v) for k, v in answers.items()}
        self.calls: list[str] = []
        self.bodies: list[dict] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body["model"].removesuffix("-model"))
        self.bodies.append(body)
        queue = self.answers.get(body["model"]) or [httpx.Response(200, json=chat_response("ok", model=body["model"]))]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return httpx.Response(200, json=chat_response(answer, model=body["model"]))
        return answer


@asynccontextmanager
async def router(bus: Bus, cfg: Config, script: Script, waits: list[float] | None = None) -> AsyncIterator[RouterActor]:
    async def sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)

    actor = RouterActor(bus, cfg, transport=script.transport, sleep=sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        yield actor
        tg.cancel_scope.cancel()


def ask(task: str = "chat", **kw) -> CompletionRequest:
    return CompletionRequest(task=task, messages=[ChatMessage(role="user", content="hi")], **kw)


async def complete(bus: Bus, request: CompletionRequest | None = None) -> CompletionReply:
    return await bus.request(subjects.ROUTER_COMPLETE, request or ask(), CompletionReply, timeout=10)


def status(code: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(code, headers=headers or {}, json={"error": {"message": f"status {code}"}})


async def test_429_then_503_then_third_answers(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(429)], beta=[status(503)], gamma=["from gamma"])
    waits: list[float] = []
    events = await bus.subscribe(subjects.EVENT_ROUTED)
    async with router(bus, config(tmp_path, fallback=FallbackPolicy(max_retries_per_model=0)), script, waits):
        reply = await complete(bus)
    assert reply.content == "from gamma" and reply.fallback_chain == ["alpha", "beta", "gamma"]
    assert script.calls == ["alpha", "beta", "gamma"] and waits == []  # moved on at once
    event = decoder(RoutingEvent).decode((await events.next_msg(timeout=2)).data)
    assert [(a.model, a.ok, a.status_code) for a in event.attempts] == [
        ("alpha", False, 429), ("beta", False, 503), ("gamma", True, None)]
    records = load_usage(tmp_path / "usage.jsonl")
    assert [(r.model, r.ok, r.status_code, r.fallback_chain) for r in records] == [
        ("alpha", False, 429, ["alpha"]), ("beta", False, 503, ["alpha", "beta"]),
        ("gamma", True, None, ["alpha", "beta", "gamma"])]
    assert records[2].usage.input_tokens == 11 and records[2].cost_usd == pytest.approx((11 * 1 + 7 * 2) / 1e6)
    assert summarize_usage(records).chains == [("alpha → beta → gamma", 1)]


async def test_retry_after_that_fits_is_honoured_on_the_same_model(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(429, {"Retry-After": "2"}), "after wait"])
    waits: list[float] = []
    async with router(bus, config(tmp_path), script, waits):
        reply = await complete(bus)
    assert reply.content == "after wait" and script.calls == ["alpha", "alpha"] and waits == [2.0]


async def test_retry_after_beyond_budget_moves_on_at_once(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(429, {"Retry-After": "120"})])
    waits: list[float] = []
    async with router(bus, config(tmp_path, fallback=FallbackPolicy(total_wait_budget_s=5)), script, waits):
        reply = await complete(bus)
    assert script.calls == ["alpha", "beta"] and waits == [] and reply.fallback_chain == ["alpha", "beta"]


async def test_500_then_success_retries_with_backoff(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(500), "second try"])
    waits: list[float] = []
    policy = FallbackPolicy(backoff_s=0.5, per_status={500: StatusPolicy(backoff_s=0.25)})
    async with router(bus, config(tmp_path, fallback=policy), script, waits):
        reply = await complete(bus)
    assert reply.content == "second try" and script.calls == ["alpha", "alpha"] and waits == [0.25]


async def test_timeout_moves_on_after_its_retries(bus: Bus, tmp_path: Path) -> None:
    timeout = httpx.ReadTimeout("slow")
    script = Script(alpha=[timeout, timeout], beta=["beta answers"])
    waits: list[float] = []
    async with router(bus, config(tmp_path, fallback=FallbackPolicy(backoff_s=0.1, max_retries_per_model=1)),
                      script, waits):
        reply = await complete(bus)
    assert script.calls == ["alpha", "alpha", "beta"] and waits == [0.1] and reply.content == "beta answers"


@pytest.mark.parametrize("bad", [status(401), status(403), status(400),
                                 httpx.Response(200, text="<html>gateway</html>")])
async def test_non_transient_errors_never_retry_the_same_model(bus: Bus, tmp_path: Path, bad) -> None:
    script = Script(alpha=[bad])
    waits: list[float] = []
    async with router(bus, config(tmp_path), script, waits):
        reply = await complete(bus)
    assert script.calls == ["alpha", "beta"] and waits == [] and reply.model == "beta-model"


async def test_structured_output_that_is_not_json_is_a_schema_violation(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=["not json at all"], beta=['{"ok": true}'])
    async with router(bus, config(tmp_path), script):
        reply = await complete(bus, ask(response_schema={"type": "object"}))
    assert script.calls == ["alpha", "beta"] and reply.content == '{"ok": true}'


async def test_budget_exhaustion_is_typed_and_lists_the_chain(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(503)], beta=[status(502)], gamma=[status(500)])
    waits: list[float] = []
    async with router(bus, config(tmp_path, fallback=FallbackPolicy(max_attempts=4, backoff_s=1)), script, waits):
        with pytest.raises(RemoteError) as info:
            await complete(bus)
    assert info.value.code == "llm_exhausted"
    assert "alpha: 503 → alpha: 503 → beta: 502 → beta: 502" in info.value.message
    assert script.calls == ["alpha", "alpha", "beta", "beta"] and waits == [1.0, 1.0]
    assert sum(waits) <= 30


async def test_wait_budget_caps_backoff_across_the_chain(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(503)], beta=[status(503)], gamma=[status(503)])
    waits: list[float] = []
    policy = FallbackPolicy(backoff_s=2, max_retries_per_model=3, total_wait_budget_s=5)
    async with router(bus, config(tmp_path, fallback=policy), script, waits):
        with pytest.raises(RemoteError):
            await complete(bus)
    assert sum(waits) <= 5
    # the second backoff (4 s) would overrun what is left of the budget: move on instead of waiting
    assert waits == [2, 2] and script.calls == ["alpha", "alpha", "beta", "beta", "gamma"]


async def test_request_deadline_bounds_the_whole_chain(bus: Bus, tmp_path: Path) -> None:
    script = Script(alpha=[status(503)], beta=[status(503)], gamma=[status(503)])
    waits: list[float] = []
    async with router(bus, config(tmp_path, fallback=FallbackPolicy(backoff_s=3)), script, waits):
        with pytest.raises(RemoteError) as info:
            await complete(bus, ask(timeout_s=2))
    assert waits == []  # a 3 s backoff never fits a 2 s deadline: each model is tried once
    assert script.calls == ["alpha", "beta", "gamma"] and info.value.code == "llm_exhausted"


async def test_capability_filtering_and_no_candidate_without_http(bus: Bus, tmp_path: Path) -> None:
    models = {
        "alpha": ModelConfig(provider="mock", model="alpha-model", capabilities=Capabilities(structured_outputs=False)),
        "beta": ModelConfig(provider="mock", model="beta-model", capabilities=Capabilities(context_length=100)),
    }
    script = Script(beta=['{"a": 1}'])
    async with router(bus, config(tmp_path, models=models), script):
        reply = await complete(bus, ask(response_schema={"type": "object"}, max_tokens=10))
        assert script.calls == ["beta"] and reply.model == "beta-model"
        with pytest.raises(RemoteError) as info:
            await complete(bus, ask(response_schema={"type": "object"}, max_tokens=500))
    assert info.value.code == "llm_no_candidate"
    assert "alpha lacks structured_outputs" in info.value.message and "beta lacks context_length" in info.value.message
    assert script.calls == ["beta"]  # no HTTP call for the refused request


async def test_parameters_are_normalised_per_model(bus: Bus, tmp_path: Path) -> None:
    models = {
        "alpha": ModelConfig(provider="mock", model="alpha-model", max_tokens_param="max_completion_tokens",
                             params=AllowedParams(temperature=False, stop=False, reasoning=True),
                             capabilities=Capabilities(reasoning_levels=["low", "high"])),
        "beta": ModelConfig(provider="mock", model="beta-model", reasoning_param="reasoning",
                            params=AllowedParams(reasoning=True), capabilities=Capabilities(reasoning_levels=["high"])),
    }
    script = Script(alpha=[status(503), status(503)])
    async with router(bus, config(tmp_path, models=models, fallback=FallbackPolicy(max_retries_per_model=0)), script):
        await complete(bus, ask(temperature=0.3, stop=["END"], reasoning_effort="high", max_tokens=99))
    alpha, beta = script.bodies
    assert alpha["max_completion_tokens"] == 99 and "max_tokens" not in alpha
    assert "temperature" not in alpha and "stop" not in alpha and alpha["reasoning_effort"] == "high"
    assert beta["max_tokens"] == 99 and beta["temperature"] == 0.3 and beta["stop"] == ["END"]
    assert beta["reasoning"] == {"effort": "high"} and "reasoning_effort" not in beta


async def test_skill_weighting_picks_the_cheaper_model_when_cost_dominates(bus: Bus, tmp_path: Path) -> None:
    models = {
        "premium": ModelConfig(provider="mock", model="premium-model", performance=0.9,
                               price=Price(input_per_1m=10, output_per_1m=30)),
        "budget": ModelConfig(provider="mock", model="budget-model", performance=0.6,
                              price=Price(input_per_1m=0.1, output_per_1m=0.4)),
    }
    skills = {"frugal": SkillConfig(preferred="premium", fallback=["budget"], cost_weight=0.8, performance_weight=0.2),
              "quality": SkillConfig(preferred="budget", fallback=["premium"], cost_weight=0.1, performance_weight=0.9)}
    script = Script()
    async with router(bus, config(tmp_path, models=models, skills=skills), script):
        cheap = await complete(bus, ask(skill="frugal"))
        good = await complete(bus, ask(skill="quality"))
    assert cheap.model == "budget-model" and good.model == "premium-model"


async def test_cooldown_is_shared_between_two_router_replicas(nats_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, cooldown=CooldownPolicy(failures=2, window_s=60, cooldown_s=300, bucket="test_cooldown"),
                 fallback=FallbackPolicy(max_retries_per_model=0))
    a_bus, b_bus = await Bus.connect(nats_url), await Bus.connect(nats_url)
    try:
        script_a = Script(alpha=[status(503)])
        script_b = Script()
        async with router(a_bus, cfg, script_a) as a:
            for _ in range(2):  # replica A sees alpha fail twice: cooldown
                await a.complete(ask())
            assert a.cooldown.cooling("alpha")
            async with router(b_bus, cfg, script_b) as b:  # B starts later and loads the bucket
                assert b.cooldown.cooling("alpha")
                reply = await b.complete(ask())
            assert script_b.calls == ["beta"] and reply.model == "beta-model"
    finally:
        for x in (a_bus, b_bus):
            await x.close()


async def test_shape_decision_records_why(bus: Bus, tmp_path: Path) -> None:
    async with router(bus, config(tmp_path), Script()):
        low = await bus.request(subjects.ROUTER_SHAPE, ShapeRequest(task="t", complexity=0.2, prompt_tokens=100),
                                ShapeDecision, timeout=5)
        high = await bus.request(subjects.ROUTER_SHAPE, ShapeRequest(task="t", complexity=0.9, prompt_tokens=100),
                                 ShapeDecision, timeout=5)
    assert low.mode == "single_stage" and "0.20 < threshold 0.70" in low.reason
    assert high.mode == "two_stage" and "planning on alpha" in high.reason
    assert high.est_cost_usd > low.est_cost_usd > 0


async def test_run_completes_through_a_failing_chain_in_one_trace(bus: Bus, tmp_path: Path, spans) -> None:
    """The issue's done-when: 429, then 503, then the third candidate answers a `tandem run`."""
    script = Script(alpha=[status(429)], beta=[status(503)], gamma=["Bonjour"])
    cfg = config(tmp_path, fallback=FallbackPolicy(max_retries_per_model=0))
    factory = {"router": lambda b, c: RouterActor(b, c, transport=script.transport)}
    async with start_actors(bus, cfg, ["planner", "router", "executor", "task"], factories=factory):
        result = await run_task(bus, TaskSubmit(task="Say hello in French", mode="single_stage"))
    assert result.outputs[0].text == "Bonjour"
    finished = spans.get_finished_spans()
    router_span = next(s for s in finished if s.name == "process tandem.router.complete")
    chats = [s for s in finished if s.name.startswith("chat ")]
    assert [s.name for s in chats] == ["chat alpha-model", "chat beta-model", "chat gamma-model"]
    assert all(s.parent.span_id == router_span.context.span_id for s in chats)
    assert [s.attributes.get("error.type") for s in chats] == ["llm_status", "llm_status", None]
    assert list(router_span.attributes["tandem.router.fallback_chain"]) == ["alpha", "beta", "gamma"]
