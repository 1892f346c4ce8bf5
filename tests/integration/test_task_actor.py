"""The task actor over a real nats-server: durable submission, cancellation, deadline, approvals, load."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import msgspec
import pytest

from tandem.actors import RouterActor, TaskActor
from tandem.messages import ExecutionPlan, TaskEvent, TaskSubmit, decoder, subjects
from tandem.services.bus import Bus
from tandem.services.config import Config, TaskLoopConfig
from tandem.services.errors import RemoteError
from tandem.services.runtime import start_actors
from tandem.services.tasks import SubmissionTooLarge, TaskClient

from ..conftest import chat_response, make_config

DOC = "# Title\n\nSome **bold** text.\n"


def plan(*steps: dict) -> ExecutionPlan:
    return decoder(ExecutionPlan).decode(json.dumps({"version": "1.0", "workflow": list(steps)}))


BUILTIN = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
               {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["-E", "s/^# (.*)/h1. \\1/"]}},
               {"step": 3, "action": "write_output"})
MODEL_STEP = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
                  {"step": 2, "action": "manual_transform", "params": {"instructions": "Rewrite it."}},
                  {"step": 3, "action": "write_output"})


class Provider:
    """An OpenAI-compatible model behind an async ``MockTransport``: answers, or hangs until cancelled."""

    def __init__(self, *, hang: bool = False, answer: str = "DONE") -> None:
        self.hang = hang
        self.answer = answer
        self.calls = 0
        self.closed = 0  # hanging requests that were cancelled (the HTTP call was dropped)
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = json.loads(request.content)
        if self.hang:
            try:
                await anyio.sleep_forever()
            finally:
                self.closed += 1
        return httpx.Response(200, json=chat_response(self.answer, model=body["model"]))


def config(**task: object) -> Config:
    return msgspec.structs.replace(make_config(), task=TaskLoopConfig(**task)) if task else make_config()


@asynccontextmanager
async def tandem(bus: Bus, provider: Provider, cfg: Config | None = None,
                 names: tuple[str, ...] = ("planner", "router", "executor", "choice", "task")) -> AsyncIterator[Config]:
    cfg = cfg or config()
    factories = {"router": lambda b, c: RouterActor(b, c, transport=provider.transport)}
    async with start_actors(bus, cfg, names, factories=factories):
        yield cfg


async def collect(bus: Bus, task_id: str, until: set[str], seconds: float = 20) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    async with TaskClient(bus).follow(task_id) as stream:
        with anyio.fail_after(seconds):
            async for event in stream:
                events.append(event)
                if event.kind in until:
                    break
    return events


async def test_submission_runs_through_the_stream_and_its_events(bus: Bus) -> None:
    async with tandem(bus, Provider()):
        client = TaskClient(bus)
        submit = TaskSubmit(task="convert", inputs={3: DOC}, plan=BUILTIN, conversation_id="conv-1")
        seen: list[TaskEvent] = []

        async def on_event(event: TaskEvent) -> None:
            seen.append(event)

        state = await client.run(submit, on_event=on_event)
    assert state.status == "succeeded" and state.result is not None
    assert state.result.outputs[0].text.startswith("h1. Title")
    assert state.attempts == 1 and len(state.trace_id) == 32
    kinds = [e.kind for e in seen]
    assert kinds[0] == "submitted" and kinds[-1] == "succeeded" and kinds.count("step") == 3
    assert all(e.task_id == submit.task_id and e.conversation_id == "conv-1" for e in seen)
    assert [e.step.step for e in seen if e.kind == "step"] == [1, 2, 3]


async def test_duplicate_submission_with_the_same_id_runs_once(bus: Bus) -> None:
    provider = Provider()
    async with tandem(bus, provider):
        client = TaskClient(bus)
        submit = TaskSubmit(task="rewrite", inputs={3: DOC}, plan=MODEL_STEP)
        first = await client.run(submit)
        await client.submit(submit)  # a retried publish: JetStream drops it (Nats-Msg-Id)
        await client.submit(submit)
        await anyio.sleep(0.5)
        again = await client.get(submit.task_id)
    assert first.status == again.status == "succeeded"
    assert provider.calls == 1 and again.attempts == 1


async def test_cancel_mid_model_call_closes_the_http_request_and_writes_nothing(bus: Bus) -> None:
    provider = Provider(hang=True)
    async with tandem(bus, provider):
        client = TaskClient(bus)
        submit = TaskSubmit(task="rewrite", inputs={3: DOC}, plan=MODEL_STEP)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run, submit)
            with anyio.fail_after(10):
                while provider.calls == 0:
                    await anyio.sleep(0.02)
            started = time.monotonic()
            state = await client.cancel(submit.task_id)
            took = time.monotonic() - started
        with anyio.fail_after(5):
            while provider.closed == 0:
                await anyio.sleep(0.02)
    assert state.status == "cancelled" and took < 1.0, took
    assert state.result is None or state.result.outputs == []
    assert provider.closed == 1  # the in-flight HTTP call to the model was dropped


async def test_a_cancelled_reply_that_overtakes_the_cancel_signal_still_records_a_cancel(bus: Bus) -> None:
    # across a cluster, the actors' "cancelled" replies (tandem.control.cancel) can reach the replica holding
    # the task before the cancel signal does: here the signal never comes, only the broadcast
    from tandem.messages import CancelWork, encode

    provider = Provider(hang=True)
    async with tandem(bus, provider):
        client = TaskClient(bus)
        submit = TaskSubmit(task="rewrite", inputs={3: DOC}, plan=MODEL_STEP)
        async with client.follow(submit.task_id) as events:
            await client.submit(submit)
            with anyio.fail_after(10):
                while provider.calls == 0:
                    await anyio.sleep(0.02)
            await bus.nc.publish(subjects.CONTROL_CANCEL, encode(CancelWork(correlation_id=submit.task_id)))
            with anyio.fail_after(10):
                async for event in events:
                    if event.kind in ("succeeded", "failed", "cancelled"):
                        break
        state = await client.get(submit.task_id)
    assert event.kind == "cancelled" and state.status == "cancelled" and state.error is None, (event, state)
    assert provider.closed == 1  # the model call was dropped


async def test_cancel_a_queued_task_and_a_finished_one(bus: Bus) -> None:
    provider = Provider(hang=True)
    async with tandem(bus, provider, config(concurrency=1)):
        client = TaskClient(bus)
        busy = TaskSubmit(task="rewrite", inputs={3: DOC}, plan=MODEL_STEP)
        queued = TaskSubmit(task="queued", inputs={3: DOC}, plan=BUILTIN)
        await client.submit(busy)
        await client.submit(queued)  # the only slot is busy: this one waits in the stream
        with anyio.fail_after(10):
            while provider.calls == 0:
                await anyio.sleep(0.02)
        # the pending state is written by the task actor's observer of the submission (_record_pending),
        # moments after the submit returns: `recorded` waits for it
        pending = await client.recorded(queued.task_id)
        assert pending.task_id == queued.task_id and pending.status == "pending"
        assert (await client.get(queued.task_id)).status == "pending"
        cancelled = await client.cancel(queued.task_id)
        assert cancelled.status == "cancelled"
        await client.cancel(busy.task_id)
        # the queued task is taken later and acked at once, untouched: the work queue empties
        with anyio.fail_after(10):
            while (await bus.jetstream.stream_info(subjects.TASK_STREAM)).state.messages:
                await anyio.sleep(0.05)
        final = await client.get(queued.task_id)
        assert final.status == "cancelled" and final.result is None
        with pytest.raises(RemoteError) as info:
            await client.cancel(queued.task_id)
        assert info.value.code == "conflict" and "already cancelled" in info.value.message
        with pytest.raises(RemoteError) as missing:
            await client.get("no-such-task")
        assert missing.value.code == "not_found"
        with anyio.fail_after(5), pytest.raises(RemoteError) as never:
            await client.recorded("no-such-task", poll=0.05, grace=0.3)  # an id never submitted: not_found after grace
        assert never.value.code == "not_found"


async def test_wait_gives_a_new_task_time_to_be_recorded_but_not_an_unknown_one(bus: Bus) -> None:
    async with tandem(bus, Provider()):
        client = TaskClient(bus)
        # wait straight after submit: the state is written once the task actor takes the task
        for _ in range(5):
            sent = await client.submit(TaskSubmit(task="convert", inputs={3: "# t\n"}, plan=BUILTIN))
            assert (await client.wait(sent.task_id)).status == "succeeded"
        with pytest.raises(RemoteError) as missing:
            await client.wait("no-such-task", grace=0.3)
        assert missing.value.code == "not_found"


async def test_deadline_fails_the_task_naming_the_step(bus: Bus) -> None:
    provider = Provider(hang=True)
    async with tandem(bus, provider):
        client = TaskClient(bus)
        submit = TaskSubmit(task="rewrite", inputs={3: DOC}, plan=MODEL_STEP, deadline=time.time() + 3)
        started = time.monotonic()
        state = await client.run(submit)
        took = time.monotonic() - started
    assert state.status == "failed" and state.error is not None
    assert state.error.code == "deadline_exceeded", state.error
    assert "step 2 manual_transform" in state.error.message
    assert took < 4.0, took
    assert provider.closed == 1


async def test_approval_answered_from_a_second_connection(bus: Bus, nats_url: str) -> None:
    async with tandem(bus, Provider()):
        client = TaskClient(bus)
        submit = TaskSubmit(task="convert", inputs={3: DOC}, plan=BUILTIN, approval="ask")
        async with client.follow(submit.task_id) as events:
            await client.submit(submit)
            async for event in events:
                if event.kind == "awaiting_approval":
                    assert "1. read fd:3" in event.question and event.plan is not None
                    break
        other = await Bus.connect(nats_url)
        try:
            reply = await TaskClient(other).answer(submit.task_id, "yes, run it")
        finally:
            await other.close()
        assert reply.decision == "approved"
        state = await client.wait(submit.task_id)
    assert state.status == "succeeded" and state.result.approval == "approved"
    assert state.result.outputs[0].text.startswith("h1. Title")


async def test_answer_to_a_task_not_awaiting_approval_is_a_conflict(bus: Bus) -> None:
    async with tandem(bus, Provider()):
        client = TaskClient(bus)
        done = await client.run(TaskSubmit(task="convert", inputs={3: DOC}, plan=BUILTIN))
        with pytest.raises(RemoteError) as info:
            await client.answer(done.task_id, "yes")
    assert info.value.code == "conflict"


async def test_malformed_submission_is_dead_lettered_and_oversize_refused(bus: Bus, nats_url: str) -> None:
    async with tandem(bus, Provider(), names=("task",)):
        dead = await bus.subscribe("tandem.events.dead_letter.task")
        await bus.flush()
        await bus.jetstream.publish(subjects.TASK_SUBMIT, b'{"type": "task_submit", "task": 5}',
                                    headers={"Nats-Msg-Id": "bad-1"})
        letter = json.loads((await dead.next_msg(timeout=10)).data)
        assert letter["subject"] == subjects.TASK_SUBMIT and "$.task" in (letter["path"] or letter["error"])
        client = TaskClient(bus, inline_input_bytes=10**9, max_submit_bytes=64 * 1024)
        with pytest.raises(SubmissionTooLarge):
            await client.submit(TaskSubmit(task="x", inputs={3: "y" * 100_000}))


async def test_large_inputs_and_results_travel_through_the_object_store(bus: Bus) -> None:
    big = "# Title\n" + "line of text\n" * 40_000  # ~500 KB: over the inline limit and the KV state limit
    async with tandem(bus, Provider(), config(inline_input_bytes=64 * 1024, max_state_bytes=128 * 1024)):
        client = TaskClient(bus, inline_input_bytes=64 * 1024)
        sent = await client.submit(TaskSubmit(task="convert", inputs={3: big}, plan=BUILTIN))
        assert sent.inputs == {} and 3 in sent.input_refs
        state = await client.wait(sent.task_id)
    assert state.status == "succeeded"
    assert state.result.outputs[0].text == big.replace("# Title", "h1. Title", 1)


async def test_an_input_ref_to_another_tasks_object_is_refused(bus: Bus) -> None:
    big = "secret input of task one\n" * 4_000
    async with tandem(bus, Provider(), config(inline_input_bytes=1024)):
        client = TaskClient(bus, inline_input_bytes=1024)
        first = await client.submit(TaskSubmit(task="convert", inputs={3: big}, plan=BUILTIN))
        assert (await client.wait(first.task_id)).status == "succeeded"
        # a second task naming the first one's input object: read only a task's own inputs
        thief = await client.submit(TaskSubmit(task="convert", input_refs={3: first.input_refs[3]}, plan=BUILTIN))
        state = await client.wait(thief.task_id)
    assert state.status == "failed" and state.error is not None
    assert state.error.code == "bad_request" and "not an input of task" in state.error.message


async def test_many_tasks_on_two_replicas_none_lost(bus: Bus) -> None:
    count = 500
    cfg = config(concurrency=16)
    replicas = {"task-a": lambda b, c: TaskActor(b, c), "task-b": lambda b, c: TaskActor(b, c)}
    async with start_actors(bus, cfg, ["executor", "task-a", "task-b"], factories=replicas):
        client = TaskClient(bus)
        workers: dict[str, int] = {}
        ended: dict[str, str] = {}
        sub = await bus.subscribe(subjects.event_task("*"))
        await bus.flush()
        submits = [TaskSubmit(task=f"t{n}", inputs={3: f"# n{n}\n"}, plan=BUILTIN) for n in range(count)]
        async with anyio.create_task_group() as tg:
            for s in submits:
                tg.start_soon(client.submit, s)
        dec = decoder(TaskEvent)
        with anyio.fail_after(120):
            async for msg in sub.messages:
                event = dec.decode(msg.data)
                if event.kind in ("succeeded", "failed", "cancelled", "dead_lettered"):
                    ended[event.task_id] = event.kind
                    if len(ended) == count:
                        break
        for s in submits:  # every task: replicas that take turns would put every 10th task on one of them
            state = await client.get(s.task_id)
            workers[state.worker] = workers.get(state.worker, 0) + 1
    by_kind = {k: sum(1 for v in ended.values() if v == k) for k in set(ended.values())}
    print(f"\n{count} submitted: {by_kind}; work per replica: {workers}")
    assert len(ended) == count and by_kind == {"succeeded": count}
    assert len(workers) == 2  # both replicas did work


async def test_a_plan_producing_5_mb_returns_it_through_the_object_store(bus: Bus) -> None:
    """Issue 10's done-when: output far above NATS's 1 MB max_payload reaches the client intact."""
    line = "x" * 99 + "\n"
    source = line * 12_800  # 1.28 MB in, doubled twice by sed: 5.12 MB out
    grow = plan({"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
                {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["s/.*/&&/"]}},
                {"step": 3, "action": "spawn_command", "params": {"cmd": "sed", "args": ["s/.*/&&/"]}},
                {"step": 4, "action": "write_output"})
    async with tandem(bus, Provider(), names=("executor", "task")):
        state = await TaskClient(bus).run(TaskSubmit(task="grow", inputs={3: source}, plan=grow))
    assert state.status == "succeeded", state.error
    text = state.result.outputs[0].text
    assert len(text) == 4 * 99 * 12_800 + 12_800 and text.startswith("x" * 396 + "\n")
