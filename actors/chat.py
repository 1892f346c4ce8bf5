"""Chat actor: the chat loop of design note 003 — intent once, then a direct reply or a task.

For each :class:`~tandem.messages.ChatSend` on ``tandem.chat.send``::

    invoke_agent chat  (one span per turn; gen_ai.conversation.id = session)
     ├─ classify_intent            exactly once: rules first, the router's `intent` task second
     ├─ direct_response ─► context append (+ model context) ─► router `chat` ─► context append
     ├─ task            ─► policy (enqueue | reject | interrupt) ─► TaskClient.submit(intent=…)
     │                     the task gets its own trace, linked both ways with the turn
     ├─ answer          ─► TaskClient.answer (the task actor's approval parser decides)
     └─ control         ─► /tasks /cancel /status /history /context /policy /set /session

The intent result travels with the task (``TaskSubmit.intent``) and is never recomputed.
The chat never waits for a task: it acknowledges at once; progress and results are task
events (``tandem.events.task.>``) that clients show, and that the context actor folds into
the conversation's shared context and history.

Per-conversation state (policy, running tasks, queued submissions) lives in the KV bucket
``tandem_chat`` and is changed with revision checks, so any replica serves any conversation.
With the ``enqueue`` policy a new task waits in that record; when a task of the
conversation ends (a terminal task event, one replica per event), the next one is
submitted — submission is idempotent (``Nats-Msg-Id`` = task id), so a race submits once.

Rules of the rule path (:func:`rule_intent`), in order: a ``/command``; an answer when an
approval is pending (unless it is plainly a question); a fenced block or an imperative task
verb (convert, translate, 変換 …) → task; a question or a greeting → direct response.
Anything else goes to the model with a JSON schema; if the model cannot answer, the
message is treated as a direct question (``source="fallback"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio
import msgspec
import nats.errors
import nats.js.errors
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from tandem.messages import (
    TERMINAL,
    ChatMessage,
    ChatReply,
    ChatSend,
    ChatSession,
    ChatSessionGet,
    ChatSessionReply,
    CompletionReply,
    CompletionRequest,
    ContextAppend,
    ContextAppended,
    ContextGet,
    ContextHistory,
    ContextHistoryReply,
    IntentResult,
    ModelContext,
    PendingApproval,
    SharedReply,
    SharedUpdate,
    TaskEvent,
    TaskLine,
    TaskSubmit,
    encode,
    subjects,
)
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import RemoteError, TandemError
from tandem.services.tasks import TaskClient

from ._base import Actor, Endpoint

__all__ = ["INTENT_SCHEMA", "ChatActor", "ChatError", "rule_intent"]

log = logging.getLogger("tandem.chat")

RECORD_GRACE_S = 5.0
"""Seconds a submitted task may take to be recorded by a task actor before the turn answers anyway (logged)."""
tracer = trace.get_tracer("tandem.chat")

G_OP, G_AGENT, G_PROVIDER, G_CONV = ("gen_ai.operation.name", "gen_ai.agent.name", "gen_ai.provider.name",
                                     "gen_ai.conversation.id")

INTENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["direct_response", "task", "control", "answer"]},
        "text": {"type": "string"},
        "command": {"type": "string", "enum": ["", "tasks", "cancel", "status"]},
        "reasoning": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["kind", "reasoning", "confidence"],
    "additionalProperties": False,
}
"""Structured output of the router's ``intent`` task."""

_INTENT_PROMPT = (
    "Classify the user's chat message for an assistant that can answer directly or start a background task.\n"
    "kind=direct_response: a question, chit-chat, or anything answerable from the conversation.\n"
    "kind=task: a request to produce or transform content (convert, rewrite, translate, generate a file); "
    "text = the task in the user's words.\n"
    "kind=control: asks about or stops running tasks (command tasks|status|cancel).\n"
    "kind=answer: only when an approval question is pending and the message answers it.\n"
    "Reply with JSON only: {\"kind\": ..., \"text\": ..., \"command\": \"\", \"reasoning\": one short sentence, "
    "\"confidence\": 0..1}."
)

_SYSTEM_PROMPT = ("You are Tandem, a concise assistant in a terminal chat. Tasks (document conversions and "
                  "other jobs) run in the background and their results appear in the conversation; answer "
                  "questions directly and briefly.")

_COMMANDS = {"tasks", "cancel", "status", "history", "context", "policy", "set", "session", "help"}
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_TASK_VERB = re.compile(
    r"^\s*(please\s+)?(convert|translate|rewrite|reformat|format|transform|turn|summari[sz]e|generate|create|"
    r"extract|render|export|make)\b|(変換|翻訳|要約|書き換え|作成|生成|整形)(して|しろ|する|を)", re.I)
_QUESTION = re.compile(
    r"[?？]\s*$|^\s*(what|why|how|who|when|where|which|is|are|can|could|do|does|did|should|would|will)\b|"
    r"(ですか|ますか|でしょうか|何|なぜ|どう|どこ|いつ|誰)", re.I)
_STOP = re.compile(
    r"^\s*(please\s+)?(stop|cancel|abort|halt)\s+(the\s+)?(running\s+|current\s+|last\s+)?"
    r"(task|tasks|job|conversion|run)\b[\s\w,.!]{0,20}$|"
    r"^\s*(please\s+)?(stop|cancel|abort)( it| that)?( now)?( please)?[.!]?\s*$|"
    r"^(その|今の|実行中の)?(タスク|処理|変換|実行)を?(止めて|中止して|キャンセルして|やめて)", re.I)
_GREETING = re.compile(r"^\s*(hi|hello|hey|thanks|thank you|good (morning|evening)|こんにちは|こんばんは|おはよう|"
                       r"ありがとう)\b", re.I)


class ChatError(TandemError):
    """Raised when the chat state cannot be read or changed."""

    code = "chat"


def rule_intent(text: str, *, pending_approval: bool) -> IntentResult | None:
    """Read a message by rules; ``None`` when the rules cannot tell (the model decides).

    Examples
    --------
    >>> rule_intent("/tasks", pending_approval=False).command
    'tasks'
    >>> rule_intent("only step 1", pending_approval=True).kind
    'answer'
    >>> rule_intent("What is Textile?", pending_approval=False).kind
    'direct_response'
    >>> rule_intent("Convert this Markdown to Textile", pending_approval=False).kind
    'task'
    >>> rule_intent("Stop the running task please", pending_approval=False).command
    'cancel'
    >>> rule_intent("変換を止めて", pending_approval=False).command
    'cancel'
    >>> rule_intent("Stop using passive voice in this text", pending_approval=False) is None
    True
    >>> rule_intent("the weather has been nice", pending_approval=False) is None
    True
    """
    stripped = text.strip()
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        cmd, rest = head.lower(), rest.strip()
        if cmd in ("interrupt", "enqueue", "reject", "task"):
            return IntentResult(kind="task", text=rest, reasoning=f"/{cmd} command", source="rules",
                                command=cmd if cmd != "task" else "")
        if cmd == "ask":
            return IntentResult(kind="direct_response", text=rest, reasoning="/ask command", source="rules")
        if cmd == "answer":
            return IntentResult(kind="answer", text=rest, reasoning="/answer command", source="rules")
        return IntentResult(kind="control", text=rest, reasoning=f"/{cmd} command", source="rules",
                            command=cmd if cmd in _COMMANDS else "help")
    question = bool(_QUESTION.search(stripped))
    if pending_approval and not stripped.endswith(("?", "？")):  # a question waits: the approval stays pending
        return IntentResult(kind="answer", text=stripped, reasoning="an approval question is pending",
                            confidence=0.9, source="rules")
    if _STOP.search(stripped):  # "stop the running task", "タスクを止めて" (not "stop using passive voice")
        return IntentResult(kind="control", text="", reasoning="asks to stop a running task", confidence=0.85,
                            source="rules", command="cancel")
    if _FENCE.search(stripped) or _TASK_VERB.search(stripped):
        if question and stripped.endswith(("?", "？")) and not _FENCE.search(stripped):
            return None  # "can you convert …?": a request or a question — the model decides
        return IntentResult(kind="task", text=stripped, reasoning="a task verb or an attached block",
                            confidence=0.8, source="rules")
    if question or _GREETING.search(stripped):
        return IntentResult(kind="direct_response", text=stripped, reasoning="a question or a greeting",
                            confidence=0.8, source="rules")
    return None


class _ModelIntent(msgspec.Struct, kw_only=True):
    kind: str
    text: str = ""
    command: str = ""
    reasoning: str = ""
    confidence: float = 0.5


_model_intent = msgspec.json.Decoder(_ModelIntent)
_session_decoder = msgspec.json.Decoder(ChatSession)


def _setting(config: Config, key: str, given: Any, default: Any) -> Any:
    if given is not None:
        return given
    value = getattr(getattr(config, "chat", None), key, None)
    return default if value is None else value


class ChatActor(Actor):
    """Serve ``tandem.chat.*`` (see the module docstring).

    Parameters
    ----------
    bus : Bus
    config : Config
        A ``chat`` section, when the config has one, supplies the settings below.
    policy : {"enqueue", "reject", "interrupt"} or None
        Default policy for a new task while one runs (``enqueue``).
    approval : {"ask", "none"} or None
        Whether chat tasks ask for plan approval in the chat (``ask``).
    reply_timeout, intent_timeout : float or None
        Seconds for a direct reply (60) and for the intent call (20).
    reply_max_tokens : int or None
        Longest direct reply (512).
    system_prompt : str or None
    concurrency : int
    """

    name = "chat"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (
        subjects.ROUTER_COMPLETE, subjects.CONTEXT_APPEND, subjects.CONTEXT_GET, subjects.CONTEXT_HISTORY,
        subjects.CONTEXT_SHARED_UPDATE, subjects.TASK_SUBMIT, subjects.TASK_CANCEL, subjects.TASK_ANSWER)
    jetstream: ClassVar[tuple[str, ...]] = (f"kv {subjects.CHAT_BUCKET}", f"kv {subjects.TASK_BUCKET} read",
                                            f"objects {subjects.TASK_INPUT_BUCKET} write",
                                            f"objects {subjects.TASK_DATA_BUCKET} read")
    public: ClassVar[tuple[str, ...]] = (subjects.CHAT_SEND, subjects.CHAT_SESSION)

    def __init__(self, bus: Bus, config: Config, *, policy: str | None = None, approval: str | None = None,
                 reply_timeout: float | None = None, intent_timeout: float | None = None,
                 reply_max_tokens: int | None = None, system_prompt: str | None = None,
                 concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.policy = _setting(config, "policy", policy, "enqueue")
        self.approval = _setting(config, "approval", approval, "ask")
        self.reply_timeout = float(_setting(config, "reply_timeout_s", reply_timeout, 60.0))
        self.intent_timeout = float(_setting(config, "intent_timeout_s", intent_timeout, 20.0))
        self.reply_max_tokens = int(_setting(config, "reply_max_tokens", reply_max_tokens, 512))
        self.system_prompt = _setting(config, "system_prompt", system_prompt, _SYSTEM_PROMPT)
        self.tasks = TaskClient(bus, inline_input_bytes=config.task.inline_input_bytes,
                                max_submit_bytes=config.task.max_submit_bytes, timeout=10)
        self._kv: Any = None

    def endpoints(self) -> list[Endpoint]:
        budget = self.reply_timeout + self.intent_timeout + 30
        return [
            Endpoint(subjects.CHAT_SEND, ChatSend, self.send, timeout=budget),
            Endpoint(subjects.CHAT_SESSION, ChatSessionGet, self.session, timeout=15, idempotent=True),
            Endpoint(subjects.EVENT_TASK_ALL, TaskEvent, self.on_task_event, timeout=30),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        self._kv = await self.bus.key_value(subjects.CHAT_BUCKET)

    # -- one turn --------------------------------------------------------------------------

    async def send(self, request: ChatSend) -> ChatReply:
        """Handle one user message (see the module docstring)."""
        session = request.session
        with tracer.start_as_current_span(
            "invoke_agent chat", kind=SpanKind.INTERNAL,
            attributes={G_OP: "invoke_agent", G_AGENT: "chat", G_PROVIDER: "tandem", G_CONV: session},
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            state, _ = await self._read_session(session)
            state, approvals = await self._refresh(session, state)
            intent = await self._understand(request, approvals)
            span.set_attribute("tandem.intent.kind", intent.kind)
            match intent.kind:
                case "control":
                    reply = await self._control(request, intent, state, approvals)
                case "answer" if approvals:
                    reply = await self._answer(request, intent, approvals[0])
                case "task":
                    reply = await self._task(request, intent, state, span)
                case _:
                    reply = await self._direct(request, intent)
            return msgspec.structs.replace(reply, trace_id=trace_id, correlation_id=request.correlation_id,
                                           conversation_id=session)

    async def _understand(self, request: ChatSend, approvals: list[PendingApproval]) -> IntentResult:
        with tracer.start_as_current_span("classify_intent", attributes={G_CONV: request.session}) as span:
            intent = rule_intent(request.text, pending_approval=bool(approvals))
            if intent is None:
                intent = await self._model_intent(request, approvals)
            if intent.kind == "answer" and not approvals:  # nothing to answer: treat it as a question
                intent = msgspec.structs.replace(intent, kind="direct_response")
            span.set_attributes({"tandem.intent.kind": intent.kind, "tandem.intent.source": intent.source,
                                 "tandem.intent.confidence": intent.confidence})
            return intent

    async def _model_intent(self, request: ChatSend, approvals: list[PendingApproval]) -> IntentResult:
        pending = f"\nAn approval question is pending: {approvals[0].question[:500]}" if approvals else ""
        completion = CompletionRequest(
            task="intent", tier=self._tier("intent", "choice"), conversation_id=request.session,
            messages=[ChatMessage(role="system", content=_INTENT_PROMPT + pending),
                      ChatMessage(role="user", content=request.text[:4000])],
            response_schema=INTENT_SCHEMA, schema_name="intent", max_tokens=200, temperature=0.0,
            timeout_s=self.intent_timeout)
        try:
            reply = await self.bus.request(subjects.ROUTER_COMPLETE, completion, CompletionReply,
                                           timeout=self.intent_timeout + 5)
            read = _model_intent.decode(reply.content)
        except (TandemError, msgspec.DecodeError) as exc:
            log.info("intent model unavailable (%s): reading %r as a direct question", exc, request.text[:80])
            return IntentResult(kind="direct_response", text=request.text, confidence=0.3, source="fallback",
                                reasoning=f"the intent model could not answer ({type(exc).__name__})")
        kind = read.kind if read.kind in ("direct_response", "task", "control", "answer") else "direct_response"
        command = read.command if read.command in ("tasks", "cancel", "status") else ("tasks" if kind == "control"
                                                                                    else "")
        return IntentResult(kind=kind, text=read.text.strip() or request.text, reasoning=read.reasoning[:500],  # type: ignore[arg-type]
                            confidence=min(max(read.confidence, 0.0), 1.0), source="model", command=command)

    # -- direct responses -----------------------------------------------------------------

    async def _direct(self, request: ChatSend, intent: IntentResult) -> ChatReply:
        text = intent.text if request.text.lstrip().startswith("/") else request.text
        appended = await self.bus.request(
            subjects.CONTEXT_APPEND, ContextAppend(session=request.session, role="user", content=text,
                                                   reply_context=True, conversation_id=request.session),
            ContextAppended, timeout=15)
        context = appended.context or ModelContext(session=request.session)
        completion = CompletionRequest(
            task="chat", tier=self._tier("chat", "single_stage"), conversation_id=request.session,
            messages=self._prompt(context), max_tokens=self.reply_max_tokens, timeout_s=self.reply_timeout)
        try:
            reply = await self.bus.request(subjects.ROUTER_COMPLETE, completion, CompletionReply,
                                           timeout=self.reply_timeout + 5)
        except RemoteError as exc:
            return ChatReply(session=request.session, kind="error", intent=intent,
                             text=f"no answer from the model: {exc.message}")
        answer = reply.content.strip()
        await self.bus.request(subjects.CONTEXT_APPEND, ContextAppend(
            session=request.session, role="assistant", content=answer, conversation_id=request.session),
            ContextAppended, timeout=15)
        return ChatReply(session=request.session, kind="reply", text=answer, intent=intent, model=reply.model)

    def _prompt(self, context: ModelContext) -> list[ChatMessage]:
        system = [self.system_prompt]
        shared = context.shared
        if shared.running:
            system.append("Tasks running now: " + "; ".join(
                f"{t.task_id} ({t.status}{': ' + t.task[:80] if t.task else ''})" for t in shared.running.values()))
        if shared.last_task is not None:
            last = shared.last_task
            system.append(f"The last task, {last.task_id} ({last.task[:200]}), {last.status}."
                          + (f" Its result starts:\n{last.output[:1000]}" if last.output else ""))
        if shared.preferences:
            system.append("User preferences: " + "; ".join(f"{k}={v}" for k, v in shared.preferences.items()))
        if context.summary is not None:
            system.append(f"Summary of the earlier conversation (messages {context.summary.first_seq}–"
                          f"{context.summary.last_seq}):\n{context.summary.text}")
        messages = [ChatMessage(role="system", content="\n\n".join(system))]
        for entry in context.messages:
            role = entry.role if entry.role != "system" else "assistant"  # task notes: said by the assistant
            if messages[-1].role == role and role != "system":  # keep roles alternating for strict templates
                messages[-1] = ChatMessage(role=role, content=messages[-1].content + "\n\n" + entry.content)
            else:
                messages.append(ChatMessage(role=role, content=entry.content))
        return messages

    # -- tasks -----------------------------------------------------------------------------

    async def _task(self, request: ChatSend, intent: IntentResult, state: ChatSession, span: Any) -> ChatReply:
        session = request.session
        policy = request.policy or (intent.command if intent.command in ("interrupt", "enqueue", "reject")
                                    else None) or state.policy or self.policy
        task_text = intent.text or request.text
        inputs = dict(request.inputs)
        block = _FENCE.search(task_text)
        if block and 3 not in inputs:
            inputs[3] = block.group(1)
            task_text = (task_text[: block.start()] + task_text[block.end():]).strip() or "process the input"
        submit = TaskSubmit(task=task_text, inputs=inputs, input_types={fd: "markdown" for fd in inputs}
                            if "markdown" in task_text.lower() else {}, conversation_id=session,
                            approval=self.approval, intent=intent)  # type: ignore[arg-type]
        line = TaskLine(task_id=submit.task_id, task=task_text[:200], status="pending")
        await self.bus.request(subjects.CONTEXT_APPEND, ContextAppend(
            session=session, role="user", content=request.text, conversation_id=session), ContextAppended, timeout=15)
        running = [t for t in state.running]
        if running and policy == "reject":
            return ChatReply(session=session, kind="task_rejected", intent=intent, tasks=running,
                             text=f"task {running[0].task_id} is still running (policy reject): not started")
        if running and policy == "enqueue":
            def enqueue(s: ChatSession) -> ChatSession:
                return msgspec.structs.replace(s, queued=[*s.queued, submit])

            state = await self._update_session(session, enqueue)
            if not state.running:  # the running task ended meanwhile: start the queue now
                await self._advance(session)
            return ChatReply(session=session, kind="task_queued", intent=intent, task_id=submit.task_id,
                             tasks=state.running,
                             text=f"queued task {submit.task_id}: it starts when {running[0].task_id} ends")
        # the new task takes the running slot first, so the cancelled task's end does not start the queue
        replaced = [t.task_id for t in running] if policy == "interrupt" else []

        def start(s: ChatSession) -> ChatSession:
            kept = [t for t in s.running if t.task_id not in replaced]
            return msgspec.structs.replace(s, running=[*kept, line])

        state = await self._update_session(session, start)
        cancelled = []
        for task_id in replaced:
            try:
                await self.tasks.cancel(task_id)
                cancelled.append(task_id)
            except RemoteError as exc:
                if exc.code not in ("conflict", "not_found"):
                    raise
        task_trace = await self._submit(submit, span)
        note = f" (cancelled {', '.join(cancelled)})" if cancelled else ""
        return ChatReply(session=session, kind="task_submitted", intent=intent, task_id=submit.task_id,
                         task_trace_id=task_trace, tasks=state.running,
                         text=f"started task {submit.task_id}{note}")

    async def _submit(self, submit: TaskSubmit, turn_span: Any = None) -> str:
        """Submit in a trace of the task's own, linked both ways with the chat turn; return its trace id."""
        links = [Link(turn_span.get_span_context())] if turn_span is not None else []
        with tracer.start_as_current_span(
            "invoke_agent task", context=otel_context.Context(), kind=SpanKind.CLIENT, links=links,
            attributes={G_OP: "invoke_agent", G_AGENT: "task", G_PROVIDER: "tandem", "tandem.task.id": submit.task_id,
                        G_CONV: submit.conversation_id},
        ) as task_span:
            await self.tasks.submit(submit)
        try:  # recorded before the turn says "started": /tasks straight after, or after a restart, finds it
            await self.tasks.recorded(submit.task_id, grace=RECORD_GRACE_S)
        except RemoteError as exc:  # queued in the stream, but no task actor has recorded it yet
            if exc.code != "not_found":
                raise
            log.warning("task %s submitted but not recorded within %gs: is a task actor serving?", submit.task_id,
                        RECORD_GRACE_S)
        if turn_span is not None:
            turn_span.add_link(task_span.get_span_context(), {"tandem.task.id": submit.task_id})
        return format(task_span.get_span_context().trace_id, "032x")

    async def _advance(self, session: str, ended: str = "") -> None:
        """Drop ``ended`` from the running tasks; when none runs, submit the next queued task."""
        chosen: list[TaskSubmit] = []

        def step(s: ChatSession) -> ChatSession:
            chosen.clear()
            running = [t for t in s.running if t.task_id != ended]
            queued = list(s.queued)
            if not running and queued:
                nxt = queued.pop(0)
                chosen.append(nxt)
                running.append(TaskLine(task_id=nxt.task_id, task=nxt.task[:200], status="pending"))
            return msgspec.structs.replace(s, running=running, queued=queued)

        await self._update_session(session, step)
        for submit in chosen:
            await self._submit(submit)

    async def on_task_event(self, event: TaskEvent) -> None:
        """A task of a conversation ended: forget it, start the next queued one."""
        if event.status not in TERMINAL or not event.conversation_id:
            return
        state, revision = await self._read_session(event.conversation_id)
        if revision and any(t.task_id == event.task_id for t in state.running):
            await self._advance(event.conversation_id, event.task_id)

    async def _refresh(self, session: str, state: ChatSession) -> tuple[ChatSession, list[PendingApproval]]:
        """Read the running tasks' states: pending approvals, and tasks that ended unseen."""
        if not state.running:
            return state, []
        found: dict[str, Any] = {}

        async def read(task_id: str) -> None:
            try:
                found[task_id] = await self.tasks.get(task_id, resolve=False)
            except RemoteError as exc:
                if exc.code != "not_found":
                    raise
                found[task_id] = None

        async with anyio.create_task_group() as tg:
            for task in state.running:
                tg.start_soon(read, task.task_id)
        approvals = [PendingApproval(task_id=t.task_id, question=found[t.task_id].question)
                     for t in state.running if found.get(t.task_id) is not None
                     and found[t.task_id].status == "awaiting_approval"]
        ended = [t.task_id for t in state.running if found.get(t.task_id) is None
                 or found[t.task_id].status in TERMINAL]
        running = [msgspec.structs.replace(t, status=found[t.task_id].status) for t in state.running
                   if t.task_id not in ended]
        state = msgspec.structs.replace(state, running=running)
        for task_id in ended:
            await self._advance(session, task_id)
        if ended:
            state, _ = await self._read_session(session)
        return state, approvals

    # -- answers and commands ----------------------------------------------------------------

    async def _answer(self, request: ChatSend, intent: IntentResult, pending: PendingApproval) -> ChatReply:
        text = intent.text or request.text
        await self.bus.request(subjects.CONTEXT_APPEND, ContextAppend(
            session=request.session, role="user", content=text, conversation_id=request.session),
            ContextAppended, timeout=15)
        try:
            reply = await self.tasks.answer(pending.task_id, text)
        except RemoteError as exc:
            return ChatReply(session=request.session, kind="error", intent=intent, task_id=pending.task_id,
                             text=f"the answer was not taken: {exc.message}")
        shown = {"approved": "approved: running the plan", "partial": "approved in part: running the steps kept",
                 "rejected": "rejected: nothing will run",
                 "unclear": reply.question or "that answer is unclear; please answer again"}
        return ChatReply(session=request.session, kind="answer", intent=intent, task_id=pending.task_id,
                         decision=reply.decision, question=reply.question if reply.decision == "unclear" else "",
                         text=shown.get(reply.decision, reply.decision))

    async def _control(self, request: ChatSend, intent: IntentResult, state: ChatSession,
                       approvals: list[PendingApproval]) -> ChatReply:
        session, arg = request.session, intent.text.strip()

        def reply(text: str, **fields: Any) -> ChatReply:
            return ChatReply(session=session, kind="control", intent=intent, text=text, **fields)

        match intent.command:
            case "tasks" | "status":
                lines = [f"{t.task_id}  {t.status}  {t.task}" for t in state.running]
                lines += [f"{q.task_id}  queued  {q.task[:200]}" for q in state.queued]
                lines += [f"approval pending on {a.task_id}:\n{a.question}" for a in approvals]
                return reply("\n".join(lines) or "no task running", tasks=state.running)
            case "cancel":
                target = arg or (state.running[-1].task_id if state.running else "")
                if not target:
                    return reply("no task to cancel")
                try:
                    cancelled = await self.tasks.cancel(target)
                except RemoteError as exc:
                    return reply(f"cannot cancel {target}: {exc.message}", task_id=target)

                def drop(s: ChatSession) -> ChatSession:
                    return msgspec.structs.replace(s, queued=[q for q in s.queued if q.task_id != target])

                await self._update_session(session, drop)
                await self._advance(session, target)
                return reply(f"task {target}: {cancelled.status}", task_id=target)
            case "context":
                context = await self.bus.request(subjects.CONTEXT_GET, ContextGet(
                    session=session, conversation_id=session), ModelContext, timeout=15)
                return reply(_render_context(context), context=context)
            case "history":
                history = await self.bus.request(subjects.CONTEXT_HISTORY, ContextHistory(
                    session=session, conversation_id=session), ContextHistoryReply, timeout=15)
                context = ModelContext(session=session, summary=history.summary, messages=history.messages,
                                       stored=len(history.messages))
                return reply(_render_context(context, header=False), context=context)
            case "policy":
                if arg not in ("enqueue", "reject", "interrupt"):
                    return reply(f"policy: {state.policy} (set with /policy enqueue|reject|interrupt)")
                await self._update_session(session, lambda s: msgspec.structs.replace(s, policy=arg))
                return reply(f"policy: {arg}")
            case "set":
                key, _, value = arg.partition(" ")
                if not key:
                    return reply("usage: /set KEY VALUE (an empty value removes KEY)")
                shared = await self.bus.request(subjects.CONTEXT_SHARED_UPDATE, SharedUpdate(
                    session=session, preferences={key: value.strip()}, conversation_id=session),
                    SharedReply, timeout=10)
                return reply("preferences: " + ", ".join(f"{k}={v}" for k, v in shared.shared.preferences.items()))
            case "session":
                return reply(f"session {session}; policy {state.policy}; {len(state.running)} running, "
                             f"{len(state.queued)} queued", tasks=state.running)
            case _:
                return reply("commands: /tasks /cancel [ID] /history /context /session /policy enqueue|reject|"
                             "interrupt /set KEY VALUE /interrupt TASK /task TASK /ask QUESTION /quit")

    async def session(self, request: ChatSessionGet) -> ChatSessionReply:
        state, _ = await self._read_session(request.session)
        state, approvals = await self._refresh(request.session, state)
        return ChatSessionReply(session=request.session, state=state, approvals=approvals,
                                correlation_id=request.correlation_id)

    # -- state -----------------------------------------------------------------------------

    async def _read_session(self, session: str) -> tuple[ChatSession, int]:
        try:
            entry = await self._kv.get(session)
        except nats.js.errors.KeyNotFoundError:
            return ChatSession(policy=self.policy), 0
        except nats.errors.Error as exc:
            raise ChatError(f"cannot read chat session {session}: {exc!r}") from exc
        if not entry.value:
            return ChatSession(policy=self.policy), 0
        return _session_decoder.decode(entry.value), int(entry.revision or 0)

    async def _update_session(self, session: str, change: Callable[[ChatSession], ChatSession]) -> ChatSession:
        for _ in range(50):
            state, revision = await self._read_session(session)
            new = change(state)
            if new == state and revision:
                return state
            try:
                if revision:
                    await self._kv.update(session, encode(new), last=revision)
                else:
                    await self._kv.create(session, encode(new))
                return new
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyDeletedError):
                continue
            except nats.js.errors.APIError as exc:
                if "wrong last sequence" in str(exc).lower():
                    continue
                raise ChatError(f"cannot update chat session {session}: {exc!r}") from exc
        raise ChatError(f"chat session {session}: too many concurrent updates")

    def _tier(self, task: str, fallback: str) -> str:
        if task in self.config.tasks or task in self.config.task_overrides:
            return ""
        try:
            return self.config.tier_for(fallback)
        except TandemError:
            return next(iter(self.config.tiers), "")


def _render_context(context: ModelContext, *, header: bool = True) -> str:
    lines = []
    if header:
        lines.append(f"model context: {context.tokens}/{context.budget} tokens, {len(context.messages)} of "
                     f"{context.stored} stored messages" + (f", {context.left_out} left out for the budget"
                                                            if context.left_out else ""))
    if context.summary is not None:
        lines.append(f"[summary of messages {context.summary.first_seq}–{context.summary.last_seq}] "
                     f"{context.summary.text}")
    for entry in context.messages:
        lines.append(f"{entry.role}: {entry.content}")
    if context.shared.last_task is not None:
        last = context.shared.last_task
        lines.append(f"[last task {last.task_id} {last.status}] {last.output[:300]}")
    return "\n".join(lines)

