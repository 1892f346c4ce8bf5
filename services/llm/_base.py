"""What every provider shares: one long-lived ``httpx.AsyncClient``, the ``chat <model>``
span, and translation of transport and HTTP errors into Tandem's hierarchy."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..config import ModelConfig, ProviderConfig
from ..errors import (
    ConfigError,
    CredentialRejected,
    ProviderStatusError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ._params import ChatParams

__all__ = ["Completion", "Provider"]

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


class _ErrorBody(msgspec.Struct):
    error: Any = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)
_JSON_CONTENT = {"Content-Type": "application/json"}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), or ``None``."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_message(response: httpx.Response) -> str:
    """The provider's error message: ``{"error": {"message": ...}}`` (OpenAI, Azure, Gemini) or the text."""
    try:
        err = _error_decoder.decode(response.content).error
    except msgspec.DecodeError:
        return response.text[:200] or response.reason_phrase
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err or response.reason_phrase)[:300]


class Provider:
    """Base of the providers.

    Subclasses set :attr:`default_gen_ai_provider` and implement
    :meth:`build_request` and :meth:`parse_response`; :meth:`chat` does the
    rest. No retries happen here (no hidden SDK retries): the router owns the
    whole retry/fallback chain and its deadline.

    Parameters
    ----------
    name : str
        Provider key in the config.
    config : ProviderConfig
    base_url : str or None
        Overrides ``config.base_url`` (the embedded llama.cpp server).
    transport : httpx.AsyncBaseTransport or None
        Injected transport; tests pass ``httpx.MockTransport``.

    Raises
    ------
    ConfigError
        When ``api_key_env`` names a variable that is not set.
    """

    default_gen_ai_provider = "openai"
    auth_header = ("Authorization", "Bearer {key}")

    def __init__(self, name: str, config: ProviderConfig, *, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.config = config
        self.gen_ai_provider = config.gen_ai_provider or self.default_gen_ai_provider
        headers = dict(config.headers)
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"provider {name!r}: environment variable {config.api_key_env} is not set")
            header, template = self.auth_header
            headers[header] = template.format(key=key)
        self.base_url = httpx.URL((base_url or config.base_url).rstrip("/") + "/")
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            transport=transport,
        )
        self._urls: dict[str, httpx.URL] = {}  # path -> its URL (see _request)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    def retry_after(self, response: httpx.Response) -> float | None:
        """Seconds the provider asks us to wait (``Retry-After``); providers with their own form override it."""
        return retry_after(response)

    def build_request(self, model: ModelConfig, params: ChatParams) -> tuple[str, dict[str, Any], dict[str, str]]:
        """Return ``(path relative to base_url, JSON body, query params)``."""
        raise NotImplementedError

    def parse_response(self, model: ModelConfig, data: bytes) -> Completion:
        """Decode a 2xx body (``latency_ms`` is filled in by :meth:`chat`).

        Raises
        ------
        MalformedResponse
            When the body is not the documented shape.
        """
        raise NotImplementedError

    async def chat(self, model: ModelConfig, params: ChatParams, *, timeout: float | None = None,
                   conversation_id: str = "") -> Completion:
        """Make one call inside a ``chat <model>`` CLIENT span.

        Parameters
        ----------
        model : ModelConfig
        params : ChatParams
            From :func:`~tandem.services.llm.normalize`.
        timeout : float or None
            Seconds for this attempt (the router's remaining budget); the
            provider's configured timeouts when ``None``.
        conversation_id : str

        Raises
        ------
        ProviderTimeout, ProviderUnavailable, ProviderStatusError, MalformedResponse
            ``CredentialRejected`` (a ``ProviderStatusError``) for 401/403.
        """
        path, body, query = self.build_request(model, params)
        attrs: dict[str, Any] = {
            G.GEN_AI_OPERATION_NAME: "chat",
            G.GEN_AI_PROVIDER_NAME: self.gen_ai_provider,
            G.GEN_AI_REQUEST_MODEL: model.model,
            G.GEN_AI_REQUEST_MAX_TOKENS: params.max_tokens,
            G.GEN_AI_OUTPUT_TYPE: "json" if params.schema is not None else "text",
            "server.address": self.base_url.host,
        }
        if self.base_url.port:
            attrs["server.port"] = self.base_url.port
        if params.temperature is not None:
            attrs[G.GEN_AI_REQUEST_TEMPERATURE] = params.temperature
        if conversation_id:
            attrs[G.GEN_AI_CONVERSATION_ID] = conversation_id
        if params.dropped:
            attrs["tandem.llm.dropped_params"] = list(params.dropped)
        with tracer.start_as_current_span(
            f"chat {model.model}", kind=SpanKind.CLIENT, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            try:
                completion = await self.complete(model, params, path, body, query, timeout)
            except Exception as exc:
                span.set_attribute("error.type", getattr(exc, "code", type(exc).__qualname__))
                if isinstance(exc, ProviderStatusError):
                    span.set_attribute("http.response.status_code", exc.status_code)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            completion = msgspec.structs.replace(completion, latency_ms=(time.perf_counter() - started) * 1000)
            span.set_attribute(G.GEN_AI_RESPONSE_MODEL, completion.model)
            span.set_attribute(G.GEN_AI_RESPONSE_FINISH_REASONS, [completion.finish_reason])
            span.set_attribute(G.GEN_AI_USAGE_INPUT_TOKENS, completion.input_tokens)
            span.set_attribute(G.GEN_AI_USAGE_OUTPUT_TOKENS, completion.output_tokens)
            if completion.response_id:
                span.set_attribute(G.GEN_AI_RESPONSE_ID, completion.response_id)
            return completion

    async def complete(self, model: ModelConfig, params: ChatParams, path: str, body: dict[str, Any],
                       query: dict[str, str], timeout: float | None) -> Completion:
        """Send the request and decode the answer (``latency_ms`` is filled in by :meth:`chat`).

        Providers that stream override it; the errors are :meth:`chat`'s.
        """
        return self.parse_response(model, await self._post(path, body, query, timeout))

    def _request(self, path: str, body: dict[str, Any], query: dict[str, str], timeout: float | None) -> httpx.Request:
        """The POST of ``body`` to ``path``: what ``client.build_request`` makes, without its merging on each call.

        ``build_request`` joins ``path`` to the base URL and merges the client's headers, query
        parameters and cookies every time (~75 µs a call, three times the rest of the request's
        making). The URL of a path is joined once (:meth:`_url`); the request gets the client's
        headers, ``Content-Type``, the same ``timeout`` extension and the same bytes. With query
        parameters or cookies (a provider's ``Set-Cookie``) to merge, ``build_request`` does it.
        """
        client = self.client
        limit = None if timeout is None else httpx.Timeout(timeout, connect=min(timeout, self.config.connect_timeout_s))
        content = msgspec.json.encode(body)
        if query or client.params or client.cookies:
            extra = {} if limit is None else {"timeout": limit}
            return client.build_request("POST", path, content=content, params=query or None,
                                        headers=_JSON_CONTENT, **extra)
        headers = client.headers.copy()
        headers["Content-Type"] = "application/json"
        return httpx.Request("POST", self._url(path), content=content, headers=headers,
                             extensions={"timeout": (client.timeout if limit is None else limit).as_dict()})

    def _url(self, path: str) -> httpx.URL:
        """``path`` joined to the base URL as ``client.build_request`` joins it, remembered per path (a few a provider)."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= 64:  # a path per model at most (Azure, Gemini): bounded all the same
                self._urls.clear()
            url = self._urls[path] = self.client.build_request("POST", path).url
        return url

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Translate a 4xx/5xx (its body already read) into Tandem's errors."""
        if response.status_code in (401, 403):
            raise CredentialRejected(response.status_code, error_message(response), provider=self.name,
                                     api_key_env=self.config.api_key_env)
        if response.status_code >= 400:
            raise ProviderStatusError(response.status_code, error_message(response), retry_after=self.retry_after(response))

    async def _post(self, path: str, body: dict[str, Any], query: dict[str, str], timeout: float | None) -> bytes:
        try:
            response = await self.client.send(self._request(path, body, query, timeout))
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{self.name}: no answer within the timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: cannot reach {self.base_url}: {exc}") from exc
        self._raise_for_status(response)
        return response.content

    async def _events(self, path: str, body: dict[str, Any], query: dict[str, str],
                      timeout: float | None) -> AsyncIterator[bytes]:
        """Yield the ``data:`` payloads of a server-sent-events answer (the WHATWG event-stream format).

        Leaving the iteration early closes the connection, which stops the generation on
        servers that watch for it (llama.cpp, vLLM, OpenAI). ``timeout`` bounds each read,
        not the whole stream: the router bounds that.

        Raises
        ------
        ProviderTimeout, ProviderUnavailable, ProviderStatusError
        """
        try:
            response = await self.client.send(self._request(path, body, query, timeout), stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_status(response)
                data: list[bytes] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" ").encode())
                    elif not line and data:  # a blank line ends an event
                        yield b"\n".join(data)
                        data = []
                if data:
                    yield b"\n".join(data)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{self.name}: the answer stalled ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: the stream from {self.base_url} broke: {exc}") from exc
