"""Every NATS subject Tandem uses, in one place.

Request/reply subjects are served by actors in a queue group named after the
actor (``tandem.<actor>``), so N replicas share the load. Events are plain
publishes under ``tandem.events.>`` for any subscriber.

=====================================  ==========================================
subject                                payload
=====================================  ==========================================
``tandem.planner.plan``                ``PlanRequest`` → ``PlanReply``
``tandem.planner.remember``            ``RememberPlan`` → ``Ack``
``tandem.router.complete``             ``CompletionRequest`` → ``CompletionReply``
``tandem.router.shape``                ``ShapeRequest`` → ``ShapeDecision``
``tandem.events.router.routed``        ``RoutingEvent``
``tandem.executor.execute``            ``ExecuteRequest`` → ``ExecuteReply``
``tandem.choice.parse``                ``ChoiceRequest`` → ``ChoiceReply``
``tandem.events.choice.parsed``        ``ChoiceReply`` (every parsed answer)
``tandem.<actor>.ping``                ``Ping`` → ``Pong`` (liveness / discovery)
``tandem.control.cancel``              ``CancelWork`` (every actor; no queue group)
``tandem.events.executor.step``        ``StepEvent``
``tandem.task.submit``                 ``TaskSubmit`` (JetStream stream ``TANDEM_TASKS``)
``tandem.task.get``                    ``TaskGet`` → ``TaskReply``
``tandem.task.list``                   ``TaskList`` → ``TaskListReply``
``tandem.task.cancel``                 ``TaskCancel`` → ``TaskReply``
``tandem.task.answer``                 ``TaskAnswer`` → ``TaskAnswerReply``
``tandem.events.task.<kind>.<id>``     ``TaskEvent``
``tandem.events.dead_letter.<actor>``  ``DeadLetter``
``tandem.context.<op>``                ``Context*`` requests (append, get, history, list,
                                       delete, export, shared.get, shared.update)
``tandem.history.<session>``           ``ContextEntry`` (JetStream stream ``TANDEM_CONTEXT``)
``tandem.chat.send``                   ``ChatSend`` → ``ChatReply``
``tandem.chat.session``                ``ChatSessionGet`` → ``ChatSessionReply``
=====================================  ==========================================
"""

from __future__ import annotations

__all__ = [
    "EVENTS_ALL",
    "EVENT_STEP",
    "EVENT_TASK",
    "EVENT_TASK_ALL",
    "CONTROL_CANCEL",
    "TASK_ANSWER",
    "TASK_CANCEL",
    "TASK_CANCEL_SIGNAL",
    "TASK_GET",
    "TASK_LIST",
    "TASK_SUBMIT",
    "TASK_STREAM",
    "TASK_CONSUMER",
    "TASK_BUCKET",
    "TASK_DATA_BUCKET",
    "TASK_INPUT_BUCKET",
    "task_answer_inbox",
    "task_events",
    "EXECUTOR_EXECUTE",
    "CHOICE_PARSE",
    "EVENT_CHOICE",
    "PLANNER_PLAN",
    "PLANNER_REMEMBER",
    "ROUTER_COMPLETE",
    "ROUTER_SHAPE",
    "EVENT_ROUTED",
    "PREFIX",
    "event_task",
    "ping",
    "queue_group",
    "CONTEXT_APPEND",
    "CONTEXT_GET",
    "CONTEXT_HISTORY",
    "CONTEXT_LIST",
    "CONTEXT_DELETE",
    "CONTEXT_EXPORT",
    "CONTEXT_SHARED_GET",
    "CONTEXT_SHARED_UPDATE",
    "CONTEXT_STREAM",
    "CONTEXT_BUCKET",
    "HISTORY_ALL",
    "history",
    "CHAT_SEND",
    "CHAT_SESSION",
    "CHAT_BUCKET",
]

PREFIX = "tandem"

PLANNER_PLAN = "tandem.planner.plan"
PLANNER_REMEMBER = "tandem.planner.remember"
ROUTER_COMPLETE = "tandem.router.complete"
ROUTER_SHAPE = "tandem.router.shape"
EVENT_ROUTED = "tandem.events.router.routed"
EXECUTOR_EXECUTE = "tandem.executor.execute"
CHOICE_PARSE = "tandem.choice.parse"
EVENT_CHOICE = "tandem.events.choice.parsed"

EVENTS_ALL = "tandem.events.>"
EVENT_STEP = "tandem.events.executor.step"
EVENT_TASK = "tandem.events.task.{kind}.{task_id}"
"""Template (``messaging.destination.template``) for task events."""
EVENT_TASK_ALL = "tandem.events.task.>"

CONTROL_CANCEL = "tandem.control.cancel"
"""Broadcast to every actor (no queue group): drop in-flight work of one correlation id."""

TASK_SUBMIT = "tandem.task.submit"
TASK_GET = "tandem.task.get"
TASK_LIST = "tandem.task.list"
TASK_CANCEL = "tandem.task.cancel"
TASK_ANSWER = "tandem.task.answer"
TASK_CANCEL_SIGNAL = "tandem.task.cancel_signal"
"""Broadcast to every task-actor replica (no queue group): stop the task if you hold it."""
TASK_STREAM = "TANDEM_TASKS"
"""JetStream work-queue stream holding submitted tasks."""
TASK_CONSUMER = "tandem_task"
"""The durable pull consumer every task-actor replica fetches from."""
TASK_BUCKET = "tandem_tasks"
"""KV bucket: one :class:`~tandem.messages.TaskState` per task id."""
TASK_DATA_BUCKET = "tandem_task_data"
"""Object store: results and task states too large for a message or a KV value (written by the task actor only)."""
TASK_INPUT_BUCKET = "tandem_task_inputs"
"""Object store: task inputs too large for a message, ``<task_id>/input/<fd>`` (written by clients; a
separate bucket, so a client credential cannot overwrite a result)."""


CONTEXT_APPEND = "tandem.context.append"
CONTEXT_GET = "tandem.context.get"
CONTEXT_HISTORY = "tandem.context.history"
CONTEXT_LIST = "tandem.context.list"
CONTEXT_DELETE = "tandem.context.delete"
CONTEXT_EXPORT = "tandem.context.export"
CONTEXT_SHARED_GET = "tandem.context.shared.get"
CONTEXT_SHARED_UPDATE = "tandem.context.shared.update"
CONTEXT_STREAM = "TANDEM_CONTEXT"
"""JetStream stream holding every conversation's history, one subject per conversation."""
CONTEXT_BUCKET = "tandem_context"
"""KV bucket: ``summary.<session>`` and ``shared.<session>`` per conversation."""
HISTORY_ALL = "tandem.history.>"
CHAT_SEND = "tandem.chat.send"
CHAT_SESSION = "tandem.chat.session"
CHAT_BUCKET = "tandem_chat"
"""KV bucket: one :class:`~tandem.messages.chat.ChatSession` per session."""


def history(session: str) -> str:
    """Return the history subject of a conversation: ``tandem.history.<session>``."""
    return f"{PREFIX}.history.{session}"


def event_task(kind: str, task_id: str = "*") -> str:
    """Return the subject of task events: ``tandem.events.task.<kind>.<task_id>``.

    ``kind`` and ``task_id`` may be ``*`` wildcards: ``event_task("succeeded")`` matches
    every task's success, ``task_events(task_id)`` every event of one task.
    """
    return EVENT_TASK.format(kind=kind, task_id=task_id)


def task_events(task_id: str) -> str:
    """Return the subject matching every event of one task."""
    return event_task("*", task_id)


def task_answer_inbox(task_id: str) -> str:
    """Return the subject on which the replica holding ``task_id`` takes approval answers."""
    return f"{PREFIX}.task.answer.{task_id}"


def ping(actor: str) -> str:
    """Return the liveness subject of ``actor``, e.g. ``tandem.router.ping``."""
    return f"{PREFIX}.{actor}.ping"


def queue_group(actor: str) -> str:
    """Return the queue group shared by all replicas of ``actor``."""
    return f"{PREFIX}.{actor}"
