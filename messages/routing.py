"""Router flow: ask a tier of models for a chat completion.

Only the router talks to model providers; every other actor sends a
:class:`CompletionRequest` to ``tandem.router.complete``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._base import ErrorReply, Message

__all__ = [
    "Attempt",
    "RoutingEvent",
    "ShapeDecision",
    "ShapeRequest",
    "ChatMessage",
    "CompletionReply",
    "CompletionRequest",
    "RouterReply",
    "TokenUsage",
]


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: Literal["system", "user", "assistant"]
    content: str


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one completion (``gen_ai.usage.*``)."""

    input_tokens: int = 0
    output_tokens: int = 0


class CompletionRequest(Message, frozen=True, kw_only=True, tag="completion_request"):
    """Ask the router for one chat completion.

    Parameters
    ----------
    task : str
        What the call is for (``planning``, ``manual_transform``,
        ``single_stage`` …); the router maps task → tier when ``tier`` is empty.
    tier : str
        Tier name from the config (``planning``, ``execution`` …), or ``""``.
    messages : list of ChatMessage
    response_schema : dict or None
        JSON Schema the reply must follow (structured output), or ``None``.
    schema_name : str
        Name of that schema (OpenAI's ``json_schema.name``).
    max_tokens : int or None
        Output token cap; ``None`` uses the model's configured default.
    temperature : float or None
    timeout_s : float
        Wait budget for the whole call, retries and fallbacks included, seconds.
    stop : list of str
        Stop sequences (dropped for models that do not allow them).
    reasoning_effort : str or None
        ``minimal``/``low``/``medium``/``high`` (dropped for models without reasoning).
    skill : str
        A skill from the config; its weighting ranks the candidates (design note 002).
    """

    task: str
    tier: str = ""
    messages: list[ChatMessage]
    response_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 120.0
    stop: list[str] = []
    reasoning_effort: str | None = None
    skill: str = ""


class CompletionReply(Message, frozen=True, kw_only=True, tag="completion_reply"):
    """The router's answer.

    Parameters
    ----------
    content : str
        The assistant message text (JSON text when a schema was requested).
    model, provider : str
        Which model answered, through which provider entry of the config.
    latency_ms : float
        Wall time of the successful provider call, milliseconds.
    usage : TokenUsage
    finish_reason : str
    fallback_chain : list of str
        Model keys tried, in order, the answering one last.
    cost_usd : float
        Price of the answering call from the registry's prices.
    """

    content: str
    model: str
    provider: str
    latency_ms: float
    usage: TokenUsage = TokenUsage()
    finish_reason: str = ""
    fallback_chain: list[str] = []
    cost_usd: float = 0.0


RouterReply = CompletionReply | ErrorReply


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One provider call of a routing chain.

    Parameters
    ----------
    model : str
        Model key.
    ok : bool
    latency_ms : float
    error_class : str
        e.g. ``ProviderStatusError`` (``""`` when ok).
    status_code : int or None
    waited_s : float
        Seconds slept before this attempt (backoff or ``Retry-After``).
    """

    model: str
    ok: bool
    latency_ms: float = 0.0
    error_class: str = ""
    status_code: int | None = None
    error: str = ""
    waited_s: float = 0.0


class RoutingEvent(Message, frozen=True, kw_only=True, tag="routing_event"):
    """What the router did for one request, on ``tandem.events.router.routed``.

    Parameters
    ----------
    task, tier, skill : str
    attempts : list of Attempt
        In order; the answering attempt (if any) last.
    model : str
        The answering model key (``""`` when the chain failed).
    ok : bool
    """

    task: str
    tier: str
    skill: str = ""
    attempts: list[Attempt] = []
    model: str = ""
    ok: bool = True


class ShapeRequest(Message, frozen=True, kw_only=True, tag="shape_request"):
    """Ask the router whether a task should be planned first (single vs two stage).

    Parameters
    ----------
    task : str
    complexity : float
        The judged complexity, 0–1.
    prompt_tokens : int
        Estimated size of the task and its inputs, tokens.
    """

    task: str
    complexity: float
    prompt_tokens: int = 0


class ShapeDecision(Message, frozen=True, kw_only=True, tag="shape_decision"):
    """The pipeline shape and why.

    Parameters
    ----------
    mode : {"single_stage", "two_stage"}
    reason : str
        Human-readable: the threshold comparison and the tiers' estimated costs.
    planning_model, execution_model : str
        First candidates of the planning and execution tiers.
    est_cost_usd : float
        Estimated cost of the chosen shape from the registry's prices.
    """

    mode: Literal["single_stage", "two_stage"]
    reason: str
    planning_model: str = ""
    execution_model: str = ""
    est_cost_usd: float = 0.0
