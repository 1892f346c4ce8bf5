"""Task loop messages: durable submission, state, control and events (design note 003, the task loop).

A task is submitted to the JetStream work-queue stream ``TANDEM_TASKS`` on
``tandem.task.submit`` with ``Nats-Msg-Id`` = task id (a retried submission runs once);
task-actor replicas pull it from one durable consumer. Its state lives in the KV bucket
``tandem_tasks`` under the task id::

    pending ─► planning ─► awaiting_approval ─► running ─► succeeded
       │          │               │                │   └──► failed
       └──────────┴───────────────┴────────────────┴──────► cancelled

(``dead_lettered``: a submission that could not be decoded, or exhausted its deliveries.)

Every step of the way is announced on ``tandem.events.task.<kind>.<task_id>`` as a
:class:`TaskEvent`; ``tandem.task.get|list|cancel|answer`` are request/reply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._base import ErrorReply, Message, new_id, utcnow
from .execution import Output, RunCheckpoint, StepOutcome
from .plan import ExecutionPlan

__all__ = [
    "TASK_ID_PATTERN",
    "TERMINAL",
    "IntentResult",
    "RunCheckpoint",
    "StepCheckpoint",
    "TaskAnswer",
    "TaskAnswerReply",
    "TaskCancel",
    "TaskEvent",
    "TaskGet",
    "TaskList",
    "TaskListReply",
    "TaskReply",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "TaskSubmit",
    "TaskSummary",
]

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A task id is one NATS subject token and one KV key: letters, digits, ``_`` and ``-``."""

TaskId = Annotated[str, Meta(pattern=TASK_ID_PATTERN)]

TaskStatus = Literal["pending", "planning", "awaiting_approval", "running", "succeeded", "failed", "cancelled",
                     "dead_lettered"]

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "dead_lettered"})
"""Statuses a task never leaves."""


class IntentResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the chat loop understood of a user message (design note 003, Step 1.1), computed once.

    Parameters
    ----------
    kind : {"direct_response", "task", "control", "answer"}
    text : str
        The part of the message the kind applies to (for ``task``: the task itself).
    reasoning : str
    confidence : float
        0–1.
    source : {"", "rules", "model", "fallback"}
        How it was understood: the chat loop's rules, the router's ``intent`` task, or a
        fallback when the model could not answer.
    command : str
        With ``control``: ``tasks``, ``cancel``, ``status``, ``history``, ``context``,
        ``policy``, ``set`` (``text`` holds its argument).
    """

    kind: Literal["direct_response", "task", "control", "answer"]
    text: str = ""
    reasoning: str = ""
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    source: str = ""
    command: str = ""


class TaskSubmit(Message, frozen=True, kw_only=True, tag="task_submit"):
    """Submit one task to the task loop (published to the stream ``TANDEM_TASKS``).

    Parameters
    ----------
    task_id : str
        Also the ``Nats-Msg-Id`` of the stream message and the KV key of the state
        (:data:`TASK_ID_PATTERN`).
    task : str
        The task in the user's words.
    inputs : dict of int to str
        Input texts (content, never paths) by fd: ``0`` stdin, ``3``… ``--input`` files.
    input_types : dict of int to str
        Type of each input (``markdown``, ``text`` …).
    input_refs : dict of int to str
        Inputs too large for a stream message: object names in the JetStream object store
        ``tandem_task_data``, by fd.
    mode : {"auto", "single_stage", "two_stage"}
    plan_only : bool
        Stop after planning (the plan is the result).
    plan : ExecutionPlan or None
        A saved plan to run (no planning).
    use_cache : bool
        ``False`` bypasses the plan cache.
    approval : {"none", "ask"}
        ``ask``: publish ``awaiting_approval`` and wait for a :class:`TaskAnswer` before
        running the plan.
    deadline : float
        Absolute deadline, Unix seconds; ``0`` takes ``task.timeout_s`` from the config,
        counted from when the task actor first takes the task.
    intent : IntentResult or None
        The chat loop's reading of the message, taken as given.
    """

    task_id: TaskId = msgspec.field(default_factory=new_id)
    task: Annotated[str, Meta(max_length=100_000)]
    inputs: dict[int, str] = {}
    input_types: dict[int, str] = {}
    input_refs: dict[int, str] = {}
    mode: Literal["auto", "single_stage", "two_stage"] = "auto"
    plan_only: bool = False
    plan: ExecutionPlan | None = None
    use_cache: bool = True
    approval: Literal["none", "ask"] = "none"
    deadline: Annotated[float, Meta(ge=0)] = 0.0
    intent: IntentResult | None = None


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished task produced.

    Parameters
    ----------
    mode : {"single_stage", "two_stage", "execute_plan", "plan_only", "not_run"}
    complexity : float
        The judged complexity (0–1).
    shape_reason : str
        Why it was planned or not.
    fallback : str
        Why it fell back to single stage (``""`` if it did not).
    plan_cached : bool
    planning_model : str
    outputs : list of Output
        The ``write_output`` texts, in order.
    steps : list of StepOutcome
        What happened to each step, in the order run.
    approval : {"", "approved", "partial", "rejected", "unclear"}
    approved_steps : list of int
    modifications : list of str
    recipe : str
        The vetted plan (recipe) the planner used, ``""`` when it wrote the plan itself.
    recipe_params : dict of str to str
        The values it filled in (e.g. ``{"from": "gfm", "to": "textile"}``).
    """

    mode: str
    complexity: float = 0.0
    shape_reason: str = ""
    fallback: str = ""
    plan_cached: bool = False
    planning_model: str = ""
    outputs: list[Output] = []
    steps: list[StepOutcome] = []
    approval: str = ""
    approved_steps: list[int] = []
    modifications: list[str] = []
    recipe: str = ""
    recipe_params: dict[str, str] = {}


class StepCheckpoint(Message, frozen=True, kw_only=True, tag="step_checkpoint"):
    """Sent by the executor to ``ExecuteRequest.checkpoint_subject`` after every finished step."""

    task_id: str
    checkpoint: RunCheckpoint


class TaskState(msgspec.Struct, frozen=True, kw_only=True):
    """One task's record in the KV bucket ``tandem_tasks`` (key: the task id).

    Parameters
    ----------
    task_id, task, conversation_id : str
    status : TaskStatus
    submitted_at, updated_at : datetime
    deadline : float
        Absolute deadline, Unix seconds (``0`` until the task actor takes the task).
    trace_id : str
        32-hex trace id of the task (``tandem trace <id>``).
    attempts : int
        Deliveries of the submission so far (> 1 after a replica died).
    worker : str
        Instance id of the task-actor replica that holds the task.
    plan : ExecutionPlan or None
        The plan (as approved, when approval was asked).
    checkpoint : RunCheckpoint or None
        Where execution stands; steps before ``next_index`` are not run again.
    question : str
        The pending approval question (``awaiting_approval``).
    result : TaskResult or None
    result_ref : str
        Object name in ``tandem_task_data`` when the result was too large for KV.
    error : ErrorReply or None
        Why it failed (``code`` e.g. ``deadline_exceeded``, ``step_failed``).
    cancel_requested : bool
    plan_fingerprint : str
        Plan-cache key of a freshly made plan, to cache it once it ran.
    """

    task_id: str
    task: str = ""
    conversation_id: str = ""
    status: TaskStatus = "pending"
    submitted_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)
    deadline: float = 0.0
    trace_id: str = ""
    attempts: int = 0
    worker: str = ""
    plan: ExecutionPlan | None = None
    checkpoint: RunCheckpoint | None = None
    question: str = ""
    result: TaskResult | None = None
    result_ref: str = ""
    error: ErrorReply | None = None
    cancel_requested: bool = False
    plan_fingerprint: str = ""


class TaskSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``tandem tasks``."""

    task_id: str
    status: TaskStatus
    task: str
    submitted_at: datetime
    updated_at: datetime


class TaskGet(Message, frozen=True, kw_only=True, tag="task_get"):
    """``tandem.task.get``: the state of one task (``not_found`` if unknown)."""

    task_id: TaskId


class TaskReply(Message, frozen=True, kw_only=True, tag="task_reply"):
    """The state of one task."""

    state: TaskState


class TaskList(Message, frozen=True, kw_only=True, tag="task_list"):
    """``tandem.task.list``: the most recent tasks, newest first."""

    limit: Annotated[int, Meta(ge=1, le=1000)] = 20
    status: TaskStatus | None = None


class TaskListReply(Message, frozen=True, kw_only=True, tag="task_list_reply"):
    tasks: list[TaskSummary]


class TaskCancel(Message, frozen=True, kw_only=True, tag="task_cancel"):
    """``tandem.task.cancel``: stop a task wherever it is; the reply is its state once stopped."""

    task_id: TaskId


class TaskAnswer(Message, frozen=True, kw_only=True, tag="task_answer"):
    """``tandem.task.answer``: a free-text answer to a task's approval question (any client)."""

    task_id: TaskId
    text: Annotated[str, Meta(max_length=10_000)]


class TaskAnswerReply(Message, frozen=True, kw_only=True, tag="task_answer_reply"):
    """What the task made of an answer.

    Parameters
    ----------
    decision : {"approved", "partial", "rejected", "unclear"}
    question : str
        When ``unclear``: the question asked next.
    """

    decision: str
    question: str = ""


TaskEventKind = Literal["submitted", "planned", "awaiting_approval", "step", "succeeded", "failed", "cancelled",
                        "dead_lettered"]


class TaskEvent(Message, frozen=True, kw_only=True, tag="task_event"):
    """Published on ``tandem.events.task.<kind>.<task_id>`` for any subscriber.

    Parameters
    ----------
    task_id : str
    kind : TaskEventKind
        ``submitted`` (a replica took it), ``planned``, ``awaiting_approval``, ``step`` (one
        step finished or a model step started), and the terminal ``succeeded``, ``failed``,
        ``cancelled``, ``dead_lettered``.
    status : TaskStatus
        The task's status after the event.
    detail : str
        Human-readable: the shape decision, the error, the step's command line …
    plan : ExecutionPlan or None
        With ``planned`` and ``awaiting_approval``.
    question : str
        With ``awaiting_approval``.
    step : StepOutcome or None
        With ``step``: the outcome of a finished step (``None`` when a model step has just
        started, see ``step_started``).
    step_started : int
        With ``step``: the number of the model step that has just started (``0`` otherwise).
    total_steps : int
    error : ErrorReply or None
        With ``failed`` and ``dead_lettered``.
    state : TaskState or None
        With the terminal events: the task's final state, as stored before the event went out (a
        result kept in the object store stays there: ``result_ref``), so a follower needs no read
        after the end. ``None`` from a task actor older than this field.
    """

    task_id: str
    kind: TaskEventKind
    status: TaskStatus
    detail: str = ""
    plan: ExecutionPlan | None = None
    question: str = ""
    step: StepOutcome | None = None
    step_started: int = 0
    total_steps: int = 0
    error: ErrorReply | None = None
    state: TaskState | None = None
