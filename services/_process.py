"""Child processes Tandem runs for the user (nats-server, llama.cpp server)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO

import anyio
from anyio.abc import Process

__all__ = ["child_process"]


@asynccontextmanager
async def child_process(
    cmd: Sequence[str],
    *,
    wait_ready: Callable[[Process], Awaitable[None]],
    output: IO[bytes] | int = subprocess.DEVNULL,
    grace: float = 5.0,
) -> AsyncIterator[Process]:
    """Start ``cmd``, wait until it is ready, and always stop it on exit.

    Parameters
    ----------
    cmd : sequence of str
        The command line (no shell).
    wait_ready : callable
        ``async (process) -> None``; returns once the child serves, raises if it never will.
    output : file or int
        Where the child's stdout and stderr go.
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.

    Notes
    -----
    The child runs in its own session, so a terminal's Ctrl-C reaches only
    Tandem; stopping runs in a shielded cancel scope, so cancellation never
    leaves an orphan behind.
    """
    # Own session: a terminal's Ctrl-C reaches Tandem only, which then stops its
    # children in order (the bus closes before its server goes away).
    process = await anyio.open_process(list(cmd), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                       start_new_session=True)
    try:
        await wait_ready(process)
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(grace):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await process.aclose()
