"""Context flow: each conversation's history, running summary and shared context (design note 003).

Served by the context actor on ``tandem.context.*`` (request/reply)::

    ContextAppend   ─► ContextAppended   (with ``reply_context``: the model context too)
    ContextGet      ─► ModelContext      (summary + newest messages, within the token budget)
    ContextHistory  ─► ContextHistoryReply
    ContextList     ─► ContextListReply
    ContextDelete   ─► ContextDeleted
    ContextExport   ─► ContextExportReply
    SharedGet       ─► SharedReply
    SharedUpdate    ─► SharedReply       (user preferences; task fields follow task events)

A conversation is named by a session id (:data:`SESSION_ID_PATTERN`): one NATS subject
token and one KV key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._base import ErrorReply, Message, utcnow

__all__ = [
    "SESSION_ID_PATTERN",
    "ContextAppend",
    "ContextAppended",
    "ContextDelete",
    "ContextDeleted",
    "ContextEntry",
    "ContextExport",
    "ContextExportReply",
    "ContextGet",
    "ContextHistory",
    "ContextHistoryReply",
    "ContextList",
    "ContextListReply",
    "ContextReply",
    "ConversationInfo",
    "ModelContext",
    "SharedContext",
    "SharedGet",
    "SharedReply",
    "SharedUpdate",
    "Summary",
    "TaskNote",
]

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A session (conversation) id: letters, digits, ``_`` and ``-``."""

SessionId = Annotated[str, Meta(pattern=SESSION_ID_PATTERN)]

Role = Literal["user", "assistant", "system"]


class ContextEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a conversation's history.

    Parameters
    ----------
    seq : int
        Its sequence in the history stream: increasing within a conversation, never reused.
    role : {"user", "assistant", "system"}
    content : str
    at : datetime
    tokens : int
        Its size in tokens as counted when appended.
    task_id : str
        The task it is about (a task's announced result), else ``""``.
    """

    seq: int
    role: Role
    content: str
    at: datetime = msgspec.field(default_factory=utcnow)
    tokens: int = 0
    task_id: str = ""


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The running summary of the messages trimmed from a conversation.

    Parameters
    ----------
    text : str
    first_seq, last_seq : int
        The range of history sequences it covers (inclusive).
    messages : int
        How many messages it folds in.
    model : str
        The model that wrote it.
    updated_at : datetime
    """

    text: str
    first_seq: int
    last_seq: int
    messages: int
    model: str = ""
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class TaskNote(msgspec.Struct, frozen=True, kw_only=True):
    """What the shared context remembers of one task."""

    task_id: str
    task: str = ""
    status: str = ""
    detail: str = ""
    output: str = ""
    """The start of the task's first output (cut)."""
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class SharedContext(msgspec.Struct, frozen=True, kw_only=True):
    """The shared context of seed 003 (``SharedContextManager``), one per conversation.

    Parameters
    ----------
    last_task : TaskNote or None
        The last task that ended (its result: "the result", "さっきの結果").
    current_plan : str
        The plan of the task running or awaiting approval, as text.
    running : dict of str to TaskNote
        Tasks of this conversation that have not ended, by id.
    preferences : dict of str to str
        User preferences (``/set key value``).
    """

    last_task: TaskNote | None = None
    current_plan: str = ""
    running: dict[str, TaskNote] = {}
    preferences: dict[str, str] = {}


class ConversationInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the conversation list."""

    session: str
    messages: int
    summarized: int = 0


class ContextAppend(Message, frozen=True, kw_only=True, tag="context_append"):
    """``tandem.context.append``: add one message to a conversation.

    Parameters
    ----------
    session : str
    role : {"user", "assistant", "system"}
    content : str
    task_id : str
    reply_context : bool
        Also return the model context after the append (one round trip for a chat turn).
    budget : int or None
        Token budget for that model context (``None``: the actor's).
    """

    session: SessionId
    role: Role
    content: Annotated[str, Meta(max_length=200_000)]
    task_id: str = ""
    reply_context: bool = False
    budget: Annotated[int, Meta(ge=1)] | None = None


class ContextGet(Message, frozen=True, kw_only=True, tag="context_get"):
    """``tandem.context.get``: what a model should see (summary + newest messages within budget)."""

    session: SessionId
    budget: Annotated[int, Meta(ge=1)] | None = None


class ModelContext(Message, frozen=True, kw_only=True, tag="model_context"):
    """The model context of a conversation.

    Parameters
    ----------
    session : str
    summary : Summary or None
        Travels in front of ``messages``.
    messages : list of ContextEntry
        The newest messages (at most the ``send`` limit), oldest first, that fit the budget.
    tokens : int
        Tokens of summary + messages.
    budget : int
    stored : int
        Messages kept in the history.
    left_out : int
        Newest messages left out because of the budget.
    shared : SharedContext
    """

    session: str
    summary: Summary | None = None
    messages: list[ContextEntry] = []
    tokens: int = 0
    budget: int = 0
    stored: int = 0
    left_out: int = 0
    shared: SharedContext = SharedContext()


class ContextAppended(Message, frozen=True, kw_only=True, tag="context_appended"):
    """The appended entry, and the model context when asked for."""

    entry: ContextEntry
    context: ModelContext | None = None


class ContextHistory(Message, frozen=True, kw_only=True, tag="context_history"):
    """``tandem.context.history``: every stored message (the newest ``limit``)."""

    session: SessionId
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 1000


class ContextHistoryReply(Message, frozen=True, kw_only=True, tag="context_history_reply"):
    session: str
    messages: list[ContextEntry] = []
    summary: Summary | None = None


class ContextList(Message, frozen=True, kw_only=True, tag="context_list"):
    """``tandem.context.list``: the conversations stored."""


class ContextListReply(Message, frozen=True, kw_only=True, tag="context_list_reply"):
    conversations: list[ConversationInfo] = []


class ContextDelete(Message, frozen=True, kw_only=True, tag="context_delete"):
    """``tandem.context.delete``: forget a conversation (history, summary, shared context)."""

    session: SessionId


class ContextDeleted(Message, frozen=True, kw_only=True, tag="context_deleted"):
    session: str
    messages: int = 0


class ContextExport(Message, frozen=True, kw_only=True, tag="context_export"):
    """``tandem.context.export``: everything kept of a conversation."""

    session: SessionId


class ContextExportReply(Message, frozen=True, kw_only=True, tag="context_export_reply"):
    session: str
    messages: list[ContextEntry] = []
    summary: Summary | None = None
    shared: SharedContext = SharedContext()


class SharedGet(Message, frozen=True, kw_only=True, tag="shared_get"):
    """``tandem.context.shared.get``: the shared context of a conversation."""

    session: SessionId


class SharedUpdate(Message, frozen=True, kw_only=True, tag="shared_update"):
    """``tandem.context.shared.update``: set (or with ``""`` remove) user preferences."""

    session: SessionId
    preferences: dict[str, str] = {}


class SharedReply(Message, frozen=True, kw_only=True, tag="shared_reply"):
    session: str
    shared: SharedContext = SharedContext()
    revision: int = 0


ContextReply = (ContextAppended | ModelContext | ContextHistoryReply | ContextListReply | ContextDeleted
                | ContextExportReply | SharedReply | ErrorReply)
