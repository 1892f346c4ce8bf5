"""Orchestration overhead of one whole two-stage task, with a zero-latency model.

Four contenders, in alternating rounds of one run:

* ``durable``: the task submitted to the task actor (JetStream work queue, KV state, checkpoints,
  events) and followed by :meth:`tandem.services.tasks.TaskClient.run`, as ``tandem run`` does;
* ``client-side``: the same flow (:func:`tandem.actors._task_flow.run_flow`) run in the calling
  process without the task actor — the pre-task-actor way, no durability;
* ``baseline``: the same work without NATS or actors (below);
* ``floor``: the baseline's work plus the round trips the durable flow waits for, in raw nats-py
  on the same server (:func:`make_raw_floor`): what no framework built on nats-py can beat here,
  so ``durable/floor`` is Tandem's own share and ``floor/baseline`` the share of the round trips.

Both flows use ``mode="two_stage"`` and ``use_cache=False`` against planner, router and executor
started in this process with :func:`tandem.services.runtime.start_actors` on an embedded
``nats-server``. The
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
the plan, ``tandem.services.textcmd.run_command`` sed on the same input and the
transform POST. ``overhead = durable p50 − baseline p50``; the durable path's cost is
``durable − client-side`` (target ≤ 1 ms p50, ≥ 250 tasks/s). Nothing here asserts on
timings: targets are printed, never enforced. The CPU time per task of the throughput runs
(this process: client, actors and span export; and the nats-server) is printed too, a figure
other work on a shared machine disturbs far less than the wall-clock ones. The last line
printed is ``overhead p50 <x> ms``.

``--count N`` runs N tasks of each flow one after the other and prints what the bench's one
connection (client and actors share it) publishes per task, by subject with ids folded away:
requests (a reply awaited: actor requests, JetStream and KV operations, pulls) and flushes are
the round trips; events, replies and acks go one way. Work a task leaves behind (records written
after the reply) is counted with it.

``--calls N`` runs N tasks of each flow one after the other under ``sys.setprofile`` and prints, per task,
the main thread's Python calls, the asyncio tasks created and the anyio cancel scopes entered, then the
Tandem functions with the most calls made under them (inclusive): figures that do not depend on the
machine's load, for A/B comparisons beside cachegrind's instruction counts.

Examples
--------
::

    .venv/bin/python bench/flow.py
    .venv/bin/python bench/flow.py --tasks 500 --rounds 5
    .venv/bin/python bench/flow.py --profile /tmp/flow.prof   # + top hot spots
    .venv/bin/python bench/flow.py --count 50   # messages and round trips per task, by subject (no timing)
    .venv/bin/python bench/flow.py --calls 30   # Python calls, tasks and cancel scopes per task (no timing)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import nats
import nats.js.errors
from _measure import (
    Layout,
    Side,
    add_common_arguments,
    attribute_profile,
    file_exporter_only,
    flush_spans,
    print_medians,
    print_profile,
    process_cpu,
    run_round,
    tracing,
    warm_up,
)
from tandem.actors import PlannerActor, RouterActor
from tandem.actors._task_flow import ask_planner_to_remember, run_flow
from tandem.messages import (
    ExecutionPlan,
    TaskResult,
    TaskState,
    TaskSubmit,
    decoder,
    plan_json_schema_compact,
)
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.config import Config, ModelConfig, NatsConfig, ProviderConfig
from tandem.services.runtime import start_actors
from tandem.services.tasks import TaskClient
from tandem.services.textcmd import describe_commands, run_command

OVERHEAD_TARGET_MS = 4.0
BASELINE_RATIO_TARGET = 3.0  # issue 14: durable p50 <= 3x the in-run baseline
DURABLE_TARGET_MS = 1.0
DURABLE_RATE_TARGET = 250.0
LAYOUT = Layout(
    ns_per_unit=1e6,  # ms
    round_line="  round {n} {name:<8}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  {rate:8.1f} tasks/s",
    table_head=f"{'median of rounds':<18} {'p50 ms':>9} {'p99 ms':>9} {'tasks/s':>9}",
    table_row="{label:<18} {p50:9.3f} {p99:9.3f} {rate:9.1f}",
)

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


# --------------------------------------------------------------------------- CPU per task (diagnostic)


def _child_pid(name: str) -> int | None:
    """The pid of this process's child called ``name`` (the embedded nats-server), from ``/proc``."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm, rest = stat[stat.find(b"(") + 1:stat.rfind(b")")], stat[stat.rfind(b")") + 1:].split()
        if comm.decode(errors="replace").startswith(name) and int(rest[1]) == me:
            return int(entry)
    return None


def cpu_meter(server: int | None) -> Callable[[], dict[str, float]]:
    """CPU seconds so far of this process (client, actors, span export) and of the nats-server."""
    return lambda: {"process": process_cpu(), "nats-server": process_cpu(server) if server else float("nan")}


def print_cpu(sides: list[tuple[str, Side]]) -> None:
    """Median CPU per task of the throughput runs: less disturbed by other work on the machine than wall clock."""
    print("\nCPU per task, throughput runs (median of rounds; this process = client + actors + span export)")
    for label, side in sides:
        cpu = {process: statistics.median(values) for process, values in side.cpu_per_call.items()}
        print(f"  {label:<22} this process {cpu.get('process', float('nan')) / 1000:7.3f} ms   "
              f"nats-server {cpu.get('nats-server', float('nan')) / 1000:7.3f} ms")


# --------------------------------------------------------------------------- messages per task (diagnostic)


_VARIABLE = [
    (re.compile(r"^_INBOX\.[^.]+\.[^.]+$"), "_INBOX.<reply>"),
    (re.compile(r"^\$JS\.ACK\..*"), "$JS.ACK.<delivery>"),
    (re.compile(r"[0-9a-f]{32}|[0-9a-f]{12,}|[A-Za-z0-9_-]{20,}"), "<id>"),
]


def _kind(subject: str) -> str:
    for pattern, name in _VARIABLE:
        subject = pattern.sub(name, subject)
    return subject


class MessageCounter:
    """Count what this process publishes, by subject (ids folded away), and its flushes.

    Every actor and the client share the bench's one connection, so its publishes are every message the
    flow sends: a publish with a reply subject is a request (a round trip, a JetStream write or read
    among them); replies and events go one way. Patched onto the connection's ``publish``/``flush``.
    """

    def __init__(self, nc: Any) -> None:
        self.requests: dict[str, int] = {}
        self.one_way: dict[str, int] = {}
        self.flushes = 0
        self._nc = nc
        publish, flush = nc.publish, nc.flush

        self._inside = False  # nc.publish reaches _publish_checked too: counted once

        def count(subject: str, reply: str) -> None:
            into = self.requests if reply else self.one_way
            key = _kind(subject)
            into[key] = into.get(key, 0) + 1

        async def counted_publish(subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
            count(subject, reply)
            self._inside = True
            try:
                await publish(subject, payload, reply=reply, headers=headers)
            finally:
                self._inside = False

        async def counted_flush(*args: Any, **kwargs: Any) -> None:
            self.flushes += 1
            await flush(*args, **kwargs)

        nc.publish, nc.flush = counted_publish, counted_flush
        checked = getattr(nc, "_publish_checked", None)  # the bus's requests and replies skip nc.publish
        if checked is not None:

            async def counted_checked(subject: str, payload: bytes, reply: str, headers: Any) -> None:
                if not self._inside:
                    count(subject, reply)
                await checked(subject, payload, reply, headers)

            nc._publish_checked = counted_checked

    def reset(self) -> None:
        self.requests.clear()
        self.one_way.clear()
        self.flushes = 0

    def report(self, label: str, tasks: int) -> None:
        total_rt = sum(self.requests.values()) + self.flushes
        print(f"\n{label}: per task, {total_rt / tasks:.2f} round trips (requests + flushes), "
              f"{sum(self.one_way.values()) / tasks:.2f} one-way messages")
        for title, counts in (("requests (reply awaited)", self.requests), ("one-way (events, replies, acks)",
                                                                           self.one_way)):
            print(f"  {title}")
            for subject, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"    {n / tasks:6.2f}  {subject}")
        if self.flushes:
            print(f"  flushes {self.flushes / tasks:6.2f}")


# --------------------------------------------------------------------------- Python calls per task (diagnostic)


_TANDEM_ROOT = str(Path(__file__).resolve().parent.parent) + os.sep
_TANDEM_CODE = tuple(_TANDEM_ROOT + package + os.sep for package in ("actors", "services", "messages"))


class CallCounter:
    """Count the main thread's Python calls, asyncio tasks created and anyio cancel scopes entered.

    Each call is also counted once for every Tandem function (``actors``, ``services``, ``messages``) on
    the stack at the time, so a function's count includes what runs under it (a coroutine resumed by the
    event loop counts under the coroutines that await it). ``sys.setprofile`` sees Python calls only; C work
    (msgspec, the regex engine, sockets) shows up as instructions (cachegrind), not here. Profiling slows the
    flow about threefold, so time-based batching (the health records' write-behind) batches fewer tasks
    than at full speed.
    """

    def __init__(self) -> None:
        self.calls = self.tasks = self.scopes = 0
        self.under: dict[str, int] = {}
        self._factory: Any = None

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        self.calls += 1
        code = frame.f_code
        if code.co_name == "__enter__" and code.co_qualname == "CancelScope.__enter__":
            self.scopes += 1
        seen = set()
        under = self.under
        while frame is not None:
            code = frame.f_code
            if code.co_filename.startswith(_TANDEM_CODE) and code not in seen:
                seen.add(code)
                key = f"{code.co_filename[len(_TANDEM_ROOT):]}:{code.co_qualname}"
                under[key] = under.get(key, 0) + 1
            frame = frame.f_back

    def start(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self._factory = loop.get_task_factory()
        inner = self._factory

        def counting(loop: Any, coro: Any, **kwargs: Any) -> Any:
            self.tasks += 1
            return inner(loop, coro, **kwargs) if inner is not None else asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(counting)
        sys.setprofile(self._profile)

    def stop(self) -> None:
        import asyncio

        sys.setprofile(None)
        asyncio.get_running_loop().set_task_factory(self._factory)

    def report(self, label: str, tasks: int, top: int) -> None:
        print(f"\n{label}: per task, {self.calls / tasks:.0f} Python calls (main thread), "
              f"{self.tasks / tasks:.1f} asyncio tasks created, {self.scopes / tasks:.1f} cancel scopes entered")
        print("  calls under each Tandem function (inclusive), the most first")
        for name, n in sorted(self.under.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {n / tasks:8.1f}  {name}")


# --------------------------------------------------------------------------- the two contenders


def _submit() -> TaskSubmit:
    return TaskSubmit(task=TASK, inputs={3: CSV}, input_types={3: "csv"}, mode="two_stage", use_cache=False)


def make_durable(bus: Bus) -> Callable[[int], Awaitable[None]]:
    client = TaskClient(bus)

    async def one(_: int) -> None:
        state = await client.run(_submit())
        if state.status != "succeeded" or state.result is None:
            raise SystemExit(f"flow.py: task {state.status}: {state.error}")
        _check(state.result)

    return one


class _InProcessHost:
    """The flow's host without the task actor: no KV, no events, no checkpoints (the old client-side flow)."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.config = config

    async def transition(self, state: TaskState, **changes: object) -> TaskState:
        return msgspec.structs.replace(state, **changes)

    async def announce(self, state: TaskState, kind: str, detail: str = "", **fields: object) -> None:
        pass

    async def approve(self, state: TaskState, plan: ExecutionPlan, question: str) -> Any:
        raise NotImplementedError

    def checkpoint_subject(self, state: TaskState) -> str:
        return ""

    async def remember(self, state: TaskState, plan: ExecutionPlan) -> None:
        await ask_planner_to_remember(self.bus, state, plan)  # a client may not write the plan cache


def make_client_side(bus: Bus, config: Config) -> Callable[[int], Awaitable[None]]:
    host = _InProcessHost(bus, config)

    async def one(_: int) -> None:
        submit = _submit()
        _check(await run_flow(host, TaskState(task_id=submit.task_id), submit, submit.inputs))

    return one


def _check(result: TaskResult) -> None:
    # correctness, not timing: a fallback or a wrong output would make the numbers meaningless
    if result.mode != "two_stage" or result.fallback or result.plan_cached or not result.outputs \
            or result.outputs[0].text != TRANSFORMED:
        raise SystemExit(f"flow.py: unexpected task result: {result}")


class BaselineWork:
    """The flow's own work without NATS: planning POST and plan decode, then sed and the transform POST."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.plan_decoder = decoder(ExecutionPlan)
        self.response_decoder = msgspec.json.Decoder(dict[str, Any])
        system = "You are the planner of Tandem. Turn the user's task into an execution plan.\n" + describe_commands()
        preview = "\n".join(CSV.splitlines()[:8])
        self.planning_body = msgspec.json.encode({
            "model": "mock-planner",
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": f"Task: {TASK}\nInputs:\n- fd:3 (csv, {len(CSV)} chars), "
                                                     f"starts with:\n{preview}"}],
            "max_tokens": 700,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "execution_plan", "schema": plan_json_schema_compact()}},
        })
        self.headers = {"Content-Type": "application/json"}

    async def plan(self) -> ExecutionPlan:
        r = await self.client.post("chat/completions", content=self.planning_body, headers=self.headers)
        return self.plan_decoder.decode(self.response_decoder.decode(r.content)["choices"][0]["message"]["content"])

    async def execute(self, plan: ExecutionPlan) -> None:
        sed = plan.workflow[1]
        text = run_command(sed.params.cmd, sed.params.args, CSV)
        body = {"model": "mock-writer", "max_tokens": 2000,
                "messages": [{"role": "system", "content": "You rewrite text exactly as instructed."},
                             {"role": "user", "content": f"Instructions: {plan.workflow[2].params.instructions}"
                                                         f"\n\nText:\n{text}"}]}
        r = await self.client.post("chat/completions", content=msgspec.json.encode(body), headers=self.headers)
        out = self.response_decoder.decode(r.content)["choices"][0]["message"]["content"]
        if out != TRANSFORMED:
            raise SystemExit(f"flow.py: unexpected baseline output: {out!r}")


def make_baseline(client: httpx.AsyncClient) -> Callable[[int], Awaitable[None]]:
    """The same work without NATS: planning POST, plan decode, sed, transform POST."""
    work = BaselineWork(client)

    async def one(_: int) -> None:
        await work.execute(await work.plan())

    return one


async def make_raw_floor(url: str, client: httpx.AsyncClient, stack: AsyncExitStack) -> Callable[[int], Awaitable[None]]:
    """The baseline's work with the durable flow's critical-path NATS round trips, in raw nats-py.

    What no framework on this machine can beat: the same server, no Tandem code, no spans, and
    per task the round trips the durable flow waits for (``--count`` lists them):
    the submission's JetStream publish and its ack, with the delivery to a consumer already waiting
    for it (the task actor's pull is outstanding) in parallel; ``plan`` → (a plan-cache KV get that misses, ``complete``) and ``execute`` → ``complete``,
    as core request/reply to responders on the same connection; the task state's KV put;
    the result event, published and received; the delivery's ack.
    """
    nc = await nats.connect(url, name="bench-flow-floor")
    stack.push_async_callback(nc.close)
    js = nc.jetstream()
    await js.add_stream(name="FLOOR", subjects=["floor.submit"], retention="workqueue", storage="file")
    kv = await js.create_key_value(bucket="floor_state")
    cache = await js.create_key_value(bucket="floor_plans")
    work = BaselineWork(client)
    done: dict[str, asyncio.Future[Any]] = {}
    delivered: dict[str, asyncio.Future[Any]] = {}
    serial = itertools.count()

    async def complete(msg: Any) -> None:
        await msg.respond(msg.data)

    running: set[asyncio.Task[None]] = set()

    async def nested(msg: Any) -> None:  # planner or executor, concurrently: a request to the router inside
        task = asyncio.ensure_future(serve(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    async def serve(msg: Any) -> None:
        if msg.subject == "floor.plan":
            try:
                await cache.get("miss")
            except nats.js.errors.KeyNotFoundError:
                pass
        reply = await nc.request("floor.complete", msg.data, timeout=10)
        await msg.respond(reply.data)

    def resolve(waiters: dict[str, asyncio.Future[Any]], key: str, msg: Any) -> None:
        waiter = waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    async def event(msg: Any) -> None:
        resolve(done, msg.subject.rpartition(".")[2], msg)

    async def delivery(msg: Any) -> None:
        resolve(delivered, msg.headers["k"], msg)

    for subject, cb in (("floor.complete", complete), ("floor.plan", nested), ("floor.execute", nested)):
        await nc.subscribe(subject, queue="floor", cb=cb)
    await nc.subscribe("floor.done.*", cb=event)
    await js.subscribe("floor.submit", durable="floor", cb=delivery, manual_ack=True)
    await nc.flush()
    body = msgspec.json.encode(_submit())

    async def one(_: int) -> None:
        key = str(next(serial))
        loop = asyncio.get_running_loop()
        finished = done[key] = loop.create_future()
        arrived = delivered[key] = loop.create_future()
        await js.publish("floor.submit", body, headers={"k": key})
        task = await arrived
        await nc.request("floor.plan", task.data, timeout=10)
        plan = await work.plan()
        await nc.request("floor.execute", task.data, timeout=10)
        await work.execute(plan)
        await kv.put(f"t{key}", body)
        await nc.publish(f"floor.done.{key}", body)
        await finished
        await task.ack()

    return one


async def bench(args: argparse.Namespace, provider: Any) -> float:
    config = bench_config()
    model = ZeroLatencyModel()
    factories = {"router": lambda bus, config, **kw: RouterActor(bus, config, transport=model.transport, **kw),
                 "planner": lambda bus, config, **kw: PlannerActor(bus, config, recipes=[], **kw)}
    settle = partial(flush_spans, provider)

    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url, name="bench-flow")
        try:
            async with start_actors(bus, config, ["planner", "router", "executor", "task"], factories=factories), \
                    httpx.AsyncClient(base_url="http://mock.invalid/v1/", transport=model.transport) as client, \
                    AsyncExitStack() as stack:
                meter = cpu_meter(_child_pid("nats-server"))
                flow = Side("durable", make_durable(bus), settle, meter)
                direct = Side("client", make_client_side(bus, config), settle, meter)
                base = Side("baseline", make_baseline(client), settle, meter)
                floor = Side("floor", await make_raw_floor(server.url, client, stack), settle, meter)
                sides = (base, floor, direct, flow)
                await warm_up(sides, args.warmup)
                if args.calls:
                    await anyio.sleep(0.5)  # what the warm-up left in flight (health records) lands first
                    for label, side in (("client-side flow", direct), ("durable (task actor)", flow)):
                        calls = CallCounter()
                        calls.start()
                        try:
                            for i in range(args.calls):
                                await side.call(i)
                            await anyio.sleep(0.5)  # work after the reply (health records, acks) is the task's too
                        finally:
                            calls.stop()
                        calls.report(label, args.calls, args.profile_top)
                    return float("nan")
                if args.count:
                    await anyio.sleep(0.5)  # what the warm-up left in flight (health records) lands first
                    counter = MessageCounter(bus.nc)
                    for label, side in (("client-side flow", direct), ("durable (task actor)", flow)):
                        counter.reset()
                        for i in range(args.count):
                            await side.call(i)
                        await anyio.sleep(0.5)  # work after the reply (health records, acks) is the task's too
                        counter.report(label, args.count)
                    return float("nan")
                print(f"flow: {args.rounds} rounds; latency {args.latency_requests} sequential tasks, throughput "
                      f"{args.throughput_requests} tasks with {args.in_flight} in flight; tracing "
                      f"{'off (diagnostic)' if provider is None else 'on'}", flush=True)
                profiler = None
                if args.profile is not None:
                    import cProfile

                    profiler = cProfile.Profile()
                profiled = flow if args.profile_side == "durable" else direct
                for r in range(args.rounds):  # the order rotates, so no side always runs on a warm machine
                    for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                        if profiler is not None and side is profiled:
                            profiler.enable()
                        await run_round(side, args, LAYOUT)
                        if profiler is not None and side is profiled:
                            profiler.disable()
        finally:
            await bus.close()

    rows = [("baseline (no NATS)", base), ("raw-NATS floor", floor), ("client-side flow", direct),
            ("durable (task actor)", flow)]
    (b50, b99, brate), (r50, _, rrate), (c50, _, _), (f50, f99, frate) = print_medians(rows, LAYOUT)
    print_cpu(rows)
    overhead = f50 - b50
    durable = f50 - c50
    print()
    print(f"orchestration overhead per task: p50 {overhead:.3f} ms, p99 {f99 - b99:.3f} ms (durable − baseline); "
          f"client-side flow: p50 {c50 - b50:.3f} ms")
    print(f"durable/baseline p50 {f50 / b50:.1f}x (target <= {BASELINE_RATIO_TARGET:g}x: "
          f"{'met' if f50 / b50 <= BASELINE_RATIO_TARGET else 'NOT met'}); client-side/baseline p50 {c50 / b50:.1f}x; "
          f"throughput durable/baseline {frate / brate:.3f}x")
    print(f"raw-NATS floor (the baseline's work + the durable flow's critical-path round trips, no Tandem): "
          f"p50 {r50 / b50:.1f}x baseline, {rrate:.0f} tasks/s; durable/floor p50 {f50 / r50:.1f}x, "
          f"throughput {frate / rrate:.3f}x; client-side/floor p50 {c50 / r50:.1f}x")
    print(f"durable path adds p50 {durable:.3f} ms over the client-side flow (target <= {DURABLE_TARGET_MS:g} ms: "
          f"{'met' if durable <= DURABLE_TARGET_MS else 'NOT met'}); {frate:.0f} tasks/s "
          f"(target >= {DURABLE_RATE_TARGET:g}: {'met' if frate >= DURABLE_RATE_TARGET else 'NOT met'})")
    print(f"target: overhead p50 <= {OVERHEAD_TARGET_MS:g} ms: {'met' if overhead <= OVERHEAD_TARGET_MS else 'NOT met'}")
    print(f"model calls: {model.planning_calls} planning, {model.other_calls} other (baseline included)")
    if profiler is not None:
        import pstats

        print_profile(profiler, args.profile, f"the {args.profile_side} flow rounds", "main thread", args.profile_top)
        print(f"\n--- {args.profile_side} flow: where the main thread's time goes (cProfile own time) ---")
        attribute_profile(pstats.Stats(profiler))
    return overhead


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Orchestration overhead of a two-stage task (run_task over NATS, zero-latency mock model) "
                    "against the same work done directly. The last line is 'overhead p50 <x> ms'. "
                    "Never fails on timings.",
    )
    add_common_arguments(
        parser, rounds_help="alternating rounds of baseline and flow", unit="tasks",
        latency_option="--tasks", latency=300, throughput_option="--throughput-tasks", throughput=200,
        in_flight=16, warmup=30,
        profile_help="diagnostic: cProfile the flow rounds, write stats to FILE and print the hot spots",
    )
    parser.add_argument("--count", type=int, default=0, metavar="N",
                        help="diagnostic: run N tasks of each flow sequentially and print the messages and round "
                             "trips per task by subject (no timing)")
    parser.add_argument("--calls", type=int, default=0, metavar="N",
                        help="diagnostic: run N tasks of each flow sequentially and print the Python calls, asyncio "
                             "tasks and cancel scopes per task, and the Tandem functions with the most calls under "
                             "them (no timing)")
    parser.add_argument("--profile-side", choices=("durable", "client"), default="durable",
                        help="which flow --profile records (default durable)")
    args = parser.parse_args(argv)

    file_exporter_only()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-flow-") as tmp:
        trace_file = Path(tmp) / "traces.jsonl"
        with tracing("bench.flow", None if args.no_tracing else trace_file) as provider:
            overhead = anyio.run(bench, args, provider)
        if provider is not None:
            spans = sum(1 for _ in trace_file.open("rb"))
            print(f"spans written to the trace file: {spans}")
    print(f"overhead p50 {overhead:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
