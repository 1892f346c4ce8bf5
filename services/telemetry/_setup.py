"""Tracer-provider setup: one provider per process, spans to a JSONL file or OTLP.

Every Tandem process (CLI, actor host, benchmark) calls :func:`setup_tracing`
once at start and :func:`shutdown_tracing` at exit. Without an OTLP endpoint,
finished spans are appended as one JSON object per line to
:func:`default_trace_file`, which several processes may share; ``tandem trace``
reads that file back (see ``tandem.services.telemetry._view``).

The JSON line is exactly what the SDK's ``ReadableSpan.to_json(indent=None)``
produces, e.g. (wrapped here)::

    {"name": "process agents.planner.request",
     "context": {"trace_id": "0x<32 hex>", "span_id": "0x<16 hex>", "trace_state": "[]"},
     "kind": "SpanKind.CONSUMER", "parent_id": "0x<16 hex>" | null,
     "start_time": "2026-01-02T03:04:05.123456Z", "end_time": "...Z",
     "status": {"status_code": "UNSET" | "OK" | "ERROR", "description": "..."?},
     "attributes": {...}, "events": [{"name", "timestamp", "attributes"}],
     "links": [{"context": {...}, "attributes": {...}}],
     "resource": {"attributes": {"service.name": ..., "service.instance.id": ...,
                                 "process.pid": ..., "telemetry.sdk.*": ...},
                  "schema_url": ""}}
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import logging
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from math import modf as _modf
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.resources import (
    PROCESS_PID,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tandem.services.errors import ConfigError

__all__ = ["ExportStatistics", "QueuedSpanProcessor", "aclose_tracing", "default_trace_file", "encode_spans",
           "setup_tracing", "shutdown_tracing"]

log = logging.getLogger("tandem.telemetry")

try:
    from fcntl import LOCK_EX as _LOCK_EX
    from fcntl import LOCK_UN as _LOCK_UN
    from fcntl import flock as _flock
except ImportError:  # not a POSIX system: trace files are written without the advisory lock
    _flock, _LOCK_EX, _LOCK_UN = None, 0, 0  # type: ignore[assignment]

TRACE_FILE_ENV = "TANDEM_TRACE_FILE"
"""Environment variable that overrides the trace file location."""

_OTLP_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_OTLP_TRACES_PATH = "v1/traces"


def default_trace_file() -> pathlib.Path:
    """Return where finished spans are appended when no OTLP endpoint is set.

    Returns
    -------
    pathlib.Path
        ``$TANDEM_TRACE_FILE`` if set and non-empty, else
        ``$XDG_STATE_HOME/tandem/traces.jsonl``, where ``XDG_STATE_HOME``
        defaults to ``~/.local/state`` when unset, empty or relative (as the
        XDG Base Directory spec requires). The file need not exist.

    Examples
    --------
    >>> import os
    >>> os.environ["TANDEM_TRACE_FILE"] = "/tmp/t.jsonl"
    >>> default_trace_file()
    PosixPath('/tmp/t.jsonl')
    >>> del os.environ["TANDEM_TRACE_FILE"]
    """
    if explicit := os.environ.get(TRACE_FILE_ENV):
        return pathlib.Path(explicit).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME", "")
    base = pathlib.Path(state_home) if state_home and os.path.isabs(state_home) else pathlib.Path.home() / ".local" / "state"
    return base / "tandem" / "traces.jsonl"


class _JsonLinesExporter(SpanExporter):
    """Write spans as JSON lines (the SDK's ``to_json`` documents) to a file opened for appending.

    One ``write`` per batch, not one per span: the file is shared by every Tandem
    process on the machine, and O_APPEND keeps each batch of whole lines together.
    The batch is encoded at once by :func:`encode_spans`. It owns the file and closes
    it on shutdown, so ``provider.shutdown()`` both flushes and releases it.

    A :class:`QueuedSpanProcessor` in front of it has each span encoded as it ends
    (:meth:`encode_line`) and queues the line, then writes lines (:meth:`write_lines`):
    encoding a span that was just touched costs less than encoding it in the export
    thread a batch later (its objects are out of the CPU caches by then: ~25 µs a span
    measured there against ~10 µs of instructions), queued bytes are not objects the
    garbage collector walks, and the export thread holds the GIL only to join and write.
    """

    accepts_hop_spans = True
    """:func:`encode_spans` writes the hop path's own spans as they are (no ``ReadableSpan`` made for them)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    encode_line: Any
    """``span`` as its JSON line: the module's :func:`encode_line` itself (set below, no wrapper call per span)."""

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Append ``lines`` (from :meth:`encode_line`) to the file in one write."""
        self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        """Append ``data`` in one write, holding the file's advisory lock (:func:`_locked`) while it is written."""
        fd = self.out.fileno()
        view = memoryview(data)
        with _locked(fd):
            while view:  # a regular file takes it all at once; a short write only continues where it stopped
                view = view[os.write(fd, view):]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # encoded a slice at a time, letting go of the GIL in between: the event loop waiting
        # for it gets it at once instead of after the interpreter's 5 ms switch interval
        parts = []
        for start in range(0, len(spans), _GIL_SLICE):
            if start:
                time.sleep(0)
            parts.append(encode_spans(spans[start:start + _GIL_SLICE]))
        self._write(b"".join(parts))
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        if not self.out.closed:
            self.out.close()


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``fd`` (where there is one) for the ``with`` block.

    Several processes append to one trace file (a client and its actors). Their writes to the
    same file wait for each other in the kernel, and the waiting spins: two processes each writing
    batches of lines spent ~1.5-2.5 µs of CPU per line in the export thread instead of ~0.35 µs
    (measured on this repository's 2-core VM, /tmp on ext4). Waiting for the advisory lock
    sleeps instead. Readers (``tandem trace``) do not take it. Where ``flock`` is missing or
    refused (a platform or file system without it), the write goes ahead unlocked, as before.
    """
    try:
        _flock(fd, _LOCK_EX)  # the GIL is let go while it waits
    except (OSError, TypeError):  # no flock here (_flock is None: TypeError), or the file system refuses it
        yield
        return
    try:
        yield
    finally:
        _flock(fd, _LOCK_UN)


_GIL_SLICE = 32  # spans encoded between two GIL releases (~0.3 ms of work)
_KIND = {kind: str(kind) for kind in SpanKind}
_resources: dict[int, tuple[Any, dict[str, Any]]] = {}


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    # the SDK's rounding (datetime.fromtimestamp(ns / 1e9)), with one strftime per second of spans
    t = ns / 1e9
    sec = int(t)
    us = round((t - sec) * 1e6)  # t - sec is math.modf(t)'s fraction, exactly
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    if _second[0] != sec:
        _second[:] = [sec, datetime.datetime.fromtimestamp(sec, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return "%s.%06dZ" % (_second[1], us)  # noqa: UP031 (cheaper than the f-string)


class _Context(msgspec.Struct):
    trace_id: str
    span_id: str
    trace_state: str


class _Status(msgspec.Struct, omit_defaults=True):
    status_code: str
    description: str | None = None


class _Event(msgspec.Struct):
    name: str
    timestamp: str | None
    attributes: dict[str, Any]


class _Link(msgspec.Struct):
    context: _Context
    attributes: dict[str, Any]


class _SpanDocument(msgspec.Struct):
    """``ReadableSpan.to_json()``'s document, field for field and in its order."""

    name: str
    context: _Context
    kind: str
    parent_id: str | None
    start_time: str | None
    end_time: str | None
    status: _Status
    attributes: dict[str, Any]
    events: list[_Event]
    links: list[_Link]
    resource: dict[str, Any]


_STATUS = {code: _Status(code.name) for code in StatusCode}
_encoder = msgspec.json.Encoder()


def _context(ctx: SpanContext) -> _Context:
    state = ctx.trace_state
    return _Context(f"0x{ctx.trace_id:032x}", f"0x{ctx.span_id:016x}", repr(state) if state else "[]")


def _resource(span: ReadableSpan) -> dict[str, Any]:
    return _resource_document(span.resource)


def _resource_document(res: Any) -> dict[str, Any]:
    """The ``resource`` member of a span's document, remembered per resource."""
    cached = _resources.get(id(res))
    if cached is None or cached[0] is not res:  # holding the resource keeps its id from being reused
        cached = _resources[id(res)] = (res, {"attributes": dict(res.attributes), "schema_url": res.schema_url})
    return cached[1]


def _attributes(span: Any) -> dict[str, Any]:
    raw = getattr(span, "_attributes", None)
    if type(raw) is dict:  # the hop path's spans keep a plain dict: no copy
        return raw
    return dict(span.attributes or {})


def _document(span: ReadableSpan) -> _SpanDocument:
    # each property read once (events and links build a tuple per read), %-formatting (cheaper than
    # f-strings with format specs here): ~43k -> ~33k instructions a span on the export thread
    status = span.status
    parent = span.parent
    ctx = span.context
    state = ctx.trace_state
    events = span.events
    links = span.links
    return _SpanDocument(
        span.name,
        _Context("0x%032x" % ctx.trace_id, "0x%016x" % ctx.span_id, repr(state) if state else "[]"),  # noqa: UP031
        _KIND[span.kind],
        "0x%016x" % parent.span_id if parent else None,  # noqa: UP031
        _iso(span.start_time),
        _iso(span.end_time),
        _Status(status.status_code.name, status.description) if status.description else _STATUS[status.status_code],
        _attributes(span),
        [_Event(e.name, _iso(e.timestamp), dict(e.attributes or {})) for e in events] if events else [],
        [_Link(_context(link.context), dict(link.attributes or {})) for link in links] if links else [],
        _resource(span),
    )


# --------------------------------------------------------------------------- the hop path's spans, as JSON lines
#
# A hop's span (tandem.services.bus._tracing._LeanSpan) keeps ints, a clean attribute dict and
# times; its line is joined from byte pieces, most of them encoded once (the name's head, the
# resource's tail, the trace id as the traceparent carried it), one bytes %-format for the ids,
# kind, times and unset status (its template cached per span name: memchr skips the constant
# text), the attributes in one msgspec call: no Struct per span. encode_line, the one call a
# span costs as it ends (cachegrind, a plain hop span: ~27k instructions with 25 pieces and
# three calls, ~20k with five pieces and one call).

_KIND_BYTES = {kind._value_: str(kind).encode() for kind in SpanKind}  # by value: SpanKind's hash is Python code
_UNSET_STATUS = _encoder.encode(_Status(StatusCode.UNSET.name))
_NO_STATE = b'"[]"'
_names: dict[str, bytes] = {}  # span name -> its JSON string
_resource_bytes: dict[int, tuple[Any, bytes]] = {}
_second_bytes: list[Any] = [None, b""]  # the last whole second formatted (quote included), as bytes


_round = float.__round__
"""``round`` of a float (half to even, an int) without the builtin's ``__round__`` lookup and bound method."""


def _stamps(start: int, end: int) -> tuple[bytes, int, bytes, int]:
    """Unix times ``start`` and ``end`` (nanoseconds) as ``(second, microseconds)`` each, flattened.

    A second is its opening quote and text (:func:`_iso_second`), the microseconds are rounded as
    :func:`_iso` rounds them (the SDK's ``datetime.fromtimestamp(ns / 1e9)``). Both times in one
    call: a span's line needs the two, almost always in the same second.
    """
    # modf(t): t's fraction (t - int(t), exactly) and whole seconds as a float, in one call; the
    # second is compared as that float (int() only to format a new one)
    fraction, sec = _modf(start / 1e9)
    us = _round(fraction * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    fraction, sec2 = _modf(end / 1e9)
    us2 = _round(fraction * 1e6)
    if us2 >= 1_000_000:
        sec2, us2 = sec2 + 1, us2 - 1_000_000
    started = _second_bytes[1] if _second_bytes[0] == sec else _iso_second(int(sec))
    return started, us, (started if sec2 == sec else _second_bytes[1] if _second_bytes[0] == sec2
                         else _iso_second(int(sec2))), us2


def _iso_second(sec: int) -> bytes:
    """``"YYYY-MM-DDTHH:MM:SS`` (opening quote included) of Unix second ``sec``, remembered for the next spans."""
    text = datetime.datetime.fromtimestamp(sec, tz=datetime.UTC).strftime('"%Y-%m-%dT%H:%M:%S').encode()
    _second_bytes[:] = [float(sec), text]  # compared with modf's whole seconds (floats)
    return text


def _is_hop_span(span: Any) -> bool:
    """Whether ``span`` is one of the hop path's own spans (``_LeanSpan``), not a ``ReadableSpan``."""
    return getattr(type(span), "_is_hop_span", False) is True


_hop_lines: dict[str, tuple[Any, ...]] = {}  # span name -> (kind, resource, the line's constant pieces...)
_hop_tails: dict[int, tuple[Any, bytes]] = {}  # id(resource) -> (resource, the line's end without events or links)


def _hop_line(name: str, kind: Any, res: Any) -> tuple[Any, ...]:
    """The constant pieces of the JSON line of a span named ``name`` of ``kind`` and resource ``res``.

    For a span in the common shape (no trace state, unset status, no events or links).

    ``(kind, res, head, ids, parent, root, times, root_times, tail)``: the line is
    ``head + trace id + ids + span id + parent + parent id + times % (...) + attributes + tail``
    for a span with a parent, ``head + trace id + ids + span id + root + root_times % (...) +
    attributes + tail`` for a root. ``head`` is ``{"name":<name>,"context":{"trace_id":"0x``; the
    others hold the kind, no trace state, the unset status and ``"attributes":``; ``times`` formats
    the start and end times (each as its second's text and microseconds, :func:`_stamps`), ``tail``
    is the resource's (:func:`_tail`). Remembered per name, with the kind and resource they were made for.
    """
    if len(_hop_lines) > 4096:  # names with ids in them: keep the cache bounded
        _hop_lines.clear()
    ids = b'","span_id":"0x'
    kind_text = b'","trace_state":"[]"},"kind":"' + _KIND_BYTES[kind._value_] + b'","parent_id":'
    times = b',"start_time":%b.%06dZ","end_time":%b.%06dZ","status":' + _UNSET_STATUS + b',"attributes":'
    entry = _hop_lines[name] = (
        kind, res, b'{"name":' + _encoder.encode(name) + b',"context":{"trace_id":"0x', ids, kind_text + b'"0x',
        kind_text + b"null", b'"' + times, times, _tail(res))
    return entry


def _tail(res: Any) -> bytes:
    """The end of a span's line when it has no events and no links: its resource's, remembered per resource."""
    cached = _hop_tails.get(id(res))
    if cached is None or cached[0] is not res:  # holding the resource keeps its id from being reused
        resource = _encoder.encode(_resource_document(res))
        cached = _hop_tails[id(res)] = (res, b',"events":[],"links":[],"resource":' + resource + b"}\n")
    return cached[1]


def _common_line(name: str, kind: Any, res: Any, trace_hex: bytes, span_hex: bytes, parent_hex: bytes | None,
                 start: int, end: int, attributes: dict[str, Any]) -> bytes:
    """The JSON line of a span in the common shape (no trace state, unset status, no events or links).

    Joined from the name's and resource's constant pieces (:func:`_hop_line`) around the trace,
    span and parent ids' hex digits (``parent_hex`` None: a root), one format of the times
    (``start``/``end`` in ns since the epoch) and the attributes: the bytes ``_document`` would
    encode. A bytes format costs ~0.7k instructions per field it fills, a joined piece ~0.1k.
    """
    line = _hop_lines.get(name)
    if line is None or line[0] is not kind or line[1] is not res:
        line = _hop_line(name, kind, res)
    started, us, ended, us2 = _stamps(start, end)
    if parent_hex is not None:
        return b"".join((line[2], trace_hex, line[3], span_hex, line[4], parent_hex,
                         line[6] % (started, us, ended, us2), _encoder.encode(attributes), line[8]))
    return b"".join((line[2], trace_hex, line[3], span_hex, line[5], line[7] % (started, us, ended, us2),
                     _encoder.encode(attributes), line[8]))


def encode_line(span: Any) -> bytes:
    """``span`` (a ``ReadableSpan`` or a hop path span) as its JSON line (:func:`encode_spans`).

    A hop span's line is ``span._readable().to_json(indent=None)``'s document. The common one
    (no trace state, unset status, no events or links) is one format of the name's and the
    resource's constant text around the ids, times and attributes (:func:`_hop_line`); any
    other goes piece by piece (:func:`_hop_parts`).
    """
    if getattr(type(span), "_is_hop_span", False) is not True:  # _is_hop_span(span), inline
        if type(span) in _SDK_SPANS and (line := _sdk_line(span)) is not None:
            return line
        return _encoder.encode(_document(span)) + b"\n"
    if span._trace_state is None and span._status is span._unset_status and not span._events and not span._links:
        # the ids' hex digits as the traceparents the hop wrote or read carried them, when it did
        trace_hex = span._trace_hex
        span_hex = span._span_hex
        parent_hex = span._parent_hex
        attributes = span._attributes
        return _common_line(span._name, span._kind, span._hop.resource,
                            trace_hex.encode() if trace_hex is not None else b"%032x" % span._trace_id,
                            span_hex.encode() if span_hex is not None else b"%016x" % span._span_id,
                            (parent_hex.encode() if parent_hex is not None else b"%016x" % span._parent_id)
                            if span._parent_id else None,
                            span._start_time, span._end_time,
                            attributes if type(attributes) is dict else dict(attributes))
    return b"".join(_hop_parts(span))


_SDK_SPANS = frozenset({Span, ReadableSpan})
"""The SDK's own span classes, whose fields :func:`_sdk_line` reads (a subclass may compute its properties)."""


def _sdk_line(span: ReadableSpan) -> bytes | None:
    """The JSON line of an SDK span (``_document``'s bytes) in the common shape, else ``None``.

    The common shape: no trace state, an unset status, no events, no links (the ``invoke_agent``,
    ``chat`` and ``execute_tool`` spans that end well). Its line is joined from the hop path's pieces
    (:func:`_hop_line`, the resource's tail) around the ids, times and attributes, reading the span's
    fields rather than its properties: one call instead of ~50 (a property read each, a tuple per
    ``events``/``links`` read, a dict built from the attributes). ~10 µs -> ~4 µs a span.
    """
    ctx = span._context
    status = span._status
    started = span._start_time
    ended = span._end_time
    if (ctx is None or status.status_code is not StatusCode.UNSET or span._events or span._links
            or ctx.trace_state or not started or not ended):
        return None
    attributes = span._attributes
    items = getattr(attributes, "_dict", None)  # BoundedAttributes keeps its items in a dict
    if type(items) is not dict:
        items = attributes if type(attributes) is dict else dict(attributes or {})
    parent = span._parent
    return _common_line(span._name, span._kind, span._resource, b"%032x" % ctx.trace_id, b"%016x" % ctx.span_id,
                        b"%016x" % parent.span_id if parent else None, started, ended, items)


def _hop_parts(span: Any) -> tuple[bytes, ...]:
    """The pieces of the JSON line of a hop path span: ``span._readable().to_json(indent=None)``'s document."""
    name = _names.get(span._name)
    if name is None:
        if len(_names) > 4096:  # names with ids in them: keep the cache bounded
            _names.clear()
        name = _names[span._name] = _encoder.encode(span._name)
    res = span._hop.resource
    cached = _resource_bytes.get(id(res))
    if cached is None or cached[0] is not res:  # holding the resource keeps its id from being reused
        cached = _resource_bytes[id(res)] = (res, _encoder.encode(_resource(span._readable())))
    state = span._trace_state
    status = span._status
    attributes = span._attributes
    events = span._events
    links = span._links
    parent_id = span._parent_id
    trace_hex = span._trace_hex  # the traceparent's text, when the hop wrote or read one
    started, us, ended, us2 = _stamps(span._start_time, span._end_time)
    return (
        b'{"name":', name,
        b',"context":{"trace_id":"0x', trace_hex.encode() if trace_hex is not None else b"%032x" % span._trace_id,
        b'","span_id":"0x%016x","trace_state":' % span._span_id, _encoder.encode(repr(state)) if state else _NO_STATE,
        b'},"kind":"', _KIND_BYTES[span._kind._value_],
        b'","parent_id":', b'"0x%016x"' % parent_id if parent_id else b"null",
        b',"start_time":', b'%b.%06dZ"' % (started, us), b',"end_time":', b'%b.%06dZ"' % (ended, us2),
        b',"status":', _UNSET_STATUS if status is span._unset_status
        else _encoder.encode(_Status(status.status_code.name, status.description or None)),
        b',"attributes":', _encoder.encode(attributes if type(attributes) is dict else dict(attributes)),
        b',"events":', _encoder.encode([_Event(e.name, _iso(e.timestamp), dict(e.attributes or {})) for e in events])
        if events else b"[]",
        b',"links":', _encoder.encode([_Link(_context(link.context), dict(link.attributes or {})) for link in links])
        if links else b"[]",
        b',"resource":', cached[1], b"}\n",
    )


_JsonLinesExporter.encode_line = staticmethod(encode_line)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """Return ``spans`` as JSON lines, each the same document as ``span.to_json(indent=None)``.

    The documents are msgspec Structs encoded in one ``encode_lines`` call per batch;
    the SDK's ``to_json`` goes through ``json.dumps`` with indentation logic and costs
    ~35 µs a span on the export thread, competing with the actors for the GIL. The hop
    path's own spans (which are not ``ReadableSpan`` objects: see ``QueuedSpanProcessor``)
    are written as the document of the ``ReadableSpan`` they stand for, by :func:`_hop_parts`.
    """
    hops = [_is_hop_span(span) for span in spans]
    if not any(hops):
        return _encoder.encode_lines([_document(span) for span in spans])
    parts: list[bytes] = []
    others: list[ReadableSpan] = []
    for span, hop in zip(spans, hops, strict=True):
        if hop:
            if others:
                parts.append(_encoder.encode_lines([_document(s) for s in others]))
                others = []
            parts.append(encode_line(span))
        else:
            others.append(span)
    if others:
        parts.append(_encoder.encode_lines([_document(s) for s in others]))
    return b"".join(parts)


def span_to_json_line(span: ReadableSpan) -> str:
    """Return ``span`` as one JSON line (see :func:`encode_spans`)."""
    return encode_spans((span,)).decode()


class ExportStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What a :class:`QueuedSpanProcessor` did so far (its :meth:`~QueuedSpanProcessor.statistics`).

    Parameters
    ----------
    queued : int
        Spans waiting for export now.
    exported : int
        Spans handed to the exporter.
    dropped : int
        Spans dropped because the queue was full (export never blocks a hop).
    export_cpu_seconds : float
        CPU time the export thread spent (the GIL it held): writing, and encoding for an exporter
        that does not take lines (a line-writing exporter's spans are encoded as they end).
    """

    queued: int
    exported: int
    dropped: int
    export_cpu_seconds: float


class QueuedSpanProcessor(SpanProcessor):
    """Export finished spans off the hot path: a bounded queue, a thread, batches, counted drops.

    ``on_end`` only appends the span to a bounded deque (or counts it as dropped when
    the queue is full: a hop never waits for export and memory never grows without
    bound). A daemon thread wakes every ``schedule_delay`` seconds, or as soon as
    ``batch_size`` spans are queued, and hands them to the exporter in batches, so the
    GIL is taken for export once per batch rather than once per span.

    While every processor of the provider is one of these, the bus's messaging spans are
    queued as the hop path keeps them (``_LeanSpan``: ids, attributes, times) and become
    ``ReadableSpan`` objects in the export thread, just before ``exporter.export``. Exporters
    see ``ReadableSpan`` only. An exporter that writes lines (``encode_line`` and
    ``write_lines``: the JSON-lines file of :func:`setup_tracing`) gets each span encoded as
    it ends, on the thread that ended it, and the export thread only writes the queued lines.

    Parameters
    ----------
    exporter : SpanExporter
    max_queue_size : int
        Spans kept waiting at most; beyond it new spans are dropped and counted.
    batch_size : int
        Spans per ``export`` call, and the queue length that wakes the thread early.
    schedule_delay : float
        Seconds between two exports when the queue stays short.

    Notes
    -----
    Drops are logged once per export round with their running total, and at shutdown.
    """

    noop_hooks = ("on_start", "_on_ending")
    """Hooks that do nothing here: the hop path does not call them."""

    def __init__(self, exporter: SpanExporter, *, max_queue_size: int = 8192, batch_size: int = 512,
                 schedule_delay: float = 0.5) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.batch_size = batch_size
        self.schedule_delay = schedule_delay
        self._queue: collections.deque[Any] = collections.deque()  # spans, or their lines (see _encode)
        # an exporter that writes lines (the JSON-lines file): spans are encoded as they end, lines are queued
        encode, write = getattr(exporter, "encode_line", None), getattr(exporter, "write_lines", None)
        self._encode: Any = encode if callable(encode) and callable(write) else None
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._exported = 0
        self._dropped = 0
        self._reported_drops = 0
        self._flushes = 0  # flush requests seen by the thread
        self._flushes_done = 0
        self._cpu = 0.0
        self._stopped = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="tandem-span-export", daemon=True)
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        self._queue_span(span)

    _queues_on_end = on_end
    """Marks ``on_end`` as doing nothing but :meth:`_queue_span` for a sampled span: the hop path
    (``tandem.services.bus._tracing``) then queues its spans itself, as they are."""

    def _queue_span(self, span: Any) -> None:
        """Queue a finished, sampled span for export (or count it dropped when the queue is full).

        With an exporter that writes lines, the span's line is queued, encoded now; a span
        that cannot be encoded is logged and counted as dropped, never raised into the hop.
        """
        if self._stopped:
            return
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self._dropped += 1
            return
        encode = self._encode
        if encode is not None:
            try:
                span = encode(span)
            except Exception:  # a value the encoder refuses: this span is lost, the hop goes on
                log.exception("span %r could not be encoded; dropped", getattr(span, "name", span))
                self._dropped += 1
                return
        queue.append(span)
        if len(queue) == self.batch_size:
            self._wake.set()

    def statistics(self) -> ExportStatistics:
        """Return the counts so far (queued, exported, dropped, export CPU time)."""
        return ExportStatistics(queued=len(self._queue), exported=self._exported, dropped=self._dropped,
                                export_cpu_seconds=self._cpu)

    def _export_all(self) -> None:
        queue = self._queue
        started = time.thread_time()
        readable = not getattr(self.exporter, "accepts_hop_spans", False)
        lines = self._encode is not None
        while queue:
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            if readable and not lines:  # the hop path's own spans, as the ReadableSpans an exporter expects
                batch = [span._readable() if _is_hop_span(span) else span for span in batch]
            try:
                if lines:
                    self.exporter.write_lines(batch)  # type: ignore[attr-defined]
                else:
                    self.exporter.export(batch)
            except Exception:  # an exporter must not kill the export thread
                log.exception("span export failed; %d spans lost", len(batch))
            self._exported += len(batch)
        self._cpu += time.thread_time() - started
        if self._dropped != self._reported_drops:
            log.warning("span export queue full: %d spans dropped so far", self._dropped)
            self._reported_drops = self._dropped

    def _run(self) -> None:
        while True:
            self._wake.wait(self.schedule_delay)
            self._wake.clear()
            with self._idle:
                flushes = self._flushes
            self._export_all()
            with self._idle:
                self._flushes_done = flushes
                self._idle.notify_all()
            if self._stopped:
                return

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every queued span; return False when ``timeout_millis`` passed first."""
        if not self._thread.is_alive():
            self._export_all()
            return True
        with self._idle:
            self._flushes += 1
            wanted = self._flushes
            self._wake.set()
            return self._idle.wait_for(lambda: self._flushes_done >= wanted or not self._thread.is_alive(),
                                       timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._stopped:
            return
        self.force_flush()
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=30)
        if self._dropped:
            log.warning("span export: %d spans dropped in all (queue of %d full)", self._dropped, self.max_queue_size)
        self.exporter.shutdown()


def _otlp_exporter(otlp_endpoint: str | None) -> SpanExporter:
    # Imported lazily: the OTLP exporter pulls in requests/protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if otlp_endpoint is None:
        # Let the exporter resolve OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, headers, TLS...
        return OTLPSpanExporter()
    # Same meaning as OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, signal path appended.
    base = otlp_endpoint.rstrip("/")
    endpoint = base if base.endswith("/" + _OTLP_TRACES_PATH) else f"{base}/{_OTLP_TRACES_PATH}"
    return OTLPSpanExporter(endpoint=endpoint)


def setup_tracing(
    service_name: str,
    *,
    trace_file: pathlib.Path | None = None,
    otlp_endpoint: str | None = None,
    install_global: bool = True,
) -> TracerProvider:
    """Build this process's tracer provider and install the W3C propagator.

    Parameters
    ----------
    service_name : str
        ``service.name`` resource attribute, e.g. ``"tandem.planner"``.
    trace_file : pathlib.Path or None
        JSONL file to append spans to; defaults to :func:`default_trace_file`.
        Its parent directories are created. Ignored when OTLP is used.
    otlp_endpoint : str or None
        Base URL of an OTLP/HTTP collector, e.g. ``"http://localhost:4318"``
        (``/v1/traces`` is appended unless already present). When ``None``
        and ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, the exporter reads its
        whole configuration from the environment.
    install_global : bool
        Also make the provider the process-global one with
        ``trace.set_tracer_provider``. OpenTelemetry allows that only once per
        process (later calls log a warning and are ignored), so tests pass
        ``False`` and use ``provider.get_tracer(...)`` directly.

    Returns
    -------
    opentelemetry.sdk.trace.TracerProvider
        The provider, with one :class:`QueuedSpanProcessor` (export off the hot path,
        bounded queue, counted drops) and the sampler the standard variables name
        (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.01``;
        parent-based always-on by default). Its resource carries
        ``service.name``, ``service.instance.id`` (a fresh ``uuid4().hex``)
        and ``process.pid``. Call :func:`shutdown_tracing` (or
        ``provider.shutdown()``) at exit to flush; the SDK also does so
        ``atexit``.

    Raises
    ------
    services.errors.ConfigError
        If the trace file or its directory cannot be created or opened.

    Notes
    -----
    Always sets the global text-map propagator to W3C TraceContext, so
    ``opentelemetry.propagate.inject``/``extract`` read and write
    ``traceparent``/``tracestate`` in NATS headers.

    Several processes may append to the same file: it is opened unbuffered in
    append mode, so each exported batch of whole lines is one ``write`` at the end
    of the file, made holding the file's advisory ``flock`` (writers wait for each
    other sleeping, not spinning in the kernel). A reader may still see a partially
    written last line.

    Examples
    --------
    >>> provider = setup_tracing("tandem.cli", trace_file=pathlib.Path("/tmp/t.jsonl"), install_global=False)
    >>> with provider.get_tracer("tandem").start_as_current_span("task"):
    ...     pass
    >>> shutdown_tracing(provider)
    """
    resource = Resource.create(
        {
            SERVICE_NAME: service_name,
            # TANDEM_INSTANCE_ID: set per process by `tandem up` (e.g. "router.2"), so a trace shows which replica did what
            SERVICE_INSTANCE_ID: os.environ.get("TANDEM_INSTANCE_ID") or uuid.uuid4().hex,
            PROCESS_PID: os.getpid(),
        }
    )
    exporter: SpanExporter
    if otlp_endpoint is not None or any(os.environ.get(name) for name in _OTLP_ENDPOINT_ENVS):
        exporter = _otlp_exporter(otlp_endpoint)
    else:
        path = trace_file if trace_file is not None else default_trace_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by exporter.shutdown
        except OSError as exc:
            raise ConfigError(f"cannot open trace file {path} for appending: {exc.strerror or exc}") from exc
        exporter = _JsonLinesExporter(out)

    provider = TracerProvider(resource=resource)  # its sampler comes from OTEL_TRACES_SAMPLER[_ARG]
    provider.add_span_processor(QueuedSpanProcessor(exporter))
    set_global_textmap(TraceContextTextMapPropagator())
    if install_global:
        trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing(provider: TracerProvider, *, timeout_millis: int = 30_000) -> None:
    """Flush pending spans, shut the provider down and close the trace file.

    Parameters
    ----------
    provider : opentelemetry.sdk.trace.TracerProvider
        A provider returned by :func:`setup_tracing`.
    timeout_millis : int
        Upper bound, in milliseconds, for the flush.

    Notes
    -----
    Idempotent: a second call (or the SDK's ``atexit`` hook) does nothing.
    Spans ended after shutdown are dropped.
    """
    provider.force_flush(timeout_millis)
    provider.shutdown()


async def aclose_tracing(provider: TracerProvider, *, timeout_millis: int = 30_000) -> None:
    """:func:`shutdown_tracing` from async code: flush and shut down in a worker thread.

    The event loop keeps running while the spans are written (an OTLP collector that
    does not answer can take the whole ``timeout_millis``); the call returns once they
    are, and is shielded from cancellation, so a cancelled caller loses no span.

    Parameters
    ----------
    provider : opentelemetry.sdk.trace.TracerProvider
        A provider returned by :func:`setup_tracing`.
    timeout_millis : int
        Upper bound, in milliseconds, for the flush.

    Examples
    --------
    >>> import anyio
    >>> provider = setup_tracing("tandem.cli", trace_file=pathlib.Path("/tmp/t.jsonl"), install_global=False)
    >>> anyio.run(aclose_tracing, provider)
    """
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(functools.partial(shutdown_tracing, provider, timeout_millis=timeout_millis))
