"""The router's cost: routing decisions per second, and latency added over a direct provider call.

Everything runs in one process against one embedded ``nats-server``
(:class:`tandem.services.bus.EmbeddedNats`); the config is built in code (six models
over three tiers, two ``openai``-kind providers, one weighted skill, see
:func:`bench_config`) and every provider talks to an ``httpx.MockTransport``
that returns a canned chat-completions body at once. Nothing here asserts on
timings: every figure is a ratio against a baseline measured in the same run,
printed, never enforced.

1. **Decisions per second** — :meth:`actors.RouterActor.candidates` (pure
   selection: task → tier → skill ranking / capability filter / cooldown
   order; no HTTP) for three kinds of request:

   * ``plain``: a task mapped to the ``standard`` tier;
   * ``skill``: a request naming the weighted skill (five models ranked by
     ``performance_weight * performance + cost_weight * (1 - price/max)``);
   * ``structured``: a ``planning`` request with a ``response_schema``, so
     models without ``structured_outputs`` are filtered out.

   The actor is built on a connected :class:`~tandem.services.bus.Bus` but not run
   (``candidates`` needs nothing from ``setup``; the cooldown mirror is empty).
   The baseline (``floor``) is the bare table lookup every decision starts
   with: ``list(config.tiers[config.tier_for(task, tier)])``.

2. **Added latency** — the same plain request answered

   * ``direct``: ``OpenAIChatProvider.chat(model, normalize(model, request))``
     on the mock transport, in-process (the ``chat <model>`` span included);
   * ``routed``: ``bus.request(subjects.ROUTER_COMPLETE, request,
     CompletionReply)`` to a :class:`~actors.RouterActor` running in this
     process on the same mock transport (the actor's decode, ``process`` span,
     candidate selection, the provider call, the usage-log line, the
     ``tandem.events.router.routed`` event and the reply).

   Tracing is on for both (JSON-lines file in a temporary directory), as in
   ``tandem run``; the usage log goes to a temporary file through
   ``$TANDEM_USAGE_LOG``. Rounds of direct and routed alternate and the median
   round is reported: p50/p99 of N sequential calls (µs) and throughput with
   K calls in flight.

The last line printed is ``router added p50 <µs> µs (<ratio>x direct); decisions/s
plain <n> skill <n> structured <n>``.

Diagnostics (not the benchmark proper): ``--no-tracing`` runs without a tracer
provider; ``--profile FILE`` cProfiles the routed rounds and prints the hot spots.

Examples
--------
::

    .venv/bin/python bench/router.py
    .venv/bin/python bench/router.py --rounds 5 --latency-requests 3000
    .venv/bin/python bench/router.py --profile /tmp/router.prof   # + top hot spots
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
from _measure import Layout, Side, add_common_arguments, alternate_rounds, file_exporter_only, flush_spans, print_medians, print_profile, tracing, warm_up

from tandem.actors import RouterActor
from tandem.messages import ChatMessage, CompletionReply, CompletionRequest, subjects
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.config import (
    Capabilities,
    Config,
    ModelConfig,
    NatsConfig,
    Price,
    ProviderConfig,
    RouterConfig,
    SkillConfig,
)
from tandem.services.llm import OpenAIChatProvider, normalize

ANSWER = "Name | Age | City\nalice | 30 | paris\nbob | 25 | tokyo"
SCHEMA = {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
          "required": ["steps"], "additionalProperties": False}
PROMPT = [
    ChatMessage(role="system", content="You rewrite text exactly as instructed. Answer with the text only."),
    ChatMessage(role="user", content="Instructions: turn the commas into ' | ' and capitalise the header.\n\n"
                                     "Text:\n" + "name,age,city\nalice,30,paris\nbob,25,tokyo\n" * 4),
]


# --------------------------------------------------------------------------- config & requests


def bench_config(usage_log: Path) -> Config:
    """Six models over three tiers, two mock ``openai``-kind providers, one weighted skill.

    ``heavy-b``, ``std-a`` and ``cheap-b`` lack structured outputs, so a
    request with a schema filters them out.
    """
    def model(provider: str, name: str, price_in: float, price_out: float, performance: float, *,
              structured: bool = True, context: int = 32768) -> ModelConfig:
        return ModelConfig(provider=provider, model=name, performance=performance,
                           price=Price(input_per_1m=price_in, output_per_1m=price_out),
                           capabilities=Capabilities(structured_outputs=structured, context_length=context))

    return Config(
        nats=NatsConfig(url=None, request_timeout_s=30),
        providers={"big": ProviderConfig(kind="openai", base_url="http://big.invalid/v1", gen_ai_provider="openai"),
                   "fast": ProviderConfig(kind="openai", base_url="http://fast.invalid/v1", gen_ai_provider="openai")},
        models={
            "heavy-a": model("big", "heavy-a-model", 10.0, 30.0, 0.95, context=131072),
            "heavy-b": model("big", "heavy-b-model", 5.0, 15.0, 0.90, structured=False, context=131072),
            "std-a": model("fast", "std-a-model", 1.0, 3.0, 0.75, structured=False),
            "std-b": model("fast", "std-b-model", 0.5, 1.5, 0.70),
            "cheap-a": model("fast", "cheap-a-model", 0.1, 0.3, 0.50, context=8192),
            "cheap-b": model("fast", "cheap-b-model", 0.05, 0.2, 0.40, structured=False, context=8192),
        },
        tiers={"heavy_reasoning": ["heavy-a", "heavy-b"], "standard": ["std-a", "std-b"],
               "cheap": ["cheap-a", "cheap-b"]},
        tasks={"planning": "heavy_reasoning", "manual_transform": "standard", "single_stage": "standard",
               "chat": "cheap"},
        skills={"summarize": SkillConfig(preferred="std-a", fallback=["heavy-a", "std-b", "cheap-a", "cheap-b"],
                                         cost_weight=0.4, performance_weight=0.6)},
        router=RouterConfig(usage_log=str(usage_log)),
    )


REQUESTS: dict[str, CompletionRequest] = {
    "plain": CompletionRequest(task="manual_transform", messages=PROMPT, max_tokens=400),
    "skill": CompletionRequest(task="single_stage", skill="summarize", messages=PROMPT, max_tokens=400),
    "structured": CompletionRequest(task="planning", messages=PROMPT, max_tokens=700,
                                    response_schema=SCHEMA, schema_name="plan"),
}
EXPECTED = {  # what each kind must select; a wrong answer makes the rate meaningless
    "plain": ("standard", ["std-a", "std-b"]),
    # 0.6 * performance + 0.4 * (1 - price / max price): std-a .81, std-b .80, cheap-a .70, cheap-b .64, heavy-a .57
    "skill": ("skill:summarize", ["std-a", "std-b", "cheap-a", "cheap-b", "heavy-a"]),
    "structured": ("heavy_reasoning", ["heavy-a"]),
}
ROUTED = "plain"  # the request of part 2; its first candidate answers
DIRECT_MODEL = "std-a"
LAYOUT = Layout(
    ns_per_unit=1000,  # µs
    round_line="  round {n} {name:<6}  p50 {p50:8.1f} µs  p99 {p99:8.1f} µs  {rate:8.0f} req/s",
    table_head=f"{'median of rounds':<18} {'p50 µs':>9} {'p99 µs':>9} {'req/s':>9}",
    table_row="{label:<18} {p50:9.1f} {p99:9.1f} {rate:9.0f}",
)


# --------------------------------------------------------------------------- the zero-latency model


class _Body(msgspec.Struct):
    model: str = ""  # everything else is skipped by the decoder


_body_decoder = msgspec.json.Decoder(_Body)


class ZeroLatencyModel:
    """OpenAI chat completions behind ``httpx.MockTransport``: a canned body per model, at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.transport = httpx.MockTransport(self.handle)
        self._cache: dict[str, bytes] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        model = _body_decoder.decode(request.content).model
        body = self._cache.get(model)
        if body is None:
            body = self._cache[model] = msgspec.json.encode({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            })
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})


# --------------------------------------------------------------------------- part 1: decisions per second


def decision_rate(decide: Callable[[CompletionRequest], object], request: CompletionRequest, n: int) -> float:
    """Call ``decide(request)`` ``n`` times in a tight loop; return calls per second."""
    clock = time.perf_counter
    t0 = clock()
    for _ in range(n):
        decide(request)
    return n / (clock() - t0)


def bench_decisions(actor: RouterActor, args: argparse.Namespace) -> dict[str, float]:
    config = actor.config
    for kind, request in REQUESTS.items():
        got = actor.candidates(request)
        if got != EXPECTED[kind]:
            raise SystemExit(f"router.py: candidates({kind}) = {got}, expected {EXPECTED[kind]}")

    def floor(request: CompletionRequest) -> list[str]:
        return list(config.tiers[config.tier_for(request.task, request.tier)])

    contenders: list[tuple[str, Callable[[CompletionRequest], object], CompletionRequest]] = [
        ("floor", floor, REQUESTS["plain"]),
        *((kind, actor.candidates, request) for kind, request in REQUESTS.items()),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    for name, decide, request in contenders:  # warm-up
        decision_rate(decide, request, max(1, args.decisions // 10))
    print(f"decisions: {args.rounds} rounds of {args.decisions} calls per kind "
          f"(cooldown mirror empty; actor not running)", flush=True)
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for name, decide, request in order:
            rates[name].append(decision_rate(decide, request, args.decisions))
        print(f"  round {r + 1}  " + "  ".join(f"{name} {rates[name][-1]:9.0f}/s" for name, _, _ in contenders),
              flush=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print()
    print(f"{'median of rounds':<18} {'decisions/s':>12} {'µs each':>9} {'vs floor':>9}  candidates")
    for name, _, request in contenders:
        picked = floor(request) if name == "floor" else actor.candidates(request)[1]
        print(f"{name:<18} {med[name]:12.0f} {1e6 / med[name]:9.2f} {med['floor'] / med[name]:8.1f}x  "
              f"{' > '.join(picked)}")
    print()
    return med


# --------------------------------------------------------------------------- part 2: added latency


def _check(content: str, model: str) -> None:
    # correctness, not timing: an error reply or a fallback would make the numbers meaningless
    if content != ANSWER or model != f"{DIRECT_MODEL}-model":
        raise SystemExit(f"router.py: unexpected answer from {model!r}: {content!r}")


async def bench_latency(bus: Bus, config: Config, model: ZeroLatencyModel, tracer_provider: Any,
                        args: argparse.Namespace) -> tuple[Side, Side, Any]:
    request = REQUESTS[ROUTED]
    mcfg = config.models[DIRECT_MODEL]
    timeout = args.timeout
    settle = partial(flush_spans, tracer_provider)

    direct_provider = OpenAIChatProvider(mcfg.provider, config.providers[mcfg.provider], transport=model.transport)
    router = RouterActor(bus, config, transport=model.transport)
    try:
        async def direct_call(_: int) -> None:
            result = await direct_provider.chat(mcfg, normalize(mcfg, request), timeout=timeout)
            _check(result.content, result.model)

        async def routed_call(_: int) -> None:
            reply = await bus.request(subjects.ROUTER_COMPLETE, request, CompletionReply, timeout=timeout)
            _check(reply.content, reply.model)

        async with anyio.create_task_group() as tg:
            await tg.start(router.run)
            direct = Side("direct", direct_call, settle)
            routed = Side("routed", routed_call, settle)
            await warm_up((direct, routed), args.warmup)
            print(f"latency: {args.rounds} rounds; {args.latency_requests} sequential requests, throughput "
                  f"{args.throughput_requests} requests with {args.in_flight} in flight; tracing "
                  f"{'off (diagnostic)' if tracer_provider is None else 'on'}", flush=True)
            profiler = await alternate_rounds(direct, routed, args, LAYOUT, profiled=routed)
            tg.cancel_scope.cancel()
    finally:
        await direct_provider.aclose()
    return direct, routed, profiler


# --------------------------------------------------------------------------- main


async def bench(args: argparse.Namespace, tracer_provider: Any,
                usage_log: Path) -> tuple[float, float, dict[str, float]]:
    config = bench_config(usage_log)
    model = ZeroLatencyModel()
    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url, name="bench-router")
        try:
            rates = bench_decisions(RouterActor(bus, config, transport=model.transport), args)
            direct, routed, profiler = await bench_latency(bus, config, model, tracer_provider, args)
        finally:
            await bus.close()

    (d50, d99, drps), (r50, r99, rrps) = print_medians(
        [("direct (provider)", direct), ("routed (NATS)", routed)], LAYOUT)
    print()
    added, ratio = r50 - d50, r50 / d50
    print(f"router added latency: p50 {added:.1f} µs, p99 {r99 - d99:.1f} µs (routed − direct)")
    print(f"routed/direct p50 {ratio:.2f}x, p99 {r99 / d99:.2f}x; throughput routed/direct {rrps / drps:.3f}x "
          f"({args.in_flight} in flight)")
    print(f"model calls: {model.calls} (direct and routed, warm-up included)")
    if profiler is not None:
        print_profile(profiler, args.profile, "the routed rounds", "client + router, one event loop",
                      args.profile_top)
    return added, ratio, rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Router cost: RouterActor.candidates decisions/s (plain tier, skill, structured output) "
                    "against a bare tier lookup, and the latency the router adds over a direct provider call "
                    "(bus.request to an in-process RouterActor on an embedded nats-server vs "
                    "OpenAIChatProvider.chat, both on a zero-latency httpx.MockTransport, tracing on). "
                    "The last line is 'router added p50 <x> µs ...'. Never fails on timings.",
    )
    add_common_arguments(
        parser, rounds_help="alternating rounds per contender",
        after_rounds=lambda p: p.add_argument("--decisions", type=int, default=20000, metavar="N",
                                              help="candidates() calls per kind per round (default 20000)"),
        latency=2000, throughput=4000, in_flight=32, warmup=300, round_warmup=50, timeout=10.0,
        profile_help="diagnostic: cProfile the routed rounds, write stats to FILE and print the hot spots",
    )
    args = parser.parse_args(argv)

    file_exporter_only()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-router-") as tmp:
        usage_log = Path(tmp) / "llm_usage.jsonl"
        os.environ["TANDEM_USAGE_LOG"] = str(usage_log)  # never the home directory's log
        os.environ.pop("TANDEM_USAGE_LOG_DISABLE", None)  # the router writes its log, as it does in production
        trace_file = Path(tmp) / "traces.jsonl"
        with tracing("bench.router", None if args.no_tracing else trace_file) as provider:
            added, ratio, rates = anyio.run(bench, args, provider, usage_log)
        if provider is not None:
            spans = sum(1 for _ in trace_file.open("rb"))
            print(f"spans written to the trace file: {spans}")
        lines = sum(1 for _ in usage_log.open("rb")) if usage_log.exists() else 0
        print(f"usage-log lines written (temporary file): {lines}")
    print(f"router added p50 {added:.0f} µs ({ratio:.2f}x direct); decisions/s plain {rates['plain']:.0f} "
          f"skill {rates['skill']:.0f} structured {rates['structured']:.0f}")


if __name__ == "__main__":
    sys.exit(main())
