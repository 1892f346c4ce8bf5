"""Inbox: the bounded mailbox a subscription fills in nats-py's read loop (TaskClient.run, the task actor)."""

from __future__ import annotations

import anyio
import pytest

from tandem.services.tasks import Inbox


class _Msg:
    def __init__(self, n: int) -> None:
        self.n = n


@pytest.mark.anyio
async def test_messages_come_out_in_order_and_a_full_inbox_refuses_an_offer() -> None:
    inbox = Inbox(2)
    assert inbox.offer(_Msg(1)) and inbox.offer(_Msg(2))  # type: ignore[arg-type]
    assert not inbox.offer(_Msg(3))  # type: ignore[arg-type]
    assert [(await anext(inbox)).n, (await anext(inbox)).n] == [1, 2]


@pytest.mark.anyio
async def test_put_waits_for_room_and_keeps_the_order() -> None:
    inbox = Inbox(1)
    got: list[int] = []
    async with anyio.create_task_group() as tg:
        inbox.offer(_Msg(1))  # type: ignore[arg-type]
        tg.start_soon(inbox.put, _Msg(2))
        await anyio.sleep(0.01)
        assert len(inbox._items) == 1  # the put waits
        got.append((await anext(inbox)).n)
        got.append((await anext(inbox)).n)
    assert got == [1, 2]


@pytest.mark.anyio
async def test_a_reader_waits_for_the_next_message() -> None:
    inbox = Inbox(4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_offer_later, inbox)
        assert (await anext(inbox)).n == 7


async def _offer_later(inbox: Inbox) -> None:
    await anyio.sleep(0.01)
    inbox.offer(_Msg(7))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_next_returns_none_after_the_timeout_and_a_message_that_came() -> None:
    inbox = Inbox(4)
    assert await inbox.next(timeout=0.01) is None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_offer_later, inbox)
        msg = await inbox.next(timeout=10)
    assert msg is not None and msg.n == 7


@pytest.mark.anyio
async def test_a_closed_inbox_gives_what_it_holds_then_ends() -> None:
    inbox = Inbox(4)
    inbox.offer(_Msg(1))  # type: ignore[arg-type]
    inbox.close()
    assert inbox.offer(_Msg(2))  # dropped: taken, never read  # type: ignore[arg-type]
    assert [m.n async for m in inbox] == [1]
    with pytest.raises(StopAsyncIteration):
        await inbox.next(timeout=1)


@pytest.mark.anyio
async def test_closing_wakes_a_waiting_reader_and_a_cancelled_wait_loses_nothing() -> None:
    inbox = Inbox(4)
    with anyio.move_on_after(0.01):
        await anext(inbox)
    inbox.offer(_Msg(3))  # type: ignore[arg-type]
    assert (await anext(inbox)).n == 3
    async with anyio.create_task_group() as tg:
        tg.start_soon(_close_later, inbox)
        assert await anext(inbox, None) is None


async def _close_later(inbox: Inbox) -> None:
    await anyio.sleep(0.01)
    inbox.close()
