"""OpenAI-compatible chat completions over one long-lived ``httpx.AsyncClient``.

Wire format: ``POST {base_url}/chat/completions`` with ``model``, ``messages``,
``max_tokens``, ``temperature`` and ``response_format``; the reply's
``choices[0].message.content``, ``choices[0].finish_reason`` and
``usage.prompt_tokens``/``completion_tokens`` (OpenAI API reference). Servers
that speak it: OpenAI, OpenRouter, Ollama, vLLM, llama.cpp.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import msgspec
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import SpanKind, Status, StatusCode

from messages import CompletionRequest

from ..config import ModelConfig, ProviderConfig
from ..errors import ConfigError, MalformedResponse, ProviderStatusError, ProviderTimeout, ProviderUnavailable

__all__ = ["Completion", "OpenAIChatProvider"]

tracer = trace.get_tracer("tandem.llm")


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider returns: text, usage and timing (``latency_ms`` in ms)."""

    content: str
    model: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    response_id: str = ""


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


class _ErrorBody(msgspec.Struct):
    error: Any = None


_response_decoder = msgspec.json.Decoder(_ChatResponse)
_error_decoder = msgspec.json.Decoder(_ErrorBody)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        err = _error_decoder.decode(response.content).error
    except msgspec.DecodeError:
        return response.text[:200] or response.reason_phrase
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err or response.reason_phrase)[:300]


class OpenAIChatProvider:
    """An OpenAI-compatible chat-completions endpoint.

    Parameters
    ----------
    name : str
        Provider key in the config.
    config : ProviderConfig
    base_url : str or None
        Overrides ``config.base_url`` (used for the embedded llama.cpp server).
    transport : httpx.AsyncBaseTransport or None
        Injected transport; tests pass ``httpx.MockTransport``.

    Raises
    ------
    ConfigError
        When ``api_key_env`` names a variable that is not set.
    """

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.gen_ai_provider = config.gen_ai_provider or ("llama_cpp" if config.kind == "llamacpp_embedded" else "openai")
        headers = dict(config.headers)
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"provider {name!r}: environment variable {config.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        url = (base_url or config.base_url).rstrip("/")
        self.base_url = httpx.URL(url + "/")
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    def build_body(self, model: ModelConfig, request: CompletionRequest) -> dict[str, Any]:
        """Return the JSON body for ``request`` on ``model``."""
        body: dict[str, Any] = {
            "model": model.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or model.default_max_tokens,
        }
        temperature = request.temperature if request.temperature is not None else model.temperature
        if temperature is not None:
            body["temperature"] = temperature
        schema = request.response_schema
        if schema is not None:
            match model.structured_output:
                case "json_schema":
                    body["response_format"] = {
                        "type": "json_schema",
                        "json_schema": {"name": request.schema_name, "schema": schema},
                    }
                case "json_object_schema":
                    body["response_format"] = {"type": "json_object", "schema": schema}
                case "json_object":
                    body["response_format"] = {"type": "json_object"}
                case "none":
                    pass
        body.update(model.extra)
        return body

    async def chat(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        """Make one chat completion inside a ``chat <model>`` CLIENT span.

        Raises
        ------
        ProviderTimeout
            When the server does not answer in time.
        ProviderUnavailable
            When it cannot be connected to.
        ProviderStatusError
            On an HTTP error status (``transient`` for 408, 429 and 5xx).
        MalformedResponse
            When the body is not a chat-completions response.
        """
        body = self.build_body(model, request)
        attrs: dict[str, Any] = {
            G.GEN_AI_OPERATION_NAME: "chat",
            G.GEN_AI_PROVIDER_NAME: self.gen_ai_provider,
            G.GEN_AI_REQUEST_MODEL: model.model,
            G.GEN_AI_REQUEST_MAX_TOKENS: body["max_tokens"],
            G.GEN_AI_OUTPUT_TYPE: "json" if request.response_schema is not None else "text",
            "server.address": self.base_url.host,
        }
        if self.base_url.port:
            attrs["server.port"] = self.base_url.port
        if "temperature" in body:
            attrs[G.GEN_AI_REQUEST_TEMPERATURE] = body["temperature"]
        if request.conversation_id:
            attrs[G.GEN_AI_CONVERSATION_ID] = request.conversation_id
        with tracer.start_as_current_span(
            f"chat {model.model}", kind=SpanKind.CLIENT, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            try:
                completion = await self._post(body, started)
            except Exception as exc:
                span.set_attribute("error.type", getattr(exc, "code", type(exc).__qualname__))
                if isinstance(exc, ProviderStatusError):
                    span.set_attribute("http.response.status_code", exc.status_code)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            span.set_attribute(G.GEN_AI_RESPONSE_MODEL, completion.model)
            span.set_attribute(G.GEN_AI_RESPONSE_FINISH_REASONS, [completion.finish_reason])
            span.set_attribute(G.GEN_AI_USAGE_INPUT_TOKENS, completion.input_tokens)
            span.set_attribute(G.GEN_AI_USAGE_OUTPUT_TOKENS, completion.output_tokens)
            if completion.response_id:
                span.set_attribute(G.GEN_AI_RESPONSE_ID, completion.response_id)
            return completion

    async def _post(self, body: dict[str, Any], started: float) -> Completion:
        try:
            response = await self.client.post("chat/completions", content=msgspec.json.encode(body),
                                              headers={"Content-Type": "application/json"})
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{self.name}: no answer within the timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: cannot reach {self.base_url}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            raise ProviderStatusError(response.status_code, _error_message(response), retry_after=_retry_after(response))
        try:
            data = _response_decoder.decode(response.content)
            choice = data.choices[0]
        except (msgspec.DecodeError, IndexError) as exc:
            raise MalformedResponse(f"{self.name}: not a chat completion: {exc}") from exc
        return Completion(
            content=choice.message.content or "",
            model=data.model or body["model"],
            finish_reason=choice.finish_reason or "",
            input_tokens=data.usage.prompt_tokens,
            output_tokens=data.usage.completion_tokens,
            latency_ms=latency_ms,
            response_id=data.id,
        )
