"""Streamed chat completions (server-sent events) and the loop guard on them (httpx.MockTransport).

The chunks are the documented ``chat.completion.chunk`` shape, with the usage-only last chunk that
``stream_options.include_usage`` adds, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable

import httpx
import msgspec
import pytest
from tandem.messages import ChatMessage, CompletionRequest
from tandem.services.config import ModelConfig, ProviderConfig
from tandem.services.errors import (
    DegenerateStream,
    MalformedResponse,
    ProviderStatusError,
)
from tandem.services.llm import OpenAIChatProvider, normalize
from tandem.services.repetition import STREAM_THRESHOLDS, find_repetition

M = ModelConfig(provider="p", model="m")
LOOP = "The sea is wide and the sky is very blue today. "


def ask(content: str = "hi", **kw) -> CompletionRequest:
    return CompletionRequest(task="chat", messages=[ChatMessage(role="user", content=content)], max_tokens=4000, **kw)


def chunk(content: str | None = None, finish: str | None = None, **extra) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "m-2025",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage(prompt: int, completion: int) -> bytes:
    body = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "m-2025", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Stream:
    """A streamed answer that records how much of it the client read."""

    def __init__(self, events: Iterable[bytes]) -> None:
        self.events = list(events)
        self.sent = 0
        self.bodies: list[dict] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._body())

    async def _body(self) -> AsyncIterator[bytes]:
        for event in self.events:
            self.sent += 1
            yield event


def provider(handler, **cfg) -> OpenAIChatProvider:
    config = ProviderConfig(kind="openai", base_url="http://llm.test/v1", stream=True, **cfg)
    return OpenAIChatProvider("p", config, transport=httpx.MockTransport(handler))


async def test_a_streamed_answer_is_assembled_with_usage_and_finish_reason() -> None:
    stream = Stream([chunk("", None), chunk("Bon"), chunk("jour"), chunk("!"), chunk(None, "stop"), usage(9, 3),
                     b"data: [DONE]\n\n"])
    p = provider(stream.handle)
    out = await p.chat(M, normalize(M, ask()))
    await p.aclose()
    assert (out.content, out.finish_reason, out.input_tokens, out.output_tokens, out.model, out.response_id) == (
        "Bonjour!", "stop", 9, 3, "m-2025", "chatcmpl-s")
    assert stream.bodies[0]["stream"] is True and stream.bodies[0]["stream_options"] == {"include_usage": True}


async def test_event_stream_framing_comments_and_multiline_data() -> None:
    """WHATWG event-stream: ``:`` lines are comments, a blank line ends the event, CRLF ends lines."""
    raw = (b": keep-alive\r\n\r\n" + chunk("a").replace(b"\n", b"\r\n") + chunk("b", "length") + b"data: [DONE]\n\n")
    p = provider(lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw))
    out = await p.chat(M, normalize(M, ask()))
    await p.aclose()
    assert (out.content, out.finish_reason) == ("ab", "length")


async def test_a_looping_stream_is_stopped_early_with_a_typed_error() -> None:
    stream = Stream([chunk(LOOP) for _ in range(400)] + [chunk(None, "length"), b"data: [DONE]\n\n"])
    p = provider(stream.handle)
    with pytest.raises(DegenerateStream) as info:
        await p.chat(M, normalize(M, ask()))
    await p.aclose()
    assert info.value.code == "degenerate_output" and "the sea is wide" in str(info.value)
    assert stream.sent < 60  # stopped reading long before max_tokens (closing the response hangs up)


async def test_repetition_the_prompt_already_has_is_not_a_loop() -> None:
    """A conversion of a text that repeats a sentence repeats it too: the prompt is the guard's source."""
    source = LOOP * 40
    stream = Stream([chunk(LOOP) for _ in range(40)] + [chunk(None, "stop"), usage(500, 480), b"data: [DONE]\n\n"])
    p = provider(stream.handle)
    out = await p.chat(M, normalize(M, ask(f"Convert:\n{source}")))
    await p.aclose()
    assert out.content == source and stream.sent == len(stream.events)


async def test_a_short_early_repeat_is_left_to_the_check_on_the_finished_answer() -> None:
    """Six copies early in a stream are no reason to stop it (the finished answer dilutes them)."""
    early = "Un. Deux. " + LOOP * 6 + "".join(f"Sentence number {i} is about something else. " for i in range(60))
    assert find_repetition(early[:1100]) is not None  # the finished-answer rule would flag the prefix...
    assert find_repetition(early[:1100], **STREAM_THRESHOLDS) is None  # ...the stream rule does not
    stream = Stream([chunk(early[i:i + 50]) for i in range(0, len(early), 50)] + [chunk(None, "stop"),
                                                                                 b"data: [DONE]\n\n"])
    p = provider(stream.handle)
    out = await p.chat(M, normalize(M, ask()))
    await p.aclose()
    assert out.content == early and find_repetition(early) is None


async def test_a_schema_shaped_answer_is_not_streamed() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "x", "model": "m", "choices": [
            {"index": 0, "message": {"content": "{}"}, "finish_reason": "stop"}], "usage": {}})

    p = provider(handler)
    out = await p.chat(M, normalize(M, ask(response_schema={"type": "object"})))
    await p.aclose()
    assert out.content == "{}" and "stream" not in seen[0]


async def test_status_errors_and_malformed_chunks_while_streaming() -> None:
    p = provider(lambda r: httpx.Response(429, headers={"retry-after": "3"}, json={"error": {"message": "slow down"}}))
    with pytest.raises(ProviderStatusError) as info:
        await p.chat(M, normalize(M, ask()))
    assert info.value.status_code == 429 and info.value.retry_after == 3.0 and "slow down" in str(info.value)
    await p.aclose()
    p = provider(lambda r: httpx.Response(200, content=chunk("a") + b"data: {not json\n\n"))
    with pytest.raises(MalformedResponse):
        await p.chat(M, normalize(M, ask()))
    await p.aclose()


def test_streaming_is_on_for_the_embedded_model_and_opt_in_elsewhere() -> None:
    assert ProviderConfig(kind="llamacpp_embedded").stream is True
    assert ProviderConfig(kind="openai").stream is False
    assert ProviderConfig(kind="llamacpp_embedded", stream=False).stream is False
    assert msgspec.yaml.decode(b"kind: openai\nstream: true\n", type=ProviderConfig).stream is True
    with pytest.raises(msgspec.ValidationError, match="only openai and llamacpp_embedded providers stream"):
        msgspec.yaml.decode(b"kind: gemini\nstream: true\n", type=ProviderConfig)
