"""Messaging spans over NATS, named by the OTel messaging semantic conventions.

* ``send <subject>`` — PRODUCER, its context injected as W3C ``traceparent``
  into the NATS message headers;
* ``process <subject>`` — CONSUMER, child of the extracted producer context (not
  also linked to it: the conventions link a process span to its producer only when it
  is not parented on it, :data:`LINK_PARENT`);
* replies carry the ``process`` span's context (``traceparent``), so a caller
  can tell which span answered; a hop that records nothing (not sampled, or tracing
  off here) has no span that answered, and its reply carries no ``traceparent``.

Reply subjects (``_INBOX.*``) are temporary and never used as span names.

The hop path
------------
Every request makes two of these spans, so they skip the SDK's generic path
(:meth:`Tracer.start_as_current_span`), from attributes that are already clean
(:class:`HopAttributes`, built once per endpoint), with the provider's own sampler,
id generator, resource and span processors, and with ``traceparent`` written and
parsed directly when the global propagator is W3C TraceContext (the one
:func:`setup_tracing <tandem.services.telemetry.setup_tracing>` installs):

* while every span processor only queues finished spans for export (the
  ``QueuedSpanProcessor`` that :func:`setup_tracing` installs), a hop's span is a
  :class:`_LeanSpan`: ids, attributes and times in slots, no ``SpanContext`` until
  someone asks, queued as it is when it ends; the export side makes the real
  ``ReadableSpan`` for an exporter (or writes the JSON line of that span straight away);
* with any other processor (a user's ``SpanProcessor``, the SDK's batch processor),
  it is a :class:`_HopSpan`, a real ``opentelemetry.sdk.trace.Span`` subclass: every
  processor sees ``on_start`` and gets the span itself, read-only, in ``on_end``.

Either way, exporters and processors see the same spans (parents, attributes,
events, links, status) as the SDK's generic path makes. :func:`activate`,
:func:`deactivate` and :func:`current_span` set and read the current span on the
runtime context's ``ContextVar`` directly.

Without an SDK tracer provider (tracing off), no span is made at all; an
incoming context is still passed on, so an untraced process in the middle
does not cut a trace. With another provider implementation, the generic API
is used.

Sampling is the provider's: ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (e.g. ``parentbased_traceidratio`` and ``0.01``)
decide at a task's root span and every hop follows the parent's flag, so a
sampled task is complete and an unsampled one costs no span anywhere.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from time import time_ns as _time_ns
from types import SimpleNamespace, TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.semconv._incubating.attributes import messaging_attributes as M
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode

__all__ = [
    "MESSAGING_SYSTEM",
    "SENT_ROOT",
    "HopAttributes",
    "activate",
    "current_span",
    "deactivate",
    "extract_context",
    "extract_span_context",
    "inject_headers",
    "inject_span",
    "messaging_attributes",
    "start_process",
    "start_process_from",
    "start_send",
    "tracer",
]

MESSAGING_SYSTEM = "nats"

tracer = trace.get_tracer("tandem.bus")

SEND = SpanKind.PRODUCER
PROCESS = SpanKind.CONSUMER

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_HOP_TRACEPARENT = re.compile(r"00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-(?:(00)|([0-9a-f]{2}))")
"""A valid version-00 ``traceparent`` (ids not all zero) in one match: ``lastindex`` 3 when it is not sampled (``-00``)."""
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_FLAGS = {"01": _SAMPLED, "00": _NOT_SAMPLED}  # traceparent's flags as almost every producer writes them
_NO_ATTRIBUTES = BoundedAttributes(immutable=True)
_log = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's own warnings (ended spans) say the same there

LINK_PARENT = False
"""Whether a ``process`` span also links to the producer span it is parented on (the messaging
conventions link a process span to its producer only when it is *not* parented on it)."""


def messaging_attributes(
    operation: str,
    subject: str,
    *,
    message_id: str = "",
    correlation_id: str = "",
    conversation_id: str = "",
    body_size: int | None = None,
    template: str | None = None,
    consumer_group: str | None = None,
    actor: str | None = None,
) -> dict[str, str | int]:
    """Return the semantic-convention attributes of one messaging span.

    Parameters
    ----------
    operation : {"send", "process", "receive"}
        ``messaging.operation.type``; also used as ``messaging.operation.name``.
    subject : str
        ``messaging.destination.name``.
    message_id : str
        ``messaging.message.id``: an identifier of this one message (``Nats-Msg-Id``
        for JetStream), never the shared correlation id. Core NATS messages have none.
    correlation_id : str
        The envelope's ``correlation_id``, shared by a request, its reply and its
        events: ``messaging.message.conversation_id``.
    conversation_id : str
        The envelope's ``conversation_id`` (the user conversation): ``gen_ai.conversation.id``.
    body_size : int or None
        Payload size in bytes.
    template : str or None
        ``messaging.destination.template`` for templated subjects.
    consumer_group : str or None
        The NATS queue group (``messaging.consumer.group.name``).
    actor : str or None
        The consuming actor (``tandem.actor``).

    Examples
    --------
    >>> messaging_attributes("send", "agents.planner.plan", correlation_id="c1")["messaging.message.conversation_id"]
    'c1'
    """
    attrs: dict[str, str | int] = {
        M.MESSAGING_SYSTEM: MESSAGING_SYSTEM,
        M.MESSAGING_OPERATION_TYPE: operation,
        M.MESSAGING_OPERATION_NAME: operation,
        M.MESSAGING_DESTINATION_NAME: subject,
    }
    _add_message_attributes(attrs, message_id, correlation_id, conversation_id, body_size)
    if template:
        attrs[M.MESSAGING_DESTINATION_TEMPLATE] = template
    if consumer_group:
        attrs[M.MESSAGING_CONSUMER_GROUP_NAME] = consumer_group
    if actor:
        attrs["tandem.actor"] = actor
    return attrs


def _add_message_attributes(attrs: dict[str, Any], message_id: str, correlation_id: str, conversation_id: str,
                            body_size: int | None) -> None:
    """Add one message's own attributes (those present) to ``attrs``."""
    if message_id:
        attrs[M.MESSAGING_MESSAGE_ID] = message_id
    if correlation_id:
        attrs[M.MESSAGING_MESSAGE_CONVERSATION_ID] = correlation_id
    if conversation_id:
        attrs[G.GEN_AI_CONVERSATION_ID] = conversation_id
    if body_size is not None:
        attrs[M.MESSAGING_MESSAGE_BODY_SIZE] = body_size


_DESTINATION_NAME = M.MESSAGING_DESTINATION_NAME
_MESSAGE_ID = M.MESSAGING_MESSAGE_ID
_CONVERSATION_ID = M.MESSAGING_MESSAGE_CONVERSATION_ID
_GEN_AI_CONVERSATION_ID = G.GEN_AI_CONVERSATION_ID
_BODY_SIZE = M.MESSAGING_MESSAGE_BODY_SIZE


class HopAttributes:
    """The fixed attributes and span name of one endpoint's messaging spans, built once.

    Parameters
    ----------
    operation : {"send", "process"}
    subject : str
        The subject, or the subscription's subject for ``process`` spans.
    **fixed
        ``template``, ``consumer_group``, ``actor`` as :func:`messaging_attributes`.
    """

    __slots__ = ("attributes", "name", "subject")

    def __init__(self, operation: str, subject: str, *, template: str | None = None,
                 consumer_group: str | None = None, actor: str | None = None) -> None:
        self.subject = subject
        self.name = f"{operation} {template or subject}"
        self.attributes = messaging_attributes(operation, subject, template=template,
                                               consumer_group=consumer_group, actor=actor)

    def build(self, *, subject: str | None = None, correlation_id: str = "", conversation_id: str = "",
              body_size: int | None = None, message_id: str = "") -> dict[str, Any]:
        """Return a fresh attribute dict for one message (the fixed ones plus the message's own)."""
        attrs: dict[str, Any] = self.attributes.copy()
        if subject is not None and subject != self.subject:
            attrs[_DESTINATION_NAME] = subject
        # _add_message_attributes, inlined: this runs for every recorded hop
        if message_id:
            attrs[_MESSAGE_ID] = message_id
        if correlation_id:
            attrs[_CONVERSATION_ID] = correlation_id
        if conversation_id:
            attrs[_GEN_AI_CONVERSATION_ID] = conversation_id
        if body_size is not None:
            attrs[_BODY_SIZE] = body_size
        return attrs


# --------------------------------------------------------------------------- the lean span


class _HopSpan(sdk_trace.Span):
    """An SDK ``Span`` started without the generic bookkeeping a hop does not need.

    Its attributes come in already clean (a plain dict, turned into the SDK's
    ``BoundedAttributes`` on the first later change); ``end`` hands the span
    itself, now read-only, to the processors as the ``ReadableSpan``.
    """

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind,
                 attributes: dict[str, Any], links: tuple[Link, ...], hop: _Sdk, *, record_exception: bool) -> None:
        # ReadableSpan's fields, then Span's (no super().__init__: it cleans every attribute again)
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = hop.instrumentation_info
        self._instrumentation_scope = hop.instrumentation_scope
        self._parent = parent
        self._start_time = None
        self._end_time = None
        self._attributes = attributes
        self._resource = hop.resource
        self._status = _UNSET
        self._sampler = hop.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = record_exception
        self._span_processor = hop.processor
        self._limits = hop.limits
        self._lock = hop.lock
        self._events: BoundedList | tuple[()] = ()  # a BoundedList on the first event: most hops have none
        self._links: BoundedList | tuple[()] = BoundedList.from_seq(hop.limits.max_links, links) if links else ()
        self._record_end_metrics = None
        self._ending = hop.ending
        self._enders = hop.enders

    def _bounded(self) -> None:
        if not isinstance(self._attributes, BoundedAttributes):
            self._attributes = BoundedAttributes(self._limits.max_span_attributes, self._attributes, immutable=False,
                                                 max_value_len=self._limits.max_span_attribute_length)

    def set_attribute(self, key: str, value: Any) -> None:
        self._bounded()
        super().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._bounded()
        super().set_attributes(attributes)

    def _add_event(self, event: Any) -> None:
        if self._end_time is None and not isinstance(self._events, BoundedList):
            self._events = BoundedList(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: Link) -> None:
        if self._end_time is None and not isinstance(self._links, BoundedList):
            self._links = BoundedList(self._limits.max_links)
        super()._add_link(link)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else _time_ns()
        if isinstance(self._attributes, BoundedAttributes):
            self._attributes._immutable = True
        for on_ending in self._ending:
            on_ending(self)
        for on_end in self._enders:
            on_end(self)

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        return self  # ended spans are read-only


class _LeanSpan(trace.Span):
    """A hop's span while every span processor only queues finished spans for export.

    When the provider's processors are all :class:`~tandem.services.telemetry.QueuedSpanProcessor`
    (no ``on_start`` work, an ``on_end`` that appends to a bounded queue: what
    :func:`setup_tracing <tandem.services.telemetry.setup_tracing>` installs), nobody looks at a
    hop's span before it ends but the hop itself. This span then keeps only what the span says
    (ids as ints, the parent's span id, the attribute dict, times) in slots: no ``SpanContext``
    until someone asks for one, no SDK bookkeeping, and it is itself what the processor queues.
    The export thread turns it into a real ``ReadableSpan`` (:meth:`_readable`) for any exporter,
    or encodes it straight to the JSON-lines document of that ``ReadableSpan``
    (``tandem.services.telemetry._setup.encode_spans``). It implements the whole span API with
    the SDK's behaviour (attribute limits and cleaning, events, links, status rules, exceptions
    recorded on ``__exit__``), so the handler running under it sees an ordinary recording span.

    A processor added later (a user's ``SpanProcessor``) turns the hop path back to
    :class:`_HopSpan` for the next spans (each sees ``on_start``); a lean span still open then
    ends into every processor as a ``ReadableSpan``.
    """

    __slots__ = ("_attributes", "_end_time", "_hop", "_kind", "_name", "_parent_flags", "_parent_hex", "_parent_id",
                 "_parent_remote", "_record_exception", "_span_hex", "_span_id", "_start_time", "_trace_hex",
                 "_trace_id", "_trace_state")

    # what most hop spans never set: class defaults, an instance value only when set
    _context: SpanContext | None = None  # made when someone asks for it
    _parent: SpanContext | None = None  # the parent's SpanContext when the caller had one, else made when asked
    _events: Any = ()  # a BoundedList from the first event
    _links: Any = ()
    _status = _UNSET

    _is_hop_span = True  # the export side's mark (tandem.services.telemetry._setup._is_hop_span)
    _unset_status = _UNSET  # the status every such span starts with (the export side writes it as a constant)

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any], trace_id: int, span_id: int,
                 parent_id: int, parent: SpanContext | None, parent_remote: bool, parent_flags: TraceFlags,
                 trace_state: TraceState | None, hop: _Sdk, record_exception: bool, trace_hex: str | None = None,
                 parent_hex: str | None = None) -> None:
        self._name = name
        self._kind = kind
        self._attributes: Any = attributes  # a plain clean dict; BoundedAttributes from the first later change
        self._trace_id = trace_id
        self._trace_hex = trace_hex  # the trace id as traceparent writes it, once someone wrote or read it
        self._span_hex: str | None = None  # the span id as traceparent writes it, once inject_span wrote it
        self._parent_hex = parent_hex  # the parent's span id as the traceparent read carried it (or None)
        self._span_id = span_id
        self._parent_id = parent_id  # 0: a root span
        if parent is not None:
            self._parent = parent
        self._parent_remote = parent_remote
        self._parent_flags = parent_flags
        self._trace_state = trace_state
        self._hop = hop
        self._record_exception = record_exception
        self._end_time: int | None = None
        self._start_time = _time_ns()

    # -- what the SDK's span methods reused below read
    @property
    def _lock(self) -> Any:
        return self._hop.lock

    @property
    def _limits(self) -> Any:
        return self._hop.limits

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(self._trace_id, self._span_id, is_remote=False,
                                                  trace_flags=_SAMPLED, trace_state=self._trace_state)
        return context

    def parent_context(self) -> SpanContext | None:
        """The parent's span context (None for a root span)."""
        parent = self._parent
        if parent is None and self._parent_id:
            parent = self._parent = SpanContext(self._trace_id, self._parent_id, is_remote=self._parent_remote,
                                                trace_flags=self._parent_flags, trace_state=self._trace_state)
        return parent

    def is_recording(self) -> bool:
        return self._end_time is None

    def _bounded(self) -> Any:
        attributes = self._attributes
        if type(attributes) is dict:
            limits = self._hop.limits
            attributes = self._attributes = BoundedAttributes(limits.max_span_attributes, attributes, immutable=False,
                                                              max_value_len=limits.max_span_attribute_length)
        return attributes

    def set_attribute(self, key: str, value: Any) -> None:
        with self._hop.lock:
            if self._end_time is not None:
                _log.warning("Setting attribute on ended span.")
                return
            self._bounded()[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._hop.lock:
            if self._end_time is not None:
                _log.warning("Setting attribute on ended span.")
                return
            bounded = self._bounded()
            for key, value in attributes.items():  # the public item path: the same cleaning on every SDK version
                bounded[key] = value

    def _add_event(self, event: Any) -> None:
        self._append("_events", event, self._hop.limits.max_events, "_add_event")

    def _add_link(self, link: Link) -> None:
        self._append("_links", link, self._hop.limits.max_links, "_add_link")

    def _append(self, field: str, item: Any, maxlen: int | None, what: str) -> None:
        with self._hop.lock:
            ended = self._end_time is not None
            if not ended:
                items = getattr(self, field)
                if not isinstance(items, BoundedList):
                    items = BoundedList(maxlen)
                    setattr(self, field, items)
                items.append(item)
        if ended:
            _log.warning("Tried calling %s on an ended span.", what)

    # the SDK's own code for these: it only touches the fields above
    add_event = sdk_trace.Span.add_event
    add_link = sdk_trace.Span.add_link
    update_name = sdk_trace.Span.update_name
    set_status = sdk_trace.Span.set_status
    record_exception = sdk_trace.Span.record_exception

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        if self._end_time is not None:
            return
        if exc_val is not None and self._record_exception:  # the SDK's __exit__
            self.record_exception(exception=exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        # end(), inline (one call less per hop): the same steps
        self._end_time = _time_ns()
        attributes = self._attributes
        if type(attributes) is not dict:
            attributes._immutable = True
        hop = self._hop
        # refresh()'s test, inline: with queues, the processor is the SDK's multi-processor (no getattr default needed)
        if hop.queues is not None and hop.processor._span_processors is hop._processors:
            for queue in hop.queues:
                queue(self)
            return
        self._end_time = None
        self.end()

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else _time_ns()
        attributes = self._attributes
        if type(attributes) is not dict:
            attributes._immutable = True
        hop = self._hop
        if getattr(hop.processor, "_span_processors", None) is not hop._processors:  # refresh()'s test, inline
            hop.refresh()  # a processor added while this span was open gets it too
        queues = hop.queues
        if queues is not None:
            for queue in queues:
                queue(self)
            return
        readable = self._readable()  # processors changed since this span started: each gets a ReadableSpan
        for on_ending in hop.ending:
            on_ending(readable)
        for on_end in hop.enders:
            on_end(readable)

    def _readable(self) -> sdk_trace.ReadableSpan:
        """This span as the SDK's ``ReadableSpan`` (what an exporter or processor is given)."""
        hop = self._hop
        return sdk_trace.ReadableSpan(
            name=self._name, context=self.get_span_context(), parent=self.parent_context(), resource=hop.resource,
            attributes=self._attributes, events=tuple(self._events), links=tuple(self._links), kind=self._kind,
            instrumentation_info=hop.instrumentation_info, status=self._status, start_time=self._start_time,
            end_time=self._end_time, instrumentation_scope=hop.instrumentation_scope)

    def __repr__(self) -> str:
        return f'_LeanSpan(name="{self._name}", context={self.get_span_context()})'


class _Sdk:
    """What the hop path needs from an SDK tracer, looked up once per provider."""

    __slots__ = (
        "_processors",
        "config",
        "decide",
        "drops_unsampled_local",
        "drops_unsampled_remote",
        "enabled",
        "enders",
        "ending",
        "id_generator",
        "instrumentation_info",
        "instrumentation_scope",
        "limits",
        "lock",
        "on_start",
        "processor",
        "provider",
        "queues",
        "remote_sampled_bound",
        "remote_sampled_mask",
        "resource",
        "root_bound",
        "root_mask",
        "sampler",
        "span_ids",
        "trace_ids",
        "tracer",
    )

    def __init__(self, provider: sdk_trace.TracerProvider) -> None:
        import threading

        t = provider.get_tracer("tandem.bus")
        self.provider = provider
        self.tracer = t
        self.sampler = t.sampler
        self.decide = _decider(t.sampler)
        self.drops_unsampled_remote, self.drops_unsampled_local = _drops_unsampled(t.sampler)
        self.id_generator = t.id_generator
        # the SDK's RandomIdGenerator is random.getrandbits(64/128) until the id is not 0: the same call in C, the
        # id generator itself (its loop) only for a 0; any other generator as it is
        if type(t.id_generator) is RandomIdGenerator:
            self.span_ids: Callable[[], int] = functools.partial(random.getrandbits, 64)
            self.trace_ids: Callable[[], int] = functools.partial(random.getrandbits, 128)
        else:
            self.span_ids, self.trace_ids = t.id_generator.generate_span_id, t.id_generator.generate_trace_id
        self.processor = t.span_processor
        self.resource = t.resource
        self.instrumentation_info = getattr(t, "instrumentation_info", None)
        self.instrumentation_scope = getattr(t, "_instrumentation_scope", None)
        self.limits = t._span_limits
        self.lock = threading.Lock()  # spans of a hop are touched by one task; the SDK only needs *a* lock
        self._processors: Any = None
        # whether the tracer makes spans (its configurator may turn it off; older SDKs have no such check): the
        # tracer's own check, called per span, or one that always says yes
        self.enabled: Callable[[], bool] = getattr(t, "_is_enabled", None) or _always
        # the same check read inline on the hot paths (no call): ``config._tracer_config.is_enabled``, the
        # tracer's own attribute (its configurator replaces it), or always yes on an SDK without one
        self.config: Any = t if hasattr(getattr(t, "_tracer_config", None), "is_enabled") else _ENABLED
        # a root's decision inline: sampled when ``trace_id & root_mask < root_bound`` (None: ask decide.root)
        bits = getattr(self.decide, "root_bits", None)
        self.root_mask, self.root_bound = bits if bits is not None else (0, None)
        # and under a sampled remote parent (a traced hop's process span)
        bits = getattr(self.decide, "remote_sampled_bits", None)
        self.remote_sampled_mask, self.remote_sampled_bound = bits if bits is not None else (0, None)
        self.refresh()

    def refresh(self) -> None:
        """Look at the provider's span processors again (one may have been added since)."""
        processor = self.processor
        processors = getattr(processor, "_span_processors", None)
        if processors is not None and processors is self._processors:
            return
        self._processors = processors
        if processors is None:  # not the SDK's multi-processor: call it as it is
            self.on_start: Any = processor.on_start
            self.ending: tuple[Any, ...] = (processor._on_ending,) if hasattr(processor, "_on_ending") else ()
            self.enders: tuple[Any, ...] = (processor.on_end,)
            self.queues: tuple[Any, ...] | None = None
            return
        # every processor only queues finished spans (QueuedSpanProcessor): hop spans are _LeanSpans
        queues = [_queue_of(p) for p in processors]
        self.queues = tuple(queues) if queues and None not in queues and self.decide is not None else None
        # call each processor directly, and skip the calls that do nothing (QueuedSpanProcessor's on_start)
        starters = [p.on_start for p in processors if not _does_nothing(p, "on_start")]
        self.on_start = None if not starters else processor.on_start
        self.ending = tuple(p._on_ending for p in processors
                            if hasattr(p, "_on_ending") and not _does_nothing(p, "_on_ending"))
        self.enders = tuple(p.on_end for p in processors)


def _always() -> bool:
    return True


_ENABLED = SimpleNamespace(_tracer_config=SimpleNamespace(is_enabled=True))
"""An always enabled tracer as the hop path reads it (``_tracer_config.is_enabled``): an SDK without tracer configs."""


def _queue_of(processor: Any) -> Callable[[Any], None] | None:
    """``processor``'s ``_queue_span`` when all it does with a span is queue it once ended, else None.

    That is a processor whose class declares its ``on_end`` as ``_queues_on_end`` (the
    ``QueuedSpanProcessor`` of :func:`setup_tracing <tandem.services.telemetry.setup_tracing>`,
    not a subclass that overrides ``on_end``) and whose ``on_start`` and ``_on_ending`` do nothing.
    """
    cls = type(processor)
    if getattr(cls, "_queues_on_end", None) is not getattr(cls, "on_end", None) or not hasattr(processor, "_queue_span"):
        return None
    if not _does_nothing(processor, "on_start") or (hasattr(processor, "_on_ending")
                                                     and not _does_nothing(processor, "_on_ending")):
        return None
    return processor._queue_span  # type: ignore[no-any-return]


def _does_nothing(processor: Any, method: str) -> bool:
    """Whether ``processor.<method>`` is the SDK base class's no-op (or declared one)."""
    impl = getattr(type(processor), method, None)
    return impl is getattr(sdk_trace.SpanProcessor, method, object()) or method in getattr(processor, "noop_hooks", ())


def _decider(sampler: Any) -> Any:
    """Return ``decide(parent, trace_id) -> sampled`` for the SDK's standard samplers, else None.

    The standard samplers (``always_on``/``always_off``, ``traceidratio`` and their
    ``parentbased_*`` forms, what ``OTEL_TRACES_SAMPLER`` names) add no attributes and
    keep the parent's trace state, so their decision is one comparison; it is the same
    decision ``should_sample`` would return, without a ``SamplingResult`` and a parent
    ``Context`` per span. Any other sampler goes through ``should_sample``.

    The function also has ``by_flags(remote, sampled, trace_id)``: the same decision from the
    parent's ``is_remote`` (None: no parent) and sampled flag, for a parent read from a
    ``traceparent`` without its ``SpanContext``.
    """
    static = {id(sampling.ALWAYS_ON): True, id(sampling.ALWAYS_OFF): False}

    def leaf(s: Any) -> Any:
        if id(s) in static and type(s).should_sample is sampling.StaticSampler.should_sample:
            value = static[id(s)]
            return lambda trace_id: value
        if type(s).should_sample is sampling.TraceIdRatioBased.should_sample:
            bound, limit = s.bound, s.TRACE_ID_LIMIT
            return lambda trace_id: trace_id & limit < bound
        return None

    def bits(s: Any) -> tuple[int, int] | None:
        """``(mask, bound)``: ``leaf(s)(trace_id) == (trace_id & mask < bound)``."""
        if id(s) in static and type(s).should_sample is sampling.StaticSampler.should_sample:
            return (0, 1) if static[id(s)] else (0, 0)
        if type(s).should_sample is sampling.TraceIdRatioBased.should_sample:
            return s.TRACE_ID_LIMIT, s.bound
        return None

    if type(sampler).should_sample is sampling.ParentBased.should_sample:
        root = leaf(sampler._root)
        delegates = [leaf(getattr(sampler, name)) for name in (
            "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
            "_local_parent_not_sampled")]
        if root is None or any(d is None for d in delegates):
            return None
        remote_yes, remote_no, local_yes, local_no = delegates

        def parent_based(parent: SpanContext | None, trace_id: int) -> bool:
            if parent is None:
                return root(trace_id)
            if parent.is_remote:
                return (remote_yes if parent.trace_flags.sampled else remote_no)(trace_id)
            return (local_yes if parent.trace_flags.sampled else local_no)(trace_id)

        def by_flags(remote: bool | None, sampled: bool, trace_id: int) -> bool:
            if remote is None:
                return root(trace_id)
            if remote:
                return (remote_yes if sampled else remote_no)(trace_id)
            return (local_yes if sampled else local_no)(trace_id)

        parent_based.by_flags = by_flags  # type: ignore[attr-defined]
        parent_based.root = root  # type: ignore[attr-defined]
        parent_based.root_bits = bits(sampler._root)  # type: ignore[attr-defined]
        parent_based.remote_sampled_bits = bits(sampler._remote_parent_sampled)  # type: ignore[attr-defined]
        return parent_based
    plain = leaf(sampler)
    if plain is None:
        return None

    def decide(parent: SpanContext | None, trace_id: int) -> bool:
        return plain(trace_id)

    decide.by_flags = lambda remote, sampled, trace_id: plain(trace_id)  # type: ignore[attr-defined]
    decide.root = plain  # type: ignore[attr-defined]
    decide.root_bits = decide.remote_sampled_bits = bits(sampler)  # type: ignore[attr-defined]
    return decide


def _drops_unsampled(sampler: Any) -> tuple[bool, bool]:
    """Whether ``sampler`` drops every span whose (remote, local) parent is not sampled, whatever its trace id.

    True for the standard ``parentbased_*`` samplers (their not-sampled delegates are
    ``ALWAYS_OFF``): a span under such a parent is never recorded, so a hop there only has
    to pass the parent's ``traceparent`` on (:class:`_Forwarded`).
    """
    if type(sampler).should_sample is not sampling.ParentBased.should_sample:
        return False, False

    def off(delegate: Any) -> bool:
        return delegate is sampling.ALWAYS_OFF and type(delegate).should_sample is sampling.StaticSampler.should_sample

    return (off(getattr(sampler, "_remote_parent_not_sampled", None)),
            off(getattr(sampler, "_local_parent_not_sampled", None)))


class _Forwarded(NonRecordingSpan):
    """A non-recording span that passes a ``traceparent`` on as it came, parsed only if someone asks.

    What a hop makes when it records nothing: tracing off in this process (the caller's
    context goes on unchanged, as ``NonRecordingSpan(parent)`` did), or a parent that is not
    sampled under a parent-based sampler (the hop's span would be dropped: it goes on with the
    caller's span id and the not-sampled flag, a local parent for the handler's own spans,
    which the same sampler drops too), or a task's root that the head sampler did not pick.
    Writing it into headers copies the string: no ``SpanContext``, no formatting (an unsampled
    hop cost about 60k instructions per process in parsing, formatting and SDK objects).

    A process span of this kind (``echo``) carries the caller's own context unchanged: a reply
    would only send the caller its own ``traceparent`` back, so :func:`inject_span` writes
    nothing for it (the requests and events sent under it are new ``_Forwarded`` spans, which
    are written). The hop path makes these with :func:`_forwarded` (no ``__init__`` call).
    """

    __slots__ = ("_echo", "_remote", "traceparent", "tracestate")

    _context: SpanContext | None = None  # made when someone asks for it

    def __init__(self, traceparent: str, tracestate: str | None, *, remote: bool, echo: bool = False) -> None:
        self.traceparent = traceparent
        self.tracestate = tracestate
        self._remote = remote
        self._echo = echo

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        return None  # nothing to end or record (trace.Span's __exit__ calls end(), which does nothing)

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            value = self.traceparent
            flags = value[53:55]
            context = self._context = SpanContext(
                int(value[3:35], 16), int(value[36:52], 16), is_remote=self._remote,
                trace_flags=_FLAGS.get(flags) or TraceFlags(int(flags, 16)),
                trace_state=TraceState.from_header([self.tracestate]) if self.tracestate else None)
        return context

    def __repr__(self) -> str:
        return f"_Forwarded({self.traceparent!r}, remote={self._remote})"


class _SentRoot(NonRecordingSpan):
    """The span a send runs under once :func:`start_send` wrote an unpicked root's ``traceparent`` (``into``).

    It records nothing and carries no context of its own (the headers carry the root's):
    :func:`inject_span` writes nothing for it, and its ``with`` block ends nothing.
    """

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        return None


SENT_ROOT = _SentRoot(trace.INVALID_SPAN_CONTEXT)
"""What :func:`start_send` returns when it wrote an unpicked root's ``traceparent`` into the caller's headers."""


_sdk_cache: list[Any] = [None, None, False]  # [provider, _Sdk | None, whether the provider is API-only]


def _sdk(provider: Any) -> _Sdk | None:
    if _sdk_cache[0] is provider:
        return _sdk_cache[1]
    _cache_provider(provider)
    return _sdk_cache[1]  # type: ignore[no-any-return]


def _tracing_off(provider: Any) -> bool:
    """Whether ``provider`` is the API's own (no-op or proxy): :func:`_is_api_only`, remembered with :func:`_sdk`.

    Those providers are abstract-base-class instances, so each ``isinstance`` goes through
    ``ABCMeta.__instancecheck__`` (a Python call); a hop asks once or twice.
    """
    if _sdk_cache[0] is not provider:
        _cache_provider(provider)
    return _sdk_cache[2]  # type: ignore[no-any-return]


def _cache_provider(provider: Any) -> None:
    hop: _Sdk | None = None
    if isinstance(provider, sdk_trace.TracerProvider):
        try:
            hop = _Sdk(provider)
        except AttributeError:  # an SDK without these fields: use the generic path
            hop = None
    _sdk_cache[:] = [provider, hop, hop is None and _is_api_only(provider)]


_no_env_provider: list[Any] = []  # the proxy provider, once it is known no OTEL_PYTHON_TRACER_PROVIDER is set


def _default_provider() -> Any:
    """``trace.get_tracer_provider()`` before any provider is set, without its environment lookup per call."""
    if _no_env_provider:
        return _no_env_provider[0]
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider) and hasattr(trace, "_TRACER_PROVIDER"):
        _no_env_provider.append(provider)  # it turns into the real one when set_tracer_provider is called
    return provider


def _is_api_only(provider: Any) -> bool:
    return isinstance(provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider))


Attributes = dict[str, Any] | Callable[[], dict[str, Any]]
"""A span's attributes, or a function returning them: called only when the span is recorded, so an
untraced or unsampled hop does not build a dict it throws away."""


def _start(name: str, kind: SpanKind, attributes: Attributes, parent: SpanContext | None,
           provider: Any | None, *, record_exception: bool, links: tuple[Link, ...] = (),
           trace_id: int | None = None) -> trace.Span:
    """A hop's span under ``parent`` (None: a root, of trace ``trace_id`` when given, else a new one)."""
    if provider is None:
        provider = getattr(trace, "_TRACER_PROVIDER", None) or _default_provider()
    hop = _sdk(provider)
    if hop is None:
        if _tracing_off(provider):  # tracing off: pass the parent's context on, record nothing
            return NonRecordingSpan(parent) if parent is not None else INVALID_SPAN
        ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
        if callable(attributes):
            attributes = attributes()
        return provider.get_tracer("tandem.bus").start_span(name, context=ctx, kind=kind, attributes=attributes,
                                                            links=links, record_exception=record_exception,
                                                            set_status_on_exception=record_exception)
    if not hop.config._tracer_config.is_enabled:
        return NonRecordingSpan(parent) if parent is not None else INVALID_SPAN
    if parent is not None:
        trace_id = parent.trace_id
    elif trace_id is None:
        trace_id = hop.trace_ids() or hop.id_generator.generate_trace_id()
    parent_ctx: Context | None = None
    decide = hop.decide
    if decide is not None and not links:
        sampled = decide(parent, trace_id) if parent is not None else decide.root(trace_id)
        span_id = hop.span_ids() or hop.id_generator.generate_span_id()
        trace_state = parent.trace_state if parent is not None else None
        if not sampled:
            if parent is None:  # a root the head sampler did not pick: its traceparent, written once
                return _Forwarded("00-%032x-%016x-00" % (trace_id, span_id), None, remote=False)  # noqa: UP031
            return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=_NOT_SAMPLED,
                                                trace_state=trace_state))
        if callable(attributes):
            attributes = attributes()
        hop.refresh()
        if hop.queues is not None:
            if parent is None:
                return _LeanSpan(name, kind, attributes, trace_id, span_id, 0, None, False, _NOT_SAMPLED, trace_state,
                                 hop, record_exception)
            return _LeanSpan(name, kind, attributes, trace_id, span_id, parent.span_id, parent, parent.is_remote,
                             parent.trace_flags, trace_state, hop, record_exception)
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED, trace_state=trace_state)
    else:
        if callable(attributes):
            attributes = attributes()
        parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        result = hop.sampler.should_sample(parent_ctx, trace_id, name, kind, attributes, links)
        decision = result.decision
        span_id = hop.span_ids() or hop.id_generator.generate_span_id()
        span_context = SpanContext(trace_id, span_id, is_remote=False,
                                   trace_flags=_SAMPLED if decision.is_sampled() else _NOT_SAMPLED,
                                   trace_state=result.trace_state)
        if not decision.is_recording():
            return NonRecordingSpan(span_context)
        if len(result.attributes) != len(attributes):  # the sampler added attributes of its own
            attributes = dict(result.attributes)
    hop.refresh()  # only a recorded span meets the processors: an unsampled hop does not look at them
    span = _HopSpan(name, span_context, parent, kind, attributes, links, hop, record_exception=record_exception)
    span._start_time = _time_ns()
    if hop.on_start is not None:
        if parent_ctx is None and parent is not None:
            parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        hop.on_start(span, parent_context=parent_ctx)
    return span


def _start_lean(sdk: _Sdk, name: str, kind: SpanKind, attributes: Attributes, trace_id: int, parent_id: int,
                remote: bool, flags: TraceFlags, trace_state: TraceState | None, trace_hex: str | None, *,
                record_exception: bool, parent_hex: str | None = None) -> _LeanSpan | None:
    """A recorded :class:`_LeanSpan` under the parent given by its ids, or None: take the general path.

    None when the provider's processors do not only queue spans, when tracing is disabled, when
    its sampler is not a standard one, or when it does not sample this span (the general path
    makes the non-recording span). No parent ``SpanContext`` is made.
    """
    if sdk.queues is None or not sdk.config._tracer_config.is_enabled \
            or not sdk.decide.by_flags(remote, flags.sampled, trace_id):  # type: ignore[union-attr]
        return None
    if sdk.processor._span_processors is not sdk._processors:  # refresh()'s test, inline (queues: it has them)
        sdk.refresh()
        if sdk.queues is None:
            return None
    if callable(attributes):
        attributes = attributes()
    span_id = sdk.span_ids() or sdk.id_generator.generate_span_id()
    return _LeanSpan(name, kind, attributes, trace_id, span_id, parent_id, None, remote, flags, trace_state, sdk,
                     record_exception, trace_hex, parent_hex)


def start_send(hop: HopAttributes, attributes: Attributes, *, provider: Any | None = None,
               into: MutableMapping[str, str] | None = None) -> trace.Span:
    """Start a ``send`` span (PRODUCER) under the current span; end it with ``span.end()``.

    The span is not made current (nothing runs under it but the send itself):
    pass it to :func:`inject_span` to write its context into the headers.

    Parameters
    ----------
    hop : HopAttributes
        The endpoint's name and fixed attributes.
    attributes : dict or callable
        ``hop.build(...)`` for this message (taken over by the span), or a function
        returning it, called only when the span is recorded.
    provider : TracerProvider or None
        The global provider when None.
    into : dict or None
        The headers the caller is about to write the span's context into. A root the head
        sampler did not pick (most tasks, under a ratio sampler) then writes its ``traceparent``
        there itself (with the W3C propagator) and returns :data:`SENT_ROOT`: there is no span
        to keep, and nothing left to inject. Any other span is returned as without ``into``,
        for :func:`inject_span`.

    Returns
    -------
    Span
        The ``send`` span; :data:`SENT_ROOT` only when ``into`` is given.
    """
    if _CURRENT is None:
        current = trace.get_current_span()
    else:  # current_span(), inline
        current = _CURRENT.get().get(_SPAN_KEY)
        if current is None or (type(current) is not _LeanSpan and type(current) is not _Forwarded
                               and not isinstance(current, trace.Span)):
            current = INVALID_SPAN
    if current is INVALID_SPAN:  # no trace to continue (a root, or tracing off)
        if provider is None:
            provider = getattr(trace, "_TRACER_PROVIDER", None) or (
                _no_env_provider[0] if _no_env_provider else _default_provider())
        cache = _sdk_cache
        if cache[0] is not provider:
            _cache_provider(provider)
        sdk = cache[1]
        if sdk is None:
            if cache[2]:
                return INVALID_SPAN  # tracing off, as _start: nothing to record, nothing to pass on
        elif sdk.root_bound is not None and sdk.config._tracer_config.is_enabled:  # _start's root, inline
            trace_id = sdk.trace_ids() or sdk.id_generator.generate_trace_id()
            if trace_id & sdk.root_mask >= sdk.root_bound:  # the head sampler did not pick it: its traceparent
                span_id = sdk.span_ids() or sdk.id_generator.generate_span_id()
                try:  # "00-%032x-%016x-00" % (trace_id, span_id): ~250 ns less a root through bytes.hex
                    traceparent = "00-%s-%s-00" % (trace_id.to_bytes(16, "big").hex(),  # noqa: UP031
                                                   span_id.to_bytes(8, "big").hex())
                except (OverflowError, AttributeError):  # not a W3C-sized id (a custom generator): as %x writes it
                    traceparent = "00-%032x-%016x-00" % (trace_id, span_id)  # noqa: UP031
                if into is not None and _fast_propagation():
                    into[TRACEPARENT] = traceparent  # what inject_span writes for it, without the span object
                    return SENT_ROOT
                return _forwarded(traceparent, None, False, False)
            if sdk.queues is not None and sdk.processor._span_processors is sdk._processors:  # as _LeanSpan.__exit__
                if callable(attributes):
                    attributes = attributes()
                return _LeanSpan(hop.name, SEND, attributes, trace_id,
                                 sdk.span_ids() or sdk.id_generator.generate_span_id(), 0, None, False, _NOT_SAMPLED,
                                 None, sdk, True)
            return _start(hop.name, SEND, attributes, None, provider, record_exception=True, trace_id=trace_id)
        return _start(hop.name, SEND, attributes, None, provider, record_exception=True)
    if type(current) is _LeanSpan:  # inside a recorded hop: its ids, without its SpanContext
        sdk = _sdk(getattr(trace, "_TRACER_PROVIDER", None) or _default_provider() if provider is None else provider)
        if sdk is not None:
            span = _start_lean(sdk, hop.name, SEND, attributes, current._trace_id, current._span_id, False, _SAMPLED,
                               current._trace_state, current._trace_hex, record_exception=True,
                               parent_hex=current._span_hex)
            if span is not None:
                return span
    elif type(current) is _Forwarded:  # inside a hop that records nothing
        forwarded = _forward(current.traceparent, current.tracestate, provider,
                             remote=current._remote)  # type: ignore[attr-defined]
        if forwarded is not None:
            return forwarded
    parent = current.get_span_context()
    return _start(hop.name, SEND, attributes, parent if parent.is_valid else None, provider, record_exception=True)


def _forward(traceparent: str, tracestate: str | None, provider: Any | None, *, remote: bool) -> _Forwarded | None:
    """The span of a hop under ``traceparent`` when it records nothing (see :class:`_Forwarded`), else None."""
    if provider is None:
        provider = getattr(trace, "_TRACER_PROVIDER", None) or _default_provider()
    hop = _sdk(provider)
    if hop is None:
        if _tracing_off(provider):  # tracing off here: the caller's context goes on unchanged
            return _forwarded(traceparent, tracestate, remote, False)
        return None
    if traceparent.endswith("-00") and (hop.drops_unsampled_remote if remote else hop.drops_unsampled_local) \
            and hop.config._tracer_config.is_enabled:
        return _forwarded(traceparent, tracestate, False, False)
    return None


_new = object.__new__


def _forwarded(traceparent: str, tracestate: str | None, remote: bool, echo: bool) -> _Forwarded:
    """``_Forwarded(traceparent, tracestate, remote=remote, echo=echo)`` without the ``__init__`` call."""
    span = _new(_Forwarded)
    span.traceparent = traceparent
    span.tracestate = tracestate
    span._remote = remote
    span._echo = echo
    return span


def start_process(hop: HopAttributes, attributes: Attributes, parent: SpanContext | None, *,
                  provider: Any | None = None) -> trace.Span:
    """Start a ``process`` span (CONSUMER), child of the producer's context ``parent``.

    Make it current for the handler with :func:`activate`; end it with ``span.end()``.
    Exceptions are not recorded automatically (the actor records them itself).
    """
    links = (Link(parent, _NO_ATTRIBUTES),) if parent is not None and LINK_PARENT else ()
    return _start(hop.name, PROCESS, attributes, parent, provider, record_exception=False, links=links)


def start_process_from(hop: HopAttributes, attributes: Attributes, headers: Mapping[str, str] | None, *,
                       provider: Any | None = None) -> trace.Span:
    """:func:`start_process` under the producer's context carried by ``headers``.

    A hop that records nothing (tracing off here, or a parent that is not sampled under a
    parent-based sampler) passes the incoming ``traceparent`` on without parsing it
    (:class:`_Forwarded`); otherwise as ``start_process(hop, attributes, extract_span_context(headers))``.
    """
    if provider is None:
        provider = getattr(trace, "_TRACER_PROVIDER", None) or (
            _no_env_provider[0] if _no_env_provider else _default_provider())
    cache = _sdk_cache  # _sdk and _tracing_off, read inline
    if cache[0] is not provider:
        _cache_provider(provider)
    off = cache[2]
    if not headers:
        if off:
            return INVALID_SPAN  # tracing off and no context comes in: nothing to record, nothing to pass on
        return start_process(hop, attributes, None, provider=provider)
    textmap = _global_textmap()
    if type(textmap) is TraceContextTextMapPropagator:
        value = headers.get(TRACEPARENT)
        if value is None:  # no context comes in (the W3C propagator reads nothing without traceparent)
            if off:
                return INVALID_SPAN  # tracing off: nothing to record, nothing to pass on
            return start_process(hop, attributes, None, provider=provider)
        match = _HOP_TRACEPARENT.fullmatch(value)
        if match is not None:  # parsed once, as extract_span_context would (zero ids do not match)
            sdk = cache[1]
            if sdk is None:
                if off:  # tracing off here: the caller's context goes on unchanged
                    return _forwarded(value, headers.get(TRACESTATE), True, True)
            elif match.lastindex == 3 and sdk.drops_unsampled_remote and sdk.config._tracer_config.is_enabled:
                # not sampled, and a parent-based sampler drops its children: passed on as it came
                return _forwarded(value, headers.get(TRACESTATE), False, True)
            trace_hex, span_hex, unsampled, flags_hex = match.groups()
            trace_id, parent_id = int(trace_hex, 16), int(span_hex, 16)
            flags = _NOT_SAMPLED if unsampled else _FLAGS.get(flags_hex) or TraceFlags(int(flags_hex, 16))
            state = headers.get(TRACESTATE)
            trace_state = TraceState.from_header([state]) if state else None
            if sdk is not None and not LINK_PARENT:
                if flags is _SAMPLED and sdk.queues is not None and sdk.remote_sampled_bound is not None \
                        and trace_id & sdk.remote_sampled_mask < sdk.remote_sampled_bound \
                        and sdk.config._tracer_config.is_enabled \
                        and sdk.processor._span_processors is sdk._processors:  # _start_lean, inline
                    if callable(attributes):
                        attributes = attributes()
                    return _LeanSpan(hop.name, PROCESS, attributes, trace_id,
                                     sdk.span_ids() or sdk.id_generator.generate_span_id(), parent_id, None, True,
                                     _SAMPLED, trace_state, sdk, False, trace_hex, span_hex)
                span = _start_lean(sdk, hop.name, PROCESS, attributes, trace_id, parent_id, True, flags, trace_state,
                                   trace_hex, record_exception=False, parent_hex=span_hex)
                if span is not None:
                    return span
            parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags, trace_state=trace_state)
            return start_process(hop, attributes, parent, provider=provider)
    elif off:
        fields = _fields_cache[1] if _fields_cache[0] is textmap else _fields(textmap)
        if fields is not None and fields.isdisjoint(headers):
            return INVALID_SPAN  # e.g. the default composite propagator, tracing off, no context comes in
    return start_process(hop, attributes, extract_span_context(headers), provider=provider)


def _context_var() -> Any:
    """The ``ContextVar`` behind OpenTelemetry's runtime context, when it is the standard one (else None)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(var, ContextVar):
        return None
    return var


_CURRENT = _context_var()


def activate(span: trace.Span) -> object:
    """Make ``span`` the current span; return the token for :func:`deactivate`.

    What ``opentelemetry.context.attach(trace.set_span_in_context(span))`` does, in one step on
    the runtime context's ``ContextVar`` (the seven calls of the API path cost ~4k instructions
    per hop), when that runtime context is the standard one.
    """
    var = _CURRENT
    if var is None:
        return otel_context.attach(trace.set_span_in_context(span))
    values = var.get().copy()
    values[_SPAN_KEY] = span
    return var.set(Context(values))


def deactivate(token: object) -> None:
    """Restore the context :func:`activate` replaced (as ``opentelemetry.context.detach``)."""
    var = _CURRENT
    if var is None:
        otel_context.detach(token)  # type: ignore[arg-type]
        return
    try:
        var.reset(token)
    except Exception:  # the API's detach logs it the same way
        logging.getLogger("opentelemetry.context").exception("Failed to detach context")


def current_span() -> trace.Span:
    """``trace.get_current_span()``, read straight from the runtime context's ``ContextVar``."""
    var = _CURRENT
    if var is None:
        return trace.get_current_span()
    span = var.get().get(_SPAN_KEY)
    if span is None:
        return INVALID_SPAN
    # the hop path's own spans without isinstance (trace.Span is an ABC: a Python __instancecheck__)
    return span if type(span) is _LeanSpan or type(span) is _Forwarded or isinstance(span, trace.Span) else INVALID_SPAN


# --------------------------------------------------------------------------- propagation


_TEXTMAP_GLOBAL = hasattr(propagate, "_HTTP_TEXT_FORMAT")
"""Whether the global propagator can be read as the module global ``get_global_textmap`` returns (no call per hop)."""


def _global_textmap() -> Any:
    """The global propagator (``propagate.get_global_textmap()``, read from its module global where it is one)."""
    return propagate._HTTP_TEXT_FORMAT if _TEXTMAP_GLOBAL else propagate.get_global_textmap()


def _fast_propagation() -> bool:
    """Whether the global propagator is the W3C one alone, whose headers the hop path writes and reads itself."""
    return type(_global_textmap()) is TraceContextTextMapPropagator


def inject_span(span: trace.Span, headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write ``span``'s context into ``headers`` (``traceparent``/``tracestate``) and return them.

    Nothing is written for an invalid context (tracing off and no incoming trace), nor for a
    ``process`` span that records nothing and only carries the caller's context on (an unsampled
    hop, or tracing off here): a reply would send the caller its own ``traceparent`` back.
    """
    if span is INVALID_SPAN:  # tracing off and no incoming trace: the common untraced case
        return headers
    kind = type(span)
    fast = _fast_propagation()
    if kind is _LeanSpan and fast:
        trace_hex = span._trace_hex  # type: ignore[attr-defined]
        try:  # bytes.hex of the ids: ~40% of "%032x" and "%016x" (W3C-sized ids, the SDK's generator)
            if trace_hex is None:  # kept for the spans under it and the export: formatting 128 bits is not free
                trace_hex = span._trace_hex = span._trace_id.to_bytes(16, "big").hex()  # type: ignore[attr-defined]
            span_hex = span._span_hex = span._span_id.to_bytes(8, "big").hex()  # type: ignore[attr-defined]
            headers[TRACEPARENT] = "00-%s-%s-01" % (trace_hex, span_hex)  # noqa: UP031
        except OverflowError:  # not a W3C-sized id (a custom generator): as %x writes it
            trace_hex = span._trace_hex = "%032x" % span._trace_id  # type: ignore[attr-defined]  # noqa: UP031
            span_id = span._span_id  # type: ignore[attr-defined]
            headers[TRACEPARENT] = "00-%s-%016x-01" % (trace_hex, span_id)  # noqa: UP031
        state = span._trace_state  # type: ignore[attr-defined]
        if state:
            headers[TRACESTATE] = state.to_header()
        return headers
    if kind is _Forwarded and (fast or span._echo):  # type: ignore[attr-defined]
        if span._echo:  # type: ignore[attr-defined]  # the caller's own context: nothing to tell it
            return headers
        headers[TRACEPARENT] = span.traceparent  # type: ignore[attr-defined]
        if span.tracestate:  # type: ignore[attr-defined]
            headers[TRACESTATE] = span.tracestate  # type: ignore[attr-defined]
        return headers
    sc = span.get_span_context()
    if not sc.is_valid:
        return headers
    if fast:
        # %-formatting: a third of the f-string's cost with format specs
        headers[TRACEPARENT] = "00-%032x-%016x-%02x" % (sc.trace_id, sc.span_id, sc.trace_flags)  # noqa: UP031
        if sc.trace_state:
            headers[TRACESTATE] = sc.trace_state.to_header()
    else:
        propagate.inject(headers, context=trace.set_span_in_context(span))
    return headers


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Inject the current context (``traceparent``/``tracestate``) into NATS headers."""
    carrier: dict[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_span_context(headers: Mapping[str, str] | None) -> SpanContext | None:
    """Return the producer's span context carried by NATS ``headers`` (None when there is none)."""
    if not headers:
        return None
    if _fast_propagation():
        value = headers.get(TRACEPARENT)
        if value is None:
            return None
        match = _TRACEPARENT.fullmatch(value)
        if match is not None:
            trace_id, span_id, flags = match.groups()
            if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                return None
            state = headers.get(TRACESTATE)
            return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                               trace_flags=_FLAGS.get(flags) or TraceFlags(int(flags, 16)),
                               trace_state=TraceState.from_header([state]) if state else None)
    fields = _fields(_global_textmap())
    if fields is not None and fields.isdisjoint(headers):
        return None  # e.g. the default composite propagator and no traceparent: nothing to extract
    remote = trace.get_current_span(propagate.extract(headers)).get_span_context()
    return remote if remote.is_valid else None


_fields_cache: list[Any] = [None, None]  # [propagator, the header names it reads or None]


def _fields(textmap: Any) -> frozenset[str] | None:
    """The header names ``textmap`` reads (its ``fields``, once per propagator); None when it does not say."""
    if _fields_cache[0] is not textmap:
        try:
            fields: frozenset[str] | None = frozenset(textmap.fields) or None
        except (AttributeError, NotImplementedError, TypeError):  # a propagator without fields: always ask it
            fields = None
        _fields_cache[:] = [textmap, fields]
    return _fields_cache[1]


def extract_context(headers: Mapping[str, str] | None) -> tuple[Context, list[Link]]:
    """Extract the producer's context from NATS headers.

    Returns
    -------
    tuple of (Context, list of Link)
        The context to parent a ``process`` span on, and the links to add: none while the span
        is parented on the producer (:data:`LINK_PARENT`).
    """
    remote = extract_span_context(headers)
    if remote is None:
        return Context(), []
    return trace.set_span_in_context(NonRecordingSpan(remote)), ([Link(remote)] if LINK_PARENT else [])
