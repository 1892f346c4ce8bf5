"""The actor's mailbox wakes one worker per burst (issue 14): a burst of messages that arrives in one
read is served by one worker when its handlers do not suspend (raw nats-py serves a burst in one
task too); a handler that suspends leaves the messages queued behind it to other idle workers;
the concurrency bound, the backlog bound and the backpressure into the subscription are as before.

The actor runs on a fake bus that keeps the synchronous hand-over ``Bus.subscribe(direct=)`` gives
nats-py's read loop, so a test delivers a burst exactly as the read loop does: one ``direct(msg)``
call per message, with no await in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg
from opentelemetry.trace import NoOpTracerProvider
from tandem.actors import Actor, Endpoint
from tandem.messages import Message


class Job(Message, frozen=True, kw_only=True, tag="hop_mailbox_job"):
    n: int = 0
    wait: bool = False  # the handler suspends until the test opens the gate


class Done(Message, frozen=True, kw_only=True, tag="hop_mailbox_done"):
    n: int = 0


class _FakeBus:
    """What ``Actor.run`` and a reply need from a bus; keeps each endpoint's ``direct`` and ``cb``."""

    tracer_provider = NoOpTracerProvider()

    def __init__(self) -> None:
        self.direct: dict[str, Callable[[Msg], bool]] = {}
        self.cb: dict[str, Callable[[Msg], Awaitable[None]]] = {}
        self.replies: list[tuple[str, Message]] = []

    async def subscribe(self, subject: str, *, queue: str = "", cb: Any = None, direct: Any = None) -> Any:
        if direct is not None:
            self.direct[subject] = direct
        self.cb[subject] = cb

        async def unsubscribe() -> None:
            pass

        return SimpleNamespace(subject=subject, unsubscribe=unsubscribe)

    async def flush(self) -> None:
        pass

    async def wait_lost(self) -> None:
        await anyio.sleep_forever()

    async def respond(self, msg: Msg, reply: Message, headers: Any = None, *, span: Any = None) -> None:
        self.replies.append((msg.reply, reply))


class Worker(Actor):
    """``test.mailbox``: records which task ran each job, and how many ran at once."""

    name = "hop_mailbox"

    def __init__(self, bus: Any, *, concurrency: int, backlog: int | None = None) -> None:
        super().__init__(bus, concurrency=concurrency, backlog=backlog)
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.gate = anyio.Event()
        self.running = 0
        self.most = 0
        self.started: list[int] = []

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.mailbox", Job, self.job, timeout=30)]

    async def job(self, request: Job) -> Done:
        self.tasks.append(asyncio.current_task())
        self.started.append(request.n)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if request.wait:
                await self.gate.wait()
        finally:
            self.running -= 1
        return Done(correlation_id=request.correlation_id, n=request.n)


def _msg(n: int, *, wait: bool = False) -> Msg:
    from tandem.messages import encode

    return Msg(_client=None, subject="test.mailbox", reply=f"_INBOX.test.{n}",  # type: ignore[arg-type]
               data=encode(Job(n=n, wait=wait)))


async def _until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not check():
            await anyio.sleep(0.001)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_burst_is_served_by_one_worker_when_handlers_do_not_suspend() -> None:
    bus = _FakeBus()
    actor = Worker(bus, concurrency=8)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        direct = bus.direct["test.mailbox"]
        assert all(direct(_msg(n)) for n in range(20))  # one read: no await in between
        await _until(lambda: len(bus.replies) == 20)
        assert len(set(map(id, actor.tasks))) == 1  # one worker woken, no wake-up per message
        assert [reply.n for _, reply in bus.replies] == list(range(20))  # in arrival order
        assert [inbox for inbox, _ in bus.replies] == [f"_INBOX.test.{n}" for n in range(20)]
        # the next burst wakes a worker again
        assert all(direct(_msg(n)) for n in range(20, 25))
        await _until(lambda: len(bus.replies) == 25)
        assert len(set(map(id, actor.tasks[20:]))) == 1
        tg.cancel_scope.cancel()


async def test_a_handler_that_suspends_leaves_the_queued_messages_to_other_workers() -> None:
    bus = _FakeBus()
    actor = Worker(bus, concurrency=8)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        direct = bus.direct["test.mailbox"]
        # the first job waits; the ones queued behind it are not held up by it
        assert all(direct(_msg(n, wait=n == 0)) for n in range(10))
        await _until(lambda: len(bus.replies) == 9)
        assert actor.running == 1 and sorted(reply.n for _, reply in bus.replies) == list(range(1, 10))
        actor.gate.set()
        await _until(lambda: len(bus.replies) == 10)
        tg.cancel_scope.cancel()


async def test_handlers_that_suspend_each_get_a_worker_up_to_the_concurrency() -> None:
    bus = _FakeBus()
    actor = Worker(bus, concurrency=4)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        direct = bus.direct["test.mailbox"]
        assert all(direct(_msg(n, wait=True)) for n in range(6))
        await _until(lambda: actor.running == 4)
        await anyio.sleep(0.05)
        assert actor.running == 4 and actor.most == 4  # never more than `concurrency` at once
        assert len(set(map(id, actor.tasks))) == 4 and sorted(actor.started) == [0, 1, 2, 3]
        actor.gate.set()
        await _until(lambda: len(bus.replies) == 6)
        assert actor.most == 4
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("burst", [True, False], ids=["one-read", "read-by-read"])
async def test_backlog_and_backpressure_stay_bounded(burst: bool) -> None:
    bus = _FakeBus()
    actor = Worker(bus, concurrency=3, backlog=2)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        direct = bus.direct["test.mailbox"]
        taken = []
        for n in range(8):
            taken.append(direct(_msg(n, wait=True)))
            if not burst:
                await anyio.sleep(0.01)  # the woken workers run between reads
        # concurrency + backlog messages accepted, running or queued; the rest left to the callback
        assert taken == [True] * 5 + [False] * 3
        await _until(lambda: actor.running == 3)
        assert sorted(actor.started) == [0, 1, 2]
        # the callback (the subscription's task) waits for room: backpressure
        cb = bus.cb["test.mailbox"]
        accepted = []

        async def deliver(n: int) -> None:
            await cb(_msg(n))
            accepted.append(n)

        tg.start_soon(deliver, 5)
        await anyio.sleep(0.05)
        assert accepted == []
        actor.gate.set()
        await _until(lambda: accepted == [5] and len(bus.replies) == 6)
        assert actor.most == 3
        tg.cancel_scope.cancel()


async def test_backlog_zero_still_hands_a_burst_to_idle_workers() -> None:
    bus = _FakeBus()
    actor = Worker(bus, concurrency=3, backlog=0)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        direct = bus.direct["test.mailbox"]
        assert [direct(_msg(n, wait=True)) for n in range(4)] == [True, True, True, False]
        await _until(lambda: actor.running == 3)
        actor.gate.set()
        await _until(lambda: len(bus.replies) == 3)
        tg.cancel_scope.cancel()
