"""A traced hop over a real nats-server with the queued span path (issue 14): the client's ``send``
span, the actor's ``process`` span, the reply's context and the handler's own spans, as an exporter
and the JSON-lines file see them once the providers shut down."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tandem.actors import Actor, Endpoint
from tandem.messages import Message
from tandem.services.bus import Bus
from tandem.services.errors import RemoteError
from tandem.services.telemetry import setup_tracing, shutdown_tracing
from tandem.services.telemetry._setup import QueuedSpanProcessor


class Ask(Message, frozen=True, kw_only=True, tag="hop_lean_ask"):
    fail: bool = False


class Told(Message, frozen=True, kw_only=True, tag="hop_lean_told"):
    traceparent: str = ""


class Teller(Actor):
    """Answers with the context its handler runs in, after a span of its own."""

    name = "hop_lean"

    def __init__(self, bus: Bus, provider: TracerProvider) -> None:
        super().__init__(bus, concurrency=2)
        self.tracer = provider.get_tracer("test.lean")

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.hop.lean", Ask, self.ask, timeout=10)]

    async def ask(self, request: Ask) -> Told:
        with self.tracer.start_as_current_span("plan lean"):
            pass
        if request.fail:
            raise ValueError("no")
        context = trace.get_current_span().get_span_context()
        return Told(correlation_id=request.correlation_id, traceparent=f"{context.trace_id:032x}-{context.span_id:016x}")


async def test_a_traced_hop_on_the_queued_path(nats_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(QueuedSpanProcessor(exporter, schedule_delay=60))
    bus = await Bus.connect(nats_url, tracer_provider=provider)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(Teller(bus, provider).run)
            told = await bus.request("test.hop.lean", Ask(), Told, timeout=10)
            try:
                await bus.request("test.hop.lean", Ask(fail=True), Told, timeout=10)
            except RemoteError as exc:
                assert exc.code == "internal"
            tg.cancel_scope.cancel()
    finally:
        await bus.close()
    provider.shutdown()  # everything queued is exported at exit
    spans = exporter.get_finished_spans()
    assert all(type(span) is ReadableSpan for span in spans)
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    assert len(by_trace) == 2
    for trace_spans in by_trace.values():
        kinds = {span.name: span for span in trace_spans}
        send, process, plan = kinds["send test.hop.lean"], kinds["process test.hop.lean"], kinds["plan lean"]
        assert send.kind is SpanKind.PRODUCER and send.parent is None
        assert process.kind is SpanKind.CONSUMER and process.parent.span_id == send.context.span_id
        assert process.parent.is_remote and process.links == ()
        assert plan.parent == process.context
        assert process.attributes["messaging.consumer.group.name"] and process.attributes["tandem.actor"] == "hop_lean"
    ok = next(t for t in by_trace.values() if all(s.status.status_code is StatusCode.UNSET for s in t))
    process = next(s for s in ok if s.name == "process test.hop.lean")
    assert told.traceparent == f"{process.context.trace_id:032x}-{process.context.span_id:016x}"
    failed = next(t for t in by_trace.values() if t is not ok)
    failed_process = next(s for s in failed if s.name == "process test.hop.lean")
    assert failed_process.status.status_code is StatusCode.ERROR
    assert failed_process.attributes["error.type"] == "ValueError"
    assert [e.name for e in failed_process.events] == ["exception"]
    failed_send = next(s for s in failed if s.name == "send test.hop.lean")
    assert failed_send.status.status_code is StatusCode.ERROR and failed_send.attributes["error.type"] == "internal"


async def test_the_trace_file_gets_every_hop_span_at_shutdown(nats_url: str, tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = setup_tracing("test.lean", trace_file=path, install_global=False)
    bus = await Bus.connect(nats_url, tracer_provider=provider)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(Teller(bus, provider).run)
            for _ in range(20):
                await bus.request("test.hop.lean", Ask(), Told, timeout=10)
            tg.cancel_scope.cancel()
    finally:
        await bus.close()
    shutdown_tracing(provider)
    documents = [json.loads(line) for line in path.read_bytes().splitlines()]
    names = [d["name"] for d in documents]
    assert names.count("send test.hop.lean") == names.count("process test.hop.lean") == names.count("plan lean") == 20
    sends = {d["context"]["span_id"]: d for d in documents if d["name"] == "send test.hop.lean"}
    for d in documents:
        if d["name"] == "process test.hop.lean":
            parent = sends[d["parent_id"]]
            assert parent["context"]["trace_id"] == d["context"]["trace_id"]
            assert d["kind"] == "SpanKind.CONSUMER" and d["resource"]["attributes"]["service.name"] == "test.lean"
