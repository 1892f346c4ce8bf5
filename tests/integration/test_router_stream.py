"""The router over a real nats-server with a streaming provider: a looping answer is stopped and the next
candidate answers; the failed attempt is in the usage log (httpx.MockTransport)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
from tandem.services.bus import Bus
from tandem.services.config import FallbackPolicy, ProviderConfig
from tandem.services.usage import load_usage

from ..unit.test_openai_stream import LOOP, chunk, usage
from .test_router import Script, complete, config, router, usage_log  # noqa: F401 (autouse: the usage log in tmp_path)


def sse(*events: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(events))


async def test_a_looping_candidate_is_stopped_and_the_next_one_answers(bus: Bus, tmp_path: Path) -> None:
    cfg = config(tmp_path, fallback=FallbackPolicy(max_retries_per_model=0))
    cfg = msgspec.structs.replace(cfg, providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1",
                                                                         stream=True)})
    script = Script(alpha=[sse(*[chunk(LOOP)] * 300, chunk(None, "length"), b"data: [DONE]\n\n")],
                    beta=[sse(chunk("Bonjour"), chunk(None, "stop"), usage(11, 2), b"data: [DONE]\n\n")])
    async with router(bus, cfg, script):
        reply = await complete(bus)
    assert (reply.content, reply.fallback_chain, reply.usage.output_tokens) == ("Bonjour", ["alpha", "beta"], 2)
    assert all(body["stream"] is True for body in script.bodies)
    failed, ok = load_usage(tmp_path / "usage.jsonl")
    assert (failed.model, failed.ok, failed.error_class) == ("alpha", False, "DegenerateStream")
    assert failed.error.startswith("degenerate_output: alpha-model repeated") and ok.ok
