"""The two-stage health numbers are advisory: JetStream being briefly away never fails a task (issue 15, fault test 3)."""

from __future__ import annotations

import nats.js.errors
import pytest

from tandem.actors.router import TwoStageHealth
from tandem.services.config import Config


class _UnavailableKV:
    """A KV bucket during a stream leader election: every call answers 503 (JetStream unavailable)."""

    def __init__(self) -> None:
        self.calls = 0

    async def _fail(self, *args: object, **kwargs: object) -> None:
        self.calls += 1
        raise nats.js.errors.ServiceUnavailableError

    get = create = update = _fail


@pytest.mark.anyio
async def test_recording_and_reading_health_survive_an_unavailable_bucket() -> None:
    kv = _UnavailableKV()
    health = TwoStageHealth(kv, Config())  # type: ignore[arg-type]
    await health.record_plan(True)
    await health.record_planning(1.5)
    assert await health.verdict() is None
    assert kv.calls >= 3  # each one did try the bucket
