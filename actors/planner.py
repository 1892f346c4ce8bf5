"""Planner actor: task → validated :class:`~messages.ExecutionPlan` (design note 000, stage 1).

How a plan is made, cheapest first::

    plan cache ──► vetted plans (recipes) ──► a plan written from scratch
                   pre-filter → menu → fill     schema constrained to this task

1. Plans that ran successfully are kept in a JetStream KV bucket under a
   fingerprint of the task and the input types (note 000, phase 4
   "プラン再利用・キャッシュ").
2. Recipes (:mod:`._recipes`, issue 11): a deterministic pre-filter keeps the
   recipes that fit the task's inputs, the available commands, its keywords
   and the formats it names; the model then *picks* one or ``none`` from that
   short menu (one constrained call over names and one-line descriptions) and
   fills its parameters (a second constrained call, each parameter an
   ``enum`` where it can be; skipped when every parameter has one possible
   value). The filled plan is validated like any other; the reply names the
   recipe.
3. Otherwise the planning-tier model writes a plan. Its structured-output
   schema is narrowed to this task: ``spawn_command.cmd`` is an ``enum`` of
   the commands available here (listed one line each, with their
   parameters, in the prompt), and ``read_input.source`` an ``enum`` of the
   inputs given (with one input: ``fd:3``, always), so the model cannot name
   a command or a file descriptor that does not exist. A plan that fails is
   retried once with the error as feedback; after that the planner answers
   ``planning_failed`` and the orchestrator falls back to single stage (note
   000, "Fallback Strategies").

The planner also serves the recipe library on ``tandem.planner.recipes``
(list, show, add, remove; :mod:`tandem.messages.recipes`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio
import msgspec
import nats.js.errors
from anyio.abc import TaskStatus
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
from tandem.messages.plan import BUILTIN_COMMANDS, PLAN_VERSION
from tandem.messages.recipes import (
    PLANNER_RECIPES,
    AddRecipe,
    ListRecipes,
    RecipeList,
    RecipeReply,
    RecipeRequest,
    RemoveRecipe,
    ShowRecipe,
)
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import PlanningFailed, PlanTruncated, PlanValidationError, TandemError
from tandem.services.textcmd import CommandInfo, available_commands

from ._base import Actor, Endpoint
from ._recipes import (
    NONE,
    Candidate,
    RecipeInvalid,
    RecipeStore,
    check_values,
    fill_schema,
    instantiate,
    menu_schema,
    prefilter,
)

__all__ = ["PlannerActor", "check_plan_inputs", "decode_plan", "plan_fingerprint", "plan_schema_for"]

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

_PANDOC_EXAMPLE = (
    "Task: Convert this HTML page to reStructuredText\nInputs:\n- fd:3 (html, 5200 chars)",
    '{"version":"1.0","metadata":{"task_type":"document_conversion","complexity":"low","estimated_steps":3,'
    '"fallback_strategy":"abort"},"workflow":['
    '{"step":1,"action":"read_input","params":{"source":"fd:3","type":"html"}},'
    '{"step":2,"action":"spawn_command","params":{"cmd":"pandoc","args":["-f","html","-t","rst"],"pattern":"html_to_rst"}},'
    '{"step":3,"action":"write_output","params":{"destination":"fd:1","format":"rst"}}]}',
)

SCRATCH_FDS = tuple(range(10, 16))
"""Buffers a written plan may create with ``output_fd`` (beside the inputs it reads)."""

_SYSTEM = """You are the planner of Tandem. Turn the user's task into an execution plan (JSON, intermediate language v{version}).
Actions:
- read_input: params.source is one of the task's inputs: {sources}. Never any other fd.
- spawn_command: params.cmd is one of the built-in commands below, params.args its arguments. No shell.
- manual_transform: a language model rewrites the text; params.instructions says how.
- write_output: params.destination "fd:1" is the result.
- conditional_branch: params.condition {{kind, value}}, then_step/else_step jump ahead.
- error_recovery: params.covers lists steps; params.strategy retry|skip|manual_transform|abort.
Each step works on the current text; output_fd (one of {scratch}) keeps a copy for a later input_fd.
Prefer built-in commands; use manual_transform for what they cannot do.
Built-in commands (cmd, its arguments: what it does):
{commands}
No file operands: every command reads the previous step's text."""

_MENU_SYSTEM = """You choose a vetted plan for a task. Answer with the name of the recipe that does exactly what the task asks, or "none" if no recipe does."""

_FILL_SYSTEM = """You fill in the parameters of a vetted plan for a task. Take each value from the task and its input."""

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


def _describe(commands: Sequence[CommandInfo]) -> str:
    return "\n".join(f"- {c.name}: {c.usage} -- {c.summary}" for c in commands)


def _sources(inputs: Sequence[InputInfo]) -> str:
    if not inputs:
        return "none (this task has no input: do not use read_input)"
    if len(inputs) == 1:
        return f'"fd:{inputs[0].fd}" (the only input: always "fd:{inputs[0].fd}")'
    return ", ".join(f'"fd:{i.fd}"' for i in inputs)


def _narrow(node: Any, inputs: list[int], commands: list[str]) -> Any:
    """Rewrite the compact plan schema in place for one task (see :func:`plan_schema_for`)."""
    if isinstance(node, list):
        for child in node:
            _narrow(child, inputs, commands)
        return node
    if not isinstance(node, dict):
        return node
    props = node.get("properties")
    if isinstance(props, dict):
        if "source" in props and "expected_size" in props:  # read_input params
            props["source"] = {"enum": [f"fd:{fd}" for fd in inputs]}
        if "cmd" in props:  # spawn_command params
            props["cmd"] = {"enum": commands}
        for name in ("input_fd", "output_fd"):
            if name in props:
                allowed = [*inputs, *SCRATCH_FDS] if name == "input_fd" else list(SCRATCH_FDS)
                props[name] = {"anyOf": [{"enum": allowed}, {"type": "null"}], "default": None}
        if "context_fds" in props:
            props["context_fds"]["items"] = {"enum": [*inputs, *SCRATCH_FDS]}
    for child in node.values():
        _narrow(child, inputs, commands)
    return node


SCHEMA_CACHE_SIZE = 64
"""Narrowed plan schemas kept (one per distinct pair of input fds and available commands)."""

_schema_json = msgspec.json.Decoder(dict[str, Any])


def _shared_schema(inputs: Sequence[InputInfo], commands: Sequence[str]) -> dict[str, Any]:
    """:func:`plan_schema_for`, but one shared object per ``(fds, commands)``: never mutate it."""
    return _narrowed_schema(tuple(i.fd for i in inputs), tuple(c for c in commands if c in BUILTIN_COMMANDS))


@functools.lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def _narrowed_schema(fds: tuple[int, ...], commands: tuple[str, ...]) -> dict[str, Any]:
    """The narrowed schema, computed once per ``(fds, commands)`` (a deep copy and walk: ~1.7 ms)."""
    schema = copy.deepcopy(plan_json_schema_compact())
    _narrow(schema, list(fds), list(commands))
    if not fds:
        variants = schema["properties"]["workflow"]["items"]["anyOf"]
        variants[:] = [v for v in variants if v["properties"]["action"].get("enum") != ["read_input"]]
    return schema


def plan_schema_for(inputs: Sequence[InputInfo], commands: Sequence[str]) -> dict[str, Any]:
    """Return the plan's structured-output schema narrowed to one task.

    ``read_input.source`` becomes an ``enum`` of the inputs given (``["fd:3"]``
    for one ``--input`` file), ``spawn_command.cmd`` an ``enum`` of
    ``commands``, and ``input_fd``/``output_fd``/``context_fds`` the inputs or
    the scratch buffers :data:`SCRATCH_FDS`; without inputs the ``read_input``
    action is not offered at all. A grammar-constrained model then cannot
    invent a file descriptor or a command.

    Parameters
    ----------
    inputs : sequence of InputInfo
    commands : sequence of str
        Built-in commands available here (a subset of ``BUILTIN_COMMANDS``).

    Returns
    -------
    dict
        A new schema; :func:`~tandem.messages.plan_json_schema_compact` is not modified.

    Notes
    -----
    The schema depends only on the inputs' fds and the commands, and
    :func:`~tandem.messages.plan_json_schema_compact` never changes in a
    process: it is computed once per pair (the last :data:`SCHEMA_CACHE_SIZE`
    pairs are kept) and each call returns a copy of it (an encode and decode,
    ~0.14 ms, instead of a deep copy and walk, ~1.7 ms). The planner itself
    sends the kept schema as it is: it only encodes it.

    Examples
    --------
    >>> schema = plan_schema_for([InputInfo(fd=3)], ["grep", "sed"])
    >>> steps = schema["properties"]["workflow"]["items"]["anyOf"]
    >>> steps[0]["properties"]["params"]["properties"]["source"]
    {'enum': ['fd:3']}
    """
    return _schema_json.decode(msgspec.json.encode(_shared_schema(inputs, commands)))


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
    """Serve ``tandem.planner.plan``, ``tandem.planner.remember`` and ``tandem.planner.recipes``.

    Parameters
    ----------
    bus, config
    concurrency : int
        Most requests in flight at once.
    recipes : sequence of Recipe or None
        The shipped recipes to load into the bucket (default: those in
        ``tandem.configs/recipes``); tests pass their own.
    """

    name = "planner"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (subjects.ROUTER_COMPLETE,)
    jetstream: ClassVar[tuple[str, ...]] = ("kv {config.plan_cache_bucket}",)
    admin: ClassVar[tuple[str, ...]] = (PLANNER_RECIPES,)  # tandem plans add|remove: the admin credential, not client

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 32, recipes: Sequence[Any] | None = None) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.kv: KeyValue | None = None
        self.recipes: RecipeStore | None = None
        self._shipped = recipes

    def endpoints(self) -> list[Endpoint]:
        timeout = self.config.nats.request_timeout_s
        return [
            Endpoint(subjects.PLANNER_PLAN, PlanRequest, self.plan, timeout=timeout, idempotent=True),
            Endpoint(subjects.PLANNER_REMEMBER, RememberPlan, self.remember, timeout=10, idempotent=True),
            Endpoint(PLANNER_RECIPES, RecipeRequest, self.manage_recipes, timeout=10),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        self.kv = await self.bus.key_value(self.config.plan_cache_bucket)
        self.recipes = RecipeStore(self.kv, self._shipped)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the endpoints, and keep the recipes in memory current (:meth:`RecipeStore.watch`), until cancelled.

        Plans are served from the start: until the watch is primed, they read the recipes from the bucket.
        """
        async with anyio.create_task_group() as tg:
            await tg.start(super().run)
            assert self.recipes is not None
            tg.start_soon(self.recipes.watch)
            task_status.started()

    async def plan(self, request: PlanRequest) -> PlanReply:
        """Return a validated plan: from the cache, a recipe, or the planning tier.

        Raises
        ------
        PlanningFailed
            When every planning attempt gave an unusable plan or the model failed.
        """
        fingerprint = plan_fingerprint(request.task, request.inputs)
        env = {"correlation_id": request.correlation_id, "conversation_id": request.conversation_id}
        if request.use_cache and (cached := await self._cached(fingerprint, request)) is not None:
            return PlanReply(plan=cached, fingerprint=fingerprint, cached=True, **env)
        commands = available_commands()
        from_recipe = await self._from_recipe(request, [c.name for c in commands])
        if from_recipe is not None:
            plan, recipe, values, model, calls = from_recipe
            log.info("planner: recipe %s %s", recipe, values)
            return PlanReply(plan=plan, fingerprint=fingerprint, model=model, attempts=calls, recipe=recipe,
                             recipe_params=values, **env)
        messages = self._prompt(request, commands)
        schema = _shared_schema(request.inputs, [c.name for c in commands])
        fds = {i.fd for i in request.inputs}
        attempts = self.config.two_stage.planning_attempts
        error: Exception | None = None
        for attempt in range(1, attempts + 1):
            limit = self._planning_budget(messages)
            reply = await self._complete(request, messages, schema, "execution_plan", limit)
            if reply.finish_reason == "length":  # cut off: not "invalid JSON", and retrying the same cap won't help
                configured = self.config.two_stage.max_planning_tokens
                why = (f" (the planning model's context leaves room for {limit} of max_planning_tokens {configured})"
                       if limit < configured else "")
                raise PlanTruncated(
                    f"truncated_output: the plan of {reply.model} was cut off at max_planning_tokens {limit}{why}; "
                    "reasoning models count hidden reasoning against it: raise two_stage.max_planning_tokens")
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

    async def manage_recipes(self, request: RecipeRequest) -> RecipeList | RecipeReply | Ack:
        """List, show, add or remove recipes (``tandem plans ...``).

        Raises
        ------
        RecipeNotFound
            Showing or removing a name that is not stored (code ``not_found``).
        RecipeInvalid
            Adding a recipe that fails vetting, or exists without ``replace`` (``recipe_invalid``).
        """
        assert self.recipes is not None
        env = {"correlation_id": request.correlation_id, "conversation_id": request.conversation_id}
        match request:
            case ListRecipes():
                return RecipeList(recipes=await self.recipes.all(), **env)
            case ShowRecipe(name=name):
                return RecipeReply(recipe=await self.recipes.get(name), **env)
            case AddRecipe(recipe=recipe, replace=replace):
                return RecipeReply(recipe=await self.recipes.add(recipe, replace=replace), **env)
            case RemoveRecipe(name=name):
                await self.recipes.remove(name)
                return Ack(**env)
        raise AssertionError(request)

    def _planning_budget(self, messages: list[ChatMessage]) -> int:
        """``max_planning_tokens``, or what the planning models' context leaves after the prompt when smaller."""
        prompt = sum(len(m.content) for m in messages) // 4 + 16
        room = self.config.context_tokens("planning") - prompt
        return max(64, min(self.config.two_stage.max_planning_tokens, room))

    async def _complete(self, request: PlanRequest, messages: list[ChatMessage], schema: dict[str, Any],
                        schema_name: str, max_tokens: int, temperature: float | None = None) -> CompletionReply:
        env = {"correlation_id": request.correlation_id, "conversation_id": request.conversation_id}
        try:
            return await self.bus.request(
                subjects.ROUTER_COMPLETE,
                CompletionRequest(task="planning", messages=messages, response_schema=schema, schema_name=schema_name,
                                  max_tokens=max_tokens, timeout_s=self.config.nats.request_timeout_s,
                                  temperature=temperature, **env),
                CompletionReply,
                timeout=self.config.nats.request_timeout_s,
                idempotent=True,
            )
        except TandemError as exc:
            raise PlanningFailed(f"planning model failed: {exc}") from exc

    async def _from_recipe(self, request: PlanRequest, commands: list[str],
                           ) -> tuple[ExecutionPlan, str, dict[str, str], str, int] | None:
        """Plan from a recipe: pre-filter, menu, fill, validate; ``None`` when no recipe fits.

        Raises
        ------
        PlanningFailed
            When the model cannot be reached (the caller would fail the same way).
        """
        assert self.recipes is not None
        candidates = prefilter(await self.recipes.current(), request.task, request.inputs, commands)
        if not candidates:
            return None
        listing = _listing(request.inputs, preview=False)  # a short prompt: the menu call is on the critical path
        menu = "\n".join(f"- {c.recipe.name}: {c.recipe.description}" for c in candidates)
        # max_tokens leaves room for the whitespace a small model pads grammar-constrained JSON with
        try:
            reply = await self._complete(request, [
                ChatMessage(role="system", content=_MENU_SYSTEM),
                ChatMessage(role="user", content=f"Task: {request.task}\nInputs:\n{listing}\nRecipes:\n{menu}\n"
                                                 f'- {NONE}: no recipe does this task\nAnswer {{"recipe": NAME}}.'),
            ], menu_schema([c.recipe.name for c in candidates]), "recipe_choice", 100,
                temperature=0.0)  # a choice, not prose: the model's most likely answer every time
        except PlanningFailed as exc:  # e.g. JSON cut short: no recipe, write a plan instead
            log.info("planner: recipe menu failed: %s", exc)
            return None
        model, calls = reply.model, 1
        try:
            name = _menu_answer.decode(reply.content).recipe
        except msgspec.DecodeError as exc:
            log.info("planner: unusable recipe choice %r: %s", reply.content[:200], exc)
            return None
        chosen = next((c for c in candidates if c.recipe.name == name), None)
        if chosen is None:
            log.info("planner: no recipe chosen (%s) from %s", name, [c.recipe.name for c in candidates])
            return None
        values = chosen.fixed()
        if values is None:
            values = await self._fill(request, chosen, listing)
            calls += 1
            if values is None:
                return None
        try:
            values = check_values(chosen, values)
            plan = instantiate(chosen.recipe, values, request.inputs)
        except RecipeInvalid as exc:
            log.info("planner: recipe %s not usable: %s", chosen.recipe.name, exc)
            return None
        return plan, chosen.recipe.name, values, model, calls

    async def _fill(self, request: PlanRequest, chosen: Candidate, listing: str) -> dict[str, Any] | None:
        params = "\n".join(
            f"- {p.name}: {p.description}" + (f" (one of: {', '.join(chosen.choices[p.name])})"
                                              if chosen.choices[p.name] else "")
            for p in chosen.recipe.params
        )
        reply = await self._complete(request, [
            ChatMessage(role="system", content=_FILL_SYSTEM),
            ChatMessage(role="user", content=f"Task: {request.task}\nInputs:\n{listing}\n"
                                             f"Recipe: {chosen.recipe.name}: {chosen.recipe.description}\n"
                                             f"Parameters:\n{params}\nAnswer with a JSON object of the values."),
        ], fill_schema(chosen), "recipe_params", 200, temperature=0.0)
        try:
            values = msgspec.json.decode(reply.content)
        except msgspec.DecodeError as exc:
            log.info("planner: unusable recipe parameters %r: %s", reply.content[:200], exc)
            return None
        return values if isinstance(values, dict) else None

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

    def _prompt(self, request: PlanRequest, commands: Sequence[CommandInfo]) -> list[ChatMessage]:
        names = {c.name for c in commands}
        system = _SYSTEM.format(version=PLAN_VERSION, commands=_describe(commands), sources=_sources(request.inputs),
                                scratch=", ".join(map(str, SCRATCH_FDS)))
        examples = (*_EXAMPLES, _PANDOC_EXAMPLE) if "pandoc" in names else _EXAMPLES
        shots = [ChatMessage(role=r, content=c) for q, a in examples for r, c in (("user", q), ("assistant", a))]
        return [
            ChatMessage(role="system", content=system),
            *shots,
            ChatMessage(role="user", content=f"Task: {request.task}\nInputs:\n{_listing(request.inputs)}"),
        ]


class _MenuAnswer(msgspec.Struct, frozen=True):
    recipe: str


_menu_answer = msgspec.json.Decoder(_MenuAnswer)


def _listing(inputs: Sequence[InputInfo], *, preview: bool = True) -> str:
    if not inputs:
        return "none"
    if not preview:
        return "\n".join(f"- fd:{i.fd} ({i.type}, {i.size} chars)" for i in inputs)
    return "\n".join(f"- fd:{i.fd} ({i.type}, {i.size} chars), starts with:\n{i.preview}" for i in inputs)
