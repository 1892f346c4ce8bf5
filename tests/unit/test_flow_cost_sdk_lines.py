"""An SDK span's JSON line written by the fast path is the one ``_document`` writes, byte for byte, and reads
back as the SDK's ``to_json`` document (issue 14: the flow's ``invoke_agent``, ``chat`` and ``execute_tool``
spans)."""

from __future__ import annotations

import json
import random

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from tandem.services.telemetry._setup import (
    _document,
    _encoder,
    _sdk_line,
    encode_line,
    encode_spans,
)

VALUES = [0, -3, 2**40, 1.5, -0.0, True, False, "", "plain", 'quote " and \\ and \n', "日本語 ✓",
          ["a", "b"], [1, 2], [0.5], [True, False]]


def _spans(seed: int, n: int) -> list[ReadableSpan]:
    rng = random.Random(seed)
    provider = TracerProvider(resource=Resource.create({"service.name": "flow-cost", "process.pid": 7}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tandem.test")
    for i in range(n):
        attrs = {f"k{j}.{rng.choice('abc')}": rng.choice(VALUES) for j in range(rng.randrange(0, 8))}
        name = rng.choice(["execute_tool sed", "chat mock-writer", "invoke_agent task", 'odd "name" ✓'])
        kind = rng.choice(list(SpanKind))
        root = tracer.start_as_current_span("root", kind=SpanKind.CLIENT) if i % 3 == 0 else _nothing()
        with root, tracer.start_as_current_span(name, kind=kind, attributes=attrs, record_exception=False,
                                                set_status_on_exception=False) as span:
            match rng.randrange(6):
                case 0:
                    span.set_status(Status(StatusCode.ERROR, "went wrong"))
                case 1:
                    span.set_status(Status(StatusCode.OK))
                case 2:
                    span.add_event("retry", {"n": 2})
                case 3:
                    span.add_link(SpanContext(rng.getrandbits(128), rng.getrandbits(64), True,
                                              TraceFlags(1)), {"why": "cause"})
                case _:
                    span.set_attribute("late", rng.choice(VALUES))
    return list(exporter.get_finished_spans())


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_sdk_lines_are_the_documents_lines() -> None:
    spans = _spans(14, 600)
    fast = 0
    for span in spans:
        slow = _encoder.encode(_document(span)) + b"\n"
        line = _sdk_line(span)
        if line is not None:
            fast += 1
            assert line == slow
        assert encode_line(span) == slow
        assert json.loads(slow) == json.loads(span.to_json(indent=None))
    assert fast > 200  # the common shape is the one the fast path writes
    assert encode_spans(spans) == b"".join(_encoder.encode(_document(s)) + b"\n" for s in spans)


def test_trace_state_and_remote_parents() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tandem.test")
    parent = SpanContext(0x1234, 0x5678, True, TraceFlags(1), TraceState([("k", "v")]))
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(trace.NonRecordingSpan(parent))):
        pass
    parent = SpanContext(0x1234, 0x5678, True, TraceFlags(1))
    with tracer.start_as_current_span("plain child", context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
                                      links=[Link(parent)]):
        pass
    with tracer.start_as_current_span("plain", context=trace.set_span_in_context(trace.NonRecordingSpan(parent))):
        pass
    with_state, with_link, plain = exporter.get_finished_spans()
    assert _sdk_line(with_state) is None and _sdk_line(with_link) is None
    assert _sdk_line(plain) is not None
    for span in (with_state, with_link, plain):
        assert json.loads(encode_line(span)) == json.loads(span.to_json(indent=None))


def test_a_readable_span_made_by_hand() -> None:
    ctx = SpanContext(0xABC, 0xDEF, False, TraceFlags(1))
    for attributes in (None, {}, {"a": 1, "b": ("x", "y")}):
        span = ReadableSpan("by hand", ctx, None, attributes=attributes, start_time=1_700_000_000_123_456_789,
                            end_time=1_700_000_001_999_999_500)
        assert encode_line(span) == _encoder.encode(_document(span)) + b"\n"
        if attributes is not None:  # None: to_json writes null, the encoder {} (as it always did)
            assert json.loads(encode_line(span)) == json.loads(span.to_json(indent=None))
    unfinished = ReadableSpan("unfinished", ctx, None, start_time=1_700_000_000_000_000_000)
    assert _sdk_line(unfinished) is None
