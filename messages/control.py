"""Liveness/discovery messages served by every actor on ``tandem.<actor>.ping``."""

from __future__ import annotations

from ._base import ErrorReply, Message

__all__ = ["Ping", "Pong", "PingReply"]


class Ping(Message, frozen=True, kw_only=True, tag="ping"):
    """Is anyone serving this actor?"""


class Pong(Message, frozen=True, kw_only=True, tag="pong"):
    """Yes: ``actor`` with instance ``instance_id`` in process ``pid``."""

    actor: str
    instance_id: str
    pid: int


PingReply = Pong | ErrorReply
