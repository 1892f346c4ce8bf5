"""``tandem chat``: an interactive chat session (prompt_toolkit), or ``--jsonl`` for scripts.

Kept cheap to import (the CLI imports it at start-up): everything heavy is imported inside
the functions.

``--jsonl`` reads one message per line from stdin and waits for each reply; a line that
is a JSON object is ``{"text": ..., "inputs": {"3": ...}}``. Client-side lines: ``/wait``
(until an approval is pending or no task runs), ``/wait done`` (until no task runs),
``/quit``. At the end of input it waits for the session's running tasks (``--wait``
seconds). Every event is one JSON line on stdout: ``reply``, ``task_event``, ``approval``,
``task_result``, ``error``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["chat_command"]


def chat_command(
    session: Annotated[Optional[str], typer.Option("--session", "-s", help="Resume (or name) this conversation.")] = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Read messages from stdin, one per line; write JSON lines.")] = False,
    policy: Annotated[Optional[str], typer.Option("--policy", help="enqueue | reject | interrupt: a new task while one runs.")] = None,
    wait: Annotated[float, typer.Option("--wait", help="With --jsonl: seconds to wait for running tasks at the end.")] = 600.0,
    ephemeral: Annotated[bool, typer.Option("--ephemeral", help="Embedded server only: a throwaway store (the conversation is forgotten).")] = False,
    nats_url: Annotated[Optional[str], typer.Option("--nats-url", envvar="TANDEM_NATS_URL", help="NATS server to use (default: the config's, else an embedded one).")] = None,
    creds: Annotated[Optional[Path], typer.Option("--creds", envvar="TANDEM_NATS_CREDS", help="NATS credentials file (.creds or an nkey seed).")] = None,
    config_path: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config.")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Chat: questions are answered at once, tasks run in the background (progress shown as it comes).

    Commands: /tasks, /cancel [ID], /history, /context, /session, /policy, /set KEY VALUE,
    /interrupt TASK, /quit.
    """
    from .cli import _config, _invoke, _setup_logging, _use_creds

    _setup_logging(verbose)
    if policy not in (None, "enqueue", "reject", "interrupt"):
        raise typer.BadParameter("--policy is one of enqueue, reject, interrupt")
    _use_creds(creds)  # as every command's --creds: load_config reads it from the environment
    config, url = _config(config_path, nats_url, ephemeral=ephemeral)
    raise typer.Exit(_invoke(_chat, config, url, session, jsonl, policy, wait))


async def _chat(config: Any, url: str | None, session: str | None, jsonl: bool, policy: str | None,
                wait: float) -> int:
    from contextlib import AsyncExitStack

    import anyio

    from tandem.actors import ACTORS
    from tandem.messages import new_id

    from .cli import _open_bus
    from .runtime import find_running, start_actors
    from .telemetry import aclose_tracing, setup_tracing

    session = session or new_id()[:16]
    provider = setup_tracing("tandem")
    try:
        async with AsyncExitStack() as stack:
            # the embedded server runs on the config's persistent store (nats.store / TANDEM_STORE_DIR), shared
            # with the plan cache and the tasks, so the conversation survives restarts
            bus, _ = await stack.enter_async_context(_open_bus(config, url, "tandem-chat"))
            remote = await find_running(bus, ACTORS) if url else set()
            await stack.enter_async_context(start_actors(bus, config, [n for n in ACTORS if n not in remote]))
            chat = _Session(bus, session, jsonl=jsonl, policy=policy)
            async with anyio.create_task_group() as tg:
                await tg.start(chat.follow)
                if jsonl:
                    code = await chat.run_jsonl(wait)
                else:
                    code = await chat.run_interactive()
                tg.cancel_scope.cancel()
            return code
    finally:
        await aclose_tracing(provider)  # spans written off the event loop, shielded


class _Session:
    """One chat session on the bus: sends turns, shows the session's task events."""

    def __init__(self, bus: Any, session: str, *, jsonl: bool, policy: str | None) -> None:
        from .tasks import TaskClient

        self.bus = bus
        self.session = session
        self.jsonl = jsonl
        self.policy = policy
        self.tasks = TaskClient(bus)
        self.print = self._print_json if jsonl else self._print_text

    # -- output ----------------------------------------------------------------------------

    def _print_json(self, what: str, /, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"type": what, "session": self.session, **fields}, ensure_ascii=False,
                                    default=str) + "\n")
        sys.stdout.flush()

    def _print_text(self, what: str, /, **fields: Any) -> None:
        text = fields.get("text") or ""
        match what:
            case "reply":
                line = text
            case "task_event":
                line = f"  · task {fields['task_id'][:8]} {fields['kind']}: {fields.get('detail', '')}"
            case "approval":
                line = f"task {fields['task_id'][:8]} needs approval:\n{fields['question']}"
            case "task_result":
                line = f"task {fields['task_id'][:8]} {fields['status']}" + (f":\n{text}" if text else "")
            case _:
                line = f"{what}: {text}"
        print(line, flush=True)  # prompt_toolkit's patch_stdout puts it above the line being typed

    # -- task events -------------------------------------------------------------------------

    async def follow(self, *, task_status: Any) -> None:
        from tandem.messages import TERMINAL, TaskEvent, decoder, subjects

        event_decoder = decoder(TaskEvent)
        sub = await self.bus.subscribe(subjects.EVENT_TASK_ALL)
        await self.bus.flush()
        task_status.started()
        try:
            async for msg in sub.messages:
                try:
                    event = event_decoder.decode(await self.bus.payload_of(msg))
                except Exception:  # noqa: BLE001 - someone else's malformed event: not ours to show
                    continue
                if event.conversation_id != self.session:
                    continue
                if event.kind == "awaiting_approval":
                    self.print("approval", task_id=event.task_id, question=event.question)
                elif event.status in TERMINAL:
                    await self._result(event)
                else:
                    self.print("task_event", task_id=event.task_id, kind=event.kind, status=event.status,
                               detail=event.detail[:300])
        finally:
            import anyio

            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _result(self, event: Any) -> None:
        from .errors import TandemError

        text, error = "", event.error.message if event.error is not None else ""
        try:
            state = await self.tasks.get(event.task_id)
            if state.result is not None and state.result.outputs:
                text = "\n".join(o.text for o in state.result.outputs)
        except TandemError as exc:
            error = error or str(exc)
        self.print("task_result", task_id=event.task_id, status=event.status, text=text, error=error,
                   detail=event.detail[:300])

    # -- turns -----------------------------------------------------------------------------

    async def send(self, text: str, inputs: dict[int, str] | None = None) -> Any:
        from tandem.messages import ChatReply, ChatSend, subjects

        from .errors import TandemError

        try:
            reply = await self.bus.request(subjects.CHAT_SEND, ChatSend(
                session=self.session, text=text, inputs=inputs or {}, policy=self.policy,
                conversation_id=self.session), ChatReply, timeout=300)
        except TandemError as exc:
            self.print("error", text=str(exc))
            return None
        fields = {"kind": reply.kind, "text": reply.text, "task_id": reply.task_id, "trace_id": reply.trace_id,
                  "intent": reply.intent.kind if reply.intent else "", "decision": reply.decision}
        if reply.context is not None:
            fields["context_tokens"] = reply.context.tokens
        self.print("reply", **fields)
        return reply

    async def state(self) -> Any:
        from tandem.messages import ChatSessionGet, ChatSessionReply, subjects

        return await self.bus.request(subjects.CHAT_SESSION, ChatSessionGet(session=self.session),
                                      ChatSessionReply, timeout=15)

    async def wait_tasks(self, seconds: float, *, approval: bool) -> None:
        import anyio

        with anyio.move_on_after(seconds):
            while True:
                state = await self.state()
                if not state.state.running and not state.state.queued or (approval and state.approvals):
                    return
                await anyio.sleep(0.2)

    async def run_jsonl(self, wait: float) -> int:
        import anyio

        self.print("session", text=self.session)
        stdin = anyio.wrap_file(sys.stdin)
        async for raw in stdin:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            inputs: dict[int, str] = {}
            if line.lstrip().startswith("{"):
                data = json.loads(line)
                line = str(data.get("text", ""))
                inputs = {int(fd): str(text) for fd, text in (data.get("inputs") or {}).items()}
            command = line.strip()
            if command == "/quit":
                return 0
            if command in ("/wait", "/wait done"):
                await self.wait_tasks(wait, approval=command == "/wait")
                continue
            await self.send(line, inputs)
        await self.wait_tasks(wait, approval=False)
        return 0

    async def run_interactive(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        history = _default_store().parent / "chat_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        prompt = PromptSession(history=FileHistory(str(history)))
        print(f"session {self.session} — /help for commands, /quit to leave", flush=True)
        state = await self.state()
        for task in state.state.running:
            print(f"  running: {task.task_id} {task.status} {task.task}", flush=True)
        for pending in state.approvals:
            print(f"task {pending.task_id[:8]} needs approval:\n{pending.question}", flush=True)
        with patch_stdout():
            while True:
                try:
                    line = await prompt.prompt_async(f"{self.session[:8]}> ")
                except (EOFError, KeyboardInterrupt):
                    return 0
                if line.strip() == "/quit":
                    return 0
                if line.strip():
                    await self.send(line)
