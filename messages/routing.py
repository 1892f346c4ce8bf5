"""Router flow: ask a tier of models for a chat completion.

Only the router talks to model providers; every other actor sends a
:class:`CompletionRequest` to ``tandem.router.complete``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._base import ErrorReply, Message

__all__ = [
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
        Wait budget for the whole call, seconds.
    """

    task: str
    tier: str = ""
    messages: list[ChatMessage]
    response_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 120.0


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
    """

    content: str
    model: str
    provider: str
    latency_ms: float
    usage: TokenUsage = TokenUsage()
    finish_reason: str = ""


RouterReply = CompletionReply | ErrorReply
