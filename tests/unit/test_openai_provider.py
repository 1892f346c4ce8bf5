"""The OpenAI-compatible provider: real wire shapes and error translation (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from tandem.messages import ChatMessage, CompletionRequest
from tandem.services.config import ModelConfig, ProviderConfig
from tandem.services.errors import (
    ConfigError,
    MalformedResponse,
    ProviderStatusError,
    ProviderTimeout,
    ProviderUnavailable,
)
from tandem.services.llm import OpenAIChatProvider, normalize

from ..conftest import chat_response

M = ModelConfig(provider="p", model="m")
REQ = CompletionRequest(task="planning", messages=[ChatMessage(role="user", content="hi")],
                        response_schema={"type": "object"}, schema_name="plan", max_tokens=50)


def provider(handler, **cfg) -> OpenAIChatProvider:
    config = ProviderConfig(kind="openai", base_url="http://llm.test/v1", **cfg)
    return OpenAIChatProvider("p", config, transport=httpx.MockTransport(handler))


async def test_request_and_response_wire_format(monkeypatch) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-123")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=chat_response('{"a": 1}', model="gpt-x-2025", prompt_tokens=5,
                                                      completion_tokens=3))

    p = provider(handler, api_key_env="TEST_KEY")
    model = ModelConfig(provider="p", model="gpt-x", temperature=0.1, extra={"seed": 7})
    out = await p.chat(model, normalize(model, REQ))
    await p.aclose()
    assert (out.content, out.model, out.input_tokens, out.output_tokens, out.finish_reason) == (
        '{"a": 1}', "gpt-x-2025", 5, 3, "stop")
    request = seen[0]
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-123"
    body = json.loads(request.content)
    assert body == {
        "model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "temperature": 0.1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "plan", "schema": {"type": "object"}}},
        "seed": 7,
    }


def test_llamacpp_schema_form() -> None:
    p = provider(lambda r: httpx.Response(200))
    model = ModelConfig(provider="p", model="m", structured_output="json_object_schema")
    _, body, _ = p.build_request(model, normalize(model, REQ))
    assert body["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    model = ModelConfig(provider="p", model="m", structured_output="none")
    _, body, _ = p.build_request(model, normalize(model, REQ))
    assert "response_format" not in body


def test_missing_api_key_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        provider(lambda r: httpx.Response(200), api_key_env="NOPE_KEY")


@pytest.mark.parametrize(
    ("response", "error", "transient"),
    [
        (httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "slow down"}}),
         ProviderStatusError, True),
        (httpx.Response(503, text="upstream down"), ProviderStatusError, True),
        (httpx.Response(408), ProviderStatusError, True),
        (httpx.Response(401, json={"error": {"message": "bad key"}}), ProviderStatusError, False),
        (httpx.Response(400, json={"error": "bad schema"}), ProviderStatusError, False),
        (httpx.Response(200, text="<html>proxy</html>"), MalformedResponse, False),
        (httpx.Response(200, json={"choices": []}), MalformedResponse, False),
    ],
)
async def test_errors_are_translated(response: httpx.Response, error: type, transient: bool) -> None:
    p = provider(lambda r: response)
    with pytest.raises(error) as info:
        await p.chat(M, normalize(M, REQ))
    assert info.value.transient is transient
    assert isinstance(info.value.__cause__, Exception) or error is ProviderStatusError
    if response.status_code == 429:
        assert info.value.retry_after == 3.0 and "slow down" in str(info.value)


async def test_timeout_and_connection_errors() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderTimeout) as info:
        await provider(timeout).chat(M, normalize(M, REQ))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout) and info.value.transient
    with pytest.raises(ProviderUnavailable):
        await provider(refused).chat(M, normalize(M, REQ))
