"""The lean hop span path makes the same spans, and the same sampling decisions, as the SDK (issue 14)."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from tandem.services.bus._tracing import (
    HopAttributes,
    _decider,
    start_process,
    start_send,
)

SAMPLERS = {
    "always_on": S.ALWAYS_ON,
    "always_off": S.ALWAYS_OFF,
    "traceidratio": S.TraceIdRatioBased(0.3),
    "parentbased_always_on": S.ParentBased(S.ALWAYS_ON),
    "parentbased_always_off": S.ParentBased(S.ALWAYS_OFF),
    "parentbased_traceidratio": S.ParentBasedTraceIdRatio(0.01),
    "odd_delegates": S.ParentBased(S.TraceIdRatioBased(0.5), remote_parent_sampled=S.ALWAYS_OFF,
                                   local_parent_not_sampled=S.ALWAYS_ON),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_standard_samplers_decide_as_should_sample(name: str) -> None:
    sampler = SAMPLERS[name]
    decide = _decider(sampler)
    assert decide is not None
    rng = random.Random(14)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        parents = [None] + [SpanContext(trace_id, rng.getrandbits(64) or 1, is_remote=remote,
                                        trace_flags=TraceFlags(flags))
                            for remote in (False, True) for flags in (0, 1)]
        for parent in parents:
            ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
            expected = sampler.should_sample(ctx, trace_id, "n").decision.is_sampled()
            assert decide(parent, trace_id) is expected, (name, parent)


def test_other_samplers_go_through_should_sample() -> None:
    class Custom(S.Sampler):
        def should_sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return S.SamplingResult(S.Decision.RECORD_AND_SAMPLE, {"custom": 1})

        def get_description(self) -> str:
            return "custom"

    provider = TracerProvider(sampler=Custom())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert _decider(provider.sampler) is None
    hop = HopAttributes("send", "a.b")
    start_send(hop, hop.build(correlation_id="c"), provider=provider).end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["custom"] == 1


def test_every_span_processor_sees_hop_spans_even_one_added_later() -> None:
    class Recorder(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[str] = []
            self.ended: list[ReadableSpan] = []

        def on_start(self, span, parent_context=None) -> None:  # type: ignore[no-untyped-def]
            self.started.append(span.name)

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span)

    provider = TracerProvider()
    first = Recorder()
    provider.add_span_processor(first)
    send, process = HopAttributes("send", "agents.x"), HopAttributes("process", "agents.x", actor="x")
    span = start_send(send, send.build(correlation_id="c", body_size=3), provider=provider)
    span.add_event("retry", {"tandem.attempt": 2})
    span.end()
    later = Recorder()
    provider.add_span_processor(later)
    child = start_process(process, process.build(correlation_id="c"), span.get_span_context(), provider=provider)
    child.end()
    assert first.started == ["send agents.x", "process agents.x"]
    assert later.started == ["process agents.x"]
    sent, processed = first.ended
    assert isinstance(sent, ReadableSpan) and sent.events[0].name == "retry"
    assert processed.parent == span.get_span_context() and processed.links == ()
    assert processed.context.trace_id == sent.context.trace_id
    assert later.ended == [processed]
    assert sent.to_json()  # the SDK's own serialisation works on them


def test_an_unsampled_parent_records_nothing_but_passes_its_context_on() -> None:
    provider = TracerProvider(sampler=S.ParentBasedTraceIdRatio(0.01))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = SpanContext(5, 6, is_remote=True, trace_flags=TraceFlags(0))
    hop = HopAttributes("process", "agents.y")
    span = start_process(hop, hop.build(), parent, provider=provider)
    span.end()
    assert not span.is_recording() and span.get_span_context().trace_id == 5
    assert not span.get_span_context().trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_extraction_with_another_global_propagator() -> None:
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator,
    )
    from tandem.services.bus._tracing import extract_span_context

    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    try:
        assert extract_span_context({"Tandem-Heartbeat": "1"}) is None
        ctx = extract_span_context({"traceparent": f"00-{7:032x}-{9:016x}-01", "Tandem-Heartbeat": "1"})
        assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.is_remote) == (7, 9, True)
    finally:
        propagate.set_global_textmap(saved)
