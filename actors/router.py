"""Router actor: task → tier → model candidates → one chat completion.

The only actor that talks to model providers (design note 004 §2.1: task
layer → tier layer → physical model layer). This first version tries the
tier's candidates in order and moves to the next one on a transient failure
(408, 429, 5xx, timeouts, connection errors); a non-transient failure (400,
401, 403, malformed body) is returned at once.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import anyio
import httpx

from messages import CompletionReply, CompletionRequest, TokenUsage, subjects
from services.bus import Bus
from services.config import Config
from services.errors import LLMError, NoCandidate
from services.llm import LocalModelServer, OpenAIChatProvider

from ._base import Actor, Endpoint

__all__ = ["RouterActor"]

log = logging.getLogger("tandem.router")


class RouterActor(Actor):
    """Serve ``tandem.router.complete``.

    Parameters
    ----------
    bus : Bus
    config : Config
    transport : httpx.AsyncBaseTransport or None
        Injected into every provider's client (tests: ``httpx.MockTransport``).
    """

    name = "router"

    def __init__(self, bus: Bus, config: Config, *, transport: httpx.AsyncBaseTransport | None = None,
                 concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.transport = transport
        self.providers: dict[str, OpenAIChatProvider] = {}
        self._stack: AsyncExitStack | None = None
        self._start_lock = anyio.Lock()

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(subjects.ROUTER_COMPLETE, CompletionRequest, self.complete,
                         timeout=self.config.nats.request_timeout_s)]

    async def setup(self, stack: AsyncExitStack) -> None:
        self._stack = stack
        for name, provider in self.config.providers.items():
            if provider.kind == "openai":
                self.providers[name] = p = OpenAIChatProvider(name, provider, transport=self.transport)
                stack.push_async_callback(p.aclose)

    async def _provider(self, name: str) -> OpenAIChatProvider:
        provider = self.providers.get(name)
        if provider is not None:
            return provider
        async with self._start_lock:  # start the embedded model once, on first use
            if name not in self.providers:
                assert self._stack is not None
                cfg = self.config.providers[name]
                alias = next((m.model for m in self.config.models.values() if m.provider == name), "local")
                server = await self._stack.enter_async_context(LocalModelServer(alias=alias))
                self.providers[name] = p = OpenAIChatProvider(name, cfg, base_url=server.base_url,
                                                              transport=self.transport)
                self._stack.push_async_callback(p.aclose)
            return self.providers[name]

    async def complete(self, request: CompletionRequest) -> CompletionReply:
        """Answer one completion request from the first candidate that succeeds.

        Raises
        ------
        NoCandidate
            When the tier has no candidates.
        LLMError
            The last candidate's error when all failed, or the first
            non-transient one.
        """
        tier = self.config.tier_for(request.task, request.tier)
        candidates = self.config.tiers[tier]
        if not candidates:
            raise NoCandidate(f"tier {tier!r} has no models")
        last: LLMError | None = None
        for key in candidates:
            model = self.config.models[key]
            provider = await self._provider(model.provider)
            try:
                result = await provider.chat(model, request)
            except LLMError as exc:
                if not exc.transient:
                    raise
                log.warning("router: %s failed (%s); trying the next candidate", key, exc)
                last = exc
                continue
            return CompletionReply(
                correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                content=result.content, model=result.model, provider=model.provider,
                latency_ms=round(result.latency_ms, 3), finish_reason=result.finish_reason,
                usage=TokenUsage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
            )
        assert last is not None
        raise last
