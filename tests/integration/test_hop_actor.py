"""The actor's mailbox (issue 14): bounded concurrency, a bounded backlog with backpressure,
heartbeats while queued, and one cancel scope that tells a timeout, a deadline and a cancel apart."""

from __future__ import annotations

import time
from functools import partial

import anyio
import pytest
from tandem.actors import Actor, Endpoint
from tandem.messages import CancelWork, Message, subjects
from tandem.services.bus import Bus, deadline_scope
from tandem.services.errors import DeadlineExceeded, RemoteError


class Hold(Message, frozen=True, kw_only=True, tag="hop_hold"):
    n: int = 0


class Held(Message, frozen=True, kw_only=True, tag="hop_held"):
    n: int = 0


class Gate(Actor):
    """Every request waits for ``release``; counts how many handlers run at once."""

    name = "hop_gate"

    def __init__(self, bus: Bus, *, concurrency: int, backlog: int, timeout: float = 30) -> None:
        super().__init__(bus, concurrency=concurrency, backlog=backlog)
        self.release = anyio.Event()
        self.running = 0
        self.most = 0
        self.started = 0
        self.timeout = timeout

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.hop.hold", Hold, self.hold, timeout=self.timeout)]

    async def hold(self, request: Hold) -> Held:
        self.running += 1
        self.started += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return Held(n=request.n, correlation_id=request.correlation_id)


@pytest.mark.parametrize("backlog", [0, 3])
async def test_at_most_concurrency_handlers_and_every_queued_request_answered(bus: Bus, backlog: int) -> None:
    actor = Gate(bus, concurrency=2, backlog=backlog)
    replies: list[int] = []

    async def call(n: int) -> None:
        replies.append((await bus.request("test.hop.hold", Hold(n=n), Held, timeout=30)).n)

    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        async with anyio.create_task_group() as callers:
            for n in range(8):  # more than concurrency + backlog: the rest wait in the subscription
                callers.start_soon(call, n)
            with anyio.fail_after(10):
                while actor.started < 2:
                    await anyio.sleep(0.01)
            await bus.flush()
            await anyio.sleep(0.2)  # let anything that could wrongly start do so
            assert actor.running == 2
            actor.release.set()
        tg.cancel_scope.cancel()
    assert actor.most == 2
    assert sorted(replies) == list(range(8))


async def test_queued_requests_get_heartbeats(nats_url: str) -> None:
    # a caller that counts 1 s of silence as a lost replica still gets its answer after
    # waiting 2.5 s in the backlog behind a busy worker: the queued request was heartbeated
    bus = await Bus.connect(nats_url, liveness=1.5)
    try:
        actor = Gate(bus, concurrency=1, backlog=4)
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            first = time.monotonic()
            async with anyio.create_task_group() as callers:
                callers.start_soon(partial(bus.request, "test.hop.hold", Hold(n=1), Held, timeout=30))
                with anyio.fail_after(10):
                    while actor.started < 1:
                        await anyio.sleep(0.01)

                async def second() -> None:
                    reply = await bus.request("test.hop.hold", Hold(n=2), Held, timeout=30)
                    assert reply.n == 2

                callers.start_soon(second)
                await anyio.sleep(2.5)
                assert actor.started == 1  # the second one is still queued
                actor.release.set()
            assert time.monotonic() - first >= 2.5
            tg.cancel_scope.cancel()
    finally:
        await bus.close()


async def test_one_scope_tells_timeout_deadline_and_cancel_apart(bus: Bus) -> None:
    quick, slow = Gate(bus, concurrency=4, backlog=4, timeout=0.3), Gate(bus, concurrency=4, backlog=4)
    slow.name = "hop_gate_slow"
    slow.endpoints = lambda: [Endpoint("test.hop.slow", Hold, slow.hold, timeout=30)]  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await tg.start(quick.run)
        await tg.start(slow.run)
        with pytest.raises(RemoteError) as timeout:  # the endpoint's own timeout
            await bus.request("test.hop.hold", Hold(), Held, timeout=10)
        assert timeout.value.code == "timeout"
        # the request's deadline, sooner than the endpoint's timeout
        with pytest.raises((RemoteError, DeadlineExceeded)) as deadline, deadline_scope(time.time() + 0.1):
            await bus.request("test.hop.slow", Hold(), Held, timeout=10)
        assert deadline.value.code == "deadline_exceeded"
        with anyio.fail_after(10):
            while slow._inflight:  # the first hold ended with its deadline
                await anyio.sleep(0.01)
        failures: list[RemoteError] = []

        async def call() -> None:
            try:
                await bus.request("test.hop.slow", Hold(), Held, timeout=10)
            except RemoteError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as callers:
            callers.start_soon(call)
            with anyio.fail_after(10):
                while not slow._inflight:
                    await anyio.sleep(0.01)
            (cid,) = slow._inflight
            await bus.publish(subjects.CONTROL_CANCEL, CancelWork(correlation_id=cid))  # tandem.control.cancel
        assert [e.code for e in failures] == ["cancelled"]
        assert not slow._inflight  # nothing left behind
        tg.cancel_scope.cancel()
