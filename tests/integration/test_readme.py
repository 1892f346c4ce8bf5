"""The README's example for other services runs as written, over a real nats-server."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import nats

from tandem.messages import TaskEvent, encode, subjects

README = Path(__file__).resolve().parents[2] / "README.md"


def _example(name: str) -> dict:
    """Execute the README's python block that defines ``name``; return its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (code,) = [b for b in blocks if f"def {name}(" in b]
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    return namespace


async def test_follow_task_events_example(nats_url: str, capsys) -> None:
    follow_tasks = _example("follow_tasks")["follow_tasks"]
    received: list = []
    async with anyio.create_task_group() as tg:

        async def listen() -> None:
            received.extend(await follow_tasks(nats_url, 2))

        tg.start_soon(listen)
        publisher = await nats.connect(nats_url)
        # the listener subscribes at some point: publish one event per round until it has two
        with anyio.fail_after(10):
            for n in range(10_000):
                if len(received) == 2:
                    break
                await publisher.publish(subjects.event_task("succeeded", f"t-{n}"),
                                        encode(TaskEvent(task_id=f"t-{n}", kind="succeeded", status="succeeded",
                                                         detail="ok")))
                await anyio.sleep(0.01)
        await publisher.close()
    first, second = received
    assert isinstance(first, TaskEvent) and first.kind == second.kind == "succeeded"
    assert int(second.task_id[2:]) == int(first.task_id[2:]) + 1  # consecutive: nothing lost once subscribed
    assert f"{second.task_id} succeeded ok" in capsys.readouterr().out
