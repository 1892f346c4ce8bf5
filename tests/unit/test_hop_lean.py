"""The hop path's queued spans (issue 14): while every span processor only queues finished spans
(``QueuedSpanProcessor``), a hop's span keeps ids, attributes and times, and becomes a real
``ReadableSpan`` only for export. Exporters, a processor added later and the JSON-lines file see
the same spans, parents, links, events and status as the SDK path makes."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from tandem.services.bus._tracing import (
    HopAttributes,
    _decider,
    _Forwarded,
    _HopSpan,
    _LeanSpan,
    activate,
    inject_span,
    start_process_from,
    start_send,
)
from tandem.services.telemetry._setup import QueuedSpanProcessor, encode_spans

SEND = HopAttributes("send", "agents.lean.ask")
PROCESS = HopAttributes("process", "agents.lean.ask", consumer_group="q.lean", actor="lean")


def _queued(exporter: SpanExporter, sampler: S.Sampler | None = None) -> tuple[TracerProvider, QueuedSpanProcessor]:
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    processor = QueuedSpanProcessor(exporter, schedule_delay=60)
    provider.add_span_processor(processor)
    return provider, processor


def _hop(provider: TracerProvider, *, fail: bool = False) -> list[Any]:
    """A request and its handling as the bus and an actor trace them; return the spans made, in order."""
    made: list[Any] = []
    send = start_send(SEND, lambda: SEND.build(correlation_id="c1", conversation_id="u1", body_size=12),
                      provider=provider)
    made.append(send)
    with send:
        headers = inject_span(send, {"Tandem-Heartbeat": "1"})
        headers["tracestate"] = "vendor=1"
        process = start_process_from(PROCESS, lambda: PROCESS.build(subject="agents.lean.ask", correlation_id="c1",
                                                                    body_size=12), headers, provider=provider)
        made.append(process)
        token = activate(process)
        try:
            with process:
                child = start_send(SEND, SEND.build(correlation_id="c1"), provider=provider)  # a request it makes
                made.append(child)
                child.end()
                inner = provider.get_tracer("test").start_span("plan lean")  # the handler's own span
                made.append(inner)
                inner.end()
                process.add_event("retry", {"tandem.attempt": 2})
                process.set_attribute("error.type", "timeout")
                process.set_status(Status(StatusCode.ERROR, "gave up"))
                reply = inject_span(trace.get_current_span(), {})
                assert reply["traceparent"].split("-")[2] == f"{process.get_span_context().span_id:016x}"
        finally:
            otel_context.detach(token)
        if fail:
            with pytest.raises(KeyError), send:
                raise KeyError("lost")
    return made


def _shape(span: ReadableSpan, ids: dict[int, str]) -> dict[str, Any]:
    """What a span says, with its ids replaced by their order of appearance."""
    def name_of(span_id: int | None) -> str | None:
        return None if span_id is None else ids.setdefault(span_id, f"s{len(ids)}")

    return {
        "name": span.name, "kind": span.kind, "id": name_of(span.context.span_id),
        "parent": name_of(span.parent.span_id) if span.parent else None,
        "parent_remote": span.parent.is_remote if span.parent else None,
        "parent_sampled": span.parent.trace_flags.sampled if span.parent else None,
        "trace_state": span.context.trace_state.to_header(),
        "attributes": dict(span.attributes), "status": (span.status.status_code, span.status.description),
        "events": [(e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"}) for e in span.events],
        "links": list(span.links), "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "resource": dict(span.resource.attributes), "timed": 0 < span.start_time <= span.end_time,
    }


def _shapes(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    ids: dict[int, str] = {}
    return [_shape(span, ids) for span in sorted(spans, key=lambda s: s.start_time)]


@pytest.mark.parametrize("fail", [False, True])
def test_queued_hop_spans_export_as_the_sdk_path_makes_them(fail: bool) -> None:
    sdk_exporter = InMemorySpanExporter()
    sdk_provider = TracerProvider(resource=(resource := TracerProvider().resource))
    sdk_provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    sdk_made = _hop(sdk_provider, fail=fail)
    assert {type(span) for span in sdk_made[:3]} == {_HopSpan}

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    processor = QueuedSpanProcessor(exporter, schedule_delay=60)
    provider.add_span_processor(processor)
    made = _hop(provider, fail=fail)
    assert {type(span) for span in made[:3]} == {_LeanSpan}
    provider.shutdown()  # flushes: nothing is lost at exit

    spans = exporter.get_finished_spans()
    assert len(spans) == 4 and all(type(span) is ReadableSpan for span in spans)  # real spans for the exporter
    assert _shapes(spans) == _shapes(sdk_exporter.get_finished_spans())
    send, process, child, inner = sorted(spans, key=lambda s: s.start_time)
    assert process.parent.span_id == send.context.span_id and process.parent.is_remote
    assert process.context.trace_id == send.context.trace_id == child.context.trace_id == inner.context.trace_id
    assert child.parent == process.context == inner.parent and not child.parent.is_remote
    assert process.attributes["messaging.operation.type"] == "process" and process.links == ()
    assert send.to_json()  # the SDK's own serialisation works on them
    assert processor.statistics().exported == 4


def test_the_json_lines_of_queued_hop_spans_are_the_sdk_documents() -> None:
    lines: list[bytes] = []

    class Lines(SpanExporter):
        accepts_hop_spans = True

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            batch.extend(spans)
            lines.append(encode_spans(spans))
            return SpanExportResult.SUCCESS

    batch: list[Any] = []
    provider, _ = _queued(Lines())
    _hop(provider, fail=True)
    provider.force_flush()
    assert sum(type(span) is _LeanSpan for span in batch) == 3  # written as they are, with the handler's SDK span
    documents = [json.loads(line) for line in b"".join(lines).splitlines()]
    expected = [json.loads((span._readable() if type(span) is _LeanSpan else span).to_json(indent=None))
                for span in batch]
    assert documents == expected
    process = next(d for d in documents if d["name"] == "process agents.lean.ask")
    assert process["status"] == {"status_code": "ERROR", "description": "gave up"}
    assert process["context"]["trace_state"] == "['vendor=1']" or "vendor" in process["context"]["trace_state"]
    provider.shutdown()


def test_a_processor_added_later_sees_real_spans_from_then_on() -> None:
    class Recorder(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[Any] = []
            self.ended: list[ReadableSpan] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.started.append(span)

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span)

    exporter = InMemorySpanExporter()
    provider, _ = _queued(exporter)
    open_span = start_send(SEND, SEND.build(correlation_id="c"), provider=provider)
    assert type(open_span) is _LeanSpan
    recorder = Recorder()
    provider.add_span_processor(recorder)
    open_span.end()  # started before the recorder: it ends into every processor as a ReadableSpan
    later = start_send(SEND, SEND.build(correlation_id="c"), provider=provider)
    assert type(later) is _HopSpan and recorder.started == [later]
    later.end()
    provider.force_flush()
    assert [type(span) for span in recorder.ended] == [ReadableSpan, _HopSpan]
    assert [span.context.span_id for span in exporter.get_finished_spans()] == [
        open_span.get_span_context().span_id, later.get_span_context().span_id]
    provider.shutdown()


def test_a_subclass_that_does_more_on_end_gets_the_sdk_path() -> None:
    class Counting(QueuedSpanProcessor):
        count = 0

        def on_end(self, span: ReadableSpan) -> None:
            Counting.count += 1
            super().on_end(span)

    provider = TracerProvider()
    provider.add_span_processor(Counting(InMemorySpanExporter()))
    span = start_send(SEND, SEND.build(), provider=provider)
    span.end()
    assert type(span) is _HopSpan and Counting.count == 1
    provider.shutdown()


def test_the_queue_is_bounded_and_drops_are_counted() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = QueuedSpanProcessor(exporter, max_queue_size=2, schedule_delay=60)
    provider.add_span_processor(processor)
    for _ in range(3):
        start_send(SEND, SEND.build(), provider=provider).end()
    assert processor.statistics().dropped == 1
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 2


def test_the_span_api_on_a_queued_hop_span(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    provider, _ = _queued(exporter)
    span = start_send(SEND, SEND.build(correlation_id="c"), provider=provider)
    assert span.is_recording() and span.get_span_context().trace_flags.sampled
    span.update_name("send renamed")
    span.set_attributes({"a": 1, "bad": object()})  # a value the SDK refuses is cleaned as it does
    span.add_link(SpanContext(3, 4, is_remote=True), {"k": "v"})
    span.set_status(StatusCode.OK)
    span.set_status(Status(StatusCode.ERROR, "ignored after OK"))
    span.end()
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attribute("late", 1)
        span.add_event("late")
    assert not span.is_recording()
    provider.force_flush()
    (done,) = exporter.get_finished_spans()
    plain = provider.get_tracer("test").start_span("plain")  # what the SDK makes of the same values
    plain.set_attributes({"a": 1, "bad": object()})
    plain.end()
    # the same cleaning as the SDK in use: older SDKs drop the refused value, newer keep the key with None
    assert done.name == "send renamed" and done.attributes["a"] == 1
    assert ("bad" in done.attributes, done.attributes.get("bad")) == ("bad" in plain.attributes, plain.attributes.get("bad"))
    assert "late" not in done.attributes and done.events == ()
    assert done.status.status_code is StatusCode.OK
    assert [(link.context.span_id, dict(link.attributes)) for link in done.links] == [(4, {"k": "v"})]
    provider.shutdown()


@pytest.mark.parametrize("name,sampler", [
    ("parentbased_traceidratio", S.ParentBasedTraceIdRatio(0.5)),
    ("traceidratio", S.TraceIdRatioBased(0.5)),
    ("parentbased_always_off", S.ParentBased(S.ALWAYS_OFF)),
])
def test_sampling_decisions_on_the_queued_path_are_the_samplers(name: str, sampler: S.Sampler) -> None:
    exporter = InMemorySpanExporter()
    provider, _ = _queued(exporter, sampler)
    rng = random.Random(14)
    for _ in range(300):
        trace_id, span_id = rng.getrandbits(128) or 1, rng.getrandbits(64) or 1
        for flags in ("00", "01"):
            headers = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags}"}
            span = start_process_from(PROCESS, PROCESS.build(), headers, provider=provider)
            parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(flags)))
            expected = sampler.should_sample(trace.set_span_in_context(NonRecordingSpan(parent)), trace_id,
                                             "n").decision.is_sampled()
            assert span.is_recording() is expected, (name, flags)
            assert span.get_span_context().trace_id == trace_id
            assert type(span) in ((_LeanSpan,) if expected else (_Forwarded, NonRecordingSpan))
            span.end()
    provider.shutdown()


@pytest.mark.parametrize("sampler", [S.ALWAYS_ON, S.TraceIdRatioBased(0.3), S.ParentBasedTraceIdRatio(0.3),
                                     S.ParentBased(S.TraceIdRatioBased(0.5), remote_parent_sampled=S.ALWAYS_OFF,
                                                   local_parent_not_sampled=S.ALWAYS_ON)])
def test_deciding_by_flags_is_deciding_by_parent(sampler: S.Sampler) -> None:
    decide = _decider(sampler)
    assert decide is not None
    by_flags: Callable[[bool | None, bool, int], bool] = decide.by_flags  # type: ignore[attr-defined]
    rng = random.Random(7)
    for _ in range(500):
        trace_id = rng.getrandbits(128) or 1
        assert by_flags(None, False, trace_id) is decide(None, trace_id)
        assert decide.root(trace_id) is decide(None, trace_id)  # type: ignore[attr-defined]
        for remote in (False, True):
            for sampled in (False, True):
                parent = SpanContext(trace_id, 9, is_remote=remote, trace_flags=TraceFlags(int(sampled)))
                assert by_flags(remote, sampled, trace_id) is decide(parent, trace_id)


def test_a_producer_kind_and_root_are_kept() -> None:
    exporter = InMemorySpanExporter()
    provider, _ = _queued(exporter)
    start_send(SEND, SEND.build(), provider=provider).end()
    provider.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER and span.parent is None
    provider.shutdown()


def test_hop_span_timestamps_are_written_as_the_sdk_writes_them() -> None:
    provider, _ = _queued(InMemorySpanExporter())
    rng = random.Random(14)
    for i in range(3000):
        span = start_send(SEND, SEND.build(), provider=provider)
        start = rng.randrange(1_600_000_000 * 10**9, 1_900_000_000 * 10**9)
        if i % 2:  # near the rounding edges of a microsecond and of a second
            start = start - start % 1_000_000_000 + rng.choice([0, 1, 499, 500, 501, 999_999_499, 999_999_500,
                                                                999_999_999])
        span._start_time = start
        span.end(end_time=start + rng.choice([0, 1, 500, 999_999_999, 10**9]))
        assert json.loads(encode_spans([span])) == json.loads(span._readable().to_json(indent=None))
    provider.shutdown()


def test_a_lines_exporter_gets_each_span_encoded_as_it_ends_and_a_bad_one_is_dropped() -> None:
    written: list[bytes] = []

    class Lines(SpanExporter):
        accepts_hop_spans = True

        @staticmethod
        def encode_line(span: Any) -> bytes:
            if span._name == "send bad":
                raise TypeError("cannot encode")
            return encode_spans([span])

        def write_lines(self, lines: Sequence[bytes]) -> None:
            written.extend(lines)

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            raise AssertionError("lines are written, not exported")

    provider, processor = _queued(Lines())
    good = start_send(SEND, SEND.build(correlation_id="c"), provider=provider)
    good.end()
    assert processor._queue and type(processor._queue[0]) is bytes  # encoded at end, not in the thread
    bad = start_send(SEND, SEND.build(), provider=provider)
    bad.update_name("send bad")
    bad.end()  # never raises into the hop
    provider.shutdown()
    assert [json.loads(line)["name"] for line in written] == ["send agents.lean.ask"]
    assert processor.statistics().dropped == 1 and processor.statistics().exported == 1
