"""OpenAI-compatible chat completions (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp).

Wire format (OpenAI API reference, "Create chat completion"): ``POST
{base_url}/chat/completions`` with ``model``, ``messages``, ``max_tokens`` (or
``max_completion_tokens``), ``temperature``, ``stop``, ``reasoning_effort``
(OpenRouter: ``reasoning: {"effort": ...}``) and ``response_format``; the reply's
``choices[0].message.content``, ``choices[0].finish_reason`` and
``usage.prompt_tokens``/``completion_tokens``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..config import ModelConfig
from ..errors import MalformedResponse
from ._base import Completion, Provider
from ._params import ChatParams

__all__ = ["OpenAIChatProvider", "chat_completions_body", "parse_chat_completion"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatResponse(msgspec.Struct):
    choices: list[_Choice]
    id: str = ""
    model: str = ""
    usage: _Usage = _Usage()


_response_decoder = msgspec.json.Decoder(_ChatResponse)


def chat_completions_body(model: ModelConfig, params: ChatParams, *, model_field: bool = True) -> dict[str, Any]:
    """Return the chat-completions JSON body (shared with Azure's chat deployments)."""
    body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in params.messages]}
    if model_field:
        body["model"] = model.model
    body[model.max_tokens_param] = params.max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.stop:
        body["stop"] = params.stop
    if params.reasoning_effort is not None:
        if model.reasoning_param == "reasoning":
            body["reasoning"] = {"effort": params.reasoning_effort}
        else:
            body["reasoning_effort"] = params.reasoning_effort
    if params.schema is not None:
        match model.structured_output:
            case "json_schema":
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": params.schema_name, "schema": params.schema}}
            case "json_object_schema":
                body["response_format"] = {"type": "json_object", "schema": params.schema}
            case "json_object":
                body["response_format"] = {"type": "json_object"}
            case "none":
                pass
    body.update(model.extra)
    return body


def parse_chat_completion(provider: str, model: ModelConfig, data: bytes) -> Completion:
    """Decode a chat-completions response body.

    Raises
    ------
    MalformedResponse
    """
    try:
        response = _response_decoder.decode(data)
        choice = response.choices[0]
    except (msgspec.DecodeError, IndexError) as exc:
        raise MalformedResponse(f"{provider}: not a chat completion: {exc}") from exc
    return Completion(
        content=choice.message.content or "",
        model=response.model or model.model,
        finish_reason=choice.finish_reason or "",
        input_tokens=response.usage.prompt_tokens,
        output_tokens=response.usage.completion_tokens,
        latency_ms=0.0,
        response_id=response.id,
    )


class OpenAIChatProvider(Provider):
    """An OpenAI-compatible chat-completions endpoint (see :class:`~tandem.services.llm.Provider`)."""

    default_gen_ai_provider = "openai"

    def build_request(self, model: ModelConfig, params: ChatParams) -> tuple[str, dict[str, Any], dict[str, str]]:
        return "chat/completions", chat_completions_body(model, params), {}

    def parse_response(self, model: ModelConfig, data: bytes) -> Completion:
        return parse_chat_completion(self.name, model, data)


class LlamaCppProvider(OpenAIChatProvider):
    """The embedded llama.cpp server (OpenAI-compatible)."""

    default_gen_ai_provider = "llama_cpp"
