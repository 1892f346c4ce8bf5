"""The generated permissions over a real secure nats-server (issue 15, Security; fault tests 4 and 5).

* Anti-drift: every actor connects with its own nkey credential and inbox prefix, the client with
  the client's, and the whole flow runs — a two-stage task with inputs and results through the
  object store, a plan-cache hit, an approval answered by the client, a chat turn with context,
  discovery over ``$SRV``. A permission the flow needs but the declarations miss shows up as the
  server's ``Permissions Violation``, which fails the test at once (no silent timeout).
* Fault tests 4 and 5: what the client credential must not do, each refused by the server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import nats.errors
import nats.js.errors
import pytest
from tandem.actors import ACTORS, ChatActor, PlannerActor, RouterActor, supervise
from tandem.messages import (
    ChatReply,
    ChatSend,
    ChoiceContext,
    ChoiceReply,
    ChoiceRequest,
    ExecuteReply,
    ExecuteRequest,
    ExecutionPlan,
    RememberPlan,
    TaskEvent,
    TaskSubmit,
    encode,
    subjects,
)
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.deploy import Deployment, Topology, render
from tandem.services.errors import BusError, NoResponders, PayloadTooLarge, PermissionDenied, RemoteError
from tandem.services.tasks import TaskClient

from ..conftest import chat_response, make_config

PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Convert to Textile."}},
    {"step": 3, "action": "write_output"},
]}
SED_PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["-E", "s/^# (.*)/h1. \\1/"]}},
    {"step": 3, "action": "write_output"},
]}
DOC = "# Title\n\nSome **bold** text.\n"
LARGE = DOC + "x" * (600 * 1024)  # over task.inline_input_bytes and max_state_bytes: both via the object store


class Model:
    """One scripted model for every call: chat intent and replies, plans, task steps."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"intent": 0, "chat": 0, "plan": 0, "step": 0}
        self.hung = anyio.Event()  # a step whose text says HANG is in flight (and never answers)
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        system = body["messages"][0]["content"]
        if system.startswith("Classify the user's chat message"):
            kind, answer = "intent", json.dumps({"kind": "direct_response", "reasoning": "chat", "confidence": 0.9})
        elif system.startswith("You are Tandem"):
            kind, answer = "chat", "ANSWER to " + body["messages"][-1]["content"][:40]
        elif "response_format" in body:
            kind, answer = "plan", json.dumps(PLAN)
        else:
            kind, answer = "step", body["messages"][-1]["content"].split("Text:\n", 1)[-1].replace("**bold**", "*bold*")
        self.calls[kind] += 1
        if kind == "step" and "HANG" in answer:
            self.hung.set()
            await anyio.sleep_forever()  # until the task is cancelled (tandem.control.cancel reaches the router)
        return httpx.Response(200, json=chat_response(answer, model=body["model"]))


class Violations:
    """Permission errors the server sent to any connection; the first one cancels :attr:`scope`."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.scope = anyio.CancelScope()

    def watch(self, bus: Bus, user: str, *, fail_fast: bool = True) -> None:
        previous = bus.nc._error_cb

        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                self.seen.append(f"{user}: {exc}")
                if fail_fast:
                    self.scope.cancel()
            if previous is not None:
                await previous(exc)

        bus.nc._error_cb = on_error

    def count(self, text: str) -> int:
        return sum(text.lower() in v.lower() for v in self.seen)


async def _wait_port(port: int, process: Any) -> None:
    with anyio.fail_after(10):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"nats-server exited with {process.returncode}")
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def _server(deployment: Deployment) -> AsyncIterator[Deployment]:
    from tandem.services._process import child_process
    from tandem.services.bus import find_nats_server

    async with AsyncExitStack() as stack:
        for node in deployment.nodes:
            port = int(node.client_url.rsplit(":", 1)[1])
            await stack.enter_async_context(child_process(node.command(find_nats_server()),
                                                          wait_ready=lambda p, port=port: _wait_port(port, p)))
        if len(deployment.nodes) > 1:
            await _wait_jetstream(deployment)
        yield deployment


async def _wait_jetstream(deployment: Deployment) -> None:
    """Wait until the cluster places streams on all three nodes (a meta leader alone is not enough)."""
    bus = await connect(deployment, "client", replicas=deployment.jetstream_replicas)
    try:
        with anyio.fail_after(30):
            while True:
                try:  # the client may create the shared payload store, with 3 replicas
                    await bus.delete_payload(await bus.put_payload(b"ready?"))
                    return
                except (BusError, nats.errors.Error):  # no meta leader yet, or "no suitable peers for placement"
                    await anyio.sleep(0.2)
    finally:
        await bus.close()


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A nats-server running the generated secure config (one nkey user per actor and the client)."""
    async with _server(render(Topology(port=0, secure=True), tmp_path / "deploy")) as deployment:
        yield deployment


async def connect(deployment: Deployment, user: str, violations: Violations | None = None, **options: Any) -> Bus:
    bus = await Bus.connect(deployment.url, name=user, credentials=deployment.credentials[user],
                            inbox_prefix=deployment.inbox_prefixes[user], **options)
    if violations is not None:
        violations.watch(bus, user)
    return bus


@asynccontextmanager
async def actors(deployment: Deployment, config: Config, violations: Violations,
                 factories: dict[str, Callable[[Bus, Config], Any]], names: Any = ACTORS,
                 **options: Any) -> AsyncIterator[None]:
    """Actors ``names`` (all) in this process, each on its own connection with its own credential."""
    table = {**ACTORS, **factories}
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        for name in names:
            make = table[name]
            bus = await connect(deployment, name, violations, replicas=deployment.jetstream_replicas, **options)
            stack.push_async_callback(bus.close)
            await tg.start(lambda task_status, m=make, b=bus: supervise(lambda: m(b, config), task_status=task_status))
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("cluster", [1, 3])
async def test_the_whole_flow_runs_with_the_generated_permissions(tmp_path: Path, cluster: int) -> None:
    model = Model()
    config = make_config(complexity_threshold=0.0)
    async with _server(render(Topology(port=0, cluster=cluster), tmp_path / "deploy", config=config)) as secure:
        await _whole_flow(secure, config, model)


async def _whole_flow(secure: Deployment, config: Config, model: Model) -> None:
    violations = Violations()
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=[]),  # the scripted plan, not a recipe
                 "chat": lambda b, c: ChatActor(b, c, approval="none")}
    done: dict[str, Any] = {}
    with violations.scope:
        async with actors(secure, config, violations, factories):
            client = await connect(secure, "client", violations, replicas=secure.jetstream_replicas)
            try:
                tasks = TaskClient(client)
                done["first"] = await tasks.run(TaskSubmit(task="Convert this Markdown to Textile", inputs={3: DOC},
                                                           input_types={3: "markdown"}, mode="two_stage"))
                done["cached"] = await tasks.run(TaskSubmit(task="  convert this markdown   to TEXTILE",
                                                            inputs={3: "# x\n"}, input_types={3: "markdown"},
                                                            mode="two_stage"))
                questions: list[str] = []

                async def approve(question: str) -> str:
                    questions.append(question)
                    return "yes, run it"

                done["approved"] = await tasks.run(TaskSubmit(task="Convert this Markdown to Textile please",
                                                              inputs={3: DOC}, mode="two_stage", approval="ask",
                                                              use_cache=False), approver=approve)
                done["questions"] = questions
                done["large"] = await tasks.run(TaskSubmit(task="Make the headings Textile", inputs={3: LARGE},
                                                           plan=msgspec.convert(SED_PLAN, ExecutionPlan)))
                done["large_ref"] = (await tasks.get(done["large"].task_id, resolve=False)).result_ref
                hanging = TaskSubmit(task="Convert this Markdown to Textile", inputs={3: "# HANG\n"},
                                     plan=msgspec.convert(PLAN, ExecutionPlan))
                async with tasks.follow(hanging.task_id):
                    await tasks.submit(hanging)
                    with anyio.fail_after(20):
                        await model.hung.wait()  # the model step of a running task
                    done["cancelled"] = await tasks.cancel(hanging.task_id)
                done["listed"] = await tasks.list(limit=10)
                done["chat"] = await client.request(subjects.CHAT_SEND, ChatSend(session="s1", text="What is Textile?"),
                                                    ChatReply, timeout=30)
                done["history"] = await client.request(subjects.CHAT_SEND, ChatSend(session="s1", text="/history"),
                                                       ChatReply, timeout=30)
                done["srv"] = await _srv_ping(client, len(ACTORS))
            finally:
                await client.close()
    assert violations.seen == [], "a permission the flow needs is missing:\n" + "\n".join(violations.seen)
    first, cached, approved = done["first"], done["cached"], done["approved"]
    assert first.status == "succeeded" and first.result.mode == "two_stage" and not first.result.plan_cached
    assert first.result.outputs[0].text == "# Title\n\nSome *bold* text.\n"
    large = done["large"]  # input put and result read through the object store by the client
    assert large.status == "succeeded" and large.result.outputs[0].text == LARGE.replace("# Title", "h1. Title")
    assert done["large_ref"]  # the result was kept beside the state, and the client read it from there
    assert cached.status == "succeeded" and cached.result.plan_cached
    assert approved.status == "succeeded" and approved.result.approval == "approved" and done["questions"]
    # the cancel signal and tandem.control.cancel went through. Across a cluster the executor's "cancelled"
    # reply can overtake the cancel signal to the replica holding the task: still recorded as cancelled
    cancelled = done["cancelled"]
    assert cancelled.status == "cancelled", cancelled
    assert {s.task_id for s in done["listed"]} >= {first.task_id, cached.task_id, approved.task_id, large.task_id}
    assert done["chat"].kind == "reply" and done["chat"].text.startswith("ANSWER to What is Textile")
    assert [m.content for m in done["history"].context.messages][:2] == [
        "What is Textile?", "ANSWER to What is Textile?"]
    assert done["srv"] == set(ACTORS)


async def _srv_ping(bus: Bus, expected: int) -> set[str]:
    """``$SRV.PING`` from the client: the names of the actors that answer."""
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    await bus.nc.publish("$SRV.PING", b"", reply=inbox)
    names: set[str] = set()
    with anyio.move_on_after(5):
        async for msg in sub.messages:
            names.add(json.loads(msg.data)["name"])
            if len(names) == expected:
                break
    await sub.unsubscribe()
    return names


# -- fault tests 4 and 5: what the client credential may not do ---------------------------------


async def _refused(violations: Violations, needle: str) -> bool:
    """Wait for the server's ``Permissions Violation`` naming ``needle``."""
    with anyio.move_on_after(10):
        while not violations.count(needle):
            await anyio.sleep(0.01)
        return True
    return False


async def test_fault_4_a_client_cannot_listen_to_actors_command_them_or_spoof_events(secure: Deployment) -> None:
    violations = Violations()
    client = await connect(secure, "client")
    violations.watch(client, "client", fail_fast=False)
    planner = await connect(secure, "planner")
    executor = await connect(secure, "executor")
    refused: dict[str, bool] = {}
    try:
        # 1. subscribe to every router request
        spy = await client.nc.subscribe("tandem.router.>")
        refused["subscribe tandem.router.>"] = await _refused(violations, 'Subscription to "tandem.router.>"')
        await planner.nc.publish(subjects.ROUTER_COMPLETE, b"{}")
        await planner.flush()
        await client.flush()
        assert spy.pending_msgs == 0  # nothing reached the refused subscription
        # 2. command the executor directly
        seen = await executor.nc.subscribe(subjects.EXECUTOR_EXECUTE)
        await executor.flush()
        request = ExecuteRequest(plan=msgspec.convert(PLAN, ExecutionPlan), inputs={3: DOC})
        await client.nc.publish(subjects.EXECUTOR_EXECUTE, encode(request))
        refused["publish tandem.executor.execute"] = await _refused(
            violations, f'Publish to "{subjects.EXECUTOR_EXECUTE}"')
        # 3. spoof a task's success
        events = await client.nc.subscribe(subjects.EVENTS_ALL)
        forged = TaskEvent(task_id="victim", kind="succeeded", status="succeeded", correlation_id="victim")
        await client.nc.publish(subjects.event_task("succeeded", "victim"), encode(forged))
        refused["publish tandem.events.task.succeeded.victim"] = await _refused(
            violations, 'Publish to "tandem.events.task.succeeded.victim"')
        await client.flush()
        await executor.flush()
        assert seen.pending_msgs == 0 and events.pending_msgs == 0
    finally:
        for bus in (client, planner, executor):
            await bus.close()
    print(f"\nfault test 4: refused {sum(refused.values())} of {len(refused)}: "
          + ", ".join(f"{k} {'refused' if v else 'ALLOWED'}" for k, v in refused.items()))
    assert all(refused.values()), refused


async def test_fault_5_a_client_cannot_poison_the_plan_cache_or_forge_progress(secure: Deployment) -> None:
    violations = Violations()
    client = await connect(secure, "client")
    violations.watch(client, "client", fail_fast=False)
    planner = await connect(secure, "planner")
    task = await connect(secure, "task")
    refused: dict[str, bool] = {}
    plan = msgspec.convert(PLAN, ExecutionPlan)
    try:
        bucket = Config().plan_cache_bucket  # the planner's bucket, as a deployment configures it
        cache = await planner.key_value(bucket)
        fingerprint = "0" * 64
        # 1. store a plan under a public fingerprint, straight into the KV bucket
        await client.nc.publish(f"$KV.{bucket}.{fingerprint}", encode(plan))
        refused["put a plan-cache entry"] = await _refused(violations, f'Publish to "$KV.{bucket}.{fingerprint}"')
        # 2. ... or through the planner's remember endpoint
        await client.nc.publish(subjects.PLANNER_REMEMBER, encode(RememberPlan(fingerprint=fingerprint, plan=plan)))
        refused["request tandem.planner.remember"] = await _refused(
            violations, f'Publish to "{subjects.PLANNER_REMEMBER}"')
        # 3. a progress (step) event of the executor
        await client.nc.publish(subjects.EVENT_STEP, b"{}")
        refused["publish tandem.events.executor.step"] = await _refused(
            violations, f'Publish to "{subjects.EVENT_STEP}"')
        # 4. a task's step event
        await client.nc.publish(subjects.event_task("step", "victim"), b"{}")
        refused["publish tandem.events.task.step.victim"] = await _refused(
            violations, 'Publish to "tandem.events.task.step.victim"')
        # 5. a forged checkpoint to the replica running a task (progress the executor never made)
        await client.nc.publish("tandem.task.checkpoint.abc.victim", b"{}")
        refused["publish tandem.task.checkpoint.abc.victim"] = await _refused(
            violations, 'Publish to "tandem.task.checkpoint.abc.victim"')
        # 6. a forged task state
        await client.nc.publish(f"$KV.{subjects.TASK_BUCKET}.victim", b"{}")
        refused["put a task state"] = await _refused(violations, f'Publish to "$KV.{subjects.TASK_BUCKET}.victim"')
        # 7. a forged result: a chunk written into the results' object store (inputs have a bucket of their own)
        await client.nc.publish(f"$O.{subjects.TASK_DATA_BUCKET}.C.forged", b"forged result")
        refused["overwrite a task result object"] = await _refused(
            violations, f'Publish to "$O.{subjects.TASK_DATA_BUCKET}.C.forged"')
        # 8. a rogue replica of the executor answering first: it cannot even subscribe
        await client.nc.subscribe(subjects.EXECUTOR_EXECUTE, queue=subjects.queue_group("executor"))
        refused["subscribe tandem.executor.execute (queue tandem.executor)"] = await _refused(
            violations, f'Subscription to "{subjects.EXECUTOR_EXECUTE}"')
        await client.flush()
        with pytest.raises(NoResponders):  # with no executor running, nobody answers: the rogue is not there
            await task.request(subjects.EXECUTOR_EXECUTE, ExecuteRequest(plan=plan, inputs={3: DOC}), ExecuteReply,
                               timeout=5)
        with pytest.raises(nats.js.errors.KeyNotFoundError):  # nothing was stored under that fingerprint
            await cache.get(fingerprint)
        # 9. the task actor writes plans that ran into the cache itself (a fingerprint: one key token), never
        # a recipe (recipe.<name>), which the planner serves to every later plan
        violations.watch(task, "task", fail_fast=False)
        allowed = "1" * 64
        await (await task.key_value(bucket)).put(allowed, encode(plan))
        assert (await cache.get(allowed)).value == encode(plan)
        await task.nc.publish(f"$KV.{bucket}.recipe.forged", b"{}")
        refused["task actor: put a recipe"] = await _refused(violations, f'Publish to "$KV.{bucket}.recipe.forged"')
        assert not violations.count(f"$KV.{bucket}.{allowed}")
    finally:
        for bus in (client, planner, task):
            await bus.close()
    print(f"\nfault test 5: refused {sum(refused.values())} of {len(refused)}: "
          + ", ".join(f"{k} {'refused' if v else 'ALLOWED'}" for k, v in refused.items()))
    assert all(refused.values()), refused


# -- the admin credential: what a client may not do, an operator may -----------------------------


async def test_admin_manages_recipes_and_the_plan_cache_which_a_client_may_not(tmp_path: Path) -> None:
    config = make_config()
    async with _server(render(Topology(port=0, secure=True), tmp_path / "deploy", config=config)) as secure:
        await _admin_and_client(secure, config)


async def _admin_and_client(secure: Deployment, config: Config) -> None:
    from tandem.messages.recipes import (
        PLANNER_RECIPES,
        AddRecipe,
        ListRecipes,
        Recipe,
        RecipeList,
        RecipeReply,
    )
    from tandem.services.cache_cli import clear_plans, list_plans

    recipe = Recipe(name="keep-lines", description="Keep the lines with a word", plan={"version": "1.0", "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-F", "-e", "x"]}},
        {"step": 3, "action": "write_output"}]})
    violations = Violations()
    with violations.scope:
        async with actors(secure, config, violations, {"planner": lambda b, c: PlannerActor(b, c, recipes=[])},
                          names=["planner"]):
            admin = await connect(secure, "admin", violations)
            client = await connect(secure, "client")
            client_violations = Violations()
            client_violations.watch(client, "client", fail_fast=False)
            try:
                added = await admin.request(PLANNER_RECIPES, AddRecipe(recipe=recipe), RecipeReply, timeout=10)
                listed = await admin.request(PLANNER_RECIPES, ListRecipes(), RecipeList, timeout=10)
                fingerprint = "ab" * 32  # a plan the planner cached (it owns the bucket)
                planner = await connect(secure, "planner")
                try:
                    await (await planner.key_value(config.plan_cache_bucket)).put(
                        fingerprint, encode(msgspec.convert(PLAN, ExecutionPlan)))
                finally:
                    await planner.close()
                cached = [e.fingerprint for e in await list_plans(admin, config.plan_cache_bucket)]
                cleared = await clear_plans(admin, config.plan_cache_bucket)
                after = await list_plans(admin, config.plan_cache_bucket)
                # refused by the server, and told at once (PermissionDenied, not a RequestTimeout after 60 s)
                with pytest.raises(PermissionDenied, match=PLANNER_RECIPES):
                    await client.request(PLANNER_RECIPES, AddRecipe(recipe=recipe, replace=True), RecipeReply,
                                         timeout=60)
                refused = await _refused(client_violations, f'Publish to "{PLANNER_RECIPES}"')
            finally:
                await admin.close()
                await client.close()
    assert violations.seen == [], "the admin lacks a permission it needs:\n" + "\n".join(violations.seen)
    assert added.recipe.name == "keep-lines" and "keep-lines" in [r.name for r in listed.recipes]
    assert cached == [fingerprint] and cleared == 1 and after == []
    assert refused, "a client credential could manage recipes"


# -- payload limits: the generated max_payload, offload across users, typed too_large -------------


async def test_payload_limits_over_the_generated_config(tmp_path: Path) -> None:
    config = make_config()
    deployment = render(Topology(port=0, max_payload=256 * 1024), tmp_path / "deploy", config=config)
    model = Model()
    violations = Violations()
    async with _server(deployment):
        with violations.scope:
            factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport)}
            async with actors(deployment, config, violations, factories):
                client = await connect(deployment, "client", violations)
                try:
                    limit = client.nc.max_payload
                    # input, execute request and reply, result: each over max_payload, each offloaded
                    state = await TaskClient(client).run(TaskSubmit(
                        task="Make the headings Textile", inputs={3: LARGE}, plan=msgspec.convert(SED_PLAN, ExecutionPlan)))
                finally:
                    await client.close()
        assert violations.seen == [], "\n".join(violations.seen)
        assert limit == 256 * 1024  # the server announces the generated max_payload
        assert state.status == "succeeded" and state.result.outputs[0].text == LARGE.replace("# Title", "h1. Title")

        big = ChoiceRequest(answer="yes", context=ChoiceContext(available_options=["a", "b"],
                                                                conversation_context="x" * 300 * 1024))
        async with actors(deployment, config, violations, {}, names=["choice"], max_object_bytes=100 * 1024):
            client = await connect(deployment, "client", violations)
            small = await connect(deployment, "client", violations, max_object_bytes=100 * 1024)
            try:
                with pytest.raises(RemoteError) as refused_by_actor:  # the actor will not fetch it
                    await client.request(subjects.CHOICE_PARSE, big, ChoiceReply, timeout=10)
                with pytest.raises(PayloadTooLarge):  # nor will a bus send one over its own limit
                    await small.request(subjects.CHOICE_PARSE, big, ChoiceReply, timeout=10)
            finally:
                await client.close()
                await small.close()
        assert refused_by_actor.value.code == "too_large"
        assert violations.seen == [], "\n".join(violations.seen)
