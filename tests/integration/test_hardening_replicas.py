"""Issue 10, replicas that die: SIGKILL one of two router processes under 300 requests.

Before: 9 of 300 requests got no reply and their callers waited their whole timeout.
Now a request whose replica goes silent (no reply, no heartbeat for ``Bus.liveness``
seconds) is retried on the live replica when it is idempotent, and fails fast with
``ReplicaLost`` otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from tandem.messages import ChatMessage, CompletionReply, CompletionRequest, subjects
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.errors import NoResponders, ReplicaLost, TandemError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
LIVENESS = 3.0


def _spawn(url: str, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TANDEM_USAGE_LOG_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tests._replica", url, str(delay)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


async def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = await anyio.to_thread.run_sync(proc.stdout.readline)
    assert line.startswith("ready"), f"replica did not start: {line!r}"
    return line


def _request(i: int) -> CompletionRequest:
    return CompletionRequest(task="single_stage", messages=[ChatMessage(role="user", content=f"hello {i}")],
                             timeout_s=TIMEOUT)


async def _storm(bus: Bus, n: int, *, idempotent: bool, kill: subprocess.Popen[str], kill_after: int) -> tuple[Counter[str], list[float]]:
    """Send ``n`` requests at once; SIGKILL ``kill`` once ``kill_after`` of them are on their way."""
    outcomes: Counter[str] = Counter()
    waits: list[float] = []
    sent = anyio.Event()
    count = 0

    async def one(i: int) -> None:
        nonlocal count
        t0 = time.monotonic()
        count += 1
        if count == kill_after:
            sent.set()
        try:
            await bus.request(subjects.ROUTER_COMPLETE, _request(i), CompletionReply, timeout=TIMEOUT,
                              idempotent=idempotent)
            outcomes["ok"] += 1
        except TandemError as exc:
            outcomes[exc.code] += 1
            waits.append(time.monotonic() - t0)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
        await sent.wait()
        await anyio.sleep(0.15)  # the killed replica holds requests in flight
        kill.send_signal(signal.SIGKILL)
    return outcomes, waits


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
async def test_sigkill_of_one_replica_under_300_requests(idempotent: bool) -> None:
    async with EmbeddedNats() as server:
        procs = [_spawn(server.url, 0.3), _spawn(server.url, 0.3)]
        bus = await Bus.connect(server.url, liveness=LIVENESS)
        try:
            with anyio.fail_after(30):
                for p in procs:
                    await _ready(p)
            await bus.request(subjects.ROUTER_COMPLETE, _request(0), CompletionReply, timeout=5)  # acks seen
            started = time.monotonic()
            with anyio.fail_after(TIMEOUT - 5):  # nobody waits out the timeout
                outcomes, waits = await _storm(bus, 300, idempotent=idempotent, kill=procs[0], kill_after=150)
            elapsed = time.monotonic() - started
            print(f"\nSIGKILL of 1 of 2 router replicas, 300 requests ({'idempotent' if idempotent else 'not idempotent'}):"
                  f" {dict(outcomes)} in {elapsed:.1f}s; failed ones waited at most {max(waits, default=0):.1f}s")
            assert sum(outcomes.values()) == 300
            if idempotent:
                assert outcomes == Counter(ok=300)  # 0 lost
            else:
                assert set(outcomes) <= {"ok", "replica_lost"} and outcomes["replica_lost"] > 0
                assert max(waits) < LIVENESS + 3  # failed fast, not after the 30 s timeout
            # the survivor still serves, the dead one is gone from the queue group
            reply = await bus.request(subjects.ROUTER_COMPLETE, _request(0), CompletionReply, timeout=5)
            assert reply.content == f"from {procs[1].pid}"
        finally:
            await bus.close()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
