"""Issue 10 with a real process serving planner, router, executor and choice (like ``tandem serve``).

Before: six deeply nested requests (RecursionError), or six failing ``ExecuteRequest``s
published without a reply subject, ended the whole process; a 5,000-character
``tandem.planner.remember`` fingerprint made nats-server close the connection for good and
lost the 20 requests in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio

from tandem.messages import (
    ChatMessage,
    CompletionReply,
    CompletionRequest,
    ErrorReply,
    Ping,
    Pong,
    decoder,
    subjects,
)
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.errors import RemoteError

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ["planner", "router", "executor", "choice"]
REQUEST_SUBJECTS = [subjects.PLANNER_PLAN, subjects.PLANNER_REMEMBER, subjects.ROUTER_COMPLETE, subjects.ROUTER_SHAPE,
                    subjects.EXECUTOR_EXECUTE, subjects.CHOICE_PARSE]

PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-Z", "x"]}},  # fails
    {"step": 3, "action": "write_output"},
]}


async def _instances(bus: Bus) -> dict[str, str]:
    return {name: (await bus.request(subjects.ping(name), Ping(), Pong, timeout=5)).instance_id for name in ACTORS}


def _nested(tag: str, depth: int) -> bytes:
    return b'{"type":"' + tag.encode() + b'","x":' + b"[" * depth + b"]" * depth + b"}"


async def test_hostile_messages_do_not_end_the_serving_process() -> None:
    async with EmbeddedNats() as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TANDEM_USAGE_LOG_DISABLE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tests._replica", server.url, "0.2", *ACTORS], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        bus = await Bus.connect(server.url)
        try:
            assert proc.stdout is not None
            with anyio.fail_after(30):
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.split() == ["ready", *ACTORS], line
            before = await _instances(bus)

            codes: list[str] = []
            for subject in REQUEST_SUBJECTS:
                for depth in (1_000, 20_000):
                    msg = await bus.nc.request(subject, _nested("x", depth), timeout=10)
                    codes.append(decoder(ErrorReply).decode(msg.data).code)
            assert set(codes) == {"bad_request"}

            letters = await bus.subscribe("tandem.events.dead_letter.executor")
            await bus.flush()
            for _ in range(6):  # one-way: dead letters, not crashes
                await bus.nc.publish(subjects.EXECUTOR_EXECUTE, _nested("execute_request", 5_000))
                await bus.nc.publish(subjects.EXECUTOR_EXECUTE, json.dumps(
                    {"type": "execute_request", "plan": PLAN, "inputs": {"3": "a\nb\n"}}).encode())
            await bus.flush()
            dead = [json.loads((await letters.next_msg(timeout=10)).data) for _ in range(12)]
            assert sorted(d["code"] for d in dead) == ["bad_request"] * 6 + ["step_failed"] * 6

            # a 5,000-character fingerprint while 20 completions are in flight
            answered: list[str] = []

            async def complete(i: int) -> None:
                reply = await bus.request(subjects.ROUTER_COMPLETE, CompletionRequest(
                    task="single_stage", messages=[ChatMessage(role="user", content=str(i))], timeout_s=20),
                    CompletionReply, timeout=20)
                answered.append(reply.content)

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(complete, i)
                await anyio.sleep(0.05)
                remember = json.dumps({"type": "remember_plan", "fingerprint": "f" * 5_000, "plan": PLAN}).encode()
                msg = await bus.nc.request(subjects.PLANNER_REMEMBER, remember, timeout=10)
                err = decoder(ErrorReply).decode(msg.data)
                assert err.code == "bad_request" and "KV key" in err.message
            assert len(answered) == 20

            await anyio.sleep(0.5)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert await _instances(bus) == before  # nothing restarted
            try:
                await bus.request(subjects.ROUTER_SHAPE, Ping(), Pong, timeout=5)
            except RemoteError as exc:
                assert exc.code == "bad_request"
        finally:
            await bus.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
