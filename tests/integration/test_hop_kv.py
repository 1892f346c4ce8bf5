"""Listing a KV bucket's keys leaves no consumer behind (issue 14: the planner lists keys per plan)."""

from __future__ import annotations

import anyio
import nats.js.errors
import pytest

from tandem.services.bus import Bus


async def test_listing_keys_many_times_leaves_no_consumers(bus: Bus) -> None:
    kv = await bus.key_value("hop_keys")
    with pytest.raises(nats.js.errors.NoKeysError):
        await kv.keys()
    for key in ("recipe.a", "b", "gone"):
        await kv.put(key, b"v")
    await kv.delete("gone")
    for _ in range(30):
        assert sorted(await kv.keys()) == ["b", "recipe.a"]
    assert await kv.keys(filters=["recipe."]) == ["recipe.a"]
    await bus.flush()
    with anyio.fail_after(10):  # the deletes are not waited for: give the server a moment
        while (await bus.jetstream.stream_info("KV_hop_keys")).state.consumer_count > 0:
            await anyio.sleep(0.05)
