"""Control messages every actor serves: liveness (``tandem.<actor>.ping``) and cancellation
(``tandem.control.cancel``)."""

from __future__ import annotations

from ._base import ErrorReply, Message

__all__ = ["CancelWork", "Ping", "Pong", "PingReply"]


class Ping(Message, frozen=True, kw_only=True, tag="ping"):
    """Is anyone serving this actor?"""


class Pong(Message, frozen=True, kw_only=True, tag="pong"):
    """Yes: ``actor`` with instance ``instance_id`` in process ``pid``."""

    actor: str
    instance_id: str
    pid: int


PingReply = Pong | ErrorReply


class CancelWork(Message, frozen=True, kw_only=True, tag="cancel_work"):
    """Broadcast on ``tandem.control.cancel``: every actor drops its in-flight handlers whose
    request carries this ``correlation_id`` (all the requests of one task share the task id),
    so a cancelled task stops everywhere at once — the router's HTTP call to the model included.
    A cancelled request is answered ``ErrorReply(code="cancelled")``."""
