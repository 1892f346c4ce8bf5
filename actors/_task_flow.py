"""The two-stage flow of design note 000, as the task actor runs it: judge → plan → approve → execute.

::

    complexity ≥ threshold ──► planner ──► (approval) ──► executor ──► remember plan (cache, host)
          │                      │ planning failed              │ execution failed and
          ▼                      ▼                              ▼ fallback_strategy allows
    single stage ◄───────────────┴──────────────────────────────┘

Single stage is itself a plan — ``read_input → manual_transform → write_output`` — so the
executor runs both modes and every task looks the same in a trace.

Every transition goes through :class:`FlowHost` (implemented by the task actor), which
records it in the task's KV state and publishes the task event; a redelivered task calls
:func:`run_flow` again with the state recorded so far and continues where it stood: an
approved or chosen plan is not planned again, and finished steps are not run again.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

import anyio
import msgspec

from tandem.messages import (
    Ack,
    ExecuteReply,
    ExecuteRequest,
    ExecutionPlan,
    InputInfo,
    ManualTransform,
    PlanMetadata,
    PlanReply,
    PlanRequest,
    ReadInput,
    RememberPlan,
    ShapeDecision,
    ShapeRequest,
    TaskResult,
    TaskState,
    TaskSubmit,
    WriteOutput,
    subjects,
)
from tandem.messages.control import CancelWork
from tandem.messages.plan import ManualTransformParams, ReadInputParams
from tandem.services.approval import Approval, describe_step
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import RemoteError, TandemError

__all__ = ["FlowHost", "Rejected", "ask_planner_to_remember", "input_infos", "judge_complexity", "run_flow",
           "single_stage_plan"]

log = logging.getLogger("tandem.task")

_TRANSFORM = re.compile(
    r"\b(convert|transform|translate|extract|rewrite|reformat|summari[sz]e|filter|sort|count|replace|clean|parse)\b"
    r"|変換|抽出|翻訳|要約|整形|置換",
    re.IGNORECASE,
)
_SEQUENCE = re.compile(r"\b(then|after that|and then|finally|each|every|for all)\b|その後|次に|それぞれ", re.IGNORECASE)


def judge_complexity(task: str, inputs: list[InputInfo]) -> float:
    """Return a 0–1 complexity score deciding single vs two stage (note 000, phase 4 "複雑性自動判定").

    A cheap, deterministic heuristic (no model call): transformations of given inputs,
    multi-step wording, several inputs, long inputs and long task descriptions each add
    to a base of 0.2.

    Examples
    --------
    >>> judge_complexity("What is the capital of France?", [])
    0.2
    >>> judge_complexity("Convert this Markdown to Textile", [InputInfo(fd=3, type="markdown", size=4000)])
    0.7
    """
    score = 0.2
    if _TRANSFORM.search(task):
        score += 0.3
    if inputs:
        score += 0.2
    if len(inputs) > 1:
        score += 0.1
    if any(i.size > 20_000 for i in inputs):
        score += 0.1
    score += min(0.2, 0.1 * len(_SEQUENCE.findall(task)))
    if len(task) > 300:
        score += 0.1
    return round(min(score, 1.0), 2)


def single_stage_plan(inputs: list[InputInfo]) -> ExecutionPlan:
    """Return the single-stage plan: one execution-tier call does the whole task.

    The ``manual_transform`` has no instructions of its own, so the executor gives the
    model the user's task verbatim; with several inputs, the first is the text to work on
    and the others go along as context.
    """
    steps: list = [ReadInput(step=i, params=ReadInputParams(source=f"fd:{x.fd}", type=x.type))
                   for i, x in enumerate(inputs, start=1)]
    transform = ManualTransformParams(input_fd=inputs[0].fd, context_fds=[x.fd for x in inputs[1:]]) if inputs \
        else ManualTransformParams()
    steps.append(ManualTransform(step=len(steps) + 1, params=transform))
    steps.append(WriteOutput(step=len(steps) + 1))
    return ExecutionPlan(
        metadata=PlanMetadata(task_type="single_stage", complexity="low", estimated_steps=len(steps),
                              fallback_strategy="abort"),
        workflow=steps,
    )


def input_infos(inputs: dict[int, str], types: dict[int, str]) -> list[InputInfo]:
    """Describe the inputs for the planner: fd, type, size and the first lines (never a path)."""
    return [
        InputInfo(fd=fd, type=types.get(fd, "text"), size=len(text), preview="\n".join(text.splitlines()[:8])[:600])
        for fd, text in sorted(inputs.items())
    ]


class Rejected(Exception):
    """Raised when the approver rejected the plan, or no clear approval came."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(approval.decision)
        self.approval = approval


class FlowHost(Protocol):
    """What the flow needs from the task actor that runs it."""

    bus: Bus
    config: Config

    async def transition(self, state: TaskState, **changes: object) -> TaskState:
        """Record ``changes`` in the task's KV state (revision-checked) and return the new state."""
        ...

    async def announce(self, state: TaskState, kind: str, detail: str = "", **fields: object) -> None:
        """Publish ``tandem.events.task.<kind>.<id>``."""
        ...

    async def approve(self, state: TaskState, plan: ExecutionPlan, question: str) -> Approval:
        """Wait for answers on ``tandem.task.answer`` until the plan is approved (raises :class:`Rejected`)."""
        ...

    def checkpoint_subject(self, state: TaskState) -> str:
        """Where the executor sends step checkpoints of this task."""
        ...

    async def remember(self, state: TaskState, plan: ExecutionPlan) -> None:
        """Cache ``plan``, which ran, under ``state.plan_fingerprint`` (never raises: a failed cache write
        never fails a task whose result is ready). The task actor writes the plan cache itself, with the
        task's final state; a host without that right asks ``tandem.planner.remember``."""
        ...


async def run_flow(host: FlowHost, state: TaskState, submit: TaskSubmit, inputs: dict[int, str]) -> TaskResult:
    """Run (or continue) one task and return its result.

    Parameters
    ----------
    host : FlowHost
    state : TaskState
        The state recorded so far (``pending`` for a new task).
    submit : TaskSubmit
    inputs : dict of int to str
        Input texts, object-store references already resolved.

    Raises
    ------
    TandemError
        ``RemoteError`` (e.g. ``step_failed``) when execution failed and no fallback
        applied, ``DeadlineExceeded``, bus errors.
    Rejected
        When approval was asked and the plan was rejected or no clear answer came.
    """
    infos = input_infos(inputs, submit.input_types)
    result = state.result or TaskResult(mode="", complexity=judge_complexity(submit.task, infos))
    env = {"correlation_id": submit.task_id, "conversation_id": submit.conversation_id}
    timeout = host.config.nats.request_timeout_s

    # resume: the plan to run is already chosen (and approved, when approval was asked)
    if state.status == "running" and state.plan is not None:
        return await _execute(host, state, submit, inputs, infos, state.plan, result)

    if state.status == "awaiting_approval" and state.plan is not None:
        return await _execute(host, state, submit, inputs, infos, state.plan, result, approved=False)

    if submit.plan is not None:
        result = msgspec.structs.replace(result, mode="execute_plan", shape_reason="saved plan")
        return await _execute(host, state, submit, inputs, infos, submit.plan, result, approved=False)

    if submit.plan_only or submit.mode == "two_stage":
        two_stage, why = True, "two stage requested"
    elif submit.mode == "single_stage":
        two_stage, why = False, "single stage requested"
    elif submit.intent is not None and submit.intent.kind == "direct_response":
        two_stage, why = False, "the chat loop read it as a direct question"
    else:  # the pipeline shape is a routing decision (design note 004): ask the router, keep its reason
        size = sum(i.size for i in infos) + len(submit.task)
        decision = await host.bus.request(
            subjects.ROUTER_SHAPE,
            ShapeRequest(task=submit.task, complexity=result.complexity, prompt_tokens=size // 4, **env),
            ShapeDecision, timeout=10, idempotent=True)
        two_stage, why = decision.mode == "two_stage", decision.reason
    result = msgspec.structs.replace(result, shape_reason=why)
    if not two_stage:
        result = msgspec.structs.replace(result, mode="single_stage")
        return await _execute(host, state, submit, inputs, infos, single_stage_plan(infos), result, approved=False)

    state, planned, exc = await _plan(host, state, result, PlanRequest(task=submit.task, inputs=infos,
                                                                     use_cache=submit.use_cache, **env), timeout)
    if exc is not None:
        if not isinstance(exc, RemoteError) or submit.plan_only or exc.code not in ("planning_failed", "plan_invalid"):
            raise exc
        log.warning("task %s: planning failed, falling back to single stage: %s", submit.task_id, exc.message)
        result = msgspec.structs.replace(result, mode="single_stage", fallback=f"planning failed: {exc.message}")
        return await _execute(host, state, submit, inputs, infos, single_stage_plan(infos), result, approved=False)
    result = msgspec.structs.replace(result, mode="two_stage", plan_cached=planned.cached,
                                     planning_model=planned.model, recipe=planned.recipe,
                                     recipe_params=dict(planned.recipe_params))
    if submit.plan_only:
        state = await host.transition(state, plan=planned.plan, plan_fingerprint=planned.fingerprint, result=result)
        await _announce_planned(host, state, planned)
        return msgspec.structs.replace(result, mode="plan_only")
    # The plan is recorded with the status it goes on in (running, or awaiting_approval): one write. Recorded
    # alone, while still "planning", it would not be resumed anyway: a redelivery resumes only a running plan or
    # one awaiting approval, and plans again otherwise.
    return await _execute(host, state, submit, inputs, infos, planned.plan, result, approved=False, planned=planned)


PLANNING_RECORD_AFTER_S = 0.2
"""Seconds the planner may take before the ``planning`` status is recorded (see :func:`_plan`)."""


async def _plan(host: FlowHost, state: TaskState, result: TaskResult, request: PlanRequest,
                timeout: float) -> tuple[TaskState, PlanReply | None, Exception | None]:
    """Ask the planner; record the ``planning`` status when it takes a while. Return the state recorded by then
    and the answer.

    The status is for watchers only (a redelivery plans again whether it was recorded or not), so its
    write never comes before the planner is asked, and only a planner that has not answered within
    :data:`PLANNING_RECORD_AFTER_S` gets it (a model writing a plan takes seconds): a plan that comes
    sooner is recorded with the status it runs in, and ``result`` with it, in the flow's next write (a
    state write less per task). A failed planner has the status recorded before the error goes back, as
    it always had. This returns once the write (when one was started) has ended: ``(state, reply, None)``,
    or ``(state, None, error)`` when the request failed.

    Raises
    ------
    TandemError
        When the write failed (a plan asked for meanwhile is dropped), as it did before the planner was asked.
    """
    recorded: list[TaskState] = []
    failed: list[Exception] = []
    reply: PlanReply | None = None
    error: Exception | None = None
    writing = False

    async def record(*, delay: float = PLANNING_RECORD_AFTER_S) -> None:
        nonlocal writing
        await anyio.sleep(delay)
        writing = True  # from here on the write is not cancelled: its revision must be known
        try:
            recorded.append(await host.transition(state, status="planning", result=result))
        except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(record)
        try:
            reply = await host.bus.request(subjects.PLANNER_PLAN, request, PlanReply, timeout=timeout,
                                           idempotent=True)
        except Exception as exc:  # noqa: BLE001 - returned once the write has ended (a task group would wrap it)
            error = exc
        if not writing:  # answered before the status was due: no write of its own
            tg.cancel_scope.cancel()
    if error is not None and not writing:
        await record(delay=0)  # the failure is recorded with what was known of the task, as before
    if failed:
        raise failed[0]
    return (recorded[0] if recorded else state), reply, error


async def _announce_planned(host: FlowHost, state: TaskState, planned: PlanReply) -> None:
    """The ``planned`` event, as seen while planning (its status is ``planning`` whatever was recorded with it)."""
    how = "cached plan" if planned.cached else f"recipe {planned.recipe}" if planned.recipe else \
        f"planned by {planned.model}"
    await host.announce(msgspec.structs.replace(state, status="planning"), "planned", how,
                        plan=planned.plan, total_steps=len(planned.plan.workflow))


async def _execute(host: FlowHost, state: TaskState, submit: TaskSubmit, inputs: dict[int, str],
                   infos: list[InputInfo], plan: ExecutionPlan, result: TaskResult, *,
                   approved: bool = True, planned: PlanReply | None = None) -> TaskResult:
    env = {"correlation_id": submit.task_id, "conversation_id": submit.conversation_id}
    fingerprint = {} if planned is None else {"plan_fingerprint": planned.fingerprint}  # recorded with the plan
    if submit.approval == "ask" and not approved:
        steps = "\n".join(f"  {s.step}. {describe_step(s)}" for s in plan.workflow)
        question = f"Plan:\n{steps}\nApprove it? (yes / no / which steps, in your own words)"
        state = await host.transition(state, status="awaiting_approval", plan=plan, question=question, result=result,
                                      **fingerprint)
        if planned is not None:
            await _announce_planned(host, state, planned)
            planned, fingerprint = None, {}
        approval = await host.approve(state, plan, question)
        if approval.decision not in ("approved", "partial") or approval.plan is None:
            raise Rejected(approval)
        plan = approval.plan or plan
        result = msgspec.structs.replace(result, approval=approval.decision, approved_steps=approval.kept_steps,
                                         modifications=approval.modifications)
    if planned is not None:  # as seen while planning (its status says so): before the plan is recorded
        await _announce_planned(host, state, planned)
    request = ExecuteRequest(plan=plan, inputs=inputs, task=submit.task, resume=state.checkpoint,
                             checkpoint_subject=host.checkpoint_subject(state), **env)
    state, reply, error = await _record_and_run(host, state, request, status="running", plan=plan, question="",
                                                result=result, **fingerprint)
    if error is not None:
        if not isinstance(error, RemoteError):
            raise error
        exc = error
        fallback_ok = (result.mode == "two_stage" and plan.metadata.fallback_strategy != "abort"
                       and submit.approval != "ask")  # never run what was not approved
        if not fallback_ok:
            raise exc
        log.warning("task %s: plan execution failed, falling back to single stage: %s", submit.task_id, exc.message)
        result = msgspec.structs.replace(result, mode="single_stage", fallback=f"plan execution failed: {exc.message}")
        state = await host.transition(state, checkpoint=None, plan=None, result=result)
        return await _execute(host, state, submit, inputs, infos, single_stage_plan(infos), result)
    assert reply is not None
    if result.mode == "two_stage" and not result.plan_cached and state.plan_fingerprint:
        await host.remember(state, plan)
    return msgspec.structs.replace(result, outputs=reply.outputs, steps=reply.steps)


async def _record_and_run(host: FlowHost, state: TaskState, request: ExecuteRequest, **changes: object,
                          ) -> tuple[TaskState, ExecuteReply | None, Exception | None]:
    """Record ``changes`` (the plan, running) while the executor is asked to run it; return the recorded state
    and the reply, or ``(state, None, error)`` when the request failed.

    The write is one KV round trip that need not come before the request: the task actor's writes of a task
    take turns, so no checkpoint of the run is stored, and no step announced, before the plan is recorded (a
    redelivery resumes a plan only once it is recorded, from checkpoints stored after it), and a model step's
    checkpoint, stored before the executor goes on, still is.

    Raises
    ------
    TandemError
        When the write failed: the executor's work for the task is cancelled (``tandem.control.cancel``),
        as no run goes on whose plan is not recorded.
    """
    recorded: list[TaskState] = []
    failed: list[Exception] = []
    reply: ExecuteReply | None = None
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def record() -> None:
            try:
                recorded.append(await host.transition(state, **changes))
            except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
                failed.append(exc)
                tg.cancel_scope.cancel()

        tg.start_soon(record)
        try:
            reply = await host.bus.request(subjects.EXECUTOR_EXECUTE, request, ExecuteReply,
                                           timeout=host.config.nats.request_timeout_s, idempotent=True)
        except Exception as exc:  # noqa: BLE001 - returned once the write has ended (a task group would wrap it)
            error = exc
    if failed:
        with anyio.CancelScope(shield=True):
            try:
                await host.bus.publish(subjects.CONTROL_CANCEL, CancelWork(correlation_id=state.task_id))
            except TandemError as exc:
                log.warning("task %s: its run could not be cancelled: %s", state.task_id, exc)
        raise failed[0]
    return recorded[0], reply, error


async def ask_planner_to_remember(bus: Bus, state: TaskState, plan: ExecutionPlan) -> None:
    """Cache a plan that ran through ``tandem.planner.remember`` (for a host that may not write the plan cache);
    a failed cache write never fails a task whose result is ready."""
    try:
        await bus.request(subjects.PLANNER_REMEMBER,
                          RememberPlan(fingerprint=state.plan_fingerprint, plan=plan, correlation_id=state.task_id,
                                       conversation_id=state.conversation_id), Ack, timeout=10, idempotent=True)
    except TandemError as exc:
        log.warning("task %s: the plan ran but could not be cached: %s", state.task_id, exc)
