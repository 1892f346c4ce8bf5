"""Listing a KV bucket's keys: the same keys as nats-py, one round trip, no consumer left behind
(issue 14: the planner lists its recipe keys on every plan)."""

from __future__ import annotations

import anyio
import nats.js.errors
import pytest
from nats.js.kv import KeyValue
from tandem.services.bus import Bus


async def _nats_py_keys(plain: KeyValue, tries: int = 5) -> list[str]:
    """nats-py's ``KeyValue.keys``, read again when it races: its watcher signals "no more" when
    the consumer info says nothing is pending and nothing is delivered yet, which a loaded machine
    can see while every entry is already on its way (NoKeysError for a bucket with keys; seen once
    in a clean-clone CI run)."""
    for attempt in range(tries):
        try:
            return await plain.keys()
        except nats.js.errors.NoKeysError:
            if attempt == tries - 1:
                raise
            await anyio.sleep(0.05)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("history", [1, 3])
async def test_keys_are_nats_py_keys(bus: Bus, history: int) -> None:
    kv = await bus.key_value(f"hop_keys_{history}", history=history)
    plain = KeyValue(name=kv.bucket, stream=f"KV_{kv.bucket}", pre=f"$KV.{kv.bucket}.", js=bus.jetstream,
                     direct=False)
    with pytest.raises(nats.js.errors.NoKeysError):
        await kv.keys()
    for key in ("recipe.a", "recipe.b", "b", "gone", "purged", "again"):
        await kv.put(key, b"v1")
    await kv.put("b", b"v2")
    await kv.put("b", b"v3")
    await kv.delete("gone")
    await kv.purge("purged")
    await kv.delete("again")
    await kv.put("again", b"back")
    expected = sorted(await _nats_py_keys(plain))
    assert expected == ["again", "b", "recipe.a", "recipe.b"]
    for _ in range(20):
        assert sorted(await kv.keys()) == expected
    assert sorted(await kv.keys(filters=["recipe."])) == ["recipe.a", "recipe.b"]
    await bus.flush()
    with anyio.fail_after(10):  # the consumers' deletes are not waited for: give the server a moment
        while (await bus.jetstream.stream_info(f"KV_{kv.bucket}")).state.consumer_count > 1:  # nats-py's own
            await anyio.sleep(0.05)


async def test_the_watcher_fallback_lists_the_same_keys(bus: Bus) -> None:
    kv = await bus.key_value("hop_keys_watch")
    for key in ("x", "y", "z"):
        await kv.put(key, b"v")
    await kv.delete("y")
    assert sorted(await kv._keys_by_watch()) == ["x", "z"]
