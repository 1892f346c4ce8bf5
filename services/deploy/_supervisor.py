"""Run a rendered :class:`~tandem.services.deploy.Deployment`: nats-server node(s), then every actor replica.

What ``tandem up`` does, as a library the fault tests and ``bench/scale.py`` drive too::

    sup = Supervisor(deployment, topology, config_path=path)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)          # servers up (a cluster: JetStream meta leader), every actor serving
        ...
        sup.kill("executor.2")           # SIGKILL: the supervisor restarts it (bounded budget)
        sup.stop()                       # ordered shutdown: actors first, then the servers

Each process is an OS process of its own, in its own session (a terminal's Ctrl-C reaches
``tandem up`` only, which then stops the others in order; on Linux a ``tandem up`` killed with
SIGKILL takes them along, through ``PR_SET_PDEATHSIG``):

* ``nats.<n>``: ``nats-server -c <node config>``; ready once it accepts a client (its ``INFO``
  line); on a cluster, the supervisor also waits until JetStream has a meta leader;
* ``<actor>.<i>``: ``tandem serve <actor>`` with the environment of
  :meth:`Deployment.env_for(actor, "<actor>.<i>") <tandem.services.deploy.Deployment.env_for>`
  (URL, credential, inbox prefix, JetStream replicas, ``service.instance.id``) and the
  ``--config`` given; ready once it prints ``serving …``.

Every line a process prints is echoed as ``router.2 | …`` and appended to
``<directory>/logs/<process>.log``. A process that exits without being asked to is started
again after a backoff (0.5 s, doubling, at most 10 s); more than ``max_restarts`` restarts of
one process within ``within`` seconds and the supervisor gives up: it stops everything and
:meth:`Supervisor.run` raises :class:`ProcessGaveUp`.

While it runs, ``<directory>/up.json`` says where the deployment is (``tandem status`` reads it):
the supervisor's pid, the client URL and credential, and each process's pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
from anyio.abc import Process, TaskStatus

from tandem.services.bus import find_nats_server
from tandem.services.errors import ConfigError, ProcessGaveUp

from ._topology import Deployment, Topology

__all__ = ["ProcessGaveUp", "Supervisor", "UP_FILE", "actor_command", "read_up_file"]

UP_FILE = "up.json"
"""The file in a deployment's directory that says where it runs, while it runs."""

_LOCK_FILE = "up.lock"
_INHERITED_OUT = ("TANDEM_NATS_URL", "TANDEM_NATS_CREDS", "TANDEM_NATS_INBOX_PREFIX", "TANDEM_NATS_REPLICAS",
                  "TANDEM_INSTANCE_ID")


def actor_command(name: str, config_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the command line that serves actor ``name`` in a process of its own.

    The ``tandem`` console script next to the running interpreter when there is one, else
    the interpreter running the CLI module.

    Examples
    --------
    >>> actor_command("router")[-2:]
    ['serve', 'router']
    """
    script = Path(sys.executable).parent / "tandem"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from tandem.services.cli import main; main()"]
    cmd += ["serve", name]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    return cmd


_GUARD = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
          "os.getppid() == int(sys.argv[1]) or sys.exit(0); os.execv(sys.argv[2], sys.argv[2:])")


def _orphan_guard(cmd: list[str]) -> list[str]:
    """On Linux, ``cmd`` behind a tiny exec wrapper that asks the kernel for SIGTERM when the supervisor dies.

    ``PR_SET_PDEATHSIG`` survives ``execv``: a ``tandem up`` killed with SIGKILL leaves no actor
    or server behind (they stop as on Ctrl-C, each on its own SIGTERM). Elsewhere, ``cmd`` as is.
    """
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-S", "-I", "-c", _GUARD, str(os.getpid()), *cmd]


def read_up_file(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return what ``<directory>/up.json`` says about a running ``tandem up``, or ``None``.

    ``None`` when there is no such file, or when its supervisor no longer runs (a stale file
    left by a ``kill -9``).
    """
    path = Path(directory).expanduser() / UP_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


@dataclass(eq=False)
class _Managed:
    """One process the supervisor keeps running."""

    name: str
    kind: str  # "server" or "actor"
    cmd: list[str]
    env: dict[str, str]
    ready: Callable[[str], bool] | None  # called with each output line: ready once it returns True
    port: int = 0  # servers: the client port (readiness: a client gets INFO)
    process: Process | None = None
    pid: int | None = None
    starts: int = 0
    crashes: deque[float] = field(default_factory=deque)
    held: bool = False  # stopped on purpose: not restarted until resumed
    resume: anyio.Event = field(default_factory=anyio.Event)
    is_ready: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=20))


def _serving(line: str) -> bool:
    """``tandem serve`` prints ``serving <actor> on <url>`` once its subscriptions are live."""
    return line.lstrip().startswith("serving ")


class Supervisor:
    """Start, keep and stop the processes of ``deployment``.

    Parameters
    ----------
    deployment : Deployment
        What :func:`~tandem.services.deploy.render` wrote: node configs, URL, credentials.
    topology : Topology
        How many replicas of each actor (``topology.count(name)``).
    config_path : path or None
        ``--config`` passed to every actor process.
    echo : callable or None
        Called with each prefixed output line (``router.2 | …``) and the supervisor's own
        messages; ``None``: written to stderr.
    max_restarts : int
        Restarts of one process allowed within ``within`` seconds before giving up.
    within : float
        The sliding window of the restart budget, seconds.
    grace : float
        Seconds between SIGTERM and SIGKILL at shutdown.
    ready_timeout : float
        Seconds a process may take to become ready.
    env : mapping or None
        Extra environment of every actor process (e.g. ``TANDEM_TRACE_FILE``).
    server_output : bool
        Echo every line of the servers' logs; ``False`` echoes only their warnings and errors
        (everything is in ``logs/nats.<n>.log``).

    Attributes
    ----------
    processes : dict of str to _Managed
        ``"nats.1"``, ``"router.2"`` … in start order.
    ready, finished : anyio.Event
        Set once every process is ready; set when :meth:`run` has stopped them all.

    Raises
    ------
    BusError
        When no ``nats-server`` binary is found.

    Examples
    --------
    >>> async def main(deployment, topology):
    ...     sup = Supervisor(deployment, topology)
    ...     async with anyio.create_task_group() as tg:
    ...         await tg.start(sup.run)
    ...         sup.stop()
    """

    def __init__(self, deployment: Deployment, topology: Topology, *,
                 config_path: str | os.PathLike[str] | None = None, echo: Callable[[str], None] | None = None,
                 max_restarts: int = 5, within: float = 60.0, grace: float = 10.0, ready_timeout: float = 60.0,
                 env: Mapping[str, str] | None = None, server_output: bool = False) -> None:
        from tandem.actors import ACTORS

        self.deployment = deployment
        self.topology = topology
        self.directory = Path(deployment.directory)
        self.logs = self.directory / "logs"
        self.max_restarts = max_restarts
        self.within = within
        self.grace = grace
        self.ready_timeout = ready_timeout
        self.server_output = server_output
        self._echo = echo or _stderr
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self._stopping = False
        self._failure: ProcessGaveUp | None = None
        self._logs: dict[str, IO[str]] = {}
        self._lock: IO[str] | None = None
        self._meta_leader = False  # a node logged a JetStream metadata leader
        self.processes: dict[str, _Managed] = {}
        server = find_nats_server()
        for n, node in enumerate(deployment.nodes, 1):
            port = int(node.client_url.rsplit(":", 1)[1])
            # ready when a client gets the node's INFO line (_wait_server), not from its log
            self.processes[f"nats.{n}"] = _Managed(f"nats.{n}", "server", node.command(server), dict(os.environ),
                                                   None, port=port)
        base = {k: v for k, v in os.environ.items() if k not in _INHERITED_OUT}
        base.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "250", **(env or {})})
        for actor in ACTORS:
            for i in range(1, topology.count(actor) + 1):
                name = f"{actor}.{i}"
                self.processes[name] = _Managed(name, "actor", actor_command(actor, config_path),
                                                {**base, **deployment.env_for(actor, name)}, _serving)
        self._width = max(len(n) for n in self.processes)

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` for the ordered shutdown (actors, then servers); returns at once."""
        self._stop.set()

    def hurry(self) -> None:
        """SIGKILL every process now (a second Ctrl-C during the ordered shutdown)."""
        self._stopping = True
        self._stop.set()
        for p in self.processes.values():
            if p.process is not None and p.process.returncode is None:
                _signal(p, signal.SIGKILL)

    def kill(self, name: str, sig: int = signal.SIGKILL, *, restart: bool = True) -> int:
        """Send ``sig`` to process ``name`` (``"executor.2"``, ``"nats.1"``); return its pid.

        With ``restart`` (a crash, as far as the supervisor knows) it is started again within
        the restart budget; without, it stays down until :meth:`resume`.

        Raises
        ------
        KeyError
            When there is no such process, or it is not running.
        """
        proc = self.processes[name]
        if proc.process is None or proc.process.returncode is not None:
            raise KeyError(f"{name} is not running")
        if not restart:
            proc.held = True
            proc.resume = anyio.Event()
        os.killpg(proc.process.pid, sig)
        return proc.process.pid

    async def wait_exited(self, name: str) -> None:
        """Wait until process ``name`` (killed or held) has exited."""
        proc = self.processes[name]
        if proc.process is not None and proc.process.returncode is None:
            await proc.exited.wait()

    async def resume(self, name: str) -> None:
        """Start process ``name`` again (after ``kill(..., restart=False)``) and wait until it is ready."""
        proc = self.processes[name]
        await self.wait_exited(name)
        proc.held = False
        proc.is_ready = anyio.Event()
        proc.resume.set()
        with anyio.fail_after(self.ready_timeout):
            await proc.is_ready.wait()

    def pids(self) -> dict[str, int | None]:
        """Return the pid of every process (``None`` while one is down)."""
        return {name: (p.pid if p.process is not None and p.process.returncode is None else None)
                for name, p in self.processes.items()}

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Supervisor] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every process, report started once all are ready, run until :meth:`stop`.

        Raises
        ------
        ConfigError
            When another ``tandem up`` runs on the same directory.
        ProcessGaveUp
            When a process spent its restart budget (everything else was stopped first),
            or could not be started at all.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            async with anyio.create_task_group() as tg:
                try:
                    servers = [p for p in self.processes.values() if p.kind == "server"]
                    actors = [p for p in self.processes.values() if p.kind == "actor"]
                    # replica 1 of every actor first: it creates the streams and buckets the others then find
                    # (replicas creating one R3 bucket at once on a new cluster time out)
                    first = [p for p in actors if p.name.endswith(".1")]
                    if (await self._start_all(tg, servers) and (len(servers) == 1 or await self._wait_meta_leader())
                            and await self._start_all(tg, first)
                            and await self._start_all(tg, [p for p in actors if p not in first])):
                        self._write_up_file()
                        self._say(f"ready: {len(actors)} actor processes on {len(servers)} nats-server node(s)")
                        self.ready.set()
                        task_status.started(self)
                        await self._stop.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
        finally:
            with anyio.CancelScope(shield=True):
                await self._kill_leftovers()
            (self.directory / UP_FILE).unlink(missing_ok=True)
            for f in self._logs.values():
                f.close()
            if self._lock is not None:
                self._lock.close()
            self.finished.set()
        if self._failure is not None:
            raise self._failure

    def _take_lock(self) -> None:
        f = (self.directory / _LOCK_FILE).open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            holder = read_up_file(self.directory) or {}
            raise ConfigError(f"another `tandem up` (pid {holder.get('pid', '?')}) runs on {self.directory}; "
                              "stop it or pass another --dir") from None
        self._lock = f

    async def _start_all(self, tg: anyio.abc.TaskGroup, procs: Sequence[_Managed]) -> bool:
        """Start ``procs`` at once; return whether all became ready (else :attr:`_failure` says why)."""
        for proc in procs:
            tg.start_soon(self._keep, proc)
        with anyio.move_on_after(self.ready_timeout + 5):
            for proc in procs:
                while not proc.is_ready.is_set():
                    if self._failure is not None or self._stop.is_set():
                        return False
                    with anyio.move_on_after(0.1):
                        await proc.is_ready.wait()
            return True
        late = [p.name for p in procs if not p.is_ready.is_set()]
        self._give_up(procs[0] if len(late) == len(procs) else self.processes[late[0]],
                      f"not ready within {self.ready_timeout:g}s: {', '.join(late)}")
        return False

    async def _keep(self, proc: _Managed) -> None:
        """Run ``proc``, restarting it when it exits unasked, until shutdown or its budget is spent."""
        while not self._stopping:
            if proc.held:
                await proc.resume.wait()
                if self._stopping:
                    return
            proc.exited = anyio.Event()
            try:
                process = await anyio.open_process(_orphan_guard(proc.cmd), stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=proc.env,
                                                   start_new_session=True)
            except OSError as exc:
                self._give_up(proc, f"cannot start {proc.cmd[0]}: {exc}")
                return
            proc.process, proc.pid = process, process.pid
            proc.starts += 1
            if proc.starts > 1:
                self._say(f"{proc.name} started again (pid {process.pid})")
                self._write_up_file()
            drained = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, proc, process, drained)
                if proc.kind == "server":
                    tg.start_soon(self._wait_server, proc, process)
                rc = await process.wait()
                with anyio.move_on_after(2):  # its last lines; a grandchild may hold the pipe open for longer
                    await drained.wait()
                tg.cancel_scope.cancel()
            proc.exited.set()
            await process.aclose()
            if self._stopping:
                return
            if proc.held:
                self._say(f"{proc.name} stopped (exit {_status(rc)}); held until resumed")
                continue
            now = time.monotonic()
            proc.crashes.append(now)
            while proc.crashes and now - proc.crashes[0] > self.within:
                proc.crashes.popleft()
            if len(proc.crashes) > self.max_restarts:
                self._give_up(proc, f"it exited {len(proc.crashes)} times within {self.within:g}s"
                                    f"{'' if proc.is_ready.is_set() else ', never ready'} (last exit {_status(rc)})")
                return
            delay = min(0.5 * 2 ** (len(proc.crashes) - 1), 10.0)
            self._say(f"{proc.name} exited unexpectedly ({_status(rc)}); restart {len(proc.crashes)}/"
                      f"{self.max_restarts} within {self.within:g}s in {delay:g}s")
            proc.is_ready = anyio.Event()
            await anyio.sleep(delay)

    def _give_up(self, proc: _Managed, why: str) -> None:
        tail = "\n".join(f"    {line}" for line in proc.lines)
        message = f"{proc.name}: giving up: {why}" + (f"; its last output:\n{tail}" if tail else "")
        self._say("ERROR " + message)
        if self._failure is None:
            self._failure = ProcessGaveUp(message)
        self._stop.set()

    async def _pump(self, proc: _Managed, process: Process, drained: anyio.Event) -> None:
        """Echo the process's output line by line, prefixed, and append it to its log file; set ``drained`` at EOF."""
        assert process.stdout is not None
        log = self._logs.get(proc.name)
        if log is None:
            log = self._logs[proc.name] = (self.logs / f"{proc.name}.log").open("a", encoding="utf-8", buffering=1)
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                self._line(proc, log, raw.decode(errors="replace").rstrip())
        if buffer:
            self._line(proc, log, buffer.decode(errors="replace").rstrip())
        log.flush()
        drained.set()

    def _line(self, proc: _Managed, log: IO[str], line: str) -> None:
        log.write(line + "\n")
        proc.lines.append(line)
        if proc.kind == "actor" or self.server_output or "[WRN]" in line or "[ERR]" in line or "[FTL]" in line:
            self._echo(f"{proc.name:<{self._width}} | {line}")
        if "metadata leader" in line:
            self._meta_leader = True
        if proc.ready is not None and not proc.is_ready.is_set() and proc.ready(line):
            proc.is_ready.set()

    async def _wait_server(self, proc: _Managed, process: Process) -> None:
        """Ready once a client connecting to the node gets its ``INFO`` line."""
        host = self.topology.host if self.topology.host not in ("0.0.0.0", "::") else "127.0.0.1"
        while process.returncode is None:
            try:
                with anyio.fail_after(2):
                    stream = await anyio.connect_tcp(host, proc.port)
                    try:
                        first = await stream.receive(4096)
                    finally:
                        await stream.aclose()
            except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                await anyio.sleep(0.05)
                continue
            if first.startswith(b"INFO"):
                proc.is_ready.set()
                return
            await anyio.sleep(0.05)

    async def _wait_meta_leader(self) -> bool:
        """A cluster serves JetStream once its nodes have elected a meta leader (their logs say so)."""
        with anyio.move_on_after(self.ready_timeout):
            while not self._meta_leader:
                if self._failure is not None or self._stop.is_set():
                    return False
                await anyio.sleep(0.05)
            return True
        self._give_up(self.processes["nats.1"], f"the cluster elected no JetStream meta leader within "
                      f"{self.ready_timeout:g}s (see {self.logs}/nats.*.log)")
        return False

    async def _shutdown(self) -> None:
        """Actors first (SIGTERM, ``grace``, SIGKILL), then the servers."""
        self._stopping = True
        self._stop.set()
        for kind in ("actor", "server"):
            group = [p for p in self.processes.values() if p.kind == kind]
            for p in group:
                p.resume.set()  # a held process's keeper returns
            running = [p for p in group if p.process is not None and p.process.returncode is None]
            if not running:
                continue
            self._say(f"stopping {len(running)} {kind} process(es)")
            for p in running:
                _signal(p, signal.SIGTERM)
            with anyio.move_on_after(self.grace):
                for p in running:
                    await _exit_of(p)
            for p in running:
                if p.process is not None and p.process.returncode is None:
                    self._say(f"{p.name} did not stop within {self.grace:g}s: SIGKILL")
                    _signal(p, signal.SIGKILL)
            with anyio.move_on_after(5):
                for p in running:
                    await _exit_of(p)

    async def _kill_leftovers(self) -> None:
        """After a cancellation: no process outlives the supervisor."""
        for p in self.processes.values():
            if p.process is not None and p.process.returncode is None:
                _signal(p, signal.SIGKILL)
                with anyio.move_on_after(5):
                    await p.process.wait()

    def _write_up_file(self) -> None:
        from tandem.actors import ACTORS

        d = self.deployment
        info = {"pid": os.getpid(), "url": d.url, "directory": str(self.directory),
                "client": d.env_for("client"), "credentials": d.credentials.get("client"),
                "replicas": {name: self.topology.count(name) for name in ACTORS},
                "processes": self.pids()}
        tmp = self.directory / f".{UP_FILE}.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.directory / UP_FILE)

    def _say(self, text: str) -> None:
        self._echo(f"{'up':<{self._width}} | {text}")


async def _exit_of(proc: _Managed) -> None:
    """Wait until ``proc`` has exited (its keeper may be gone: a cancelled :meth:`Supervisor.run`)."""
    if proc.process is not None:
        await proc.process.wait()


def _signal(proc: _Managed, sig: int) -> None:
    try:
        assert proc.process is not None
        os.killpg(proc.process.pid, sig)
    except ProcessLookupError:
        pass


def _status(rc: int | None) -> str:
    if rc is not None and rc < 0:
        return signal.Signals(-rc).name
    return f"status {rc}"


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
