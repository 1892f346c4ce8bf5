"""The span export encoder writes the SDK's ``to_json`` documents (issue 14), for the hop path's own
spans too, with the SDK's timestamps to the microsecond (its float rounding included)."""

from __future__ import annotations

import json
import random

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import Status, StatusCode
from tandem.services.bus._tracing import (
    HopAttributes,
    activate,
    extract_span_context,
    start_process,
    start_send,
)
from tandem.services.telemetry._setup import _iso, encode_spans


def test_hop_spans_encode_as_the_sdk_does() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    send_hop = HopAttributes("send", "test.encode")
    process_hop = HopAttributes("process", "test.encode", consumer_group="q.t", actor="t")
    with start_send(send_hop, send_hop.build(correlation_id="c1", body_size=12), provider=provider) as send:
        pass
    parent = extract_span_context({"traceparent": f"00-{send.get_span_context().trace_id:032x}-"
                                                  f"{send.get_span_context().span_id:016x}-01",
                                   "tracestate": "k=v"})
    process = start_process(process_hop, lambda: process_hop.build(correlation_id="c1", body_size=12), parent,
                            provider=provider)
    token = activate(process)
    try:
        with process:
            process.add_event("retry", {"tandem.attempt": 2})
            process.set_attribute("error.type", "timeout")
            process.set_status(Status(StatusCode.ERROR, "gave up"))
    finally:
        otel_context.detach(token)
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    lines = encode_spans(spans).decode().splitlines()
    for span, line in zip(spans, lines, strict=True):
        assert json.loads(line) == json.loads(span.to_json(indent=None))


def test_timestamps_round_as_the_sdk_does() -> None:
    rng = random.Random(14)
    for i in range(20000):
        ns = rng.randrange(1_600_000_000 * 10**9, 1_900_000_000 * 10**9)
        if i % 2:  # near the rounding edges of a microsecond and of a second
            ns = ns - ns % 1_000_000_000 + rng.choice([0, 1, 499, 500, 501, 999_999_499, 999_999_500, 999_999_999])
        assert _iso(ns) == ns_to_iso_str(ns), ns
    assert _iso(None) is None
