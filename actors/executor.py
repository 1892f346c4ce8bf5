"""Executor actor: run an :class:`~messages.ExecutionPlan` (design note 000, stage 2).

Each step runs inside an ``execute_tool <action>`` span carrying
``tandem.plan.step`` and ``tandem.plan.action``, and publishes a
:class:`~messages.StepEvent` on ``tandem.events.executor.step`` when it
starts and ends. ``spawn_command`` runs Tandem's built-in text commands on
in-memory text (never a shell or a subprocess); ``manual_transform`` asks the
execution tier through the router. A failed step goes to the
``error_recovery`` step that covers it, or fails the task with
:class:`~tandem.services.errors.StepFailed`.
"""

from __future__ import annotations

import re
import time

import anyio
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import Status, StatusCode

from tandem.messages import (
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
from tandem.services.errors import ExecutionError, StepFailed, TandemError
from tandem.services.textcmd import buffered_chars, regex_search, run_builtin

from ._base import Actor, Endpoint

__all__ = ["ExecutorActor", "evaluate_condition"]

tracer = trace.get_tracer("tandem.executor")

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

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 32) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(subjects.EXECUTOR_EXECUTE, ExecuteRequest, self.execute,
                         timeout=self.config.nats.request_timeout_s)]

    async def execute(self, request: ExecuteRequest) -> ExecuteReply:
        """Run the plan to the end (from ``request.resume`` when given).

        After every finished step, a :class:`~tandem.messages.StepCheckpoint` goes to
        ``request.checkpoint_subject`` (when set), so the task actor can resume the plan there
        if it has to run it again.

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
            jump = await self._run_step(run, step, recovery.get(step.step), total)
            if jump is not None:
                run.next_index = index[jump]
            if request.checkpoint_subject:
                await self.bus.publish(request.checkpoint_subject, StepCheckpoint(
                    task_id=request.correlation_id, checkpoint=run.checkpoint(),
                    correlation_id=request.correlation_id, conversation_id=request.conversation_id))
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
                        "tandem.plan.step": step.step, "tandem.plan.action": action},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            status, detail, jump = "ok", "", None
            try:
                detail, jump = await self._dispatch(run, step)
            except TandemError as exc:
                span.record_exception(exc)
                span.set_attribute("error.type", exc.code)
                if handler is None or handler.params.strategy == "abort":
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    await self._finish(run, step, action, "failed", started, str(exc), total)
                    raise StepFailed(step.step, action, str(exc)) from exc
                span.set_attribute("tandem.plan.recovery", handler.params.strategy)
                try:
                    status, detail = await self._recover(run, step, handler, exc)
                except StepFailed as failed:
                    span.set_status(Status(StatusCode.ERROR, str(failed)))
                    await self._finish(run, step, action, "failed", started, str(failed), total)
                    raise
            await self._finish(run, step, action, status, started, detail, total)
            return jump

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
                    run.store(await self._transform(run, instructions, run.current), None)
                except TandemError as exc:
                    error = exc
                else:
                    return "recovered", f"recovered by manual_transform after: {error}"
        raise StepFailed(step.step, step.__struct_config__.tag, f"{error} (recovery {p.strategy} failed)")

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
                result = await run_builtin(p.cmd, p.args, run.text(p.input_fd), held_chars=held)
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
                run.store(await self._transform(run, instructions or run.request.task, text), p.output_fd)
                return p.type, None
            case WriteOutput(params=p):
                run.outputs.append(Output(destination=p.destination, text=run.text(p.input_fd), format=p.format))
                return p.destination, None
            case ConditionalBranch(params=p):
                text = run.text(p.input_fd)
                taken = (await regex_search(p.condition.value, text) if p.condition.kind == "matches"
                         else evaluate_condition(p.condition, text))
                target = p.then_step if taken else p.else_step
                return f"{p.condition.kind} → {'then' if taken else 'else'} step {target or 'next'}", target
        raise AssertionError(step)

    async def _transform(self, run: _Run, instructions: str, text: str) -> str:
        req = run.request
        reply = await self.bus.request(
            subjects.ROUTER_COMPLETE,
            CompletionRequest(
                task="manual_transform",
                correlation_id=req.correlation_id, conversation_id=req.conversation_id,
                messages=[ChatMessage(role="system", content=_TRANSFORM_SYSTEM),
                          ChatMessage(role="user", content=f"Instructions: {instructions}\n\nText:\n{text}")],
                max_tokens=self.config.two_stage.max_execution_tokens,
                timeout_s=self.config.nats.request_timeout_s,
            ),
            CompletionReply,
            timeout=self.config.nats.request_timeout_s,
        )
        return reply.content

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
