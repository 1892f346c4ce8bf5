"""A request's wait (issue 14): the bus wakes its pending requests with one timer for all of them,
not a timer per request, and every request still ends at its own timeout, in order, whatever the
requests before and after it; a reply still ends the wait at once."""

from __future__ import annotations

import anyio
import pytest
from tandem.messages import Message
from tandem.services.bus import Bus
from tandem.services.errors import RequestTimeout


class Ask(Message, frozen=True, kw_only=True, tag="hop_wait_ask"):
    n: int = 0


class Told(Message, frozen=True, kw_only=True, tag="hop_wait_told"):
    n: int = 0


async def _ignore(msg: object) -> None:
    """Receive a request and never answer it."""


async def test_each_request_times_out_at_its_own_timeout_in_order(bus: Bus) -> None:
    sub = await bus.nc.subscribe("test.hop.silent", cb=_ignore)
    await bus.flush()
    ended: list[float] = []

    async def ask(timeout: float) -> None:
        began = anyio.current_time()
        with pytest.raises(RequestTimeout):
            await bus.request("test.hop.silent", Ask(), Told, timeout=timeout)
        assert anyio.current_time() - began >= timeout  # never woken for good before its time
        ended.append(timeout)

    async with anyio.create_task_group() as tg:
        for timeout in (1.2, 0.2, 0.7):  # a later request with an earlier timeout moves the one timer sooner
            tg.start_soon(ask, timeout)
            await anyio.sleep(0.01)
    assert ended == [0.2, 0.7, 1.2]
    assert not bus._pending
    await sub.unsubscribe()


async def test_a_reply_ends_the_wait_and_a_late_timer_finds_nothing_to_wake(bus: Bus) -> None:
    async def answer(msg: object) -> None:
        await bus.respond(msg, Told(n=1))  # type: ignore[arg-type]

    sub = await bus.subscribe("test.hop.answer", cb=answer)
    await bus.flush()
    for _ in range(3):
        assert (await bus.request("test.hop.answer", Ask(), Told, timeout=0.4)).n == 1
    assert not bus._pending
    await anyio.sleep(0.5)  # the timer armed for the first request fires with nothing pending: no error
    assert (await bus.request("test.hop.answer", Ask(), Told, timeout=5)).n == 1
    await sub.unsubscribe()


async def test_the_timer_is_cancelled_when_the_bus_closes(nats_url: str) -> None:
    bus = await Bus.connect(nats_url)
    sub = await bus.nc.subscribe("test.hop.silent2", cb=_ignore)
    with pytest.raises(RequestTimeout):
        await bus.request("test.hop.silent2", Ask(), Told, timeout=0.1)
    async with anyio.create_task_group() as tg:
        async def long_wait() -> None:  # cancelled with the task group below
            await bus.request("test.hop.silent2", Ask(), Told, timeout=60)

        tg.start_soon(long_wait)
        await anyio.sleep(0.05)
        assert bus._timer is not None
        tg.cancel_scope.cancel()
    await sub.unsubscribe()
    await bus.close()
    assert bus._timer is None
