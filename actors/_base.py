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
  :data:`~tandem.services.bus.HEARTBEAT_INTERVAL` seconds while queued or running (and their
  reply says ``Tandem-Status: done``), so a
  caller can tell a slow replica from a dead one; a retry (``Tandem-Attempt`` > 1) is
  refused with ``bad_request`` unless the endpoint is declared ``idempotent``;
* when the NATS connection closes for good the actor crashes with
  :class:`~tandem.services.errors.BusClosed`; its supervisor reopens the connection and
  restarts it.

Discovery (issue 15): every actor also answers the NATS micro service protocol (ADR-32) on
``$SRV.{PING,INFO,STATS}``, ``$SRV.<verb>.<actor>`` and ``$SRV.<verb>.<actor>.<instance_id>``
(no queue group: every replica answers), so ``nats micro list`` shows Tandem's actors. INFO
lists the endpoints with their subjects, queue groups and the hash of their request schema
(``metadata["schema"]``, see :func:`tandem.services.schema.schema_hash`); STATS counts
requests, errors and processing time per endpoint (a couple of integer updates per message).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as _metadata
from time import perf_counter_ns
from typing import Any, ClassVar

import anyio
import anyio.abc
import msgspec
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from tandem.messages import CancelWork, ErrorReply, Message, Ping, Pong, decode_error_path, decoder, new_id, subjects
from tandem.services.bus import (
    ATTEMPT_HEADER,
    HEARTBEAT_HEADER,
    HEARTBEAT_INTERVAL,
    PAYLOAD_HEADER,
    STATUS_DONE,
    STATUS_HEADER,
    Bus,
    deadline_from_headers,
    remaining,
    truncate_text,
)
from tandem.services.bus._deadline import DEADLINE_HEADER, enter_deadline, exit_deadline
from tandem.services.bus._nats import loop_clock
from tandem.services.bus._tracing import HopAttributes, _Forwarded, activate, deactivate, start_process_from
from tandem.services.errors import BadRequest, BusClosed, CancelledWork, DeadlineExceeded, RequestTimeout, TandemError
from tandem.services.schema import schema_hash

__all__ = ["MAX_DEAD_LETTER_PAYLOAD_CHARS", "MAX_ERROR_CHARS", "SRV_PREFIX", "VERSION", "Actor", "DeadLetter", "Endpoint",
           "endpoint_name"]

log = logging.getLogger("tandem.actor")

MAX_ERROR_CHARS = 4000
"""Longest ``ErrorReply.message`` / ``DeadLetter.error``; longer ones are cut with a note."""

MAX_DEAD_LETTER_PAYLOAD_CHARS = 64 * 1024
"""Longest copy of the failed payload kept in a :class:`DeadLetter`."""


class _EnvelopeOnly(msgspec.Struct):
    correlation_id: str = ""
    conversation_id: str = ""


_envelope = msgspec.json.Decoder(_EnvelopeOnly)

try:
    VERSION = _metadata.version("tandem-actors")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

SRV_PREFIX = "$SRV"
"""Prefix of the NATS micro service protocol's control subjects (ADR-32)."""


class _EndpointStats:
    """Counters of one endpoint for ``$SRV.STATS`` (updated on the hot path: keep them plain ints)."""

    __slots__ = ("errors", "last_error", "requests", "time_ns")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.time_ns = 0
        self.last_error = ""


def endpoint_name(actor: str, subject: str) -> str:
    """Return the micro-protocol name of the endpoint on ``subject`` (``[A-Za-z0-9_-]+``).

    Examples
    --------
    >>> endpoint_name("planner", "tandem.planner.plan")
    'plan'
    >>> endpoint_name("task", "tandem.control.cancel")
    'control_cancel'
    """
    own = f"tandem.{actor}."
    rest = subject[len(own):] if subject.startswith(own) else subject.removeprefix("tandem.")
    rest = rest.replace("*", "any").replace(">", "all")
    return re.sub(r"[^A-Za-z0-9_-]", "_", rest) or "root"


class DeadLetter(Message, frozen=True, kw_only=True, tag="dead_letter"):
    """A one-way message an actor could not decode or handle, kept for inspection.

    Parameters
    ----------
    subject : str
        Where the message was published.
    error : str
        Why it failed (cut to :data:`MAX_ERROR_CHARS`).
    path : str or None
        JSON path of the offending field, when decoding failed.
    payload : str
        The payload as text, cut to :data:`MAX_DEAD_LETTER_PAYLOAD_CHARS`.
    code : str
        The error code an ``ErrorReply`` would have carried (``bad_request``, ``internal``…).
    """

    subject: str
    error: str
    path: str | None = None
    payload: str = ""
    code: str = ""


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
    idempotent : bool
        Running the same request twice is harmless (no side effect beyond a cache), so a
        caller may retry it on another replica when the first went silent
        (``Bus.request(..., idempotent=True)``). Retries of other endpoints are refused.
    observe : bool
        The actor only watches messages addressed to someone else (a JetStream stream's
        subject, whose reply subject carries the stream's acknowledgement): it never
        replies, and a message it cannot read or handle is logged, not dead-lettered
        (the stream's consumer deals with it).
    """

    subject: str
    request_type: Any
    handler: Callable[[Any], Awaitable[Message | None]]
    timeout: float = 60.0
    queue: bool = True
    idempotent: bool = False
    observe: bool = False
    decoder: msgspec.json.Decoder[Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", decoder(self.request_type))


class _Mailbox:
    """The actor's bounded mailbox: NATS callbacks put messages, ``concurrency`` workers get them.

    A message goes straight to a worker waiting for one (one future resolved: no memory
    stream, whose ``receive`` costs a checkpoint and an ``Event`` per message), but only one
    worker is woken at a time: while it has not run yet, further messages (the rest of the
    burst nats-py read from the socket) queue behind it, and the worker that finishes a
    handler takes the next queued message itself, without suspending. A worker wake-up is
    an event-loop step (a ``call_soon`` handle, the task's ``__wakeup`` and ``__step``, its
    coroutine chain resumed), about as much as a raw nats-py responder's whole hop; raw
    nats-py serves a burst in one task, so the actor does too. When a handler suspends, the
    messages still queued behind it are not left waiting for it: a spill (one ``call_soon``
    per burst, :meth:`_spill`) that runs after the woken worker's step hands each of them
    to an idle worker. The concurrency bound is the workers' count as before.

    Messages queued while idle workers could take them are owed a worker, so they do not
    count against the ``backlog``: as before, ``concurrency + backlog`` messages are
    accepted (running or queued) before a callback waits for room (backpressure into the
    subscription's pending queue).
    """

    __slots__ = ("backlog", "closed", "idle", "items", "loop", "room", "spill_armed", "waking")

    def __init__(self, backlog: int, loop: asyncio.AbstractEventLoop) -> None:
        self.backlog = backlog
        self.loop = loop
        self.items: deque[tuple[Msg, Endpoint]] = deque()
        self.idle: deque[asyncio.Future[tuple[Msg, Endpoint]]] = deque()  # workers waiting for a message
        self.room: deque[asyncio.Future[None]] = deque()  # callbacks waiting for backlog space
        self.closed = False
        self.waking = False  # a worker was handed a message and has not run yet
        self.spill_armed = False  # a _spill is scheduled

    def put_nowait(self, item: tuple[Msg, Endpoint]) -> bool:
        """Give ``item`` to an idle worker or queue it; False when the backlog is full."""
        idle = self.idle
        items = self.items
        if self.waking:  # the woken worker, or the spill after it, takes this one
            if len(items) >= self.backlog + len(idle):
                return False
            items.append(item)
            if idle and not self.spill_armed:
                self.spill_armed = True
                self.loop.call_soon(self._spill)
            return True
        while idle:
            waiter = idle.popleft()
            if not waiter.done():  # a worker cancelled while waiting leaves a cancelled future
                waiter.set_result(item)
                self.waking = True
                return True
        if len(items) < self.backlog:
            items.append(item)
            return True
        return False

    def _spill(self) -> None:
        """After the woken worker's step: hand what is still queued to idle workers, one message each.

        Messages are still queued then only when the worker that would have taken them is
        suspended in a handler: handlers of this kind wait on something, so every queued
        message gets a worker of its own, as each would without the hand-over (an event-loop
        step later).
        """
        self.spill_armed = False
        items, idle = self.items, self.idle
        while items and idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(items.popleft())
                self._let_one_in()

    def _let_one_in(self) -> None:
        """Room in the backlog (or, backlog 0, a worker): one callback waiting for room may go on."""
        room = self.room
        while room:
            waiter = room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def put(self, item: tuple[Msg, Endpoint]) -> None:
        """Put ``item``, waiting for room in the backlog.

        Raises
        ------
        anyio.ClosedResourceError
            When the actor stopped.
        """
        while not self.put_nowait(item):
            if self.closed:
                raise anyio.ClosedResourceError
            waiter = self.loop.create_future()
            self.room.append(waiter)
            await waiter

    async def get(self) -> tuple[Msg, Endpoint]:
        """Take the oldest queued message, or wait for the next one."""
        items = self.items
        if self.room:
            self._let_one_in()
        if items:
            item = items.popleft()
            if items and self.idle and not self.spill_armed:  # if this handler suspends, others take the rest
                self.spill_armed = True
                self.loop.call_soon(self._spill)
            return item
        idle = self.loop.create_future()
        self.idle.append(idle)
        try:
            return await idle
        finally:
            self.waking = False

    def close(self) -> None:
        """Refuse further messages: callbacks waiting for room raise ``ClosedResourceError``."""
        self.closed = True
        while self.room:
            waiter = self.room.popleft()
            if not waiter.done():
                waiter.set_result(None)


_Cancelled = asyncio.CancelledError  # anyio's cancellation on asyncio (nats-py runs on asyncio only)


class _Work:
    """One worker: the cancel scope its handlers run in, and the timer that bounds them.

    A cancel scope per request costs more than the rest of an untraced hop's actor code
    (anyio's ``CancelScope`` enter/exit with a deadline: ~37k instructions here), so a worker
    keeps one scope for as long as nobody cancels it, and one ``call_at`` timer that is
    moved only when a request needs it sooner: requests end long before their timeout, so
    most requests write ``deadline`` and nothing else. When the timer fires and the request
    then running is past its deadline, the scope is cancelled (anyio's cancellation, shields
    respected); the worker answers that request and opens a fresh scope.
    """

    __slots__ = ("by_deadline", "cancelled", "deadline", "scope", "spent", "timer", "timer_at")

    def __init__(self) -> None:
        self.scope: Any = None  # an anyio CancelScope, set by the worker
        self.spent = False  # scope.cancel_called (a property call per read), kept by cancel()
        self.deadline = math.inf  # the running handler's deadline (loop clock); inf: no handler running
        self.by_deadline = False  # that deadline is the request's Tandem-Deadline, not the endpoint's timeout
        self.cancelled = False  # tandem.control.cancel cancelled it
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf  # when the timer fires

    def cancel(self) -> None:
        """Cancel the scope the worker's handlers run in (only here: ``spent`` is its ``cancel_called``)."""
        self.spent = True
        self.scope.cancel()


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
    backlog : int or None
        Messages accepted beyond ``concurrency`` and waiting for a worker (they get
        heartbeats too); ``None``: four times ``concurrency``.
    """

    name: ClassVar[str] = "actor"

    # anyio.CancelScope() and anyio.current_time() look the async backend up on every call
    # (sniffio, a contextvar, a dict: ~4 µs of a hop here); run() takes the running backend's
    # scope class and clock once (asyncio: its CancelScope and loop.time, what anyio returns)
    _new_scope: Callable[..., anyio.CancelScope] = anyio.CancelScope
    _clock: Callable[[], float] = staticmethod(anyio.current_time)
    _event_loop: asyncio.AbstractEventLoop

    def __init__(self, bus: Bus, *, concurrency: int = 64, backlog: int | None = None) -> None:
        self.bus = bus
        self.concurrency = concurrency
        self.backlog = 4 * concurrency if backlog is None else backlog
        self.instance_id = new_id()[:12]
        self._tg: anyio.abc.TaskGroup | None = None
        self._waiting: dict[str, float] = {}  # reply subject -> when received, for requests asking for heartbeats
        # correlation id -> the worker running its request's handler, or the set of them when there are several
        # (a set per request cost an allocation and two updates on every hop for a rare case)
        self._inflight: dict[str, _Work | set[_Work]] = {}
        self._hops: dict[str, HopAttributes] = {}  # process span name and fixed attributes per endpoint
        self._stats: dict[str, _EndpointStats] = {}  # $SRV.STATS counters per endpoint subject
        self._endpoints: list[Endpoint] = []
        self._started_at = datetime.now(UTC)

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
        BusClosed
            When the NATS connection closed for good (the supervisor reconnects).
        Exception
            Whatever a task started with :meth:`start_soon` raised.
        """
        endpoints = [*self.endpoints(), Endpoint(subjects.ping(self.name), Ping, self._ping, timeout=5, idempotent=True),
                     Endpoint(subjects.CONTROL_CANCEL, CancelWork, self._cancel_work, timeout=5, queue=False)]
        # The mailbox: nats-py's read loop offers each message to _direct_dispatcher, which
        # gives it straight to one of `concurrency` idle workers (one future resolved), or
        # queues it in a bounded backlog; when the backlog is full too the message goes to
        # the subscription's callback, which waits for room (backpressure into the
        # subscription's pending queue).
        self._event_loop = asyncio.get_running_loop()  # nats-py runs on asyncio only
        mailbox = _Mailbox(self.backlog, self._event_loop)
        self._new_scope = type(anyio.CancelScope())
        self._clock = loop_clock(self._event_loop)
        self._endpoints = endpoints
        self._stats = {ep.subject: _EndpointStats() for ep in endpoints}
        self._started_at = datetime.now(UTC)
        async with AsyncExitStack() as stack:
            await self.setup(stack)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker, mailbox)
                tg.start_soon(self._heartbeats)
                subs: list[Subscription] = []
                try:
                    for ep in endpoints:
                        queue = subjects.queue_group(self.name) if ep.queue else ""
                        subs.append(await self.bus.subscribe(ep.subject, queue=queue, cb=self._dispatcher(mailbox, ep),
                                                             direct=self._direct_dispatcher(mailbox, ep)))
                    for verb, answer in (("PING", self._srv_ping), ("INFO", self._srv_info), ("STATS", self._srv_stats)):
                        for subject in (f"{SRV_PREFIX}.{verb}", f"{SRV_PREFIX}.{verb}.{self.name}",
                                        f"{SRV_PREFIX}.{verb}.{self.name}.{self.instance_id}"):
                            subs.append(await self.bus.subscribe(subject, cb=self._srv_answer(answer)))
                    await self.bus.flush()
                    log.info("%s %s serving %s", self.name, self.instance_id, ", ".join(e.subject for e in endpoints))
                    task_status.started()
                    await self.bus.wait_lost()
                    raise BusClosed(f"{self.name} {self.instance_id}: the NATS connection closed for good")
                finally:
                    mailbox.close()
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
        crashes into its supervisor.

        Raises
        ------
        RuntimeError
            When the actor is not running.
        """
        if self._tg is None:
            raise RuntimeError(f"{self.name} is not running")
        self._tg.start_soon(fn, *args)

    async def _cancel_work(self, request: CancelWork) -> None:
        running = self._inflight.get(request.correlation_id)
        for work in (running,) if isinstance(running, _Work) else list(running or ()):
            work.cancelled = True
            work.cancel()

    async def _ping(self, _: Ping) -> Pong:
        return Pong(actor=self.name, instance_id=self.instance_id, pid=os.getpid())

    # -- NATS micro service protocol (ADR-32) -------------------------------------------------

    @property
    def _srv_metadata(self) -> dict[str, str]:
        # pid, and the process's name in a `tandem up` deployment (router.2), which tandem status shows
        meta = {"pid": str(os.getpid())}
        if os.environ.get("TANDEM_INSTANCE_ID"):
            meta["instance"] = os.environ["TANDEM_INSTANCE_ID"]
        return meta

    def _srv_identity(self, kind: str) -> dict[str, Any]:
        return {"type": f"io.nats.micro.v1.{kind}_response", "name": self.name, "id": self.instance_id,
                "version": VERSION, "metadata": self._srv_metadata}

    def _srv_ping(self) -> dict[str, Any]:
        return self._srv_identity("ping")

    def _srv_info(self) -> dict[str, Any]:
        info = self._srv_identity("info")
        info["description"] = (type(self).__doc__ or "").strip().split("\n", 1)[0]
        info["endpoints"] = [
            {"name": endpoint_name(self.name, ep.subject), "subject": ep.subject,
             "queue_group": subjects.queue_group(self.name) if ep.queue else "",
             "metadata": {"schema": schema_hash(ep.request_type),
                          "request_type": getattr(ep.request_type, "__name__", str(ep.request_type)),
                          "timeout": f"{ep.timeout:g}", "idempotent": str(ep.idempotent).lower()}}
            for ep in self._endpoints]
        return info

    def _srv_stats(self) -> dict[str, Any]:
        stats = self._srv_identity("stats")
        stats["started"] = self._started_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        endpoints = []
        for ep in self._endpoints:
            st = self._stats.get(ep.subject) or _EndpointStats()
            endpoints.append({
                "name": endpoint_name(self.name, ep.subject), "subject": ep.subject,
                "queue_group": subjects.queue_group(self.name) if ep.queue else "",
                "num_requests": st.requests, "num_errors": st.errors, "last_error": st.last_error,
                "processing_time": st.time_ns,
                "average_processing_time": st.time_ns // st.requests if st.requests else 0, "data": None})
        stats["endpoints"] = endpoints
        return stats

    def _srv_answer(self, build: Callable[[], dict[str, Any]]) -> Callable[[Msg], Awaitable[None]]:
        async def answer(msg: Msg) -> None:
            if not msg.reply:
                return
            try:  # raw publish: the protocol's replies carry no Tandem envelope, and no request headers
                await self.bus.nc.publish(msg.reply, msgspec.json.encode(build()))
            except Exception as exc:  # the requester went away or the connection is closing
                log.debug("%s: $SRV reply to %s failed: %r", self.name, msg.reply, exc)

        return answer

    def _count_error(self, ep: Endpoint, exc: Exception) -> None:
        st = self._stats.get(ep.subject)
        if st is not None:
            st.errors += 1
            st.last_error = truncate_text(f"{getattr(exc, 'code', type(exc).__name__)}: {exc}", 200)

    def _dispatcher(self, mailbox: _Mailbox, ep: Endpoint) -> Callable[[Msg], Awaitable[None]]:
        waiting = self._waiting
        now = asyncio.get_running_loop().time  # anyio.current_time() on asyncio, without the backend lookup
        put_nowait = mailbox.put_nowait

        async def dispatch(msg: Msg) -> None:
            if ep.observe:
                msg.reply = ""  # the reply subject is not ours to answer (a stream's acknowledgement)
            elif msg.reply and msg.headers and HEARTBEAT_HEADER in msg.headers:
                waiting[msg.reply] = now()
            # Hand over without yielding while a worker or the backlog has room: messages
            # that arrived together are dispatched together, so their replies leave in
            # one socket write instead of one write each.
            if not put_nowait((msg, ep)):
                await mailbox.put((msg, ep))

        return dispatch

    def _direct_dispatcher(self, mailbox: _Mailbox, ep: Endpoint) -> Callable[[Msg], bool]:
        """The synchronous hand-over nats-py's read loop offers each message first (``Bus.subscribe(direct=)``).

        It takes the message when an idle worker or the backlog has room and no callback
        is waiting for room (those came first); otherwise it leaves the message to
        :meth:`_dispatcher`'s callback, which waits for room (backpressure).
        """
        waiting = self._waiting
        now = loop_clock(asyncio.get_running_loop())
        put_nowait = mailbox.put_nowait
        room = mailbox.room
        observe = ep.observe

        def direct(msg: Msg) -> bool:
            if room:
                return False
            if observe:
                msg.reply = ""  # the reply subject is not ours to answer (a stream's acknowledgement)
            if not put_nowait((msg, ep)):
                return False
            if msg.reply and msg.headers and HEARTBEAT_HEADER in msg.headers:
                waiting[msg.reply] = now()
            return True

        return direct

    async def _heartbeats(self) -> None:
        """Tell callers of requests queued or running for a while that they are not forgotten."""
        while True:
            await anyio.sleep(HEARTBEAT_INTERVAL)
            due = anyio.current_time() - HEARTBEAT_INTERVAL / 2
            for reply, since in list(self._waiting.items()):
                if since <= due and reply in self._waiting:
                    try:
                        await self.bus.heartbeat(reply)
                    except Exception as exc:  # the connection is going away: the replies will fail too
                        log.debug("%s: heartbeat to %s failed: %r", self.name, reply, exc)
                        break

    async def _worker(self, mailbox: _Mailbox) -> None:
        """Serve messages one at a time inside this worker's cancel scope (see :class:`_Work`).

        The scope is replaced only after it was cancelled (a request's timeout, deadline or
        ``tandem.control.cancel``): its cancellation ends at the ``with`` below, once the
        request it interrupted has been answered.
        """
        get = mailbox.get
        waiting = self._waiting
        work = _Work()
        try:
            while True:
                scope = work.scope = self._new_scope()
                work.spent = False
                with scope:
                    while not work.spent:
                        msg, ep = await get()
                        try:
                            await self._handle_one(msg, ep, work)
                        except Exception as exc:  # a failure to reply or dead-letter: log it, keep serving
                            log.error("%s: could not answer a message on %s: %r", self.name, msg.subject, exc,
                                      exc_info=not isinstance(exc, TandemError))
                        finally:
                            if msg.reply:
                                waiting.pop(msg.reply, None)
        finally:
            if work.timer is not None:
                work.timer.cancel()

    def _arm_timer(self, work: _Work, deadline: float) -> None:
        """Make ``work``'s timer fire by ``deadline`` (a new timer only when it would fire later)."""
        work.deadline = deadline
        if deadline < work.timer_at:
            if work.timer is not None:
                work.timer.cancel()
            work.timer_at = deadline
            work.timer = self._event_loop.call_at(deadline, self._timer_fired, work)

    def _timer_fired(self, work: _Work) -> None:
        """``work``'s timer: cancel its request when that request's deadline has come, else wait for it."""
        work.timer, work.timer_at = None, math.inf
        deadline = work.deadline
        if deadline == math.inf:  # idle, or serving a request that is not bounded (never: budgets are finite)
            return
        if self._event_loop.time() >= deadline:
            work.cancel()
        else:  # a later request took the worker meanwhile
            self._arm_timer(work, deadline)

    async def _handle_one(self, msg: Msg, ep: Endpoint, work: _Work) -> None:
        headers = msg.headers
        error: Exception | None = None
        data = msg.data
        try:
            ref = headers.get(PAYLOAD_HEADER) if headers else None
            if ref is not None:
                data = await self.bus.get_payload(ref)
            request = ep.decoder.decode(data)
            env: Message | _EnvelopeOnly = request
        except Exception as exc:  # DecodeError, RecursionError (deep nesting), a payload that cannot be fetched
            env, error = _peek_envelope(data), exc
        st = self._stats.get(ep.subject)
        if st is not None:
            st.requests += 1
        began = perf_counter_ns()
        hop = self._hops.get(ep.subject)
        if hop is None:
            hop = self._hops[ep.subject] = HopAttributes(
                "process", ep.subject, consumer_group=subjects.queue_group(self.name) if ep.queue else None,
                actor=self.name)
        span = start_process_from(hop, lambda: hop.build(subject=msg.subject, correlation_id=env.correlation_id,
                                                         conversation_id=env.conversation_id, body_size=len(data)),
                                  headers, provider=self.bus.tracer_provider)
        try:
            if span is INVALID_SPAN:
                # no span and no incoming context (tracing off): nothing to make current (the worker's
                # own context has no span, and this message's handler leaves none behind) or to end
                await self._serve(msg, ep, span, data, env, error, work)
            else:
                token = activate(span)
                try:
                    if type(span) is _Forwarded:  # records nothing: no span to end
                        await self._serve(msg, ep, span, data, env, error, work)
                    else:
                        with span:
                            await self._serve(msg, ep, span, data, env, error, work)
                finally:
                    deactivate(token)
        finally:
            if st is not None:
                st.time_ns += perf_counter_ns() - began

    async def _serve(self, msg: Msg, ep: Endpoint, span: Span, data: bytes, env: Any, error: Exception | None,
                     work: _Work) -> None:
        """Answer one decoded message (``env``) or its decoding ``error``, inside its ``process`` span.

        The handler runs in the worker's cancel scope (:class:`_Work`), whose timer fires at the
        endpoint's timeout or the request's ``Tandem-Deadline``, whichever comes first;
        ``tandem.control.cancel`` for the request's correlation id cancels it too
        (``work.cancelled`` tells the two apart). A cancelled scope is spent: the answer is sent
        shielded, then the cancellation goes on to the worker, which opens a new scope.
        """
        request = env
        if error is not None:
            self._count_error(ep, error)
            await self._reject(msg, env, error, span, data, ep)
            return
        headers = msg.headers
        attempt = headers.get(ATTEMPT_HEADER) if headers else None
        if attempt not in (None, "1") and not ep.idempotent:
            exc: Exception = BadRequest(f"{ep.subject} is not idempotent: retry {attempt[:10]!r} refused")
            await self._fail(msg, ep, request, exc, span, data)
            return
        # the request's deadline (Tandem-Deadline header) bounds the handler and every
        # request it makes on the same work
        token = enter_deadline(deadline_from_headers(headers)) if headers and DEADLINE_HEADER in headers else None
        interrupted: BaseException | None = None
        reply: Message | None = None
        inflight = self._inflight
        cid: str | None = None
        try:
            budget = remaining(ep.timeout)
            assert budget is not None  # an endpoint's timeout is a number
            work.by_deadline = budget < ep.timeout
            if msg.reply:  # requests only: one-way events, the cancel itself among them, are not cancellable
                cid = request.correlation_id
                running = inflight.get(cid)
                if running is None:
                    inflight[cid] = work
                elif isinstance(running, set):
                    running.add(work)
                else:
                    inflight[cid] = {running, work}
            deadline = self._clock() + budget if budget > 0 else self._clock()
            if deadline < work.timer_at:  # else the timer fires sooner and looks at work.deadline then
                self._arm_timer(work, deadline)
            else:
                work.deadline = deadline
            reply = await ep.handler(request)
        except TimeoutError as exc:  # raised inside the handler (a NATS call, an inner limit), not its own timeout
            error = RequestTimeout(
                f"{self.name}: a call inside {ep.subject} timed out ({type(exc).__name__}: {exc or 'no detail'})")
        except Exception as exc:
            error = exc
        except _Cancelled as exc:  # the worker's scope (this request's timeout, deadline, cancel) or the actor's
            if not work.spent:
                raise  # the actor is stopping: no answer
            interrupted = exc
        finally:
            work.deadline = math.inf  # the timer and tandem.control.cancel leave the worker alone from here
            if token is not None:
                exit_deadline(token)
            cancelled = work.cancelled
            if cancelled:
                work.cancelled = False
            if cid is not None:
                running = inflight.get(cid)
                if running is work:
                    del inflight[cid]
                elif isinstance(running, set):
                    running.discard(work)
                    if not running:
                        del inflight[cid]
        if interrupted is not None:
            if cancelled:  # tandem.control.cancel for this correlation id
                error = CancelledWork(f"{self.name}: {ep.subject} cancelled")
            elif work.by_deadline:
                error = DeadlineExceeded(f"{self.name}: deadline reached in {ep.subject}", step=ep.subject)
            else:
                error = TimeoutError()
        if work.spent:  # spent scope: every await in it would be cancelled
            try:
                with self._new_scope(shield=True):
                    await self._send_answer(msg, ep, request, reply, error, span, data)
            except Exception as exc:
                if interrupted is None:
                    raise
                log.error("%s: could not answer a message on %s: %r", self.name, msg.subject, exc,
                          exc_info=not isinstance(exc, TandemError))
            if interrupted is not None:
                raise interrupted  # never swallowed: on to the worker's scope, which ends it if it is its own
            return
        if error is None and reply is not None and msg.reply:  # the common answer, one coroutine less
            await self.bus.respond(msg, reply, _DONE if headers and HEARTBEAT_HEADER in headers else None, span=span)
            return
        await self._send_answer(msg, ep, request, reply, error, span, data)

    async def _send_answer(self, msg: Msg, ep: Endpoint, request: Message, reply: Message | None, error: Exception | None,
                      span: Span, data: bytes) -> None:
        if error is not None:
            await self._fail(msg, ep, request, error, span, data)
        elif msg.reply and reply is not None:
            await self.bus.respond(msg, reply, _done(msg), span=span)

    async def _fail(self, msg: Msg, ep: Endpoint, request: Message, exc: Exception, span: Span, data: bytes) -> None:
        self._count_error(ep, exc)
        span.record_exception(exc)
        span.set_attribute("error.type", getattr(exc, "code", type(exc).__qualname__))
        span.set_status(Status(StatusCode.ERROR, truncate_text(str(exc), 200)))
        error = self._error_reply(exc, request, ep)
        if ep.observe:
            return  # logged by _error_reply; the message's owner handles it
        if msg.reply:
            await self.bus.respond(msg, error, _done(msg), span=span)
        else:  # nobody waits for an answer: keep the message and the reason, do not crash
            await self._dead_letter(msg, error, data)

    async def _reject(self, msg: Msg, env: Message | _EnvelopeOnly, exc: Exception, span: Span, data: bytes,
                      ep: Endpoint | None = None) -> None:
        """Answer a payload that could not be read, or dead-letter it when nobody waits for an answer."""
        path: str | None = None
        if isinstance(exc, msgspec.DecodeError):
            code, (text, path) = "bad_request", decode_error_path(exc)
        elif isinstance(exc, RecursionError):
            code, text = "bad_request", f"payload nested too deeply: {exc}"
        elif isinstance(exc, TandemError):
            code, text = exc.code, str(exc)
        else:
            code, text = "bad_request", f"undecodable payload: {type(exc).__name__}: {exc}"
        text = truncate_text(text, MAX_ERROR_CHARS)
        span.set_status(Status(StatusCode.ERROR, truncate_text(text, 200)))
        span.set_attribute("error.type", code)
        log.warning("%s: malformed payload on %s: %s (at %s)", self.name, msg.subject, truncate_text(text, 300), path)
        error = ErrorReply(code=code, message=text, path=path,
                           correlation_id=env.correlation_id or new_id(), conversation_id=env.conversation_id)
        if ep is not None and ep.observe:
            return  # logged above; the message's owner handles it
        if msg.reply:
            await self.bus.respond(msg, error, _done(msg), span=span)
        else:
            await self._dead_letter(msg, error, data)

    async def _dead_letter(self, msg: Msg, error: ErrorReply, data: bytes) -> None:
        await self.bus.publish(
            f"tandem.events.dead_letter.{self.name}",
            DeadLetter(subject=msg.subject, error=error.message, path=error.path, code=error.code,
                       payload=truncate_text(data[: MAX_DEAD_LETTER_PAYLOAD_CHARS * 4].decode("utf-8", "replace"),
                                             MAX_DEAD_LETTER_PAYLOAD_CHARS),
                       correlation_id=error.correlation_id, conversation_id=error.conversation_id),
        )

    def _error_reply(self, exc: Exception, request: Message, ep: Endpoint) -> ErrorReply:
        if isinstance(exc, TandemError):
            code, text = exc.code, str(exc)
            log.warning("%s: %s failed: %s", self.name, ep.subject, truncate_text(text, 300))
        elif isinstance(exc, TimeoutError):
            code, text = "timeout", f"{self.name} gave up after {ep.timeout:g}s"
            log.warning("%s: %s timed out after %gs", self.name, ep.subject, ep.timeout)
        else:
            code, text = "internal", f"{type(exc).__name__}: {exc}"
            log.error("%s: %s raised", self.name, ep.subject, exc_info=exc)
        path = getattr(exc, "path", None)
        return ErrorReply(
            code=code, message=truncate_text(text, MAX_ERROR_CHARS), path=path if isinstance(path, str) else None,
            correlation_id=request.correlation_id, conversation_id=request.conversation_id,
        )


def _done(msg: Msg) -> dict[str, str] | None:
    """Reply headers: ``Tandem-Status: done`` tells a caller that asked for heartbeats that
    this subject is served by actors, which heartbeat (so silence there means a lost request)."""
    return _DONE if msg.headers and HEARTBEAT_HEADER in msg.headers else None


_DONE = {STATUS_HEADER: STATUS_DONE}


def _peek_envelope(data: bytes) -> _EnvelopeOnly:
    try:
        return _envelope.decode(data)
    except Exception:  # not JSON, not an object, nested too deeply: no envelope to keep
        return _EnvelopeOnly()
