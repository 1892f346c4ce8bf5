"""The actor's workers keep one cancel scope and one timer across requests (issue 14): a request is
still cut at its own timeout or deadline, whatever the requests before it, a cancelled worker
serves the next request in a fresh scope, and anyio's shields still hold inside a handler."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest
from tandem.actors import Actor, Endpoint
from tandem.messages import CancelWork, Message, subjects
from tandem.services.bus import Bus, deadline_scope
from tandem.services.errors import DeadlineExceeded, RemoteError


class Nap(Message, frozen=True, kw_only=True, tag="hop_nap"):
    seconds: float = 0.0
    shielded: bool = False


class Napped(Message, frozen=True, kw_only=True, tag="hop_napped"):
    finished: bool = True


class Sleeper(Actor):
    """One worker; ``test.hop.nap`` (timeout 30 s) and ``test.hop.quick`` (timeout 0.3 s) sleep as asked."""

    name = "hop_sleeper"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, concurrency=1, backlog=8)
        self.shield_done = 0

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.hop.nap", Nap, self.nap, timeout=30),
                Endpoint("test.hop.quick", Nap, self.nap, timeout=0.3)]

    async def nap(self, request: Nap) -> Napped:
        if request.shielded:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(request.seconds)
            self.shield_done += 1
            await anyio.lowlevel.checkpoint()  # the pending cancellation lands here
        else:
            await anyio.sleep(request.seconds)
        return Napped(correlation_id=request.correlation_id)


async def _code(bus: Bus, subject: str, request: Nap) -> str:
    try:
        await bus.request(subject, request, Napped, timeout=10)
    except (RemoteError, DeadlineExceeded) as exc:
        return exc.code
    return "ok"


async def test_each_request_is_cut_at_its_own_timeout_on_one_worker(bus: Bus) -> None:
    actor = Sleeper(bus)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        # a 30 s endpoint arms the worker's timer far ahead; the next request needs it sooner
        assert await _code(bus, "test.hop.nap", Nap(seconds=0.01)) == "ok"
        started = time.monotonic()
        assert await _code(bus, "test.hop.quick", Nap(seconds=5)) == "timeout"
        assert time.monotonic() - started < 2
        # the worker's scope was spent by that timeout: the next requests run in a fresh one
        for _ in range(3):
            assert await _code(bus, "test.hop.quick", Nap(seconds=0.01)) == "ok"
        # a timer armed for a short request that ended early does not cut a longer one after it
        assert await _code(bus, "test.hop.nap", Nap(seconds=0.5)) == "ok"
        # and the request's deadline, sooner than the endpoint's timeout, still wins
        with deadline_scope(time.time() + 0.2):
            assert await _code(bus, "test.hop.nap", Nap(seconds=5)) == "deadline_exceeded"
        assert await _code(bus, "test.hop.nap", Nap(seconds=0.01)) == "ok"
        assert not actor._inflight
        tg.cancel_scope.cancel()


async def test_a_shielded_section_finishes_before_the_timeout_lands(bus: Bus) -> None:
    actor = Sleeper(bus)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        assert await _code(bus, "test.hop.quick", Nap(seconds=0.6, shielded=True)) == "timeout"
        assert actor.shield_done == 1
        assert await _code(bus, "test.hop.quick", Nap(seconds=0.01)) == "ok"
        tg.cancel_scope.cancel()


async def test_a_cancelled_worker_serves_the_next_request(bus: Bus) -> None:
    actor = Sleeper(bus)
    actor.concurrency = 2  # the cancel itself needs a worker
    codes: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        async with anyio.create_task_group() as callers:
            async def call(request: Nap) -> None:
                codes.append(await _code(bus, "test.hop.nap", request))

            callers.start_soon(call, Nap(seconds=20))
            with anyio.fail_after(10):
                while not actor._inflight:
                    await anyio.sleep(0.01)
            (cid,) = actor._inflight
            await bus.publish(subjects.CONTROL_CANCEL, CancelWork(correlation_id=cid))
        assert codes == ["cancelled"]
        # a cancel for a correlation id nobody serves any more changes nothing
        await bus.publish(subjects.CONTROL_CANCEL, CancelWork(correlation_id=cid))
        assert [await _code(bus, "test.hop.nap", Nap(seconds=0.01)) for _ in range(3)] == ["ok"] * 3
        assert not actor._inflight
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("n", [40])
async def test_many_short_requests_then_a_timeout_on_every_worker(bus: Bus, n: int) -> None:
    actor = Sleeper(bus)
    actor.concurrency = 4
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        results: list[str] = []

        async def call(seconds: float) -> None:
            results.append(await _code(bus, "test.hop.quick", Nap(seconds=seconds)))

        async with anyio.create_task_group() as callers:
            for i in range(n):
                callers.start_soon(call, 5 if i % 10 == 0 else 0.001)
        assert sorted(results) == sorted(["timeout"] * (n // 10) + ["ok"] * (n - n // 10))
        assert not actor._inflight
        tg.cancel_scope.cancel()
