"""Client of the task loop: submit, follow, answer, cancel and read tasks — from the CLI or any service.

::

    client = TaskClient(bus)
    async with client.follow(task_id) as events:       # subscribe first: no event is missed
        await client.submit(TaskSubmit(task_id=task_id, task="...", inputs={3: text}))
        async for event in events:
            ...                                        # TaskEvent: submitted, planned, step, …, succeeded
    state = await client.get(task_id)                  # TaskState; result outputs resolved

Submission is a JetStream publish to the work-queue stream ``TANDEM_TASKS`` with
``Nats-Msg-Id`` = task id, so publishing the same submission twice runs it once. A task
actor records the task as ``pending`` as the submission passes; a client never writes task
states (a deployment's client credential may only read them).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from contextlib import asynccontextmanager

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ObjectStoreConfig
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import SpanKind

from tandem.messages import (
    TERMINAL,
    TaskAnswer,
    TaskAnswerReply,
    TaskCancel,
    TaskEvent,
    TaskList,
    TaskListReply,
    TaskReply,
    TaskResult,
    TaskState,
    TaskSubmit,
    TaskSummary,
    decoder,
    encode,
    subjects,
)
from tandem.messages.task import TASK_ID_PATTERN

from .approval import Approver
from .bus import Bus
from .bus._tracing import HopAttributes, inject_span, start_send, tracer
from .errors import BusError, NoResponders, RemoteError, RequestTimeout, TandemError

__all__ = ["Approver", "Inbox", "QueueFull", "SubmissionTooLarge", "TaskClient", "TaskEvents", "open_object_store"]

log = logging.getLogger("tandem.tasks")

_event_decoder = decoder(TaskEvent)
_result_decoder = msgspec.json.Decoder(TaskResult)
_state_decoder = msgspec.json.Decoder(TaskState)
_task_id = re.compile(TASK_ID_PATTERN)


def validate_task_id(task_id: str) -> None:
    """Raise ``RemoteError("bad_request")`` for an id that is not one subject token / KV key."""
    if not _task_id.match(task_id):
        raise RemoteError("bad_request", f"not a task id: {task_id[:80]!r} (letters, digits, _ and -; 1-64)",
                          path="$.task_id")


async def open_object_store(bus: Bus, bucket: str, *, ttl: float | None = None) -> Any:
    """Return JetStream object store ``bucket``, creating it (with ``ttl`` seconds) when missing.

    Raises
    ------
    BusError
        When JetStream is not available.
    """
    js = bus.jetstream
    try:
        try:
            return await js.object_store(bucket)
        except nats.js.errors.NotFoundError:
            return await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket, ttl=ttl, replicas=bus.replicas))
    except nats.errors.Error as exc:
        raise BusError(f"JetStream object store {bucket!r} unavailable: {exc}") from exc


class SubmissionTooLarge(TandemError):
    """Raised when a submission exceeds the stream's message limit even with inputs moved out."""

    code = "too_large"


class QueueFull(TandemError):
    """Raised when the task stream holds ``task.max_queued`` tasks already."""

    code = "queue_full"


_SUBMIT_HOP = HopAttributes("send", subjects.TASK_SUBMIT)
"""The name and fixed attributes of a submission's ``send`` span."""

EVENT_BUFFER = 256
"""Events of one task :meth:`TaskClient.run` holds before its subscription waits (nats-py's pending limits then
apply, as for any subscriber)."""


class Inbox:
    """A bounded first-in first-out mailbox of messages for one reader, filled from a subscription.

    Made for :meth:`Bus.subscribe`'s two hooks: :meth:`offer` is its ``direct`` function (nats-py's
    read loop hands each message over at once, no task step), :meth:`put` its callback for a message
    :meth:`offer` refused while the inbox was full (it waits for room; later messages queue behind it in
    the subscription, so order holds). The reader iterates it (``async for msg in inbox``) until
    :meth:`close`. Leaner than a memory object stream on this path: a message waiting is taken without
    yielding to the event loop, and a wait is one future. asyncio only, like nats-py.

    Parameters
    ----------
    max_size : int
        Messages held before :meth:`offer` refuses.

    Examples
    --------
    ::

        inbox = Inbox(64)
        sub = await bus.subscribe(subject, cb=inbox.put, direct=inbox.offer)
        async for msg in inbox:
            ...
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._items: deque[Msg] = deque()
        self._reader: asyncio.Future[None] | None = None  # the reader waiting for a message
        self._room: asyncio.Future[None] | None = None  # put waiting for room
        self._closed = False

    def offer(self, msg: Msg) -> bool:
        """Take ``msg`` unless the inbox is full (``False``); a closed inbox drops it (``True``)."""
        if self._closed:
            return True
        if len(self._items) >= self.max_size:
            return False
        self._items.append(msg)
        if (reader := self._reader) is not None and not reader.done():
            reader.set_result(None)
        return True

    async def put(self, msg: Msg) -> None:
        """Take ``msg``, waiting for room while the inbox is full (dropped once it is closed)."""
        while not self.offer(msg):
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    def close(self) -> None:
        """Stop taking messages: the reader gets those held, then the iteration ends."""
        self._closed = True
        for waiter in (self._reader, self._room):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Msg:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._take()

    async def next(self, *, timeout: float) -> Msg | None:
        """The next message, or ``None`` when none came within ``timeout`` seconds.

        The same as ``anext(inbox)`` inside ``anyio.move_on_after(timeout)``, with a timer of the event
        loop instead of a cancel scope.

        Raises
        ------
        StopAsyncIteration
            When the inbox is closed and empty.
        """
        if not self._items:
            if self._closed:
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            reader = self._reader = loop.create_future()
            timer = loop.call_later(timeout, _wake, reader)
            try:
                await reader
            finally:
                timer.cancel()
                self._reader = None
            if not self._items:
                if self._closed:
                    raise StopAsyncIteration
                return None
        return self._take()

    def _take(self) -> Msg:
        msg = self._items.popleft()
        if (room := self._room) is not None and not room.done():
            room.set_result(None)
        return msg


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class TaskEvents:
    """Async iterator of decoded :class:`TaskEvent` from one subscription.

    Not an async generator on purpose: a wait on it may be cancelled (``move_on_after``)
    and iterated again, which would close a generator for good.

    Parameters
    ----------
    messages : async iterator of Msg
        The subscription's messages (``sub.messages``, or the receiving end of a memory stream a
        subscription callback fills).
    bus : Bus
    """

    def __init__(self, messages: AsyncIterator[Msg], bus: Bus) -> None:
        self._messages = messages
        self._bus = bus

    def __aiter__(self) -> TaskEvents:
        return self

    async def __anext__(self) -> TaskEvent:
        while True:
            msg = await self._messages.__anext__()
            try:
                return _event_decoder.decode(await self._bus.payload_of(msg))  # large events: object store
            except (msgspec.DecodeError, TandemError) as exc:
                log.warning("malformed task event on %s ignored: %s", msg.subject, exc)

    async def next(self, *, timeout: float) -> TaskEvent | None:
        """Return the next event, or ``None`` after ``timeout`` seconds without one.

        Raises
        ------
        BusError
            When the subscription has ended (the connection closed).
        """
        if isinstance(self._messages, Inbox):  # a timer, not a cancel scope, bounds the wait
            return await self._next_from(self._messages, timeout)
        with anyio.move_on_after(timeout):
            try:
                return await self.__anext__()
            except StopAsyncIteration:
                raise BusError("the task event subscription ended (connection closed?)") from None
        return None

    async def _next_from(self, inbox: Inbox, timeout: float) -> TaskEvent | None:
        end = anyio.current_time() + timeout
        while True:
            try:
                msg = await inbox.next(timeout=max(0.0, end - anyio.current_time()))
            except StopAsyncIteration:
                raise BusError("the task event subscription ended (connection closed?)") from None
            if msg is None:
                return None
            try:
                return _event_decoder.decode(await self._bus.payload_of(msg))
            except (msgspec.DecodeError, TandemError) as exc:
                log.warning("malformed task event on %s ignored: %s", msg.subject, exc)


class TaskClient:
    """Talk to the task actor over ``bus``.

    Parameters
    ----------
    bus : Bus
    inline_input_bytes : int
        Inputs larger than this go to the object store ``tandem_task_data`` and the
        submission carries their names (config ``task.inline_input_bytes``).
    max_submit_bytes : int
        Largest submission (config ``task.max_submit_bytes``, the stream's ``max_msg_size``).
    timeout : float
        Seconds to wait for replies of ``get`` / ``list`` / ``cancel`` / ``answer``.
    """

    def __init__(self, bus: Bus, *, inline_input_bytes: int = 256 * 1024, max_submit_bytes: int = 1024 * 1024,
                 timeout: float = 10.0) -> None:
        self.bus = bus
        self.inline_input_bytes = inline_input_bytes
        self.max_submit_bytes = max_submit_bytes
        self.timeout = timeout
        self._kv: Any = None
        self._objects: dict[str, Any] = {}

    async def submit(self, submit: TaskSubmit) -> TaskSubmit:
        """Publish ``submit`` to the task stream; return it as sent (large inputs moved out).

        Raises
        ------
        NoResponders
            When no task actor has ever set up the stream on this server.
        SubmissionTooLarge
        QueueFull
        BusError
        """
        submit = await self._move_large_inputs(submit)
        payload = encode(submit)
        if len(payload) > self.max_submit_bytes:
            raise SubmissionTooLarge(f"task submission of {len(payload)} bytes exceeds {self.max_submit_bytes} "
                                     "(task.max_submit_bytes), even with large inputs in the object store")
        # a hop's send span (the bus's path: name and fixed attributes built once), not made current: nothing
        # but the publish runs under it
        span = start_send(_SUBMIT_HOP, _SUBMIT_HOP.build(message_id=submit.task_id, correlation_id=submit.task_id,
                                                         conversation_id=submit.conversation_id, body_size=len(payload)))
        with span:
            # the span's own context goes into the headers: the task's spans hang under it
            headers = inject_span(span, {"Nats-Msg-Id": submit.task_id})
            try:
                await self.bus.jetstream.publish(subjects.TASK_SUBMIT, payload, headers=headers, timeout=self.timeout)
            except nats.errors.NoRespondersError as exc:
                raise NoResponders("no task stream on this server: start a task actor (tandem serve task)") from exc
            except nats.js.errors.APIError as exc:
                text = str(exc.description or exc)
                if "maximum" in text and "size" in text:
                    raise SubmissionTooLarge(f"task submission of {len(payload)} bytes: {text}") from exc
                if "maximum messages" in text:
                    raise QueueFull(f"the task queue is full: {text}") from exc
                raise BusError(f"task submission refused: {text}") from exc
            except nats.errors.TimeoutError as exc:
                raise RequestTimeout(f"the task stream did not acknowledge within {self.timeout:g}s") from exc
        return submit

    async def _states(self) -> Any:
        """The KV bucket of task states, opened once per client (opening it asks JetStream)."""
        if self._kv is None:
            self._kv = await self.bus.key_value(subjects.TASK_BUCKET)
        return self._kv

    async def get(self, task_id: str, *, resolve: bool = True) -> TaskState:
        """Return the state of ``task_id`` (with ``resolve``, a result kept in the object store is fetched).

        Read straight from the KV bucket ``tandem_tasks`` (one JetStream round trip; the task
        actor writes it, ``tandem.task.get`` serves the same state to clients without KV access).

        Raises
        ------
        RemoteError
            ``not_found`` for an unknown id (the same code ``tandem.task.get`` answers).
        """
        validate_task_id(task_id)
        try:
            entry = await (await self._states()).get(task_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            entry = None
        if entry is None or entry.value is None:
            raise RemoteError("not_found", f"no task {task_id}", subject=subjects.TASK_BUCKET)
        state = _state_decoder.decode(entry.value)
        return await self._resolved(state) if resolve else state

    async def _resolved(self, state: TaskState) -> TaskState:
        """``state`` with a result kept in the object store (``result_ref``) fetched into ``result``."""
        if not state.result_ref:
            return state
        data = await self._object(state.result_ref)
        return msgspec.structs.replace(state, result=_result_decoder.decode(data), result_ref="")

    async def list(self, *, limit: int = 20, status: str | None = None) -> list[TaskSummary]:
        """Return the most recent tasks, newest first."""
        reply = await self.bus.request(subjects.TASK_LIST, TaskList(limit=limit, status=status), TaskListReply,
                                       timeout=self.timeout)
        return reply.tasks

    async def cancel(self, task_id: str) -> TaskState:
        """Cancel ``task_id``; return its state once stopped.

        Raises
        ------
        RemoteError
            ``not_found``, or ``conflict`` when the task has already ended.
        """
        reply = await self.bus.request(subjects.TASK_CANCEL, TaskCancel(task_id=task_id),
                                       TaskReply, timeout=self.timeout)
        return reply.state

    async def answer(self, task_id: str, text: str) -> TaskAnswerReply:
        """Answer the approval question of ``task_id`` in free text.

        Raises
        ------
        RemoteError
            ``conflict`` when the task is not awaiting approval.
        """
        return await self.bus.request(subjects.TASK_ANSWER, TaskAnswer(task_id=task_id, text=text,
                                                                       correlation_id=task_id),
                                      TaskAnswerReply, timeout=60)

    @asynccontextmanager
    async def follow(self, task_id: str = "*", *, flush: bool = True) -> AsyncIterator[TaskEvents]:
        """Subscribe to the events of one task (``*``: all tasks); iterate the yielded :class:`TaskEvents`.

        The subscription is live when the block starts, so submit inside it. Malformed events
        (another publisher's) are skipped with a warning.

        Parameters
        ----------
        task_id : str
        flush : bool
            Wait until the server has the subscription (one round trip). Not needed when the
            submission goes out on this client's connection next: the server handles one
            connection's messages in order, so the subscription is in place before the task is.
        """
        sub = await self.bus.subscribe(subjects.task_events(task_id))
        if flush:
            await self.bus.flush()
        try:
            yield TaskEvents(sub.messages, self.bus)
        finally:
            await self.bus.unsubscribe(sub)

    async def run(self, submit: TaskSubmit, *, approver: Approver | None = None,
                  on_event: Callable[[TaskEvent], Awaitable[None]] | None = None, poll: float = 2.0) -> TaskState:
        """Submit ``submit``, follow its events until it ends, answer approvals; return the final state.

        The whole exchange is one trace: an ``invoke_agent task`` CLIENT span around the
        submission (whose context the task actor continues), the answers and the reads.

        Parameters
        ----------
        submit : TaskSubmit
        approver : callable or None
            ``async (question) -> answer`` for ``awaiting_approval`` events; without one, the
            task waits for an answer from another client.
        on_event : callable or None
            Called with every event of the task, in order (progress display).
        poll : float
            Seconds without an event after which the state is read (a missed event never hangs).

        Raises
        ------
        TandemError
            Submission and bus errors; a task that *fails* is returned, not raised.
        """
        with tracer.start_as_current_span(
            "invoke_agent task", kind=SpanKind.CLIENT,
            attributes={G.GEN_AI_OPERATION_NAME: "invoke_agent", G.GEN_AI_AGENT_NAME: "task",
                        G.GEN_AI_PROVIDER_NAME: "tandem", "tandem.task.id": submit.task_id,
                        **({G.GEN_AI_CONVERSATION_ID: submit.conversation_id} if submit.conversation_id else {})},
        ):
            # the submission follows on this connection, so the subscription is in place before the task is
            async with self._events(submit.task_id) as events:
                await self.submit(submit)
                while True:
                    event = await events.next(timeout=poll)
                    if event is None:  # quiet for a while: read the state in case an event was missed
                        if (await self.get(submit.task_id, resolve=False)).status in TERMINAL:
                            break
                        continue
                    if on_event is not None:
                        await on_event(event)
                    if event.kind == "awaiting_approval" and approver is not None:
                        await self.answer(submit.task_id, await approver(event.question))
                    if event.status in TERMINAL:
                        if event.state is not None and event.state.status == event.status:
                            return await self._resolved(event.state)  # the stored final state: no read
                        break
            return await self.get(submit.task_id)

    @asynccontextmanager
    async def _events(self, task_id: str) -> AsyncIterator[TaskEvents]:
        """:meth:`follow` (without its flush) for :meth:`run`: each event is handed over in nats-py's read loop.

        The subscription's messages go straight into an :class:`Inbox` of :data:`EVENT_BUFFER`, instead of
        through ``sub.messages``, which starts a task and an ``asyncio.wait`` for every message.
        """
        inbox = Inbox(EVENT_BUFFER)
        sub = await self.bus.subscribe(subjects.task_events(task_id), cb=inbox.put, direct=inbox.offer)
        try:
            yield TaskEvents(inbox, self.bus)
        finally:
            await self.bus.unsubscribe(sub)
            inbox.close()

    async def wait(self, task_id: str, *, poll: float = 0.5, grace: float = 10.0) -> TaskState:
        """Wait until ``task_id`` has ended; return its final state (result resolved).

        Parameters
        ----------
        poll : float
            Seconds between reads of the state when no event arrives (in case one was missed).
        grace : float
            Seconds a task may have no recorded state yet: a task just submitted is recorded
            once a task actor takes it, so ``submit`` then ``wait`` does not fail meanwhile.

        Raises
        ------
        RemoteError
            ``not_found`` when no state of ``task_id`` appeared within ``grace``.
        """
        async with self.follow(task_id) as events:
            state = await self._recorded(task_id, events, poll, grace)
            while state.status not in TERMINAL:
                event = await events.next(timeout=poll)  # an event, or a poll in case one was missed
                if event is None or event.status in TERMINAL:
                    state = await self.get(task_id, resolve=False)
        return await self.get(task_id)

    async def recorded(self, task_id: str, *, poll: float = 0.5, grace: float = 10.0) -> TaskState:
        """Return the first recorded state of ``task_id``, waiting up to ``grace`` seconds for it.

        A task actor records a submission (``pending``) moments after :meth:`submit` returns, so
        a client that hands the id on (``tandem run --detach``) waits here first: ``get``,
        ``cancel`` and ``tandem task show`` then find the task.

        Parameters
        ----------
        poll : float
            Seconds between reads of the state when no event of the task arrives.
        grace : float
            Seconds to wait for the first record.

        Raises
        ------
        RemoteError
            ``not_found`` when no state of ``task_id`` appeared within ``grace``.
        """
        async with self.follow(task_id) as events:
            return await self._recorded(task_id, events, poll, grace)

    async def _recorded(self, task_id: str, events: Any, poll: float, grace: float) -> TaskState:
        """The state of ``task_id``, waiting up to ``grace`` seconds for its first record."""
        end = anyio.current_time() + grace
        while True:
            try:
                return await self.get(task_id, resolve=False)
            except RemoteError as exc:
                left = end - anyio.current_time()
                if exc.code != "not_found" or left <= 0:
                    raise
                await events.next(timeout=min(poll, left))  # its first event, or the next poll

    async def _move_large_inputs(self, submit: TaskSubmit) -> TaskSubmit:
        large = {fd: text for fd, text in submit.inputs.items() if len(text.encode()) > self.inline_input_bytes}
        if not large:
            return submit
        store = await self._store(subjects.TASK_INPUT_BUCKET)
        refs = dict(submit.input_refs)
        for fd, text in large.items():
            name = f"{submit.task_id}/input/{fd}"
            await store.put(name, text.encode())
            refs[fd] = name
        inputs = {fd: t for fd, t in submit.inputs.items() if fd not in large}
        return msgspec.structs.replace(submit, inputs=inputs, input_refs=refs)

    async def _store(self, bucket: str = subjects.TASK_DATA_BUCKET) -> Any:
        """The object store ``bucket`` (results: ``tandem_task_data``; inputs: ``tandem_task_inputs``), opened once."""
        if bucket not in self._objects:
            self._objects[bucket] = await open_object_store(self.bus, bucket)
        return self._objects[bucket]

    async def _object(self, name: str) -> bytes:
        try:
            return (await (await self._store()).get(name)).data
        except nats.errors.Error as exc:
            raise BusError(f"cannot read {name} from {subjects.TASK_DATA_BUCKET}: {exc}") from exc
