"""The hop path's inline decisions and lines (issue 14): a root's and a sampled remote parent's
sampling decision read as ``trace_id & mask < bound``, an unsampled hop made without SDK objects,
and a hop span's JSON line from cached pieces are each what the sampler, the SDK and
``ReadableSpan.to_json`` make."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind
from tandem.services.bus._tracing import (
    HopAttributes,
    _decider,
    _Forwarded,
    _LeanSpan,
    _Sdk,
    activate,
    extract_span_context,
    inject_span,
    start_process_from,
    start_send,
)
from tandem.services.telemetry._setup import QueuedSpanProcessor, encode_line

SEND = HopAttributes("send", "agents.trace.ask")
PROCESS = HopAttributes("process", "agents.trace.ask", consumer_group="q.trace", actor="trace")
SAMPLERS = [S.ALWAYS_ON, S.ALWAYS_OFF, S.TraceIdRatioBased(0.3), S.ParentBasedTraceIdRatio(0.01),
            S.ParentBasedTraceIdRatio(0.5), S.ParentBased(S.ALWAYS_OFF),
            S.ParentBased(S.ALWAYS_ON, remote_parent_sampled=S.TraceIdRatioBased(0.5))]


class _Drop(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_inline_decisions_are_the_deciders(sampler: S.Sampler) -> None:
    decide = _decider(sampler)
    assert decide is not None
    sdk = _Sdk(TracerProvider(sampler=sampler))
    rng = random.Random(3)
    for _ in range(2000):
        trace_id = rng.getrandbits(128)
        assert (trace_id & sdk.root_mask < sdk.root_bound) is decide.root(trace_id)  # type: ignore[attr-defined,operator]
        assert (trace_id & sdk.remote_sampled_mask < sdk.remote_sampled_bound) \
            is decide.by_flags(True, True, trace_id)  # type: ignore[attr-defined,operator]


@pytest.mark.parametrize("lean", [True, False], ids=["queued", "sdk-processor"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_roots_are_decided_on_the_sdks_own_draws(sampler: S.Sampler, lean: bool) -> None:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(QueuedSpanProcessor(_Drop(), schedule_delay=60) if lean
                                else SimpleSpanProcessor(InMemorySpanExporter()))
    random.seed(11)
    spans = [start_send(SEND, SEND.build, provider=provider) for _ in range(300)]
    random.seed(11)  # the SDK's RandomIdGenerator: the trace id, then the span id
    for span in spans:
        trace_id, span_id = random.getrandbits(128), random.getrandbits(64)
        sampled = sampler.should_sample(None, trace_id, "n").decision.is_sampled()
        assert span.is_recording() is sampled
        context = span.get_span_context()
        assert (context.trace_id, context.span_id, context.trace_flags.sampled) == (trace_id, span_id, sampled)
        if not sampled:  # written once, read back as the next hop reads it
            assert type(span) is _Forwarded
            read = extract_span_context(inject_span(span, {}))
            assert read is not None and (read.trace_id, read.span_id, read.trace_flags.sampled) == (trace_id, span_id, False)
        else:
            assert (type(span) is _LeanSpan) is lean
        span.end()
    provider.shutdown()


def test_an_unsampled_task_is_passed_on_hop_after_hop_without_a_reply_context() -> None:
    provider = TracerProvider(sampler=S.ParentBasedTraceIdRatio(0.0))  # no root is picked
    provider.add_span_processor(QueuedSpanProcessor(_Drop(), schedule_delay=60))
    send = start_send(SEND, SEND.build, provider=provider)
    request = inject_span(send, {})
    root = extract_span_context(request)
    assert root is not None and not root.trace_flags.sampled
    process = start_process_from(PROCESS, PROCESS.build, request, provider=provider)
    assert type(process) is _Forwarded and not process.is_recording()
    assert inject_span(process, {}) == {}  # the reply: no span answered
    token = activate(process)
    try:
        onward = inject_span(start_send(SEND, SEND.build, provider=provider), {})
    finally:
        otel_context.detach(token)
    assert onward == request  # the next hop reads the same trace, not sampled
    next_hop = start_process_from(PROCESS, PROCESS.build, onward, provider=provider)
    assert next_hop.get_span_context().trace_id == root.trace_id and not next_hop.get_span_context().trace_flags.sampled
    assert _statistics(provider).exported == 0
    provider.shutdown()


def _statistics(provider: TracerProvider) -> Any:
    provider.force_flush()
    (processor,) = provider._active_span_processor._span_processors
    return processor.statistics()


@pytest.mark.parametrize("parented", [True, False], ids=["child", "root"])
def test_a_plain_hop_spans_line_is_the_sdk_document(parented: bool) -> None:
    provider = TracerProvider()
    provider.add_span_processor(QueuedSpanProcessor(_Drop(), schedule_delay=60))
    if parented:
        headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        span = start_process_from(PROCESS, lambda: PROCESS.build(subject="agents.trace.ask", correlation_id="c\"1",
                                                                  conversation_id="u1", body_size=7),
                                  headers, provider=provider)
    else:
        span = start_send(SEND, lambda: SEND.build(correlation_id="c1", body_size=12), provider=provider)
        inject_span(span, {})
    with span:
        pass
    assert type(span) is _LeanSpan
    line = encode_line(span)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(span._readable().to_json(indent=None))
    document = json.loads(line)
    assert document["kind"] == str(SpanKind.CONSUMER if parented else SpanKind.PRODUCER)
    assert (document["parent_id"] == "0xb7ad6b7169203331") if parented else document["parent_id"] is None
    provider.shutdown()


def test_a_disabled_tracer_records_no_hop() -> None:
    provider = TracerProvider()
    if not hasattr(provider, "_set_tracer_configurator"):
        pytest.skip("this SDK has no tracer configurator")
    from opentelemetry.sdk.trace import _disable_tracer_configurator  # type: ignore[attr-defined]

    provider.add_span_processor(QueuedSpanProcessor(_Drop(), schedule_delay=60))
    assert start_send(SEND, SEND.build, provider=provider).is_recording()
    provider._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)
    assert start_send(SEND, SEND.build, provider=provider) is INVALID_SPAN
    for flags in ("00", "01"):
        headers = {"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"}
        span = start_process_from(PROCESS, PROCESS.build, headers, provider=provider)
        assert not span.is_recording()
        assert span.get_span_context() == extract_span_context(headers)
    provider.shutdown()
