"""Azure OpenAI: chat-completions deployments and the Responses API.

Two wire formats, chosen per model by ``ModelConfig.use_responses_api``:

Chat completions (Azure OpenAI REST reference, "Chat completions - Create",
GA ``api-version`` 2024-10-21):
``POST {endpoint}/openai/deployments/{deployment-id}/chat/completions?api-version=...``
with an ``api-key: <key>`` header. The deployment in the path selects the
model, so the body is OpenAI's chat-completions body without ``model``
(:func:`~tandem.services.llm._openai.chat_completions_body` with ``model_field=False``);
the reply is a chat completion (:func:`~tandem.services.llm._openai.parse_chat_completion`).

Responses API (Azure "API version lifecycle" page, section "v1 API": the
``/openai/v1/responses`` path is Generally Available and "``api-version`` is no
longer a required parameter with the v1 GA API"; the pre-v1 form
``/openai/responses?api-version=2025-04-01-preview`` is the "last generation
API"): ``POST {endpoint}/openai/v1/responses`` with the deployment name in the
body's ``model``. Request and response follow OpenAI's Responses API reference
("Create a model response", mirrored by ``openai-python``
``types/responses/response_create_params.py`` and ``response.py``):

- request: ``model``, ``input`` (``[{"role": "system"|"user"|"assistant",
  "content": "..."}]``, EasyInputMessage), ``max_output_tokens``,
  ``temperature``, ``reasoning: {"effort": ...}``, ``text: {"format":
  {"type": "json_schema", "name", "schema", "strict": false}}``, ``store``.
  The Responses API has no ``stop`` parameter, so stop sequences are not sent.
- response: ``id``, ``model``, ``status`` (``completed``, ``incomplete``,
  ``failed``, ``in_progress``, ``cancelled``, ``queued``),
  ``incomplete_details.reason`` (``max_output_tokens``, ``content_filter``),
  ``output[]`` items of ``type: "message"`` whose ``content[]`` parts of
  ``type: "output_text"`` carry the text (``reasoning`` items are skipped),
  ``usage.input_tokens`` / ``usage.output_tokens``.

``finish_reason`` uses the chat-completions words: ``completed`` → ``stop``,
``incomplete``/``max_output_tokens`` → ``length``,
``incomplete``/``content_filter`` → ``content_filter``; a reply holding only a
refusal part → ``refusal``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from ..config import ModelConfig
from ..errors import ConfigError, MalformedResponse
from ._base import Completion, Provider
from ._openai import chat_completions_body, parse_chat_completion
from ._params import ChatParams

__all__ = ["AzureOpenAIProvider", "parse_responses_result", "responses_body"]

#: ``api-version`` values the v1 surface takes; dated versions belong to the
#: deployment (chat-completions) path and are not sent to ``/openai/v1``.
V1_API_VERSIONS = frozenset({"preview", "latest"})


class _OutputContent(msgspec.Struct):
    type: str
    text: str = ""
    refusal: str = ""


class _OutputItem(msgspec.Struct):
    type: str
    content: list[_OutputContent] | None = None


class _IncompleteDetails(msgspec.Struct):
    reason: str | None = None


class _ResponseError(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _ResponsesUsage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0


class _ResponsesResult(msgspec.Struct):
    output: list[_OutputItem]
    id: str = ""
    model: str = ""
    status: str | None = None
    incomplete_details: _IncompleteDetails | None = None
    error: _ResponseError | None = None
    usage: _ResponsesUsage | None = None


_responses_decoder = msgspec.json.Decoder(_ResponsesResult)

_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def responses_body(model: ModelConfig, params: ChatParams) -> dict[str, Any]:
    """Return the Responses API JSON body for ``params``.

    Parameters
    ----------
    model : ModelConfig
        ``model.model`` is the Azure deployment name; ``model.extra`` is merged last.
    params : ChatParams

    Returns
    -------
    dict
        ``model``, ``input``, ``max_output_tokens``, ``store`` and, when set,
        ``temperature``, ``reasoning`` and ``text.format``.

    Examples
    --------
    >>> from messages import ChatMessage
    >>> m = ModelConfig(provider="az", model="gpt-5-mini", use_responses_api=True)
    >>> p = ChatParams(messages=[ChatMessage(role="user", content="hi")], max_tokens=64)
    >>> responses_body(m, p)
    {'model': 'gpt-5-mini', 'input': [{'role': 'user', 'content': 'hi'}], 'max_output_tokens': 64, 'store': False}
    """
    body: dict[str, Any] = {
        "model": model.model,
        "input": [{"role": m.role, "content": m.content} for m in params.messages],
        "max_output_tokens": params.max_tokens,
        # One-shot calls: do not keep the prompt and answer server-side for
        # previous_response_id chaining (Tandem never chains).
        "store": False,
    }
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.reasoning_effort is not None:
        body["reasoning"] = {"effort": params.reasoning_effort}
    if params.schema is not None:
        match model.structured_output:
            case "none":
                pass
            case "json_object":
                body["text"] = {"format": {"type": "json_object"}}
            case _:
                body["text"] = {"format": {"type": "json_schema", "name": params.schema_name,
                                           "schema": params.schema, "strict": False}}
    body.update(model.extra)
    return body


def _finish_reason(result: _ResponsesResult, refused: bool) -> str:
    if result.status == "incomplete":
        reason = (result.incomplete_details.reason if result.incomplete_details else None) or "incomplete"
        return _INCOMPLETE_REASONS.get(reason, reason)
    if refused:
        return "refusal"
    return "stop"


def parse_responses_result(provider: str, model: ModelConfig, data: bytes) -> Completion:
    """Decode a Responses API body into a :class:`~tandem.services.llm.Completion`.

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
        When the body is not a response object, or its ``status`` is
        ``failed``, ``cancelled``, ``queued`` or ``in_progress`` (no answer to use).
    """
    try:
        result = _responses_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"{provider}: not a Responses API result: {exc}") from exc
    if result.status not in (None, "completed", "incomplete"):
        detail = f": {result.error.code}: {result.error.message}" if result.error else ""
        raise MalformedResponse(f"{provider}: response {result.id or '?'} has status {result.status!r}{detail}")
    texts: list[str] = []
    refused = False
    for item in result.output:
        if item.type != "message":
            continue
        for part in item.content or ():
            if part.type == "output_text":
                texts.append(part.text)
            elif part.type == "refusal":
                refused = True
    usage = result.usage or _ResponsesUsage()
    return Completion(
        content="".join(texts),
        model=result.model or model.model,
        finish_reason=_finish_reason(result, refused and not texts),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        latency_ms=0.0,
        response_id=result.id,
    )


class AzureOpenAIProvider(Provider):
    """Azure OpenAI (see :class:`~tandem.services.llm.Provider`).

    ``ModelConfig.model`` is the deployment name. Models with
    ``use_responses_api`` call ``/openai/v1/responses``; the others call their
    deployment's chat-completions endpoint, which needs ``ProviderConfig.api_version``.

    Raises
    ------
    ConfigError
        From :meth:`build_request`, when a chat-completions model is called
        and the provider has no ``api_version``.

    Examples
    --------
    >>> from messages import ChatMessage
    >>> from services.config import ProviderConfig
    >>> p = AzureOpenAIProvider("az", ProviderConfig(kind="azure", base_url="https://res.openai.azure.com",
    ...                                              api_version="2024-10-21"))
    >>> params = ChatParams(messages=[ChatMessage(role="user", content="hi")], max_tokens=8)
    >>> path, body, query = p.build_request(ModelConfig(provider="az", model="gpt4o-prod"), params)
    >>> path, query
    ('openai/deployments/gpt4o-prod/chat/completions', {'api-version': '2024-10-21'})
    >>> p.build_request(ModelConfig(provider="az", model="gpt4o-prod", use_responses_api=True), params)[:1]
    ('openai/v1/responses',)
    """

    default_gen_ai_provider = "azure.ai.openai"
    auth_header = ("api-key", "{key}")

    def build_request(self, model: ModelConfig, params: ChatParams) -> tuple[str, dict[str, Any], dict[str, str]]:
        if model.use_responses_api:
            version = self.config.api_version
            query = {"api-version": version} if version in V1_API_VERSIONS else {}
            return "openai/v1/responses", responses_body(model, params), query
        if not self.config.api_version:
            raise ConfigError(f"provider {self.name!r}: Azure chat completions need api_version "
                              f"(e.g. 2024-10-21) for deployment {model.model!r}")
        path = f"openai/deployments/{quote(model.model, safe='')}/chat/completions"
        return path, chat_completions_body(model, params, model_field=False), {"api-version": self.config.api_version}

    def parse_response(self, model: ModelConfig, data: bytes) -> Completion:
        if model.use_responses_api:
            return parse_responses_result(self.name, model, data)
        return parse_chat_completion(self.name, model, data)
