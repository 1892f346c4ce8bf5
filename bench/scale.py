"""Scale-out under ``tandem up``: tasks/s with 1 and 2 replicas of every actor, and the cost of authentication.

One run, three deployments started with the supervisor ``tandem up`` uses (every actor replica
its own OS process, nats-server from the generated config):

* ``secure ×1``: one process per actor, one nkey credential per actor and one for clients;
* ``secure ×2``: two processes per actor (queue groups share the requests, the task stream's
  durable consumer shares the tasks);
* ``open ×1``: one process per actor on an open server (no credentials, no permissions).

Each gets the same load: ``--tasks`` two-stage tasks (``use_cache=False``: planner → router →
model, then executor → router → model) submitted by one client with at most ``--in-flight``
unfinished at a time, against a zero-latency model (an OpenAI-compatible HTTP server in its own
process that answers at once: the plan for planning calls, a line of text otherwise). tasks/s =
tasks / (first submission → last task ended). The hop cost is the p50 of ``--pings`` sequential
``tandem.router.ping`` request/replies from the client (the Tandem request path: span, headers,
envelope), on the secure and the open server.

CPU seconds of every process (``/proc/<pid>/stat``) over the measured window are printed per
actor, for the model server and for this (the client) process, with the share of the cores this
deployment kept busy, the whole machine's load (``/proc/stat``: other processes count too) and the
CPU a task costs over all processes — cores / CPU per task is the ceiling no number of replicas
passes: on two cores, that is what limits the ×2 ratio. Nothing is asserted; the target
(≥ 1.7× from 1 to 2 replicas where the cores allow) is printed beside the result.

Examples
--------
::

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --tasks 600 --in-flight 96 --pings 3000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RATIO_TARGET = 1.7
PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Upper-case it."}},
    {"step": 3, "action": "write_output"},
]}


# --------------------------------------------------------------------------- the zero-latency model


def _response(content: str, model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-scale", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }).encode()


class _Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    _cache: dict[tuple[bool, str], bytes] = {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        planning = b'"response_format"' in raw
        model = json.loads(raw).get("model", "m")
        data = self._cache.get((planning, model))
        if data is None:
            data = self._cache[(planning, model)] = _response(json.dumps(PLAN) if planning else "HELLO", model)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def serve_model() -> None:
    """``bench/scale.py --serve-model``: print the port, answer until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------- measuring


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _machine() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine so far (``/proc/stat``), every process counted."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def _cpu_of(pids: dict[str, int | None]) -> dict[str, float]:
    return {name: _cpu_seconds(pid) for name, pid in pids.items() if pid}


async def _drive(client, n: int, in_flight: int) -> tuple[float, Counter[str]]:
    """Submit ``n`` two-stage tasks keeping at most ``in_flight`` unfinished; return (seconds, outcomes)."""
    import anyio

    from tandem.messages import TERMINAL, TaskSubmit

    slots = anyio.Semaphore(in_flight)
    mine: set[str] = set()
    outcomes: Counter[str] = Counter()
    everything = anyio.Event()
    async with client.follow("*") as events, anyio.create_task_group() as tg:

        async def collect() -> None:
            while True:
                event = await events.next(timeout=60)
                if event is None:
                    raise TimeoutError(f"no task event for 60 s ({sum(outcomes.values())} of {n} ended)")
                if event.status in TERMINAL and event.task_id in mine:
                    mine.discard(event.task_id)
                    outcomes[event.status] += 1
                    slots.release()
                    if sum(outcomes.values()) == n:
                        everything.set()
                        return

        tg.start_soon(collect)
        started = time.perf_counter()
        for k in range(n):
            await slots.acquire()
            submit = TaskSubmit(task=f"Upper-case this text ({k})", inputs={3: f"hello {k}\n"}, mode="two_stage",
                                use_cache=False)
            mine.add(submit.task_id)
            await client.submit(submit)
        await everything.wait()
        return time.perf_counter() - started, outcomes


async def _pings(bus, n: int) -> list[float]:
    from tandem.messages import Ping, Pong, subjects

    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        await bus.request(subjects.ping("router"), Ping(), Pong, timeout=5)
        out.append((time.perf_counter_ns() - t) / 1e3)
    return out


async def _measure(label: str, replicas: int, secure: bool, config: Path, work: Path, args: argparse.Namespace,
                   model_pid: int) -> dict:
    import anyio

    from tandem.actors import ACTORS
    from tandem.services.bus import Bus
    from tandem.services.config import load_config
    from tandem.services.deploy import Topology, render
    from tandem.services.deploy._supervisor import Supervisor
    from tandem.services.tasks import TaskClient

    topology = Topology(replicas={name: replicas for name in ACTORS}, secure=secure, port=0)
    deployment = render(topology, work / label.replace(" ", "-").replace("×", "x"), config=load_config(config))
    lines: list[str] = []
    sup = Supervisor(deployment, topology, config_path=config, echo=lines.append, grace=5,
                     env={"TANDEM_USAGE_LOG_DISABLE": "1", "TANDEM_TRACE_FILE": str(work / "traces.jsonl")})
    result: dict = {"label": label}
    async with anyio.create_task_group() as tg:
        t0 = time.perf_counter()
        await tg.start(sup.run)
        result["startup_s"] = time.perf_counter() - t0
        bus = await Bus.connect(deployment.url, name="bench-scale", credentials=deployment.credentials.get("client"),
                                inbox_prefix=deployment.inbox_prefixes.get("client", "_INBOX"))
        try:
            client = TaskClient(bus)
            await _drive(client, min(40, args.tasks), 16)  # warm-up: connections, buckets, first spans
            pids = {**sup.pids(), "model": model_pid, "client (bench)": os.getpid()}
            before, wall0, machine0 = _cpu_of(pids), time.perf_counter(), _machine()
            seconds, outcomes = await _drive(client, args.tasks, args.in_flight)
            wall = time.perf_counter() - wall0
            after, machine1 = _cpu_of(pids), _machine()
            busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
            result["machine"] = busy / total if total else 0.0
            result.update(rate=args.tasks / seconds, seconds=seconds, outcomes=dict(outcomes), tasks=args.tasks)
            cpu: Counter[str] = Counter()
            for name, value in after.items():
                group = name.split(".")[0] if "." in name else name
                cpu[group] += value - before.get(name, 0.0)
            result["cpu"] = dict(cpu)
            result["utilisation"] = sum(cpu.values()) / (wall * (os.cpu_count() or 1))
            if args.pings:
                samples = await _pings(bus, args.pings)
                result["ping_p50_us"] = statistics.median(samples)
                result["ping_p99_us"] = sorted(samples)[int(len(samples) * 0.99) - 1]
        finally:
            await bus.close()
            sup.stop()
    return result


def _print(result: dict) -> None:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(result["cpu"].items(), key=lambda kv: -kv[1]))
    ping = (f"  ping p50 {result['ping_p50_us']:.0f} µs p99 {result['ping_p99_us']:.0f} µs"
            if "ping_p50_us" in result else "")
    print(f"{result['label']:<10} {result['rate']:7.1f} tasks/s  ({result['seconds']:.1f}s, {result['outcomes']}; "
          f"ready in {result['startup_s']:.1f}s){ping}", flush=True)
    print(f"{'':<10} CPU s: {cpu}; this deployment kept {result['utilisation']:.0%} of {os.cpu_count()} cores busy, "
          f"the whole machine was {result['machine']:.0%} busy (other processes: "
          f"{max(0.0, result['machine'] - result['utilisation']):.0%})", flush=True)
    per_task = sum(result["cpu"].values()) / result["tasks"]
    print(f"{'':<10} CPU per task {per_task * 1e3:.0f} ms over all processes: {os.cpu_count()} idle cores would cap "
          f"this at ≈ {(os.cpu_count() or 1) / per_task:.0f} tasks/s", flush=True)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="tandem-scale-"))
    model = subprocess.Popen([sys.executable, __file__, "--serve-model"], stdout=subprocess.PIPE, text=True)
    try:
        assert model.stdout is not None
        port = int(model.stdout.readline())
        config = work / "config.yaml"
        config.write_text(f"""
nats: {{request_timeout_s: 60}}
providers: {{zero: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", gen_ai_provider: openai}}}}
models: {{m: {{provider: zero, model: m, structured_output: json_schema}}}}
tiers: {{cheap: [m], standard: [m], heavy_reasoning: [m]}}
tasks: {{planning: heavy_reasoning, single_stage: standard, manual_transform: cheap, choice: cheap}}
""")
        print(f"{args.tasks} two-stage tasks, ≤ {args.in_flight} in flight, zero-latency model; "
              f"{os.cpu_count()} cores; files in {work}", flush=True)
        results = []
        for label, replicas, secure in (("secure ×1", 1, True), ("secure ×2", 2, True), ("open ×1", 1, False)):
            if label == "open ×1" and args.skip_open:
                continue
            results.append(await _measure(label, replicas, secure, config, work, args, model.pid))
            _print(results[-1])
    finally:
        model.kill()
        model.wait()
    one, two = results[0], results[1]
    ratio = two["rate"] / one["rate"]
    print(f"\nscale-out ×1 → ×2 replicas: {ratio:.2f}× tasks/s (target ≥ {RATIO_TARGET}× where the cores allow)")
    if ratio < RATIO_TARGET:
        ours, machine = two["utilisation"], two["machine"]
        if machine > 0.85:
            why = (f"CPU: the machine's {os.cpu_count()} cores were {machine:.0%} busy during ×2 ({ours:.0%} this "
                   f"deployment, {max(0.0, machine - ours):.0%} other processes); the extra replicas only share them")
        else:
            why = ("not CPU: a serial stage (the busiest process under CPU s) or the client's --in-flight bound "
                   f"(the machine was {machine:.0%} busy)")
        print(f"  limited by {why}")
    if len(results) > 2 and "ping_p50_us" in one:
        secure_p50, open_p50 = one["ping_p50_us"], results[2]["ping_p50_us"]
        print(f"hop (client → router ping) p50: secure {secure_p50:.0f} µs, open {open_p50:.0f} µs: "
              f"{secure_p50 - open_p50:+.0f} µs ({secure_p50 / open_p50:.2f}×) for authenticated connections; "
              f"tasks/s secure/open {one['rate'] / results[2]['rate']:.2f}×")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve-model"]:
        serve_model()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per deployment (default 400)")
    parser.add_argument("--in-flight", type=int, default=64, help="most unfinished tasks at a time (default 64)")
    parser.add_argument("--pings", type=int, default=2000, help="sequential pings for the hop cost (default 2000)")
    parser.add_argument("--skip-open", action="store_true", help="skip the open-server deployment")
    import anyio

    anyio.run(main, parser.parse_args())
