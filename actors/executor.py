"""Executor actor: run an :class:`~messages.ExecutionPlan` (design note 000, stage 2).

Each step runs inside an ``execute_tool <action>`` span carrying
``tandem.plan.step`` and ``tandem.plan.action``, and publishes a
:class:`~messages.StepEvent` on ``tandem.events.executor.step`` when it
starts and ends. ``spawn_command`` runs Tandem's built-in text commands on
in-memory text (never a shell or a subprocess); ``manual_transform`` asks the
execution tier through the router. A failed step goes to the
``error_recovery`` step that covers it, or fails the task with
:class:`~tandem.services.errors.StepFailed` (whose ``cause`` is the failing
error's code, e.g. ``regex_timeout`` or ``truncated_output``).

Model calls (``manual_transform``, and single stage, which is one):

* routed as ``single_stage`` when the plan is the single-stage plan
  (``metadata.task_type == "single_stage"``), else as ``manual_transform``, so
  the usage log shows the tier that ran;
* ``max_tokens`` from :func:`~tandem.actors._guards.execution_budget` within the
  smallest context of the tier's models (``input_too_large`` before the call
  when the prompt does not fit; the step's detail says when the context leaves
  less than ``two_stage.max_execution_tokens``);
* an answer with ``finish_reason == "length"`` fails the step with
  :class:`~tandem.services.errors.TruncatedOutput` naming the limit, never
  written out as a result; a degenerate one with ``degenerate_output``;
* a skill from the task analyser (:func:`~tandem.actors.router.match_skill`,
  then the optional model stage) goes along with the request; the step's
  detail and the span say which and why.

Built-in commands run under one :class:`~tandem.services.textcmd.Limits` built
from the ``builtins:`` config. Every executed two-stage plan is recorded in
:class:`~tandem.actors.router.TwoStageHealth` (the router's "performing
poorly" fallback reads it): a failed plan before the error goes back (the next
task's shape decision sees it), a successful one after the reply, off the
task's path, together with the others of the next
:data:`~tandem.actors.router.HEALTH_WRITE_BEHIND_S` (one KV read and one
revision-checked write for all of them; with :data:`HEALTH_IN_FLIGHT` such
records pending, the next one is written before the reply, as a failed one is).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from contextlib import AsyncExitStack
from typing import ClassVar

import anyio
import msgspec
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import Status, StatusCode
from tandem.messages import (
    Ack,
    ChatMessage,
    CompletionReply,
    CompletionRequest,
    ConditionalBranch,
    ErrorRecovery,
    ExecuteReply,
    ExecuteRequest,
    ManualTransform,
    Output,
    ReadInput,
    RunCheckpoint,
    SpawnCommand,
    StepCheckpoint,
    StepEvent,
    StepOutcome,
    WorkflowStep,
    WriteOutput,
    subjects,
)
from tandem.messages.plan import Condition
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import (
    ExecutionError,
    StepFailed,
    TandemError,
    TruncatedOutput,
)
from tandem.services.textcmd import Limits, buffered_chars, regex_search, run_builtin

from ._base import Actor, Endpoint
from ._guards import check_degenerate, execution_budget
from .router import SkillMatch, TwoStageHealth, match_skill, skill_schema

__all__ = ["ExecutorActor", "evaluate_condition"]

tracer = trace.get_tracer("tandem.executor")
log = logging.getLogger("tandem.executor")

INSTANT_STEPS = (ReadInput, WriteOutput, ErrorRecovery)
"""Steps that take no time: reading an input, writing an output (a recovery step only runs within another)."""

CHECKPOINT_PREFIX = "tandem.task.checkpoint."
CHECKPOINT_TEMPLATE = CHECKPOINT_PREFIX + "{replica}.{task_id}"
"""The task actor's checkpoint subjects (:meth:`~tandem.actors.task.TaskActor.checkpoint_subject`), as span names
name them."""

HEALTH_IN_FLIGHT = 64
"""Most records of successful plans pending after their replies (see the module docstring)."""

HELD_CHECKPOINT_S = 0.1
"""Seconds a step that does work (a model call) may run before the checkpoint held back for it is sent
(:meth:`ExecutorActor._checkpoint`)."""


class _SkillAnswer(msgspec.Struct, frozen=True):
    skill: str

_TRANSFORM_SYSTEM = (
    "You rewrite text exactly as instructed. Answer with the rewritten text only: "
    "no explanations, no code fences."
)


def evaluate_condition(condition: Condition, text: str) -> bool:
    """Evaluate a ``conditional_branch`` condition on ``text``.

    Raises
    ------
    ExecutionError
        For a bad regex or a non-integer ``line_count_gt`` operand.
    """
    match condition.kind:
        case "contains":
            return condition.value in text
        case "matches":
            try:
                return re.search(condition.value, text, re.MULTILINE) is not None
            except re.error as exc:
                raise ExecutionError(f"bad regex {condition.value!r}: {exc}") from exc
        case "empty":
            return not text.strip()
        case "not_empty":
            return bool(text.strip())
        case "line_count_gt":
            try:
                return len(text.splitlines()) > int(condition.value)
            except ValueError as exc:
                raise ExecutionError(f"line_count_gt needs an integer, got {condition.value!r}") from exc
    raise AssertionError(condition.kind)


class _Run:
    """The state of one plan run: buffers, current text, outputs."""

    def __init__(self, request: ExecuteRequest) -> None:
        self.request = request
        self.fds: dict[int, str] = dict(request.inputs)
        self.current = ""
        self.outputs: list[Output] = []
        self.outcomes: list[StepOutcome] = []
        self.next_index = 0
        self.skill: SkillMatch | None | bool = False  # False: not analysed yet
        self.unsent: RunCheckpoint | None = None  # the newest checkpoint not sent (see ExecutorActor._checkpoint)
        self.single_stage = request.plan.metadata.task_type == "single_stage"
        if (resume := request.resume) is not None:
            self.fds.update(resume.fds)
            self.current = resume.current
            self.outputs = list(resume.outputs)
            self.outcomes = list(resume.steps)
            self.next_index = resume.next_index

    def checkpoint(self) -> RunCheckpoint:
        """Return the state after the last finished step (buffers the inputs already hold are left out)."""
        inputs = self.request.inputs
        return RunCheckpoint(next_index=self.next_index, current=self.current,
                             fds={fd: t for fd, t in self.fds.items() if inputs.get(fd) is not t},
                             outputs=list(self.outputs), steps=list(self.outcomes))

    def text(self, fd: int | None) -> str:
        if fd is None:
            return self.current
        try:
            return self.fds[fd]
        except KeyError:
            raise ExecutionError(f"buffer fd:{fd} is empty: the step that writes it did not run") from None

    def store(self, text: str, output_fd: int | None) -> None:
        self.current = text
        if output_fd is not None:
            self.fds[output_fd] = text


class ExecutorActor(Actor):
    """Serve ``tandem.executor.execute``."""

    name = "executor"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (subjects.ROUTER_COMPLETE, "tandem.task.checkpoint.>")
    publishes: ClassVar[tuple[str, ...]] = (subjects.EVENT_STEP,)
    jetstream: ClassVar[tuple[str, ...]] = ("kv {config.two_stage.fallback.bucket}",)

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 32) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        b = config.builtins
        self.limits = Limits(regex_timeout_s=b.regex_timeout_s, time_limit_s=b.time_limit_s,
                             max_output_chars=b.max_output_chars, max_plan_chars=b.max_plan_chars,
                             max_threads=b.max_threads, pandoc_max_heap_mb=b.pandoc_max_heap_mb)
        self.health = TwoStageHealth(None, config)
        self._health_pending = 0

    async def setup(self, stack: AsyncExitStack) -> None:
        try:
            self.health.kv = await self.bus.key_value(self.config.two_stage.fallback.bucket)
        except TandemError as exc:  # advisory numbers: run plans without them
            log.warning("executor: two-stage health bucket unavailable: %s", exc)

    async def _record_success(self) -> None:
        """Record a plan that ran in the health numbers, after the reply unless many records are pending."""
        if self._health_pending >= HEALTH_IN_FLIGHT:  # the bucket is slow or away: no pile-up of records
            await self.health.record_plan(True, at_once=True)
            return
        if self.health.record_nowait("plans", True):  # joins the write-behind under way: no task needed
            return
        self._health_pending += 1
        self.start_soon(self._record_success_later)

    async def _record_success_later(self) -> None:
        try:
            await self.health.record_plan(True)  # advisory: it never raises for the bucket's errors
        finally:
            self._health_pending -= 1

    def endpoints(self) -> list[Endpoint]:
        # idempotent: a plan has no side effects outside its reply (built-ins on text, model calls), and a
        # retry resumes from the request's checkpoint
        return [Endpoint(subjects.EXECUTOR_EXECUTE, ExecuteRequest, self.execute,
                         timeout=self.config.nats.request_timeout_s, idempotent=True)]

    async def execute(self, request: ExecuteRequest) -> ExecuteReply:
        """Run the plan to the end (from ``request.resume`` when given).

        After finished steps, a :class:`~tandem.messages.StepCheckpoint` goes to
        ``request.checkpoint_subject`` (when set), so the task actor can resume the plan there
        if it has to run it again (after every step but those :meth:`_checkpoint` leaves to the
        next checkpoint or to the reply).

        Raises
        ------
        StepFailed
            When a step fails and no ``error_recovery`` saves it.
        ExecutionError
            When ``resume`` points outside the plan.
        """
        plan = request.plan
        run = _Run(request)
        index = plan.step_index()
        recovery = {n: s for s in plan.workflow if isinstance(s, ErrorRecovery) for n in s.params.covers}
        total = sum(1 for s in plan.workflow if not isinstance(s, ErrorRecovery))
        if not 0 <= run.next_index <= len(plan.workflow):
            raise ExecutionError(f"resume.next_index {run.next_index} is outside the plan's {len(plan.workflow)} steps")
        while run.next_index < len(plan.workflow):
            step = plan.workflow[run.next_index]
            run.next_index += 1
            if isinstance(step, ErrorRecovery):
                continue
            try:
                jump = await self._run_step(run, step, recovery.get(step.step), total)
            except StepFailed:
                if not run.single_stage:
                    await self.health.record_plan(False)
                if run.unsent is not None:  # the steps before the failed one are announced as before
                    await self._send_checkpoint(run, run.unsent, durable=False)
                raise
            if jump is not None:
                run.next_index = index[jump]
            if request.checkpoint_subject:
                await self._checkpoint(run, step)
        if not run.single_stage:
            await self._record_success()
        return ExecuteReply(correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                            outputs=run.outputs, steps=run.outcomes)

    async def _run_step(self, run: _Run, step: WorkflowStep, handler: ErrorRecovery | None, total: int) -> int | None:
        action = step.__struct_config__.tag
        tool = step.params.cmd if isinstance(step, SpawnCommand) else action
        if isinstance(step, ManualTransform):  # the slow kind: tell watchers the model is working
            await self._event(run, step, action, "started", total)
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"execute_tool {tool}",
            attributes={G.GEN_AI_OPERATION_NAME: "execute_tool", G.GEN_AI_TOOL_NAME: tool,
                        G.GEN_AI_TOOL_TYPE: "extension",  # run agent-side, by the executor
                        "tandem.plan.step": step.step, "tandem.plan.action": action},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            status, detail, jump = "ok", "", None
            held = run.unsent  # a checkpoint held for this step: sent if the step takes a while (a model call)
            timer = None if held is None or isinstance(step, INSTANT_STEPS) else \
                asyncio.get_running_loop().call_later(HELD_CHECKPOINT_S, self._send_held_later, run, held)
            try:
                detail, jump = await self._dispatch(run, step)
            except TandemError as exc:
                span.record_exception(exc)
                span.set_attribute("error.type", exc.code)
                if handler is None or handler.params.strategy == "abort":
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    await self._finish(run, step, action, "failed", started, str(exc), total)
                    raise StepFailed(step.step, action, str(exc), cause=exc.code) from exc
                span.set_attribute("tandem.plan.recovery", handler.params.strategy)
                try:
                    status, detail = await self._recover(run, step, handler, exc)
                except StepFailed as failed:
                    span.set_status(Status(StatusCode.ERROR, str(failed)))
                    await self._finish(run, step, action, "failed", started, str(failed), total)
                    raise
            finally:
                if timer is not None:
                    timer.cancel()
            await self._finish(run, step, action, status, started, detail, total)
            return jump

    async def _checkpoint(self, run: _Run, step: WorkflowStep) -> None:
        """Send the state after a finished step to the task actor, when the task actor needs it.

        After a model step (or a recovery, which may have asked a model), wait until the task
        actor has stored it: a step that cost a model call must not run again after a crash.
        Built-in steps are cheap and deterministic, so their checkpoints are not waited for.

        None is sent when only instant steps remain (:data:`INSTANT_STEPS`: the reply follows
        within microseconds and carries the finished steps, which the task actor announces and
        stores with the task's end, in the one write it makes anyway: a crash loses no more than
        while a checkpoint was on its way), nor after a built-in step whose next step is instant
        (that step's checkpoint, sent a few microseconds later, covers both), nor after an instant
        step whose next step is a built-in command: that one is nearly always done within
        microseconds too, and its checkpoint covers both; one that is not quick sends the held
        checkpoint before it goes to a worker thread (:func:`~tandem.services.textcmd.run_builtin`'s
        ``before_thread``), so the step before it is announced while it runs, as before.
        """
        rest = run.request.plan.workflow[run.next_index:]
        durable = isinstance(step, ManualTransform) or bool(run.outcomes and run.outcomes[-1].status == "recovered")
        if all(isinstance(s, INSTANT_STEPS) for s in rest):
            run.unsent = run.checkpoint()  # sent only if a later step fails (its steps are announced then)
            return
        upcoming = next(s for s in rest if not isinstance(s, ErrorRecovery))
        if not durable and (isinstance(upcoming, ReadInput | WriteOutput | ManualTransform) or (
                isinstance(step, INSTANT_STEPS) and isinstance(upcoming, SpawnCommand))):
            # sent by the next checkpoint, a slow command or model step, or a failed step
            run.unsent = run.checkpoint()
            return
        await self._send_checkpoint(run, run.checkpoint(), durable=durable)

    async def _send_held(self, run: _Run) -> None:
        """Send the checkpoint :meth:`_checkpoint` held back for a quick next step, when there is one."""
        if run.unsent is not None:
            await self._send_checkpoint(run, run.unsent, durable=False)

    def _send_held_later(self, run: _Run, held: RunCheckpoint) -> None:
        """The step after ``held`` has run for :data:`HELD_CHECKPOINT_S`: send ``held`` unless it went already
        (a timer callback: the sending goes to the actor's task group)."""
        if run.unsent is held:
            self.start_soon(self._send_if_held, run, held)

    async def _send_if_held(self, run: _Run, held: RunCheckpoint) -> None:
        if run.unsent is held:
            await self._send_checkpoint(run, held, durable=False)

    async def _send_checkpoint(self, run: _Run, checkpoint: RunCheckpoint, *, durable: bool) -> None:
        run.unsent = None
        req = run.request
        message = StepCheckpoint(task_id=req.correlation_id, checkpoint=checkpoint,
                                 correlation_id=req.correlation_id, conversation_id=req.conversation_id)
        if not durable:
            # the task actor's subjects carry ids: the span is named after their template (and its attributes
            # are built once, not once per task)
            template = CHECKPOINT_TEMPLATE if req.checkpoint_subject.startswith(CHECKPOINT_PREFIX) else None
            await self.bus.publish(req.checkpoint_subject, message, template=template)
            return
        try:
            await self.bus.request(req.checkpoint_subject, message, Ack, timeout=10)
        except TandemError as exc:  # the plan goes on; a crash would re-run this step
            log.warning("executor: checkpoint after step not stored: %s", exc)

    async def _recover(self, run: _Run, step: WorkflowStep, handler: ErrorRecovery,
                       error: TandemError) -> tuple[str, str]:
        p = handler.params
        match p.strategy:
            case "skip":
                return "skipped", f"skipped after error: {error}"
            case "retry":
                for _ in range(p.max_retries):
                    try:
                        detail, _ = await self._dispatch(run, step)
                    except TandemError as exc:
                        error = exc
                        continue
                    return "recovered", f"retried: {detail}"
            case "manual_transform":
                instructions = p.instructions or f"Do what this failed step meant to do: {step}"
                try:
                    run.store((await self._transform(run, instructions, run.current))[0], None)
                except TandemError as exc:
                    error = exc
                else:
                    return "recovered", f"recovered by manual_transform after: {error}"
        raise StepFailed(step.step, step.__struct_config__.tag, f"{error} (recovery {p.strategy} failed)",
                         cause=error.code)

    async def _dispatch(self, run: _Run, step: WorkflowStep) -> tuple[str, int | None]:
        match step:
            case ReadInput(params=p):
                fd = int(p.source[3:])
                if fd not in run.request.inputs:
                    raise ExecutionError(f"{p.source} was not given as an input")
                run.store(run.request.inputs[fd], fd)
                return f"{p.source}: {len(run.current)} chars", None
            case SpawnCommand(params=p):
                held = buffered_chars([*run.fds.values(), run.current, *(o.text for o in run.outputs)])
                result = await run_builtin(p.cmd, p.args, run.text(p.input_fd), held_chars=held, limits=self.limits,
                                           before_thread=functools.partial(self._send_held, run))
                run.store(result, p.output_fd)
                return " ".join([p.cmd, *p.args]), None
            case ManualTransform(params=p):
                instructions = p.instructions
                if p.operations:
                    examples = "\n".join(f"- {o.from_!r} -> {o.to!r}" for o in p.operations)
                    instructions = f"{instructions}\nApply these rewrites:\n{examples}".strip()
                text = run.text(p.input_fd)
                if p.context_fds:
                    context = "\n\n".join(f"[context fd:{fd}]\n{run.text(fd)}" for fd in p.context_fds)
                    instructions = f"{instructions or run.request.task}\n\nFurther inputs for context:\n{context}"
                output, note = await self._transform(run, instructions or run.request.task, text,
                                                     task="single_stage" if run.single_stage else "manual_transform")
                run.store(output, p.output_fd)
                return "; ".join(x for x in (p.type, note) if x), None
            case WriteOutput(params=p):
                run.outputs.append(Output(destination=p.destination, text=run.text(p.input_fd), format=p.format))
                return p.destination, None
            case ConditionalBranch(params=p):
                text = run.text(p.input_fd)
                taken = (await regex_search(p.condition.value, text, limits=self.limits) if p.condition.kind == "matches"
                         else evaluate_condition(p.condition, text))
                target = p.then_step if taken else p.else_step
                return f"{p.condition.kind} → {'then' if taken else 'else'} step {target or 'next'}", target
        raise AssertionError(step)

    async def _transform(self, run: _Run, instructions: str, text: str, *,
                         task: str = "manual_transform") -> tuple[str, str]:
        """Ask the model to rewrite ``text``; return the answer and a note for the step's detail.

        Raises
        ------
        InputTooLarge
            When the prompt does not fit the smallest context of the task's models.
        TruncatedOutput
            When the answer stopped at its token limit.
        DegenerateOutput
            When the answer repeats itself far beyond the input.
        """
        req = run.request
        user = f"Instructions: {instructions}\n\nText:\n{text}"
        configured = self.config.two_stage.max_execution_tokens
        context = self.config.context_tokens(task)
        budget = execution_budget(len(text), len(_TRANSFORM_SYSTEM) + len(user), configured=configured,
                                  context_tokens=context)
        notes = []
        if budget.max_tokens < configured:
            notes.append(f"max_tokens {budget.max_tokens}: the model's context of {context} tokens leaves no room "
                         f"for max_execution_tokens {configured}")
        skill = await self._skill(run, task)
        if skill is not None:
            notes.append(f"skill {skill.skill} ({skill.reason})")
            trace.get_current_span().set_attributes({"tandem.skill": skill.skill, "tandem.skill.reason": skill.reason})
        reply = await self.bus.request(
            subjects.ROUTER_COMPLETE,
            CompletionRequest(
                task=task,
                correlation_id=req.correlation_id, conversation_id=req.conversation_id,
                messages=[ChatMessage(role="system", content=_TRANSFORM_SYSTEM),
                          ChatMessage(role="user", content=user)],
                max_tokens=budget.max_tokens,
                timeout_s=self.config.nats.request_timeout_s,
                skill=skill.skill if skill is not None else "",
            ),
            CompletionReply,
            timeout=self.config.nats.request_timeout_s,
            idempotent=True,
        )
        if reply.finish_reason == "length":
            why = f"; {notes[0]}" if budget.max_tokens < configured else ""
            raise TruncatedOutput(
                f"truncated_output: the answer of {reply.model} stopped at the token limit "
                f"(max_tokens {budget.max_tokens}, {reply.usage.output_tokens or '?'} tokens written){why}; "
                "nothing of it was used: raise two_stage.max_execution_tokens or use a model with a larger context",
                max_tokens=budget.max_tokens)
        check_degenerate(reply.content, source=text)
        return reply.content, "; ".join(notes)

    async def _skill(self, run: _Run, task: str) -> SkillMatch | None:
        """The task analyser (note 002), once per run: rules, then (optionally) a cheap model."""
        if run.skill is not False:
            return run.skill  # type: ignore[return-value]
        found = match_skill(self.config, run.request.task, router_task=task)
        analyser = self.config.analyser
        if found is None and analyser.enabled and analyser.use_model and self.config.skills:
            found = await self._classify(run, task)
        run.skill = found
        return found

    async def _classify(self, run: _Run, task: str) -> SkillMatch | None:
        """Model stage of the analyser: one skill name (or ``none``) under a JSON Schema enum."""
        req = run.request
        menu = "\n".join(f"- {name}: {s.description or s.category}" for name, s in self.config.skills.items()
                         if task in s.tasks)
        try:
            reply = await self.bus.request(subjects.ROUTER_COMPLETE, CompletionRequest(
                task=self.config.analyser.task, correlation_id=req.correlation_id,
                conversation_id=req.conversation_id, max_tokens=60, schema_name="skill_choice",
                response_schema=skill_schema(self.config), timeout_s=min(30.0, self.config.nats.request_timeout_s),
                messages=[ChatMessage(role="system", content="Classify the task into one skill. Answer JSON."),
                          ChatMessage(role="user", content=f"Task: {req.task[:2000]}\nSkills:\n{menu}\n"
                                                           '- none: no skill fits\nAnswer {"skill": NAME}.')]),
                CompletionReply, timeout=min(30.0, self.config.nats.request_timeout_s))
            name = msgspec.json.decode(reply.content, type=_SkillAnswer).skill
        except (TandemError, msgspec.DecodeError) as exc:  # the analyser is optional: route by tier
            log.info("executor: skill classification failed: %s", exc)
            return None
        if name not in self.config.skills or task not in self.config.skills[name].tasks:
            return None
        return SkillMatch(skill=name, reason=f"model: {reply.model} classified the task")

    async def _finish(self, run: _Run, step: WorkflowStep, action: str, status: str, started: float,
                      detail: str, total: int) -> None:
        ms = round((time.perf_counter() - started) * 1000, 3)
        run.outcomes.append(StepOutcome(step=step.step, action=action, status=status, duration_ms=ms, detail=detail))
        await self._event(run, step, action, status, total, ms, detail)

    async def _event(self, run: _Run, step: WorkflowStep, action: str, status: str, total: int,
                     ms: float = 0.0, detail: str = "") -> None:
        req = run.request
        with anyio.CancelScope(shield=True):
            await self.bus.publish(subjects.EVENT_STEP, StepEvent(
                correlation_id=req.correlation_id, conversation_id=req.conversation_id,
                step=step.step, action=action, status=status, total_steps=total, duration_ms=ms, detail=detail[:200]))
