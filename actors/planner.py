"""Planner actor: task → validated :class:`~messages.ExecutionPlan` (design note 000, stage 1).

The planning-tier model gets the plan's JSON Schema as structured output, a
description of the built-in commands and one worked example; its answer is
decoded with the plan's invariants. A plan that fails is retried once with
the error as feedback; after that the planner answers ``planning_failed`` and
the orchestrator falls back to single stage (note 000, "Fallback Strategies").

Plans that ran successfully are kept in a JetStream KV bucket under a
fingerprint of the task and the input types (note 000, phase 4 "プラン再利用・キャッシュ").
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import AsyncExitStack

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from tandem.messages import (
    Ack,
    ChatMessage,
    CompletionReply,
    CompletionRequest,
    ExecutionPlan,
    InputInfo,
    ManualTransform,
    PlanReply,
    PlanRequest,
    ReadInput,
    RememberPlan,
    SpawnCommand,
    decode_error_path,
    decoder,
    encode,
    plan_json_schema_compact,
    subjects,
)
from tandem.messages.plan import PLAN_VERSION
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import PlanningFailed, PlanValidationError, TandemError
from tandem.services.textcmd import describe_commands

from ._base import Actor, Endpoint

__all__ = ["PlannerActor", "check_plan_inputs", "decode_plan", "plan_fingerprint"]

log = logging.getLogger("tandem.planner")

_EXAMPLES = (
    (
        "Task: Turn this CSV into pipe-separated text\nInputs:\n- fd:3 (csv, 120 chars)",
        '{"version":"1.0","metadata":{"task_type":"text_conversion","complexity":"low","estimated_steps":3,'
        '"fallback_strategy":"manual_conversion"},"workflow":['
        '{"step":1,"action":"read_input","params":{"source":"fd:3","type":"csv"}},'
        '{"step":2,"action":"spawn_command","params":{"cmd":"sed","args":["-E","s/,/ | /g"],"pattern":"csv_to_pipes"}},'
        '{"step":3,"action":"write_output","params":{"destination":"fd:1","format":"text"}}]}',
    ),
    (
        "Task: Summarise the errors in this log\nInputs:\n- fd:3 (log, 9000 chars)",
        '{"version":"1.0","metadata":{"task_type":"summary","complexity":"medium","estimated_steps":4,'
        '"fallback_strategy":"manual_conversion"},"workflow":['
        '{"step":1,"action":"read_input","params":{"source":"fd:3","type":"log"}},'
        '{"step":2,"action":"spawn_command","params":{"cmd":"grep","args":["-i","error"],"pattern":"errors_only"}},'
        '{"step":3,"action":"manual_transform","params":{"type":"summary","instructions":"Summarise these errors in'
        ' three bullet points."}},'
        '{"step":4,"action":"write_output","params":{"destination":"fd:1","format":"text"}}]}',
    ),
)

_SYSTEM = """You are the planner of Tandem. Turn the user's task into an execution plan (JSON, intermediate language v{version}).
Actions:
- read_input: params.source is "fd:0" (stdin) or "fd:3", "fd:4"... (the input files, in order). Only use inputs listed.
- spawn_command: params.cmd is a built-in text command, params.args its arguments. No shell.
- manual_transform: a language model rewrites the text; params.instructions says how.
- write_output: params.destination "fd:1" is the result.
- conditional_branch: params.condition {{kind, value}}, then_step/else_step jump ahead.
- error_recovery: params.covers lists steps; params.strategy retry|skip|manual_transform|abort.
Each step works on the current text. Prefer built-in commands; use manual_transform for what they cannot do.
Built-in commands:
{commands}"""

_WS = re.compile(r"\s+")


def plan_fingerprint(task: str, inputs: list[InputInfo]) -> str:
    """Return the plan-cache key of a task: hex SHA-256 of the normalised task and input types.

    The task is lower-cased with whitespace collapsed; inputs contribute their
    fd and type (not their content), so the same task on another document of
    the same kind reuses the plan.
    """
    norm = _WS.sub(" ", task.strip().lower())
    kinds = ",".join(f"{i.fd}:{i.type}" for i in sorted(inputs, key=lambda i: i.fd))
    return hashlib.sha256(f"v{PLAN_VERSION}\n{norm}\n{kinds}".encode()).hexdigest()


def decode_plan(data: bytes | str) -> ExecutionPlan:
    """Decode and validate plan JSON.

    Raises
    ------
    PlanValidationError
        When it is not JSON, misses a field or breaks an invariant; ``path``
        names the field (e.g. ``$.workflow[1].params.cmd``).
    """
    try:
        return decoder(ExecutionPlan).decode(data)
    except msgspec.ValidationError as exc:
        text, path = decode_error_path(exc)
        raise PlanValidationError(text, path=path) from exc
    except msgspec.DecodeError as exc:
        raise PlanValidationError(f"not valid JSON: {exc}") from exc


def check_plan_inputs(plan: ExecutionPlan, fds: set[int]) -> None:
    """Check that a plan fits the task's inputs and does some work.

    A plan can decode cleanly and still be useless — the kind a small,
    grammar-constrained model produces. This rejects one that reads an input
    the user did not give, ignores the inputs the user did give, or only
    copies text from input to output.

    Raises
    ------
    PlanValidationError
        Naming the offending step, or ``$.workflow`` for a plan-wide problem.
    """
    given = ", ".join(f"fd:{fd}" for fd in sorted(fds)) or "none"
    reads = False
    for i, step in enumerate(plan.workflow):
        if isinstance(step, ReadInput):
            reads = True
            if int(step.params.source[3:]) not in fds:
                raise PlanValidationError(f"reads {step.params.source}, but the inputs given are: {given}",
                                          path=f"$.workflow[{i}].params.source")
    if fds and not reads:
        raise PlanValidationError(f"no read_input step, but the task has inputs ({given})", path="$.workflow")
    if not any(isinstance(s, SpawnCommand | ManualTransform) for s in plan.workflow):
        raise PlanValidationError("no spawn_command or manual_transform step: the plan does nothing to the text",
                                  path="$.workflow")


class PlannerActor(Actor):
    """Serve ``tandem.planner.plan`` and ``tandem.planner.remember``."""

    name = "planner"

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 32) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.kv: KeyValue | None = None

    def endpoints(self) -> list[Endpoint]:
        timeout = self.config.nats.request_timeout_s
        return [
            Endpoint(subjects.PLANNER_PLAN, PlanRequest, self.plan, timeout=timeout),
            Endpoint(subjects.PLANNER_REMEMBER, RememberPlan, self.remember, timeout=10),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        self.kv = await self.bus.key_value(self.config.plan_cache_bucket)

    async def plan(self, request: PlanRequest) -> PlanReply:
        """Return a validated plan, from the cache or the planning tier.

        Raises
        ------
        PlanningFailed
            When every planning attempt gave an unusable plan or the model failed.
        """
        fingerprint = plan_fingerprint(request.task, request.inputs)
        env = {"correlation_id": request.correlation_id, "conversation_id": request.conversation_id}
        if request.use_cache and (cached := await self._cached(fingerprint, request)) is not None:
            return PlanReply(plan=cached, fingerprint=fingerprint, cached=True, **env)
        messages = self._prompt(request)
        fds = {i.fd for i in request.inputs}
        attempts = self.config.two_stage.planning_attempts
        error: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                reply = await self.bus.request(
                    subjects.ROUTER_COMPLETE,
                    CompletionRequest(task="planning", messages=messages, response_schema=plan_json_schema_compact(),
                                      schema_name="execution_plan", max_tokens=self.config.two_stage.max_planning_tokens,
                                      timeout_s=self.config.nats.request_timeout_s, **env),
                    CompletionReply,
                    timeout=self.config.nats.request_timeout_s,
                )
            except TandemError as exc:
                raise PlanningFailed(f"planning model failed: {exc}") from exc
            try:
                plan = decode_plan(reply.content)
                check_plan_inputs(plan, fds)
            except PlanValidationError as exc:
                log.info("planner: attempt %d/%d gave an invalid plan: %s", attempt, attempts, exc)
                error = exc
                messages = [*messages, ChatMessage(role="assistant", content=reply.content[:2000]),
                            ChatMessage(role="user", content=f"That plan is invalid: {exc}. Answer with a corrected plan.")]
                continue
            return PlanReply(plan=plan, fingerprint=fingerprint, model=reply.model, attempts=attempt, **env)
        raise PlanningFailed(f"no valid plan after {attempts} attempts: {error}")

    async def remember(self, request: RememberPlan) -> Ack:
        """Store a plan that ran successfully under its fingerprint."""
        assert self.kv is not None
        await self.kv.put(request.fingerprint, encode(request.plan))
        return Ack(correlation_id=request.correlation_id, conversation_id=request.conversation_id)

    async def _cached(self, fingerprint: str, request: PlanRequest) -> ExecutionPlan | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(fingerprint)
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            plan = decode_plan(entry.value or b"")
            check_plan_inputs(plan, {i.fd for i in request.inputs})
        except PlanValidationError as exc:
            log.warning("planner: dropping unusable cached plan %s: %s", fingerprint[:12], exc)
            await self.kv.delete(fingerprint)
            return None
        return plan

    def _prompt(self, request: PlanRequest) -> list[ChatMessage]:
        system = _SYSTEM.format(version=PLAN_VERSION, commands=describe_commands())
        if request.inputs:
            listing = "\n".join(
                f"- fd:{i.fd} ({i.type}, {i.size} chars), starts with:\n{i.preview}" for i in request.inputs
            )
        else:
            listing = "none"
        shots = [ChatMessage(role=r, content=c) for q, a in _EXAMPLES for r, c in (("user", q), ("assistant", a))]
        return [
            ChatMessage(role="system", content=system),
            *shots,
            ChatMessage(role="user", content=f"Task: {request.task}\nInputs:\n{listing}"),
        ]
