"""KV buckets while JetStream is briefly away (issue 15, fault tests 2 and 3): wait it out, never recreate a live bucket."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.js.kv import KeyValue

from tandem.services.bus import Bus
from tandem.services.bus import _kv
from tandem.services.errors import BusError

pytestmark = pytest.mark.anyio


def _flaky(monkeypatch: pytest.MonkeyPatch, method: str, failures: list[Exception]) -> list[int]:
    """Make ``KeyValue.<method>`` raise ``failures`` one by one before it works; return the call count."""
    real = getattr(KeyValue, method)
    calls = [0]

    async def flaky(self: KeyValue, *args: object, **kwargs: object) -> object:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(KeyValue, method, flaky)
    return calls


async def test_a_write_waits_out_an_unavailable_stream_and_keeps_the_bucket(bus: Bus, monkeypatch) -> None:
    kv = await bus.key_value("unavailable_w")
    await kv.put("kept", b"before")
    recreated: list[str] = []
    monkeypatch.setattr(type(kv), "recreate", lambda self: recreated.append(self.bucket))  # must not happen
    calls = _flaky(monkeypatch, "put", [nats.js.errors.ServiceUnavailableError(),
                                         nats.js.errors.NoStreamResponseError(), nats.errors.NoRespondersError()])
    await kv.put("new", b"after")
    assert calls[0] == 4 and recreated == []
    assert (await kv.get("new")).value == b"after" and (await kv.get("kept")).value == b"before"


async def test_a_read_waits_out_an_unavailable_stream_instead_of_reporting_a_miss(bus: Bus, monkeypatch) -> None:
    kv = await bus.key_value("unavailable_r")
    await kv.put("key", b"value")
    _flaky(monkeypatch, "get", [nats.js.errors.NoStreamResponseError(), nats.js.errors.ServiceUnavailableError()])
    assert (await kv.get("key")).value == b"value"  # not KeyNotFoundError: the key exists


async def test_unavailable_past_the_budget_is_a_typed_bus_error(bus: Bus, monkeypatch) -> None:
    kv = await bus.key_value("unavailable_long")
    monkeypatch.setattr(_kv, "UNAVAILABLE_RETRY_S", 0.5)
    _flaky(monkeypatch, "put", [nats.js.errors.ServiceUnavailableError() for _ in range(100)])
    with pytest.raises(BusError, match="unavailable for 0.5s"):
        await kv.put("key", b"value")


async def test_a_deleted_bucket_is_still_recreated(bus: Bus) -> None:
    kv = await bus.key_value("deleted_b")
    await bus.jetstream.delete_key_value("deleted_b")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("key")
    await kv.put("key", b"value")
    assert (await kv.get("key")).value == b"value"
