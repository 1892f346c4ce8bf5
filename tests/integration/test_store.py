"""Issue 16.9: the embedded server's persistent store (plan cache across runs), its lock, ``tandem cache``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from tandem.actors import PlannerActor, RouterActor
from tandem.messages import TaskSubmit
from tandem.services.bus import Bus
from tandem.services.bus._embedded import (
    EmbeddedNats,
    default_store_dir,
    running_server,
)
from tandem.services.cache_cli import cache_app
from tandem.services.errors import StoreBusy
from tandem.services.runtime import ephemeral_requested, open_bus, start_actors
from typer.testing import CliRunner

from ..conftest import MockModel, make_config, run_task

PLAN = {
    "version": "1.0",
    "metadata": {"task_type": "text_conversion", "complexity": "medium", "estimated_steps": 3},
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3", "type": "markdown"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["s/^# /h1. /"]}},
        {"step": 3, "action": "write_output", "params": {"destination": "fd:1", "format": "textile"}},
    ],
}


def test_default_store_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TANDEM_STORE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_store_dir() == tmp_path / "state" / "tandem" / "nats"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_store_dir() == Path.home() / ".local" / "state" / "tandem" / "nats"
    monkeypatch.setenv("TANDEM_STORE_DIR", str(tmp_path / "x"))
    assert default_store_dir() == tmp_path / "x"


def test_ephemeral_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_EPHEMERAL", raising=False)
    assert not ephemeral_requested() and ephemeral_requested("ephemeral")
    monkeypatch.setenv("TANDEM_EPHEMERAL", "1")
    assert ephemeral_requested("persistent")


async def test_embedded_server_defaults_to_a_temporary_store() -> None:
    async with EmbeddedNats() as server:
        assert server.store is None and server.busy == ""


async def test_two_identical_runs_plan_once_with_the_persistent_store(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_EPHEMERAL", raising=False)
    model = MockModel(planner=lambda body: json.dumps(PLAN), writer=lambda body: "unused")
    config = make_config()
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=[])}
    cached = []
    for _ in range(2):  # two "tandem run"s: each its own embedded server on the same store
        async with open_bus(None, store_dir=tmp_path / "store") as (bus, _), \
                start_actors(bus, config, ["planner", "router", "executor", "task"], factories=factories):
            result = await run_task(bus, TaskSubmit(task="Convert this Markdown to Textile", inputs={3: "# T\n"},
                                                    input_types={3: "markdown"}, mode="two_stage"))
            assert result.outputs[0].text == "h1. T\n"
            cached.append(result.plan_cached)
        assert running_server(tmp_path / "store") is None  # lock and server.json gone with the server
    assert cached == [False, True]
    assert len([b for b in model.requests if "response_format" in b]) == 1


async def test_ephemeral_env_keeps_the_old_behaviour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_EPHEMERAL", "1")
    async with open_bus(None, store_dir=tmp_path / "store") as (bus, _):
        kv = await bus.key_value("probe")
        await kv.put("k", b"v")
    assert not (tmp_path / "store").exists()


async def test_second_process_on_a_busy_store_runs_on_a_temporary_one(tmp_path: Path, capfd) -> None:
    store = tmp_path / "store"
    async with EmbeddedNats(persistent=True, store_dir=store) as first:
        assert first.store == store
        holder = running_server(store)
        assert holder is not None and holder["url"] == first.url
        async with EmbeddedNats(persistent=True, store_dir=store) as second:  # started while the first runs
            assert second.store is None and "in use by another tandem process" in second.busy
            bus = await Bus.connect(second.url)
            try:
                await (await bus.key_value("probe")).put("k", b"second")  # works, on its own temporary store
            finally:
                await bus.close()
        with pytest.raises(StoreBusy, match="TANDEM_EPHEMERAL=1"):
            async with EmbeddedNats(persistent=True, store_dir=store, on_busy="error"):
                pass
    assert "temporary store" in capfd.readouterr().err


async def test_servers_started_at_the_same_moment_get_one_store_each(tmp_path: Path) -> None:
    store = tmp_path / "store"
    claimed: list[Path | None] = []

    async def start() -> None:
        async with EmbeddedNats(persistent=True, store_dir=store) as server:
            claimed.append(server.store)
            await anyio.sleep(0.5)  # both hold their server while the other starts

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(start)
    assert sorted(map(str, claimed)) == sorted([str(store), "None", "None"])


def test_cache_list_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    monkeypatch.delenv("TANDEM_EPHEMERAL", raising=False)  # the suite runs ephemeral; this test needs the store

    async def seed() -> None:
        async with open_bus(None) as (bus, _):
            kv = await bus.key_value("tandem_plans")
            await kv.put("ab" * 32, json.dumps(PLAN).encode())
            await kv.put("recipe.keep-me", b"{}")  # recipes share the bucket: never listed nor cleared

    anyio.run(seed)
    runner = CliRunner()
    listed = runner.invoke(cache_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "abababab" in listed.stdout and "read_input → spawn_command → write_output" in listed.stdout
    assert "recipe" not in listed.stdout
    cleared = runner.invoke(cache_app, ["clear"])
    assert cleared.exit_code == 0 and "cleared 1 cached plan" in cleared.output
    assert "abababab" not in runner.invoke(cache_app, ["list"]).stdout

    async def recipe_kept() -> bytes | None:
        async with open_bus(None) as (bus, _):
            return (await (await bus.key_value("tandem_plans")).get("recipe.keep-me")).value

    assert anyio.run(recipe_kept) == b"{}"
    removed = runner.invoke(cache_app, ["clear", "--all"])
    assert removed.exit_code == 0 and not (tmp_path / "store").exists()
