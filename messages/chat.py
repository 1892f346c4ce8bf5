"""Chat flow: one user turn in, one reply out; tasks handed to the task loop (design note 003).

``tandem.chat.send``: :class:`ChatSend` → :class:`ChatReply`. The intent of the message
is understood once (:class:`~tandem.messages.IntentResult`) and travels with whatever
follows: a direct reply, a task submitted to the task actor, a control command, or an
answer to a task's pending approval. Task progress is not part of the reply: clients
follow ``tandem.events.task.>`` for the session's ``conversation_id``.

``tandem.chat.session``: :class:`ChatSessionGet` → :class:`ChatSessionReply` (policy,
running and queued tasks, pending approvals).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._base import ErrorReply, Message
from .context import SESSION_ID_PATTERN, ModelContext
from .task import IntentResult, TaskSubmit

__all__ = [
    "ChatPolicy",
    "ChatReply",
    "ChatReplyKind",
    "ChatSend",
    "ChatSession",
    "ChatSessionGet",
    "ChatSessionReply",
    "ChatTurnReply",
    "PendingApproval",
    "TaskLine",
]

SessionId = Annotated[str, Meta(pattern=SESSION_ID_PATTERN)]

ChatPolicy = Literal["enqueue", "reject", "interrupt"]
"""What a new task does while another of the conversation runs: wait its turn, be refused,
or cancel the running one."""

ChatReplyKind = Literal["reply", "task_submitted", "task_queued", "task_rejected", "answer", "control", "error"]


class ChatSend(Message, frozen=True, kw_only=True, tag="chat_send"):
    """``tandem.chat.send``: one user message.

    Parameters
    ----------
    session : str
        The conversation (also the envelope's ``conversation_id``).
    text : str
    inputs : dict of int to str
        Input texts for a task (fd 3, 4 …); a fenced code block in ``text`` becomes fd 3.
    policy : {"enqueue", "reject", "interrupt"} or None
        For this message only (``/interrupt …`` sets ``interrupt``); ``None``: the session's.
    """

    session: SessionId
    text: Annotated[str, Meta(max_length=100_000)]
    inputs: dict[int, str] = {}
    policy: ChatPolicy | None = None


class TaskLine(msgspec.Struct, frozen=True, kw_only=True):
    """A task of the conversation as the chat shows it."""

    task_id: str
    task: str
    status: str = ""


class PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    question: str


class ChatReply(Message, frozen=True, kw_only=True, tag="chat_reply"):
    """The chat loop's answer to one message.

    Parameters
    ----------
    session : str
    kind : ChatReplyKind
        ``reply`` (a direct answer), ``task_submitted``, ``task_queued``, ``task_rejected``,
        ``answer`` (to a pending approval; see ``decision``), ``control`` (a command's
        output), ``error``.
    text : str
        What to show.
    intent : IntentResult or None
        How the message was understood (once).
    task_id : str
        The task submitted, queued, answered or cancelled.
    decision : str
        With ``answer``: ``approved``, ``partial``, ``rejected`` or ``unclear``.
    question : str
        With an ``unclear`` answer: the question asked again.
    model : str
        The model that wrote a direct reply.
    trace_id : str
        The turn's trace (``tandem trace``).
    task_trace_id : str
        The submitted task's own trace (linked from the turn).
    tasks : list of TaskLine
        With ``/tasks`` and task replies: the conversation's tasks that have not ended.
    context : ModelContext or None
        With ``/context`` and ``/history``.
    """

    session: str
    kind: ChatReplyKind
    text: str = ""
    intent: IntentResult | None = None
    task_id: str = ""
    decision: str = ""
    question: str = ""
    model: str = ""
    trace_id: str = ""
    task_trace_id: str = ""
    tasks: list[TaskLine] = []
    context: ModelContext | None = None


ChatTurnReply = ChatReply | ErrorReply


class ChatSession(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation's chat state, in the KV bucket ``tandem_chat`` (key: the session).

    Parameters
    ----------
    policy : ChatPolicy
    running : list of TaskLine
        Tasks submitted and not yet ended.
    queued : list of TaskSubmit
        Tasks waiting for the running one (``enqueue``), submitted in order.
    """

    policy: ChatPolicy = "enqueue"
    running: list[TaskLine] = []
    queued: list[TaskSubmit] = []


class ChatSessionGet(Message, frozen=True, kw_only=True, tag="chat_session_get"):
    """``tandem.chat.session``: the chat state of a conversation (and its pending approvals)."""

    session: SessionId


class ChatSessionReply(Message, frozen=True, kw_only=True, tag="chat_session_reply"):
    session: str
    state: ChatSession = ChatSession()
    approvals: list[PendingApproval] = []
