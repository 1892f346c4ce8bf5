"""Azure OpenAI and Gemini providers: real wire shapes and error translation (httpx.MockTransport).

Response bodies are the documented examples: Azure's "API version lifecycle"
REST output (Responses API), the Azure chat-completions reference, and the
Gemini API ``GenerateContentResponse`` (``candidates``, ``usageMetadata``,
``promptFeedback``) with a ``google.rpc.Status`` error body.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tandem.messages import ChatMessage, CompletionRequest
from tandem.services.config import AllowedParams, Capabilities, ModelConfig, ProviderConfig
from tandem.services.errors import ConfigError, MalformedResponse, ProviderStatusError
from tandem.services.llm._azure import AzureOpenAIProvider
from tandem.services.llm._base import Provider
from tandem.services.llm._gemini import GeminiProvider, retry_info_delay
from tandem.services.llm._params import normalize

from ..conftest import chat_response

Handler = Callable[[httpx.Request], httpx.Response]

SCHEMA = {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
          "required": ["steps"]}
REQ = CompletionRequest(
    task="planning",
    messages=[ChatMessage(role="system", content="You plan."), ChatMessage(role="user", content="Sort a file."),
              ChatMessage(role="assistant", content="Which file?"), ChatMessage(role="user", content="data.txt")],
    response_schema=SCHEMA, schema_name="plan", max_tokens=300, temperature=0.2, stop=["END"],
    reasoning_effort="low",
)
REASONING = dict(params=AllowedParams(reasoning=True),
                 capabilities=Capabilities(reasoning_levels=["minimal", "low", "medium", "high"]))

# Azure "API version lifecycle" page, REST tab, output of POST /openai/v1/responses.
RESPONSES_OK = {
    "id": "resp_682f7eb5dc408190b491cbbe57be2fbf0f98d661c3dc276d",
    "created_at": 1747943093.0,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "metadata": {},
    "model": "gpt-4.1-nano",
    "object": "response",
    "output": [
        {
            "id": "msg_682f7eb61d908190926a004c15c5ddd00f98d661c3dc276d",
            "content": [{"annotations": [], "text": "Hello! It looks like you've sent a test message.",
                         "type": "output_text"}],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        }
    ],
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "max_output_tokens": None,
    "previous_response_id": None,
    "reasoning": {"effort": None, "generate_summary": None, "summary": None},
    "service_tier": "default",
    "status": "completed",
    "text": {"format": {"type": "text"}},
    "truncation": "disabled",
    "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 19,
              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 31},
    "user": None,
    "store": True,
}

GEMINI_OK = {
    "candidates": [
        {
            "content": {"parts": [{"text": '{"steps": '}, {"text": '["sort"]}'}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 21, "candidatesTokenCount": 7, "totalTokenCount": 118,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 21}], "thoughtsTokenCount": 90},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mJ4sZ9e8Fo2m1dkP5tDLgQE",
}

GEMINI_429 = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"},
        ],
    }
}


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_KEY", "az-secret")
    monkeypatch.setenv("GEMINI_KEY", "gm-secret")


def azure(handler: Handler, api_version: str | None = "2024-10-21") -> AzureOpenAIProvider:
    config = ProviderConfig(kind="azure", base_url="https://res.openai.azure.com", api_version=api_version,
                            api_key_env="AZ_KEY")
    return AzureOpenAIProvider("az", config, transport=httpx.MockTransport(handler))


def gemini(handler: Handler) -> GeminiProvider:
    config = ProviderConfig(kind="gemini", base_url="https://generativelanguage.googleapis.com",
                            api_key_env="GEMINI_KEY")
    return GeminiProvider("gm", config, transport=httpx.MockTransport(handler))


def recording(response: httpx.Response) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return seen, handler


# --- Azure chat completions -------------------------------------------------------------------------------------


async def test_azure_chat_wire_format() -> None:
    seen, handler = recording(httpx.Response(200, json=chat_response('{"steps": []}', model="gpt-4o-2024-11-20",
                                                                      prompt_tokens=40, completion_tokens=6)))
    p = azure(handler)
    model = ModelConfig(provider="az", model="gpt4o-prod", max_tokens_param="max_completion_tokens", **REASONING)
    out = await p.chat(model, normalize(model, REQ))
    await p.aclose()

    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == ("https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions"
                                "?api-version=2024-10-21")
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "az-secret"
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "messages": [{"role": "system", "content": "You plan."}, {"role": "user", "content": "Sort a file."},
                     {"role": "assistant", "content": "Which file?"}, {"role": "user", "content": "data.txt"}],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "stop": ["END"],
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "plan", "schema": SCHEMA}},
    }
    assert (out.content, out.model, out.finish_reason, out.input_tokens, out.output_tokens, out.response_id) == (
        '{"steps": []}', "gpt-4o-2024-11-20", "stop", 40, 6, "chatcmpl-test")
    assert p.gen_ai_provider == "azure.ai.openai"


async def test_azure_chat_needs_api_version() -> None:
    p = azure(lambda r: httpx.Response(200), api_version=None)
    model = ModelConfig(provider="az", model="gpt4o-prod")
    with pytest.raises(ConfigError, match="'az'.*api_version"):
        await p.chat(model, normalize(model, REQ))


# --- Azure Responses API ----------------------------------------------------------------------------------------


async def test_azure_responses_wire_format() -> None:
    seen, handler = recording(httpx.Response(200, json=RESPONSES_OK))
    p = azure(handler)  # a dated api-version is for the deployment path; v1 takes none
    model = ModelConfig(provider="az", model="gpt-4.1-nano", use_responses_api=True, **REASONING)
    out = await p.chat(model, normalize(model, REQ))
    await p.aclose()

    request = seen[0]
    assert str(request.url) == "https://res.openai.azure.com/openai/v1/responses"
    assert request.headers["api-key"] == "az-secret"
    assert json.loads(request.content) == {
        "model": "gpt-4.1-nano",
        "input": [{"role": "system", "content": "You plan."}, {"role": "user", "content": "Sort a file."},
                  {"role": "assistant", "content": "Which file?"}, {"role": "user", "content": "data.txt"}],
        "max_output_tokens": 300,
        "store": False,
        "temperature": 0.2,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "plan", "schema": SCHEMA, "strict": False}},
    }
    assert (out.content, out.model, out.finish_reason, out.input_tokens, out.output_tokens, out.response_id) == (
        "Hello! It looks like you've sent a test message.", "gpt-4.1-nano", "stop", 12, 19,
        "resp_682f7eb5dc408190b491cbbe57be2fbf0f98d661c3dc276d")


@pytest.mark.parametrize(("api_version", "query"),
                         [("preview", "api-version=preview"), ("latest", "api-version=latest"), (None, "")])
def test_azure_responses_api_version_query(api_version: str | None, query: str) -> None:
    p = azure(lambda r: httpx.Response(200), api_version=api_version)
    model = ModelConfig(provider="az", model="o4-mini", use_responses_api=True)
    path, body, params = p.build_request(model, normalize(model, REQ))
    assert path == "openai/v1/responses"
    assert str(httpx.QueryParams(params)) == query
    assert "stop" not in body  # the Responses API has no stop sequences


def test_azure_responses_json_object_and_no_schema() -> None:
    p = azure(lambda r: httpx.Response(200))
    model = ModelConfig(provider="az", model="d", use_responses_api=True, structured_output="json_object")
    assert p.build_request(model, normalize(model, REQ))[1]["text"] == {"format": {"type": "json_object"}}
    model = ModelConfig(provider="az", model="d", use_responses_api=True, structured_output="none")
    assert "text" not in p.build_request(model, normalize(model, REQ))[1]


async def test_azure_responses_skips_reasoning_items_and_maps_incomplete() -> None:
    body = {
        "id": "resp_1", "object": "response", "model": "o4-mini", "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "incomplete",
             "content": [{"type": "output_text", "text": '{"steps": ["so', "annotations": []}]},
        ],
        "usage": {"input_tokens": 30, "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 280}},
    }
    p = azure(lambda r: httpx.Response(200, json=body))
    model = ModelConfig(provider="az", model="o4-mini", use_responses_api=True)
    out = await p.chat(model, normalize(model, REQ))
    assert (out.content, out.finish_reason, out.output_tokens) == ('{"steps": ["so', "length", 300)


async def test_azure_responses_refusal() -> None:
    body = {"id": "resp_2", "model": "gpt-4.1", "status": "completed",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]}
    p = azure(lambda r: httpx.Response(200, json=body))
    model = ModelConfig(provider="az", model="gpt-4.1", use_responses_api=True)
    out = await p.chat(model, normalize(model, REQ))
    assert (out.content, out.finish_reason) == ("", "refusal")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>gateway</html>", "not a Responses API result"),
        (json.dumps({"id": "resp_3", "status": "completed"}).encode(), "output"),
        (json.dumps({"id": "resp_3", "output": [{"type": 1}]}).encode(), r"\$\.output\[0\]\.type"),
        (json.dumps({"id": "resp_4", "status": "failed", "output": [],
                     "error": {"code": "server_error", "message": "boom"}}).encode(), "failed.*server_error: boom"),
    ],
)
async def test_azure_responses_malformed(body: bytes, match: str) -> None:
    p = azure(lambda r: httpx.Response(200, content=body))
    model = ModelConfig(provider="az", model="d", use_responses_api=True)
    with pytest.raises(MalformedResponse, match=match) as info:
        await p.chat(model, normalize(model, REQ))
    assert not info.value.transient


# --- Gemini -----------------------------------------------------------------------------------------------------


async def test_gemini_wire_format() -> None:
    seen, handler = recording(httpx.Response(200, json=GEMINI_OK))
    p = gemini(handler)
    model = ModelConfig(provider="gm", model="gemini-3-pro-preview", **REASONING)
    out = await p.chat(model, normalize(model, REQ))
    await p.aclose()

    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == ("https://generativelanguage.googleapis.com/v1beta/models/"
                                "gemini-3-pro-preview:generateContent")
    assert request.headers["x-goog-api-key"] == "gm-secret"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "contents": [
            {"role": "user", "parts": [{"text": "Sort a file."}]},
            {"role": "model", "parts": [{"text": "Which file?"}]},
            {"role": "user", "parts": [{"text": "data.txt"}]},
        ],
        "systemInstruction": {"parts": [{"text": "You plan."}]},
        "generationConfig": {
            "maxOutputTokens": 300,
            "temperature": 0.2,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": SCHEMA,
            "thinkingConfig": {"thinkingLevel": "low"},
        },
    }
    assert (out.content, out.model, out.finish_reason, out.input_tokens, out.output_tokens, out.response_id) == (
        '{"steps": ["sort"]}', "gemini-2.5-flash", "stop", 21, 7 + 90, "mJ4sZ9e8Fo2m1dkP5tDLgQE")
    assert p.gen_ai_provider == "gcp.gemini"


@pytest.mark.parametrize(("effort", "budget"), [("minimal", 512), ("low", 1024), ("medium", 8192), ("high", 24576)])
def test_gemini_25_takes_a_thinking_budget(effort: str, budget: int) -> None:
    p = gemini(lambda r: httpx.Response(200))
    model = ModelConfig(provider="gm", model="models/gemini-2.5-pro", **REASONING)
    request = CompletionRequest(task="t", messages=[ChatMessage(role="user", content="hi")], reasoning_effort=effort)
    path, body, query = p.build_request(model, normalize(model, request))
    assert path == "v1beta/models/gemini-2.5-pro:generateContent" and query == {}
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}
    assert "systemInstruction" not in body


def test_gemini_extra_merges_into_generation_config() -> None:
    p = gemini(lambda r: httpx.Response(200))
    model = ModelConfig(provider="gm", model="gemini-2.5-flash", structured_output="json_object",
                        extra={"generationConfig": {"topK": 20}, "safetySettings": []})
    body = p.build_request(model, normalize(model, REQ))[1]
    assert body["generationConfig"] == {"maxOutputTokens": 300, "temperature": 0.2, "stopSequences": ["END"],
                                        "responseMimeType": "application/json", "topK": 20}
    assert body["safetySettings"] == []


async def test_gemini_thought_parts_and_max_tokens_while_thinking() -> None:
    body = {
        "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 309, "thoughtsTokenCount": 300},
        "modelVersion": "gemini-2.5-pro", "responseId": "r1",
    }
    model = ModelConfig(provider="gm", model="gemini-2.5-pro")
    out = await gemini(lambda r: httpx.Response(200, json=body)).chat(model, normalize(model, REQ))
    assert (out.content, out.finish_reason, out.output_tokens) == ("", "length", 300)

    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking…", "thought": True},
                                                                    {"text": "answer"}]},
                            "finishReason": "SAFETY"}]}
    out = await gemini(lambda r: httpx.Response(200, json=body)).chat(model, normalize(model, REQ))
    assert (out.content, out.finish_reason, out.model, out.input_tokens) == ("answer", "content_filter",
                                                                             "gemini-2.5-pro", 0)


async def test_gemini_blocked_prompt_is_malformed() -> None:
    body = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash", "responseId": "r2",
    }
    model = ModelConfig(provider="gm", model="gemini-2.5-flash")
    with pytest.raises(MalformedResponse, match=r"prompt blocked \(SAFETY\)") as info:
        await gemini(lambda r: httpx.Response(200, json=body)).chat(model, normalize(model, REQ))
    assert not info.value.transient


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not json", "not a generateContent response"),
        (b"{}", "no candidates"),
        (json.dumps({"candidates": [{"content": {"parts": [{"text": 3}]}}]}).encode(),
         r"\$\.candidates\[0\]\.content\.parts\[0\]\.text"),
    ],
)
async def test_gemini_malformed(content: bytes, match: str) -> None:
    model = ModelConfig(provider="gm", model="gemini-2.5-flash")
    with pytest.raises(MalformedResponse, match=match) as info:
        await gemini(lambda r: httpx.Response(200, content=content)).chat(model, normalize(model, REQ))
    assert info.value.__cause__ is not None or match == "no candidates"


# --- HTTP errors (base translation with each provider's body shape) -----------------------------------------------


async def test_gemini_resource_exhausted_is_transient_with_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "27"}, json=GEMINI_429)
    model = ModelConfig(provider="gm", model="gemini-2.5-flash")
    with pytest.raises(ProviderStatusError) as info:
        await gemini(lambda r: response).chat(model, normalize(model, REQ))
    err = info.value
    assert (err.status_code, err.transient, err.retry_after) == (429, True, 27.0)
    assert "You exceeded your current quota" in str(err)


def test_gemini_retry_info_in_the_body() -> None:
    p = gemini(lambda r: httpx.Response(200))
    assert retry_info_delay(httpx.Response(429, json=GEMINI_429)) == 27.0
    assert p.retry_after(httpx.Response(429, json=GEMINI_429)) == 27.0
    assert p.retry_after(httpx.Response(429, headers={"Retry-After": "3"}, json=GEMINI_429)) == 3.0
    assert p.retry_after(httpx.Response(503, text="upstream down")) is None
    assert p.retry_after(httpx.Response(429, json={"error": {"code": 429, "message": "x"}})) is None


async def test_azure_429_is_transient_with_retry_after() -> None:
    body = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                                               "API version 2024-10-21 have exceeded token rate limit."}}
    response = httpx.Response(429, headers={"Retry-After": "6", "retry-after-ms": "5800"}, json=body)
    model = ModelConfig(provider="az", model="gpt4o-prod")
    with pytest.raises(ProviderStatusError) as info:
        await azure(lambda r: response).chat(model, normalize(model, REQ))
    assert (info.value.transient, info.value.retry_after) == (True, 6.0)
    assert "exceeded token rate limit" in str(info.value)


@pytest.mark.parametrize(
    ("make", "model", "body"),
    [
        (azure, ModelConfig(provider="az", model="d", use_responses_api=True),
         {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}),
        (gemini, ModelConfig(provider="gm", model="gemini-2.5-flash"),
         {"error": {"code": 401, "message": "API key not valid. Please pass a valid API key.",
                    "status": "UNAUTHENTICATED"}}),
    ],
)
async def test_401_is_not_transient(make: Callable[[Handler], Provider], model: ModelConfig, body: dict) -> None:
    p = make(lambda r: httpx.Response(401, json=body))
    with pytest.raises(ProviderStatusError) as info:
        await p.chat(model, normalize(model, REQ))
    assert (info.value.status_code, info.value.transient, info.value.retry_after) == (401, False, None)
    assert body["error"]["message"] in str(info.value)
