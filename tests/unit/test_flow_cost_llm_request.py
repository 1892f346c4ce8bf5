"""Provider._request makes the request ``client.build_request`` makes (issue 14: without its per-call merging)."""

from __future__ import annotations

import httpx
import pytest
from tandem.services.config import ProviderConfig
from tandem.services.llm._openai import OpenAIChatProvider

BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 5}


def _provider(base_url: str = "http://mock.invalid/v1", **config: object) -> OpenAIChatProvider:
    return OpenAIChatProvider("p", ProviderConfig(kind="openai", base_url=base_url, **config),
                              transport=httpx.MockTransport(lambda r: httpx.Response(200)))


def _reference(provider: OpenAIChatProvider, path: str, query: dict[str, str], timeout: float | None) -> httpx.Request:
    """What the provider made before: build_request with the client's merging."""
    import msgspec

    extra = {} if timeout is None else {
        "timeout": httpx.Timeout(timeout, connect=min(timeout, provider.config.connect_timeout_s))}
    return provider.client.build_request("POST", path, content=msgspec.json.encode(BODY), params=query or None,
                                         headers={"Content-Type": "application/json"}, **extra)


def _same(a: httpx.Request, b: httpx.Request) -> None:
    assert (a.method, str(a.url), a.headers.raw, a.content, a.extensions) == \
        (b.method, str(b.url), b.headers.raw, b.content, b.extensions)


@pytest.mark.parametrize("path", ["chat/completions", "/chat/completions", "models/gemini-2.5:generateContent"])
@pytest.mark.parametrize("timeout", [None, 12.5, 0.5])
@pytest.mark.parametrize("base_url", ["http://mock.invalid/v1", "https://api.example.com:8443/openai/v1/", "http://h"])
def test_the_request_is_build_requests(path: str, timeout: float | None, base_url: str) -> None:
    provider = _provider(base_url, headers={"X-Extra": "1"})
    for _ in range(2):  # the URL is remembered after the first call
        _same(provider._request(path, BODY, {}, timeout), _reference(provider, path, {}, timeout))


def test_query_parameters_and_cookies_are_merged_as_build_request_merges_them() -> None:
    provider = _provider()
    _same(provider._request("chat/completions", BODY, {"key": "k", "alt": "sse"}, 3.0),
          _reference(provider, "chat/completions", {"key": "k", "alt": "sse"}, 3.0))
    provider.client.cookies.set("lb", "node-2", domain="mock.invalid")  # a provider's Set-Cookie, kept by the client
    made = provider._request("chat/completions", BODY, {}, None)
    _same(made, _reference(provider, "chat/completions", {}, None))
    assert made.headers["cookie"] == "lb=node-2"


def test_headers_changed_on_the_client_later_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_COST_KEY", "sk-1")
    provider = _provider(api_key_env="FLOW_COST_KEY")
    provider._request("chat/completions", BODY, {}, None)
    provider.client.headers["Authorization"] = "Bearer sk-2"
    made = provider._request("chat/completions", BODY, {}, None)
    assert made.headers["authorization"] == "Bearer sk-2"
    _same(made, _reference(provider, "chat/completions", {}, None))


def test_the_url_cache_is_bounded() -> None:
    provider = _provider()
    for i in range(200):
        provider._request(f"models/m{i}:generateContent", BODY, {}, None)
    assert len(provider._urls) <= 64
