"""Helpers for tests that run a whole deployment as real processes (``tandem up``'s supervisor).

* :class:`ModelServer`: an OpenAI-compatible chat-completions server over real HTTP on loopback
  (the actor processes reach it through a YAML config), answering after ``delay`` seconds;
  planning calls get :data:`PLAN`'s JSON.
* :func:`write_config`: that YAML config.
* :func:`running`: render a :class:`~tandem.services.deploy.Topology` into a directory and run
  it under :class:`~tandem.services.deploy._supervisor.Supervisor` for the ``async with`` block.
* :func:`connect`: a bus connected as one of the deployment's users (``client`` by default).
* :class:`Load`: submit tasks and follow them until every one has ended, counting outcomes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from tandem.messages import TERMINAL, ExecutionPlan, TaskSubmit, decoder
from tandem.services.bus import Bus
from tandem.services.config import load_config
from tandem.services.deploy import Deployment, Topology, render
from tandem.services.deploy._supervisor import Supervisor
from tandem.services.errors import RemoteError, TandemError
from tandem.services.tasks import TaskClient

from .conftest import ChatCompletionHandler

PLAN_DICT = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Upper-case it."}},
    {"step": 3, "action": "write_output"},
]}
PLAN = decoder(ExecutionPlan).decode(json.dumps(PLAN_DICT))


class ModelServer(ThreadingHTTPServer):
    """Chat completions on ``127.0.0.1:<port>``; every answer waits ``delay`` seconds first."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(ChatCompletionHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive: the router's httpx client reuses its connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def answer(self, body: dict) -> str:
        if self.server.delay:
            time.sleep(self.server.delay)
        if "response_format" in body:
            self.server.calls["plan"] += 1
            return json.dumps(PLAN_DICT)
        self.server.calls["text"] += 1
        return body["messages"][-1]["content"].rsplit("\n", 1)[-1].upper() or "OK"


def write_config(path: Path, model_url: str, *, ack_wait_s: float = 2, concurrency: int = 32,
                 request_timeout_s: float = 30) -> Path:
    """Write a config whose every tier is the model at ``model_url``; return its path."""
    path.write_text(f"""
nats: {{request_timeout_s: {request_timeout_s}}}
providers: {{mock: {{kind: openai, base_url: "{model_url}/v1", gen_ai_provider: openai}}}}
models: {{m: {{provider: mock, model: m}}}}
tiers: {{cheap: [m], standard: [m], heavy_reasoning: [m]}}
tasks: {{planning: heavy_reasoning, single_stage: standard, manual_transform: cheap, choice: cheap, intent: cheap,
        summarize: cheap}}
task: {{ack_wait_s: {ack_wait_s}, max_attempts: 3, concurrency: {concurrency}}}
""")
    return path


class Echo:
    """Collects the supervisor's prefixed lines; prints them (pytest shows them on a failure)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


@asynccontextmanager
async def running(directory: Path, topology: Topology, config: Path, *, env: dict[str, str] | None = None,
                  **options: Any) -> AsyncIterator[Supervisor]:
    """Render ``topology`` into ``directory`` and run it under a :class:`Supervisor` for the block."""
    deployment = render(topology, directory, config=load_config(config))
    sup = Supervisor(deployment, topology, config_path=config, echo=Echo(), grace=5,
                     env={"TANDEM_USAGE_LOG_DISABLE": "1", **(env or {})}, **options)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(sup.run)
        print(f"deployment ready in {time.perf_counter() - started:.1f}s: {', '.join(sup.processes)}", flush=True)
        try:
            yield sup
        finally:
            sup.stop()  # the ordered shutdown, also when the block failed (not a cancellation of run)
            with anyio.CancelScope(shield=True), anyio.move_on_after(60):
                await sup.finished.wait()


async def connect(deployment: Deployment, user: str = "client", **options: Any) -> Bus:
    """A bus connected to ``deployment`` as ``user`` (its credential and inbox prefix)."""
    return await Bus.connect(deployment.url, name=f"test-{user}", credentials=deployment.credentials.get(user),
                             inbox_prefix=deployment.inbox_prefixes.get(user, "_INBOX"),
                             replicas=deployment.jetstream_replicas, **options)


class Load:
    """Submit tasks through ``client`` and follow them until every one has ended.

    Outcomes come from the task events and, for any task whose end event was missed (a
    connection down at the time), from the task's state in KV, the source of truth.
    """

    def __init__(self, client: TaskClient) -> None:
        self.client = client
        self.ids: list[str] = []
        self.status: dict[str, str] = {}
        self.errors: Counter[str] = Counter()
        self.done_at: dict[str, float] = {}
        self.attempts: Counter[int] = Counter()
        self.samples: dict[str, str] = {}  # error code → one task's error message
        self.failures: list[tuple[str, str]] = []  # (code, message) of every failed task

    @property
    def ended(self) -> int:
        return sum(1 for s in self.status.values() if s in TERMINAL)

    def counts(self) -> Counter[str]:
        return Counter(self.status.get(i, "lost") for i in self.ids)

    async def submit(self, n: int, text: str = "hello") -> None:
        for k in range(n):
            sent = await self.client.submit(TaskSubmit(task=f"Rewrite {k}", inputs={3: f"{text} {k}\n"}, plan=PLAN))
            self.ids.append(sent.task_id)
            self.status.setdefault(sent.task_id, "pending")

    async def follow(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Record terminal events as they come (run in a task group; cancel to stop)."""
        async with self.client.follow("*") as events:
            task_status.started()
            while True:
                try:
                    event = await events.next(timeout=1)
                except TandemError:
                    await anyio.sleep(0.5)  # the subscription is resumed on reconnect by nats-py
                    continue
                if event is not None and event.status in TERMINAL and event.task_id in self.status:
                    self._end(event.task_id, event.status)

    def _end(self, task_id: str, status: str) -> None:
        if self.status.get(task_id) not in TERMINAL:
            self.status[task_id] = status
            self.done_at[task_id] = time.perf_counter()

    async def wait_all(self, timeout: float) -> None:
        """Wait until every task has ended (polling KV for the ones whose event was missed)."""
        with anyio.fail_after(timeout):
            while self.ended < len(self.ids):
                await anyio.sleep(1.0)
                last = max(self.done_at.values(), default=0.0)
                if time.perf_counter() - last > 3:  # quiet: maybe events were missed, read the states
                    await self.poll()

    async def poll(self, ids: list[str] | None = None) -> None:
        for task_id in ids or [i for i in self.ids if self.status.get(i) not in TERMINAL]:
            try:
                state = await self.client.get(task_id, resolve=False)
            except (TandemError, RemoteError, TimeoutError):
                continue
            if state.status in TERMINAL:
                self._end(task_id, state.status)
                if state.error is not None:
                    self.errors[state.error.code] += 1
            else:
                self.status[task_id] = state.status

    async def verify(self) -> Counter[str]:
        """Re-read every task's final state from KV; return the counts (status → tasks)."""
        self.errors.clear()
        self.attempts.clear()
        self.failures.clear()
        for task_id in self.ids:
            state = await self.client.get(task_id, resolve=False)
            self.status[task_id] = state.status
            self.attempts[state.attempts] += 1
            if state.error is not None:
                self.errors[state.error.code] += 1
                self.samples.setdefault(state.error.code, state.error.message[:300])
                self.failures.append((state.error.code, state.error.message))
        return self.counts()
