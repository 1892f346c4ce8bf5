"""OpenAI-compatible chat completions (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp).

Wire format (OpenAI API reference, "Create chat completion"): ``POST
{base_url}/chat/completions`` with ``model``, ``messages``, ``max_tokens`` (or
``max_completion_tokens``), ``temperature``, ``stop``, ``reasoning_effort``
(OpenRouter: ``reasoning: {"effort": ...}``) and ``response_format``; the reply's
``choices[0].message.content``, ``choices[0].finish_reason`` and
``usage.prompt_tokens``/``completion_tokens``.

Streaming (same reference, "The chat completion chunk object"): with
``"stream": true`` the answer comes as server-sent events, each ``data:`` a
chunk whose ``choices[0].delta.content`` extends the text, the last with
``finish_reason``; ``stream_options: {"include_usage": true}`` adds a final
chunk with ``usage`` (and empty ``choices``); ``data: [DONE]`` ends it.
llama.cpp's server speaks the same.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import msgspec

from ..config import ModelConfig
from ..errors import DegenerateStream, MalformedResponse
from ..repetition import STREAM_THRESHOLDS, find_repetition
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


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    id: str = ""
    model: str = ""
    usage: _Usage | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)

GUARD_EVERY_CHARS = 1024
"""A stream is checked for loops each time this many more characters have arrived."""


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
    """An OpenAI-compatible chat-completions endpoint (see :class:`~tandem.services.llm.Provider`).

    With ``stream`` on in the provider's config, a text answer (no schema) is
    streamed and watched: when the text so far repeats itself far past what
    the finished answer could explain (:data:`~tandem.services.repetition.STREAM_THRESHOLDS`,
    repetition already in the prompt excepted), the stream is closed, which
    stops the generation, and :class:`~tandem.services.errors.DegenerateStream`
    is raised instead of waiting for ``max_tokens``.
    """

    default_gen_ai_provider = "openai"

    def build_request(self, model: ModelConfig, params: ChatParams) -> tuple[str, dict[str, Any], dict[str, str]]:
        return "chat/completions", chat_completions_body(model, params), {}

    def parse_response(self, model: ModelConfig, data: bytes) -> Completion:
        return parse_chat_completion(self.name, model, data)

    def streams(self, params: ChatParams) -> bool:
        """Whether this call is streamed: ``stream`` configured and a text (not schema-shaped) answer."""
        return bool(self.config.stream) and params.schema is None

    async def complete(self, model: ModelConfig, params: ChatParams, path: str, body: dict[str, Any],
                       query: dict[str, str], timeout: float | None) -> Completion:
        """Stream the answer when :meth:`streams` says so, else one request.

        Raises
        ------
        DegenerateStream
            When the streamed text loops (the stream is closed first).
        MalformedResponse
            When a chunk is not the documented shape.
        """
        if not self.streams(params):
            return await super().complete(model, params, path, body, query, timeout)
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        source = "\n".join(m.content for m in params.messages)
        parts: list[str] = []
        size = 0
        check_at = GUARD_EVERY_CHARS
        finish, response_id, name = "", "", ""
        usage = _Usage()
        async with aclosing(self._events(path, body, query, timeout)) as events:
            async for data in events:
                if data == b"[DONE]":
                    break
                try:
                    chunk = _chunk_decoder.decode(data)
                except msgspec.DecodeError as exc:
                    raise MalformedResponse(f"{self.name}: not a chat completion chunk: {exc}") from exc
                response_id = response_id or chunk.id
                name = name or chunk.model
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    size += len(choice.delta.content)
                    if size >= check_at:
                        check_at = size + GUARD_EVERY_CHARS
                        text = "".join(parts)
                        parts = [text]
                        found = find_repetition(text, source, **STREAM_THRESHOLDS)
                        if found is not None:
                            raise DegenerateStream(
                                f"degenerate_output: {model.model} repeated {found.shown!r} {found.count} times; "
                                f"stopped after {size} characters instead of running to max_tokens {params.max_tokens}")
        return Completion(content="".join(parts), model=name or model.model, finish_reason=finish,
                          input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens, latency_ms=0.0,
                          response_id=response_id)


class LlamaCppProvider(OpenAIChatProvider):
    """The embedded llama.cpp server (OpenAI-compatible)."""

    default_gen_ai_provider = "llama_cpp"
