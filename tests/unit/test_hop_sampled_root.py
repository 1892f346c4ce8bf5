"""An unsampled root's traceparent (a task the 1% head sampler did not pick) is written as ``%032x``/``%016x`` write its ids.

``start_send`` formats the ids of a root it passes on unrecorded through ``bytes.hex`` (issue 14);
the string is the one ``"00-%032x-%016x-00"`` makes, for every id a 128/64-bit generator draws,
and an id generator that draws out of range still gets the ``%x`` form.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.id_generator import IdGenerator
from tandem.services.bus import _tracing
from tandem.services.bus._tracing import HopAttributes, _Forwarded, start_send

SEND = HopAttributes("send", "agents.trace.root")
RATIO = S.ParentBasedTraceIdRatio(0.01)


class _Ids(IdGenerator):
    """Hands out the ids it is given (not the SDK's RandomIdGenerator: _Sdk calls it as it is)."""

    def __init__(self) -> None:
        self.trace_ids: Iterator[int] = iter(())
        self.span_ids: Iterator[int] = iter(())

    def generate_trace_id(self) -> int:
        return next(self.trace_ids)

    def generate_span_id(self) -> int:
        return next(self.span_ids)


@pytest.fixture(scope="module")
def provider() -> Any:
    ids = _Ids()
    return TracerProvider(sampler=RATIO, id_generator=ids), ids


def _root(provider: Any, trace_id: int, span_id: int) -> Any:
    tp, ids = provider
    ids.trace_ids, ids.span_ids = iter([trace_id]), iter([span_id])
    return start_send(SEND, {}, provider=tp)


# unpicked by a 1% ratio: the low 64 bits at or above its bound
_BOUND = S.TraceIdRatioBased.get_bound_for_rate(0.01)
_UNPICKED = st.integers(0, 2**64 - 1).flatmap(lambda high: st.integers(_BOUND, 2**64 - 1).map(lambda low: high << 64 | low))


@settings(max_examples=500, deadline=None)
@given(_UNPICKED | st.sampled_from([2**128 - 1, (2**128 - 1) ^ 0xFFFF, 2**64 - 1]),
       st.integers(1, 2**64 - 1) | st.sampled_from([1, 2**64 - 1, 0xF]))
def test_an_unpicked_roots_traceparent_is_the_x_formats(provider: Any, trace_id: int, span_id: int) -> None:
    span = _root(provider, trace_id, span_id)
    assert type(span) is _Forwarded
    assert span.traceparent == "00-%032x-%016x-00" % (trace_id, span_id)  # noqa: UP031
    assert len(span.traceparent) == 55
    context = span.get_span_context()
    assert (context.trace_id, context.span_id, context.trace_flags.sampled) == (trace_id, span_id, False)


@pytest.mark.parametrize(("trace_id", "span_id"), [(2**130 + 2**64 - 1, 5), (2**64 - 1, 2**70)])
def test_an_out_of_range_id_gets_the_x_form_too(provider: Any, trace_id: int, span_id: int) -> None:
    span = _root(provider, trace_id, span_id)
    assert type(span) is _Forwarded
    assert span.traceparent == "00-%032x-%016x-00" % (trace_id, span_id)  # noqa: UP031


def test_the_sdks_own_generator_roots_match_the_x_formats() -> None:
    tp = TracerProvider(sampler=RATIO)
    seen = 0
    for _ in range(3000):
        span = start_send(SEND, {}, provider=tp)
        if type(span) is _Forwarded:
            context = span.get_span_context()
            assert span.traceparent == "00-%032x-%016x-00" % (context.trace_id, context.span_id)  # noqa: UP031
            seen += 1
    assert seen > 2500
    assert _tracing._sdk_cache[0] is tp  # the inline root path was the one taken
