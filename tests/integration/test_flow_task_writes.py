"""The task actor's state writes per task over a real nats-server: folded, with the same states and resume points.

* a new plan is recorded with the status it runs in (one write, not a "planning + plan" one first); the
  ``planning`` status is recorded only for a planner that takes longer than
  :data:`~tandem.actors._task_flow.PLANNING_RECORD_AFTER_S` (a model writing a plan);
* a model step's checkpoint is stored before the executor goes on to a step that does work; after one
  followed only by instant steps (``write_output``) the executor sends none: its reply comes at once, and the
  task's final write stores what a checkpoint would have;
* a built-in step's checkpoint is stored after :data:`~tandem.actors.task.CHECKPOINT_QUIET_S` without a newer
  one, or by the task's final write, which carries the newest checkpoint as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from tandem.actors import PlannerActor, RouterActor
from tandem.actors import _task_flow as task_flow
from tandem.actors import task as task_actor
from tandem.actors._task_flow import run_flow
from tandem.actors.task import TaskStore
from tandem.messages import RunCheckpoint, StepOutcome, TaskState, TaskSubmit
from tandem.services.bus import Bus
from tandem.services.errors import BusError
from tandem.services.runtime import start_actors
from tandem.services.tasks import TaskClient

from ..conftest import chat_response, make_config

DOC = "b\na\n"
PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
    {"step": 3, "action": "manual_transform", "params": {"instructions": "Upper-case it."}},
    {"step": 4, "action": "write_output"},
]}


MODEL_FIRST = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Upper-case it."}},
    {"step": 3, "action": "spawn_command", "params": {"cmd": "sort"}},
    {"step": 4, "action": "write_output"},
]}


class Model:
    """Planning calls get :data:`PLAN` (or ``plan``); the transform waits on ``release`` (when set), then upper-cases."""

    def __init__(self, plan: dict | None = None) -> None:
        self.plan = plan or PLAN
        self.release: anyio.Event | None = None
        self.planning = anyio.Event()  # set by the first planning call
        self.planning_s = 0.0  # how long a planning call takes
        self.transforms = 0
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "response_format" in body:
            self.planning.set()
            await anyio.sleep(self.planning_s)
            return httpx.Response(200, json=chat_response(json.dumps(self.plan), model=body["model"]))
        self.transforms += 1
        if self.release is not None:
            await self.release.wait()
        text = body["messages"][-1]["content"].split("Text:\n", 1)[-1]
        return httpx.Response(200, json=chat_response(text.upper(), model=body["model"]))


@asynccontextmanager
async def tandem(bus: Bus, model: Model) -> AsyncIterator[None]:
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=[])}
    async with start_actors(bus, make_config(), ["planner", "router", "executor", "task"], factories=factories):
        yield


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[TaskState]:
    """Every task state the task actor stores with :meth:`TaskStore.update`, in order."""
    stored: list[TaskState] = []
    update = TaskStore.update

    async def spy(self: TaskStore, task_id: str, change: Callable, **options: object) -> TaskState | None:
        new = await update(self, task_id, change, **options)
        if new is not None and (not stored or stored[-1] is not new):
            stored.append(new)
        return new

    monkeypatch.setattr(TaskStore, "update", spy)
    return stored


def submit() -> TaskSubmit:
    return TaskSubmit(task="Sort these lines, then upper-case them", inputs={3: DOC}, mode="two_stage",
                      use_cache=False)


def steps(state: TaskState) -> int:
    return len(state.checkpoint.steps) if state.checkpoint else 0


async def test_a_two_stage_task_writes_its_plan_with_running_and_its_last_checkpoint_with_the_end(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 30.0)  # a loaded machine never records planning
    monkeypatch.setattr(task_actor, "CHECKPOINT_QUIET_S", 5.0)  # a loaded machine never stores one early
    reads: list[str] = []
    get = TaskStore.get

    async def counted(self: TaskStore, task_id: str) -> object:
        reads.append(task_id)
        return await get(self, task_id)

    monkeypatch.setattr(TaskStore, "get", counted)
    created: list[str] = []
    create = TaskStore.create

    async def pending(self: TaskStore, state: TaskState) -> bool:
        created.append(state.task_id)
        return await create(self, state)

    monkeypatch.setattr(TaskStore, "create", pending)
    async with tandem(bus, Model()):
        client = TaskClient(bus)
        for _ in range(4):
            await client.run(submit())
        writes.clear()
        created.clear()
        final = await client.run(submit())
    # an idle replica waiting for a task takes it at once: its take creates the state (no read first), and the
    # submission's pending write, which waited for that, is not made (it reads the state only when the stream
    # delivers the task before the submission's copy reached the actor)
    assert len(reads) < 5, reads
    assert created == [], created
    assert final.status == "succeeded" and final.result is not None
    assert final.result.outputs[0].text == "A\nB\n"
    assert steps(final) == 4 and final.checkpoint.next_index == 4  # the newest checkpoint, as before
    assert [(w.status, w.plan is not None, steps(w)) for w in writes] == [
        ("pending", False, 0),  # taken: the state created by the take (no pending write before it)
        ("running", True, 0),  # the plan goes in with the status it runs in (planned at once: no planning write)
        ("succeeded", True, 4),  # the model step is followed only by write_output: its checkpoint comes with the end
    ]
    assert writes[1].plan_fingerprint and writes[1].plan == final.plan
    assert writes[1].result is not None and writes[1].result.complexity > 0  # what the planning write carried


async def test_a_model_steps_checkpoint_is_stored_before_a_step_that_does_work(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 30.0)  # a loaded machine never records planning
    monkeypatch.setattr(task_actor, "CHECKPOINT_QUIET_S", 5.0)
    async with tandem(bus, Model(MODEL_FIRST)):
        final = await TaskClient(bus).run(submit())
    assert final.status == "succeeded" and final.result is not None
    assert final.result.outputs[0].text == "A\nB\n"
    assert steps(final) == 4 and final.checkpoint.next_index == 4
    assert [(w.status, steps(w)) for w in writes] == [
        ("pending", 0), ("running", 0),
        ("running", 2),  # after the model step, before the executor goes on to sort
        ("succeeded", 4)]


async def test_every_step_is_announced_once_in_order(bus: Bus) -> None:
    """Steps are announced from checkpoints and, for the last ones (no checkpoint is sent after them), from the
    executor's reply."""
    for plan in (PLAN, MODEL_FIRST):
        seen: list = []
        async with tandem(bus, Model(plan)):
            final = await TaskClient(bus).run(submit(), on_event=lambda e: _append(seen, e))
        assert final.status == "succeeded"
        assert [e.step.step for e in seen if e.kind == "step" and e.step is not None] == [1, 2, 3, 4]
        assert {(e.status, e.total_steps) for e in seen if e.kind == "step"} == {("running", 4)}


async def test_the_planned_event_still_says_planning(bus: Bus) -> None:
    async with tandem(bus, Model()):
        client = TaskClient(bus)
        seen = []
        final = await client.run(submit(), on_event=lambda e: _append(seen, e))
    assert final.status == "succeeded"
    assert [(e.kind, e.status) for e in seen if e.kind in ("planned", "succeeded")] == [
        ("planned", "planning"), ("succeeded", "succeeded")]


async def test_a_planner_that_takes_a_while_has_the_planning_status_recorded(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 0.05)
    monkeypatch.setattr(task_actor, "CHECKPOINT_QUIET_S", 5.0)
    model = Model()
    model.planning_s = 0.5
    async with tandem(bus, model):
        client = TaskClient(bus)
        task = submit()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run, task)
            with anyio.fail_after(10):
                while not writes or writes[-1].status != "planning":
                    await anyio.sleep(0.01)
            stored = await client.get(task.task_id)  # what a watcher reads while the model plans
            assert stored.status == "planning" and stored.result is not None and stored.result.complexity > 0
        final = await client.get(task.task_id)
    assert final.status == "succeeded" and final.result is not None and final.result.outputs[0].text == "A\nB\n"
    assert [w.status for w in writes] == ["pending", "planning", "running", "succeeded"]


async def test_a_failed_planner_has_the_planning_status_recorded_before_the_task_ends(
        bus: Bus, writes: list[TaskState]) -> None:
    model = Model()
    model.plan = {"version": "1.0", "workflow": []}  # invalid every time: planning_failed, single stage instead
    async with tandem(bus, model):
        final = await TaskClient(bus).run(submit())
    assert final.status == "succeeded" and final.result is not None and final.result.mode == "single_stage"
    assert final.result.fallback.startswith("planning failed")
    assert [w.status for w in writes] == ["pending", "planning", "running", "succeeded"]


async def _append(seen: list, event: object) -> None:
    seen.append(event)


async def test_a_built_in_steps_checkpoint_is_stored_once_no_newer_one_comes(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_actor, "CHECKPOINT_QUIET_S", 0.05)
    model = Model()
    model.release = anyio.Event()
    async with tandem(bus, model):
        client = TaskClient(bus)
        task = submit()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.run, task)
            with anyio.fail_after(10):  # the model step runs; steps 1 and 2 are stored meanwhile
                while model.transforms == 0 or not writes or steps(writes[-1]) < 2:
                    await anyio.sleep(0.01)
            stored = await client.get(task.task_id)
            assert stored.status == "running" and steps(stored) == 2 and stored.checkpoint.next_index == 2
            model.release.set()
        final = await client.get(task.task_id)
    assert final.status == "succeeded" and steps(final) == 4
    assert [steps(w) for w in writes if w.status == "running"] == [0, 2]  # the model step's comes with the end


def test_the_newest_checkpoint_wins() -> None:
    """What the final write takes along never replaces a stored checkpoint covering as many steps."""

    def cp(n: int) -> RunCheckpoint:
        return RunCheckpoint(next_index=n, steps=[StepOutcome(step=i + 1, action="read_input", status="ok")
                                                  for i in range(n)])

    stored, kept = cp(3), cp(3)
    assert task_actor._newest(stored, kept) is stored
    assert task_actor._newest(cp(3), cp(2)).next_index == task_actor._newest(cp(2), cp(3)).next_index == 3
    assert task_actor._newest(None, cp(1)).next_index == task_actor._newest(cp(1), None).next_index == 1


class FailingHost:
    """A flow host whose state writes fail (the bucket away for good); the flow never gets further than its
    first write, so it needs nothing else of a :class:`~tandem.actors._task_flow.FlowHost`."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.config = make_config()

    async def transition(self, state: TaskState, **changes: object) -> TaskState:
        raise BusError("JetStream KV 'tandem_tasks' unavailable")


async def test_a_failed_planning_write_fails_the_flow_with_its_own_error(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 0.0)  # the status is written while planning
    model = Model()
    async with tandem(bus, model):
        task = submit()
        with pytest.raises(BusError, match="unavailable"):
            host = FailingHost(bus)
            await run_flow(host, TaskState(task_id=task.task_id), task, task.inputs)  # type: ignore[arg-type]


async def test_run_takes_the_final_state_from_its_write_not_a_read_after_the_end(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    get = TaskClient.get

    async def counted(self: TaskClient, task_id: str, **options: object) -> TaskState:
        reads.append(task_id)
        return await get(self, task_id, **options)

    monkeypatch.setattr(TaskClient, "get", counted)
    async with tandem(bus, Model()):
        client = TaskClient(bus)
        final = await client.run(submit())
        assert reads == []
        assert final == await client.get(final.task_id)  # the state stored, as a read finds it
    assert final.status == "succeeded" and final.result is not None and final.result.outputs[0].text == "A\nB\n"


async def test_a_task_taken_as_it_was_submitted_starts_while_its_state_is_created(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    """The take of a task nobody has stored yet is written while the flow starts; the task's later writes wait
    for it, in order."""
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 30.0)  # a loaded machine never records planning
    model = Model()
    update = TaskStore._update
    taken_as_submitted: list[str] = []

    async def held(self: TaskStore, task_id: str, change: Callable, absent: bool) -> TaskState | None:
        if absent:
            taken_as_submitted.append(task_id)
            with anyio.fail_after(10):
                await model.planning.wait()  # the planner is asked before the take is stored
        return await update(self, task_id, change, absent)

    monkeypatch.setattr(TaskStore, "_update", held)
    async with tandem(bus, model):
        for _ in range(3):
            writes.clear()
            final = await TaskClient(bus).run(submit())
            assert final.status == "succeeded" and final.worker and final.attempts == 1 and final.trace_id
            assert [w.status for w in writes] == ["pending", "running", "succeeded"]
    # an idle replica sees the submission, then gets it from the stream (the other order, rarer, reads first)
    assert taken_as_submitted


async def test_the_plan_is_recorded_while_the_executor_runs_it_and_comes_first(
        bus: Bus, writes: list[TaskState], monkeypatch: pytest.MonkeyPatch) -> None:
    """The running write (the plan) is under way while the executor is asked; the model step's checkpoint is
    stored after it and the steps are announced after it (and after the planned event), as running."""
    monkeypatch.setattr(task_flow, "PLANNING_RECORD_AFTER_S", 30.0)
    monkeypatch.setattr(task_actor, "CHECKPOINT_QUIET_S", 5.0)
    model = Model(MODEL_FIRST)
    update = TaskStore._update
    held: list[int] = []

    async def slow_plan_write(self: TaskStore, task_id: str, change: Callable, absent: bool) -> TaskState | None:
        known = self.cached(task_id)
        peek = change(known[0] if known else None)
        if peek is not None and peek.status == "running" and peek.checkpoint is None:
            with anyio.fail_after(10):  # the plan's write waits until the executor has asked the model
                while model.transforms == 0:
                    await anyio.sleep(0.005)
            held.append(model.transforms)
        return await update(self, task_id, change, absent)

    monkeypatch.setattr(TaskStore, "_update", slow_plan_write)
    seen: list = []
    async with tandem(bus, model):
        final = await TaskClient(bus).run(submit(), on_event=lambda e: _append(seen, e))
    assert held == [1]
    assert final.status == "succeeded" and final.result is not None and final.result.outputs[0].text == "A\nB\n"
    assert [(w.status, steps(w)) for w in writes] == [
        ("pending", 0), ("running", 0), ("running", 2), ("succeeded", 4)]
    kinds = [e.kind for e in seen]
    assert kinds.index("planned") < kinds.index("step")
    assert {e.status for e in seen if e.kind == "step"} == {"running"}

