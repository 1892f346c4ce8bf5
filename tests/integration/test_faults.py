"""Fault tolerance over real processes on loopback (issue 15, fault tests 1–3).

Each test runs a whole deployment under ``tandem up``'s supervisor — nats-server node(s) and
every actor replica as its own OS process, connected with the generated credentials — and a
model stand-in over real HTTP. Then it kills something mid-run and checks that no task is
lost: every submitted task ends succeeded or with a typed error, and
submitted = succeeded + failed + cancelled + dead-lettered. The counts and recovery times are
printed (``pytest -s``), never asserted on as timings.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from tandem.messages import TERMINAL, ContextAppend, ContextAppended, ContextHistory, ContextHistoryReply, subjects
from tandem.services.bus import Bus
from tandem.services.deploy import Topology
from tandem.services.tasks import TaskClient

from .._deploy import Load, ModelServer, connect, running, write_config

SECURE = True
ONLY_TASKS = {"choice": 0, "chat": 0, "context": 0}  # the actors a task does not use


def _report(what: str, load: Load, counts, extra: str = "") -> None:
    print(f"\n{what}: submitted {len(load.ids)} = " + " + ".join(f"{counts[s]} {s}" for s in
          ("succeeded", "failed", "cancelled", "dead_lettered")) + f"; lost {counts['lost']}; "
          f"errors {dict(load.errors)} {load.samples or ''}; attempts {dict(sorted(load.attempts.items()))}" + (f"; {extra}" if extra else ""),
          flush=True)


def _assert_none_lost(load: Load, counts) -> None:
    assert sum(counts.values()) == len(load.ids)
    assert counts["lost"] == 0
    assert set(counts) <= TERMINAL, counts  # nothing left pending or running
    assert counts["succeeded"] + counts["failed"] + counts["cancelled"] + counts["dead_lettered"] == len(load.ids)
    failed = counts["failed"] + counts["dead_lettered"]
    assert sum(load.errors.values()) >= failed and all(load.errors), load.errors  # each failure has a typed code


async def _wait_ended(load: Load, n: int, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while load.ended < n:
            await anyio.sleep(0.02)


@pytest.mark.parametrize("victim", ["executor", "task"])
async def test_sigkill_of_one_of_two_replicas_mid_run_loses_no_task(tmp_path: Path, victim: str) -> None:
    model = ModelServer(delay=0.01)
    config = write_config(tmp_path / "config.yaml", model.url, ack_wait_s=2)
    topology = Topology(replicas={**ONLY_TASKS, victim: 2}, secure=SECURE, port=0)
    try:
        async with running(tmp_path / "up", topology, config) as sup:
            bus = await connect(sup.deployment)
            load = Load(TaskClient(bus))
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(load.follow)
                    started = time.perf_counter()
                    tg.start_soon(load.submit, 300)
                    await _wait_ended(load, 60)
                    pid = sup.kill(f"{victim}.2")  # SIGKILL; the supervisor starts it again
                    killed_at = time.perf_counter()
                    in_flight = len(load.ids) - load.ended
                    while len(load.ids) < 300:
                        await anyio.sleep(0.05)
                    await load.wait_all(120)
                    tg.cancel_scope.cancel()
                counts = await load.verify()
                with anyio.fail_after(60):  # the supervisor started the killed replica again
                    while not sup.processes[f"{victim}.2"].is_ready.is_set():
                        await anyio.sleep(0.1)
                starts = sup.processes[f"{victim}.2"].starts
            finally:
                await bus.close()
    finally:
        model.close()
    assert starts == 2
    _report(f"SIGKILL {victim}.2 (pid {pid}) with {in_flight} tasks not yet ended", load, counts,
            f"last task ended {max(load.done_at.values()) - killed_at:.1f}s after the kill, "
            f"whole run {max(load.done_at.values()) - started:.1f}s; model calls {dict(model.calls)}")
    _assert_none_lost(load, counts)
    assert counts["succeeded"] >= 60


async def _append(bus: Bus, session: str, content: str) -> None:
    await bus.request(subjects.CONTEXT_APPEND, ContextAppend(session=session, role="user", content=content),
                      ContextAppended, timeout=30)


async def _history(bus: Bus, session: str) -> list[str]:
    reply = await bus.request(subjects.CONTEXT_HISTORY, ContextHistory(session=session), ContextHistoryReply,
                              timeout=30)
    return [e.content for e in reply.messages]


async def test_nats_server_restart_mid_run_actors_reconnect_and_queued_tasks_resume(tmp_path: Path) -> None:
    model = ModelServer(delay=0.1)
    config = write_config(tmp_path / "config.yaml", model.url, ack_wait_s=2, concurrency=8)
    topology = Topology(replicas={"choice": 0, "chat": 0}, secure=SECURE, port=0)
    try:
        async with running(tmp_path / "up", topology, config) as sup:
            bus = await connect(sup.deployment)
            chat = await connect(sup.deployment, "chat")  # the conversation context, as the chat actor reads it
            load = Load(TaskClient(bus))
            try:
                for n in range(3):
                    await _append(chat, "restart-1", f"message {n}")
                async with anyio.create_task_group() as tg:
                    await tg.start(load.follow)
                    await load.submit(150)
                    await _wait_ended(load, 16)
                    await load.poll()  # which tasks are still queued (pending) right before the restart
                    queued = [i for i in load.ids if load.status[i] == "pending"]
                    down_at = time.perf_counter()
                    sup.kill("nats.1", signal.SIGTERM, restart=False)
                    await sup.wait_exited("nats.1")
                    ended_before = load.ended
                    await anyio.sleep(1.0)
                    await sup.resume("nats.1")  # same config, same JetStream store
                    up_at = time.perf_counter()
                    with anyio.fail_after(60):
                        while not any(t > up_at for t in load.done_at.values()):
                            await anyio.sleep(0.05)
                    first_after = min(t for t in load.done_at.values() if t > up_at)
                    await load.wait_all(120)
                    tg.cancel_scope.cancel()
                counts = await load.verify()
                history = await _history(chat, "restart-1")
                await _append(chat, "restart-1", "after the restart")
                history_after = await _history(chat, "restart-1")
            finally:
                await bus.close()
                await chat.close()
            restarts = {name: p.starts - 1 for name, p in sup.processes.items() if p.kind == "actor"}
    finally:
        model.close()
    last = max(load.done_at.values())
    _report("nats-server restart", load, counts,
            f"{ended_before} ended before the restart, {len(queued)} queued at it; server down {up_at - down_at:.1f}s; "
            f"first task ended {first_after - up_at:.2f}s after the server was back; all ended {last - up_at:.1f}s "
            f"after it; actor processes restarted: {sum(restarts.values())}")
    _assert_none_lost(load, counts)
    assert history == ["message 0", "message 1", "message 2"]
    assert history_after[-1] == "after the restart" and len(history_after) == 4
    assert sum(restarts.values()) == 0  # the actors reconnected by themselves: no process was restarted
    not_resumed = {i: load.status[i] for i in queued if load.status[i] != "succeeded"}
    assert not not_resumed, (not_resumed, load.samples)  # every queued task resumed and succeeded


async def test_cluster_node_killed_mid_run_clients_fail_over_and_state_is_intact(tmp_path: Path) -> None:
    model = ModelServer(delay=0.02)
    config = write_config(tmp_path / "config.yaml", model.url, ack_wait_s=2, concurrency=16)
    topology = Topology(replicas={"choice": 0, "chat": 0, "executor": 2, "task": 2}, cluster=3, secure=SECURE, port=0)
    try:
        async with running(tmp_path / "up", topology, config) as sup:
            assert sup.deployment.jetstream_replicas == 3
            bus = await connect(sup.deployment)
            chat = await connect(sup.deployment, "chat")
            load = Load(TaskClient(bus))
            try:
                for n in range(3):
                    await _append(chat, "cluster-1", f"message {n}")
                async with anyio.create_task_group() as tg:
                    await tg.start(load.follow)
                    await load.submit(150)
                    await _wait_ended(load, 30)
                    before = {i: (await load.client.get(i, resolve=False)) for i in list(load.done_at)}
                    victim = "nats.1"
                    sup.kill(victim, restart=False)  # SIGKILL, and it stays down
                    killed_at = time.perf_counter()
                    await sup.wait_exited(victim)
                    await load.wait_all(180)
                    tg.cancel_scope.cancel()
                counts = await load.verify()
                after = {i: (await load.client.get(i, resolve=False)) for i in before}
                history = await _history(chat, "cluster-1")
                connected = bus.nc.connected_url.netloc if bus.nc.connected_url else "?"
            finally:
                await bus.close()
                await chat.close()
    finally:
        model.close()
    _report(f"cluster: SIGKILL {victim}", load, counts,
            f"{len(before)} ended before the kill; all ended {max(load.done_at.values()) - killed_at:.1f}s after it; "
            f"the test client is now on {connected}")
    _assert_none_lost(load, counts)
    assert all(after[i].status == s.status and after[i].result == s.result for i, s in before.items())  # KV intact
    assert history == ["message 0", "message 1", "message 2"]
    assert counts["succeeded"] == len(load.ids), load.samples  # every task completed through the fail-over
