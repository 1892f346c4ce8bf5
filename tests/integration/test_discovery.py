"""Discovery over a real nats-server: every actor answers the NATS micro protocol (ADR-32)."""

from __future__ import annotations

import json
import logging
import os

import anyio
import httpx
import pytest

from tandem.actors import Actor, Endpoint, RouterActor
from tandem.messages import Ping, Pong, subjects
from tandem.services.bus import Bus
from tandem.services.runtime import start_actors
from tandem.services.schema import check_schemas, schema_hash

from ..conftest import chat_response, make_config

NAMES = ("planner", "router", "executor", "choice", "task", "context", "chat")


async def gather(bus: Bus, subject: str, wait: float = 0.5) -> list[dict]:
    """Publish an empty request on ``subject`` and collect every reply for ``wait`` seconds."""
    nc = bus.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[dict] = []
    try:
        await nc.publish(subject, b"", reply=inbox)
        with anyio.move_on_after(wait):
            async for msg in sub.messages:
                replies.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return replies


@pytest.fixture
async def system(bus: Bus):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=chat_response("ok")))
    factories = {"router": lambda b, c: RouterActor(b, c, transport=transport)}
    async with start_actors(bus, make_config(), NAMES, factories=factories) as started:
        yield started


async def test_srv_ping_lists_every_actor_started(bus: Bus, system: list[str]) -> None:
    pings = await gather(bus, "$SRV.PING")
    print("$SRV.PING ->", json.dumps(pings[0]), f"(+{len(pings) - 1} more)")
    assert sorted(p["name"] for p in pings) == sorted(system)
    for p in pings:
        assert p["type"] == "io.nats.micro.v1.ping_response"
        assert p["version"] == "0.1.0" and p["id"] and p["metadata"]["pid"] == str(os.getpid())
    one = next(p for p in pings if p["name"] == "router")
    assert [p["id"] for p in await gather(bus, "$SRV.PING.router")] == [one["id"]]
    assert [p["name"] for p in await gather(bus, f"$SRV.PING.router.{one['id']}")] == ["router"]


async def test_srv_info_lists_endpoints_with_subjects_and_schema_hashes(bus: Bus, system: list[str]) -> None:
    infos = {i["name"]: i for i in await gather(bus, "$SRV.INFO")}
    assert set(infos) == set(system)
    planner = infos["planner"]
    assert planner["type"] == "io.nats.micro.v1.info_response"
    endpoints = {e["subject"]: e for e in planner["endpoints"]}
    assert {subjects.PLANNER_PLAN, subjects.PLANNER_REMEMBER, subjects.ping("planner"),
            subjects.CONTROL_CANCEL} <= set(endpoints)
    plan = endpoints[subjects.PLANNER_PLAN]
    assert plan["name"] == "plan" and plan["queue_group"] == "tandem.planner"
    from tandem.messages import PlanRequest
    assert plan["metadata"]["schema"] == schema_hash(PlanRequest)
    assert plan["metadata"]["request_type"] == "PlanRequest"
    assert endpoints[subjects.CONTROL_CANCEL]["queue_group"] == ""  # every replica sees it
    for info in infos.values():
        names = [e["name"] for e in info["endpoints"]]
        assert len(names) == len(set(names)), info["name"]


async def test_srv_stats_counts_requests_and_errors(bus: Bus, system: list[str]) -> None:
    for _ in range(3):
        await bus.request(subjects.ping("router"), Ping(), Pong, timeout=2)
    bad = await bus.nc.request(subjects.ping("router"), b"{not json", timeout=2)  # -> ErrorReply bad_request
    assert b"bad_request" in bad.data
    [stats] = await gather(bus, "$SRV.STATS.router")
    assert stats["type"] == "io.nats.micro.v1.stats_response" and stats["started"].endswith("Z")
    ping = next(e for e in stats["endpoints"] if e["subject"] == subjects.ping("router"))
    assert (ping["num_requests"], ping["num_errors"]) == (4, 1)
    assert ping["last_error"].startswith("DecodeError") or "bad" in ping["last_error"].lower()
    assert ping["processing_time"] > 0 and ping["average_processing_time"] == ping["processing_time"] // 4
    complete = next(e for e in stats["endpoints"] if e["subject"] == subjects.ROUTER_COMPLETE)
    assert (complete["num_requests"], complete["num_errors"]) == (0, 0)


class OldPlanner(Actor):
    """A replica from another release: tandem.planner.remember takes another message."""

    name = "planner"

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(subjects.PLANNER_REMEMBER, Ping, self.remember)]

    async def remember(self, request: Ping) -> Pong:
        return Pong(actor=self.name, instance_id=self.instance_id, pid=os.getpid())


async def test_client_warns_when_an_actor_has_another_schema(bus: Bus, system: list[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    assert await check_schemas(bus) == []  # the actors as shipped agree with the catalogue
    async with anyio.create_task_group() as tg:
        old = OldPlanner(bus)
        await tg.start(old.run)
        with caplog.at_level(logging.WARNING, "tandem.schema"):
            [mismatch] = await check_schemas(bus)
        assert (mismatch.actor, mismatch.instance_id, mismatch.subject) == ("planner", old.instance_id,
                                                                            subjects.PLANNER_REMEMBER)
        assert "another schema on tandem.planner.remember" in caplog.text
        tg.cancel_scope.cancel()
