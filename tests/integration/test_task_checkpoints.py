"""Checkpoints and the end of a task over a real nats-server, as the task actor and the executor exchange them.

* the task actor has one checkpoint subscription for every task it runs; a checkpoint for a task that does
  not run there is answered ``not_found`` (the executor goes on, as when nobody listened);
* after an instant step (``read_input``) followed by a built-in command, the executor holds the checkpoint:
  the command's checkpoint covers both; a command that goes to a worker thread sends it first;
* before a model step the executor holds the checkpoint of the steps before it (the model step's checkpoint, or
  the reply, covers them) and sends it only when the model takes longer than
  :data:`~tandem.actors.executor.HELD_CHECKPOINT_S`;
* a terminal task event carries the stored final state;
* a task running longer than ``ack_wait`` is kept in progress (one heartbeat loop for every delivery): it runs
  once, never redelivered.
"""

from __future__ import annotations

import json

import anyio
import httpx
import msgspec
import pytest
from tandem.actors import RouterActor, TaskActor
from tandem.actors import executor as executor_actor
from tandem.messages import (
    Ack,
    ExecuteReply,
    ExecuteRequest,
    ExecutionPlan,
    RunCheckpoint,
    StepCheckpoint,
    TaskSubmit,
    decoder,
    subjects,
)
from tandem.services import textcmd
from tandem.services.bus import Bus
from tandem.services.config import TaskLoopConfig
from tandem.services.errors import RemoteError
from tandem.services.runtime import start_actors
from tandem.services.tasks import Inbox, TaskClient

from ..conftest import chat_response, make_config

DOC = "b\na\n"
BUILT_INS = decoder(ExecutionPlan).decode(b'''{"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
    {"step": 3, "action": "spawn_command", "params": {"cmd": "tr", "args": ["a-z", "A-Z"]}},
    {"step": 4, "action": "write_output"}]}''')


async def test_a_checkpoint_for_a_task_not_running_here_is_answered_not_found(bus: Bus) -> None:
    actor = TaskActor(bus, make_config())
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        cp = StepCheckpoint(task_id="gone", checkpoint=RunCheckpoint(next_index=1), correlation_id="gone")
        with pytest.raises(RemoteError) as caught:
            await bus.request(actor.checkpoint_subject(None).replace("*", "gone"), cp, Ack, timeout=10)
        assert caught.value.code == "not_found"
        tg.cancel_scope.cancel()


WITH_MODEL = decoder(ExecutionPlan).decode(b'''{"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
    {"step": 3, "action": "manual_transform", "params": {"instructions": "Upper-case it."}},
    {"step": 4, "action": "write_output"}]}''')


async def _checkpoints_of_a_run(bus: Bus, plan: ExecutionPlan = BUILT_INS, model_s: float | None = None,
                                ) -> tuple[ExecuteReply, list[list[int]]]:
    """Run ``plan`` on the executor with a checkpoint subject (and a router whose model answers after
    ``model_s`` seconds, when given); return the reply and the steps each checkpoint covered, in order."""
    inbox = Inbox(64)
    sub = await bus.subscribe("test.checkpoints.t1", cb=inbox.put, direct=inbox.offer)

    async def model(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(model_s or 0)
        text = json.loads(request.content)["messages"][-1]["content"].split("Text:\n", 1)[-1]
        return httpx.Response(200, json=chat_response(text.upper()))

    actors = ["executor"] if model_s is None else ["router", "executor"]
    factories = {"router": lambda b, c: RouterActor(b, c, transport=httpx.MockTransport(model))}
    try:
        async with start_actors(bus, make_config(), actors, factories=factories):
            reply = await bus.request(subjects.EXECUTOR_EXECUTE, ExecuteRequest(
                plan=plan, inputs={3: DOC}, task="sort, upper-case", checkpoint_subject="test.checkpoints.t1",
                correlation_id="t1"), ExecuteReply, timeout=20)
            await bus.flush()
    finally:
        await bus.unsubscribe(sub)
        inbox.close()
    seen = [[s.step for s in decoder(StepCheckpoint).decode(msg.data).checkpoint.steps] async for msg in inbox]
    return reply, seen


async def test_a_read_inputs_checkpoint_goes_with_the_quick_command_after_it(bus: Bus) -> None:
    reply, seen = await _checkpoints_of_a_run(bus)
    assert reply.outputs[0].text == "A\nB\n"
    # step 1's is held for step 2's, which covers both; step 3 is followed by write_output: the reply covers it
    assert seen == [[1, 2]]


async def test_a_command_that_goes_to_a_thread_sends_the_held_checkpoint_first(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textcmd, "INLINE_MAX_CHARS", 0)  # every command runs in a worker thread
    reply, seen = await _checkpoints_of_a_run(bus)
    assert reply.outputs[0].text == "A\nB\n"
    assert seen == [[1], [1, 2]]  # step 1 announced while step 2 runs; nothing held when step 3 starts


async def test_the_checkpoint_before_a_quick_model_step_goes_with_the_reply(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_actor, "HELD_CHECKPOINT_S", 30.0)  # quick, even on a loaded machine
    reply, seen = await _checkpoints_of_a_run(bus, WITH_MODEL, model_s=0)
    assert reply.outputs[0].text == "A\nB\n" and [s.step for s in reply.steps] == [1, 2, 3, 4]
    assert seen == []  # steps 1-2 held for the model step; it is followed by write_output: the reply covers all


async def test_a_slow_model_step_sends_the_held_checkpoint_while_it_runs(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_actor, "HELD_CHECKPOINT_S", 0.05)
    reply, seen = await _checkpoints_of_a_run(bus, WITH_MODEL, model_s=1.0)
    assert reply.outputs[0].text == "A\nB\n"
    assert seen == [[1, 2]]  # sent while the model worked, announced then as before


async def test_the_terminal_event_carries_the_stored_final_state(bus: Bus) -> None:
    async with start_actors(bus, make_config(), ["executor", "task"]):
        client = TaskClient(bus)
        submit = TaskSubmit(task="sort", inputs={3: DOC}, plan=BUILT_INS)
        events = []
        final = await client.run(submit, on_event=lambda e: _append(events, e))
        stored = await client.get(submit.task_id)
    assert final == stored and final.status == "succeeded"
    assert final.result is not None and final.result.outputs[0].text == "A\nB\n"
    ends = [e for e in events if e.kind == "succeeded"]
    assert len(ends) == 1 and ends[0].state == stored
    assert all(e.state is None for e in events if e.kind != "succeeded")


async def _append(events: list, event: object) -> None:
    events.append(event)


async def test_a_task_longer_than_ack_wait_is_kept_in_progress_and_runs_once(bus: Bus) -> None:
    calls: list[int] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        await anyio.sleep(2.5)  # 2.5 ack_waits: without heartbeats JetStream would redeliver it meanwhile
        body = json.loads(request.content)
        return httpx.Response(200, json=chat_response("DONE", model=body["model"]))

    config = msgspec.structs.replace(make_config(), task=TaskLoopConfig(ack_wait_s=1.0))
    model_step = decoder(ExecutionPlan).decode(b'''{"version": "1.0", "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
        {"step": 2, "action": "manual_transform", "params": {"instructions": "Rewrite it."}},
        {"step": 3, "action": "write_output"}]}''')
    factories = {"router": lambda b, c: RouterActor(b, c, transport=httpx.MockTransport(slow))}
    async with start_actors(bus, config, ["router", "executor", "task"], factories=factories):
        final = await TaskClient(bus).run(TaskSubmit(task="rewrite", inputs={3: DOC}, plan=model_step))
    assert final.status == "succeeded" and final.attempts == 1
    assert final.result is not None and final.result.outputs[0].text == "DONE"
    assert len(calls) == 1


async def test_steps_announced_from_a_checkpoint_are_traced_under_the_task(
        bus: Bus, spans, monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower of a task's checkpoints starts with the first one (nats-py's read loop hands it over); its
    events still hang under the task's span, in the task's trace."""
    monkeypatch.setattr(executor_actor, "HELD_CHECKPOINT_S", 0.01)

    async def model(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.5)  # steps 1-2 are announced from their checkpoint while the model works
        text = json.loads(request.content)["messages"][-1]["content"].split("Text:\n", 1)[-1]
        return httpx.Response(200, json=chat_response(text.upper()))

    factories = {"router": lambda b, c: RouterActor(b, c, transport=httpx.MockTransport(model))}
    async with start_actors(bus, make_config(), ["router", "executor", "task"], factories=factories):
        events: list = []
        final = await TaskClient(bus).run(TaskSubmit(task="sort, upper-case", inputs={3: DOC}, plan=WITH_MODEL),
                                          on_event=lambda e: _append(events, e))
    assert final.status == "succeeded" and final.result is not None and final.result.outputs[0].text == "A\nB\n"
    assert [e.step.step for e in events if e.kind == "step"] == [1, 2, 3, 4]
    finished = spans.get_finished_spans()
    task = next(s for s in finished if s.name == "invoke_agent task" and s.kind.name == "INTERNAL")
    steps = [s for s in finished if s.name == "send tandem.events.task.{kind}.{task_id}"
             and s.attributes.get("messaging.destination.name", "").startswith("tandem.events.task.step.")]
    assert len(steps) == 4
    assert {s.context.trace_id for s in steps} == {task.context.trace_id}
    assert all(s.parent is not None and s.parent.span_id == task.context.span_id for s in steps)
    # the task's span hangs under the delivery's process span, which hangs under the client's send span
    delivery = next(s for s in finished if s.name == "process tandem.task.submit"
                    and s.attributes.get("messaging.consumer.group.name") == subjects.TASK_CONSUMER)
    sent = next(s for s in finished if s.name == "send tandem.task.submit")
    assert task.parent is not None and task.parent.span_id == delivery.context.span_id
    assert delivery.parent is not None and delivery.parent.span_id == sent.context.span_id
    assert delivery.kind.name == "CONSUMER" and delivery.attributes["messaging.message.id"] == final.task_id
    assert delivery.status.status_code.name == "UNSET"
    client = next(s for s in finished if s.name == "invoke_agent task" and s.kind.name == "CLIENT")
    assert sent.kind.name == "PRODUCER" and sent.parent is not None and sent.parent.span_id == client.context.span_id
    assert sent.attributes["messaging.message.id"] == final.task_id
    assert sent.attributes["messaging.message.body.size"] > 0
