"""Supervision: restart a crashed actor within a bounded budget; reopen a lost connection."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from tandem.services.errors import BusClosed, TandemError

from ._base import Actor

__all__ = ["ActorCrashed", "supervise"]

log = logging.getLogger("tandem.supervisor")


class ActorCrashed(TandemError):
    """Raised when an actor crashed more often than its restart budget allows."""

    code = "actor_crashed"


async def supervise(
    factory: Callable[[], Actor],
    *,
    max_restarts: int = 5,
    within: float = 60.0,
    reconnect_timeout: float = 30.0,
    task_status: TaskStatus[Actor] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the actor made by ``factory``, restarting it when it crashes.

    What counts as a crash: a task the actor started with ``start_soon`` raised, or its
    setup failed on a restart. A message that fails to decode or whose handler raises is
    *not* a crash (the actor answers ``ErrorReply`` or dead-letters it), so no message,
    however hostile, spends the budget.

    When the NATS connection closed for good, the actor crashes with
    :class:`~tandem.services.errors.BusClosed`; the supervisor then reopens the
    connection (:meth:`Bus.reconnect <tandem.services.bus.Bus.reconnect>`) and restarts
    the actor without counting it against the budget.

    Parameters
    ----------
    factory : callable
        Returns a fresh actor each time (state is not carried across a crash).
    max_restarts : int
        Restarts allowed within ``within`` seconds before giving up.
    within : float
        The sliding window for ``max_restarts``, seconds.
    reconnect_timeout : float
        Seconds to try reopening a connection that closed for good.
    task_status : TaskStatus
        Started (with the first actor) once the first instance serves.

    Raises
    ------
    ActorCrashed
        When the budget is spent; chained to the last crash.
    BusClosed
        When the connection closed for good and could not be reopened: the process
        should exit, with this message as the reason.
    Exception
        Whatever the first start raised (a start failure is not retried).
    """
    crashes: deque[float] = deque()
    first = True
    while True:
        actor = factory()
        crashed: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(actor.run)
                if first:
                    task_status.started(actor)
                    first = False
        except* Exception as group:
            if first:
                raise
            crashed.extend(group.exceptions)  # type: ignore[arg-type]
        if not crashed:
            return
        if actor.bus.lost or any(isinstance(exc, BusClosed) for exc in crashed):
            log.warning("%s %s stopped: the NATS connection closed for good; reopening it",
                        actor.name, actor.instance_id)
            await actor.bus.reconnect(timeout=reconnect_timeout)  # BusClosed when impossible: the process ends
            continue
        now = time.monotonic()
        crashes.append(now)
        while crashes and now - crashes[0] > within:
            crashes.popleft()
        for exc in crashed:
            log.error("%s %s crashed", actor.name, actor.instance_id, exc_info=exc)
        if len(crashes) > max_restarts:
            raise ActorCrashed(f"{actor.name} crashed {len(crashes)} times within {within:g}s; giving up") from crashed[-1]
        log.warning("restarting %s (%d/%d within %gs)", actor.name, len(crashes), max_restarts, within)
        await anyio.sleep(min(0.05 * 2 ** (len(crashes) - 1), 2.0))  # no hot loop when a restart fails at once
