"""The context actor over a real nats-server: limits, summary, budget, replicas, restarts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tandem.actors import ContextActor, RouterActor
from tandem.messages import (
    ContextAppend,
    ContextAppended,
    ContextGet,
    ContextHistory,
    ContextHistoryReply,
    ContextList,
    ContextListReply,
    ModelContext,
    subjects,
)
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.runtime import start_actors

from ..conftest import chat_response, make_config


class Summarizer:
    """A model that summarises (or fails with 500 when ``broken``)."""

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.calls: list[dict] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        if self.broken:
            return httpx.Response(400, json={"error": {"message": "broken"}})
        return httpx.Response(200, json=chat_response(f"SUMMARY#{len(self.calls)}", model=body["model"]))


@asynccontextmanager
async def context(bus: Bus, model: Summarizer | None = None, *, replicas: int = 1,
                  **limits: int) -> AsyncIterator[None]:
    model = model or Summarizer()
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "context": lambda b, c: ContextActor(b, c, **limits)}
    async with start_actors(bus, make_config(), ["router", "context"], factories=factories):
        if replicas > 1:
            async with start_actors(bus, make_config(), ["context"] * (replicas - 1), factories=factories):
                yield
        else:
            yield


async def append(bus: Bus, session: str, content: str, role: str = "user") -> ContextAppended:
    return await bus.request(subjects.CONTEXT_APPEND, ContextAppend(session=session, role=role, content=content),
                             ContextAppended, timeout=10)


async def model_context(bus: Bus, session: str, budget: int | None = None) -> ModelContext:
    return await bus.request(subjects.CONTEXT_GET, ContextGet(session=session, budget=budget), ModelContext,
                             timeout=10)


async def history(bus: Bus, session: str) -> ContextHistoryReply:
    return await bus.request(subjects.CONTEXT_HISTORY, ContextHistory(session=session), ContextHistoryReply,
                             timeout=10)


async def wait_summary(bus: Bus, session: str) -> ContextHistoryReply:
    with anyio.fail_after(15):
        while True:
            h = await history(bus, session)
            if h.summary is not None and len(h.messages) <= 80:
                return h
            await anyio.sleep(0.05)


async def test_cap_trim_send_and_summary_range(bus: Bus) -> None:
    model = Summarizer()
    async with context(bus, model):
        seqs = [(await append(bus, "s1", f"message {i}")).entry.seq for i in range(100)]
        assert len((await history(bus, "s1")).messages) == 100 and not model.calls  # at the cap: kept
        seqs.append((await append(bus, "s1", "message 100")).entry.seq)  # 101 > 100: summarise
        h = await wait_summary(bus, "s1")
        ctx = await model_context(bus, "s1")
    assert [m.content for m in h.messages] == [f"message {i}" for i in range(21, 101)]  # newest 80
    assert h.summary.text == "SUMMARY#1" and (h.summary.first_seq, h.summary.last_seq) == (seqs[0], seqs[20])
    assert h.summary.messages == 21
    assert "message 0" in model.calls[0]["messages"][1]["content"]
    assert "message 21" not in model.calls[0]["messages"][1]["content"]
    assert [m.content for m in ctx.messages] == [f"message {i}" for i in range(81, 101)]  # send 20
    assert ctx.summary is not None and ctx.summary.last_seq == seqs[20] and ctx.stored == 80


async def test_second_summary_folds_the_first_and_extends_the_range(bus: Bus) -> None:
    model = Summarizer()
    async with context(bus, model, keep=10, trim_to=6, send=4):
        seqs = [(await append(bus, "s2", f"m{i}")).entry.seq for i in range(11)]
        first = (await wait_summary(bus, "s2")).summary
        seqs += [(await append(bus, "s2", f"m{i}")).entry.seq for i in range(11, 16)]
        with anyio.fail_after(10):
            while (h := await history(bus, "s2")).summary.messages == first.messages:
                await anyio.sleep(0.05)
    assert (first.first_seq, first.last_seq) == (seqs[0], seqs[4])
    assert (h.summary.first_seq, h.summary.last_seq) == (seqs[0], seqs[9]) and h.summary.messages == 10
    assert "Summary so far:\nSUMMARY#1" in model.calls[1]["messages"][1]["content"]
    assert [m.content for m in h.messages] == [f"m{i}" for i in range(10, 16)]


async def test_failed_summary_keeps_the_messages(bus: Bus) -> None:
    model = Summarizer(broken=True)
    async with context(bus, model, keep=5, trim_to=3, send=2):
        for i in range(8):
            await append(bus, "s3", f"m{i}")
        with anyio.fail_after(10):
            while not model.calls:
                await anyio.sleep(0.05)
        await anyio.sleep(0.3)
        h = await history(bus, "s3")
    assert h.summary is None and [m.content for m in h.messages] == [f"m{i}" for i in range(8)]


async def test_token_budget_leaves_out_the_oldest(bus: Bus) -> None:
    async with context(bus):
        for i in range(10):
            await append(bus, "s4", f"{i} " + "word " * 100)  # ~130 tokens each
        small = await model_context(bus, "s4", budget=500)
        full = await model_context(bus, "s4")
        jp = await append(bus, "s5", "日本語" * 100)
    assert small.tokens <= 500 and len(small.messages) == 3 and small.left_out == 7
    assert [m.content[0] for m in small.messages] == ["7", "8", "9"]
    assert len(full.messages) == 10 and full.budget == 8000 and full.tokens == sum(m.tokens for m in full.messages)
    assert jp.entry.tokens >= 300  # CJK: about one token per character


async def test_two_replicas_append_concurrently_nothing_lost_one_order(bus: Bus, nats_url: str) -> None:
    async with context(bus, replicas=2, keep=1000, trim_to=800):
        other = await Bus.connect(nats_url)
        try:
            async def writer(b: Bus, name: str) -> None:
                for i in range(40):
                    await append(b, "s6", f"{name}{i}")

            async with anyio.create_task_group() as tg:
                for name, b in (("a", bus), ("b", other), ("c", bus), ("d", other)):
                    tg.start_soon(writer, b, name)
            views = [await history(b, "s6") for b in (bus, other, bus, other)]
        finally:
            await other.close()
    contents = [m.content for m in views[0].messages]
    assert sorted(contents) == sorted(f"{n}{i}" for n in "abcd" for i in range(40))
    assert len(set(contents)) == 160
    for name in "abcd":  # each writer's messages stay in its order
        assert [c for c in contents if c[0] == name] == [f"{name}{i}" for i in range(40)]
    seqs = [m.seq for m in views[0].messages]
    assert seqs == sorted(seqs)
    assert all([m.content for m in v.messages] == contents for v in views[1:])  # every replica: one order


async def test_restart_of_actor_and_nats_server_on_the_same_store_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "jetstream"
    model = Summarizer()
    port = None
    async with EmbeddedNats(store_dir=store) as server:
        port = server.port
        b = await Bus.connect(server.url)
        try:
            async with context(b, model, keep=6, trim_to=4, send=3):
                for i in range(7):
                    await append(b, "s7", f"m{i}")
                await wait_summary(b, "s7")
                await append(b, "s7", "m7")
        finally:
            await b.close()
    async with EmbeddedNats(store_dir=store, port=port) as server:
        b = await Bus.connect(server.url)
        try:
            async with context(b, model, keep=6, trim_to=4, send=3):
                h = await history(b, "s7")
                ctx = await model_context(b, "s7")
                await append(b, "s7", "m8")
                listed = await b.request(subjects.CONTEXT_LIST, ContextList(), ContextListReply, timeout=10)
        finally:
            await b.close()
    assert h.summary is not None and h.summary.text == "SUMMARY#1"
    assert [m.content for m in h.messages] == ["m3", "m4", "m5", "m6", "m7"]
    assert [m.content for m in ctx.messages] == ["m5", "m6", "m7"] and ctx.summary is not None
    assert [(c.session, c.messages) for c in listed.conversations] == [("s7", 6)]


@pytest.mark.parametrize("session", ["", "a.b", "x" * 65, "a b"])
async def test_bad_session_ids_are_refused(bus: Bus, session: str) -> None:
    from tandem.services.errors import RemoteError

    async with context(bus):
        with pytest.raises(RemoteError) as info:
            await append(bus, session, "x")
    assert info.value.code == "bad_request"
