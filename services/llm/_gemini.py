"""Google Gemini API ``generateContent``.

Wire format (Gemini API reference, "Generating content" /
``models.generateContent``; field names as sent by ``google-genai``'s
``models.py`` to the Gemini Developer API, descriptions from its ``types.py``):
``POST {base_url}/v1beta/models/{model}:generateContent`` with an
``x-goog-api-key: <key>`` header ("All requests to the Gemini API must include
an ``x-goog-api-key`` header with your API key").

Request::

    {"contents": [{"role": "user" | "model", "parts": [{"text": "..."}]}],
     "systemInstruction": {"parts": [{"text": "..."}]},
     "generationConfig": {"maxOutputTokens": N, "temperature": T,
                          "stopSequences": [...],
                          "responseMimeType": "application/json",
                          "responseJsonSchema": {...JSON Schema...},
                          "thinkingConfig": {"thinkingLevel": "low"} | {"thinkingBudget": N}}}

Chat roles map ``user`` → ``user``, ``assistant`` → ``model``; ``system``
messages become parts of ``systemInstruction``.

Structured output uses ``responseJsonSchema``, "an alternative to
``response_schema`` that accepts JSON Schema" (``$ref``/``$defs``, ``anyOf``,
``additionalProperties``, ``required`` …), whereas ``responseSchema`` takes
only "a select subset of an OpenAPI 3.0 schema object"; both need
``responseMimeType: "application/json"`` and must not be sent together.

Thinking (Gemini API "Gemini thinking" guide): Gemini 3 and later take
``thinkingLevel`` (``minimal``/``low``/``medium``/``high``; which levels a
model accepts varies, e.g. 3 Pro: ``low``/``high``), Gemini 2.5 takes
``thinkingBudget`` in tokens (2.5 Pro 128–32768, 2.5 Flash 0–24576, 2.5
Flash-Lite 0 or 512–24576); sending both is a 400. ``reasoning_effort`` maps
to ``thinkingLevel`` as-is (``capabilities.reasoning_levels`` lists what the
model accepts), and for ``gemini-1.*``/``gemini-2.*`` model ids to
:data:`THINKING_BUDGETS`, chosen to be valid on every 2.5 model. Thinking
tokens count against ``maxOutputTokens``.

Response: ``candidates[0].content.parts[*].text`` (parts with
``thought: true`` are thought summaries and are skipped),
``candidates[0].finishReason``, ``usageMetadata.promptTokenCount`` /
``candidatesTokenCount`` / ``thoughtsTokenCount`` (output = candidates +
thoughts), ``modelVersion``, ``responseId``. A blocked prompt comes back as 200
with no candidates and ``promptFeedback.blockReason``. Errors are
``{"error": {"code": 429, "message": ..., "status": "RESOURCE_EXHAUSTED",
"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
"retryDelay": "27s"}, ...]}}`` (google.rpc.Status); the base class reads
``error.message``, and :meth:`GeminiProvider.retry_after` reads ``RetryInfo``.

``finish_reason`` uses the chat-completions words: ``STOP`` → ``stop``,
``MAX_TOKENS`` → ``length``, the safety/recitation/blocklist reasons →
``content_filter``; any other value is passed on lower-cased.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from ..config import ModelConfig
from ..errors import MalformedResponse
from ._base import Completion, Provider
from ._base import retry_after as header_retry_after
from ._params import ChatParams

__all__ = ["THINKING_BUDGETS", "GeminiProvider", "generate_content_body", "parse_generate_content", "retry_info_delay"]

#: ``reasoning_effort`` → ``thinkingBudget`` for models that predate
#: ``thinkingLevel``. 512 is the smallest budget every 2.5 model accepts
#: (Flash-Lite: 0 or ≥512; Pro cannot switch thinking off), 24576 the largest
#: (Flash and Flash-Lite cap there).
THINKING_BUDGETS: dict[str, int] = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

_BUDGET_MODELS = re.compile(r"^(?:models/)?gemini-[12][.-]")

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class _Part(msgspec.Struct, rename="camel"):
    text: str = ""
    thought: bool = False


class _Content(msgspec.Struct, rename="camel"):
    parts: list[_Part] = []
    role: str = ""


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str = ""


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str = ""
    block_reason_message: str = ""


class _UsageMetadata(msgspec.Struct, frozen=True, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0


class _GenerateContentResponse(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata = _UsageMetadata()
    model_version: str = ""
    response_id: str = ""


class _ErrorDetail(msgspec.Struct, rename={"type": "@type", "retry_delay": "retryDelay"}):
    type: str = ""
    retry_delay: str = ""


class _Status(msgspec.Struct):
    details: list[_ErrorDetail] = []


class _ErrorEnvelope(msgspec.Struct):
    error: _Status


_response_decoder = msgspec.json.Decoder(_GenerateContentResponse)
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)


def _model_id(model: ModelConfig) -> str:
    return model.model.removeprefix("models/")


def _thinking_config(model: ModelConfig, effort: str) -> dict[str, Any]:
    if _BUDGET_MODELS.match(model.model):
        return {"thinkingBudget": THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])}
    return {"thinkingLevel": effort}


def generate_content_body(model: ModelConfig, params: ChatParams) -> dict[str, Any]:
    """Return the ``generateContent`` JSON body for ``params``.

    ``model.extra`` is merged last; a dict value is merged one level deep into
    the dict already there, so ``extra={"generationConfig": {"topK": 20}}``
    adds to the generation config instead of replacing it.

    Parameters
    ----------
    model : ModelConfig
    params : ChatParams

    Returns
    -------
    dict

    Examples
    --------
    >>> from messages import ChatMessage
    >>> m = ModelConfig(provider="g", model="gemini-2.5-flash")
    >>> p = ChatParams(messages=[ChatMessage(role="system", content="Be terse."),
    ...                          ChatMessage(role="user", content="hi")],
    ...                max_tokens=64, reasoning_effort="low")
    >>> generate_content_body(m, p)  # doctest: +NORMALIZE_WHITESPACE
    {'contents': [{'role': 'user', 'parts': [{'text': 'hi'}]}],
     'systemInstruction': {'parts': [{'text': 'Be terse.'}]},
     'generationConfig': {'maxOutputTokens': 64, 'thinkingConfig': {'thinkingBudget': 1024}}}
    """
    system = [{"text": m.content} for m in params.messages if m.role == "system"]
    contents = [{"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
                for m in params.messages if m.role != "system"]
    config: dict[str, Any] = {"maxOutputTokens": params.max_tokens}
    if params.temperature is not None:
        config["temperature"] = params.temperature
    if params.stop:
        config["stopSequences"] = list(params.stop)
    if params.schema is not None and model.structured_output != "none":
        config["responseMimeType"] = "application/json"
        if model.structured_output != "json_object":
            config["responseJsonSchema"] = params.schema
    if params.reasoning_effort is not None:
        config["thinkingConfig"] = _thinking_config(model, params.reasoning_effort)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    body["generationConfig"] = config
    for key, value in model.extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def parse_generate_content(provider: str, model: ModelConfig, data: bytes) -> Completion:
    """Decode a ``generateContent`` body into a :class:`~tandem.services.llm.Completion`.

    A candidate without parts (e.g. ``MAX_TOKENS`` reached while thinking, or
    ``SAFETY``) gives empty content with its finish reason.

    Parameters
    ----------
    provider : str
        Provider key, for messages.
    model : ModelConfig
    data : bytes
        The 2xx body.

    Raises
    ------
    MalformedResponse
        When the body is not a ``GenerateContentResponse``, or has no
        candidates (a blocked prompt: the message names ``promptFeedback.blockReason``).
    """
    try:
        response = _response_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"{provider}: not a generateContent response: {exc}") from exc
    if not response.candidates:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            why = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise MalformedResponse(f"{provider}: prompt blocked ({feedback.block_reason}){why}")
        raise MalformedResponse(f"{provider}: generateContent response has no candidates")
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content is not None else []
    usage = response.usage_metadata
    reason = candidate.finish_reason
    return Completion(
        content="".join(p.text for p in parts if not p.thought),
        model=response.model_version or _model_id(model),
        finish_reason=_FINISH_REASONS.get(reason, reason.lower()),
        input_tokens=usage.prompt_token_count,
        output_tokens=usage.candidates_token_count + usage.thoughts_token_count,
        latency_ms=0.0,
        response_id=response.response_id,
    )


def retry_info_delay(response: httpx.Response) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` error detail (``"retryDelay": "27.5s"``), or ``None``.

    Examples
    --------
    >>> r = httpx.Response(429, json={"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
    ...     {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27.5s"}]}})
    >>> retry_info_delay(r)
    27.5
    """
    try:
        details = _error_decoder.decode(response.content).error.details
    except msgspec.DecodeError:
        return None
    for detail in details:
        if detail.type == _RETRY_INFO and detail.retry_delay.endswith("s"):
            try:
                return max(0.0, float(detail.retry_delay[:-1]))
            except ValueError:
                return None
    return None


class GeminiProvider(Provider):
    """The Gemini API's ``generateContent`` (see :class:`~tandem.services.llm.Provider`).

    ``ModelConfig.model`` is the model id (``gemini-2.5-flash``; a leading
    ``models/`` is accepted); ``ProviderConfig.base_url`` is
    ``https://generativelanguage.googleapis.com``.

    Examples
    --------
    >>> from messages import ChatMessage
    >>> from services.config import ProviderConfig
    >>> p = GeminiProvider("g", ProviderConfig(kind="gemini", base_url="https://generativelanguage.googleapis.com"))
    >>> params = ChatParams(messages=[ChatMessage(role="user", content="hi")], max_tokens=8)
    >>> p.build_request(ModelConfig(provider="g", model="gemini-2.5-flash"), params)[0]
    'v1beta/models/gemini-2.5-flash:generateContent'
    """

    default_gen_ai_provider = "gcp.gemini"
    auth_header = ("x-goog-api-key", "{key}")

    def build_request(self, model: ModelConfig, params: ChatParams) -> tuple[str, dict[str, Any], dict[str, str]]:
        path = f"v1beta/models/{quote(_model_id(model), safe='')}:generateContent"
        return path, generate_content_body(model, params), {}

    def parse_response(self, model: ModelConfig, data: bytes) -> Completion:
        return parse_generate_content(self.name, model, data)

    def retry_after(self, response: httpx.Response) -> float | None:
        """Seconds to wait after an error: ``Retry-After``, else the body's ``RetryInfo.retryDelay``.

        Gemini states its back-off in the error body rather than in a header.
        """
        seconds = header_retry_after(response)
        return seconds if seconds is not None else retry_info_delay(response)
