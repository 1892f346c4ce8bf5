"""The base actor over a real nats-server: replies, typed errors, queue groups, supervision."""

from __future__ import annotations

import os

import anyio
import pytest

from tandem.actors import Actor, ActorCrashed, Endpoint, supervise
from tandem.actors._base import DeadLetter
from tandem.messages import ErrorReply, Message, Ping, Pong, decoder, encode, subjects
from tandem.services.bus import Bus
from tandem.services.errors import NoResponders, RemoteError, StepFailed


class Echo(Message, frozen=True, kw_only=True, tag="echo"):
    text: str
    sleep: float = 0.0


class Echoed(Message, frozen=True, kw_only=True, tag="echoed"):
    text: str
    instance: str


class Boom(Message, frozen=True, kw_only=True, tag="boom"):
    kind: str


class EchoActor(Actor):
    name = "echo"

    def __init__(self, bus: Bus, *, events: list[str] | None = None) -> None:
        super().__init__(bus, concurrency=8)
        self.events = events if events is not None else []

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("test.echo", Echo, self.echo, timeout=0.5),
            Endpoint("test.boom", Boom, self.boom, timeout=1),
            Endpoint("test.event", Boom, self.event, timeout=1),
            Endpoint("test.later", Boom, self.later, timeout=1),
        ]

    async def echo(self, request: Echo) -> Echoed:
        await anyio.sleep(request.sleep)
        return Echoed(text=request.text, instance=self.instance_id, correlation_id=request.correlation_id)

    async def boom(self, request: Boom) -> Echoed:
        if request.kind == "tandem":
            raise StepFailed(2, "spawn_command", "sed: bad")
        raise ZeroDivisionError("division by zero")

    async def event(self, request: Boom) -> None:
        self.events.append(request.kind)
        if request.kind == "crash":
            raise RuntimeError("event handler failed")

    async def later(self, request: Boom) -> None:
        async def fail() -> None:
            raise RuntimeError("background task failed")

        self.start_soon(fail)


async def test_request_reply_and_correlation(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        actor = EchoActor(bus)
        await tg.start(actor.run)
        req = Echo(text="hi")
        reply = await bus.request("test.echo", req, Echoed, timeout=2)
        assert reply.text == "hi"
        assert reply.correlation_id == req.correlation_id
        pong = await bus.request(subjects.ping("echo"), Ping(), Pong, timeout=2)
        assert pong.pid == os.getpid() and pong.instance_id == actor.instance_id
        tg.cancel_scope.cancel()


async def test_malformed_payload_gets_error_reply_naming_field_and_actor_keeps_serving(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(EchoActor(bus).run)
        msg = await bus.nc.request("test.echo", b'{"type":"echo","text":5,"correlation_id":"c1"}', timeout=2)
        err = decoder(ErrorReply).decode(msg.data)
        assert (err.code, err.path, err.correlation_id) == ("bad_request", "$.text", "c1")
        msg = await bus.nc.request("test.echo", b"not json", timeout=2)
        assert decoder(ErrorReply).decode(msg.data).code == "bad_request"
        msg = await bus.nc.request("test.echo", encode(Boom(kind="x")), timeout=2)  # wrong tag
        assert decoder(ErrorReply).decode(msg.data).path == "$.type"
        assert (await bus.request("test.echo", Echo(text="still here"), Echoed, timeout=2)).text == "still here"
        tg.cancel_scope.cancel()


async def test_handler_errors_become_typed_replies(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(EchoActor(bus).run)
        with pytest.raises(RemoteError) as info:
            await bus.request("test.boom", Boom(kind="tandem"), Echoed, timeout=2)
        assert info.value.code == "step_failed" and "sed: bad" in info.value.message
        with pytest.raises(RemoteError) as info:
            await bus.request("test.boom", Boom(kind="other"), Echoed, timeout=2)
        assert info.value.code == "internal" and "ZeroDivisionError" in info.value.message
        with pytest.raises(RemoteError) as info:
            await bus.request("test.echo", Echo(text="slow", sleep=5), Echoed, timeout=3)
        assert info.value.code == "timeout"
        tg.cancel_scope.cancel()


async def test_no_responders_is_typed(bus: Bus) -> None:
    with pytest.raises(NoResponders):
        await bus.request("test.nobody", Echo(text="x"), Echoed, timeout=1)


async def test_a_request_waits_for_an_actor_that_comes_back_within_responders_wait(bus: Bus) -> None:
    """An actor restarting (or reconnecting after a server restart) is waited for, not reported missing."""
    async with anyio.create_task_group() as tg:
        async def come_back_later() -> None:
            await anyio.sleep(0.4)
            await tg.start(EchoActor(bus).run)

        tg.start_soon(come_back_later)
        reply = await bus.request("test.echo", Echo(text="back"), Echoed, timeout=5, responders_wait=3)
        assert reply.text == "back"
        with pytest.raises(NoResponders):  # 0: at once, as for a liveness probe
            await bus.request("test.nobody", Echo(text="x"), Echoed, timeout=5, responders_wait=0)
        with pytest.raises(NoResponders):  # still nobody after the wait: the typed error, not RequestTimeout
            await bus.request("test.nobody", Echo(text="x"), Echoed, timeout=5, responders_wait=0.3)
        tg.cancel_scope.cancel()


async def test_replicas_share_work_through_the_queue_group(nats_url: str) -> None:
    buses = [await Bus.connect(nats_url) for _ in range(3)]
    try:
        async with anyio.create_task_group() as tg:
            a, b = EchoActor(buses[0]), EchoActor(buses[1])
            await tg.start(a.run)
            await tg.start(b.run)
            seen: list[str] = []

            async def call(i: int) -> None:
                seen.append((await buses[2].request("test.echo", Echo(text=str(i)), Echoed, timeout=5)).instance)

            async with anyio.create_task_group() as calls:
                for i in range(60):
                    calls.start_soon(call, i)
            assert len(seen) == 60
            assert set(seen) == {a.instance_id, b.instance_id}  # each replica took some of the work
            tg.cancel_scope.cancel()
    finally:
        for b in buses:
            await b.close()


async def test_failed_event_goes_to_dead_letter_without_crashing_the_actor(bus: Bus) -> None:
    events: list[str] = []
    made: list[EchoActor] = []

    def factory() -> EchoActor:
        made.append(EchoActor(bus, events=events))
        return made[-1]

    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: supervise(factory, max_restarts=1, within=60, task_status=task_status))
        sub = await bus.subscribe("tandem.events.dead_letter.echo")
        await bus.flush()
        for _ in range(6):  # more than the budget: handler failures are not crashes
            await bus.publish("test.event", Boom(kind="crash"))
        letters = [decoder(DeadLetter).decode((await sub.next_msg(timeout=3)).data) for _ in range(6)]
        assert {(d.code, d.subject) for d in letters} == {("internal", "test.event")}
        assert "event handler failed" in letters[0].error and '"kind":"crash"' in letters[0].payload
        assert (await bus.request("test.echo", Echo(text="same"), Echoed, timeout=2)).instance == made[0].instance_id
        assert events == ["crash"] * 6 and len(made) == 1
        tg.cancel_scope.cancel()


async def test_crashed_background_task_restarts_the_actor(bus: Bus, caplog) -> None:
    made: list[EchoActor] = []

    def factory() -> EchoActor:
        made.append(EchoActor(bus))
        return made[-1]

    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: supervise(factory, max_restarts=5, within=60, task_status=task_status))
        await bus.publish("test.later", Boom(kind="x"))
        with anyio.fail_after(5):
            while len(made) < 2:
                await anyio.sleep(0.01)
            while True:  # the restarted instance serves again
                try:
                    reply = await bus.request("test.echo", Echo(text="back"), Echoed, timeout=1)
                    break
                except NoResponders:
                    await anyio.sleep(0.02)
        assert reply.instance == made[1].instance_id
        assert "crashed" in caplog.text and "background task failed" in caplog.text
        tg.cancel_scope.cancel()


async def test_supervisor_gives_up_after_its_budget(bus: Bus) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: supervise(lambda: EchoActor(bus), max_restarts=1, within=60,
                                                         task_status=task_status))
            for _ in range(3):
                await bus.publish("test.later", Boom(kind="crash"))
                await anyio.sleep(0.3)
            await anyio.sleep(5)
    assert info.group_contains(ActorCrashed)


async def test_malformed_event_goes_to_dead_letter(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(EchoActor(bus).run)
        sub = await bus.subscribe("tandem.events.dead_letter.echo")
        await bus.flush()
        await bus.nc.publish("test.event", b'{"type":"boom"}')
        with anyio.fail_after(3):
            msg = await sub.next_msg(timeout=3)
        assert b"kind" in msg.data and b'"subject":"test.event"' in msg.data
        tg.cancel_scope.cancel()
