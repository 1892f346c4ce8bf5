"""Context actor: every conversation's history, running summary and shared context (design note 003).

Storage design
--------------
*History* is a JetStream **stream** (``TANDEM_CONTEXT``), one subject per conversation
(``tandem.history.<session>``), not a KV value holding a list:

* an append is one publish, and the server gives it a sequence: two replicas appending to
  one conversation at once both land, in one order, with no read-modify-write of a list
  (a KV list would need a compare-and-set retry loop on a value that grows to 100 messages);
* each append still carries ``Nats-Expected-Last-Subject-Sequence`` (the last sequence this
  replica knows for the conversation), so a replica learns *in the same round trip* that
  another one appended meanwhile: it then reads the missing messages and publishes again.
  A replica whose cache was confirmed by its own append never needs to re-read;
* trimming is a subject purge below a sequence, and reads are direct gets (one for the
  last sequence, batched ``next_by_subj`` gets for what a replica has not seen yet), so any
  replica serves any conversation from a small per-replica cache and a restart (of the
  actor or of nats-server on the same store) loses nothing.

The *summary* and the *shared context* are small values read and replaced whole, so they
live in the KV bucket ``tandem_context`` (``summary.<session>``, ``shared.<session>``) and
are replaced with a revision check (``update(last=revision)``).

Limits (seed 003, Step 1.2 and Step 2): keep at most ``keep`` (100) messages; past that,
the oldest are folded into a running summary so the newest ``trim_to`` (80) remain; a
model is sent the summary plus the newest ``send`` (20) messages, fewer when they would
exceed ``token_budget`` (8000) tokens. Tokens are counted with ``tokenizer`` when one is
given, else estimated (:func:`estimate_tokens`).

Summarising runs off the reply path (a task of the actor started after the append is
answered), asks the router for task ``summarize``, and commits with a revision check; only
then are the folded messages purged. A failed or lost (revision conflict) summary purges
nothing: the messages stay and the next append tries again.

Shared context follows the task loop's events (``tandem.events.task.>``, one replica per
event): running tasks, the current plan, and the last task that ended with the start of
its output — which is also appended to the history, so the next turn can refer to it.

Errors::

    TandemError
     └── ContextError          (code "context": the store refused)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from opentelemetry import trace

from tandem.messages import (
    TERMINAL,
    ChatMessage,
    CompletionReply,
    CompletionRequest,
    ContextAppend,
    ContextAppended,
    ContextDelete,
    ContextDeleted,
    ContextEntry,
    ContextExport,
    ContextExportReply,
    ContextGet,
    ContextHistory,
    ContextHistoryReply,
    ContextList,
    ContextListReply,
    ConversationInfo,
    ModelContext,
    SharedContext,
    SharedGet,
    SharedReply,
    SharedUpdate,
    Summary,
    TaskEvent,
    TaskNote,
    encode,
    subjects,
    utcnow,
)
from tandem.services.bus import Bus
from tandem.services.config import Config
from tandem.services.errors import TandemError

from ._base import Actor, Endpoint

__all__ = ["ContextActor", "ContextError", "estimate_tokens"]

log = logging.getLogger("tandem.context")
tracer = trace.get_tracer("tandem.context")

_WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF
_BATCH = 256
_OUTPUT_NOTE_CHARS = 1500


class ContextError(TandemError):
    """Raised when the history stream or the context bucket refuses an operation."""

    code = "context"


class _Stored(msgspec.Struct, frozen=True, kw_only=True):
    """A history message as stored in the stream (its sequence is the stream's)."""

    role: str
    content: str
    at: datetime
    tokens: int = 0
    task_id: str = ""


_stored = msgspec.json.Decoder(_Stored)
_summary = msgspec.json.Decoder(Summary)
_shared = msgspec.json.Decoder(SharedContext)


def estimate_tokens(text: str) -> int:
    """Estimate the tokens of ``text`` without a tokenizer.

    Four ASCII characters per token, one token per other character (CJK text is about
    one token per character in common tokenizers), plus four for the message frame.

    Examples
    --------
    >>> estimate_tokens("hello world!")
    7
    >>> estimate_tokens("こんにちは")
    9
    """
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars) + 4


@dataclass
class _Cache:
    """What one replica knows of a conversation: every message up to ``complete_to``."""

    entries: list[ContextEntry] = field(default_factory=list)
    complete_to: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


def _setting(config: Config, key: str, given: Any, default: Any) -> Any:
    if given is not None:
        return given
    value = getattr(getattr(config, "context", None), key, None)
    return default if value is None else value


class ContextActor(Actor):
    """Serve ``tandem.context.*`` (see the module docstring).

    Parameters
    ----------
    bus : Bus
    config : Config
        A ``context`` section, when the config has one, supplies the limits below.
    keep, trim_to, send : int or None
        History limits (100 / 80 / 20).
    token_budget : int or None
        Tokens a model context may take (8000).
    summary_timeout : float or None
        Seconds one summary call may take (60).
    summary_max_tokens : int or None
        Longest summary, tokens (400).
    tokenizer : callable or None
        ``text -> tokens`` for the model in use; :func:`estimate_tokens` when ``None``.
    cache_sessions : int
        Conversations one replica keeps in memory.
    concurrency : int
    """

    name = "context"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (subjects.ROUTER_COMPLETE, subjects.HISTORY_ALL)
    jetstream: ClassVar[tuple[str, ...]] = (f"stream {subjects.CONTEXT_STREAM}", f"kv {subjects.CONTEXT_BUCKET}")

    def __init__(self, bus: Bus, config: Config, *, keep: int | None = None, trim_to: int | None = None,
                 send: int | None = None, token_budget: int | None = None, summary_timeout: float | None = None,
                 summary_max_tokens: int | None = None, tokenizer: Callable[[str], int] | None = None,
                 cache_sessions: int = 1024, concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.keep = int(_setting(config, "keep", keep, 100))
        self.trim_to = int(_setting(config, "trim_to", trim_to, 80))
        self.send = int(_setting(config, "send", send, 20))
        self.token_budget = int(_setting(config, "token_budget", token_budget, 8000))
        self.summary_timeout = float(_setting(config, "summary_timeout_s", summary_timeout, 60.0))
        self.summary_max_tokens = int(_setting(config, "summary_max_tokens", summary_max_tokens, 400))
        if not 0 < self.trim_to <= self.keep or self.send < 1 or self.token_budget < 1:
            raise ValueError(f"context limits need 0 < trim_to ({self.trim_to}) <= keep ({self.keep}), send >= 1, "
                             f"token_budget >= 1")
        self.count_tokens = tokenizer or estimate_tokens
        self.cache_sessions = cache_sessions
        self._cache: dict[str, _Cache] = {}
        self._summarizing: set[str] = set()
        self._kv: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(subjects.CONTEXT_APPEND, ContextAppend, self.append, timeout=15),
            Endpoint(subjects.CONTEXT_GET, ContextGet, self.get, timeout=15, idempotent=True),
            Endpoint(subjects.CONTEXT_HISTORY, ContextHistory, self.history, timeout=30, idempotent=True),
            Endpoint(subjects.CONTEXT_LIST, ContextList, self.list, timeout=30, idempotent=True),
            Endpoint(subjects.CONTEXT_DELETE, ContextDelete, self.delete, timeout=30, idempotent=True),
            Endpoint(subjects.CONTEXT_EXPORT, ContextExport, self.export, timeout=30, idempotent=True),
            Endpoint(subjects.CONTEXT_SHARED_GET, SharedGet, self.shared_get, timeout=10, idempotent=True),
            Endpoint(subjects.CONTEXT_SHARED_UPDATE, SharedUpdate, self.shared_update, timeout=10),
            Endpoint(subjects.EVENT_TASK_ALL, TaskEvent, self.on_task_event, timeout=30),
        ]

    async def setup(self, stack: AsyncExitStack) -> None:
        stream = StreamConfig(
            name=subjects.CONTEXT_STREAM, subjects=[subjects.HISTORY_ALL], storage=StorageType.FILE,
            allow_direct=True, discard=DiscardPolicy.OLD,
            # a safety net only: trimming is the summary's job, and a failing summary keeps messages
            max_msgs_per_subject=max(10 * self.keep, 1000), num_replicas=self.bus.replicas,
        )
        js = self.bus.jetstream
        try:
            try:
                await js.update_stream(stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(stream)
        except nats.errors.Error as exc:
            raise ContextError(f"cannot set up the history stream {subjects.CONTEXT_STREAM}: {exc}") from exc
        self._kv = await self.bus.key_value(subjects.CONTEXT_BUCKET)

    # -- requests --------------------------------------------------------------------------

    async def append(self, request: ContextAppend) -> ContextAppended:
        """Append one message; start a summary when the history is over ``keep``."""
        session = request.session
        subject = subjects.history(session)
        tokens = self.count_tokens(request.content)
        body = encode(_Stored(role=request.role, content=request.content, at=utcnow(), tokens=tokens,
                              task_id=request.task_id))
        cache = self._cached(session)
        meta: dict[str, Any] = {}

        async def read_meta() -> None:  # with the publish, not after it: one round trip less
            meta["summary"], meta["shared"] = await self._read_meta(session, shared=True)

        if request.reply_context:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_meta)
                entry, entries = await self._publish(request, session, subject, body, tokens, cache)
            summary, shared = meta["summary"], meta["shared"]
        else:
            entry, entries = await self._publish(request, session, subject, body, tokens, cache)
            summary, shared = None, (SharedContext(), 0)
            if len(entries) > self.keep:  # with `keep` or fewer cached, no summary can matter yet
                summary = (await self._read_summary(session))[0]
        if summary is not None and entries and entries[0].seq <= summary.last_seq:
            async with cache.lock:  # purged by whoever committed the summary: forget them here too
                cache.entries = [e for e in cache.entries if e.seq > summary.last_seq]
        if self._unsummarized(entries, summary) > self.keep and session not in self._summarizing:
            self._summarizing.add(session)
            self.start_soon(self._summarize_soon, session)
        context = None
        if request.reply_context:
            context = self._model_context(session, entries, summary, shared[0], request.budget)
        return ContextAppended(entry=entry, context=context, correlation_id=request.correlation_id,
                               conversation_id=session)

    async def _publish(self, request: ContextAppend, session: str, subject: str, body: bytes, tokens: int,
                       cache: _Cache) -> tuple[ContextEntry, list[ContextEntry]]:
        """Publish one message in order after what ``cache`` holds; return it and the cached history."""
        async with cache.lock:
            for _ in range(20):
                if cache.complete_to == 0:
                    await self._refresh(session, cache)
                # the expected last sequence detects another replica's append; the message id makes a
                # publish retried after a lost acknowledgement land once (JetStream's duplicate window)
                headers = {"Nats-Expected-Last-Subject-Sequence": str(cache.complete_to),
                           "Nats-Msg-Id": f"context-{request.correlation_id}"}
                try:
                    ack = await self.bus.jetstream.publish(subject, body, stream=subjects.CONTEXT_STREAM,
                                                           headers=headers, timeout=5)
                except nats.js.errors.APIError as exc:
                    if getattr(exc, "err_code", None) != _WRONG_LAST_SEQUENCE:
                        raise ContextError(f"append to {session} refused: {exc}") from exc
                    await self._refresh(session, cache)  # another replica appended: learn what, then retry
                    continue
                except nats.errors.Error as exc:
                    raise ContextError(f"append to {session} failed: {exc!r}") from exc
                entry = ContextEntry(seq=ack.seq, role=request.role, content=request.content, tokens=tokens,
                                     task_id=request.task_id)
                cache.entries.append(entry)
                cache.complete_to = ack.seq
                break
            else:
                raise ContextError(f"append to {session}: too many concurrent appends, try again")
            return entry, list(cache.entries)

    async def get(self, request: ContextGet) -> ModelContext:
        """Return the summary and the newest messages that fit the budget."""
        entries, summary, shared = await self._load(request.session)
        return self._model_context(request.session, entries, summary, shared, request.budget,
                                   correlation_id=request.correlation_id)

    async def history(self, request: ContextHistory) -> ContextHistoryReply:
        entries, summary, _ = await self._load(request.session)
        kept = self._kept(entries, summary)
        return ContextHistoryReply(session=request.session, messages=kept[-request.limit:], summary=summary,
                                   correlation_id=request.correlation_id, conversation_id=request.session)

    async def list(self, request: ContextList) -> ContextListReply:
        try:
            info = await self.bus.jetstream.stream_info(subjects.CONTEXT_STREAM, subjects_filter=subjects.HISTORY_ALL)
        except nats.errors.Error as exc:
            raise ContextError(f"cannot list conversations: {exc!r}") from exc
        prefix = subjects.history("")
        found = sorted((subject[len(prefix):], count) for subject, count in (info.state.subjects or {}).items())
        return ContextListReply(conversations=[ConversationInfo(session=s, messages=n) for s, n in found],
                                correlation_id=request.correlation_id)

    async def delete(self, request: ContextDelete) -> ContextDeleted:
        session = request.session
        cache = self._cached(session)
        async with cache.lock:
            await self._refresh(session, cache)
            count = len(cache.entries)
            try:
                await self.bus.jetstream.purge_stream(subjects.CONTEXT_STREAM, subject=subjects.history(session))
                for key in (f"summary.{session}", f"shared.{session}"):
                    await self._kv.purge(key)
            except nats.errors.Error as exc:
                raise ContextError(f"cannot delete {session}: {exc!r}") from exc
            self._cache.pop(session, None)
        return ContextDeleted(session=session, messages=count, correlation_id=request.correlation_id)

    async def export(self, request: ContextExport) -> ContextExportReply:
        entries, summary, shared = await self._load(request.session)
        return ContextExportReply(session=request.session, messages=self._kept(entries, summary), summary=summary,
                                  shared=shared, correlation_id=request.correlation_id)

    async def shared_get(self, request: SharedGet) -> SharedReply:
        shared, revision = await self._read_shared(request.session)
        return SharedReply(session=request.session, shared=shared, revision=revision,
                           correlation_id=request.correlation_id)

    async def shared_update(self, request: SharedUpdate) -> SharedReply:
        def change(shared: SharedContext) -> SharedContext:
            prefs = {**shared.preferences, **request.preferences}
            return msgspec.structs.replace(shared, preferences={k: v for k, v in prefs.items() if v})

        shared, revision = await self._update_shared(request.session, change)
        return SharedReply(session=request.session, shared=shared, revision=revision,
                           correlation_id=request.correlation_id)

    # -- task events -----------------------------------------------------------------------

    async def on_task_event(self, event: TaskEvent) -> None:
        """Keep the shared context of the event's conversation in step with the task loop."""
        session = event.conversation_id
        if not _valid_session(session):
            return
        note = TaskNote(task_id=event.task_id, status=event.status, detail=event.detail[:500])
        if event.status in TERMINAL:
            note = await self._task_outcome(event, note)

        def change(shared: SharedContext) -> SharedContext:
            running = dict(shared.running)
            if event.status in TERMINAL:
                running.pop(event.task_id, None)
                return msgspec.structs.replace(shared, running=running, last_task=note, current_plan="")
            if shared.last_task is not None and shared.last_task.task_id == event.task_id:
                return shared  # a late progress event of a task that has ended
            previous = running.get(event.task_id)
            running[event.task_id] = msgspec.structs.replace(note, task=previous.task if previous else note.task)
            plan = _plan_text(event) or shared.current_plan
            return msgspec.structs.replace(shared, running=running, current_plan=plan)

        await self._update_shared(session, change)
        if event.status in TERMINAL:
            text = f"[task {event.task_id} {event.status}] {note.detail}".strip()
            if note.output:
                text += f"\nResult (start):\n{note.output}"
            await self.append(ContextAppend(session=session, role="system", content=text, task_id=event.task_id,
                                            conversation_id=session))

    async def _task_outcome(self, event: TaskEvent, note: TaskNote) -> TaskNote:
        from tandem.services.tasks import TaskClient  # the task loop's client, for its result

        try:
            state = await TaskClient(self.bus, timeout=5).get(event.task_id)
        except TandemError as exc:
            log.info("task %s ended but its state could not be read: %s", event.task_id, exc)
            return note
        output = ""
        if state.result is not None and state.result.outputs:
            output = state.result.outputs[0].text[:_OUTPUT_NOTE_CHARS]
        detail = note.detail or (state.error.message[:500] if state.error is not None else "")
        return msgspec.structs.replace(note, task=state.task[:300], output=output, detail=detail)

    # -- storage ---------------------------------------------------------------------------

    def _cached(self, session: str) -> _Cache:
        cache = self._cache.get(session)
        if cache is None:
            if len(self._cache) >= self.cache_sessions:  # forget the oldest idle conversation
                for key, old in list(self._cache.items()):
                    if not old.lock.locked():
                        del self._cache[key]
                        break
            cache = self._cache[session] = _Cache()
        return cache

    async def _last_seq(self, subject: str) -> int:
        try:
            msg = await self.bus.jetstream.get_msg(subjects.CONTEXT_STREAM, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return 0
        except nats.errors.Error as exc:
            raise ContextError(f"cannot read {subject}: {exc!r}") from exc
        return int(msg.seq or 0)

    async def _refresh(self, session: str, cache: _Cache) -> None:
        """Bring ``cache`` up to the stream's last message of the conversation (lock held)."""
        subject = subjects.history(session)
        last = await self._last_seq(subject)
        if last == cache.complete_to:
            return
        if last < cache.complete_to:  # deleted (or the store was replaced): start over
            cache.entries, cache.complete_to = [], 0
        if last == 0:
            return
        start = cache.complete_to + 1
        while start <= last:
            got = await self._batch(subject, start)
            if not got:
                break
            cache.entries.extend(got)
            start = got[-1].seq + 1
        # a batch may reach past `last` (appended meanwhile): the cache is complete to what it read
        cache.complete_to = max(last, cache.entries[-1].seq if cache.entries else 0)

    async def _batch(self, subject: str, start: int) -> list[ContextEntry]:
        """Read up to :data:`_BATCH` messages of ``subject`` from ``start`` with one batched direct get."""
        nc = self.bus.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        got: list[ContextEntry] = []
        try:
            request = msgspec.json.encode({"seq": start, "next_by_subj": subject, "batch": _BATCH})
            await nc.publish(f"$JS.API.DIRECT.GET.{subjects.CONTEXT_STREAM}", request, reply=inbox)
            with anyio.fail_after(10):
                async for msg in sub.messages:
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status is not None:  # 204 EOB, 404 nothing (more), 408 …
                        if status not in ("204", "404"):
                            raise ContextError(f"reading {subject}: status {status} {headers.get('Description', '')}")
                        break
                    seq = int(headers["Nats-Sequence"])
                    stored = _stored.decode(msg.data)
                    got.append(ContextEntry(seq=seq, role=stored.role, content=stored.content,  # type: ignore[arg-type]
                                            at=stored.at, tokens=stored.tokens, task_id=stored.task_id))
                    if headers.get("Nats-Num-Pending") == "0":
                        break
        except TimeoutError as exc:
            raise ContextError(f"reading {subject}: no answer from the stream") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
        return got

    async def _read_meta(self, session: str, *, shared: bool) -> tuple[Summary | None, tuple[SharedContext, int]]:
        result: dict[str, Any] = {}

        async def read_summary() -> None:
            result["summary"] = (await self._read_summary(session))[0]

        async def read_shared() -> None:
            result["shared"] = await self._read_shared(session)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_summary)
            if shared:
                tg.start_soon(read_shared)
        return result["summary"], result.get("shared", (SharedContext(), 0))

    async def _load(self, session: str) -> tuple[list[ContextEntry], Summary | None, SharedContext]:
        cache = self._cached(session)
        result: dict[str, Any] = {}

        async def refresh() -> None:
            async with cache.lock:
                await self._refresh(session, cache)
                result["entries"] = list(cache.entries)

        async def meta() -> None:
            result["meta"] = await self._read_meta(session, shared=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(refresh)
            tg.start_soon(meta)
        summary, (shared, _) = result["meta"]
        entries = result["entries"]
        if summary is not None and entries and entries[0].seq <= summary.last_seq:
            async with cache.lock:  # purged by whoever committed the summary: forget them here too
                cache.entries = [e for e in cache.entries if e.seq > summary.last_seq]
        return entries, summary, shared

    async def _read_summary(self, session: str) -> tuple[Summary | None, int]:
        try:
            entry = await self._kv.get(f"summary.{session}")
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        except nats.errors.Error as exc:
            raise ContextError(f"cannot read the summary of {session}: {exc!r}") from exc
        return (_summary.decode(entry.value) if entry.value else None), int(entry.revision or 0)

    async def _read_shared(self, session: str) -> tuple[SharedContext, int]:
        try:
            entry = await self._kv.get(f"shared.{session}")
        except nats.js.errors.KeyNotFoundError:
            return SharedContext(), 0
        except nats.errors.Error as exc:
            raise ContextError(f"cannot read the shared context of {session}: {exc!r}") from exc
        return (_shared.decode(entry.value) if entry.value else SharedContext()), int(entry.revision or 0)

    async def _update_shared(self, session: str, change: Callable[[SharedContext], SharedContext]
                             ) -> tuple[SharedContext, int]:
        key = f"shared.{session}"
        for _ in range(50):
            shared, revision = await self._read_shared(session)
            new = change(shared)
            if new == shared and revision:
                return shared, revision
            try:
                if revision:
                    revision = await self._kv.update(key, encode(new), last=revision)
                else:
                    revision = await self._kv.create(key, encode(new))
                return new, revision
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyDeletedError):
                continue  # someone else changed it: read again
            except nats.js.errors.APIError as exc:
                if "wrong last sequence" in str(exc).lower():
                    continue
                raise ContextError(f"cannot update the shared context of {session}: {exc!r}") from exc
        raise ContextError(f"shared context of {session}: too many concurrent updates")

    # -- model context ---------------------------------------------------------------------

    @staticmethod
    def _kept(entries: list[ContextEntry], summary: Summary | None) -> list[ContextEntry]:
        after = summary.last_seq if summary is not None else 0
        return [e for e in entries if e.seq > after]

    def _unsummarized(self, entries: list[ContextEntry], summary: Summary | None) -> int:
        return len(self._kept(entries, summary))

    def _model_context(self, session: str, entries: list[ContextEntry], summary: Summary | None,
                       shared: SharedContext, budget: int | None, *, correlation_id: str = "") -> ModelContext:
        budget = min(budget or self.token_budget, self.token_budget)
        kept = self._kept(entries, summary)
        recent = kept[-self.send:]
        used = 0
        if summary is not None:
            cost = self.count_tokens(summary.text)
            if cost > budget // 2:  # a summary never takes more than half the budget
                chars = max(0, len(summary.text) * (budget // 2) // max(cost, 1) - 20)
                summary = msgspec.structs.replace(summary, text=summary.text[:chars] + " …")
                cost = self.count_tokens(summary.text)
            used = cost
        chosen: list[ContextEntry] = []
        for entry in reversed(recent):  # newest first: the oldest are left out when over budget
            cost = entry.tokens or self.count_tokens(entry.content)
            if used + cost > budget:
                break
            chosen.append(entry)
            used += cost
        chosen.reverse()
        extra = {"correlation_id": correlation_id} if correlation_id else {}
        return ModelContext(session=session, summary=summary, messages=chosen, tokens=used, budget=budget,
                            stored=len(kept), left_out=len(recent) - len(chosen), shared=shared,
                            conversation_id=session, **extra)

    # -- summaries -------------------------------------------------------------------------

    async def _summarize_soon(self, session: str) -> None:
        try:
            await self.summarize(session)
        except TandemError as exc:  # the messages stay; the next append tries again
            log.warning("summary of %s failed, messages kept: %s", session, exc)
        except (nats.errors.Error, OSError, msgspec.DecodeError) as exc:
            log.warning("summary of %s failed, messages kept: %r", session, exc)
        finally:
            self._summarizing.discard(session)

    async def summarize(self, session: str) -> Summary | None:
        """Fold the oldest messages beyond ``trim_to`` into the running summary, if over ``keep``.

        Returns
        -------
        Summary or None
            The committed summary; ``None`` when there was nothing to do or another replica
            committed first.

        Raises
        ------
        TandemError
            When the router or the store failed (nothing is purged).
        """
        with tracer.start_as_current_span("summarize context", attributes={"gen_ai.conversation.id": session}) as span:
            entries, summary, _ = await self._load(session)
            _, revision = await self._read_summary(session)
            kept = self._kept(entries, summary)
            if len(kept) <= self.keep:
                return None
            fold = kept[: len(kept) - self.trim_to]
            transcript = "\n".join(f"{e.role}: {e.content[:2000]}" for e in fold)
            previous = f"Summary so far:\n{summary.text}\n\n" if summary is not None else ""
            request = CompletionRequest(
                task="summarize", tier=self._tier("summarize"), conversation_id=session,
                messages=[ChatMessage(role="system", content=(
                              "Summarise the conversation below for the assistant's memory: facts, decisions, "
                              "user preferences, tasks and their results. Be brief; write plain sentences.")),
                          ChatMessage(role="user", content=f"{previous}New messages:\n{transcript}")],
                max_tokens=self.summary_max_tokens, temperature=0.0, timeout_s=self.summary_timeout)
            reply = await self.bus.request(subjects.ROUTER_COMPLETE, request, CompletionReply,
                                           timeout=self.summary_timeout + 5)
            text = reply.content.strip()
            if not text:
                raise ContextError(f"the summary of {session} came back empty")
            new = Summary(text=text, first_seq=summary.first_seq if summary is not None else fold[0].seq,
                          last_seq=fold[-1].seq, messages=(summary.messages if summary is not None else 0) + len(fold),
                          model=reply.model)
            key = f"summary.{session}"
            try:
                if revision:
                    await self._kv.update(key, encode(new), last=revision)
                else:
                    await self._kv.create(key, encode(new))
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
                if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or "wrong last sequence" in str(exc).lower():
                    span.set_attribute("tandem.context.summary_conflict", True)
                    return None  # another replica summarised meanwhile: keep its summary, purge nothing
                raise ContextError(f"cannot commit the summary of {session}: {exc!r}") from exc
            try:
                await self.bus.jetstream.purge_stream(subjects.CONTEXT_STREAM, subject=subjects.history(session),
                                                      seq=new.last_seq + 1)
            except nats.errors.Error as exc:  # reads skip what the summary covers; the next summary purges
                log.warning("summary of %s committed, purge failed: %r", session, exc)
            span.set_attribute("tandem.context.summary_range", f"{new.first_seq}-{new.last_seq}")
            cache = self._cached(session)
            async with cache.lock:
                cache.entries = [e for e in cache.entries if e.seq > new.last_seq]
            return new

    def _tier(self, task: str) -> str:
        if task in self.config.tasks or task in self.config.task_overrides:
            return ""
        for fallback in ("manual_transform", "single_stage", "choice"):
            try:
                return self.config.tier_for(fallback)
            except TandemError:
                continue
        return next(iter(self.config.tiers), "")


def _valid_session(session: str) -> bool:
    return 0 < len(session) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in session)


def _plan_text(event: TaskEvent) -> str:
    if event.plan is None:
        return ""
    from tandem.services.approval import describe_step

    return "\n".join(f"{step.step}. {describe_step(step)}" for step in event.plan.workflow)

