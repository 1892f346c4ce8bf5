"""``tandem chat --jsonl`` as a script runs it: a process on the test's nats-server, actors in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio

from tandem.services.bus import Bus

from .test_chat import DOC, Model, chat


async def run_cli(nats_url: str, session: str, lines: list[str]) -> list[dict]:
    cmd = [str(Path(sys.executable).parent / "tandem"), "chat", "--jsonl", "--session", session,
           "--nats-url", nats_url, "--wait", "30"]
    env = {**os.environ, "TANDEM_TRACE_FILE": os.devnull}
    done = await anyio.run_process(cmd, input="\n".join(lines).encode() + b"\n", env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]


async def test_scripted_session_question_task_approval_result_then_resume(bus: Bus, nats_url: str) -> None:
    model = Model(slow=True)
    task = json.dumps({"text": f"Convert this Markdown to Textile:\n{DOC}"})
    async with chat(bus, model):
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                async def release_soon() -> None:
                    while model.calls["chat"] < 2:
                        await anyio.sleep(0.05)
                    model.release.set()
                tg.start_soon(release_soon)
                out = await run_cli(nats_url, "cli1", ["What is Textile?", task, "/wait",
                                                       "And Markdown?", "yes, run it"])
            resumed = await run_cli(nats_url, "cli1", ["/context"])
    replies = [o for o in out if o["type"] == "reply"]
    assert [r["kind"] for r in replies] == ["reply", "task_submitted", "reply", "answer"]
    assert replies[3]["decision"] == "approved"
    assert any(o["type"] == "approval" for o in out)
    result = [o for o in out if o["type"] == "task_result"]
    assert result and result[0]["status"] == "succeeded" and "h1. Title" in result[0]["text"]
    context = [o for o in resumed if o["type"] == "reply"][0]["text"]
    assert "What is Textile?" in context and "h1. Title" in context
