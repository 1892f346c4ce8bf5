"""Side paths of a hop that must not block the event loop, and lose nothing on exit (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from tandem.services import usage as usage_module
from tandem.services.telemetry import aclose_tracing, setup_tracing
from tandem.services.usage import UsageLog, UsageRecord, load_usage

T = datetime(2026, 11, 30, tzinfo=UTC)


def rec(i: int) -> UsageRecord:
    return UsageRecord(ts=T, task="plan", tier="standard", model=f"m{i}", provider="p", fallback_chain=[f"m{i}"],
                       request_id=f"r{i}")


def test_every_usage_record_is_written_by_close(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    log = UsageLog(path)
    for i in range(2000):
        log.write(rec(i))
    log.close()
    log.close()  # idempotent
    assert [r.request_id for r in load_usage(path)] == [f"r{i}" for i in range(2000)]


def test_usage_write_does_not_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "usage.jsonl"
    release = threading.Event()
    entered = threading.Event()
    real_write = os.write

    def stalled_write(fd: int, data: bytes) -> int:  # a disk that hangs until released
        entered.set()
        release.wait(30)
        return real_write(fd, data)

    monkeypatch.setattr(usage_module.os, "write", stalled_write)
    log = UsageLog(path)
    log.write(rec(0))
    assert entered.wait(30)  # the writer thread is stuck in the disk...
    for i in range(1, 100):
        log.write(rec(i))  # ...and writing goes on without waiting for it
    assert path.read_bytes() == b""
    release.set()
    log.close()
    assert len(load_usage(path)) == 100


def test_usage_records_still_queued_at_exit_are_written(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    script = textwrap.dedent(f"""
        from datetime import UTC, datetime
        from pathlib import Path
        from tandem.services.usage import UsageLog, UsageRecord
        log = UsageLog(Path({str(path)!r}))
        for i in range(500):
            log.write(UsageRecord(ts=datetime.now(UTC), task="t", tier="s", model="m", provider="p",
                                  fallback_chain=["m"], request_id=f"r{{i}}"))
        # no close(): the interpreter exits with lines still queued
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(r.request_id for r in load_usage(path)) == sorted(f"r{i}" for i in range(500))


async def test_aclose_tracing_writes_every_span_while_the_loop_runs(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = setup_tracing("test.hop", trace_file=path, install_global=False)
    tracer = provider.get_tracer("test")
    for i in range(300):
        with tracer.start_as_current_span(f"span {i}"):
            pass
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await aclose_tracing(provider)
        tg.cancel_scope.cancel()
    assert ticks > 0  # other tasks ran while the spans were written
    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert sorted(names) == sorted(f"span {i}" for i in range(300))


def test_spans_still_queued_at_exit_are_written(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from tandem.services.telemetry import setup_tracing
        provider = setup_tracing("test.exit", trace_file=Path({str(path)!r}), install_global=False)
        tracer = provider.get_tracer("test")
        for i in range(700):
            with tracer.start_as_current_span(f"span {{i}}"):
                pass
        # no shutdown_tracing(): the SDK's atexit hook flushes the queue
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert len(path.read_text().splitlines()) == 700
