"""``tandem trace`` shows a chat turn: ``invoke_agent chat``, one intent classification, the
context actor hops, the LLM call, and for a task turn the link to the task's own trace.

The whole system runs inside one ``tandem chat --jsonl --ephemeral`` process (embedded
nats-server, every actor), its model an OpenAI-compatible HTTP server in this test, its spans
written to ``TANDEM_TRACE_FILE`` — what a user's ``tandem trace`` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from ..conftest import ChatCompletionHandler

TANDEM = str(Path(sys.executable).parent / "tandem")
DOC = "```\n# Title\n\nSome **bold** text.\n```"
PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Convert to Textile."}},
    {"step": 3, "action": "write_output"},
]}


class _Handler(ChatCompletionHandler):
    def answer(self, body: dict) -> str:
        system = body["messages"][0]["content"]
        if system.startswith("Classify the user's chat message"):
            return json.dumps({"kind": "direct_response", "reasoning": "small talk", "confidence": 0.7})
        if system.startswith("You are Tandem"):
            return "ANSWER"
        if "response_format" in body:
            return json.dumps(PLAN)
        return "h1. Title\n\nSome *bold* text."


@pytest.fixture
def model_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def tandem(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TANDEM, *args], capture_output=True, text=True, env=env, timeout=50,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_tandem_trace_shows_a_chat_turn_and_links_a_task_turn(tmp_path: Path, model_url: str) -> None:
    config = tmp_path / "chat.yaml"
    config.write_text(f"""
providers: {{mock: {{kind: openai, base_url: "{model_url}"}}}}
models: {{m: {{provider: mock, model: m, structured_output: json_schema}}}}
tiers: {{standard: [m]}}
tasks: {{planning: standard, single_stage: standard, manual_transform: standard, choice: standard,
        intent: standard, summarize: standard, chat: standard}}
two_stage: {{complexity_threshold: 0.0}}
chat: {{approval: none}}
""")
    traces = tmp_path / "traces.jsonl"
    env = {**os.environ, "TANDEM_TRACE_FILE": str(traces), "NO_COLOR": "1", "COLUMNS": "250"}
    task = json.dumps({"text": f"Convert this Markdown to Textile:\n{DOC}"})
    run = tandem("chat", "--jsonl", "--ephemeral", "--config", str(config), "--wait", "20",
                 env=env, stdin="\n".join(["the weather has been nice lately", task, "/wait done"]) + "\n")
    assert run.returncode == 0, run.stderr[-3000:]
    replies = [r for r in map(json.loads, run.stdout.splitlines()) if r["type"] == "reply"]
    assert [r["kind"] for r in replies] == ["reply", "task_submitted"], run.stdout
    direct, submitted = replies

    # a direct turn: the agent span, one intent classification (here by the model), the context hops, the LLM
    shown = tandem("trace", direct["trace_id"][:12], env=env)
    assert shown.returncode == 0, shown.stderr
    tree = shown.stdout
    lines = [line.lstrip("│└├─ ") for line in tree.splitlines()]
    assert lines[1].startswith("send tandem.chat.send") and lines[2].startswith("process tandem.chat.send"), tree
    assert lines[3].startswith("invoke_agent chat") and tree.count("invoke_agent chat") == 1, tree
    assert tree.count("classify_intent") == 1, tree
    assert tree.count("process tandem.context.append") == 2, tree  # the question, then the answer
    assert tree.count("process tandem.router.complete") == 2, tree  # the intent call and the reply
    assert tree.count("chat m ") == 2 and "model=m" in tree, tree

    # a task turn: classified once (by the rules), the user's message appended, the task's trace linked
    shown = tandem("trace", submitted["trace_id"][:12], env=env)
    tree = shown.stdout
    assert tree.count("invoke_agent chat") == 1 and tree.count("classify_intent") == 1, tree
    assert "process tandem.context.append" in tree and "process tandem.router.complete" not in tree, tree
    turn = next(s for s in map(json.loads, traces.read_text().splitlines())
                if s["name"] == "invoke_agent chat" and s["context"]["trace_id"] == "0x" + submitted["trace_id"])
    linked = [link["context"]["trace_id"].removeprefix("0x") for link in turn["links"]]
    assert len(linked) == 1 and linked[0] != submitted["trace_id"]
    assert f"→ trace {linked[0][:8]}" in tree, tree  # the tree shows where the link leads
    task_trace = tandem("trace", linked[0][:12], env=env).stdout  # the task loop's own trace
    assert "invoke_agent task" in task_trace and "chat m " in task_trace, task_trace
    assert f"→ trace {submitted['trace_id'][:8]}" in task_trace, task_trace  # and back to the turn
    task_root = next(s for s in map(json.loads, traces.read_text().splitlines())
                     if s["name"] == "invoke_agent task" and s["context"]["trace_id"] == "0x" + linked[0])
    assert [link["context"]["trace_id"] for link in task_root["links"]] == ["0x" + submitted["trace_id"]]
