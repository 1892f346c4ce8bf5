"""Task actor: the task loop of design note 003 — durable, cancellable, deadline-bound tasks.

A client publishes a :class:`~tandem.messages.TaskSubmit` to the JetStream work-queue
stream ``TANDEM_TASKS`` (subject ``tandem.task.submit``, ``Nats-Msg-Id`` = task id, so a
retried submission runs once). Every replica of this actor pulls from the one durable
consumer ``tandem_task``:

* explicit ack when the task has ended, ``in_progress`` every ``ack_wait / 3`` while it runs;
  a replica that dies stops heartbeating and JetStream redelivers the task to another one
  after ``ack_wait``; delivery ``max_attempts + 1`` dead-letters it
  (``tandem.events.dead_letter.task`` and status ``dead_lettered``), never silently;
* the state lives in the KV bucket ``tandem_tasks`` (one key per task, revision-checked
  updates): status, plan, the executor's checkpoint after every finished step, result,
  error. A redelivered task continues from there: a chosen plan is not planned again and
  finished steps — ``manual_transform`` model calls included — are not run again;
* one absolute deadline per task (``TaskSubmit.deadline`` or ``task.timeout_s`` from the
  first take) bounds every hop: requests carry it in the ``Tandem-Deadline`` header;
* ``tandem.task.cancel`` marks the task in KV and broadcasts ``tandem.task.cancel_signal``;
  the replica holding it cancels its scope, and ``tandem.control.cancel`` makes every actor
  drop in-flight work of that task (the router's HTTP call to the model included);
* approval questions go out as ``tandem.events.task.awaiting_approval.<id>`` and answers
  come back on ``tandem.task.answer`` from any client, parsed by the choice parser.

Inputs and results too large for a message go through the object store ``tandem_task_data``.
The whole task is one trace (the submitter's ``traceparent`` travels in the stream
message, so a redelivery joins the same trace) with an ``invoke_agent task`` span.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, ClassVar

import anyio
import anyio.abc
import msgspec
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import Status, StatusCode

from tandem.messages import (
    TERMINAL,
    Ack,
    ErrorReply,
    ExecutionPlan,
    RunCheckpoint,
    StepCheckpoint,
    StepOutcome,
    TaskAnswer,
    TaskAnswerReply,
    TaskCancel,
    TaskEvent,
    TaskGet,
    TaskList,
    TaskListReply,
    TaskReply,
    TaskResult,
    TaskState,
    TaskSubmit,
    TaskSummary,
    decode_error_path,
    decoder,
    encode,
    subjects,
    utcnow,
)
from tandem.messages.control import CancelWork
from tandem.services.approval import Approval, approve_plan
from tandem.services.bus import Bus, deadline_scope
from tandem.services.bus._tracing import HopAttributes, activate, deactivate, start_process_from
from tandem.services.config import Config, TaskLoopConfig
from tandem.services.tasks import Inbox, open_object_store
from tandem.services.errors import BadRequest, BusError, RemoteError, RequestTimeout, TandemError

from ._base import Actor, DeadLetter, Endpoint
from ._task_flow import Rejected, run_flow

__all__ = ["TaskActor", "TaskStore", "ensure_task_stream"]

log = logging.getLogger("tandem.task")
tracer = trace.get_tracer("tandem.task")

_submit_decoder = decoder(TaskSubmit)
_answer_decoder = decoder(TaskAnswer)
_checkpoint_decoder = decoder(StepCheckpoint)
_state_decoder = msgspec.json.Decoder(TaskState)


class TaskNotFound(TandemError):
    """Raised when no task has the given id."""

    code = "not_found"


class TaskConflict(TandemError):
    """Raised when a request does not fit the task's status (cancelling a finished task …)."""

    code = "conflict"


async def ensure_task_stream(bus: Bus, loop: TaskLoopConfig) -> None:
    """Create (or update) the stream ``TANDEM_TASKS`` and its durable consumer ``tandem_task``.

    Raises
    ------
    BusError
        When JetStream is not available.
    """
    js = bus.jetstream
    stream = StreamConfig(
        name=subjects.TASK_STREAM, subjects=[subjects.TASK_SUBMIT], retention=RetentionPolicy.WORK_QUEUE,
        max_msgs=loop.max_queued, max_msg_size=loop.max_submit_bytes, discard=DiscardPolicy.NEW,
        duplicate_window=120.0, max_age=loop.retention_s, num_replicas=bus.replicas,
    )
    consumer = ConsumerConfig(
        durable_name=subjects.TASK_CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=loop.ack_wait_s,
        max_deliver=loop.max_attempts + 1, max_ack_pending=max(1000, loop.concurrency * 8),
        filter_subject=subjects.TASK_SUBMIT,
    )
    try:
        try:
            await js.stream_info(subjects.TASK_STREAM)
            await js.update_stream(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(stream)
        await js.add_consumer(subjects.TASK_STREAM, consumer)
    except nats.errors.Error as exc:
        raise BusError(f"cannot set up the task stream {subjects.TASK_STREAM} (is JetStream enabled?): {exc}") from exc


class TaskStore:
    """Task states in the KV bucket ``tandem_tasks``; bulky data in the object store ``tandem_task_data``.

    Every write is revision-checked: :meth:`update` re-reads and re-applies its change on a
    conflict, so concurrent writers (the replica running the task, a cancel request) never
    lose each other's changes.
    """

    def __init__(self, bus: Bus, loop: TaskLoopConfig) -> None:
        self.bus = bus
        self.loop = loop
        self._kv: Any = None
        self._objects: Any = None
        self._inputs: Any = None
        self._known: dict[str, tuple[TaskState, int]] = {}  # last state and revision this replica wrote
        self._known_max = max(256, loop.concurrency * 4)
        self._locks: dict[str, anyio.Lock] = {}  # task id -> its writes here take turns (only while one is under way)

    async def open(self) -> TaskStore:
        """Open (creating when missing) the KV bucket and the object store."""
        self._kv = await self.bus.key_value(subjects.TASK_BUCKET, ttl=self.loop.retention_s)
        self._objects = await open_object_store(self.bus, subjects.TASK_DATA_BUCKET, ttl=self.loop.retention_s)
        self._inputs = await open_object_store(self.bus, subjects.TASK_INPUT_BUCKET, ttl=self.loop.retention_s)
        return self

    async def get(self, task_id: str) -> tuple[TaskState, int] | None:
        """Return the state and its revision, or ``None`` for an unknown task."""
        try:
            entry = await self._kv.get(task_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return _state_decoder.decode(entry.value), entry.revision

    def cached(self, task_id: str) -> tuple[TaskState, int] | None:
        """The state and revision this replica last wrote for ``task_id`` (``None`` if none is kept)."""
        return self._known.get(task_id)

    def forget(self, task_id: str) -> None:
        """Drop the cached revision of a task this replica no longer holds."""
        self._known.pop(task_id, None)

    async def create(self, state: TaskState) -> bool:
        """Store a new task; ``False`` when the id exists already."""
        try:
            revision = await self._kv.create(state.task_id, await self._encode(state))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self._remember(state.task_id, state, revision, replace=False)  # a write of its own may have come first
        return True

    async def update(self, task_id: str, change: Callable[[TaskState | None], TaskState | None], *,
                     absent: bool = False, locked: bool = False) -> TaskState | None:
        """Apply ``change`` to the current state (``None`` if absent) and store its result.

        ``change`` returning ``None`` writes nothing. Retries on a revision conflict. With
        ``absent`` (the state is most likely not written yet), the first try creates it without
        reading it first; a state that exists after all is read and the change applied to it.
        This replica's writes of one task take turns (:meth:`writing`; ``locked``: the caller holds
        the turn), so each starts from the revision the one before stored.

        Returns
        -------
        TaskState or None
            What is stored now.
        """
        if locked:
            return await self._update(task_id, change, absent)
        async with self.writing(task_id):
            return await self._update(task_id, change, absent)

    async def settled(self, task_id: str) -> None:
        """Wait until no write of ``task_id`` is under way here (its newest state is :meth:`cached`)."""
        if (lock := self._locks.get(task_id)) is not None and lock.locked():
            async with self.writing(task_id):
                pass

    @asynccontextmanager
    async def writing(self, task_id: str) -> AsyncIterator[None]:
        """Hold the turn of this replica's writes of ``task_id`` (what :meth:`update` takes; ``locked=True``
        inside)."""
        lock = self._locks.get(task_id)
        if lock is None:
            # fast_acquire: an uncontended turn does not yield to the event loop first (each write that follows
            # is a KV round trip that yields anyway)
            lock = self._locks[task_id] = anyio.Lock(fast_acquire=True)
        try:
            async with lock:
                yield
        finally:  # entries live only while used
            if not lock.locked() and not lock.statistics().tasks_waiting and self._locks.get(task_id) is lock:
                del self._locks[task_id]

    async def _update(self, task_id: str, change: Callable[[TaskState | None], TaskState | None],
                      absent: bool) -> TaskState | None:
        for attempt in range(50):
            # the holder of a task is nearly always the last writer: try its cached revision first
            current = self._known.get(task_id) or (None if absent and attempt == 0 else await self.get(task_id))
            state, revision = current if current is not None else (None, 0)
            new = change(state)
            if new is None:
                return state
            new = msgspec.structs.replace(new, updated_at=utcnow())
            try:
                if current is None:
                    revision = await self._kv.create(task_id, await self._encode(new))
                else:
                    revision = await self._kv.update(task_id, await self._encode(new), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._known.pop(task_id, None)  # someone wrote in between: read again, apply again
                continue
            self._remember(task_id, new, revision)
            return new
        raise BusError(f"task {task_id}: state kept changing under 50 updates")

    def _remember(self, task_id: str, state: TaskState, revision: int, *, replace: bool = True) -> None:
        if not replace and task_id in self._known:
            return
        self._known[task_id] = (state, revision)
        if len(self._known) > self._known_max:  # bounded: the oldest entry goes (dicts keep insertion order)
            self._known.pop(next(iter(self._known)))

    async def list(self, limit: int, status: str | None) -> list[TaskSummary]:
        """Return up to ``limit`` tasks, newest first (``status`` filters)."""
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        states = []
        for key in keys[-5000:]:
            found = await self.get(key)
            if found is not None and (status is None or found[0].status == status):
                states.append(found[0])
        states.sort(key=lambda s: s.submitted_at, reverse=True)
        return [TaskSummary(task_id=s.task_id, status=s.status, task=s.task[:200], submitted_at=s.submitted_at,
                            updated_at=s.updated_at) for s in states[:limit]]

    async def put_object(self, name: str, data: bytes) -> str:
        await self._objects.put(name, data)
        return name

    async def get_object(self, name: str) -> bytes:
        try:
            return (await self._objects.get(name)).data
        except nats.js.errors.NotFoundError as exc:
            raise TaskNotFound(f"object {name} is gone from {subjects.TASK_DATA_BUCKET}") from exc

    async def get_input(self, task_id: str, name: str) -> bytes:
        """Read an input a client put in ``tandem_task_inputs``; only the task's own (``<task_id>/input/...``).

        Raises
        ------
        BadRequest
            When ``name`` names another task's object.
        TaskNotFound
            When the object is gone.
        """
        if not name.startswith(f"{task_id}/input/"):
            raise BadRequest(f"input_refs: {name!r} is not an input of task {task_id} ({task_id}/input/<fd>)")
        try:
            return (await self._inputs.get(name)).data
        except nats.js.errors.NotFoundError as exc:
            raise TaskNotFound(f"object {name} is gone from {subjects.TASK_INPUT_BUCKET}") from exc

    async def _encode(self, state: TaskState) -> bytes:
        data = encode(state)
        if len(data) <= self.loop.max_state_bytes:
            return data
        if state.result is not None and state.result.outputs:  # the bulky part: keep it beside the state
            ref = await self.put_object(f"{state.task_id}/result", encode(state.result))
            state = msgspec.structs.replace(state, result=msgspec.structs.replace(state.result, outputs=[]),
                                            result_ref=ref)
            data = encode(state)
        if len(data) > self.loop.max_state_bytes and state.checkpoint is not None:
            log.warning("task %s: checkpoint of %d bytes exceeds task.max_state_bytes; a redelivery re-runs "
                        "from the previous one", state.task_id, len(encode(state.checkpoint)))
            data = encode(msgspec.structs.replace(state, checkpoint=None))
        return data


PENDING_GRACE_S = 0.05
"""Seconds a submission seen while a pull waits here goes unrecorded, in case it is taken here (``_record_pending``)."""

CHECKPOINT_QUIET_S = 0.2
"""Seconds without a newer checkpoint after which the newest checkpoint of a built-in step is stored."""

CHECKPOINT_BUFFER = 64
"""Checkpoints of one running task held for it (:meth:`TaskActor._follow_checkpoints`) before the replica's one
checkpoint subscription waits for that task (a plan's steps send one each at most, and the executor waits for
the durable ones)."""


_QUIET: Any = object()
"""What :meth:`TaskActor._follow_checkpoints` gets when no checkpoint came before the quiet store was due."""


def _newest(stored: RunCheckpoint | None, other: RunCheckpoint | None) -> RunCheckpoint | None:
    """The checkpoint covering more steps (``stored`` on a tie)."""
    if other is None or (stored is not None and len(stored.steps) >= len(other.steps)):
        return stored
    return other


class _Progress:
    """One running task's checkpoints as the replica holding it follows them.

    ``announced`` counts the steps announced as events, ``stored`` those the stored checkpoint
    covers; ``unstored`` is the newest checkpoint not stored yet (a built-in step's, waiting out
    :data:`CHECKPOINT_QUIET_S`), which the task's final write takes along.
    """

    def __init__(self, state: TaskState) -> None:
        self.announced = self.stored = len(state.checkpoint.steps) if state.checkpoint else 0
        self.unstored: RunCheckpoint | None = None
        self.announcing = anyio.Lock(fast_acquire=True)  # one announcer at a time: steps go out in order, once each

    def note_stored(self, cp: RunCheckpoint) -> None:
        self.stored = max(self.stored, len(cp.steps))
        if self.unstored is not None and len(self.unstored.steps) <= self.stored:
            self.unstored = None

    def note_unstored(self, cp: RunCheckpoint) -> bool:
        """Keep ``cp`` to store later; ``False`` when a stored or kept one covers as many steps."""
        if len(cp.steps) <= max(self.stored, len(self.unstored.steps) if self.unstored else 0):
            return False
        self.unstored = cp
        return True

    def note_announced(self, steps: int) -> None:
        self.announced = max(self.announced, steps)


class _Follower:
    """Where the checkpoints of a task running here go; ``start`` starts the task following them (``None`` once
    started, or once the flow has ended)."""

    __slots__ = ("inbox", "start")

    def __init__(self, inbox: Inbox, start: Callable[[], object] | None) -> None:
        self.inbox = inbox
        self.start = start


class _Beat:
    """A delivery running here: :meth:`TaskActor._keep_alive` heartbeats it, and cancels it when that fails."""

    __slots__ = ("failed", "msg", "scope")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.scope = anyio.CancelScope()
        self.failed: Exception | None = None


class TaskActor(Actor):
    """Serve the task loop: the pull consumer of ``TANDEM_TASKS`` and ``tandem.task.*``.

    Parameters
    ----------
    bus : Bus
    config : Config
        ``task`` (deadline, redelivery, concurrency, size limits) and ``nats.request_timeout_s``.
    """

    name = "task"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (
        subjects.ROUTER_SHAPE, subjects.PLANNER_PLAN, subjects.EXECUTOR_EXECUTE,
        subjects.CHOICE_PARSE, subjects.task_answer_inbox("*"), subjects.TASK_CANCEL_SIGNAL, subjects.CONTROL_CANCEL)
    publishes: ClassVar[tuple[str, ...]] = (subjects.EVENT_TASK_ALL,)
    listens: ClassVar[tuple[str, ...]] = (subjects.task_answer_inbox("*"), "tandem.task.checkpoint.>")
    # the plan cache: plans that ran, under their fingerprints (one-token keys), never a recipe (recipe.<name>)
    jetstream: ClassVar[tuple[str, ...]] = (f"stream {subjects.TASK_STREAM}", f"kv {subjects.TASK_BUCKET}",
                                            f"objects {subjects.TASK_DATA_BUCKET}", f"objects {subjects.TASK_INPUT_BUCKET}",
                                            "kv {config.plan_cache_bucket} write *")
    public: ClassVar[tuple[str, ...]] = (subjects.TASK_GET, subjects.TASK_LIST, subjects.TASK_CANCEL, subjects.TASK_ANSWER)

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.loop = config.task
        self.store = TaskStore(bus, config.task)
        self._running: dict[str, anyio.CancelScope] = {}
        self._recording: dict[str, anyio.Event] = {}  # task id -> set once its pending state is written (or not)
        self._taking: dict[str, anyio.Event] = {}  # task id -> set when taken here before its pending state was written
        self._fetching = False  # a pull for the next task is outstanding
        self._to_cache: dict[str, tuple[str, ExecutionPlan]] = {}  # task id -> (fingerprint, plan) to cache at its end
        self._plans: Any = None  # the plan cache bucket, opened on first use
        self._caching: dict[str, anyio.Event] = {}  # task id -> set once its plan is written to the cache (or not)
        # task id -> where its checkpoints go (one subscription for every task this replica runs: _on_checkpoint)
        self._followers: dict[str, _Follower] = {}
        self._beats: list[_Beat] = []  # the deliveries running here (_keep_alive)
        self._submit_hop: HopAttributes | None = None  # the process span's name and attributes (_deliver)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(subjects.TASK_GET, TaskGet, self.get, timeout=10),
            Endpoint(subjects.TASK_LIST, TaskList, self.list, timeout=30),
            Endpoint(subjects.TASK_CANCEL, TaskCancel, self.cancel, timeout=10),
            Endpoint(subjects.TASK_ANSWER, TaskAnswer, self.answer, timeout=60),
            Endpoint(subjects.TASK_CANCEL_SIGNAL, TaskCancel, self._cancel_signal, timeout=5, queue=False),
            # the submission as it is published (besides the stream): one replica records it as pending
            Endpoint(subjects.TASK_SUBMIT, TaskSubmit, self._record_pending, timeout=10, observe=True),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        await ensure_task_stream(self.bus, self.loop)
        await self.store.open()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the endpoints and pull tasks until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(super().run)
            tg.start_soon(self._keep_alive)
            # one subscription for the checkpoints of every task this replica runs (no subscribe and unsubscribe
            # per task); it is in place before any task is pulled, so before any plan is sent to the executor
            checkpoints = await self.bus.subscribe(self.checkpoint_subject(None), cb=self._on_checkpoint,
                                                   direct=self._on_checkpoint_nowait)
            try:
                psub = await self.bus.jetstream.pull_subscribe_bind(durable=subjects.TASK_CONSUMER,
                                                                    stream=subjects.TASK_STREAM)
                task_status.started()
                try:
                    await self._consume(psub, tg)
                finally:
                    await self.bus.unsubscribe(psub)
            finally:
                await self.bus.unsubscribe(checkpoints)

    def _checkpoints_of(self, task_id: str) -> Inbox | None:
        """The checkpoint inbox of a task running here (its follower started with the first checkpoint), or
        ``None``."""
        follower = self._followers.get(task_id)
        if follower is None:
            return None
        if (start := follower.start) is not None:
            follower.start = None
            start()
        return follower.inbox

    def _on_checkpoint_nowait(self, msg: Msg) -> bool:
        """Hand a checkpoint to its task's follower in nats-py's read loop; ``False`` leaves it to
        :meth:`_on_checkpoint` (no follower here, or its buffer is full)."""
        inbox = self._checkpoints_of(msg.subject.rpartition(".")[2])
        return inbox is not None and inbox.offer(msg)

    async def _on_checkpoint(self, msg: Msg) -> None:
        """A checkpoint :meth:`_on_checkpoint_nowait` could not hand over: wait for room in its task's buffer, or
        answer one the executor waits for with ``not_found`` when the task does not run here (it has ended: the
        executor goes on, as when nobody listened on the task's own checkpoint subject before)."""
        task_id = msg.subject.rpartition(".")[2]
        inbox = self._checkpoints_of(task_id)
        if inbox is not None:
            await inbox.put(msg)
            return
        if msg.reply:
            try:
                await self.bus.respond(msg, ErrorReply(code="not_found", message=f"task {task_id} does not run on "
                                                       f"{self.name} {self.instance_id}", correlation_id=task_id))
            except TandemError as exc:
                log.warning("task %s: a checkpoint for it could not be answered: %s", task_id, exc)

    # ------------------------------------------------------------------ requests

    async def get(self, request: TaskGet) -> TaskReply:
        """Return the state of one task.

        Raises
        ------
        TaskNotFound
        """
        found = await self.store.get(request.task_id)
        if found is None:
            raise TaskNotFound(f"no task {request.task_id}")
        return TaskReply(state=found[0], correlation_id=request.correlation_id)

    async def list(self, request: TaskList) -> TaskListReply:
        """Return the most recent tasks, newest first."""
        return TaskListReply(tasks=await self.store.list(request.limit, request.status),
                             correlation_id=request.correlation_id)

    async def cancel(self, request: TaskCancel) -> TaskReply:
        """Stop a task wherever it is; reply with its state once it has stopped (within a few seconds).

        Raises
        ------
        TaskNotFound
        TaskConflict
            When the task has already ended.
        """
        task_id = request.task_id
        found = await self.store.get(task_id)
        if found is None:
            raise TaskNotFound(f"no task {task_id}")
        if found[0].status in TERMINAL:
            raise TaskConflict(f"task {task_id} has already {found[0].status.replace('_', ' ')}; nothing to cancel")

        def mark(state: TaskState | None) -> TaskState | None:
            if state is None or state.status in TERMINAL:
                return None
            if not state.worker:  # queued, nobody holds it: cancelled right here
                return msgspec.structs.replace(state, cancel_requested=True, status="cancelled")
            return msgspec.structs.replace(state, cancel_requested=True)

        state = await self.store.update(task_id, mark)
        if state is not None and state.status == "cancelled" and not state.worker:
            await self.announce(state, "cancelled", "cancelled while queued")
        else:
            await self.bus.publish(subjects.TASK_CANCEL_SIGNAL, TaskCancel(task_id=task_id))
            await self.bus.publish(subjects.CONTROL_CANCEL, CancelWork(correlation_id=task_id))
            with anyio.move_on_after(5):
                while state is not None and state.status not in TERMINAL:
                    await anyio.sleep(0.02)
                    found = await self.store.get(task_id)
                    state = found[0] if found else None
        assert state is not None
        return TaskReply(state=state, correlation_id=request.correlation_id)

    async def answer(self, request: TaskAnswer) -> TaskAnswerReply:
        """Pass a free-text answer to the replica holding the task, which parses it.

        Raises
        ------
        TaskNotFound
        TaskConflict
            When the task is not awaiting approval.
        """
        found = await self.store.get(request.task_id)
        if found is None:
            raise TaskNotFound(f"no task {request.task_id}")
        if found[0].status != "awaiting_approval":
            raise TaskConflict(f"task {request.task_id} is {found[0].status.replace('_', ' ')}, "
                               "not awaiting approval")
        return await self.bus.request(subjects.task_answer_inbox(request.task_id), request, TaskAnswerReply,
                                      timeout=55)

    async def _record_pending(self, submit: TaskSubmit) -> None:
        """Create the state of a task just submitted (``pending``), so a queued task can be read and
        cancelled; a state that exists already (a retried submission, a task taken at once) is kept.

        Written here rather than by the client, which may not write task states (issue 15: a
        client able to write the bucket could forge any task's state). While this replica waits
        for a task (a pull is outstanding), the submission is most likely delivered here within
        moments: for up to :data:`PENDING_GRACE_S` the write waits for that, and a task taken
        here meanwhile gets its state written once, by the take (one KV write less per task
        when replicas are idle); a task not taken here by then is recorded as before. The submission is a
        JetStream publish whose reply subject belongs to the stream's acknowledgement, so this
        handler never answers, and a failure is logged rather than replied.
        """
        if submit.task_id in self._running:
            return  # the stream delivered it here first: its take writes the state
        if self._fetching:  # a pull is waiting here: if the task is delivered here, the take writes the state once
            taken = self._taking[submit.task_id] = anyio.Event()
            try:
                with anyio.move_on_after(PENDING_GRACE_S):
                    await taken.wait()
            finally:
                if self._taking.get(submit.task_id) is taken:
                    del self._taking[submit.task_id]
            if taken.is_set():
                return
        done = self._recording.setdefault(submit.task_id, anyio.Event())
        try:
            await self.store.create(TaskState(task_id=submit.task_id, task=submit.task[:2000],
                                              conversation_id=submit.conversation_id, submitted_at=submit.sent_at))
        except (TandemError, nats.errors.Error) as exc:  # the take creates the state when this one could not
            log.warning("task %s: pending state not recorded: %s", submit.task_id, exc)
        finally:
            done.set()
            if self._recording.get(submit.task_id) is done:
                del self._recording[submit.task_id]

    async def _cancel_signal(self, request: TaskCancel) -> None:
        scope = self._running.get(request.task_id)
        if scope is not None:
            scope.cancel()

    # ------------------------------------------------------------------ FlowHost

    async def transition(self, state: TaskState, **changes: object) -> TaskState:
        """Record ``changes`` (revision-checked); a cancel that came in between cancels the task."""
        def apply(current: TaskState | None) -> TaskState:
            base = current or state
            return msgspec.structs.replace(base, **changes)

        new = await self.store.update(state.task_id, apply)
        assert new is not None
        if self._cancel_if_requested(new):
            await anyio.lowlevel.checkpoint()
        return new

    def _cancel_if_requested(self, state: TaskState) -> bool:
        """Cancel the task's scope when its state says a cancel came in (written by any replica)."""
        if state.cancel_requested and (scope := self._running.get(state.task_id)) is not None:
            scope.cancel()
            return True
        return False

    async def _store_checkpoint(self, state: TaskState, cp: RunCheckpoint) -> TaskState:
        """Store ``cp`` unless the stored checkpoint already covers more steps (writes may race)."""
        def newer(current: TaskState | None) -> TaskState | None:
            base = current or state
            if base.checkpoint is not None and len(base.checkpoint.steps) >= len(cp.steps):
                return None
            return msgspec.structs.replace(base, checkpoint=cp)

        new = await self.store.update(state.task_id, newer) or state
        self._cancel_if_requested(new)
        return new

    async def announce(self, state: TaskState, kind: str, detail: str = "", **fields: Any) -> None:
        """Publish ``tandem.events.task.<kind>.<id>``; a terminal one carries ``state`` (the stored final state)."""
        if state.status in TERMINAL:
            fields["state"] = state
        with anyio.CancelScope(shield=True):
            await self.bus.publish(
                subjects.event_task(kind, state.task_id),
                TaskEvent(task_id=state.task_id, kind=kind, status=state.status, detail=detail[:2000],
                          correlation_id=state.task_id, conversation_id=state.conversation_id, **fields),
                template=subjects.EVENT_TASK)

    async def approve(self, state: TaskState, plan: ExecutionPlan, question: str) -> Approval:
        """Ask for approval; read answers from this task's answer inbox (:func:`approve_plan`, 3 answers at most).

        Each question goes out as an ``awaiting_approval`` event; each answer gets a
        :class:`TaskAnswerReply` saying what it was read as (and the next question when unclear).

        Raises
        ------
        Rejected
            When the plan was rejected, or no answer was clear.
        """
        sub = await self.bus.subscribe(subjects.task_answer_inbox(state.task_id))
        await self.bus.flush()
        waiting: list[Msg] = []  # the answer whose reading is not replied yet
        current = state

        async def approver(text: str) -> str:
            nonlocal current
            if waiting:  # the previous answer was unclear: tell its sender, ask again
                await self.bus.respond(waiting.pop(), TaskAnswerReply(decision="unclear", question=text))
                current = await self.transition(current, question=text)
            await self.announce(current, "awaiting_approval", "approval needed", question=text, plan=plan,
                                total_steps=len(plan.workflow))
            async for msg in sub.messages:
                try:
                    answer = _answer_decoder.decode(await self.bus.payload_of(msg))
                except TandemError as exc:
                    await self.bus.respond(msg, ErrorReply(code=exc.code, message=str(exc)))
                    continue
                except msgspec.DecodeError as exc:
                    message, path = decode_error_path(exc)
                    await self.bus.respond(msg, ErrorReply(code="bad_request", message=message, path=path))
                    continue
                waiting.append(msg)
                return answer.text
            raise AssertionError("the answer subscription ended")

        try:
            approval = await approve_plan(self.bus, plan, approver, correlation_id=state.task_id,
                                          conversation_id=state.conversation_id)
            decided = approval.decision in ("approved", "partial") and approval.plan is not None
            if waiting:
                await self.bus.respond(waiting.pop(), TaskAnswerReply(
                    decision=approval.decision if decided or approval.decision == "rejected" else "unclear"))
        finally:
            await self.bus.unsubscribe(sub)
        if not decided:
            raise Rejected(approval)
        return approval

    def checkpoint_subject(self, state: TaskState | None) -> str:
        """``tandem.task.checkpoint.<replica>.<task id>`` (``None``: every task's, the replica's subscription)."""
        return f"tandem.task.checkpoint.{self.instance_id}.{'*' if state is None else state.task_id}"

    async def remember(self, state: TaskState, plan: ExecutionPlan) -> None:
        """Cache ``plan`` (it ran) under ``state.plan_fingerprint`` with the task's final write.

        The task actor writes the plan cache itself, at the same time as the task's end
        (:meth:`_record`), and the ``succeeded`` event goes out once both are written: the next
        task with the same fingerprint finds the plan, as when ``tandem.planner.remember`` was
        asked before the end, without that request and a write in a row on the task's path.
        """
        self._to_cache[state.task_id] = (state.plan_fingerprint, plan)

    async def _cache_plan(self, task_id: str, fingerprint: str, plan: ExecutionPlan, done: anyio.Event) -> None:
        """Write a plan that ran into the plan cache; a failed cache write never fails a task whose result is ready."""
        try:
            with anyio.fail_after(10):
                if self._plans is None:
                    self._plans = await self.bus.key_value(self.config.plan_cache_bucket)
                await self._plans.put(fingerprint, encode(plan))
        except (TandemError, nats.errors.Error, TimeoutError) as exc:
            log.warning("task %s: the plan ran but could not be cached: %s", task_id, exc)
        finally:
            done.set()

    # ------------------------------------------------------------------ the pull loop

    async def _consume(self, psub: Any, tg: anyio.abc.TaskGroup) -> None:
        slots = anyio.Semaphore(self.loop.concurrency, fast_acquire=True)  # the fetch that follows yields
        while True:
            await slots.acquire()
            try:
                self._fetching = True  # a pull is waiting: a task submitted now is likely delivered here
                try:
                    msgs = await psub.fetch(1, timeout=5)
                finally:
                    self._fetching = False
            except nats.errors.TimeoutError:
                slots.release()
                continue
            except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError) as exc:
                # JetStream is briefly away (a server restarting, a stream leader election): wait, not crash
                slots.release()
                log.info("task queue unavailable (%s); fetching again", type(exc).__name__)
                await anyio.sleep(0.5)
                continue
            except BaseException:
                slots.release()
                raise
            tg.start_soon(self._deliver, msgs[0], slots)

    async def _deliver(self, msg: Msg, slots: anyio.Semaphore) -> None:
        """Run one delivery of a submission; ack once the task has ended (or was dead-lettered).

        Its ``process`` span is a hop's (:func:`~tandem.services.bus._tracing.start_process_from`, the
        endpoints' path: parented on the submitter's context, attributes built once per actor), and a
        failed delivery records its error on it.
        """
        attempt = msg.metadata.num_delivered if msg.metadata else 1
        hop = self._submit_hop
        if hop is None:
            hop = self._submit_hop = HopAttributes("process", subjects.TASK_SUBMIT,
                                                   consumer_group=subjects.TASK_CONSUMER, actor=self.name)
        headers = msg.headers
        span = start_process_from(hop, lambda: hop.build(subject=msg.subject, message_id=headers.get(
            "Nats-Msg-Id", "") if headers else ""), headers, provider=self.bus.tracer_provider)
        try:
            token = activate(span)
            try:
                submit: TaskSubmit | None = None
                try:
                    submit = _submit_decoder.decode(msg.data)
                except (msgspec.DecodeError, RecursionError) as exc:
                    text, path = decode_error_path(exc) if isinstance(exc, msgspec.DecodeError) else (
                        "nesting too deep", None)
                    await self._dead_letter(msg, None, f"malformed submission: {text}", path)
                if submit is not None and attempt > self.loop.max_attempts:
                    await self._dead_letter(msg, submit, f"exhausted {self.loop.max_attempts} deliveries")
                elif submit is not None:
                    beat = _Beat(msg)
                    self._beats.append(beat)  # in_progress every ack_wait / 3 while it runs (_keep_alive)
                    try:
                        with beat.scope:
                            await self._run_task(submit, attempt)
                    finally:
                        self._beats.remove(beat)
                    if beat.failed is not None:
                        raise beat.failed
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            finally:
                deactivate(token)
                span.end()
            await msg.ack()
        except Exception:
            # not acked: JetStream redelivers after ack_wait, and the last delivery dead-letters it
            log.exception("task delivery %s failed; it will be redelivered", attempt)
        finally:
            slots.release()

    async def _keep_alive(self) -> None:
        """Every ``ack_wait / 3`` seconds, tell JetStream that each delivery running here is in progress.

        One loop for every delivery (not a task beside each): a delivery whose ``in_progress`` fails is
        cancelled and fails with that error (not acknowledged: redelivered), as when it had its own.
        """
        while True:
            await anyio.sleep(self.loop.ack_wait_s / 3)
            for beat in list(self._beats):
                try:
                    await beat.msg.in_progress()
                except Exception as exc:  # noqa: BLE001 - the delivery fails with it (_deliver re-raises)
                    beat.failed = exc
                    beat.scope.cancel()

    async def _dead_letter(self, msg: Msg, submit: TaskSubmit | None, reason: str, path: str | None = None) -> None:
        task_id = submit.task_id if submit else (msg.headers or {}).get("Nats-Msg-Id", "")
        log.warning("task %s dead-lettered: %s", task_id or "?", reason)
        error = ErrorReply(code="dead_lettered", message=reason, path=path, correlation_id=task_id or "")
        await self.bus.publish(f"tandem.events.dead_letter.{self.name}", DeadLetter(
            subject=msg.subject, error=reason, path=path, payload=msg.data[:64 * 1024].decode("utf-8", "replace"),
            correlation_id=task_id or ""))
        if submit is None:
            return
        state = await self.store.update(task_id, lambda s: msgspec.structs.replace(
            s or TaskState(task_id=task_id, task=submit.task[:2000], conversation_id=submit.conversation_id),
            status="dead_lettered", error=error) if s is None or s.status not in TERMINAL else None)
        if state is not None and state.status == "dead_lettered":
            await self.announce(state, "dead_lettered", reason, error=error)

    async def _take(self, submit: TaskSubmit, attempt: int, trace_id: str,
                    ) -> tuple[TaskState, Callable[[TaskState | None], TaskState | None] | None]:
        """Record that this replica holds the task (creating its state on the first delivery; the first
        delivery's trace id is kept, a redelivery joins that trace anyway).

        Returns the taken state and, for a task taken as it was submitted (nothing stored for it
        yet), the change still to write (:meth:`_write_take`), else ``None``.
        """
        def take(state: TaskState | None) -> TaskState | None:
            if state is not None and state.status in TERMINAL:
                return None
            deadline = (state.deadline if state and state.deadline else
                        submit.deadline or time.time() + self.loop.timeout_s)
            base = state or TaskState(task_id=submit.task_id, task=submit.task[:2000],
                                      conversation_id=submit.conversation_id, submitted_at=submit.sent_at)
            return msgspec.structs.replace(base, worker=self.instance_id, attempts=attempt, deadline=deadline,
                                           trace_id=base.trace_id or trace_id)

        if attempt == 1 and (taking := self._taking.pop(submit.task_id, None)) is not None:
            # its pending state waits for this take (_record_pending), so nothing is stored for it (a cancel
            # finds no task): the state is created by the take, while the flow starts (_run_task)
            taking.set()
            state = take(None)
            assert state is not None
            return state, take
        if (recording := self._recording.get(submit.task_id)) is not None:
            # its pending state is being written here: once written, its revision is known and the take
            # needs no read first (the write is a KV round trip already under way)
            with anyio.move_on_after(self.config.nats.request_timeout_s):
                await recording.wait()
        state = await self.store.update(submit.task_id, take)
        assert state is not None
        return state, None

    async def _write_take(self, task_id: str, take: Callable[[TaskState | None], TaskState | None],
                          scope: anyio.CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                          ) -> None:
        """Create the state of a task taken as it was submitted; started once this replica's later writes of the
        task wait for it. A state found after all that says the task has ended or is to be cancelled cancels it.

        Raises
        ------
        TandemError
            When the state cannot be written (the flow is cancelled; the task is redelivered).
        """
        async with self.store.writing(task_id):
            task_status.started()
            state = await self.store.update(task_id, take, absent=True, locked=True)
        if state is None or state.status in TERMINAL or state.cancel_requested:
            scope.cancel()

    async def _run_task(self, submit: TaskSubmit, attempt: int) -> None:
        task_id = submit.task_id
        scope = anyio.CancelScope()
        self._running[task_id] = scope  # before the take: a cancel from now on finds it
        try:
            with tracer.start_as_current_span(
                "invoke_agent task",
                attributes={G.GEN_AI_OPERATION_NAME: "invoke_agent", G.GEN_AI_AGENT_NAME: "task",
                            G.GEN_AI_PROVIDER_NAME: "tandem", "tandem.task.id": task_id,
                            "tandem.task.attempt": attempt,
                            **({G.GEN_AI_CONVERSATION_ID: submit.conversation_id} if submit.conversation_id else {})},
                record_exception=False, set_status_on_exception=False,
            ) as span:
                state, unwritten = await self._take(submit, attempt, format(span.get_span_context().trace_id, "032x"))
                if unwritten is not None:  # its state is created while the flow starts: one KV write off its path
                    async with anyio.create_task_group() as tg:
                        await tg.start(self._write_take, task_id, unwritten, scope)
                        await self.announce(state, "submitted", f"taken by {self.name} {self.instance_id}")
                        await self._supervise_flow(state, submit, scope, span)
                    return
                if state.status in TERMINAL:
                    span.set_attribute("tandem.task.duplicate", True)
                    return  # a duplicate delivery of a task that has ended
                if state.cancel_requested:
                    await self._finish(state, "cancelled", detail="cancelled before it started")
                    return
                if attempt == 1:
                    await self.announce(state, "submitted", f"taken by {self.name} {self.instance_id}")
                await self._supervise_flow(state, submit, scope, span)
        finally:
            self._running.pop(task_id, None)
            self.store.forget(task_id)

    async def _supervise_flow(self, state: TaskState, submit: TaskSubmit, scope: anyio.CancelScope,
                              span: trace.Span) -> None:
        """Run the flow under the task's deadline and cancel scope; record how it ended.

        The task's checkpoints are followed (:meth:`_follow_checkpoints`) by a task started with the first
        one: a plan whose checkpoints all go with the executor's reply (quick steps, a model step followed
        only by instant ones) needs none.
        """
        checkpoints = Inbox(CHECKPOINT_BUFFER)
        progress = _Progress(state)
        context = contextvars.copy_context()  # the follower's spans hang under the task's, as this code's do
        try:
            async with anyio.create_task_group() as tg:
                follower = self._followers[state.task_id] = _Follower(checkpoints, functools.partial(
                    context.run, tg.start_soon, self._follow_checkpoints, state, checkpoints, progress))
                try:
                    outcome = await self._outcome(state, submit, scope)
                finally:
                    follower.start = None  # the flow has ended: no follower starts any more
                if outcome[0] == "succeeded":
                    # the reply has every step: those no checkpoint announced yet (the executor sends none
                    # after the last ones; one sent before the reply may still be in flight) are announced
                    # from it, and stored with the end as the newest checkpoint
                    result: TaskResult = outcome[1]
                    await self._announce_steps(state, progress, result.steps)
                    known = self.store.cached(state.task_id)
                    plan = known[0].plan if known is not None else state.plan
                    progress.note_unstored(RunCheckpoint(
                        next_index=len(plan.workflow) if plan is not None else len(result.steps),
                        outputs=list(result.outputs), steps=list(result.steps)))
                tg.cancel_scope.cancel()
        finally:
            if (kept := self._followers.get(state.task_id)) is not None and kept.inbox is checkpoints:
                del self._followers[state.task_id]
            checkpoints.close()
        with anyio.CancelScope(shield=True):
            await self._record(state.task_id, outcome, span, progress.unstored)

    async def _outcome(self, state: TaskState, submit: TaskSubmit, scope: anyio.CancelScope) -> tuple[str, Any]:
        """Run the flow; return how it ended: succeeded, rejected, cancelled, deadline or failed (never raises
        but for the actor's own cancellation)."""
        try:
            with scope, deadline_scope(state.deadline):
                with anyio.CancelScope(deadline=anyio.current_time() + max(0.0, state.deadline - time.time())) as limit:
                    inputs = await self._inputs(submit)
                    return "succeeded", await run_flow(self, state, submit, inputs)
                if limit.cancelled_caught:
                    return "deadline", TimeoutError()
            return "cancelled", None
        except Rejected as rejected:
            return "rejected", rejected.approval
        except TimeoutError as exc:  # raised inside the flow (a NATS call timed out), not the task's deadline
            return "failed", RequestTimeout(f"a call timed out ({type(exc).__name__}: {exc or 'no detail'})")
        except TandemError as exc:
            if exc.code == "cancelled":
                # an actor answered "cancelled": only tandem.control.cancel for this task does that, and its
                # reply can overtake the cancel signal to this replica (another node of a cluster): a cancel
                return "cancelled", None
            return ("deadline" if exc.code == "deadline_exceeded" else "failed"), exc
        except Exception as exc:  # a bug: the task fails with the reason, the actor keeps serving
            log.exception("task %s failed unexpectedly", state.task_id)
            return "failed", exc

    async def _record(self, task_id: str, outcome: tuple[str, Any], span: trace.Span,
                      unstored: RunCheckpoint | None = None) -> None:
        """Record how the task ended, with ``unstored`` (the newest checkpoint not stored yet) in the same write."""
        cache = self._to_cache.pop(task_id, None)  # a plan that ran: cached however the task ends now
        if cache is None:
            await self._record_end(task_id, outcome, span, unstored)
            return
        cached = self._caching[task_id] = anyio.Event()  # the end's event waits for it (_finish)
        failed: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:  # the cache write goes along with the final one
                tg.start_soon(self._cache_plan, task_id, *cache, cached)
                try:
                    await self._record_end(task_id, outcome, span, unstored)
                except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped (a task group would wrap it)
                    failed.append(exc)
        finally:
            self._caching.pop(task_id, None)
        if failed:
            raise failed[0]

    async def _record_end(self, task_id: str, outcome: tuple[str, Any], span: trace.Span,
                          unstored: RunCheckpoint | None = None) -> None:
        kind, value = outcome
        found = self.store.cached(task_id) or await self.store.get(task_id)
        state = found[0] if found else TaskState(task_id=task_id)
        if unstored is not None:
            state = msgspec.structs.replace(state, checkpoint=_newest(state.checkpoint, unstored))
        if kind == "succeeded":
            await self._finish(state, "succeeded", result=value, detail=value.mode.replace("_", " "),
                               checkpoint=unstored)
        elif kind == "rejected":
            a: Approval = value
            result = TaskResult(mode="not_run", approval=a.decision, modifications=a.modifications,
                                fallback="; ".join(a.problems))
            if a.decision == "rejected":
                await self._finish(state, "cancelled", result=result, detail="plan rejected: nothing was run",
                                   checkpoint=unstored)
            else:
                await self._finish(state, "failed", result=result, error=ErrorReply(
                    code="approval_unclear", message="no clear approval: nothing was run", correlation_id=task_id),
                    checkpoint=unstored)
        elif kind == "cancelled":
            await self._finish(state, "cancelled", detail=f"cancelled while {state.status.replace('_', ' ')}",
                               checkpoint=unstored)
        else:
            if kind == "deadline":
                where = state.status.replace("_", " ")
                if state.status == "running" and state.checkpoint is not None and state.plan is not None:
                    nxt = state.checkpoint.next_index
                    if nxt < len(state.plan.workflow):
                        s = state.plan.workflow[nxt]
                        where += f", step {s.step} {s.__struct_config__.tag}"
                elif state.status == "running" and state.plan is not None and state.plan.workflow:
                    s = state.plan.workflow[0]
                    where += f", step {s.step} {s.__struct_config__.tag}"
                error = ErrorReply(code="deadline_exceeded", message=f"deadline passed while {where}",
                                   correlation_id=task_id)
            else:
                exc: Exception = value
                code = getattr(exc, "code", "internal") if isinstance(exc, TandemError) else "internal"
                message = exc.message if isinstance(exc, RemoteError) else str(exc) or type(exc).__name__
                error = ErrorReply(code=code, message=message, path=getattr(exc, "path", None), correlation_id=task_id)
            span.set_status(Status(StatusCode.ERROR, error.message))
            span.set_attribute("error.type", error.code)
            await self._finish(state, "failed", error=error, detail=error.message, checkpoint=unstored)

    async def _finish(self, state: TaskState, status: str, *, result: TaskResult | None = None,
                      error: ErrorReply | None = None, detail: str = "", checkpoint: RunCheckpoint | None = None,
                      ) -> None:
        def end(current: TaskState | None) -> TaskState | None:
            base = current or state
            if base.status in TERMINAL:
                return None
            return msgspec.structs.replace(base, status=status, result=result or base.result, error=error,
                                           question="", checkpoint=_newest(base.checkpoint, checkpoint))

        new = await self.store.update(state.task_id, end)
        if (cached := self._caching.get(state.task_id)) is not None:
            await cached.wait()  # a plan written to the cache meanwhile: the end is announced once it is there
        if new is not None and new.status == status:
            await self.announce(new, status, detail, error=error)

    async def _follow_checkpoints(self, state: TaskState, checkpoints: Inbox, progress: _Progress) -> None:
        """Announce each finished step at once; keep the executor's latest checkpoint in the state.

        A checkpoint the executor waits for (after a model step or a recovery) is stored at once.
        One it sends without waiting (after a built-in step: cheap and deterministic to run again)
        is stored once no newer checkpoint has come for :data:`CHECKPOINT_QUIET_S`, so quick steps
        cost no write of their own: the next stored checkpoint, or the task's final write
        (:meth:`_record`), covers them. A crash in between resumes from the checkpoint stored
        before, so it re-runs those built-in steps, never a model step. The quiet wait is this
        loop's own wait for the next checkpoint (no task beside it).
        """
        due = math.inf  # when the newest unstored checkpoint is stored, unless a newer one comes first
        while True:
            if due == math.inf:
                msg = await anext(checkpoints, None)
            else:
                msg = _QUIET
                with anyio.move_on_after(due - anyio.current_time()):
                    msg = await anext(checkpoints, None)
            if msg is None:
                return  # the inbox is closed: the flow has ended
            if msg is _QUIET:  # no newer checkpoint for CHECKPOINT_QUIET_S: store the newest one
                due = math.inf  # tried once: a newer checkpoint, or the task's end, comes next
                cp = progress.unstored
                if cp is not None and len(cp.steps) > progress.stored:
                    try:
                        state = await self._store_checkpoint(state, cp)
                        progress.note_stored(cp)
                    except TandemError as exc:  # the task goes on; a redelivery would re-run from an older one
                        log.warning("task %s: checkpoint not stored: %s", state.task_id, exc)
                continue
            try:
                cp = _checkpoint_decoder.decode(await self.bus.payload_of(msg)).checkpoint
            except (msgspec.DecodeError, TandemError) as exc:
                log.warning("task %s: unreadable checkpoint ignored: %s", state.task_id, exc)
                continue
            if msg.reply:  # after a model step the executor waits until it is stored
                try:
                    state = await self._store_checkpoint(state, cp)
                    progress.note_stored(cp)
                    await self.bus.respond(msg, Ack(correlation_id=state.task_id))
                except TandemError as exc:
                    await self.bus.respond(msg, ErrorReply(code=exc.code, message=str(exc)))
            elif progress.note_unstored(cp):
                due = anyio.current_time() + CHECKPOINT_QUIET_S
            await self._announce_steps(state, progress, cp.steps)

    async def _announce_steps(self, state: TaskState, progress: _Progress, steps: list[StepOutcome]) -> None:
        """Announce the finished steps of ``steps`` not announced yet, in order, once each (from a checkpoint
        or from the executor's reply, whichever comes first)."""
        async with progress.announcing:
            if len(steps) <= progress.announced:
                return
            await self.store.settled(state.task_id)  # the plan's write (running) comes first
            known = self.store.cached(state.task_id)
            current = known[0] if known is not None else state  # the status and plan the task has now
            total = len(current.plan.workflow) if current.plan else 0
            for outcome in steps[progress.announced:]:
                await self.announce(current, "step", outcome.detail, step=outcome, total_steps=total)
            progress.note_announced(len(steps))

    async def _inputs(self, submit: TaskSubmit) -> dict[int, str]:
        inputs = dict(submit.inputs)
        for fd, ref in submit.input_refs.items():
            inputs[fd] = (await self.store.get_input(submit.task_id, ref)).decode("utf-8")
        return inputs
