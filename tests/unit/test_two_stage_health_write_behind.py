"""Successful plans and planning latencies are written together after a short write-behind; failed plans at once."""

from __future__ import annotations

import anyio
import msgspec
import nats.js.errors
import pytest

from tandem.actors.router import TwoStageHealth
from tandem.services.config import Config, TwoStageConfig, TwoStageFallback


class _KV:
    """An in-memory bucket that counts reads and writes (revision-checked like JetStream's)."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.reads = self.writes = 0
        self.revision = 0

    async def get(self, key: str) -> object:
        self.reads += 1
        if key not in self.data:
            raise nats.js.errors.KeyNotFoundError
        value, revision = self.data[key]
        return type("Entry", (), {"value": value, "revision": revision})()

    async def create(self, key: str, value: bytes) -> int:
        return await self.update(key, value, last=0)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if self.data.get(key, (b"", 0))[1] != last:
            raise nats.js.errors.KeyWrongLastSequenceError
        self.writes += 1
        self.revision += 1
        self.data[key] = (value, self.revision)
        return self.revision

    def values(self, key: str) -> list:
        return msgspec.json.decode(self.data[key][0]) if key in self.data else []


def _health(kv: _KV, window: int = 20) -> TwoStageHealth:
    config = Config(two_stage=TwoStageConfig(fallback=TwoStageFallback(window=window)))
    return TwoStageHealth(kv, config, write_behind_s=0.05)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_records_of_one_moment_are_written_together_in_order() -> None:
    kv = _KV()
    health = _health(kv)
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(health.record_planning, i / 10)
            tg.start_soon(health.record_plan, True)
    assert kv.values("planning") == [i / 10 for i in range(10)] and kv.values("plans") == [True] * 10
    assert (kv.reads, kv.writes) == (2, 2)  # one read and one write per key, not two per record


@pytest.mark.anyio
async def test_a_failed_plan_is_written_at_once_with_the_successes_waiting() -> None:
    kv = _KV()
    health = _health(kv)
    async with anyio.create_task_group() as tg:
        tg.start_soon(health.record_plan, True)  # waits out the write-behind
        await anyio.sleep(0)
        await health.record_plan(False)
        assert kv.values("plans") == [True, False]  # written before record_plan returned, in order
    assert kv.values("plans") == [True, False] and kv.writes == 1  # the write-behind found nothing left


@pytest.mark.anyio
async def test_at_most_a_window_of_records_waits() -> None:
    kv = _KV()
    health = _health(kv, window=3)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(health.record_planning, float(i))
            await anyio.sleep(0)
        assert health._pending["planning"] == [2.0, 3.0, 4.0]
    assert kv.values("planning") == [2.0, 3.0, 4.0]


@pytest.mark.anyio
async def test_a_record_joins_the_write_behind_under_way_without_a_task() -> None:
    kv = _KV()
    health = _health(kv)
    assert not health.record_nowait("planning", 0.5)  # none under way: the caller starts one
    async with anyio.create_task_group() as tg:
        tg.start_soon(health.record_planning, 0.1)
        await anyio.sleep(0)  # it waits out the write-behind now
        assert health.record_nowait("planning", 0.2) and health.record_nowait("planning", 0.3)
    assert kv.values("planning") == [0.1, 0.2, 0.3] and (kv.reads, kv.writes) == (1, 1)
    assert TwoStageHealth(None, Config()).record_nowait("plans", True)  # no bucket: nothing to record
