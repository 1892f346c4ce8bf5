"""Shared fixtures: a real nats-server per test, a connected bus, spans in memory, a mock model."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.config import Config, ModelConfig, NatsConfig, ProviderConfig, TwoStageConfig
from tandem.services.errors import RemoteError

# keep the suite's usage log and JetStream store out of the user's home (CLI subprocesses inherit these)
os.environ.setdefault("TANDEM_USAGE_LOG", os.path.join(tempfile.mkdtemp(prefix="tandem-test-"), "llm_usage.jsonl"))
os.environ.setdefault("TANDEM_EPHEMERAL", "1")

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
trace.set_tracer_provider(_provider)
set_global_textmap(TraceContextTextMapPropagator())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Spans finished during the test (the process-wide provider exports here)."""
    _exporter.clear()
    return _exporter


@pytest.fixture
async def nats_url() -> AsyncIterator[str]:
    """A real nats-server (JetStream on) on a free loopback port, for this test only."""
    async with EmbeddedNats() as server:
        yield server.url


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url)
    try:
        yield b
    finally:
        await b.close()


def chat_response(content: str, *, model: str = "mock-model", prompt_tokens: int = 11,
                  completion_tokens: int = 7) -> dict[str, Any]:
    """An OpenAI chat-completions response body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class MockModel:
    """A scripted OpenAI-compatible server behind ``httpx.MockTransport``.

    ``planner`` answers planning calls (those with a ``response_format``),
    ``writer`` answers the rest; each gets the decoded request body.
    """

    def __init__(self, planner: Callable[[dict], httpx.Response | str], writer: Callable[[dict], httpx.Response | str]):
        self.planner = planner
        self.writer = writer
        self.requests: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions"), request.url
        body = json.loads(request.content)
        self.requests.append(body)
        answer = (self.planner if "response_format" in body else self.writer)(body)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=chat_response(answer, model=body["model"]))


def make_config(**two_stage: Any) -> Config:
    """A config with one mock OpenAI-compatible provider serving both tiers."""
    return Config(
        nats=NatsConfig(request_timeout_s=10),
        two_stage=TwoStageConfig(**two_stage),
        providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1", gen_ai_provider="openai")},
        models={"planner-model": ModelConfig(provider="mock", model="planner-model", structured_output="json_schema"),
                "writer-model": ModelConfig(provider="mock", model="writer-model", structured_output="json_schema")},
        tiers={"planning": ["planner-model"], "execution": ["writer-model"]},
        tasks={"planning": "planning", "manual_transform": "execution", "single_stage": "execution"},
        plan_cache_bucket="test_plans",
    )


class Ran(msgspec.Struct, kw_only=True):
    """A finished task flattened for assertions: its state, result and trace id."""

    task_id: str
    status: str
    trace_id: str
    mode: str = ""
    complexity: float = 0.0
    plan: Any = None
    plan_cached: bool = False
    fallback: str = ""
    shape_reason: str = ""
    outputs: list = []
    steps: list = []
    approval: str = ""
    approved_steps: list = []
    modifications: list = []
    planning_model: str = ""
    recipe: str = ""
    recipe_params: dict = {}


async def run_task(bus: Bus, submit: Any, *, approver: Callable | None = None, config: Config | None = None) -> Ran:
    """Run ``submit`` through the task actor (which must be running) like ``tandem run`` does.

    Raises
    ------
    RemoteError
        When the task failed, with its error's code and message.
    """
    from tandem.services.tasks import TaskClient

    state = await TaskClient(bus).run(submit, approver=approver)
    if state.status in ("failed", "dead_lettered") and state.error is not None and state.result is None:
        raise RemoteError(state.error.code, state.error.message, path=state.error.path)
    if state.status == "failed" and state.error is not None and state.result is not None \
            and state.result.mode != "not_run":
        raise RemoteError(state.error.code, state.error.message, path=state.error.path)
    result = msgspec.structs.asdict(state.result) if state.result is not None else {}
    return Ran(task_id=state.task_id, status=state.status, trace_id=state.trace_id, plan=state.plan, **result)


def package_readme(package: str) -> str:
    """The long description (README) of an installed package, read from its METADATA file.

    Read as text rather than through ``importlib.metadata.metadata(...).get_payload()``, which
    returned an empty body under some (lowest-allowed) dependency sets.
    """
    import importlib.metadata

    try:
        raw = importlib.metadata.distribution(package).read_text("METADATA") or ""
    except importlib.metadata.PackageNotFoundError:
        return ""
    return raw.partition("\n\n")[2]


class ChatCompletionHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible ``/chat/completions`` endpoint over real HTTP (for tests that run Tandem in
    another process, where ``httpx.MockTransport`` cannot reach); subclasses implement :meth:`answer`."""

    def answer(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps(chat_response(self.answer(body), model=body["model"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass
