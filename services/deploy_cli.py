"""``tandem up`` and ``tandem status``: the multi-process topology on this machine (issue 15).

Kept cheap to import (the CLI imports it at start-up): the supervisor, the bus and rich are
imported inside the commands.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["default_up_dir", "status_command", "up_command"]


def default_up_dir() -> Path:
    """Return where ``tandem up`` keeps its generated files: ``$XDG_STATE_HOME/tandem/up``.

    ``XDG_STATE_HOME`` defaults to ``~/.local/state`` (the XDG default for state).
    """
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "tandem" / "up"


_DIR_HELP = ("Where the generated files live: node configs, JetStream stores, credentials (0600), logs/ and "
             "up.json while it runs. Default: $XDG_STATE_HOME/tandem/up (~/.local/state/tandem/up).")


def up_command(
    replicas: Annotated[str, typer.Option(
        "--replicas", "-r", metavar="ACTOR=N,…",
        help="Processes per actor, e.g. router=2,executor=2,task=2; actors not listed run one, 0 runs none. "
             "Actors: planner, router, executor, choice, task, context, chat.")] = "",
    cluster: Annotated[int, typer.Option(
        "--cluster", help="nats-server nodes: 1, or 3 for a cluster on loopback (streams and KV with 3 replicas).")] = 1,
    open_: Annotated[bool, typer.Option(
        "--open", help="No authentication: an open server, as for local experiments (default: one nkey credential "
                       "per actor and one for clients, with per-subject permissions).")] = False,
    host: Annotated[str, typer.Option("--host", help="Interface the servers listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", "-p", help="Client port of the first node (a cluster's other nodes take free ports); 0: a free one.",
        min=0, max=65535)] = 4222,
    directory: Annotated[Optional[Path], typer.Option("--dir", help=_DIR_HELP)] = None,
    ephemeral: Annotated[bool, typer.Option(
        "--ephemeral", help="Generate everything in a temporary directory removed on exit (tasks and plans do not "
                            "survive; for tests and trials).")] = False,
    config_path: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="YAML config passed to every actor process (models, providers, task loop).")] = None,
    max_restarts: Annotated[int, typer.Option(
        "--max-restarts", help="Restarts of one crashed process allowed within --restart-window before giving up "
                               "(then everything stops, exit status 1).", min=0)] = 5,
    restart_window: Annotated[float, typer.Option("--restart-window", help="Seconds of the restart budget's window.",
                                                  min=1)] = 60.0,
    grace: Annotated[float, typer.Option("--grace", help="Seconds a process has to stop after SIGTERM before SIGKILL.",
                                         min=0)] = 10.0,
    server_logs: Annotated[bool, typer.Option(
        "--server-logs", help="Echo every nats-server log line (default: warnings and errors; all of it is in "
                              "DIR/logs/nats.N.log).")] = False,
) -> None:
    """Run nats-server and every actor as its own OS process, until Ctrl-C / SIGTERM.

    Starts the nats-server node(s) from a generated config (a 3-node cluster with --cluster 3),
    waits until they serve JetStream, then starts each actor replica as `tandem serve ACTOR` with
    its own credential and `service.instance.id` (router.2 …). Every process's output is echoed
    prefixed with its name and kept in DIR/logs/. A process that exits unasked is restarted (with
    backoff, within a bounded budget). Ctrl-C or SIGTERM stops the actors first, then the servers
    (a second Ctrl-C kills whatever is left at once).

    Once ready it prints the client URL and credential; then, from another terminal:

        tandem run --nats-url URL --creds DIR/creds/client.nk "your task"

        tandem status          # the actors serving, their replicas and request/error counts
    """
    from tandem.services.cli import _fail, _invoke, _setup_logging
    from tandem.services.config import load_config
    from tandem.services.errors import TandemError

    from .deploy import Topology, parse_replicas, render
    from .deploy._supervisor import Supervisor

    _setup_logging(0)
    try:
        counts = parse_replicas(replicas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--replicas") from None
    if cluster not in (1, 3):
        raise typer.BadParameter("1 or 3", param_hint="--cluster")
    if ephemeral and directory is not None:
        raise typer.BadParameter("--ephemeral makes its own temporary directory; it cannot take --dir")
    if config_path is not None and not config_path.is_file():
        raise typer.BadParameter(f"{config_path}: no such file", param_hint="--config")
    topology = Topology(replicas=counts, cluster=cluster, secure=not open_, host=host, port=port)
    where = Path(tempfile.mkdtemp(prefix="tandem-up-")) if ephemeral else (directory or default_up_dir()).expanduser()
    try:
        where.mkdir(parents=True, exist_ok=True)
        # the permissions follow the config the actors run with (its bucket names, endpoint timeouts)
        deployment = render(topology, where.resolve(), config=load_config(config_path))
        sup = Supervisor(deployment, topology, config_path=config_path.resolve() if config_path else None,
                         max_restarts=max_restarts, within=restart_window, grace=grace, server_output=server_logs)
        _invoke(_up, sup)
    except TandemError as exc:
        raise _fail(exc) from None
    finally:
        if ephemeral:
            shutil.rmtree(where, ignore_errors=True)


def _ready_lines(sup: Any) -> list[str]:
    import shlex

    from tandem.services.config import redact_url

    d = sup.deployment
    client = d.env_for("client")
    creds = d.credentials.get("client")
    nodes = len(d.nodes)
    actors = sum(1 for p in sup.processes.values() if p.kind == "actor")
    lines = [f"tandem up: {actors} actor processes and {nodes} nats-server node{'s' * (nodes > 1)} ready "
             f"(logs in {sup.logs})",
             f"  url    {redact_url(d.url)}"]
    if creds:
        lines.append(f"  creds  {creds}  (client credential: submit tasks, answer approvals, read events)")
        if d.credentials.get("admin"):
            lines.append(f"         {d.credentials['admin']}  (admin: also tandem plans add|remove, tandem cache)")
    run = ["tandem", "run", "--nats-url", d.url] + (["--creds", creds] if creds else []) + ["your task"]
    prefix = client.get("TANDEM_NATS_INBOX_PREFIX", "_INBOX")
    env = f"TANDEM_NATS_INBOX_PREFIX={shlex.quote(prefix)} " if creds and prefix != "_INBOX" else ""
    lines.append(f"  try    {env}{shlex.join(run)}")
    env_file = sup.directory / "client.env"
    if env_file.exists():
        lines.append(f"         or: set -a; . {shlex.quote(str(env_file))}; set +a; tandem run 'your task'")
    lines.append("         tandem status" + (f" --dir {shlex.quote(str(sup.directory))}"
                                             if sup.directory != default_up_dir() else ""))
    lines.append("  Ctrl-C stops everything (actors first, then the servers)")
    return lines


async def _up(sup: Any) -> None:
    import signal

    import anyio

    async def on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    sys.stderr.write(f"tandem up: {name} again: killing every process now\n")
                    sup.hurry()
                    continue
                sys.stderr.write(f"tandem up: {name}: stopping actors, then servers … (again to kill them now)\n")
                stopping = True
                sup.stop()

    async def announce() -> None:
        await sup.ready.wait()
        sys.stderr.write("\n".join(_ready_lines(sup)) + "\n")
        sys.stderr.flush()

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signals)
        tg.start_soon(announce)
        try:
            await sup.run()
        finally:
            tg.cancel_scope.cancel()


def status_command(
    nats_url: Annotated[Optional[str], typer.Option(
        "--nats-url", envvar="TANDEM_NATS_URL",
        help="NATS server(s) of the deployment. Default: the one `tandem up` runs on --dir (its up.json).")] = None,
    creds: Annotated[Optional[Path], typer.Option(
        "--creds", envvar="TANDEM_NATS_CREDS",
        help="Credential to connect with (e.g. DIR/creds/client.nk). Default: the client credential of the "
             "`tandem up` on --dir.")] = None,
    directory: Annotated[Optional[Path], typer.Option("--dir", help=f"{_DIR_HELP} Read for the defaults above.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the status as JSON on stdout.")] = False,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to gather replies from the actors.", min=0.05)] = 0.5,
    endpoints: Annotated[bool, typer.Option("--endpoints/--no-endpoints",
                                            help="Show per-endpoint request and error counts.")] = True,
    config_path: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (its nats section: TLS, "
                                                        "inbox prefix).")] = None,
) -> None:
    """Show the actors serving on the bus: instances per actor, pids, request/error counts per endpoint.

    Asks every actor replica over the NATS micro protocol ($SRV.STATS and $SRV.INFO; `nats micro
    list` sees the same) and warns about replicas whose message schemas differ from this client's.
    Against a `tandem up` it also names each process (router.2 …) and flags missing replicas.
    Exit status 1 when no actor answers or replicas are missing.
    """
    from tandem.services.cli import _console, _fail, _invoke, _setup_logging
    from tandem.services.errors import InputError, TandemError

    from .deploy._supervisor import read_up_file

    _setup_logging(0)
    up = read_up_file(directory or default_up_dir())
    try:
        if nats_url is None:
            if up is None:
                raise InputError(f"no `tandem up` runs on {directory or default_up_dir()}: pass --nats-url "
                                 "(and --creds), or --dir of the running deployment")
            nats_url = up["url"]
        if up is None and creds is not None:  # the deployment whose credential this is (DIR/creds/client.nk)
            up = read_up_file(creds.expanduser().resolve().parent.parent)
        if up is not None and up.get("url") != nats_url:
            up = None  # another deployment: its names and replicas do not apply
        client_env = (up or {}).get("client") or {}
        for key in ("TANDEM_NATS_INBOX_PREFIX", "TANDEM_NATS_REPLICAS"):
            if key in client_env:
                os.environ.setdefault(key, client_env[key])
        if creds is None and client_env.get("TANDEM_NATS_CREDS"):
            creds = Path(client_env["TANDEM_NATS_CREDS"])
        if creds is not None and "TANDEM_NATS_INBOX_PREFIX" not in os.environ:
            # a `tandem up` credential: its permissions allow replies only under the prefix its client.env names
            prefix = _env_file(creds.expanduser().resolve().parent.parent / "client.env").get("TANDEM_NATS_INBOX_PREFIX")
            if prefix:
                os.environ["TANDEM_NATS_INBOX_PREFIX"] = prefix
        status = _invoke(_status, config_path, nats_url, creds, wait, up)
    except TandemError as exc:
        raise _fail(exc) from None
    if json_:
        sys.stdout.write(status.to_json() + "\n")
    else:
        from .deploy._status import render_status

        out = _console(highlight=False)
        for part in render_status(status, endpoints=endpoints):
            out.print(part)
    if not status.actors or status.missing() or not any(a.instances for a in status.actors):
        if not any(a.instances for a in status.actors):
            _console(stderr=True, highlight=False).print(
                "no actor answered; with a credential of `tandem up`, replies come only under its inbox prefix "
                "(TANDEM_NATS_INBOX_PREFIX, in DIR/client.env)", markup=False)
        raise typer.Exit(1)


def _env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a file such as ``client.env`` (values shell-quoted); ``{}`` when unreadable."""
    import shlex

    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, eq, value = line.partition("=")
        if eq and key.strip():
            try:
                out[key.strip()] = " ".join(shlex.split(value))
            except ValueError:
                continue
    return out


async def _status(config_path: Path | None, url: str, creds: Path | None, wait: float, up: dict | None) -> Any:
    import msgspec

    from tandem.services.bus import Bus
    from tandem.services.config import load_config, redact_url

    from .deploy._status import gather_status

    config = load_config(config_path)
    nats = config.nats if creds is None else msgspec.structs.replace(config.nats, creds=str(creds))
    bus = await Bus.connect(url, name="tandem-status", **nats.connect_options())
    try:
        names = {pid: name for name, pid in ((up or {}).get("processes") or {}).items() if pid}
        return await gather_status(bus, redact_url(url), wait=wait, names=names,
                                   replicas=(up or {}).get("replicas"))
    finally:
        await bus.close()
