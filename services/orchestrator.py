"""The two-stage flow of design note 000: judge → plan → execute, with fallbacks.

::

    complexity ≥ threshold ──► planner ──► executor ──► remember plan (cache)
          │                      │ planning failed          │ execution failed and
          ▼                      ▼                          ▼ fallback_strategy allows
    single stage ◄───────────────┴──────────────────────────┘

Single stage is itself a plan — ``read_input → manual_transform → write_output``
— so the executor runs both modes and every task looks the same in a trace.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import msgspec
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import Status, StatusCode

from tandem.messages import (
    Ack,
    ExecuteReply,
    ExecuteRequest,
    ExecutionPlan,
    InputInfo,
    ManualTransform,
    Output,
    PlanMetadata,
    PlanReply,
    PlanRequest,
    ReadInput,
    RememberPlan,
    ShapeDecision,
    ShapeRequest,
    StepOutcome,
    TaskEvent,
    WriteOutput,
    new_id,
    subjects,
)
from tandem.messages.plan import ManualTransformParams, ReadInputParams

from .approval import Approval, Approver, ask_approval, describe_step
from .bus import Bus
from .config import Config
from .errors import ConfigError, RemoteError, TandemError

__all__ = ["TaskResult", "TaskSpec", "judge_complexity", "run_task", "single_stage_plan"]

log = logging.getLogger("tandem.task")
tracer = trace.get_tracer("tandem.task")

_TRANSFORM = re.compile(
    r"\b(convert|transform|translate|extract|rewrite|reformat|summari[sz]e|filter|sort|count|replace|clean|parse)\b"
    r"|変換|抽出|翻訳|要約|整形|置換",
    re.IGNORECASE,
)
_SEQUENCE = re.compile(r"\b(then|after that|and then|finally|each|every|for all)\b|その後|次に|それぞれ", re.IGNORECASE)


def judge_complexity(task: str, inputs: list[InputInfo]) -> float:
    """Return a 0–1 complexity score deciding single vs two stage (note 000, phase 4 "複雑性自動判定").

    A cheap, deterministic heuristic (no model call): transformations of
    given inputs, multi-step wording, several inputs, long inputs and long
    task descriptions each add to a base of 0.2.

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

    The ``manual_transform`` has no instructions of its own, so the executor
    gives the model the user's task verbatim; with several inputs, the first
    is the text to work on and the others go along as context.
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


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One user task.

    Parameters
    ----------
    task : str
        The task in the user's words.
    inputs : dict of int to str
        Input texts by fd (``0`` stdin, ``3``… ``--input`` files).
    input_types : dict of int to str
        Type of each input (from the file extension).
    mode : {"auto", "single_stage", "two_stage"}
    plan : ExecutionPlan or None
        A saved plan to execute (``--execute-plan``); skips planning.
    plan_only : bool
        Stop after planning (``--plan-only``).
    use_cache : bool
        ``False`` bypasses the plan cache.
    conversation_id : str
    task_id : str
        Correlation id of every message of the task.
    approve : bool
        Ask for approval (free text, per step) before running a plan (``--approve``).
    """

    task: str
    inputs: dict[int, str] = {}
    input_types: dict[int, str] = {}
    mode: Literal["auto", "single_stage", "two_stage"] = "auto"
    plan: ExecutionPlan | None = None
    plan_only: bool = False
    use_cache: bool = True
    conversation_id: str = ""
    task_id: str = msgspec.field(default_factory=new_id)
    approve: bool = False


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to a task.

    Parameters
    ----------
    task_id : str
        Correlation id of every message of the task.
    trace_id : str
        32-hex trace id (``tandem trace <id>``).
    mode : {"single_stage", "two_stage", "execute_plan", "plan_only"}
    complexity : float
        The judged complexity.
    plan : ExecutionPlan or None
    plan_cached : bool
        Whether the plan came from the plan cache.
    fallback : str
        Why the task fell back to single stage (``""`` if it did not).
    shape_reason : str
        Why the task was planned or not (the router's decision, or the user's flag).
    approval : {"", "approved", "partial", "rejected", "unclear"}
        With ``--approve``: what the user said (``mode`` is ``not_run`` unless approved).
    approved_steps : list of int
    modifications : list of str
        Conditions the user attached to the approval.
    outputs : list of Output
    steps : list of StepOutcome
    """

    task_id: str
    trace_id: str
    mode: str
    complexity: float
    plan: ExecutionPlan | None = None
    plan_cached: bool = False
    planning_model: str = ""
    fallback: str = ""
    shape_reason: str = ""
    outputs: list[Output] = []
    steps: list[StepOutcome] = []
    approval: str = ""
    approved_steps: list[int] = []
    modifications: list[str] = []


def _inputs(spec: TaskSpec) -> list[InputInfo]:
    return [
        InputInfo(fd=fd, type=spec.input_types.get(fd, "text"), size=len(text),
                  preview="\n".join(text.splitlines()[:8])[:600])
        for fd, text in sorted(spec.inputs.items())
    ]


async def run_task(bus: Bus, config: Config, spec: TaskSpec, *, approver: Approver | None = None) -> TaskResult:
    """Run one task through planner and executor over the bus, in one trace.

    Parameters
    ----------
    bus : Bus
    config : Config
    spec : TaskSpec
    approver : Approver or None
        With ``spec.approve``: asks the user, returns their free-text answer.

    Returns
    -------
    TaskResult

    Raises
    ------
    TandemError
        ``StepFailed`` (as a ``RemoteError`` with code ``step_failed``) when
        execution failed and no fallback applied; ``PlanningFailed`` in
        plan-only mode; bus errors when an actor cannot be reached.
    """
    with tracer.start_as_current_span(
        "invoke_agent tandem",
        attributes={G.GEN_AI_OPERATION_NAME: "invoke_agent", G.GEN_AI_AGENT_NAME: "tandem",
                    "tandem.task.id": spec.task_id},
        record_exception=False, set_status_on_exception=False,
    ) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await _task_event(bus, spec, "started")
        try:
            result = await _run(bus, config, spec, trace_id, approver)
        except TandemError as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute("error.type", exc.code)
            await _task_event(bus, spec, "failed", detail=str(exc))
            raise
        span.set_attribute("tandem.task.mode", result.mode)
        await _task_event(bus, spec, "completed", mode=result.mode, detail=result.fallback)
        return result


class _Rejected(Exception):
    def __init__(self, approval: Approval) -> None:
        self.approval = approval


async def _approve(bus: Bus, spec: TaskSpec, plan: ExecutionPlan, approver: Approver) -> Approval:
    """Ask until the answer is clear (at most 3 times); a rejection or an unusable edit raises ``_Rejected``."""
    steps = "\n".join(f"  {s.step}. {describe_step(s)}" for s in plan.workflow)
    question = f"Plan:\n{steps}\nApprove it? (yes / no / which steps, in your own words)"
    for _ in range(3):
        answer = await approver(question)
        approval = await ask_approval(bus, plan, answer, correlation_id=spec.task_id,
                                      conversation_id=spec.conversation_id)
        if approval.decision == "rejected":
            raise _Rejected(approval)
        if approval.decision in ("approved", "partial") and approval.plan is not None:
            return approval
        if approval.problems:
            question = ("That leaves a plan that cannot run: " + "; ".join(approval.problems)
                        + "\nWhich steps should run?")
        else:
            question = approval.question
    raise _Rejected(msgspec.structs.replace(approval, decision="unclear"))


async def _run(bus: Bus, config: Config, spec: TaskSpec, trace_id: str, approver: Approver | None) -> TaskResult:
    inputs = _inputs(spec)
    complexity = judge_complexity(spec.task, inputs)
    base: dict = {"task_id": spec.task_id, "trace_id": trace_id, "complexity": complexity}
    try:
        return await _stages(bus, config, spec, base, inputs, approver)
    except _Rejected as rejected:
        a = rejected.approval
        return TaskResult(mode="not_run", approval=a.decision, modifications=a.modifications,
                          fallback="; ".join(a.problems), **base)


async def _stages(bus: Bus, config: Config, spec: TaskSpec, base: dict, inputs: list[InputInfo],
                  approver: Approver | None) -> TaskResult:
    complexity = base["complexity"]
    timeout = config.nats.request_timeout_s
    env = {"correlation_id": spec.task_id, "conversation_id": spec.conversation_id}

    async def execute(plan: ExecutionPlan) -> ExecuteReply:
        if spec.approve:
            if approver is None:
                raise ConfigError("approval was asked for but nobody can answer (no approver)")
            approval = await _approve(bus, spec, plan, approver)
            base.update(approval=approval.decision, modifications=approval.modifications,
                        approved_steps=approval.kept_steps)
            plan = approval.plan
        return await bus.request(subjects.EXECUTOR_EXECUTE,
                                 ExecuteRequest(plan=plan, inputs=spec.inputs, task=spec.task, **env),
                                 ExecuteReply, timeout=timeout)

    async def single_stage(reason: str) -> TaskResult:
        plan = single_stage_plan(inputs)
        reply = await execute(plan)
        return TaskResult(mode="single_stage", plan=plan, fallback=reason, outputs=reply.outputs,
                          steps=reply.steps, **base)

    if spec.plan is not None:
        reply = await execute(spec.plan)
        return TaskResult(mode="execute_plan", plan=spec.plan, outputs=reply.outputs, steps=reply.steps, **base)

    if spec.plan_only or spec.mode == "two_stage":
        two_stage, why = True, "two stage requested"
    elif spec.mode == "single_stage":
        two_stage, why = False, "single stage requested"
    else:  # the pipeline shape is a routing decision (design note 004): ask the router, keep its reason
        size = sum(i.size for i in inputs) + len(spec.task)
        decision = await bus.request(subjects.ROUTER_SHAPE,
                                     ShapeRequest(task=spec.task, complexity=complexity, prompt_tokens=size // 4, **env),
                                     ShapeDecision, timeout=10)
        two_stage, why = decision.mode == "two_stage", decision.reason
    base["shape_reason"] = why
    trace.get_current_span().set_attribute("tandem.task.shape_reason", why)
    if not two_stage:
        return await single_stage("")

    try:
        planned = await bus.request(subjects.PLANNER_PLAN,
                                    PlanRequest(task=spec.task, inputs=inputs, use_cache=spec.use_cache, **env),
                                    PlanReply, timeout=timeout)
    except RemoteError as exc:
        if spec.plan_only or exc.code not in ("planning_failed", "plan_invalid"):
            raise
        log.warning("planning failed, falling back to single stage: %s", exc.message)
        return await single_stage(f"planning failed: {exc.message}")
    plan = planned.plan
    meta = {"plan": plan, "plan_cached": planned.cached, "planning_model": planned.model}
    if spec.plan_only:
        return TaskResult(mode="plan_only", **meta, **base)
    try:
        reply = await execute(plan)
    except RemoteError as exc:
        if plan.metadata.fallback_strategy == "abort" or spec.approve:  # never run what was not approved
            raise
        log.warning("plan execution failed, falling back to single stage: %s", exc.message)
        fallback = await single_stage(f"plan execution failed: {exc.message}")
        return msgspec.structs.replace(fallback, **meta)
    if not planned.cached:
        await bus.request(subjects.PLANNER_REMEMBER, RememberPlan(fingerprint=planned.fingerprint, plan=plan, **env),
                          Ack, timeout=10)
    return TaskResult(mode="two_stage", outputs=reply.outputs, steps=reply.steps, **meta, **base)


async def _task_event(bus: Bus, spec: TaskSpec, status: str, *, mode: str = "", detail: str = "") -> None:
    await bus.publish(subjects.event_task(status),
                      TaskEvent(task=spec.task[:500], status=status, mode=mode, detail=detail[:500],
                                correlation_id=spec.task_id, conversation_id=spec.conversation_id),
                      template=subjects.EVENT_TASK)
