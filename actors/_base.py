"""The base actor: typed endpoints on NATS subjects, served in a queue group.

Lifecycle (structured concurrency, anyio ``docs/tasks.rst``)::

    await tg.start(actor.run)     # returns once every subscription is live

Failure rules (house style 8, hardened by issue 10: no single message can crash an actor):

* a request whose payload does not decode, for any reason (schema, bad JSON, nesting
  deep enough to raise ``RecursionError``, an offloaded payload that cannot be fetched),
  gets ``ErrorReply(code="bad_request", path=...)`` (``too_large`` for an oversize one)
  and the actor keeps serving;
* a handler that raises a :class:`~tandem.services.errors.TandemError` replies with
  its ``code``; any other exception is logged with its traceback, recorded on
  the span and replied as ``code="internal"``; a handler that runs past its
  timeout replies ``code="timeout"`` (``deadline_exceeded`` past the request's deadline);
* a message nobody waits for (no reply subject: an event, or a request published
  one-way) that fails to decode or whose handler raises is republished to
  ``tandem.events.dead_letter.<actor>`` with the error code and message; the actor
  does not crash, so such failures never spend a supervisor's restart budget;
* error messages are cut to :data:`MAX_ERROR_CHARS` and a reply larger than the server's
  ``max_payload`` goes through the object store (``too_large`` when it cannot);
* requests that ask for heartbeats (``Tandem-Heartbeat``) get one every
  :data:`~tandem.services.bus.HEARTBEAT_INTERVAL` seconds while queued or running, so a
  caller can tell a slow replica from a dead one; a retry (``Tandem-Attempt`` > 1) is
  refused with ``bad_request`` unless the endpoint is declared ``idempotent``;
* when the NATS connection closes for good the actor crashes with
  :class:`~tandem.services.errors.BusClosed`; its supervisor reopens the connection and
  restarts it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import anyio.abc
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import Span, Status, StatusCode

from tandem.messages import CancelWork, ErrorReply, Message, Ping, Pong, decode_error_path, decoder, new_id, subjects
from tandem.services.bus import Bus, deadline_from_headers, deadline_scope, extract_context, messaging_attributes, remaining
from tandem.services.bus._tracing import PROCESS, tracer
from tandem.services.errors import CancelledWork, DeadlineExceeded, TandemError

__all__ = ["Actor", "Endpoint"]

log = logging.getLogger("tandem.actor")


class _EnvelopeOnly(msgspec.Struct):
    correlation_id: str = ""
    conversation_id: str = ""


_envelope = msgspec.json.Decoder(_EnvelopeOnly)


class DeadLetter(Message, frozen=True, kw_only=True, tag="dead_letter"):
    """A one-way message an actor could not decode, kept for inspection."""

    subject: str
    error: str
    path: str | None = None
    payload: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One subject an actor serves.

    Parameters
    ----------
    subject : str
        The NATS subject.
    request_type : type
        Message Struct (or union) the payload decodes to.
    handler : callable
        ``async (request) -> reply`` for request/reply, ``async (event) -> None`` for events.
    timeout : float
        Seconds one call may take before it is cancelled.
    queue : bool
        Subscribe in the actor's queue group (``False``: every replica sees every message).
    """

    subject: str
    request_type: Any
    handler: Callable[[Any], Awaitable[Message | None]]
    timeout: float = 60.0
    queue: bool = True
    decoder: msgspec.json.Decoder[Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", decoder(self.request_type))


class Actor:
    """Base class of every Tandem actor.

    Subclasses set :attr:`name`, implement :meth:`endpoints`, and may open
    long-lived resources (HTTP clients, KV buckets) in :meth:`setup`.

    Parameters
    ----------
    bus : Bus
        Connected bus.
    concurrency : int
        Most handler calls in flight at once, across the actor's endpoints.
    """

    name: ClassVar[str] = "actor"

    def __init__(self, bus: Bus, *, concurrency: int = 64) -> None:
        self.bus = bus
        self.concurrency = concurrency
        self.instance_id = new_id()[:12]
        self._tg: anyio.abc.TaskGroup | None = None
        self._inflight: dict[str, set[anyio.CancelScope]] = {}

    def endpoints(self) -> list[Endpoint]:
        """Return the endpoints to serve (besides ``tandem.<name>.ping``)."""
        raise NotImplementedError

    async def setup(self, stack: AsyncExitStack) -> None:
        """Open resources before subscribing; register their cleanup on ``stack``."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled.

        Reports started through ``task_status`` only once every subscription
        is live on the server.

        Raises
        ------
        Exception
            Whatever a one-way handler raised (the supervisor decides what next).
        """
        endpoints = [*self.endpoints(), Endpoint(subjects.ping(self.name), Ping, self._ping, timeout=5),
                     Endpoint(subjects.CONTROL_CANCEL, CancelWork, self._cancel_work, timeout=5, queue=False)]
        # The mailbox: nats-py hands each message to a callback, which passes it
        # on through an unbuffered memory stream to one of `concurrency`
        # workers; when all are busy the callback waits (bounded concurrency,
        # backpressure into the subscription's pending queue).
        send, receive = anyio.create_memory_object_stream[tuple[Msg, Endpoint]](max_buffer_size=0)
        async with AsyncExitStack() as stack:
            await self.setup(stack)
            async with anyio.create_task_group() as tg, send, receive:
                self._tg = tg
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker, receive.clone())
                subs: list[Subscription] = []
                try:
                    for ep in endpoints:
                        queue = subjects.queue_group(self.name) if ep.queue else ""
                        subs.append(await self.bus.subscribe(ep.subject, queue=queue, cb=_dispatcher(send, ep)))
                    await self.bus.flush()
                    log.info("%s %s serving %s", self.name, self.instance_id, ", ".join(e.subject for e in endpoints))
                    task_status.started()
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        for sub in subs:
                            try:
                                await sub.unsubscribe()
                            except Exception:  # connection already closed: nothing left to unsubscribe
                                log.debug("unsubscribe %s failed", sub.subject, exc_info=True)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the actor's task group, after the current handler if need be.

        For work that must not delay a reply (publishing an event about it).
        The task inherits the current trace context; if it fails, the actor
        crashes into its supervisor like a failed one-way handler.

        Raises
        ------
        RuntimeError
            When the actor is not running.
        """
        if self._tg is None:
            raise RuntimeError(f"{self.name} is not running")
        self._tg.start_soon(fn, *args)

    async def _cancel_work(self, request: CancelWork) -> None:
        for scope in list(self._inflight.get(request.correlation_id, ())):
            scope.cancel()

    async def _ping(self, _: Ping) -> Pong:
        return Pong(actor=self.name, instance_id=self.instance_id, pid=os.getpid())

    async def _worker(self, receive: MemoryObjectReceiveStream[tuple[Msg, Endpoint]]) -> None:
        async with receive:
            async for msg, ep in receive:
                await self._handle_one(msg, ep)

    async def _handle_one(self, msg: Msg, ep: Endpoint) -> None:
        ctx, links = extract_context(msg.headers)
        try:
            request = ep.decoder.decode(msg.data)
            env: Message | _EnvelopeOnly = request
            error: msgspec.DecodeError | None = None
        except msgspec.DecodeError as exc:
            env, error = _peek_envelope(msg.data), exc
        with tracer.start_as_current_span(
            f"process {ep.subject}",
            context=ctx,
            kind=PROCESS,
            links=links,
            attributes=messaging_attributes(
                "process", msg.subject, message_id=env.correlation_id, conversation_id=env.conversation_id,
                consumer_group=subjects.queue_group(self.name) if ep.queue else None, actor=self.name,
            ),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if error is not None:
                await self._reject(msg, env, error, span)
                return
            try:
                # the request's deadline (Tandem-Deadline header) bounds the handler and every
                # request it makes on the same work
                with deadline_scope(deadline_from_headers(msg.headers)), self._cancellable(request, bool(msg.reply)) as cancel:
                    budget = remaining(ep.timeout)
                    by_deadline = budget < ep.timeout
                    with anyio.fail_after(max(budget, 0.0)):
                        reply = await ep.handler(request)
                if cancel.cancelled_caught:  # tandem.control.cancel for this correlation id
                    exc = CancelledWork(f"{self.name}: {ep.subject} cancelled")
                    await self._fail(msg, ep, request, exc, span)
                    return
            except TimeoutError as exc:
                if by_deadline:
                    exc = DeadlineExceeded(f"{self.name}: deadline reached in {ep.subject}", step=ep.subject)
                await self._fail(msg, ep, request, exc, span)
                return
            except Exception as exc:
                await self._fail(msg, ep, request, exc, span)
                return
            if msg.reply and reply is not None:
                await self.bus.respond(msg, reply)

    @contextmanager
    def _cancellable(self, request: Message, enabled: bool) -> Iterator[anyio.CancelScope]:
        """A scope that ``tandem.control.cancel`` for the request's correlation id cancels
        (requests only: one-way events, the cancel itself among them, are not cancellable)."""
        scope = anyio.CancelScope()
        if not enabled:
            with scope:
                yield scope
            return
        scopes = self._inflight.setdefault(request.correlation_id, set())
        scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            scopes.discard(scope)
            if not scopes:
                self._inflight.pop(request.correlation_id, None)

    async def _fail(self, msg: Msg, ep: Endpoint, request: Message, exc: Exception, span: Span) -> None:
        span.record_exception(exc)
        span.set_attribute("error.type", getattr(exc, "code", type(exc).__qualname__))
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        if not msg.reply:
            raise exc  # one-way: crash into the supervisor
        await self.bus.respond(msg, self._error_reply(exc, request, ep))

    async def _reject(self, msg: Msg, env: _EnvelopeOnly, exc: msgspec.DecodeError, span: Span) -> None:
        """Answer a payload that did not decode, or dead-letter it when nobody waits for an answer."""
        text, path = decode_error_path(exc)
        span.set_status(Status(StatusCode.ERROR, text))
        span.set_attribute("error.type", "bad_request")
        log.warning("%s: malformed payload on %s: %s (at %s)", self.name, msg.subject, text, path)
        error = ErrorReply(code="bad_request", message=text, path=path,
                           correlation_id=env.correlation_id or new_id(), conversation_id=env.conversation_id)
        if msg.reply:
            await self.bus.respond(msg, error)
        else:
            await self.bus.publish(
                f"tandem.events.dead_letter.{self.name}",
                DeadLetter(subject=msg.subject, error=text, path=path, payload=msg.data.decode("utf-8", "replace"),
                           correlation_id=error.correlation_id),
            )

    def _error_reply(self, exc: Exception, request: Message, ep: Endpoint) -> ErrorReply:
        if isinstance(exc, TandemError):
            code, text = exc.code, str(exc)
            log.warning("%s: %s failed: %s", self.name, ep.subject, text)
        elif isinstance(exc, TimeoutError):
            code, text = "timeout", f"{self.name} gave up after {ep.timeout:g}s"
            log.warning("%s: %s timed out after %gs", self.name, ep.subject, ep.timeout)
        else:
            code, text = "internal", f"{type(exc).__name__}: {exc}"
            log.error("%s: %s raised", self.name, ep.subject, exc_info=exc)
        return ErrorReply(
            code=code, message=text, path=getattr(exc, "path", None),
            correlation_id=request.correlation_id, conversation_id=request.conversation_id,
        )


def _dispatcher(
    send: MemoryObjectSendStream[tuple[Msg, Endpoint]], ep: Endpoint
) -> Callable[[Msg], Awaitable[None]]:
    async def dispatch(msg: Msg) -> None:
        # Hand over without yielding while a worker is free: messages that
        # arrived together are dispatched together, so their replies leave in
        # one socket write instead of one write each.
        try:
            send.send_nowait((msg, ep))
        except anyio.WouldBlock:
            await send.send((msg, ep))

    return dispatch


def _peek_envelope(data: bytes) -> _EnvelopeOnly:
    try:
        return _envelope.decode(data)
    except msgspec.DecodeError:
        return _EnvelopeOnly()
