"""An actor's hop under a head sampler, end to end through the actor's receive path (issue 14).

The messages travel over an in-memory wire between ``_Client`` connections (no server): what
each connection publishes is read back as nats-py reads it, so the headers checked here are the
bytes the bus sends and the dicts the actor reads.

* an unsampled request (flags ``00``) is passed on: every request and event its handler sends
  carries the same ``traceparent`` (trace id, flags ``00``), the reply carries none, nothing is
  exported, and the worker's context is restored afterwards;
* a sampled request is recorded as the caller's child, and so are the handler's own sends: the
  trace is complete;
* a task's root that the head sampler did not pick is sent with its ``traceparent`` written by
  ``start_send`` itself, and every hop of the task passes that one on;
* the W3C fast path and the propagator's general path read the same parent from any value.
"""

from __future__ import annotations

import random
import re
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as S
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tandem.actors import Actor, Endpoint
from tandem.messages import Message
from tandem.services.bus import Bus, _nats
from tandem.services.bus._tracing import (
    SENT_ROOT,
    HopAttributes,
    _Forwarded,
    current_span,
    extract_span_context,
    inject_span,
    start_process_from,
    start_send,
)

pytestmark = pytest.mark.skipif(_nats._CLIENT is not _nats._Client,
                                reason="the in-memory wire is made of the bus's own _Client")

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
UNSAMPLED = f"00-{TRACE}-{PARENT}-00"
SAMPLED = f"00-{TRACE}-{PARENT}-01"


class Ask(Message, frozen=True, kw_only=True, tag="hop_flow_ask"):
    pass


class Told(Message, frozen=True, kw_only=True, tag="hop_flow_told"):
    current: str = ""  # the handler's current span context, as traceparent writes it
    recording: bool = False


class Noted(Message, frozen=True, kw_only=True, tag="hop_flow_noted"):
    pass


# --------------------------------------------------------------------------- the in-memory wire


class _Wire:
    """Routes what each connection publishes to every matching subscription, and keeps what was sent."""

    def __init__(self) -> None:
        self.clients: list[_WireClient] = []
        self.sent: list[tuple[str, bytes | None]] = []  # (subject, header block)

    def connect(self) -> _WireClient:
        nc = _WireClient()
        nc._status, nc._max_pending_size, nc._max_payload = Client.CONNECTED, 1 << 30, 1 << 20
        nc._flush_queue, nc.wire = _AlwaysEmpty(), self
        self.clients.append(nc)
        return nc

    async def route(self, cmd: bytes) -> None:
        line, _, rest = cmd.partition(b"\r\n")
        parts = line.split(b" ")
        if parts[0] == b"HPUB":
            subject, reply, head, total = parts[1], parts[2], int(parts[3]), int(parts[4])
            block: bytes | None = rest[:head]
            data = rest[head:total]
        elif parts[0] == b"PUB":
            subject, reply, data, block = parts[1], parts[2], rest[:int(parts[3])], None
        else:  # SUB, UNSUB, PING: nothing to route
            return
        self.sent.append((subject.decode(), block))
        for nc in self.clients:
            for sid, sub in list(nc._subs.items()):
                if _matches(sub._subject, subject.decode()):
                    await nc._process_msg(sid, subject, reply, data, block)


def _matches(pattern: str, subject: str) -> bool:
    if pattern.endswith(">"):
        return subject.startswith(pattern[:-1])
    want, got = pattern.split("."), subject.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


class _AlwaysEmpty:
    def empty(self) -> bool:
        return True


class _WireClient(_nats._Client):
    wire: _Wire

    async def _flush_pending(self, force_flush: bool = False) -> None:
        cmds, self._pending, self._pending_data_size = self._pending, [], 0
        for cmd in cmds:
            await self.wire.route(cmd)

    async def flush(self, timeout: int = 10) -> None:
        return None


# --------------------------------------------------------------------------- the actors


class Middle(Actor):
    """Answers ``test.flow.ask`` after a request and an event of its own, telling what its span is."""

    name = "hop_flow_middle"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, concurrency=2)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.flow.ask", Ask, self.ask, timeout=5)]

    async def ask(self, request: Ask) -> Told:
        await self.bus.request("test.flow.down", Ask(correlation_id=request.correlation_id), Noted, timeout=5)
        await self.bus.publish("test.flow.event", Noted(correlation_id=request.correlation_id))
        span = trace.get_current_span()
        context = span.get_span_context()
        return Told(correlation_id=request.correlation_id, recording=span.is_recording(),
                    current=f"{context.trace_id:032x}-{context.trace_flags:02x}" if context.is_valid else "")


class Down(Actor):
    name = "hop_flow_down"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, concurrency=2)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.flow.down", Ask, self.down, timeout=5)]

    async def down(self, request: Ask) -> Noted:
        return Noted(correlation_id=request.correlation_id)


def _provider(sampler: S.Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _traceparent(block: bytes | None) -> str | None:
    found = re.search(rb"traceparent: ([^\r]*)\r\n", block or b"")
    return found.group(1).decode() if found else None


async def _hop(provider: TracerProvider, traceparent: str) -> tuple[Told, dict[str, str | None], str | None]:
    """Send one request with ``traceparent`` to ``Middle``; return its answer, the traceparents its
    request and event carried (by subject), and the reply's."""
    wire = _Wire()
    bus = Bus(wire.connect(), tracer_provider=provider)  # the actors' connection, traced by ``provider``
    caller = wire.connect()  # a plain connection: the request's headers exactly as given
    got: list[Any] = []

    async def on_reply(msg: Any) -> None:
        got.append(msg)

    async with anyio.create_task_group() as tg:
        await tg.start(Middle(bus).run)
        await tg.start(Down(bus).run)
        await caller.subscribe("test.reply", cb=on_reply)
        before = current_span()
        await caller.publish("test.flow.ask", msgspec.json.encode(Ask(correlation_id="c1")), reply="test.reply",
                             headers={"traceparent": traceparent, "Tandem-Heartbeat": "1"})
        with anyio.fail_after(5):
            while not got:
                await anyio.sleep(0.01)
        assert current_span() is before  # this task's context is untouched
        tg.cancel_scope.cancel()
    (reply,) = got
    sent = {subject: _traceparent(block) for subject, block in wire.sent if subject.startswith("test.flow.")}
    return msgspec.json.decode(reply.data, type=Told), sent, (reply.headers or {}).get("traceparent")


def test_an_unsampled_hop_passes_its_trace_on_to_every_request_and_event() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(1.0))  # would record any root: only the flag drops it
    told, sent, reply = anyio.run(_hop, provider, UNSAMPLED)
    assert sent == {"test.flow.ask": UNSAMPLED, "test.flow.down": UNSAMPLED, "test.flow.event": UNSAMPLED}
    assert reply is None  # no span answered
    assert (told.current, told.recording) == (f"{TRACE}-00", False)  # the handler runs under the caller's context
    assert exporter.get_finished_spans() == ()


def test_a_sampled_hop_and_its_own_sends_make_one_complete_trace() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(0.0))  # would drop any root: only the flag records it
    told, sent, reply = anyio.run(_hop, provider, SAMPLED)
    assert told.recording and told.current == f"{TRACE}-01"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    process = spans["process test.flow.ask"]
    assert process.parent is not None and f"{process.parent.span_id:016x}" == PARENT
    assert {span.context.trace_id for span in spans.values()} == {int(TRACE, 16)}
    assert spans["send test.flow.down"].parent.span_id == process.context.span_id
    assert spans["send test.flow.event"].parent.span_id == process.context.span_id
    assert spans["process test.flow.down"].parent.span_id == spans["send test.flow.down"].context.span_id
    down, event = extract_span_context({"traceparent": sent["test.flow.down"]}), sent["test.flow.event"]
    assert down is not None and down.span_id == spans["send test.flow.down"].context.span_id and down.trace_flags.sampled
    assert event is not None and event.endswith("-01")
    assert reply == f"00-{TRACE}-{process.context.span_id:016x}-01"  # the span that answered


async def _task(provider: TracerProvider) -> list[tuple[str, str | None]]:
    """One ``Bus.request`` from a caller with no current span to ``Middle``; the traceparents sent, in order."""
    wire = _Wire()
    caller = Bus(wire.connect(), tracer_provider=provider)
    async with anyio.create_task_group() as tg:
        await tg.start(Middle(Bus(wire.connect(), tracer_provider=provider)).run)
        await tg.start(Down(Bus(wire.connect(), tracer_provider=provider)).run)
        told = await caller.request("test.flow.ask", Ask(correlation_id="c2"), Told, timeout=5)
        assert not told.recording
        tg.cancel_scope.cancel()
    return [(subject, _traceparent(block)) for subject, block in wire.sent if subject.startswith("test.flow.")]


def test_a_root_the_head_sampler_did_not_pick_is_passed_on_by_every_hop_of_its_task() -> None:
    provider, exporter = _provider(S.ParentBasedTraceIdRatio(0.0))  # no root is picked
    random.seed(14)
    sent = anyio.run(_task, provider)
    random.seed(14)  # the root's ids are the SDK's draws: the trace id, then the span id
    root = f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-00"
    assert sent == [("test.flow.ask", root), ("test.flow.down", root), ("test.flow.event", root)]
    assert exporter.get_finished_spans() == ()


def test_start_send_writes_an_unpicked_roots_traceparent_into_the_headers_it_is_given() -> None:
    provider, _ = _provider(S.ParentBasedTraceIdRatio(0.0))
    hop = HopAttributes("send", "test.flow.ask")
    random.seed(3)
    headers: dict[str, str] = {}
    assert start_send(hop, {}, provider=provider, into=headers) is SENT_ROOT
    random.seed(3)
    forwarded = start_send(hop, {}, provider=provider)  # without into: the span that writes the same
    assert type(forwarded) is _Forwarded and headers == inject_span(forwarded, {}) == {"traceparent": forwarded.traceparent}
    assert inject_span(SENT_ROOT, {}) == {} and not SENT_ROOT.is_recording()
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    try:  # another propagator writes its own headers: the span is returned for inject_span, into is left alone
        other: dict[str, str] = {}
        span = start_send(hop, {}, provider=provider, into=other)
        assert type(span) is _Forwarded and other == {}
        assert inject_span(span, other) == {"traceparent": span.traceparent}
    finally:
        propagate.set_global_textmap(saved)
    provider.shutdown()


# --------------------------------------------------------------------------- fast path and general path agree

_HEX = "0123456789abcdef"
_VALUES = (st.builds(lambda t, s, f: f"00-{t}-{s}-{f}", st.text(_HEX, min_size=32, max_size=32),
                     st.text(_HEX, min_size=16, max_size=16), st.sampled_from(["00", "01", "02", "ff"]))
           | st.sampled_from([UNSAMPLED, SAMPLED, f"00-{'0' * 32}-{PARENT}-00", f"00-{TRACE}-{'0' * 16}-00",
                              UNSAMPLED.upper(), UNSAMPLED + " ", " " + UNSAMPLED, UNSAMPLED[:-1], "garbage",
                              f"01-{TRACE}-{PARENT}-00", f"00-{TRACE}-{PARENT}-00-extra"])
           | st.text(_HEX + "-0xZ \t", max_size=60))
_HOP = HopAttributes("process", "test.flow.ask", actor="t")


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.sampled_from([S.ParentBasedTraceIdRatio(1.0), S.ParentBasedTraceIdRatio(0.0), S.ALWAYS_ON]))
def test_the_fast_path_reads_the_parent_the_propagator_reads(value: str, sampler: S.Sampler) -> None:
    provider = TracerProvider(sampler=sampler)
    headers = {"traceparent": value}
    fast = start_process_from(_HOP, {}, headers, provider=provider)
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))  # the general path
    try:
        general = start_process_from(_HOP, {}, headers, provider=provider)
        parent = extract_span_context(headers)
    finally:
        propagate.set_global_textmap(saved)
    fast_context, general_context = fast.get_span_context(), general.get_span_context()
    assert fast.is_recording() is general.is_recording()
    assert fast_context.trace_flags == general_context.trace_flags
    if parent is None:  # no parent: each path starts a root of its own (decided the same way)
        assert fast is not INVALID_SPAN and not (type(fast) is _Forwarded and fast._echo)
    else:
        assert fast_context.trace_id == general_context.trace_id == parent.trace_id
        if type(fast) is _Forwarded:  # passed on as it came: the caller's span id, not sampled
            assert fast.traceparent == value and not parent.trace_flags.sampled
            assert (fast_context.span_id, fast_context.trace_flags) == (parent.span_id, parent.trace_flags)
    for span in (fast, general):
        span.end()
    provider.shutdown()
