"""``tandem up`` and ``tandem status`` as a user runs them: real processes, generated credentials.

One ``tandem up --replicas router=2`` (secure: one nkey per actor, one for clients) with a model
stand-in over HTTP; ``tandem status`` lists every actor replica by its process name; ``tandem run
--nats-url … --creds client.nk`` runs a two-stage task whose one trace has spans from at least four
processes (``service.instance.id``); SIGINT stops everything in order and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from tandem.services.deploy import Topology, render
from tandem.services.deploy._supervisor import ProcessGaveUp, Supervisor

from .._deploy import Echo, ModelServer, write_config

TANDEM = str(Path(sys.executable).parent / "tandem")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _instances(spans: list[dict], trace_id: str) -> Counter[str]:
    return Counter(s["resource"]["attributes"].get("service.instance.id", "?") for s in spans
                   if s["context"]["trace_id"] == "0x" + trace_id)


def test_tandem_up_status_run_and_ordered_shutdown(tmp_path: Path) -> None:
    model = ModelServer()
    config = write_config(tmp_path / "config.yaml", model.url)
    traces = tmp_path / "traces.jsonl"
    env = {**os.environ, "TANDEM_TRACE_FILE": str(traces), "TANDEM_USAGE_LOG_DISABLE": "1", "NO_COLOR": "1",
           "COLUMNS": "200"}
    for key in ("TANDEM_NATS_URL", "TANDEM_NATS_CREDS", "TANDEM_NATS_INBOX_PREFIX"):
        env.pop(key, None)
    directory = tmp_path / "up"
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([TANDEM, "up", "--replicas", "router=2", "--port", "0",
                           "--dir", str(directory), "--config", str(config), "--grace", "5"],
                          stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        started = time.perf_counter()
        deadline = started + 60
        while "tandem up: " not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.perf_counter() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.1)
        print(f"\ntandem up ready in {time.perf_counter() - started:.1f}s")
        info = json.loads((directory / "up.json").read_text())
        creds = info["credentials"]
        assert creds and Path(creds).is_file() and (Path(creds).stat().st_mode & 0o777) == 0o600

        status = subprocess.run([TANDEM, "status", "--dir", str(directory), "--json"], capture_output=True,
                                text=True, env=env, timeout=60)
        assert status.returncode == 0, status.stderr
        actors = {a["name"]: a for a in json.loads(status.stdout)["actors"]}
        assert set(actors) == {"planner", "router", "executor", "task", "context", "choice", "chat"}
        assert sorted(i["name"] for i in actors["router"]["instances"]) == ["router.1", "router.2"]
        assert all(i["pid"] == info["processes"][i["name"]] for a in actors.values() for i in a["instances"])
        text = subprocess.run([TANDEM, "status", "--dir", str(directory)], capture_output=True, text=True, env=env,
                              timeout=60)
        assert "router (2/2)" in text.stdout and "executor.1" in text.stdout, text.stdout
        given = subprocess.run([TANDEM, "status", "--nats-url", info["url"], "--creds", creds, "--json"],
                               capture_output=True, text=True, timeout=60,
                               env={**env, "XDG_STATE_HOME": str(tmp_path / "elsewhere")})
        assert given.returncode == 0, given.stderr  # the credential's own deployment: its inbox prefix and names
        assert sorted(i["name"] for a in json.loads(given.stdout)["actors"] for i in a["instances"]) == \
            sorted(i["name"] for a in actors.values() for i in a["instances"])

        (tmp_path / "in.txt").write_text("hello world\n")
        run = subprocess.run([TANDEM, "run", "--two-stage", "--no-cache", "--nats-url", info["url"], "--creds", creds,
                              "-i", str(tmp_path / "in.txt"), "Upper-case this text"],
                             capture_output=True, text=True, timeout=120,
                             env={**env, **{k: v for k, v in info["client"].items() if k != "TANDEM_NATS_URL"}})
        assert run.returncode == 0, run.stderr
        assert "using running actors" in run.stderr
        trace_id = re.search(r"trace ([0-9a-f]{32})", run.stderr).group(1)
        # the task commands with the client credential alone (no inbox prefix to set: clients keep _INBOX)
        tasks = subprocess.run([TANDEM, "tasks", "--nats-url", info["url"], "--creds", creds], capture_output=True,
                               text=True, timeout=60, env=env)
        assert tasks.returncode == 0 and "succeeded" in tasks.stdout, tasks.stderr + tasks.stdout

        os.kill(up.pid, signal.SIGINT)
        stopping = time.perf_counter()
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()
        print(f"ordered shutdown in {time.perf_counter() - stopping:.1f}s")
        assert not [name for name, pid in info["processes"].items() if pid and _alive(pid)]
        assert not (directory / "up.json").exists()
        lines = (tmp_path / "up.log").read_text().splitlines()
        order = [n for n, line in enumerate(lines) if "stopping" in line and "process(es)" in line]
        assert [lines[n].split("stopping ")[1].split()[1] for n in order] == ["actor", "server"], lines[-20:]

        # every process has flushed its spans on the way out: one trace, spans from every process on its path
        instances = _instances(_spans(traces), trace_id)
        print(f"trace {trace_id}: spans per service.instance.id {dict(instances)}")
        named = {i for i in instances if re.fullmatch(r"[a-z]+\.\d+", i)}
        assert {n.split(".")[0] for n in named} >= {"task", "planner", "router", "executor"}, instances
        assert len(instances) >= 5  # four actor processes at least, and the `tandem run` process
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)  # the ordered shutdown
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.kill()  # its children get SIGTERM from the kernel (PR_SET_PDEATHSIG)
                up.wait()
        log.close()
        model.close()


async def test_a_process_that_keeps_crashing_is_given_up_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nats: {no_such_field: 1}\n")  # every actor process exits at once: config error
    topology = Topology(replicas={name: 0 for name in ("planner", "router", "choice", "task", "context", "chat")},
                        secure=False, port=0)
    deployment = render(topology, tmp_path / "up")
    echo = Echo()
    sup = Supervisor(deployment, topology, config_path=bad, echo=echo, max_restarts=1, within=60, grace=2)
    with anyio.fail_after(60), pytest.raises(ProcessGaveUp) as caught:
        await sup.run()
    assert "executor.1: giving up: it exited 2 times within 60s, never ready" in str(caught.value)
    assert "no_such_field" in str(caught.value)  # the process's last output comes with it
    assert any("restart 1/1" in line for line in echo.lines)
    assert not any(pid and _alive(pid) for pid in sup.pids().values())


def test_up_and_status_refuse_bad_input_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("TANDEM_NATS_URL", None)
    bad = subprocess.run([TANDEM, "up", "--replicas", "routr=2", "--dir", str(tmp_path / "up")], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "routr=2" in bad.stderr and "planner" in bad.stderr, bad.stderr
    cluster = subprocess.run([TANDEM, "up", "--cluster", "2"], capture_output=True, text=True, env=env, timeout=60)
    assert cluster.returncode == 2 and "--cluster" in cluster.stderr
    none = subprocess.run([TANDEM, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert none.returncode == 1 and "no `tandem up` runs on" in none.stderr and "--nats-url" in none.stderr, none.stderr
    assert not (tmp_path / "up").exists() or not any((tmp_path / "up").iterdir())
