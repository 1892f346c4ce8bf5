"""Crash recovery of the task loop with real processes: SIGKILL the task actor holding a task mid-run.

Two ``tandem serve task`` processes share the durable consumer; planner, router and executor run
in the test process, the model is an OpenAI-compatible HTTP server on loopback that counts its
calls. The replica holding the task is killed while the second model step is in flight; the
other replica gets the redelivery after ``ack_wait`` and resumes from the executor's checkpoint,
so the first model step is not called again and the task ends once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path

import anyio

from tandem.messages import ExecutionPlan, TaskSubmit, decoder
from tandem.services.bus import Bus
from tandem.services.config import load_config
from tandem.services.runtime import start_actors
from tandem.services.tasks import TaskClient

from ..conftest import ChatCompletionHandler

TANDEM = str(Path(sys.executable).parent / "tandem")

PLAN = decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "FIRST: upper-case it."}},
    {"step": 3, "action": "manual_transform", "params": {"instructions": "SECOND: add a title."}},
    {"step": 4, "action": "write_output"},
]}))


class CountingModel(ThreadingHTTPServer):
    """Answers chat completions; the ``SECOND`` step waits ``slow_s`` (long enough to kill a replica)."""

    daemon_threads = True

    def __init__(self, slow_s: float) -> None:
        self.calls: Counter[str] = Counter()
        self.slow_s = slow_s
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(ChatCompletionHandler):
    server: CountingModel

    def answer(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        which = "first" if "FIRST" in prompt else "second" if "SECOND" in prompt else "other"
        self.server.calls[which] += 1
        if which == "second":
            time.sleep(self.server.slow_s)
        text = prompt.split("Text:\n", 1)[-1]
        return text.upper() if which == "first" else f"TITLE\n{text}"


def _config_file(tmp_path: Path, model_url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
nats: {{request_timeout_s: 30}}
providers: {{mock: {{kind: openai, base_url: "{model_url}/v1", gen_ai_provider: openai}}}}
models: {{m: {{provider: mock, model: m}}}}
tiers: {{cheap: [m], standard: [m], heavy_reasoning: [m]}}
tasks: {{planning: heavy_reasoning, single_stage: standard, manual_transform: cheap, choice: cheap}}
task: {{ack_wait_s: 2, max_attempts: 3}}
""")
    return path


def _serve_task(url: str, config: Path, log: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TANDEM_USAGE_LOG_DISABLE": "1"}
    out = log.open("w")
    proc = subprocess.Popen([TANDEM, "serve", "task", "--nats-url", url, "--config", str(config)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, log


def _instance(log: Path) -> str | None:
    found = re.search(r"task (\w{12}) serving", log.read_text(errors="replace"))
    return found.group(1) if found else None


async def test_sigkill_of_the_replica_holding_a_task_resumes_it_elsewhere(bus: Bus, nats_url: str,
                                                                          tmp_path: Path) -> None:
    model = CountingModel(slow_s=4.0)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    config_path = _config_file(tmp_path, f"http://127.0.0.1:{model.server_address[1]}")
    config = load_config(config_path)
    procs = [_serve_task(nats_url, config_path, tmp_path / f"task{n}.log") for n in range(2)]
    try:
        with anyio.fail_after(30):
            while not all(_instance(log) for _, log in procs):
                await anyio.sleep(0.1)
        by_instance = {_instance(log): proc for proc, log in procs}
        async with start_actors(bus, config, ["planner", "router", "executor"]):
            client = TaskClient(bus)
            submit = TaskSubmit(task="Rewrite", inputs={3: "hello\n"}, plan=PLAN)
            await client.submit(submit)
            with anyio.fail_after(30):  # the first model step is done, the second is in flight
                while model.calls["second"] == 0:
                    await anyio.sleep(0.05)
            holder = (await client.get(submit.task_id)).worker
            victim = by_instance[holder]
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            with anyio.fail_after(60):
                state = await client.wait(submit.task_id)
        print(f"\nkilled {holder}; model calls {dict(model.calls)}; attempts {state.attempts}; "
              f"finished on {state.worker}")
        assert state.status == "succeeded", state.error
        assert state.result.outputs[0].text == "TITLE\nHELLO\n"
        assert state.attempts == 2 and state.worker != holder
        assert model.calls["first"] == 1  # finished before the kill: not run again
        assert model.calls["second"] == 2  # in flight at the kill: run again on the other replica
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        model.shutdown()
