"""The chat actor over a real nats-server: direct replies while tasks run, intent once, policies, approvals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import msgspec

from tandem.actors import ChatActor, RouterActor
from tandem.messages import ChatReply, ChatSend, ChatSession, ChatSessionGet, ChatSessionReply, subjects
from tandem.services.bus import Bus
from tandem.services.runtime import start_actors
from tandem.services.errors import RemoteError
from tandem.services.tasks import TaskClient

from ..conftest import chat_response, make_config

PLAN = {"version": "1.0", "workflow": [
    {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
    {"step": 2, "action": "manual_transform", "params": {"instructions": "Convert to Textile."}},
    {"step": 3, "action": "write_output"},
]}
DOC = "```\n# Title\n\nSome **bold** text.\n```"


class Model:
    """One scripted model for every call: intent, chat replies, plans, task steps (slow on demand)."""

    def __init__(self, *, slow: bool = False, intent: dict | None = None) -> None:
        self.slow = slow
        self.release = anyio.Event()
        self.intent = intent or {"kind": "direct_response", "reasoning": "chit-chat", "confidence": 0.7}
        self.calls: dict[str, int] = {"intent": 0, "chat": 0, "plan": 0, "step": 0}
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        system = body["messages"][0]["content"]
        if system.startswith("Classify the user's chat message"):
            kind, answer = "intent", json.dumps(self.intent)
        elif system.startswith("You are Tandem"):
            kind, answer = "chat", "ANSWER to " + body["messages"][-1]["content"][:40]
        elif "response_format" in body:
            kind, answer = "plan", json.dumps(PLAN)
        else:
            kind, answer = "step", "h1. Title\n\nSome *bold* text."
        self.calls[kind] += 1
        if kind == "step" and self.slow:
            await self.release.wait()
        return httpx.Response(200, json=chat_response(answer, model=body["model"]))


@asynccontextmanager
async def chat(bus: Bus, model: Model, **chat_options: object) -> AsyncIterator[None]:
    cfg = make_config(complexity_threshold=0.0)  # every chat task is planned (and approved when asked)
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "chat": lambda b, c: ChatActor(b, c, **chat_options)}
    names = ("planner", "router", "executor", "choice", "task", "context", "chat")
    async with start_actors(bus, cfg, names, factories=factories):
        yield


async def say(bus: Bus, session: str, text: str, **fields: object) -> ChatReply:
    return await bus.request(subjects.CHAT_SEND, ChatSend(session=session, text=text, **fields), ChatReply,
                             timeout=30)


async def wait_status(bus: Bus, task_id: str, statuses: set[str], seconds: float = 20) -> str:
    """Wait for one of ``statuses``; a task the chat still holds in its queue is not submitted yet
    (``not_found``) and is waited for like any other status."""
    client = TaskClient(bus)
    with anyio.fail_after(seconds):
        while True:
            try:
                status = (await client.get(task_id, resolve=False)).status
            except RemoteError as exc:
                if exc.code != "not_found":
                    raise
                status = "queued in chat"
            if status in statuses:
                return status
            await anyio.sleep(0.05)


async def test_direct_answer_while_a_slow_task_runs_and_intent_once_per_turn(bus: Bus, spans) -> None:
    model = Model(slow=True)
    async with chat(bus, model, approval="none"):
        first = await say(bus, "c1", "What is Textile?")
        started = await say(bus, "c1", f"Convert this Markdown to Textile:\n{DOC}")
        await wait_status(bus, started.task_id, {"running"})
        with anyio.fail_after(10):  # the model step is in flight
            while model.calls["step"] == 0:
                await anyio.sleep(0.02)
        second = await say(bus, "c1", "And how is it different from Markdown?")
        running = (await TaskClient(bus).get(started.task_id, resolve=False)).status
        model.release.set()
        assert await wait_status(bus, started.task_id, {"succeeded", "failed"}) == "succeeded"
        ambiguous = await say(bus, "c1", "the weather has been nice lately")
        with anyio.fail_after(10):  # the context actor folds the result into the conversation
            while "h1. Title" not in (ctx := await say(bus, "c1", "/context")).text:
                await anyio.sleep(0.1)
    assert first.kind == "reply" and first.text.startswith("ANSWER to What is Textile")
    assert started.kind == "task_submitted" and started.intent.kind == "task" and started.intent.source == "rules"
    assert second.kind == "reply" and running == "running"  # answered before the task ended
    assert ambiguous.kind == "reply" and ambiguous.intent.source == "model" and model.calls["intent"] == 1
    assert ctx.context.shared.last_task.task_id == started.task_id
    turns = [s for s in spans.get_finished_spans() if s.name == "invoke_agent chat"]
    intents = [s for s in spans.get_finished_spans() if s.name == "classify_intent"]
    assert len(turns) == len(intents) >= 5
    for turn in turns:  # exactly one classification in each turn's trace
        assert sum(i.context.trace_id == turn.context.trace_id for i in intents) == 1
        assert turn.attributes["gen_ai.conversation.id"] == "c1"
    task_turn = next(t for t in turns if t.attributes.get("tandem.intent.kind") == "task")
    assert [format(link.context.trace_id, "032x") for link in task_turn.links] == [started.task_trace_id]
    assert started.task_trace_id != started.trace_id


async def test_policies_enqueue_reject_interrupt(bus: Bus) -> None:
    model = Model(slow=True)
    async with chat(bus, model, approval="none"):
        a = await say(bus, "c2", f"Convert this Markdown to Textile:\n{DOC}")
        b = await say(bus, "c2", f"Convert this Markdown to Textile too:\n{DOC}")  # default: enqueue
        rejected = await say(bus, "c2", f"Convert this one as well:\n{DOC}", policy="reject")
        c = await say(bus, "c2", f"/interrupt convert this instead:\n{DOC}")
        assert await wait_status(bus, a.task_id, {"cancelled", "succeeded", "failed"}) == "cancelled"
        session = await bus.request(subjects.CHAT_SESSION, ChatSessionGet(session="c2"), ChatSessionReply, timeout=10)
        model.release.set()
        assert await wait_status(bus, c.task_id, {"succeeded", "failed"}) == "succeeded"
        assert await wait_status(bus, b.task_id, {"succeeded", "failed"}) == "succeeded"  # the queue moves on
    assert a.kind == "task_submitted" and b.kind == "task_queued" and rejected.kind == "task_rejected"
    assert c.kind == "task_submitted" and a.task_id in c.text
    assert [t.task_id for t in session.state.running] == [c.task_id]
    assert [q.task_id for q in session.state.queued] == [b.task_id]


async def test_approval_in_chat_partial_and_refusal(bus: Bus) -> None:
    model = Model()
    async with chat(bus, model):
        kept = await say(bus, "c3", f"Convert this Markdown to Textile:\n{DOC}")
        await wait_status(bus, kept.task_id, {"awaiting_approval"})
        unclear = await say(bus, "c3", "hmm")
        partial = await say(bus, "c3", "skip step 2")  # keeps only the steps around the model step
        with anyio.fail_after(20):
            partial_state = await TaskClient(bus).wait(kept.task_id)
        refused = await say(bus, "c3", f"Convert this Markdown to Textile:\n{DOC}")
        await wait_status(bus, refused.task_id, {"awaiting_approval"})
        no = await say(bus, "c3", "no, don't run it")
        with anyio.fail_after(20):
            refused_state = await TaskClient(bus).wait(refused.task_id)
    assert unclear.kind == "answer" and unclear.decision == "unclear" and unclear.question
    assert partial.kind == "answer" and partial.decision == "partial"
    assert sorted(s.step for s in partial_state.result.steps) == [1, 3]
    assert model.calls["step"] == 0  # the model step was not kept, so never run
    assert no.decision == "rejected" and refused_state.status in ("cancelled", "failed")
    assert refused_state.result is None or not refused_state.result.outputs


async def test_session_resume_keeps_memory_and_running_tasks(bus: Bus) -> None:
    model = Model(slow=True)
    async with chat(bus, model, approval="none"):
        await say(bus, "c4", "What is Textile?")
        started = await say(bus, "c4", f"Convert this Markdown to Textile:\n{DOC}")
    async with chat(bus, model, approval="none"):  # every actor restarted, same server
        tasks = await say(bus, "c4", "/tasks")
        history = await say(bus, "c4", "/history")
        model.release.set()
    assert started.task_id in tasks.text
    assert [m.content for m in history.context.messages][:2] == ["What is Textile?", "ANSWER to What is Textile?"]


def test_chat_session_state_round_trips() -> None:
    state = ChatSession(policy="reject")
    assert msgspec.json.decode(msgspec.json.encode(state), type=ChatSession) == state
