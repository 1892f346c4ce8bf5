"""The planner's in-memory recipes over a real nats-server: kept current by the watch, read from the bucket until primed.

"Another process" is a second connection with its own :class:`RecipeStore` — what another
planner replica serving ``tandem plans add`` / ``remove`` does — or a raw write to the bucket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import msgspec
import nats.js.errors
import pytest
from nats.js.kv import KV_DEL, KeyValue
from tandem.actors import RouterActor, _recipes
from tandem.actors._recipes import KEY_PREFIX, RecipeStore
from tandem.actors.planner import PlannerActor
from tandem.messages import PlanReply, PlanRequest, subjects
from tandem.messages.recipes import Recipe
from tandem.services.bus import Bus
from tandem.services.runtime import start_actors

from ..conftest import MockModel, make_config
from .test_planner_recipes import GREP_WORD, MD, SCRATCH_PLAN, answering, schema_name

BUCKET = make_config().plan_cache_bucket
COUNT_WORDS = Recipe(
    name="count-words", description="Count the words of the lines", keywords=["lines"],
    plan={"version": "1.0", "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "${input}"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "wc", "args": ["-w"]}},
        {"step": 3, "action": "write_output"}]},
)
TASK = "Keep the lines about timeouts"


@asynccontextmanager
async def planner(bus: Bus, model: MockModel, recipes: list[Recipe]) -> AsyncIterator[PlannerActor]:
    made: list[PlannerActor] = []

    def make(b: Bus, c: object) -> PlannerActor:
        made.append(PlannerActor(b, c, recipes=recipes))
        return made[-1]

    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport), "planner": make}
    async with start_actors(bus, make_config(), ["planner", "router"], factories=factories):
        assert made[-1].recipes is not None
        with anyio.fail_after(5):
            await made[-1].recipes.wait_primed()
        yield made[-1]


@asynccontextmanager
async def other_replica(nats_url: str) -> AsyncIterator[RecipeStore]:
    """The recipe store of another planner, on its own connection."""
    other = await Bus.connect(nats_url)
    try:
        yield RecipeStore(await other.key_value(BUCKET), shipped=[])
    finally:
        await other.close()


async def plan(bus: Bus) -> PlanReply:
    return await bus.request(subjects.PLANNER_PLAN, PlanRequest(task=TASK, inputs=MD, use_cache=False), PlanReply,
                             timeout=10)


def offered(model: MockModel) -> list[list[str]]:
    """The recipe names of each menu call so far (without "none")."""
    return [body["response_format"]["json_schema"]["schema"]["properties"]["recipe"]["enum"][:-1]
            for body in model.requests if schema_name(body) == "recipe_choice"]


def menu_model() -> MockModel:
    return MockModel(planner=answering(recipe_choice=lambda body: {"recipe": "none"}, execution_plan=SCRATCH_PLAN),
                     writer=lambda b: "x")


async def test_a_recipe_added_and_removed_by_another_replica_is_used_and_dropped_by_the_next_plan(
        bus: Bus, nats_url: str) -> None:
    model = menu_model()
    async with planner(bus, model, [GREP_WORD]) as actor, other_replica(nats_url) as other:
        assert actor.recipes is not None and actor.recipes.primed
        await plan(bus)
        await other.add(COUNT_WORDS)
        await plan(bus)
        await other.remove("grep-word")
        await plan(bus)
        await other.add(GREP_WORD)
        await other.remove("count-words")
        await plan(bus)
        assert actor.recipes.primed  # answered from memory throughout
    assert offered(model) == [["grep-word"], ["count-words", "grep-word"], ["count-words"], ["grep-word"]]


async def test_a_replaced_recipe_and_a_raw_write_are_seen_by_the_next_plan(bus: Bus, nats_url: str) -> None:
    model = menu_model()
    async with planner(bus, model, [GREP_WORD]), other_replica(nats_url) as other:
        await other.add(msgspec.structs.replace(GREP_WORD, description="Only the lines with a word"), replace=True)
        await plan(bus)
        await other.kv.put(KEY_PREFIX + "broken", b'{"name": "broken"}')  # unusable: skipped, not fatal
        await other.kv.put(KEY_PREFIX + COUNT_WORDS.name, msgspec.json.encode(COUNT_WORDS))
        await plan(bus)
        await other.kv.purge(KEY_PREFIX + COUNT_WORDS.name)
        await plan(bus)
    menus = [body["messages"][-1]["content"] for body in model.requests if schema_name(body) == "recipe_choice"]
    assert "grep-word: Only the lines with a word" in menus[0]
    assert offered(model) == [["grep-word"], ["count-words", "grep-word"], ["grep-word"]]


async def test_changes_through_the_planner_itself_are_seen_at_once(bus: Bus) -> None:
    async with planner(bus, menu_model(), [GREP_WORD]) as actor:
        store = actor.recipes
        assert store is not None
        await store.add(COUNT_WORDS)
        assert [r.name for r in await store.current()] == ["count-words", "grep-word"]
        await store.remove("grep-word")
        assert [r.name for r in await store.current()] == ["count-words"]
        await anyio.sleep(0.2)  # the watch delivers the same changes again: they change nothing
        assert [r.name for r in await store.current()] == ["count-words"] == [r.name for r in await store.all()]


async def watching(tg: anyio.abc.TaskGroup, store: RecipeStore) -> None:
    """Run ``store``'s watch in ``tg`` and wait until its view is primed."""
    tg.start_soon(store.watch)
    with anyio.fail_after(5):
        await store.wait_primed()


async def test_until_the_watch_is_primed_planning_reads_the_bucket(bus: Bus, nats_url: str) -> None:
    store = RecipeStore(await bus.key_value(BUCKET), shipped=[GREP_WORD])
    assert not store.primed
    assert [r.name for r in await store.current()] == ["grep-word"]
    async with other_replica(nats_url) as other:
        await other.add(COUNT_WORDS)
        assert [r.name for r in await store.current()] == ["count-words", "grep-word"]  # read, not remembered
        async with anyio.create_task_group() as tg:
            await watching(tg, store)
            assert [r.name for r in await store.current()] == ["count-words", "grep-word"]
            tg.cancel_scope.cancel()
    assert not store.primed


async def test_a_lost_watch_falls_back_to_the_bucket_and_comes_back(bus: Bus, nats_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipes, "WATCH_CHECK_S", 0.1)
    store = RecipeStore(await bus.key_value(BUCKET), shipped=[GREP_WORD])
    async with anyio.create_task_group() as tg, other_replica(nats_url) as other:
        await watching(tg, store)
        for consumer in await bus.jetstream.consumers_info(f"KV_{BUCKET}"):  # the watch's consumer vanishes
            await bus.jetstream.delete_consumer(f"KV_{BUCKET}", consumer.name)
        with anyio.fail_after(5):
            while store.primed:
                await anyio.sleep(0.02)
        await other.add(COUNT_WORDS)  # while the watch is away
        assert [r.name for r in await store.current()] == ["count-words", "grep-word"]
        with anyio.fail_after(10):
            await store.wait_primed()
        assert [r.name for r in await store.current()] == ["count-words", "grep-word"]
        await other.remove("grep-word")
        with anyio.fail_after(5):
            while [r.name for r in await store.current()] != ["count-words"]:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


async def test_a_deleted_bucket_drops_the_view(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipes, "WATCH_CHECK_S", 0.1)
    store = RecipeStore(await bus.key_value(BUCKET), shipped=[GREP_WORD])
    async with anyio.create_task_group() as tg:
        await watching(tg, store)
        await bus.jetstream.delete_key_value(BUCKET)
        with anyio.fail_after(5):
            while store.primed and await store.current():
                await anyio.sleep(0.02)
        assert await store.current() == []  # what the bucket holds now: nothing (shipped ones load once per store)
        tg.cancel_scope.cancel()


class NothingNewer:
    """A bucket whose recipe keys have not changed since the view was built."""

    async def last_revision(self, keys: str) -> int:
        return 0


async def test_the_view_keeps_the_newest_revision() -> None:
    store = RecipeStore(NothingNewer(), shipped=[])
    view: dict = {}
    store._prime(view)

    def entry(name: str, revision: int, recipe: Recipe | None) -> KeyValue.Entry:
        return KeyValue.Entry(bucket=BUCKET, key=KEY_PREFIX + name, value=msgspec.json.encode(recipe) if recipe else b"",
                              revision=revision, delta=0, created=None, operation=None if recipe else KV_DEL)

    store._note("grep-word", 10, GREP_WORD)
    store._apply(view, entry("grep-word", 9, None))  # an older delete delivered late changes nothing
    assert [r.name for r in await store.current()] == ["grep-word"]
    store._apply(view, entry("grep-word", 11, None))
    store._apply(view, entry("count-words", 12, COUNT_WORDS))
    assert [r.name for r in await store.current()] == ["count-words"]


class DroppedWhileAsked:
    """A bucket during whose revision request the watch drops the view (bucket deleted, consumer lost)."""

    def __init__(self) -> None:
        self.store: RecipeStore | None = None

    async def last_revision(self, keys: str) -> int:
        assert self.store is not None
        self.store._view = self.store._building = self.store._listing = None  # what the watch's exit does
        return 0

    async def get(self, key: str) -> None:
        raise nats.js.errors.KeyNotFoundError

    async def put(self, key: str, value: bytes) -> int:
        return 1

    async def keys(self) -> list[str]:
        return []


async def test_a_view_dropped_while_the_revision_is_asked_for_reads_the_bucket() -> None:
    """Before: ``'NoneType' object has no attribute 'items'`` (seen in a clean-clone CI run)."""
    kv = DroppedWhileAsked()
    store = kv.store = RecipeStore(kv, shipped=[])
    store._prime({})
    store._note("grep-word", 10, GREP_WORD)
    assert store.primed
    assert await store.current() == []  # what the (empty) bucket holds, not a crash
    assert not store.primed


async def test_more_recipes_than_the_bound_are_read_from_the_bucket(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipes, "MAX_WATCHED", 2)
    store = RecipeStore(await bus.key_value(BUCKET), shipped=[GREP_WORD, COUNT_WORDS])
    async with anyio.create_task_group() as tg:
        await watching(tg, store)
        await store.add(msgspec.structs.replace(GREP_WORD, name="grep-word-2"))
        with anyio.fail_after(5):
            while store.primed:
                await anyio.sleep(0.02)
        assert [r.name for r in await store.current()] == ["count-words", "grep-word", "grep-word-2"]
        tg.cancel_scope.cancel()


async def test_a_change_the_watch_has_not_delivered_yet_is_waited_for_or_read(
        bus: Bus, nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipes, "CATCH_UP_S", 0.2)
    store = RecipeStore(await bus.key_value(BUCKET), shipped=[GREP_WORD])
    async with anyio.create_task_group() as tg, other_replica(nats_url) as other:
        await watching(tg, store)
        await other.add(COUNT_WORDS)
        assert [r.name for r in await store.current()] == ["count-words", "grep-word"]  # at once, whatever the order
        deliver = store._apply
        monkeypatch.setattr(store, "_apply", lambda view, entry: None)  # the watch stalls: nothing more applied
        await other.remove("grep-word")
        assert [r.name for r in await store.current()] == ["count-words"]  # read from the bucket after CATCH_UP_S
        assert store.primed
        monkeypatch.setattr(store, "_apply", deliver)
        tg.cancel_scope.cancel()
