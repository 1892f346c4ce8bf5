"""One deadline per task: carried in the ``Tandem-Deadline`` header, honoured by every hop."""

from __future__ import annotations

import time

import anyio
import pytest

from tandem.actors import Actor, Endpoint
from tandem.messages import ErrorReply, Message, decoder, encode
from tandem.services.bus import DEADLINE_HEADER, Bus, current_deadline, deadline_from_headers, deadline_scope, remaining
from tandem.services.errors import DeadlineExceeded, RemoteError


class Work(Message, frozen=True, kw_only=True, tag="work"):
    sleep: float = 0.0
    forward: bool = False


class Done(Message, frozen=True, kw_only=True, tag="done"):
    deadline: float | None = None


class Front(Actor):
    """Forwards to ``Back`` with a generous per-hop timeout: only the deadline can stop it."""

    name = "front"

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.front", Work, self.front, timeout=60)]

    async def front(self, request: Work) -> Done:
        return await self.bus.request("test.back", Work(sleep=request.sleep), Done, timeout=60)


class Back(Actor):
    name = "back"

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.back", Work, self.back, timeout=60)]

    async def back(self, request: Work) -> Done:
        await anyio.sleep(request.sleep)
        return Done(deadline=current_deadline())


def test_scope_nests_to_the_earlier_deadline_and_parses_headers() -> None:
    assert current_deadline() is None and remaining(5.0) == 5.0
    with deadline_scope(2_000_000_000.0):
        with deadline_scope(3_000_000_000.0) as inner:
            assert inner == 2_000_000_000.0
        with deadline_scope(time.time() + 1) as inner:
            assert inner < 2_000_000_000.0 and 0 < remaining(10.0) <= 1
    assert current_deadline() is None
    assert deadline_from_headers({DEADLINE_HEADER: "1764500000.250"}) == 1764500000.25
    for bad in ({}, None, {DEADLINE_HEADER: "soon"}, {DEADLINE_HEADER: "nan"}, {DEADLINE_HEADER: "inf"}):
        assert deadline_from_headers(bad) is None


async def test_deadline_travels_through_every_hop(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(Front(bus).run)
        await tg.start(Back(bus).run)
        deadline = round(time.time() + 30, 3)
        with deadline_scope(deadline):
            reply = await bus.request("test.front", Work(), Done, timeout=300)
        assert reply.deadline == pytest.approx(deadline, abs=0.001)
        tg.cancel_scope.cancel()


async def test_two_hops_stop_at_the_deadline_not_after_a_fresh_timeout(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(Front(bus).run)
        await tg.start(Back(bus).run)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded), deadline_scope(time.time() + 0.5):
            await bus.request("test.front", Work(sleep=30), Done, timeout=300)
        assert time.monotonic() - started < 5  # not the 60 s per-hop timeouts

        # a raw client (no scope, only the header) gets the typed error from the actor itself
        raw = await bus.nc.request("test.front", encode(Work(sleep=30)), timeout=10,
                                   headers={DEADLINE_HEADER: f"{time.time() + 0.3:.3f}"})
        reply = decoder(Done | ErrorReply).decode(raw.data)
        assert isinstance(reply, ErrorReply) and reply.code == "deadline_exceeded"
        tg.cancel_scope.cancel()


async def test_a_passed_deadline_fails_before_sending(bus: Bus) -> None:
    with pytest.raises(DeadlineExceeded) as info, deadline_scope(time.time() - 1):
        await bus.request("test.nobody", Work(), Done, timeout=5)
    assert info.value.code == "deadline_exceeded" and info.value.step == "test.nobody"
    assert not isinstance(info.value, RemoteError)
