"""The ``tandem`` command as a user runs it: real processes, embedded nats-server, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TANDEM = str(Path(sys.executable).parent / "tandem")
ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "examples" / "plans" / "markdown_to_textile.json"

DOC = """# Project

An **important** note and an *emphasis*, plus __strong__ too.

## Install

- first item with **bold**
- second *item*
  - nested one
* star bullet

### Notes

Math: 2 * 3 = 6.
"""

TEXTILE = """h1. Project

An *important* note and an _emphasis_, plus *strong* too.

h2. Install

* first item with *bold*
* second _item_
** nested one
* star bullet

h3. Notes

Math: 2 * 3 = 6.
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TANDEM_TRACE_FILE": str(tmp_path / "traces.jsonl"), "NO_COLOR": "1", "COLUMNS": "200"}


def tandem(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TANDEM, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_execute_plan_converts_markdown_to_textile(tmp_path: Path, env: dict[str, str]) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    out = tandem("run", "--input", str(doc), "--execute-plan", str(PLAN), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == TEXTILE
    assert "step 2 spawn_command" in out.stderr and "execute plan" in out.stderr

    result = tmp_path / "out.textile"
    out = tandem("run", "-i", str(doc), "--execute-plan", str(PLAN), "-o", str(result), env=env)
    assert out.returncode == 0 and out.stdout == ""
    assert result.read_text() == TEXTILE

    shown = tandem("trace", env=env)
    assert shown.returncode == 0, shown.stderr
    for name in ("invoke_agent task", "send tandem.executor.execute", "process tandem.executor.execute",
                 "execute_tool sed", "step=5"):
        assert name in shown.stdout, name
    listing = tandem("trace", "--list", env=env)
    assert listing.stdout.count("invoke_agent task") == 2


def test_missing_input_is_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    out = tandem("run", "--input", str(tmp_path / "nope.md"), "convert it", env=env)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: input file not found: {tmp_path / 'nope.md'}"]


def test_invalid_plan_names_field_and_writes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"version":"1.0","workflow":[{"step":1,"action":"spawn_command","params":{"cmd":"rm"}},'
                    '{"step":2,"action":"write_output"}]}')
    target = tmp_path / "out.txt"
    out = tandem("run", "--execute-plan", str(plan), "-o", str(target), env=env)
    assert out.returncode == 1
    assert "$.workflow[0].params.cmd" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not target.exists()
    out = tandem("run", "--execute-plan", str(tmp_path / "missing.json"), env=env)
    assert out.returncode == 1 and "cannot read plan file" in out.stderr


def test_failing_step_exits_nonzero_without_output_file(tmp_path: Path, env: dict[str, str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"version":"1.0","workflow":[{"step":1,"action":"read_input","params":{"source":"fd:3"}},'
                    '{"step":2,"action":"spawn_command","params":{"cmd":"sed","args":["y/a/b/"]}},'
                    '{"step":3,"action":"write_output"}]}')
    doc = tmp_path / "doc.txt"
    doc.write_text("abc\n")
    target = tmp_path / "out.txt"
    out = tandem("run", "-i", str(doc), "--execute-plan", str(plan), "-o", str(target), env=env)
    assert out.returncode == 1
    assert "step 2 (spawn_command) failed: sed: unknown command 'y'" in out.stderr
    assert not target.exists()


def test_plan_reading_an_input_not_given_fails_cleanly(tmp_path: Path, env: dict[str, str]) -> None:
    out = tandem("run", "--execute-plan", str(PLAN), env=env)  # the plan reads fd:3, no --input given
    assert out.returncode == 1 and "fd:3 was not given as an input" in out.stderr


def test_unreachable_nats_is_one_line_error(env: dict[str, str]) -> None:
    out = tandem("run", "--nats-url", "nats://127.0.0.1:1", "hello", env=env, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: cannot connect to NATS at nats://127.0.0.1:1: [Errno 111] Connect call failed ('127.0.0.1', 1)"]


def test_stdin_is_fd0(tmp_path: Path, env: dict[str, str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"version":"1.0","workflow":[{"step":1,"action":"read_input","params":{"source":"fd:0"}},'
                    '{"step":2,"action":"spawn_command","params":{"cmd":"sort","args":["-r"]}},'
                    '{"step":3,"action":"write_output"}]}')
    out = subprocess.run([TANDEM, "run", "--execute-plan", str(plan)], input="a\nc\nb\n", capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "c\nb\na\n"


def test_help_lists_commands_and_options(env: dict[str, str]) -> None:
    out = tandem("run", "--help", env=env)
    assert out.returncode == 0
    for flag in ("--input", "--output", "--single-stage", "--two-stage", "--plan-only", "--execute-plan",
                 "--no-cache", "--nats-url"):
        assert flag in out.stdout


def test_errors_inside_task_groups_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "c.yaml"
    # a provider nobody listens on: planning fails, and --plan-only has no fallback
    config.write_text("providers: {p: {kind: openai, base_url: 'http://127.0.0.1:1/v1', connect_timeout_s: 1}}\n"
                      "models: {m: {provider: p, model: m}}\n"
                      "tiers: {planning: [m], execution: [m]}\n"
                      "tasks: {planning: planning, manual_transform: execution, single_stage: execution}\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n")
    out = tandem("run", "--config", str(config), "--plan-only", "-i", str(doc), "Convert this Markdown to Textile",
                 env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    # one error line, then the trace that explains it (a failed task has a trace like any other)
    assert len(lines) == 2 and lines[0].startswith("error: ") and "cannot reach" in lines[0], out.stderr
    assert lines[1].startswith("trace "), out.stderr


def test_fallback_chain_end_to_end_over_real_http(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 4's done-when: 429, then 503, then the third candidate answers a real `tandem run`."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, payload = {
                "alpha": (429, {"Retry-After": "3600"}, {"error": {"message": "rate limited"}}),
                "beta": (503, {}, {"error": {"message": "overloaded"}}),
            }.get(body["model"], (200, {}, {
                "id": "c1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour !"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}))
            data = json.dumps(payload).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "three.yaml"
        config.write_text(f"""
providers: {{mock: {{kind: openai, base_url: "http://127.0.0.1:{server.server_address[1]}/v1"}}}}
models:
  alpha: {{provider: mock, model: alpha, price: {{input_per_1m: 5, output_per_1m: 15}}}}
  beta: {{provider: mock, model: beta}}
  gamma: {{provider: mock, model: gamma, price: {{input_per_1m: 1, output_per_1m: 2}}}}
tiers: {{standard: [alpha, beta, gamma]}}
tasks: {{planning: standard, single_stage: standard, manual_transform: standard}}
router: {{fallback: {{max_retries_per_model: 0}}}}
""")
        usage_log = tmp_path / "usage.jsonl"
        env = {**env, "TANDEM_USAGE_LOG": str(usage_log)}
        out = tandem("run", "--config", str(config), "--single-stage", "Say hello in French", env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Bonjour !"
    finally:
        server.shutdown()
    usage = tandem("usage", "--log", str(usage_log), env=env)
    assert usage.returncode == 0 and "alpha → beta → gamma" in usage.stdout
    shown = tandem("trace", env=env)
    tree = shown.stdout
    router_line = next(i for i, line in enumerate(tree.splitlines()) if "process tandem.router.complete" in line)
    chats = [line for line in tree.splitlines()[router_line:] if "chat " in line]
    assert [c.split("chat ")[1].split()[0] for c in chats] == ["alpha", "beta", "gamma"]


def test_choose_prints_choice_result_json(env: dict[str, str]) -> None:
    import json

    out = tandem("choose", "--no-llm", "-o", "ファイル作成", "-o", "安全モード実行", "-o", "完全実行", "最初の2つ", env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["selected_options"] == [1, 2] and result["decided_by"] == "pattern"
    assert result["action"] == "execute" and result["confidence"] >= 0.8
    vague = json.loads(tandem("choose", "--no-llm", "-o", "a", "-o", "b", "いい感じのやつ", env=env).stdout)
    assert vague["action"] == "clarify" and vague["selected_options"] == []
    critical = json.loads(tandem("choose", "--no-llm", "--risk", "critical", "-o", "delete", "-o", "keep", "1",
                                 env=env).stdout)
    assert critical["action"] == "confirm"


def test_run_approve_per_step_in_free_text(tmp_path: Path, env: dict[str, str]) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    out = tandem("run", "-i", str(doc), "--execute-plan", str(PLAN), "--approve", "--answer", "skip step 5", env=env)
    assert out.returncode == 0, out.stderr
    assert "Approve it?" in out.stderr and "> skip step 5" in out.stderr
    assert "* first item" not in out.stdout and "- first item" in out.stdout  # bullets (step 5) not converted
    assert "h1. Project" in out.stdout
    no = tandem("run", "-i", str(doc), "--execute-plan", str(PLAN), "--approve", "--answer", "いいえ、実行しないで",
                env=env)
    assert no.returncode == 0 and no.stdout == "" and "plan rejected: nothing was run" in no.stderr
    shown = tandem("trace", env=env).stdout
    assert shown.count("process tandem.choice.parse") >= 1 and "invoke_agent task" in shown


def test_serve_stops_cleanly_on_ctrl_c_and_takes_its_nats_server_along(env: dict[str, str]) -> None:
    import re
    import signal
    import socket
    import time

    proc = subprocess.Popen([TANDEM, "serve", "executor"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "serving executor" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        port = int(re.search(r"nats://127\.0\.0\.1:(\d+)", seen).group(1))
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the embedded server is up
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)  # and gone with it


@pytest.mark.anyio
async def test_run_with_a_client_credential_does_not_try_to_serve_missing_actors(tmp_path: Path, env: dict[str, str],
                                                                                  nats_url: str) -> None:
    """With --creds (a deployment's client), missing actors are named, not started with a credential that cannot serve."""
    import nkeys

    seed = tmp_path / "client.nk"
    seed.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    seed.chmod(0o600)
    import anyio

    done = await anyio.to_thread.run_sync(lambda: tandem("run", "--nats-url", nats_url, "--creds", str(seed), "hello",
                                                         env=env))
    assert done.returncode == 1
    assert "not serving" in done.stderr and "task" in done.stderr and "Traceback" not in done.stderr
