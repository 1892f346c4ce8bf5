"""One deadline per task, carried by every request made on its behalf.

The convention (the same for every actor and any client):

* a request carries the absolute deadline of the work it belongs to in the NATS header
  ``Tandem-Deadline``: Unix time in seconds, as a decimal string (``"1764500000.250"``);
* the receiving actor runs its handler inside :func:`deadline_scope` for that value, so its
  own requests (the next hop) carry the same deadline and wait only for *what is left*;
* :meth:`Bus.request <tandem.services.bus.Bus.request>` waits ``min(timeout, remaining())``
  and raises :class:`~tandem.services.errors.DeadlineExceeded` when nothing is left;
* an actor whose handler is stopped by the deadline (not by its own endpoint timeout)
  replies ``ErrorReply(code="deadline_exceeded")``.

Wall-clock time is used because the deadline crosses processes (and machines): keep clocks
in sync (NTP) in a multi-machine deployment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

__all__ = ["DEADLINE_HEADER", "current_deadline", "deadline_from_headers", "deadline_scope", "enter_deadline",
           "exit_deadline", "remaining"]

DEADLINE_HEADER = "Tandem-Deadline"

_deadline: ContextVar[float | None] = ContextVar("tandem_deadline", default=None)


def current_deadline() -> float | None:
    """Return the absolute deadline (Unix seconds) of the current work, or ``None``."""
    return _deadline.get()


@contextmanager
def deadline_scope(deadline: float | None) -> Iterator[float | None]:
    """Run the block under ``deadline`` (Unix seconds), never later than an enclosing one.

    ``None`` keeps the enclosing deadline. Yields the deadline in force.
    """
    outer = _deadline.get()
    effective = outer if deadline is None else deadline if outer is None else min(outer, deadline)
    token = _deadline.set(effective)
    try:
        yield effective
    finally:
        _deadline.reset(token)


def enter_deadline(deadline: float | None) -> Token[float | None] | None:
    """Enter :func:`deadline_scope` without a generator (the actor's per-message path).

    Returns the token to pass to :func:`exit_deadline`; ``None`` (nothing set) when
    ``deadline`` is ``None``.
    """
    if deadline is None:
        return None
    outer = _deadline.get()
    return _deadline.set(deadline if outer is None else min(outer, deadline))


def exit_deadline(token: Token[float | None] | None) -> None:
    """Leave what :func:`enter_deadline` entered."""
    if token is not None:
        _deadline.reset(token)


def remaining(timeout: float | None = None) -> float | None:
    """Return seconds left: ``min(timeout, deadline - now)`` (``None`` when neither bounds it).

    The result may be zero or negative when the deadline has passed.
    """
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.time()
    return left if timeout is None else min(timeout, left)


def deadline_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Parse ``Tandem-Deadline`` from NATS headers; a missing or malformed value is ``None``."""
    if not headers:
        return None
    raw = headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None
