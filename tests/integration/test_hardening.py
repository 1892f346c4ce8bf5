"""Issue 10 over a real nats-server: no crash path from one message, names and payloads bounded,
state that heals, a connection closed for good is reopened, credentials never printed.

The counterpart with real processes (``tandem serve``-like, and SIGKILL of a replica) is in
``test_hardening_process.py`` and ``test_hardening_replicas.py``.
"""

from __future__ import annotations

import logging

import anyio
import nats.js.errors
import pytest

from tandem.actors import Actor, Endpoint, supervise
from tandem.actors._base import MAX_ERROR_CHARS, DeadLetter
from tandem.messages import ErrorReply, Message, decoder, encode
from tandem.services.bus import (
    PAYLOAD_HEADER,
    Bus,
    EmbeddedNats,
    free_port,
    validate_kv_key,
    validate_subject,
)
from tandem.services.errors import BusConnectError, InvalidName, PayloadTooLarge, RemoteError


class Text(Message, frozen=True, kw_only=True, tag="text"):
    text: str = ""
    size: int = 0
    fail: str = ""


class Sized(Message, frozen=True, kw_only=True, tag="sized"):
    text: str
    received: int


class Worker(Actor):
    name = "worker"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, concurrency=4)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("test.work", Text, self.work, timeout=10)]

    async def work(self, request: Text) -> Sized:
        if request.fail:
            raise RuntimeError(request.fail)
        return Sized(text="y" * request.size, received=len(request.text), correlation_id=request.correlation_id)


async def _supervised(bus: Bus, tg: anyio.abc.TaskGroup, made: list[Worker]) -> None:
    def factory() -> Worker:
        made.append(Worker(bus))
        return made[-1]

    await tg.start(lambda task_status: supervise(factory, max_restarts=5, within=60, task_status=task_status))


def _nested(depth: int) -> bytes:
    return b'{"type":"text","extra":' + b"[" * depth + b"]" * depth + b"}"


async def test_deep_nesting_and_one_way_failures_never_crash_the_actor(bus: Bus) -> None:
    """Before: RecursionError escaped the actor; six one-way failures ended the process."""
    made: list[Worker] = []
    async with anyio.create_task_group() as tg:
        await _supervised(bus, tg, made)
        for depth in (1_000, 5_000, 100_000):
            msg = await bus.nc.request("test.work", _nested(depth), timeout=5)
            err = decoder(ErrorReply).decode(msg.data)
            assert err.code == "bad_request" and "nested too deeply" in err.message
        letters = await bus.subscribe("tandem.events.dead_letter.worker")
        await bus.flush()
        for _ in range(6):  # one-way: nobody waits for the answer
            await bus.nc.publish("test.work", _nested(5_000))
            await bus.publish("test.work", Text(fail="handler failed"))
        codes = [decoder(DeadLetter).decode((await letters.next_msg(timeout=5)).data).code for _ in range(12)]
        assert sorted(codes) == ["bad_request"] * 6 + ["internal"] * 6
        reply = await bus.request("test.work", Text(text="still here"), Sized, timeout=5)
        assert reply.received == len("still here") and len(made) == 1  # never restarted
        tg.cancel_scope.cancel()


def test_names_are_validated_with_a_typed_bad_request() -> None:
    assert validate_kv_key("3f2a-9c_=/x.y") == "3f2a-9c_=/x.y"
    assert validate_subject("tandem.planner.plan") == "tandem.planner.plan"
    for bad in ("a" * 5_000, "", "a b", "a..b", ".a", "a.", "ключ", "a*"):
        with pytest.raises(InvalidName) as info:
            validate_kv_key(bad)
        assert info.value.code == "bad_request"
    for bad in ("x" * 5_000, "", "a b", "a\r\nPUB x 1", "a..b", "a.>"):
        with pytest.raises(InvalidName):
            validate_subject(bad)


async def test_long_kv_key_is_refused_before_it_can_close_the_connection(bus: Bus) -> None:
    """Before: a 5,000-character key made nats-server close the connection for good."""
    kv = await bus.key_value("test_keys")
    with pytest.raises(InvalidName):
        await kv.put("f" * 5_000, b"plan")
    with pytest.raises(InvalidName):
        await kv.get("f" * 5_000)
    with pytest.raises(InvalidName):
        await bus.publish("x" * 5_000, Text())
    await kv.put("f" * 64, b"plan")
    assert (await kv.get("f" * 64)).value == b"plan" and not bus.nc.is_closed


async def test_connection_closed_for_good_is_reopened_and_actors_restart(nats_url: str, caplog) -> None:
    """A server -ERR closes a nats-py connection for good; the bus reopens it, supervisors restart actors."""
    caplog.set_level(logging.WARNING)
    server_side, client = await Bus.connect(nats_url), await Bus.connect(nats_url)
    made: list[Worker] = []
    try:
        async with anyio.create_task_group() as tg:
            await _supervised(server_side, tg, made)
            # bypass the bus's checks: this is what an unvalidated KV key used to do
            await server_side.nc.publish("$KV.x." + "k" * 5_000, b"v")
            with anyio.fail_after(10):
                while len(made) < 2:
                    await anyio.sleep(0.05)
            assert server_side.generation == 1 and not server_side.nc.is_closed
            answers = [await client.request("test.work", Text(text=str(i)), Sized, timeout=5) for i in range(20)]
            assert len(answers) == 20
            assert "closed for good" in caplog.text and "reopened" in caplog.text
            tg.cancel_scope.cancel()
    finally:
        await server_side.close()
        await client.close()


async def test_large_requests_and_replies_go_through_the_object_store(bus: Bus) -> None:
    """Before: a reply over max_payload crashed the actor and the caller waited 300 s."""
    limit = bus.nc.max_payload
    async with anyio.create_task_group() as tg:
        await tg.start(Worker(bus).run)
        big_in = "x" * (2 * limit)
        reply = await bus.request("test.work", Text(text=big_in, size=5 * 1024 * 1024), Sized, timeout=30)
        assert reply.received == len(big_in) and len(reply.text) == 5 * 1024 * 1024
        # the raw reply carries only a reference
        msg = await bus.nc.request("test.work", encode(Text(size=2 * limit)), timeout=30)
        assert msg.data == b"" and msg.headers[PAYLOAD_HEADER].startswith("tandem_payloads/")
        assert len(await bus.payload_of(msg)) > 2 * limit
        # an error that repeats a huge input is cut, with a note
        with pytest.raises(RemoteError) as info:
            await bus.request("test.work", Text(fail="z" * (limit // 2) * 2), Sized, timeout=30)
        assert info.value.code == "internal" and len(info.value.message) <= MAX_ERROR_CHARS
        assert "truncated" in info.value.message
        # a forged reference is a typed bad_request
        msg = await bus.nc.request("test.work", b"", headers={PAYLOAD_HEADER: "other_bucket/../../x"}, timeout=5)
        assert decoder(ErrorReply).decode(msg.data).code == "bad_request"
        tg.cancel_scope.cancel()


async def test_too_large_for_the_object_store_too_is_a_typed_too_large(nats_url: str) -> None:
    small = await Bus.connect(nats_url, max_object_bytes=3 * 1024 * 1024)
    # the product's nats.responders_wait_s: twice in clean-clone CI the first request here met a
    # transient no-responders from the server (cause not found; it passes in loops), and this
    # test is about too_large, not about that
    client = await Bus.connect(nats_url, max_object_bytes=3 * 1024 * 1024, responders_wait=5.0)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(Worker(small).run)
            with pytest.raises(RemoteError) as info:
                await client.request("test.work", Text(size=4 * 1024 * 1024), Sized, timeout=30)
            assert info.value.code == "too_large"
            with pytest.raises(PayloadTooLarge):
                await client.request("test.work", Text(text="x" * 4 * 1024 * 1024), Sized, timeout=30)
            assert (await client.request("test.work", Text(text="ok"), Sized, timeout=5)).received == 2
            tg.cancel_scope.cancel()
    finally:
        await small.close()
        await client.close()


async def test_kv_bucket_is_recreated_when_deleted(bus: Bus) -> None:
    """Before: every write after the bucket was lost failed (NoStreamResponseError → internal)."""
    kv = await bus.key_value("test_heal")
    await kv.put("k", b"1")
    await bus.jetstream.delete_key_value("test_heal")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("k")  # lost data reads as a miss
    await kv.put("k", b"2")  # recreated on demand
    assert (await kv.get("k")).value == b"2"
    assert (await bus.jetstream.key_value("test_heal")) is not None


async def test_kv_bucket_is_recreated_after_the_server_restarts_with_an_empty_store(tmp_path) -> None:
    port = free_port()
    async with EmbeddedNats(port=port, store_dir=tmp_path / "a") as server:
        bus = await Bus.connect(server.url)
        kv = await bus.key_value("test_heal")
        await kv.put("k", b"1")
    try:
        async with EmbeddedNats(port=port, store_dir=tmp_path / "b"):
            with anyio.fail_after(10):
                while not bus.nc.is_connected:
                    await anyio.sleep(0.05)
            await kv.put("k", b"2")
            assert (await kv.get("k")).value == b"2"
            big = await bus.put_payload(b"p" * 10)  # the object store heals the same way
            assert (await bus.get_payload(big)) == b"p" * 10
    finally:
        await bus.close()


async def test_credentials_in_the_url_are_not_printed(caplog) -> None:
    url = f"nats://tandem:s3cret-pass@127.0.0.1:{free_port()}"
    with pytest.raises(BusConnectError) as info:
        await Bus.connect(url, connect_timeout=0.3)
    assert "s3cret" not in str(info.value) and "tandem:***@127.0.0.1" in str(info.value)
    assert "s3cret" not in caplog.text


async def test_a_plain_subscription_answering_late_is_waited_for(nats_url: str) -> None:
    """Only actors ack and heartbeat; a responder that never acks is not presumed dead."""
    client = await Bus.connect(nats_url, liveness=0.5)
    try:
        sub = await client.subscribe("test.plain")

        async def answer_late() -> None:
            msg = await sub.next_msg(timeout=5)
            await anyio.sleep(1.5)  # three liveness windows
            await client.respond(msg, Sized(text="late", received=0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_late)
            reply = await client.request("test.plain", Text(), Sized, timeout=5)
        assert reply.text == "late"
    finally:
        await client.close()
