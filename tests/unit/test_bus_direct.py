"""Direct dispatch from nats-py's read loop (issue 14): a subscription's messages are offered to a
synchronous function first, and go the ordinary way (queued for the callback) when it declines,
when it fails, or while earlier messages still wait there — so order and backpressure hold."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from tandem.services.bus import _nats
from tandem.services.bus._nats import _DirectQueue, _offer_first


def _msg(n: int) -> Any:
    return SimpleNamespace(subject="s", data=b"x" * n, reply="", headers=None)


def _queue(direct: Any) -> tuple[asyncio.Queue, Any]:
    sub = SimpleNamespace(_pending_queue=asyncio.Queue(), _pending_size=0)
    queue = sub._pending_queue
    queue.__class__ = _DirectQueue
    queue._direct, queue._sub = direct, sub
    return queue, sub


def _put(queue: asyncio.Queue, sub: Any, msg: Any) -> None:
    sub._pending_size += len(msg.data)  # what nats-py's _process_msg does before the put
    queue.put_nowait(msg)


def test_taken_messages_skip_the_queue_and_the_pending_count() -> None:
    taken: list[Any] = []
    queue, sub = _queue(lambda m: taken.append(m) is None)
    for n in (1, 2, 3):
        _put(queue, sub, _msg(n))
    assert [len(m.data) for m in taken] == [1, 2, 3]
    assert queue.qsize() == 0 and sub._pending_size == 0


def test_declined_messages_are_queued_and_later_ones_wait_behind_them() -> None:
    accept = [False]
    offered: list[int] = []

    def direct(m: Any) -> bool:
        offered.append(len(m.data))
        return accept[0]

    queue, sub = _queue(direct)
    _put(queue, sub, _msg(1))  # declined: queued
    accept[0] = True
    _put(queue, sub, _msg(2))  # not offered while the first still waits: order
    assert offered == [1]
    assert [len(queue.get_nowait().data) for _ in range(2)] == [1, 2]
    assert sub._pending_size == 3  # the subscription's task subtracts these as it takes them
    _put(queue, sub, _msg(4))  # the queue is empty again: offered and taken
    assert offered == [1, 4] and queue.qsize() == 0 and sub._pending_size == 3


def test_a_failing_direct_function_leaves_the_message_to_the_callback(caplog: pytest.LogCaptureFixture) -> None:
    def direct(m: Any) -> bool:
        raise RuntimeError("boom")

    queue, sub = _queue(direct)
    with caplog.at_level(logging.ERROR, logger="tandem.bus"):
        _put(queue, sub, _msg(5))
    assert queue.qsize() == 1 and sub._pending_size == 5
    assert "direct dispatch" in caplog.text


def test_only_the_bus_client_with_nats_internals_gets_direct_dispatch() -> None:
    def direct(m: Any) -> bool:
        return True

    plain = SimpleNamespace(_pending_queue=asyncio.Queue(), _pending_size=0)
    _offer_first(object(), plain, direct)  # type: ignore[arg-type]  # not the bus's _Client: left alone
    assert type(plain._pending_queue) is asyncio.Queue
    client = object.__new__(_nats._Client)
    _offer_first(client, plain, direct)  # type: ignore[arg-type]
    assert type(plain._pending_queue) is _DirectQueue
    odd = SimpleNamespace(_pending_queue=asyncio.Queue(), _pending_size=None)  # counters changed shape
    _offer_first(client, odd, direct)  # type: ignore[arg-type]
    assert type(odd._pending_queue) is asyncio.Queue
