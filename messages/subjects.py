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
``tandem.events.executor.step``        ``StepEvent``
``tandem.events.task.<status>``        ``TaskEvent``
=====================================  ==========================================
"""

from __future__ import annotations

__all__ = [
    "EVENTS_ALL",
    "EVENT_STEP",
    "EVENT_TASK",
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
EVENT_TASK = "tandem.events.task.{status}"
"""Template (``messaging.destination.template``) for task lifecycle events."""


def event_task(status: str) -> str:
    """Return the task event subject for ``status`` (``started``, ``completed``, ``failed``)."""
    return EVENT_TASK.format(status=status)


def ping(actor: str) -> str:
    """Return the liveness subject of ``actor``, e.g. ``tandem.router.ping``."""
    return f"{PREFIX}.{actor}.ping"


def queue_group(actor: str) -> str:
    """Return the queue group shared by all replicas of ``actor``."""
    return f"{PREFIX}.{actor}"
