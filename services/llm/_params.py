"""Parameter normalisation and capability checks (design note 004 §2.3 "param guard").

A :class:`~messages.CompletionRequest` says what the caller wants in Tandem's
terms; :func:`normalize` turns it into :class:`ChatParams` for one model —
defaults applied, parameters the model does not allow dropped — and each
provider maps those to its own wire names (``max_tokens`` /
``max_completion_tokens`` / ``max_output_tokens`` / ``maxOutputTokens``,
``reasoning_effort`` / ``reasoning.effort`` / ``thinkingConfig``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from tandem.messages import ChatMessage, CompletionRequest

from ..config import ModelConfig

__all__ = ["ChatParams", "estimate_tokens", "normalize", "unmet_needs"]


class ChatParams(msgspec.Struct, frozen=True, kw_only=True):
    """One model's view of a request.

    Parameters
    ----------
    messages : list of ChatMessage
    max_tokens : int
        Output cap, tokens.
    temperature : float or None
    stop : list of str
    reasoning_effort : str or None
    schema : dict or None
        JSON Schema for structured output.
    schema_name : str
    dropped : tuple of str
        Parameters removed because the model does not allow them.
    """

    messages: list[ChatMessage]
    max_tokens: int
    temperature: float | None = None
    stop: list[str] = []
    reasoning_effort: str | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "response"
    dropped: tuple[str, ...] = ()


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """Rough prompt size in tokens (4 characters a token), for context-length checks."""
    return sum(len(m.content) for m in messages) // 4 + 4 * len(messages)


def unmet_needs(model: ModelConfig, request: CompletionRequest) -> list[str]:
    """Return what ``request`` needs that ``model`` lacks (empty: the model fits).

    Needs are hard requirements: structured output when a schema is given,
    and a context window large enough for the prompt plus the output cap.
    """
    caps = model.capabilities
    unmet = []
    if request.response_schema is not None and not caps.structured_outputs:
        unmet.append("structured_outputs")
    wanted = estimate_tokens(request.messages) + (request.max_tokens or model.default_max_tokens)
    if wanted > caps.context_length:
        unmet.append(f"context_length>={wanted}")
    return unmet


def normalize(model: ModelConfig, request: CompletionRequest) -> ChatParams:
    """Return the parameters to send to ``model`` for ``request``.

    Examples
    --------
    >>> from services.config import ModelConfig, AllowedParams
    >>> m = ModelConfig(provider="p", model="o3", params=AllowedParams(temperature=False))
    >>> r = CompletionRequest(task="t", messages=[], temperature=0.3)
    >>> p = normalize(m, r)
    >>> p.temperature, p.dropped
    (None, ('temperature',))
    """
    dropped = []
    temperature = request.temperature if request.temperature is not None else model.temperature
    if temperature is not None and not model.params.temperature:
        temperature = None
        dropped.append("temperature")
    stop = list(request.stop)
    if stop and not model.params.stop:
        stop = []
        dropped.append("stop")
    effort = request.reasoning_effort
    if effort is not None and not (model.params.reasoning and effort in model.capabilities.reasoning_levels):
        effort = None
        dropped.append("reasoning_effort")
    return ChatParams(
        messages=request.messages,
        max_tokens=request.max_tokens or model.default_max_tokens,
        temperature=temperature,
        stop=stop,
        reasoning_effort=effort,
        schema=request.response_schema,
        schema_name=request.schema_name,
        dropped=tuple(dropped),
    )
