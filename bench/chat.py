"""The chat loop's responsiveness, and the context actor's round trip against raw JetStream KV.

Four contenders, in alternating rounds of one run, all on one embedded ``nats-server`` with
every actor (planner, router, executor, choice, task, context, chat) started in this process
by :func:`tandem.services.runtime.start_actors`:

* ``idle``: time to a direct reply — one :class:`~tandem.messages.ChatSend` ("What is …?", read
  by the rules, no intent call) to ``tandem.chat.send`` until its :class:`~tandem.messages.ChatReply`:
  the chat turn, two context appends (the second returns the model context), the router's
  ``chat`` call;
* ``busy``: the same while **8 background tasks run**: before each busy round, one task in the
  measured conversation and seven in sibling conversations are started through the chat (each a
  planned Markdown→Textile task, approval off); their model step waits until the round ends, so all
  eight are ``running`` (checked) while the replies are measured, and the measured conversation's
  turns read its running task's state as they do in use;
* ``context``: the context actor's round trip — ``tandem.context.append`` then
  ``tandem.context.get`` (the model context: summary + recent messages within the budget);
* ``kv``: the raw floor under it — a JetStream KV ``put`` then ``get`` of a message-sized value.

The model is an ``httpx.MockTransport`` answering at once (zero latency), except the task step
while a busy round lasts. Conversations grow during the run, so the context actor also
summarises (zero-latency ``summarize`` calls) and trims, as it would in use. Tracing is on
(JSON-lines file in a temporary directory), as in ``tandem chat``.

Targets (issue 12): busy p50 ≤ 1.5× idle p50; context p50 ≤ 2× kv p50. The ratios are
printed, nothing is asserted on timings.

Examples
--------
::

    cd bench && ../.venv/bin/python chat.py
    ../.venv/bin/python chat.py --rounds 5 --replies 200
    ../.venv/bin/python chat.py --profile /tmp/chat.prof   # cProfile the context rounds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
from _measure import Layout, Side, add_common_arguments, file_exporter_only, flush_spans, print_medians, print_profile, run_round, tracing, warm_up

from tandem.actors import ChatActor, PlannerActor, RouterActor
from tandem.messages import (
    ChatReply,
    ChatSend,
    ContextAppend,
    ContextAppended,
    ContextGet,
    ModelContext,
    subjects,
)
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.config import Config, ModelConfig, NatsConfig, ProviderConfig, TwoStageConfig
from tandem.services.runtime import start_actors
from tandem.services.tasks import TaskClient

REPLY_RATIO_TARGET = 1.5
CONTEXT_RATIO_TARGET = 2.0
BACKGROUND_TASKS = 8
LAYOUT = Layout(
    ns_per_unit=1e6,  # ms
    round_line="  round {n} {name:<8}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  {rate:8.1f} /s",
    table_head=f"{'median of rounds':<30} {'p50 ms':>9} {'p99 ms':>9} {'per s':>9}",
    table_row="{label:<30} {p50:9.3f} {p99:9.3f} {rate:9.1f}",
)

PLAN = json.dumps({"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Convert to Textile."}},
    {"step": 3, "action": "write_output"},
]})
DOC = "```\n# Title\n\nSome **bold** text and a [link](http://example.com).\n```"
TEXTILE = "h1. Title\n\nSome *bold* text and a \"link\":http://example.com."
QUESTION = "What is the difference between Markdown and Textile?"
ANSWER = "Both are lightweight markup languages; Textile marks headings with h1. and bold with *stars*."
MESSAGE = "Please keep the headings, but make every list a numbered one and wrap lines at 80 characters."


def _response(content: str, model: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "application/json"}, content=msgspec.json.encode({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }))


class Model:
    """The zero-latency model: chat replies, summaries, plans at once; a task step waits for ``release``."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.release.set()
        self.steps_waiting = 0
        self.calls: dict[str, int] = {"chat": 0, "summary": 0, "intent": 0, "plan": 0, "step": 0}
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        system = body["messages"][0]["content"]
        if system.startswith("You are Tandem"):
            kind, answer = "chat", ANSWER
        elif system.startswith("Summarise"):
            kind, answer = "summary", "The user asked about Markdown and Textile; the assistant explained."
        elif system.startswith("Classify"):
            kind, answer = "intent", json.dumps({"kind": "direct_response", "reasoning": "-", "confidence": 0.5})
        elif "response_format" in body:
            kind, answer = "plan", PLAN
        else:
            kind, answer = "step", TEXTILE
        self.calls[kind] += 1
        if kind == "step" and not self.release.is_set():
            self.steps_waiting += 1
            try:
                await self.release.wait()
            finally:
                self.steps_waiting -= 1
        return _response(answer, body["model"])


def bench_config() -> Config:
    """One mock ``openai``-kind provider for every task; every chat task planned."""
    return Config(
        nats=NatsConfig(url=None, request_timeout_s=30),
        two_stage=TwoStageConfig(complexity_threshold=0.0),
        providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1", gen_ai_provider="openai")},
        models={"mock": ModelConfig(provider="mock", model="mock", structured_output="json_schema")},
        tiers={"standard": ["mock"]},
        tasks={task: "standard" for task in ("planning", "manual_transform", "single_stage", "choice", "intent",
                                             "summarize", "chat")},
        plan_cache_bucket="bench_chat_plans",
    )


# --------------------------------------------------------------------------- contenders


def make_reply(bus: Bus, session: str) -> Callable[[int], Awaitable[None]]:
    async def one(_: int) -> None:
        reply = await bus.request(subjects.CHAT_SEND, ChatSend(session=session, text=QUESTION, conversation_id=session),
                                  ChatReply, timeout=30)
        if reply.kind != "reply" or reply.text != ANSWER:
            raise SystemExit(f"chat.py: unexpected reply: {reply}")

    return one


def make_context(bus: Bus, session: str) -> Callable[[int], Awaitable[None]]:
    async def one(_: int) -> None:
        await bus.request(subjects.CONTEXT_APPEND, ContextAppend(session=session, role="user", content=MESSAGE,
                                                                 conversation_id=session), ContextAppended, timeout=15)
        context = await bus.request(subjects.CONTEXT_GET, ContextGet(session=session, conversation_id=session),
                                    ModelContext, timeout=15)
        if not context.messages or context.messages[-1].content != MESSAGE:
            raise SystemExit(f"chat.py: unexpected model context: {context}")

    return one


def make_kv(kv: Any) -> Callable[[int], Awaitable[None]]:
    value = msgspec.json.encode({"role": "user", "content": MESSAGE, "at": "2026-01-01T00:00:00Z", "tokens": 27})

    async def one(i: int) -> None:
        await kv.put("bench.raw", value)
        entry = await kv.get("bench.raw")
        if entry.value != value:
            raise SystemExit("chat.py: the KV read back something else")

    return one


class Background:
    """Eight tasks kept running (their model step held) while a busy round is measured."""

    def __init__(self, bus: Bus, model: Model, session: str) -> None:
        self.bus = bus
        self.model = model
        self.sessions = [session] + [f"{session}-sib{i}" for i in range(1, BACKGROUND_TASKS)]
        self.client = TaskClient(bus)
        self.rounds = 0

    async def start(self) -> list[str]:
        self.model.release = anyio.Event()
        self.rounds += 1
        ids = []
        for session in self.sessions:
            reply = await self.bus.request(subjects.CHAT_SEND, ChatSend(
                session=session, text=f"Convert this Markdown to Textile (round {self.rounds}):\n{DOC}",
                conversation_id=session), ChatReply, timeout=30)
            if reply.kind != "task_submitted":
                raise SystemExit(f"chat.py: background task not started: {reply}")
            ids.append(reply.task_id)
        with anyio.fail_after(30):
            while self.model.steps_waiting < len(ids):
                await anyio.sleep(0.01)
        return ids

    async def running(self, ids: list[str]) -> int:
        states = [await self.client.get(task_id, resolve=False) for task_id in ids]
        return sum(s.status == "running" for s in states)

    async def stop(self, ids: list[str]) -> None:
        self.model.release.set()
        with anyio.fail_after(60):
            for task_id in ids:
                state = await self.client.wait(task_id)
                if state.status != "succeeded":
                    raise SystemExit(f"chat.py: background task {task_id} {state.status}: {state.error}")
        # the chat's record of the conversation's tasks follows the terminal events: let it settle
        await anyio.sleep(0.2)


async def bench(args: argparse.Namespace, provider: Any) -> tuple[float, float]:
    config = bench_config()
    model = Model()
    factories = {"router": lambda bus, config, **kw: RouterActor(bus, config, transport=model.transport, **kw),
                 "planner": lambda bus, config, **kw: PlannerActor(bus, config, recipes=[], **kw),
                 "chat": lambda bus, config, **kw: ChatActor(bus, config, approval="none", **kw)}
    settle = partial(flush_spans, provider)
    names = ["planner", "router", "executor", "choice", "task", "context", "chat"]

    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url, name="bench-chat")
        try:
            async with start_actors(bus, config, names, factories=factories):
                kv = await bus.key_value("bench_chat_raw")
                idle = Side("idle", make_reply(bus, "bench-idle"), settle)
                busy = Side("busy", make_reply(bus, "bench-busy"), settle)
                ctx = Side("context", make_context(bus, "bench-context"), settle)
                raw = Side("kv", make_kv(kv), settle)
                background = Background(bus, model, "bench-busy")
                await warm_up((idle, busy, ctx, raw), args.warmup)
                print(f"chat: {args.rounds} rounds; latency {args.latency_requests} sequential calls, throughput "
                      f"{args.throughput_requests} calls with {args.in_flight} in flight; busy = "
                      f"{BACKGROUND_TASKS} tasks running; tracing {'off (diagnostic)' if provider is None else 'on'}",
                      flush=True)
                profiler = None
                if args.profile is not None:
                    import cProfile

                    profiler = cProfile.Profile()
                running_seen: list[tuple[int, int]] = []
                for r in range(args.rounds):  # the order alternates, so no side always runs on a warm machine
                    pairs = [(idle, busy), (raw, ctx)] if r % 2 == 0 else [(busy, idle), (ctx, raw)]
                    for side in (s for pair in pairs for s in pair):
                        if side is busy:
                            ids = await background.start()
                            before = await background.running(ids)
                            await run_round(side, args, LAYOUT)
                            running_seen.append((before, await background.running(ids)))
                            await background.stop(ids)
                            continue
                        if profiler is not None and side is ctx:
                            profiler.enable()
                        await run_round(side, args, LAYOUT)
                        if profiler is not None and side is ctx:
                            profiler.disable()
        finally:
            await bus.close()

    (i50, _, _), (b50, _, _), (c50, _, _), (k50, _, _) = print_medians(
        [("direct reply, idle", idle), (f"direct reply, {BACKGROUND_TASKS} tasks running", busy),
         ("context append + get", ctx), ("raw KV put + get", raw)], LAYOUT)
    reply_ratio, context_ratio = b50 / i50, c50 / k50
    print()
    print("background tasks running at the start / end of each busy round: "
          + ", ".join(f"{a}/{b}" for a, b in running_seen))
    print(f"direct reply busy/idle p50 {reply_ratio:.2f}x (target <= {REPLY_RATIO_TARGET:g}x: "
          f"{'met' if reply_ratio <= REPLY_RATIO_TARGET else 'NOT met'})")
    print(f"context round trip / raw KV p50 {context_ratio:.2f}x (target <= {CONTEXT_RATIO_TARGET:g}x: "
          f"{'met' if context_ratio <= CONTEXT_RATIO_TARGET else 'NOT met'})")
    print("model calls: " + ", ".join(f"{k} {v}" for k, v in model.calls.items()))
    if profiler is not None:
        print_profile(profiler, args.profile, "the context rounds", "main thread", args.profile_top)
    return reply_ratio, context_ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time to a direct chat reply idle and with 8 tasks running; context append + get against raw "
                    "JetStream KV put + get (zero-latency mock model). Ratios are printed; never fails on timings.",
    )
    add_common_arguments(
        parser, rounds_help="alternating rounds of idle/busy replies and context/KV round trips", unit="calls",
        latency_option="--replies", latency=150, throughput_option="--throughput-calls", throughput=100,
        in_flight=4, warmup=20,
        profile_help="diagnostic: cProfile the context rounds, write stats to FILE and print the hot spots",
    )
    args = parser.parse_args(argv)

    file_exporter_only()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-chat-") as tmp:
        trace_file = Path(tmp) / "traces.jsonl"
        with tracing("bench.chat", None if args.no_tracing else trace_file) as provider:
            reply_ratio, context_ratio = anyio.run(bench, args, provider)
    print(f"reply busy/idle {reply_ratio:.2f}x; context/kv {context_ratio:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
