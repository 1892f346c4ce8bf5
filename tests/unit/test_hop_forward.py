"""A hop that records nothing passes the caller's ``traceparent`` on without SDK objects (issue 14),
and makes the same decisions as before: a parent-based sampler still drops every span of an
unsampled task, tracing off still passes the context on unchanged, sampled hops still record."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanContext, TraceFlags
from tandem.services.bus._tracing import (
    HopAttributes,
    _Forwarded,
    activate,
    extract_span_context,
    inject_span,
    start_process_from,
    start_send,
)

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
HOP = HopAttributes("process", "test.forward", actor="t")
SEND = HopAttributes("send", "test.forward")


def _provider(sampler: S.Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _headers(flags: str) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE}-{PARENT}-{flags}"}


def test_an_unsampled_parent_is_forwarded_as_it_came() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(1.0))  # would record any root
    span = start_process_from(HOP, {}, _headers("00"), provider=provider)
    assert type(span) is _Forwarded and not span.is_recording()
    assert span.traceparent == _headers("00")["traceparent"]  # as it came
    assert inject_span(span, {}) == {}  # the reply: no span answered, nothing to tell the caller
    assert span.get_span_context() == SpanContext(int(TRACE, 16), int(PARENT, 16), is_remote=False,
                                                  trace_flags=TraceFlags(0))
    token = activate(span)
    try:  # the handler's own requests and spans: still dropped, same trace
        child = start_send(SEND, {}, provider=provider)
        assert type(child) is _Forwarded and inject_span(child, {}) == _headers("00")
        with provider.get_tracer("t").start_as_current_span("invoke_agent x") as inner:
            assert not inner.is_recording()
            assert inner.get_span_context().trace_id == int(TRACE, 16)
    finally:
        otel_context.detach(token)
    span.end()
    assert exporter.get_finished_spans() == ()


def test_a_sampled_parent_is_recorded_as_its_child() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(0.0))  # would drop any root
    with start_process_from(HOP, {"k": 1}, _headers("01"), provider=provider) as span:
        assert span.is_recording() and type(span) is not _Forwarded
    (done,) = exporter.get_finished_spans()
    assert done.parent == extract_span_context(_headers("01"))
    assert done.context.trace_id == int(TRACE, 16) and done.context.trace_flags.sampled


@pytest.mark.parametrize("sampler", [S.ALWAYS_ON, S.ParentBased(S.ALWAYS_ON, remote_parent_not_sampled=S.ALWAYS_ON)])
def test_samplers_that_may_record_under_an_unsampled_parent_still_decide(sampler: S.Sampler) -> None:
    provider, exporter = _provider(sampler)
    with start_process_from(HOP, {}, _headers("00"), provider=provider) as span:
        assert span.is_recording()
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize("flags", ["00", "01"])
def test_tracing_off_passes_the_context_on_unchanged(flags: str) -> None:
    span = start_process_from(HOP, {}, _headers(flags), provider=NoOpTracerProvider())
    assert type(span) is _Forwarded
    assert span.get_span_context() == extract_span_context(_headers(flags))  # remote, flags as they came
    assert inject_span(span, {}) == {}  # the reply: the caller's own context, not sent back
    token = activate(span)
    try:  # what is sent under it carries the context on unchanged
        assert inject_span(start_send(SEND, {}, provider=NoOpTracerProvider()), {}) == _headers(flags)
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("value", [f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-00", "garbage",
                                   f"01-{TRACE}-{PARENT}-00", f"00-{TRACE.upper()}-{PARENT}-00"])
def test_invalid_traceparents_are_not_forwarded(value: str) -> None:
    provider, _ = _provider(S.ParentBasedTraceIdRatio(1.0))
    span = start_process_from(HOP, {}, {"traceparent": value}, provider=provider)
    assert type(span) is not _Forwarded
    parent = extract_span_context({"traceparent": value})  # the propagator's reading, as before
    if parent is None:
        assert span.get_span_context().trace_id != int(TRACE, 16)  # a new root
    else:  # a later version: parsed by the W3C propagator
        assert span.get_span_context().trace_id == parent.trace_id


def test_a_root_the_head_sampler_did_not_pick_writes_its_traceparent_once() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(0.0))
    span = start_send(SEND, {}, provider=provider)
    assert type(span) is _Forwarded
    headers = inject_span(span, {})
    ctx = extract_span_context(headers)
    assert ctx is not None and not ctx.trace_flags.sampled
    assert span.get_span_context().trace_id == ctx.trace_id and span.get_span_context().span_id == ctx.span_id
    # the next hop drops it too (parent-based), passing the same traceparent on
    process = start_process_from(HOP, {}, headers, provider=provider)
    assert type(process) is _Forwarded and process.traceparent == headers["traceparent"]
    token = activate(process)
    try:
        assert inject_span(start_send(SEND, {}, provider=provider), {}) == headers
    finally:
        otel_context.detach(token)
    span.end()
    assert exporter.get_finished_spans() == ()


def test_the_current_span_is_used_when_it_is_not_forwarded() -> None:
    provider, exporter = _provider(S.ParentBased(S.ALWAYS_ON))
    with provider.get_tracer("t").start_as_current_span("task") as root, start_send(SEND, {}, provider=provider) as send:
        assert send.is_recording()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["send test.forward"].parent.span_id == root.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN
