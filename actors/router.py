"""Router actor: task → tier → ordered model candidates → one completion, with fallback.

The only actor that talks to model providers. Design note 004 is the
specification: task layer → tier layer → physical model layer (§2.1), a param
guard and normalisation per provider (§2.3), a fallback policy (§1.4) and a
JSONL usage log (§1.4); design note 002 adds skill-based ranking.

The chain, for one request::

    candidates = override models | skill ranking | tier list
                 − models lacking a needed capability (NoCandidate if none left)
                 (models in cooldown go last)
    for each candidate, never revisiting one:
        call ── ok ──────────────────────────────► reply
          └─ transient (429, 5xx, 408, timeout) ─► retry the same model after a backoff,
          │                                        or Retry-After when it fits the budget,
          │                                        up to its retry cap; else next candidate
          └─ non-transient (400, 401, 403, bad body or JSON) ─► next candidate
    all within one deadline (request.timeout_s), max_attempts calls and
    total_wait_budget_s of sleeping; otherwise FallbackExhausted listing the chain.

No provider retries on its own (no hidden SDK retries). A model that keeps
failing is put in cooldown in a JetStream KV bucket that every replica watches.

A rejected credential (401/403, :class:`~tandem.services.errors.CredentialRejected`)
still moves on to the next candidate, but loudly: an error-level log line on
stderr naming the provider and its key's environment variable (once per
provider and process), ``credential_rejected`` in the usage log (a column of
``tandem usage``); the same model is never retried on it.

A structured-output answer that stopped at its token limit (``finish_reason
== "length"``) is returned as it is, with that finish reason, instead of failing
the JSON check: the caller reports it as truncated (the planner's
:class:`~tandem.services.errors.PlanTruncated`).

Skills (design note 002): :func:`match_skill` is the task analyser's rule
stage (task text → skill, with why); the executor adds the optional model stage
and sends the skill along; :func:`rank_by_skill` is the skill matcher's ranking.

The pipeline shape (:meth:`RouterActor.shape`) is single stage when
``two_stage.enabled`` is false, or when :class:`TwoStageHealth` finds two stage
performing poorly (note 000, fallback 3): too many recent plan runs failed, or
planning calls were too slow on average; the reason says which.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import ClassVar

import anyio
import httpx
import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from opentelemetry import trace
from tandem.messages import (
    Attempt,
    CompletionReply,
    CompletionRequest,
    RoutingEvent,
    ShapeDecision,
    ShapeRequest,
    TokenUsage,
    subjects,
    utcnow,
)
from tandem.services.bus import Bus
from tandem.services.config import Config, ModelConfig, ProviderConfig
from tandem.services.errors import (
    CredentialRejected,
    FallbackExhausted,
    LLMError,
    MalformedResponse,
    NoCandidate,
    ProviderStatusError,
    ProviderTimeout,
    TandemError,
)
from tandem.services.llm import (
    AzureOpenAIProvider,
    GeminiProvider,
    LlamaCppProvider,
    LocalModelServer,
    OpenAIChatProvider,
    Provider,
    normalize,
    unmet_needs,
)
from tandem.services.usage import UsageLog, UsageRecord, usage_log_path

from ._base import Actor, Endpoint

__all__ = ["Cooldown", "RouterActor", "SkillMatch", "TwoStageHealth", "make_provider", "match_skill", "rank_by_skill"]

log = logging.getLogger("tandem.router")


def make_provider(name: str, config: ProviderConfig, *, base_url: str | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    """Return the provider for ``config.kind``."""
    match config.kind:
        case "openai":
            cls: type[Provider] = OpenAIChatProvider
        case "llamacpp_embedded":
            cls = LlamaCppProvider
        case "azure":
            cls = AzureOpenAIProvider
        case "gemini":
            cls = GeminiProvider
    return cls(name, config, base_url=base_url, transport=transport)


def price_per_token(model: ModelConfig) -> float:
    """Mean USD price of one token (input and output weighted equally)."""
    return (model.price.input_per_1m + model.price.output_per_1m) / 2e6


def call_cost(model: ModelConfig, usage: TokenUsage) -> float:
    """USD cost of one call from the registry's prices."""
    return (usage.input_tokens * model.price.input_per_1m + usage.output_tokens * model.price.output_per_1m) / 1e6


def rank_by_skill(config: Config, skill: str) -> list[str]:
    """Order a skill's models by ``performance_weight * performance + cost_weight * (1 - price / max price)``.

    Design note 002 (``llm_routing``: preferred, fallback, cost_weight,
    performance_weight). Ties keep the skill's own order (preferred first).
    """
    s = config.skills[skill]
    keys = list(dict.fromkeys([s.preferred, *s.fallback]))
    prices = {k: price_per_token(config.models[k]) for k in keys}
    top = max(prices.values()) or 1.0

    def score(key: str) -> float:
        return s.performance_weight * config.models[key].performance + s.cost_weight * (1 - prices[key] / top)

    return sorted(keys, key=score, reverse=True)


class SkillMatch(msgspec.Struct, frozen=True, kw_only=True):
    """The task analyser's answer: a skill and why (``rule: …`` or ``model: …``)."""

    skill: str
    reason: str
    score: int = 0


def match_skill(config: Config, task: str, *, router_task: str = "manual_transform") -> SkillMatch | None:
    """Rule stage of the task analyser (note 002): the skill whose keyword rules hit ``task`` most.

    Each skill's ``keywords`` are case-insensitive regular expressions; a skill's
    score is the number of rules that match, plus one for each of its
    ``capabilities`` named in the task (``format_conversion`` as "format
    conversion"). Ties go to the skill listed first. Skills that do not apply to
    ``router_task`` are left out.

    Returns
    -------
    SkillMatch or None
        ``None`` when the analyser is off or no skill reaches ``analyser.min_score``.

    Examples
    --------
    >>> from tandem.services.config import ModelConfig, ProviderConfig, SkillConfig
    >>> c = Config(providers={"p": ProviderConfig()}, models={"m": ModelConfig(provider="p", model="m")},
    ...            skills={"conversion": SkillConfig(preferred="m", keywords=[r"\\bconvert"])})
    >>> match_skill(c, "Convert this to Textile").reason
    "rule: 'Convert' matches conversion"
    """
    if not config.analyser.enabled:
        return None
    best: SkillMatch | None = None
    for name, skill in config.skills.items():
        if router_task not in skill.tasks:
            continue
        hits: list[str] = []
        for rule in skill.keywords:
            m = re.search(rule, task, re.IGNORECASE)
            if m:
                hits.append(m.group(0).strip())
        lowered = task.lower()
        hits += [c for c in skill.capabilities if c.replace("_", " ") in lowered]
        if len(hits) >= config.analyser.min_score and (best is None or len(hits) > best.score):
            shown = ", ".join(repr(h) for h in hits[:3])
            best = SkillMatch(skill=name, score=len(hits),
                              reason=f"rule: {shown} match{'es' if len(hits) == 1 else ''} {name}")
    return best


def skill_schema(config: Config) -> dict:
    """JSON Schema of the analyser's model stage: one of the skill names, or ``none``."""
    return {"type": "object", "properties": {"skill": {"type": "string", "enum": [*config.skills, "none"]}},
            "required": ["skill"], "additionalProperties": False}


HEALTH_WRITE_BEHIND_S = 0.25
"""Seconds a successful plan or a planning latency waits to be written with those recorded meanwhile."""


class TwoStageHealth:
    """Recent two-stage outcomes in a JetStream KV bucket, shared by every replica (note 000, fallback 3).

    The executor records each executed plan (ok or failed) under ``plans``, the
    router each planning call's latency under ``planning``; :meth:`verdict` says
    why new tasks should run single stage, or ``None``. Writes are
    revision-checked and best effort: the numbers are advisory, a lost update
    never fails a task.

    A failed plan is written at once (the next shape decision counts it). A successful
    plan or a planning latency is written :data:`HEALTH_WRITE_BEHIND_S` later, together with
    every record of the same key made meanwhile in this process: one read and one write per
    key for all the tasks of that moment instead of two per task (at most the bucket's
    ``window`` values wait; the oldest beyond it would be dropped by the write anyway).
    """

    def __init__(self, kv: KeyValue | None, config: Config, *, write_behind_s: float | None = None) -> None:
        self.kv = kv
        self.policy = config.two_stage.fallback
        self.write_behind_s = HEALTH_WRITE_BEHIND_S if write_behind_s is None else write_behind_s
        self._pending: dict[str, list[object]] = {}  # key -> values recorded here, not written yet
        self._waiting: set[str] = set()  # keys whose write-behind is under way
        self._writes: dict[str, anyio.Lock] = defaultdict(anyio.Lock)  # one write per key at a time here

    async def _get(self, key: str) -> tuple[list, int]:
        assert self.kv is not None
        try:
            entry = await self.kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):  # nothing recorded yet
            return [], 0
        try:
            values = msgspec.json.decode(entry.value or b"[]")
        except msgspec.DecodeError:
            values = []
        return values if isinstance(values, list) else [], entry.revision or 0

    def record_nowait(self, key: str, value: object) -> bool:
        """Keep ``value`` for the write-behind of ``key`` under way, without a task; ``False`` when none is (the
        caller records it with :meth:`record_plan` or :meth:`record_planning`, which starts one).

        What :meth:`_record` does for a value that joins a waiting write-behind, minus the task around it.
        """
        if self.kv is None:
            return True  # nothing is recorded anyway
        if key not in self._waiting:
            return False
        pending = self._pending.setdefault(key, [])
        pending.append(value)
        del pending[:-max(self.policy.window, 1)]
        return True

    async def _record(self, key: str, value: object, *, at_once: bool) -> None:
        """Keep ``value`` for ``key``; write it now (``at_once``), or with the others after the write-behind."""
        if self.kv is None:
            return
        pending = self._pending.setdefault(key, [])
        pending.append(value)
        del pending[:-max(self.policy.window, 1)]
        if not at_once:
            if key in self._waiting:
                return  # the write-behind under way takes it along
            self._waiting.add(key)
            try:
                await anyio.sleep(self.write_behind_s)
            finally:
                self._waiting.discard(key)
        async with self._writes[key]:
            values = self._pending.pop(key, [])  # what a write in between has not taken already
            if values:
                await self._append(key, values)

    async def _append(self, key: str, values: list[object]) -> None:
        if self.kv is None:
            return
        for _ in range(5):
            try:
                stored, revision = await self._get(key)
                new = msgspec.json.encode([*stored, *values][-self.policy.window:])
                if revision:
                    await self.kv.update(key, new, last=revision)
                else:
                    await self.kv.create(key, new)
            except nats.js.errors.KeyWrongLastSequenceError:  # somebody wrote in between: read again
                log.debug("two-stage health: %s changed under the update", key)
                continue
            except (nats.errors.Error, TandemError) as exc:  # advisory numbers: never fail a task on them
                log.info("two-stage health: %s not recorded: %s", key, exc)
                return
            return
        log.info("two-stage health: %s not recorded (kept changing)", key)

    async def record_plan(self, ok: bool, *, at_once: bool = False) -> None:
        """Record one executed two-stage plan: a failed one (or with ``at_once``) written before this returns,
        a successful one with the write-behind (this call may be the one that waits and writes)."""
        await self._record("plans", ok, at_once=at_once or not ok)

    async def record_planning(self, latency_s: float) -> None:
        """Record one planning call's latency, seconds (written with the write-behind)."""
        await self._record("planning", round(latency_s, 3), at_once=False)

    async def verdict(self) -> str | None:
        """Return why two stage performs poorly now, or ``None`` (also when the numbers cannot be read)."""
        if self.kv is None:
            return None
        try:
            return await self._verdict()
        except (nats.errors.Error, TandemError) as exc:  # advisory numbers: never fail a task on them
            log.info("two-stage health: not read: %s", exc)
            return None

    async def _verdict(self) -> str | None:
        p = self.policy
        plans, _ = await self._get("plans")
        if len(plans) >= max(p.min_runs, 1):
            failed = sum(1 for ok in plans if not ok)
            if failed / len(plans) >= p.max_failure_rate:
                return (f"two stage performing poorly: {failed} of the last {len(plans)} plans failed "
                        f"(two_stage.fallback.max_failure_rate {p.max_failure_rate:g})")
        if p.max_planning_latency_s is not None:
            latencies, _ = await self._get("planning")
            if len(latencies) >= max(p.min_runs, 1):
                mean = sum(latencies) / len(latencies)
                if mean > p.max_planning_latency_s:
                    return (f"two stage performing poorly: planning took {mean:.1f}s on average over the last "
                            f"{len(latencies)} calls (two_stage.fallback.max_planning_latency_s "
                            f"{p.max_planning_latency_s:g})")
        return None


_KV_KEY = re.compile(r"[^-/_=.a-zA-Z0-9]")


class Cooldown:
    """Models put aside after repeated transient failures, shared through JetStream KV.

    Each replica counts its own failures; when a model reaches ``failures``
    within ``window_s`` the replica writes ``{"until": epoch seconds}`` under
    the model key, and every replica's watcher mirrors the bucket locally.
    """

    class Entry(msgspec.Struct, frozen=True):
        until: float
        reason: str = ""

    def __init__(self, kv: KeyValue | None, *, failures: int, window_s: float, cooldown_s: float) -> None:
        self.kv = kv
        self.failures, self.window_s, self.cooldown_s = failures, window_s, cooldown_s
        self.until: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = defaultdict(deque)

    @staticmethod
    def key(model: str) -> str:
        return _KV_KEY.sub("_", model)

    def cooling(self, model: str) -> bool:
        """Whether ``model`` is in cooldown now."""
        return self.until.get(self.key(model), 0.0) > time.time()

    async def failed(self, model: str, reason: str) -> None:
        """Count a transient failure; start a cooldown when the threshold is reached."""
        t = time.monotonic()
        recent = self._recent[model]
        recent.append(t)
        while recent and t - recent[0] > self.window_s:
            recent.popleft()
        if len(recent) >= self.failures and not self.cooling(model):
            recent.clear()
            until = time.time() + self.cooldown_s
            self.until[self.key(model)] = until
            log.warning("router: %s in cooldown for %gs after %d failures (%s)", model, self.cooldown_s,
                        self.failures, reason)
            if self.kv is not None:
                await self.kv.put(self.key(model), msgspec.json.encode(Cooldown.Entry(until=until, reason=reason)))

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Mirror the bucket until cancelled (started once the initial values are loaded)."""
        assert self.kv is not None
        watcher = await self.kv.watchall()
        started = False
        try:
            async for entry in watcher:
                if entry is None:  # initial values delivered
                    if not started:
                        started = True
                        task_status.started()
                    continue
                try:
                    self.until[entry.key] = msgspec.json.decode(entry.value or b"", type=Cooldown.Entry).until
                except msgspec.DecodeError:
                    self.until.pop(entry.key, None)  # deleted or foreign value
        finally:
            with anyio.CancelScope(shield=True):
                await watcher.stop()


class RouterActor(Actor):
    """Serve ``tandem.router.complete`` and ``tandem.router.shape``.

    Parameters
    ----------
    bus : Bus
    config : Config
    transport : httpx.AsyncBaseTransport or None
        Injected into every provider's client (tests: ``httpx.MockTransport``).
    sleep : callable
        ``async (seconds) -> None`` used for backoff (tests record waits).
    """

    name = "router"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    publishes: ClassVar[tuple[str, ...]] = (subjects.EVENT_ROUTED,)
    jetstream: ClassVar[tuple[str, ...]] = ("kv {config.router.cooldown.bucket}", "kv {config.two_stage.fallback.bucket}")

    def __init__(self, bus: Bus, config: Config, *, transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep, concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.transport = transport
        self.sleep = sleep
        self.providers: dict[str, Provider] = {}
        self.usage = UsageLog(None)
        self.cooldown = Cooldown(None, failures=config.router.cooldown.failures,
                                 window_s=config.router.cooldown.window_s, cooldown_s=config.router.cooldown.cooldown_s)
        self._stack: AsyncExitStack | None = None
        self._start_lock = anyio.Lock()
        self.health = TwoStageHealth(None, config)
        self.rejected_credentials: set[str] = set()

    def endpoints(self) -> list[Endpoint]:
        return [
            # idempotent: a request lost with its replica is sent again to a live one (a model call repeated)
            Endpoint(subjects.ROUTER_COMPLETE, CompletionRequest, self.complete,
                     timeout=self.config.nats.request_timeout_s, idempotent=True),
            Endpoint(subjects.ROUTER_SHAPE, ShapeRequest, self.shape, timeout=5, idempotent=True),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        self._stack = stack
        for name, provider in self.config.providers.items():
            if provider.kind != "llamacpp_embedded":
                self.providers[name] = p = make_provider(name, provider, transport=self.transport)
                stack.push_async_callback(p.aclose)
        self.usage = UsageLog(usage_log_path(self.config.router.usage_log))
        stack.callback(self.usage.close)
        self.cooldown.kv = await self.bus.key_value(self.config.router.cooldown.bucket)
        self.health.kv = await self.bus.key_value(self.config.two_stage.fallback.bucket)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        await tg.start(self.cooldown.watch)

    async def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is not None:
            return provider
        async with self._start_lock:  # start the embedded model once, on first use
            if name not in self.providers:
                assert self._stack is not None
                cfg = self.config.providers[name]
                alias = next((m.model for m in self.config.models.values() if m.provider == name), "local")
                server = await self._stack.enter_async_context(LocalModelServer(alias=alias))
                self.providers[name] = p = make_provider(name, cfg, base_url=server.base_url, transport=self.transport)
                self._stack.push_async_callback(p.aclose)
            return self.providers[name]

    def candidates(self, request: CompletionRequest) -> tuple[str, list[str]]:
        """Return ``(tier, model keys in the order to try)``.

        Raises
        ------
        NoCandidate
            When no model is configured, or none has the capabilities the
            request needs (no HTTP call is made).
        """
        override = self.config.task_overrides.get(request.task)
        if override is not None and override.models:
            tier, keys = f"override:{request.task}", list(override.models)
        elif request.skill:  # a skill names its own models: no tier needed (design note 002)
            if request.skill not in self.config.skills:
                raise NoCandidate(f"unknown skill {request.skill!r}")
            tier, keys = f"skill:{request.skill}", rank_by_skill(self.config, request.skill)
        else:
            tier = self.config.tier_for(request.task, request.tier)
            keys = list(self.config.tiers[tier])
        unmet = {k: unmet_needs(self.config.models[k], request) for k in keys}
        fit = [k for k in keys if not unmet[k]]
        if not fit:
            why = "; ".join(f"{k} lacks {', '.join(u)}" for k, u in unmet.items()) or f"tier {tier!r} is empty"
            raise NoCandidate(f"no model for task {request.task!r} (tier {tier}): {why}")
        cooling = {k for k in fit if self.cooldown.cooling(k)}
        return tier, [k for k in fit if k not in cooling] + [k for k in fit if k in cooling]

    async def complete(self, request: CompletionRequest) -> CompletionReply:
        """Answer from the first candidate that succeeds within the request's budget.

        Raises
        ------
        NoCandidate
            When no configured model can serve the request.
        FallbackExhausted
            When every candidate failed, or attempts, deadline or wait budget ran out.
        """
        tier, keys = self.candidates(request)
        policy = self.config.router.fallback
        deadline = anyio.current_time() + request.timeout_s
        attempts: list[Attempt] = []
        waited = 0.0
        span = trace.get_current_span()
        span.set_attribute("tandem.router.tier", tier)
        try:
            for key in keys:
                model = self.config.models[key]
                provider = await self._provider(model.provider)
                params = normalize(model, request)
                retries = 0
                wait = 0.0
                while True:
                    left = deadline - anyio.current_time()
                    if len(attempts) >= policy.max_attempts or left <= 0:
                        why = "max attempts reached" if left > 0 else "deadline passed"
                        raise _exhausted(f"{why} after {len(attempts)} calls", attempts)
                    started = time.perf_counter()
                    try:
                        with anyio.fail_after(left):
                            result = await provider.chat(model, params, timeout=left,
                                                         conversation_id=request.conversation_id)
                        if params.schema is not None and result.finish_reason != "length":
                            _check_json(key, result.content)  # a cut-off answer goes back as such
                    except (LLMError, TimeoutError) as raw:
                        exc = raw if isinstance(raw, LLMError) else ProviderTimeout(f"{key}: deadline reached")
                        attempts.append(self._failed(request, tier, key, model, attempts, exc, started, wait))
                        if isinstance(exc, CredentialRejected):
                            self._credential_rejected(key, model, exc)
                        if not self._transient(exc):
                            break  # never retry the same model on a non-transient error
                        await self.cooldown.failed(key, type(exc).__name__)
                        wait = self._retry_wait(exc, retries, deadline - anyio.current_time(),
                                                policy.total_wait_budget_s - waited)
                        if wait is None:
                            wait = 0.0
                            break  # move on at once
                        await self.sleep(wait)
                        waited += wait
                        retries += 1
                        continue
                    usage = TokenUsage(input_tokens=result.input_tokens, output_tokens=result.output_tokens)
                    cost = call_cost(model, usage)
                    if request.task == "planning" and not self.health.record_nowait(
                            "planning", round(result.latency_ms / 1000, 3)):  # else a write-behind starts
                        self.start_soon(self.health.record_planning, result.latency_ms / 1000)
                    attempts.append(Attempt(model=key, ok=True, latency_ms=round(result.latency_ms, 3), waited_s=wait))
                    self.usage.write(UsageRecord(
                        ts=utcnow(), task=request.task, tier=tier, model=key, provider=model.provider,
                        fallback_chain=[a.model for a in attempts], attempt=len(attempts),
                        latency_ms=round(result.latency_ms, 3), usage=usage, cost_usd=cost,
                        request_id=request.correlation_id, skill=request.skill))
                    return CompletionReply(
                        correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                        content=result.content, model=result.model, provider=model.provider,
                        latency_ms=round(result.latency_ms, 3), finish_reason=result.finish_reason, usage=usage,
                        fallback_chain=[a.model for a in attempts], cost_usd=cost,
                    )
            raise _exhausted(f"all {len(keys)} candidates failed", attempts)
        finally:
            span.set_attribute("tandem.router.fallback_chain", [a.model for a in attempts])
            # the event must not delay the reply: publish it from the actor's task group
            self.start_soon(self.bus.publish, subjects.EVENT_ROUTED, RoutingEvent(
                correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                task=request.task, tier=tier, skill=request.skill, attempts=attempts,
                model=attempts[-1].model if attempts and attempts[-1].ok else "",
                ok=bool(attempts) and attempts[-1].ok))

    def _credential_rejected(self, key: str, model: ModelConfig, exc: CredentialRejected) -> None:
        """Say it loudly, once per provider and process: a wrong key must not hide behind a fallback."""
        if model.provider in self.rejected_credentials:
            return
        self.rejected_credentials.add(model.provider)
        env = self.config.providers[model.provider].api_key_env
        where = f"check {env}" if env else "the provider sets no api_key_env; check its headers"
        log.error("credential rejected: provider %r refused the key for model %s (%s); %s. "
                  "Moving on to the next candidate.", model.provider, key,
                  str(exc)[:200], where)

    def _transient(self, exc: LLMError) -> bool:
        policy = self.config.router.fallback
        if isinstance(exc, ProviderStatusError):
            return exc.status_code in policy.transient_statuses
        if isinstance(exc, MalformedResponse):
            return False
        return exc.transient and policy.retry_on_timeout

    def _retry_wait(self, exc: LLMError, retries: int, time_left: float, budget_left: float) -> float | None:
        """Seconds to wait before retrying the same model, or ``None`` to move on."""
        policy = self.config.router.fallback
        status = getattr(exc, "status_code", None)
        override = policy.per_status.get(status) if status is not None else None
        cap = override.max_retries if override and override.max_retries is not None else policy.max_retries_per_model
        limit = min(time_left, budget_left)
        retry_after = getattr(exc, "retry_after", None) if policy.honour_retry_after else None
        if retry_after is not None:
            # the server said when: wait that long if it fits, else move on at once
            return retry_after if retries < max(cap, 1) and retry_after <= limit else None
        if retries >= cap:
            return None
        base = override.backoff_s if override and override.backoff_s is not None else policy.backoff_s
        wait = base * policy.backoff_multiplier**retries
        return wait if wait <= limit else None

    def _failed(self, request: CompletionRequest, tier: str, key: str, model: ModelConfig, attempts: list[Attempt],
                exc: LLMError, started: float, waited: float) -> Attempt:
        ms = round((time.perf_counter() - started) * 1000, 3)
        status = getattr(exc, "status_code", None)
        log.info("router: %s failed: %s", key, exc)
        self.usage.write(UsageRecord(
            ts=utcnow(), task=request.task, tier=tier, model=key, provider=model.provider,
            fallback_chain=[*[a.model for a in attempts], key], attempt=len(attempts) + 1, latency_ms=ms,
            request_id=request.correlation_id, ok=False, error=str(exc)[:300], error_class=type(exc).__name__,
            status_code=status, skill=request.skill, credential_rejected=isinstance(exc, CredentialRejected)))
        return Attempt(model=key, ok=False, latency_ms=ms, error_class=type(exc).__name__, status_code=status,
                       error=str(exc)[:300], waited_s=waited)

    async def shape(self, request: ShapeRequest) -> ShapeDecision:
        """Decide single vs two stage (design note 000 phase 4) and say why, with the tiers' costs."""
        cfg = self.config
        plan_key = cfg.tiers[cfg.tier_for("planning")][0]
        exec_key = cfg.tiers[cfg.tier_for("single_stage")][0]
        plan_m, exec_m = cfg.models[plan_key], cfg.models[exec_key]
        tokens = request.prompt_tokens
        single = call_cost(exec_m, TokenUsage(input_tokens=tokens, output_tokens=cfg.two_stage.max_execution_tokens))
        planning = call_cost(plan_m, TokenUsage(input_tokens=tokens, output_tokens=cfg.two_stage.max_planning_tokens))
        threshold = cfg.two_stage.complexity_threshold
        two = request.complexity >= threshold
        reason = (f"complexity {request.complexity:.2f} {'≥' if two else '<'} threshold {threshold:.2f}; "
                  f"planning on {plan_key} ≈ ${planning:.4f} + execution on {exec_key} ≈ ${single:.4f} "
                  f"vs single stage ≈ ${single:.4f}")
        if not cfg.two_stage.enabled:
            two, reason = False, "two stage is off (two_stage.enabled: false)"
        elif two and (poor := await self.health.verdict()) is not None:
            two, reason = False, f"{poor}; {reason}"
        return ShapeDecision(correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                             mode="two_stage" if two else "single_stage", reason=reason,
                             planning_model=plan_key, execution_model=exec_key,
                             est_cost_usd=round(single + planning if two else single, 6))


def _check_json(key: str, content: str) -> None:
    try:
        msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"{key}: structured output is not JSON: {exc}") from exc


def _chain(attempts: list[Attempt]) -> list[str]:
    return [f"{a.model}: {'ok' if a.ok else (a.status_code or a.error_class)}" for a in attempts]


def _exhausted(why: str, attempts: list[Attempt]) -> FallbackExhausted:
    last = f"; last error: {attempts[-1].error}" if attempts and attempts[-1].error else ""
    return FallbackExhausted(f"{why}{last}", _chain(attempts))

