"""Orchestration overhead of one whole two-stage task, with a zero-latency model.

``services.orchestrator.run_task`` (``mode="two_stage"``, ``use_cache=False``)
runs against planner, router and executor started in this process with
:func:`services.runtime.start_actors` on an embedded ``nats-server``. The
router's provider client gets an ``httpx.MockTransport`` that answers at once:
the planning call (its body has ``response_format`` and a ``Task:`` message)
gets a fixed valid :class:`~messages.ExecutionPlan` (``read_input fd:3 →
spawn_command sed → manual_transform → write_output``), every other call some
text. The config is built in code (one ``openai``-kind provider at
``http://mock.invalid/v1``); the shipped default's llama.cpp provider is not
used. Tracing is on (JSON-lines file in a temporary directory), as in
``tandem run``.

The in-run baseline does the same work without NATS or actors: the planning
POST through an ``httpx.AsyncClient`` on the same mock transport, decoding
the plan, ``services.textcmd.run_command`` sed on the same input and the
transform POST. ``overhead = flow p50 − baseline p50``. Nothing here asserts
on timings: the target (≤ 4 ms p50 overhead) is printed, never enforced. The
last line printed is ``overhead p50 <x> ms``.

Examples
--------
::

    .venv/bin/python bench/flow.py
    .venv/bin/python bench/flow.py --tasks 500 --rounds 5
    .venv/bin/python bench/flow.py --profile /tmp/flow.prof   # + top hot spots
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec

from actors import RouterActor
from messages import ExecutionPlan, decoder, plan_json_schema_compact
from services.bus import Bus, EmbeddedNats
from services.config import Config, ModelConfig, NatsConfig, ProviderConfig
from services.orchestrator import TaskResult, TaskSpec, run_task
from services.runtime import start_actors
from services.telemetry import setup_tracing, shutdown_tracing
from services.textcmd import describe_commands, run_command

OVERHEAD_TARGET_MS = 4.0

CSV = "name,age,city\nalice,30,paris\nbob,25,tokyo\ncarol,41,lima\n" * 4
TASK = "Convert this CSV to pipe-separated text, then uppercase the header"
SED_ARGS = ["-E", "s/,/ | /g"]
TRANSFORMED = run_command("sed", SED_ARGS, CSV).upper()

PLAN_JSON = msgspec.json.encode({
    "version": "1.0",
    "metadata": {"task_type": "text_conversion", "complexity": "low", "estimated_steps": 4,
                 "fallback_strategy": "abort"},
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3", "type": "csv"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": SED_ARGS, "pattern": "csv_to_pipes"}},
        {"step": 3, "action": "manual_transform", "params": {"instructions": "Uppercase the header line."}},
        {"step": 4, "action": "write_output", "params": {"destination": "fd:1", "format": "text"}},
    ],
}).decode()


# --------------------------------------------------------------------------- the zero-latency model


def _chat_response(content: str, model: str) -> bytes:
    return msgspec.json.encode({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    })


class _Body(msgspec.Struct):
    model: str = ""  # everything else is skipped by the decoder, not built into dicts


_body_decoder = msgspec.json.Decoder(_Body)


class ZeroLatencyModel:
    """An OpenAI chat-completions server behind ``httpx.MockTransport``, answering at once.

    A planning request is one whose JSON body has ``response_format`` and a
    message containing ``Task:``; it gets :data:`PLAN_JSON`, anything else
    gets :data:`TRANSFORMED`. Responses are encoded once per (model, kind).
    """

    def __init__(self) -> None:
        self.planning_calls = 0
        self.other_calls = 0
        self.transport = httpx.MockTransport(self.handle)
        self._cache: dict[tuple[str, bool], bytes] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        model = _body_decoder.decode(raw).model
        planning = b'"response_format"' in raw and b"Task:" in raw
        if planning:
            self.planning_calls += 1
        else:
            self.other_calls += 1
        key = (model, planning)
        content = self._cache.get(key)
        if content is None:
            content = self._cache[key] = _chat_response(PLAN_JSON if planning else TRANSFORMED, model)
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})


def bench_config() -> Config:
    """The benchmark's config: one mock ``openai``-kind provider for both tiers."""
    return Config(
        nats=NatsConfig(url=None, request_timeout_s=30),
        providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1", gen_ai_provider="openai")},
        models={"mock-planner": ModelConfig(provider="mock", model="mock-planner", structured_output="json_schema"),
                "mock-writer": ModelConfig(provider="mock", model="mock-writer", structured_output="json_schema")},
        tiers={"planning": ["mock-planner"], "execution": ["mock-writer"]},
        tasks={"planning": "planning", "manual_transform": "execution", "single_stage": "execution"},
        plan_cache_bucket="bench_plans",
    )


# --------------------------------------------------------------------------- the two contenders


def make_flow(bus: Bus, config: Config) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        spec = TaskSpec(task=TASK, inputs={3: CSV}, input_types={3: "csv"}, mode="two_stage", use_cache=False)
        result = await run_task(bus, config, spec)
        _check(result)

    return one


def _check(result: TaskResult) -> None:
    # correctness, not timing: a fallback or a wrong output would make the numbers meaningless
    if result.mode != "two_stage" or result.fallback or result.plan_cached or not result.outputs \
            or result.outputs[0].text != TRANSFORMED:
        raise SystemExit(f"flow.py: unexpected task result: {result}")


def make_baseline(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
    """The same work without NATS: planning POST, plan decode, sed, transform POST."""
    plan_decoder = decoder(ExecutionPlan)
    response_decoder = msgspec.json.Decoder(dict[str, Any])
    system = "You are the planner of Tandem. Turn the user's task into an execution plan.\n" + describe_commands()
    preview = "\n".join(CSV.splitlines()[:8])
    planning_body = {
        "model": "mock-planner",
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": f"Task: {TASK}\nInputs:\n- fd:3 (csv, {len(CSV)} chars), "
                                                 f"starts with:\n{preview}"}],
        "max_tokens": 700,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "execution_plan", "schema": plan_json_schema_compact()}},
    }
    headers = {"Content-Type": "application/json"}

    async def one() -> None:
        r = await client.post("chat/completions", content=msgspec.json.encode(planning_body), headers=headers)
        plan = plan_decoder.decode(response_decoder.decode(r.content)["choices"][0]["message"]["content"])
        sed = plan.workflow[1]
        text = run_command(sed.params.cmd, sed.params.args, CSV)
        body = {"model": "mock-writer", "max_tokens": 2000,
                "messages": [{"role": "system", "content": "You rewrite text exactly as instructed."},
                             {"role": "user", "content": f"Instructions: {plan.workflow[2].params.instructions}"
                                                         f"\n\nText:\n{text}"}]}
        r = await client.post("chat/completions", content=msgspec.json.encode(body), headers=headers)
        out = response_decoder.decode(r.content)["choices"][0]["message"]["content"]
        if out != TRANSFORMED:
            raise SystemExit(f"flow.py: unexpected baseline output: {out!r}")

    return one


# --------------------------------------------------------------------------- measurement


def percentile(sorted_values: list[float], q: float) -> float:
    """Return the ``q``-quantile (0–1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def measure_latency(call: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    """Run ``n`` sequential calls; return (p50, p99) in ms."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await call()
        samples.append((clock() - t0) / 1e6)
    samples.sort()
    return percentile(samples, 0.50), percentile(samples, 0.99)


async def measure_throughput(call: Callable[[], Awaitable[None]], total: int, in_flight: int) -> float:
    """Run ``total`` calls with ``in_flight`` workers; return calls per second."""
    counter = iter(range(total))

    async def worker() -> None:
        for _ in counter:
            await call()

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(min(in_flight, total)):
            tg.start_soon(worker)
    return total / (time.perf_counter() - t0)


class Side:
    def __init__(self, name: str, call: Callable[[], Awaitable[None]], settle: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.call = call
        self.settle = settle
        self.p50: list[float] = []
        self.p99: list[float] = []
        self.rate: list[float] = []


async def run_round(side: Side, args: argparse.Namespace) -> None:
    p50, p99 = await measure_latency(side.call, args.tasks)
    rate = await measure_throughput(side.call, args.throughput_tasks, args.in_flight)
    await side.settle()  # export this side's spans now, not during the other side's round
    side.p50.append(p50)
    side.p99.append(p99)
    side.rate.append(rate)
    print(f"  round {len(side.p50)} {side.name:<8}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  {rate:8.1f} tasks/s",
          flush=True)


async def bench(args: argparse.Namespace, provider: Any) -> float:
    config = bench_config()
    model = ZeroLatencyModel()
    factories = {"router": lambda bus, config, **kw: RouterActor(bus, config, transport=model.transport, **kw)}

    async def settle() -> None:
        if provider is not None:
            await anyio.to_thread.run_sync(provider.force_flush)

    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url, name="bench-flow")
        try:
            async with start_actors(bus, config, ["planner", "router", "executor"], factories=factories), \
                    httpx.AsyncClient(base_url="http://mock.invalid/v1/", transport=model.transport) as client:
                flow = Side("flow", make_flow(bus, config), settle)
                base = Side("baseline", make_baseline(client), settle)
                for side in (base, flow):
                    for _ in range(args.warmup):
                        await side.call()
                    await side.settle()
                print(f"flow: {args.rounds} rounds; latency {args.tasks} sequential tasks, throughput "
                      f"{args.throughput_tasks} tasks with {args.in_flight} in flight; tracing "
                      f"{'off (diagnostic)' if provider is None else 'on'}", flush=True)
                profiler = None
                if args.profile is not None:
                    import cProfile

                    profiler = cProfile.Profile()
                for r in range(args.rounds):
                    for side in ((base, flow) if r % 2 == 0 else (flow, base)):
                        if profiler is not None and side is flow:
                            profiler.enable()
                        await run_round(side, args)
                        if profiler is not None and side is flow:
                            profiler.disable()
        finally:
            await bus.close()

    med = statistics.median
    b50, b99, brate = med(base.p50), med(base.p99), med(base.rate)
    f50, f99, frate = med(flow.p50), med(flow.p99), med(flow.rate)
    print()
    print(f"{'median of rounds':<18} {'p50 ms':>9} {'p99 ms':>9} {'tasks/s':>9}")
    print(f"{'baseline (no NATS)':<18} {b50:9.3f} {b99:9.3f} {brate:9.1f}")
    print(f"{'flow (run_task)':<18} {f50:9.3f} {f99:9.3f} {frate:9.1f}")
    overhead = f50 - b50
    print()
    print(f"orchestration overhead per task: p50 {overhead:.3f} ms, p99 {f99 - b99:.3f} ms "
          f"(flow − baseline)")
    print(f"flow/baseline p50 {f50 / b50:.1f}x; throughput flow/baseline {frate / brate:.3f}x")
    print(f"target: overhead p50 <= {OVERHEAD_TARGET_MS:g} ms: {'met' if overhead <= OVERHEAD_TARGET_MS else 'NOT met'}")
    print(f"model calls: {model.planning_calls} planning, {model.other_calls} other (baseline included)")
    if profiler is not None:
        import pstats

        profiler.dump_stats(args.profile)
        print(f"\n--- cProfile of the flow rounds (main thread; written to {args.profile}) ---")
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.profile_top)
        stats.sort_stats("cumulative").print_stats(r"/work/main/(actors|services|messages)/", args.profile_top)
    return overhead


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Orchestration overhead of a two-stage task (run_task over NATS, zero-latency mock model) "
                    "against the same work done directly. The last line is 'overhead p50 <x> ms'. "
                    "Never fails on timings.",
    )
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of baseline and flow; medians are reported (default 3)")
    parser.add_argument("--tasks", type=int, default=300, metavar="N",
                        help="sequential tasks per round for p50/p99 (default 300)")
    parser.add_argument("--throughput-tasks", type=int, default=200, metavar="N",
                        help="tasks per round for the throughput run (default 200)")
    parser.add_argument("--in-flight", type=int, default=16, metavar="K",
                        help="concurrent tasks in the throughput run (default 16)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up tasks per side (default 30)")
    parser.add_argument("--no-tracing", action="store_true",
                        help="diagnostic: no tracer provider (the benchmark proper keeps tracing on)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="diagnostic: cProfile the flow rounds, write stats to FILE and print the hot spots")
    parser.add_argument("--profile-top", type=int, default=30, metavar="N", help="rows per profile table (default 30)")
    args = parser.parse_args(argv)

    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # always the JSON-lines file exporter
    os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-flow-") as tmp:
        trace_file = Path(tmp) / "traces.jsonl"
        provider = None if args.no_tracing else setup_tracing("bench.flow", trace_file=trace_file)
        try:
            overhead = anyio.run(bench, args, provider)
        finally:
            if provider is not None:
                shutdown_tracing(provider)
        if provider is not None:
            spans = sum(1 for _ in trace_file.open("rb"))
            print(f"spans written to the trace file: {spans}")
    print(f"overhead p50 {overhead:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
