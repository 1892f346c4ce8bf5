"""A traced reply's headers and a span's JSON line on their fast paths (issue 14).

* ``Bus.respond`` writes the answering span's ``traceparent`` first, then the reply's own headers:
  the same header dict (the span's context still wins over a caller's ``traceparent``), in the
  order whose block the header fast paths write and read (``_header_block``,
  ``_Client._process_headers``), byte for byte nats-py's;
* a span's line is one format per span name (``_hop_line``) with both times from one call
  (``_stamps``): the same bytes as the general document, for names and resources with ``%`` in
  them too, and the SDK's timestamps.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags
from tandem.messages import ErrorReply
from tandem.services.bus import Bus, _nats
from tandem.services.telemetry import _setup

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Recorder:
    """What ``Bus.respond`` needs of a connection: it records each publish."""

    max_payload = 1 << 20
    is_closed = False

    def __init__(self) -> None:
        self.published: list[dict[str, str] | None] = []

    async def publish(self, subject: str, payload: bytes, reply: str = "", headers: Any = None) -> None:
        self.published.append(headers)


def _reply_headers(span: Any, headers: dict[str, str] | None) -> dict[str, str] | None:
    nc = _Recorder()
    bus = Bus(nc)  # type: ignore[arg-type]
    msg = SimpleNamespace(reply="_INBOX.test.1", subject="test.reply")
    anyio.run(lambda: bus.respond(msg, ErrorReply(code="x", message="y", correlation_id="c1"),  # type: ignore[arg-type]
                                  headers, span=span))
    (sent,) = nc.published
    return sent


def _span(trace_id: int = 0x0AF7651916CD43DD8448EB211C80319C, span_id: int = 0xB7AD6B7169203331) -> Any:
    return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1)))


@pytest.mark.parametrize("headers", [None, {}, {"Tandem-Status": "done"},
                                     {"Tandem-Status": "done", "Nats-Extra": "1"},
                                     {"Tandem-Status": "done", "traceparent": f"00-{'1' * 32}-{'2' * 16}-01"},
                                     {"tracestate": "k=v", "Tandem-Status": "done"}])
def test_a_traced_reply_carries_the_same_headers_with_its_context_first(headers: dict[str, str] | None) -> None:
    sent = _reply_headers(_span(), headers)
    expected = dict(headers or {})
    expected["traceparent"] = TRACEPARENT  # what inject_span into a copy of the reply's headers wrote
    assert sent == expected
    assert next(iter(sent)) == "traceparent"


def test_an_untraced_reply_keeps_its_headers_as_given() -> None:
    assert _reply_headers(INVALID_SPAN, {"Tandem-Status": "done"}) == {"Tandem-Status": "done"}
    assert list(_reply_headers(INVALID_SPAN, {"b": "1", "a": "2"}) or {}) == ["b", "a"]


@pytest.mark.skipif(_nats._CLIENT is not _nats._Client,
                    reason="this nats-py lacks what the header fast path relies on: the bus uses nats-py's Client")
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1),
       st.sampled_from([{"Tandem-Status": "done"}, {"Tandem-Status": "working"}, {"X-Other": " v "}]))
def test_a_traced_reply_block_is_nats_pys_both_ways(trace_id: int, span_id: int, headers: dict[str, str]) -> None:
    sent = _reply_headers(_span(trace_id, span_id), headers)
    assert sent is not None
    block = _nats._header_block(sent)
    assert block == _nats._encode_header_block(sent)
    client = _nats._Client()

    async def both() -> tuple[Any, Any]:
        return await client._process_headers(block), await Client._process_headers(client, block)

    mine, theirs = anyio.run(both)
    assert mine == theirs
    assert list(mine) == list(theirs)


# --------------------------------------------------------------------------- span lines


@settings(max_examples=500, deadline=None)
@given(st.integers(1_600_000_000 * 10**9, 1_900_000_000 * 10**9), st.integers(0, 3 * 10**9),
       st.sampled_from([0, 1, 499, 500, 501, 999_999_499, 999_999_500, 999_999_999, None]))
def test_both_stamps_are_the_sdk_times(start: int, length: int, edge: int | None) -> None:
    if edge is not None:  # near the rounding edges of a microsecond and of a second
        start = start - start % 1_000_000_000 + edge
    end = start + length
    started, us, ended, us2 = _setup._stamps(start, end)
    assert b'%b.%06dZ"' % (started, us) == b'"%s"' % _setup._iso(start).encode()
    assert b'%b.%06dZ"' % (ended, us2) == b'"%s"' % _setup._iso(end).encode()


_NAMES = st.text(st.sampled_from("ab%s%d%%x.é\"\\ "), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(_NAMES, _NAMES, st.booleans(), st.dictionaries(_NAMES, st.one_of(_NAMES, st.integers(-5, 10**12)), max_size=4))
def test_a_span_line_is_its_document_with_percent_signs_anywhere(name: str, service: str, root: bool,
                                                                 attributes: dict[str, Any]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "x%s": "%d%%"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"):
        with tracer.start_as_current_span(name, attributes=attributes) as inner:
            pass
    if root:
        with tracer.start_as_current_span(name, attributes=attributes) as inner:
            pass
    spans = [s for s in exporter.get_finished_spans() if s.context.span_id == inner.get_span_context().span_id]
    (span,) = spans
    line = _setup._sdk_line(span)
    assert line is not None
    assert line == _setup._encoder.encode(_setup._document(span)) + b"\n"


# --------------------------------------------------------------------------- a lean span's traceparent


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(1, 2**128 - 1), st.integers(2**128, 2**140)),
       st.one_of(st.integers(1, 2**64 - 1), st.integers(2**64, 2**70)), st.booleans())
def test_a_lean_spans_traceparent_is_the_percent_x_format(trace_id: int, span_id: int, parsed: bool) -> None:
    from tandem.services.bus import _tracing as T
    from tandem.services.telemetry._setup import QueuedSpanProcessor

    provider = TracerProvider()
    processor = QueuedSpanProcessor(InMemorySpanExporter(), schedule_delay=60)
    provider.add_span_processor(processor)
    try:
        sdk = T._sdk(provider)
        assert sdk is not None and sdk.queues is not None
        trace_hex = "%032x" % trace_id if parsed else None  # noqa: UP031 (as a traceparent read gives it)
        span = T._LeanSpan("send x", T.SEND, {}, trace_id, span_id, 0, None, False, T._NOT_SAMPLED, None, sdk, True,
                           trace_hex)
        headers = T.inject_span(span, {})
        assert headers == {"traceparent": "00-%032x-%016x-01" % (trace_id, span_id)}  # noqa: UP031
        assert span._trace_hex == "%032x" % trace_id  # noqa: UP031
    finally:
        processor.shutdown()


class _Ids:
    """An id generator handing out the given ids (W3C-sized or not)."""

    def __init__(self, trace_id: int, span_ids: list[int]) -> None:
        self.trace_id, self.span_ids = trace_id, list(span_ids)

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_ids.pop(0)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 2**128 - 1), st.lists(st.integers(1, 2**64 - 1), min_size=3, max_size=3), st.booleans(),
       st.booleans())
def test_a_hops_lines_from_the_traceparents_hex_are_the_documents(trace_id: int, span_ids: list[int], inject: bool,
                                                                    child: bool) -> None:
    from tandem.services.bus import _tracing as T
    from tandem.services.telemetry._setup import QueuedSpanProcessor

    provider = TracerProvider(id_generator=_Ids(trace_id, span_ids))  # type: ignore[arg-type]
    processor = QueuedSpanProcessor(InMemorySpanExporter(), schedule_delay=60)
    provider.add_span_processor(processor)
    send_hop, process_hop = T.HopAttributes("send", "t.lines"), T.HopAttributes("process", "t.lines", actor="a")
    try:
        send = T.start_send(send_hop, send_hop.build(correlation_id="c1", body_size=3), provider=provider)
        headers = T.inject_span(send, {})
        process = T.start_process_from(process_hop, process_hop.build(correlation_id="c1"), headers, provider=provider)
        assert type(send) is T._LeanSpan and type(process) is T._LeanSpan
        made = [send, process]
        token = T.activate(process)
        try:
            if child:  # a send under the process span: its parent's hex is the one inject_span wrote
                T.inject_span(process, {})
                inner = T.start_send(send_hop, send_hop.build(correlation_id="c2"), provider=provider)
                if inject:
                    T.inject_span(inner, {})
                inner.end()
                made.append(inner)
            elif inject:
                T.inject_span(process, {})
        finally:
            T.deactivate(token)
        process.end()
        send.end()
        for span in made:
            assert _setup.encode_line(span) == _setup._encoder.encode(_setup._document(span._readable())) + b"\n"
    finally:
        processor.shutdown()
