"""Ids on the hop path (issue 14): ``new_id`` is still a UUID4's hex without building a ``UUID``, and
hop spans draw their ids as the SDK's ``RandomIdGenerator`` does (the same ``random`` calls, in the
same order), falling back to the generator itself for a zero draw or any other generator."""

from __future__ import annotations

import random
import uuid

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import INVALID_SPAN, SpanKind
from tandem.messages import new_id
from tandem.services.bus._tracing import (
    HopAttributes,
    _LeanSpan,
    _sdk,
    _start,
    start_send,
)
from tandem.services.telemetry._setup import QueuedSpanProcessor

SEND = HopAttributes("send", "test.hop.ids")


def test_new_id_is_a_uuid4_hex() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and len(value) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def _provider(id_generator: IdGenerator | None = None) -> TracerProvider:
    provider = TracerProvider(id_generator=id_generator) if id_generator is not None else TracerProvider()
    provider.add_span_processor(QueuedSpanProcessor(InMemorySpanExporter(), schedule_delay=60))
    return provider


def test_random_ids_are_the_generators_draws() -> None:
    provider = _provider()
    assert type(provider.id_generator) is RandomIdGenerator
    random.seed(1414)
    span = start_send(SEND, SEND.build(), provider=provider)
    assert type(span) is _LeanSpan
    got = span.get_span_context()
    span.end()
    random.seed(1414)
    expected_trace, expected_span = RandomIdGenerator().generate_trace_id(), RandomIdGenerator().generate_span_id()
    assert (got.trace_id, got.span_id) == (expected_trace, expected_span)
    provider.shutdown()


def test_a_zero_draw_goes_to_the_generator() -> None:
    provider = _provider()
    sdk = _sdk(provider)
    assert sdk is not None
    draws = iter([0, 0])
    sdk.span_ids = lambda: next(draws)
    sdk.trace_ids = lambda: next(draws)
    span = _start(SEND.name, SpanKind.PRODUCER, SEND.build(), None, provider, record_exception=True)
    assert span is not INVALID_SPAN
    context = span.get_span_context()
    assert context.trace_id != 0 and context.span_id != 0
    span.end()
    provider.shutdown()


class _Counting(IdGenerator):
    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return 1000 + self.n


def test_another_generator_is_used_as_it_is() -> None:
    generator = _Counting()
    provider = _provider(generator)
    span = start_send(SEND, SEND.build(), provider=provider)
    context = span.get_span_context()
    span.end()
    assert (context.trace_id, context.span_id) == (1001, 2) and generator.n == 2
    provider.shutdown()

