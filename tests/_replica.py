"""Actors in their own process, for kill and crash tests: ``python -m tests._replica URL DELAY [NAME...]``.

Like ``tandem serve NAME...`` (default: ``router``), with the router answering every
completion after ``DELAY`` seconds from a mock model (``httpx.MockTransport``), so
requests are in flight when a test kills the process. Prints ``ready <names>`` on stdout
once every actor serves, and exits (status 1, reason on stderr) when they stop.
"""

from __future__ import annotations

import os
import sys

import anyio
import httpx

from tandem.actors.router import RouterActor
from tandem.services.bus import Bus
from tandem.services.config import Config, ModelConfig, NatsConfig, ProviderConfig


def replica_config() -> Config:
    """One mock OpenAI-compatible provider behind the ``execution`` tier."""
    return Config(
        nats=NatsConfig(request_timeout_s=30),
        providers={"mock": ProviderConfig(kind="openai", base_url="http://mock.invalid/v1", gen_ai_provider="openai")},
        models={"writer-model": ModelConfig(provider="mock", model="writer-model")},
        tiers={"planning": ["writer-model"], "execution": ["writer-model"]},
        tasks={"planning": "planning", "single_stage": "execution", "manual_transform": "execution"},
    )


def mock_transport(delay: float) -> httpx.MockTransport:
    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(delay)
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "writer-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"from {os.getpid()}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    return httpx.MockTransport(answer)


async def main(url: str, delay: float, names: list[str]) -> None:
    from tandem.services.runtime import start_actors

    os.environ.setdefault("TANDEM_USAGE_LOG_DISABLE", "1")
    bus = await Bus.connect(url, name=f"replica-{os.getpid()}")
    config, transport = replica_config(), mock_transport(delay)
    try:
        async with start_actors(bus, config, names,
                                {"router": lambda b, c: RouterActor(b, c, transport=transport)}) as started:
            print("ready", *started, flush=True)
            await anyio.sleep_forever()
    finally:
        await bus.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[2]), sys.argv[3:] or ["router"])
