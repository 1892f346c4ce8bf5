"""Executor flow: run a plan (design note 000, stage 2) and its step events."""

from __future__ import annotations

from typing import Literal

import msgspec

from ._base import ErrorReply, Message
from .plan import ExecutionPlan

__all__ = ["ExecuteReply", "ExecuteRequest", "ExecutorReply", "Output", "RunCheckpoint", "StepEvent", "StepOutcome"]


class Output(msgspec.Struct, frozen=True, kw_only=True):
    """One ``write_output``: ``destination`` is ``fd:1`` or ``fd:2``."""

    destination: str
    text: str
    format: str = "text"


class StepOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one step.

    Parameters
    ----------
    step : int
    action : str
    status : {"ok", "skipped", "recovered", "failed"}
    duration_ms : float
    detail : str
        e.g. the command line, the branch taken, or the error.
    """

    step: int
    action: str
    status: Literal["ok", "skipped", "recovered", "failed"]
    duration_ms: float = 0.0
    detail: str = ""


class RunCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The executor's state after a finished step, so a redelivered task resumes there.

    Parameters
    ----------
    next_index : int
        Index in ``plan.workflow`` of the next step to run.
    current : str
        The current text.
    fds : dict of int to str
        Buffers written by steps (the inputs are not repeated).
    outputs : list of Output
    steps : list of StepOutcome
        Outcomes so far, in the order run.
    """

    next_index: int
    current: str = ""
    fds: dict[int, str] = {}
    outputs: list[Output] = []
    steps: list[StepOutcome] = []


class ExecuteRequest(Message, frozen=True, kw_only=True, tag="execute_request"):
    """Run ``plan`` on ``inputs``.

    Parameters
    ----------
    plan : ExecutionPlan
    inputs : dict of int to str
        Input texts by fd (``0`` stdin, ``3``… the ``--input`` files). The
        executor never touches the file system: the CLI reads and writes files.
    task : str
        The user's task (context for ``manual_transform``).
    checkpoint_subject : str
        Where to publish a :class:`~tandem.messages.StepCheckpoint` after every finished
        step (``""``: nowhere). The task actor keeps the latest one in its KV state.
    resume : RunCheckpoint or None
        Continue from this checkpoint: the steps before ``resume.next_index`` are not run
        again (a task redelivered after its task-actor replica died).
    """

    plan: ExecutionPlan
    inputs: dict[int, str] = {}
    task: str = ""
    checkpoint_subject: str = ""
    resume: RunCheckpoint | None = None


class ExecuteReply(Message, frozen=True, kw_only=True, tag="execute_reply"):
    """The plan ran to the end.

    Parameters
    ----------
    outputs : list of Output
        In the order written.
    steps : list of StepOutcome
        In the order run.
    """

    outputs: list[Output]
    steps: list[StepOutcome] = []


class StepEvent(Message, frozen=True, kw_only=True, tag="step_event"):
    """Progress of one step, published on ``tandem.events.executor.step``.

    Every step publishes its outcome (``ok``, ``skipped``, ``recovered``,
    ``failed``); ``manual_transform`` steps, which wait for a model, also
    publish ``started``. ``correlation_id`` is the execute request's, so a
    subscriber can follow one task.
    """

    step: int
    action: str
    status: Literal["started", "ok", "skipped", "recovered", "failed"]
    total_steps: int
    duration_ms: float = 0.0
    detail: str = ""


ExecutorReply = ExecuteReply | ErrorReply
