"""The ``tandem`` command line (typer + rich).

Commands: ``run`` (submit one task to the task loop and follow it), ``tasks`` and
``task show|cancel|wait`` (tasks on a running Tandem), ``serve`` (actors as a long-running
process), ``trace`` (print a recorded trace), ``choose``, ``usage``, ``config show|path``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .errors import InputError, TandemError

if TYPE_CHECKING:
    import anyio.abc
    from rich.console import Console

    from tandem.messages import ExecutionPlan

    from .config import Config


class _Lazy:
    """A module, or an object, made on first use.

    Start-up: ``tandem --help`` and ``tandem choose`` import only what they use; anyio, msgspec,
    rich and Tandem's messages and config load when a command first touches them.
    """

    __slots__ = ("_make", "_obj")

    def __init__(self, make: Any) -> None:
        self._make = make
        self._obj: Any = None

    def _load(self) -> Any:
        if self._obj is None:
            self._obj = self._make()
        return self._obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._load()(*args, **kwargs)


def _module(name: str, *also: str) -> _Lazy:
    def make() -> Any:
        for extra in also:
            importlib.import_module(extra)
        return importlib.import_module(name)

    return _Lazy(make)


def _config_attr(name: str) -> _Lazy:
    return _Lazy(lambda: getattr(importlib.import_module("tandem.services.config"), name))


anyio = _module("anyio", "anyio.abc")
msgspec = _module("msgspec")
subjects = _module("tandem.messages.subjects")
load_config = _config_attr("load_config")
redact_url = _config_attr("redact_url")


def _console(**kwargs: Any) -> Console:
    from rich.console import Console

    return Console(**kwargs)

__all__ = ["app", "main"]

# Sub-apps whose modules are heavy to import (the bus, nats-py): listed in the help from their help line,
# imported only when the command runs. Name: (module, Typer attribute, help line as the module states it).
_LAZY_GROUPS: dict[str, tuple[str, str, str]] = {
    "cache": ("tandem.services.cache_cli", "cache_app", "The plan cache kept in the persistent store (list, clear)."),
}


class _Group(TyperGroup):
    """The top-level group: the :data:`_LAZY_GROUPS` are placeholders until one is run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._placeholders: dict[str, TyperGroup] = {
            name: TyperGroup(name=name, help=help_) for name, (_, _, help_) in _LAZY_GROUPS.items()}
        for name, cmd in self._placeholders.items():  # last, as add_typer's groups were
            self.commands.setdefault(name, cmd)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # `tandem --help` lists the commands in plain text: typer's rich layout loads rich, markdown-it and
        # pygments, about half of its start-up. A command's own --help keeps the rich layout.
        import shutil

        formatter.width = max(formatter.width, min(shutil.get_terminal_size().columns, 160) - 2)  # whole help lines
        return super(TyperGroup, self).format_help(ctx, formatter)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in self._placeholders and self.commands.get(args[0]) is self._placeholders[args[0]]:
            module, attr, _ = _LAZY_GROUPS[args[0]]
            self.commands[args[0]] = typer.main.get_group(getattr(importlib.import_module(module), attr))
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_Group,
    name="tandem",
    help="Tandem: an event-driven actor system for LLM work over NATS, traced with OpenTelemetry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
err: Console = _Lazy(lambda: _console(stderr=True, highlight=False))
log = logging.getLogger("tandem")

_TYPES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".csv": "csv", ".tsv": "tsv",
          ".json": "json", ".html": "html", ".htm": "html", ".textile": "textile", ".rst": "rst",
          ".yaml": "yaml", ".yml": "yaml", ".log": "log", ".xml": "xml"}

NatsUrl = Annotated[Optional[str], typer.Option("--nats-url", envvar="TANDEM_NATS_URL",
                    help="NATS server to use. Default: the config's nats.url, else an embedded nats-server.")]


def _use_creds(value: Optional[Path]) -> Optional[Path]:
    # One place for every command: _config (and the processes `tandem up` starts) read the variable.
    if value is not None:
        os.environ["TANDEM_NATS_CREDS"] = str(value)
    return value


Creds = Annotated[Optional[Path], typer.Option(
    "--creds", envvar="TANDEM_NATS_CREDS", callback=_use_creds,
    help="NATS credentials for a server that requires auth: a .creds file, or an nkey seed file as "
         "`tandem up` writes (client.nk). TLS: the config's nats.tls_ca/tls_cert/tls_key.")]
ConfigPath = Annotated[Optional[Path], typer.Option("--config", "-c",
                       help="YAML config. Default: $TANDEM_CONFIG, else the default.yaml shipped with Tandem "
                            "(see `tandem config path`).")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging on stderr (-vv for debug).")]
Ephemeral = Annotated[bool, typer.Option("--ephemeral", help="Embedded server only: a throwaway JetStream store instead of "
                                         "the persistent one (plan cache, tasks, recipes; also TANDEM_EPHEMERAL=1).")]


class _RichOnFirstRecord(logging.Handler):
    """A ``RichHandler`` made when the first record arrives: rich loads only when something is logged."""

    def __init__(self, *, rich_tracebacks: bool) -> None:
        super().__init__()
        self._rich_tracebacks = rich_tracebacks
        self._handler: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._handler is None:
            from rich.logging import RichHandler

            self._handler = RichHandler(console=err._load(), show_path=False, rich_tracebacks=self._rich_tracebacks)
            self._handler.setFormatter(self.formatter)
        self._handler.emit(record)


def _setup_logging(verbose: int) -> None:
    # default: only what went unexpectedly wrong; handled failures are reported by the command itself
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(message)s", datefmt="[%X]",
                        handlers=[_RichOnFirstRecord(rich_tracebacks=verbose > 1)])
    if verbose < 2:  # httpx logs every model call at INFO: noise in `tandem serve` / `tandem up` output
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(exc: BaseException | str, code: int = 1) -> typer.Exit:
    from rich.text import Text

    # the message may quote a plan or a remote error: print it as text, never as markup
    err.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
    if getattr(exc, "code", None) == "permission_denied":
        err.print("hint: in a `tandem up` deployment, creds/client.nk may run, follow and answer tasks and chat; "
                  "tandem plans add|remove and tandem cache take creds/admin.nk", highlight=False, markup=False,
                  soft_wrap=True)
    return typer.Exit(code)


def _leaf(exc: BaseException) -> BaseException:
    """Return the error worth reporting from an exception group raised through task groups."""
    while isinstance(exc, BaseExceptionGroup):
        tandem = [e for e in exc.exceptions if isinstance(e, TandemError | BaseExceptionGroup)]
        exc = (tandem or exc.exceptions)[0]
    return exc


def _invoke(fn, *args):
    """Run async ``fn(*args)``; Tandem errors (also inside task-group exception groups) and
    Ctrl-C become a one-line message and an exit code."""
    try:
        return anyio.run(fn, *args)
    except BaseException as exc:  # noqa: BLE001 - re-raised below unless it is ours to report
        leaf = _leaf(exc)
        if isinstance(leaf, TandemError):
            raise _fail(leaf) from None
        if isinstance(leaf, KeyboardInterrupt):
            raise _fail("interrupted", 130) from None
        raise


def _config(path: Path | None, nats_url: str | None, *, ephemeral: bool = False) -> tuple[Config, str | None]:
    config = load_config(path)  # nats.creds from $TANDEM_NATS_CREDS, which --creds sets (_use_creds)
    if ephemeral:
        config = msgspec.structs.replace(config, nats=msgspec.structs.replace(config.nats, store="ephemeral"))
    return config, nats_url or config.nats.url


def _open_bus(config: Config, url: str | None, name: str = "tandem"):
    """Connect to ``url``, or start the embedded server on the config's store (persistent unless ephemeral)."""
    from .runtime import open_bus

    return open_bus(url, name=name, store=config.nats.store, store_dir=config.nats.store_dir,
                    **config.nats.connect_options())


def _read_inputs(paths: list[Path]) -> tuple[dict[int, str], dict[int, str]]:
    inputs: dict[int, str] = {}
    types: dict[int, str] = {}
    fd = 3
    for path in paths:
        if str(path) == "-":
            inputs[0], types[0] = sys.stdin.read(), "text"
            continue
        try:
            inputs[fd] = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise InputError(f"input file not found: {path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read input {path}: {exc}") from exc
        types[fd] = _TYPES.get(path.suffix.lower(), "text")
        fd += 1
    if not paths and not sys.stdin.isatty():
        text = sys.stdin.read()
        if text:
            inputs[0], types[0] = text, "text"
    return inputs, types


def _read_plan(path: Path) -> ExecutionPlan:
    from tandem.actors.planner import decode_plan

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read plan file {path}: {exc.strerror or exc}") from exc
    try:
        return decode_plan(data)
    except TandemError as exc:
        raise InputError(f"{path}: invalid plan: {exc}") from exc


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: nothing half-written."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="The task, in your own words.")] = "",
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Input file (fd:3, fd:4 … in order); '-' for stdin (fd:0).")] = [],  # noqa: B006
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the result here instead of stdout.")] = None,
    single_stage: Annotated[bool, typer.Option("--single-stage", help="Force one execution-tier call.")] = False,
    two_stage: Annotated[bool, typer.Option("--two-stage", help="Force planning first.")] = False,
    plan_only: Annotated[bool, typer.Option("--plan-only", help="Print the execution plan JSON and stop.")] = False,
    execute_plan: Annotated[Optional[Path], typer.Option("--execute-plan", help="Run a saved plan JSON (skips planning).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the plan cache.")] = False,
    approve: Annotated[bool, typer.Option("--approve", help="Show the plan and ask for approval in free text (per step: 'only 1 and 3', 'skip step 2', 'no').")] = False,
    answer: Annotated[list[str], typer.Option("--answer", help="With --approve: the answer(s) to give instead of asking on the terminal.")] = [],  # noqa: B006
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Deadline of the whole task, seconds (default: the config's task.timeout_s).", min=0.1)] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Submit, print the task id and return at once (needs a task actor on --nats-url; follow with `tandem task wait ID`).")] = False,
    ephemeral: Ephemeral = False,
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
    verbose: Verbose = 0,
) -> None:
    """Run one task: judge its complexity, plan it (two stage) or not (single stage), execute, print the result.

    The task is submitted to the task actor (durable, in JetStream) and followed through its
    events; with no task actor on the bus, one runs in this process. Progress goes to
    stderr, the result to stdout or --output; the trace id is printed at the end (`tandem
    trace` shows it). Ctrl-C cancels the task.
    """
    _setup_logging(verbose)
    if single_stage and two_stage:
        raise typer.BadParameter("--single-stage and --two-stage exclude each other")
    if not task and execute_plan is None:
        raise typer.BadParameter("a TASK is needed (unless --execute-plan is given)")
    if detach and (approve or output is not None):
        raise typer.BadParameter("--detach returns at once: it cannot take --approve or --output (see `tandem task wait`)")
    try:
        config, url = _config(config_path, nats_url, ephemeral=ephemeral)
        if detach and url is None:
            raise InputError("--detach needs a running Tandem to leave the task with: pass --nats-url "
                             "(start one with `tandem serve`)")
        inputs, types = _read_inputs(input)
        plan = _read_plan(execute_plan) if execute_plan else None
        from tandem.messages import TaskSubmit

        submit = TaskSubmit(task=task, inputs=inputs, input_types=types, plan=plan, plan_only=plan_only,
                            use_cache=not no_cache, approval="ask" if approve else "none",
                            mode="single_stage" if single_stage else "two_stage" if two_stage else "auto",
                            deadline=time.time() + timeout if timeout else 0.0)
        if approve and not answer and not sys.stdin.isatty():
            raise InputError("--approve needs a terminal to ask on, or --answer TEXT")
    except TandemError as exc:
        raise _fail(exc) from None
    raise typer.Exit(_invoke(_run, config, url, submit, output, list(answer), detach))


def _approver(answers: list[str]):
    """Answers from --answer in order, else asked on the terminal."""

    async def approver(question: str) -> str:
        err.print(question, highlight=False, markup=False)
        if answers:
            given = answers.pop(0)
            err.print(f"> {given}", highlight=False, markup=False)
            return given
        if not sys.stdin.isatty():
            raise InputError("no answer left to give (add another --answer)")
        return await anyio.to_thread.run_sync(lambda: input("> "))

    return approver


RUN_ACTORS = ("task", "planner", "router", "executor", "choice")
"""The actors a task needs (chat and context serve conversations): `tandem run` uses running ones, starts the rest."""


async def _run(config: Config, url: str | None, submit, output: Path | None, answers: list[str],
               detach: bool = False) -> int:
    from tandem.actors import ACTORS

    from .runtime import find_running, start_actors
    from .tasks import TaskClient
    from .telemetry import aclose_tracing, setup_tracing

    provider = setup_tracing("tandem")
    try:
        async with _open_bus(config, url) as (bus, used_url):
            # embedded: every actor, as before (context keeps the shared context from task events);
            # a running Tandem: the ones a task needs, started here only when missing
            remote = await find_running(bus, RUN_ACTORS) if url else set()
            local = [n for n in (RUN_ACTORS if url else ACTORS) if n not in remote]
            if local and url and config.nats.creds:
                raise InputError(f"{', '.join(local)} not serving on {redact_url(used_url)}: with --creds, "
                                 "tandem run uses the deployment's actors (tandem up, or tandem serve with an "
                                 "actor's credential); a client credential cannot serve them")
            if detach and "task" in local:
                raise InputError(f"--detach needs a task actor serving on {redact_url(used_url)} "
                                 "(tandem serve task --nats-url …); one in this process would stop with it")
            if remote:
                err.print(f"using running actors: {', '.join(sorted(remote))} on {redact_url(used_url)}",
                          style="dim", highlight=False, markup=False)
            client = TaskClient(bus, inline_input_bytes=config.task.inline_input_bytes,
                                max_submit_bytes=config.task.max_submit_bytes)
            async with start_actors(bus, config, local):
                if detach:
                    await client.submit(submit)
                    await client.recorded(submit.task_id)  # so `tandem task show ID` straight after finds it
                    sys.stdout.write(submit.task_id + "\n")
                    err.print(f"submitted; follow it with: tandem task wait {submit.task_id}", style="dim",
                              highlight=False, markup=False)
                    return 0
                shown: set[tuple[int, str]] = set()
                state = None
                async with anyio.create_task_group() as tg:
                    await tg.start(_progress, bus, submit.task_id, shown)
                    tg.start_soon(_cancel_on_signal, client, submit.task_id, tg.cancel_scope)
                    state = await client.run(submit, approver=_approver(answers))
                    tg.cancel_scope.cancel()
                if state is None:  # cancelled on a signal: report what the task says now
                    state = await client.get(submit.task_id)
    finally:
        await aclose_tracing(provider)  # spans written off the event loop, shielded
    return _report(state, submit.plan_only, output, shown)


async def _cancel_on_signal(client, task_id: str, following: anyio.CancelScope) -> None:
    """Ctrl-C / SIGTERM cancel the task (every actor drops its work on it), then stop following it."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            err.print(f"{signal.Signals(signum).name}: cancelling task {task_id} …", highlight=False, markup=False)
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    await client.cancel(task_id)
                except TandemError as exc:
                    err.print(f"cancel: {exc}", highlight=False, markup=False)
            following.cancel()
            return


def _report(state, plan_only: bool, output: Path | None, shown: set[tuple[int, str]]) -> int:
    """Print a finished task's result (stdout / --output) and summary (stderr); return the exit code."""
    result = state.result
    for s in (result.steps if result else []):  # steps whose events were still in flight when the task ended
        if (s.step, s.status) not in shown:
            _print_step(s.step, s.action, s.status, s.detail, s.duration_ms)
    trace_line = f"trace {state.trace_id}  (tandem trace {state.trace_id[:8]})" if state.trace_id else ""
    if result is not None and result.mode == "not_run":
        what = {"rejected": "plan rejected", "unclear": "no clear approval"}.get(result.approval, result.approval)
        err.print(f"{what}: nothing was run" + (f" ({result.fallback})" if result.fallback else ""),
                  highlight=False, markup=False)
        err.print(trace_line, style="dim", soft_wrap=True, highlight=False, markup=False)
        return 0 if result.approval == "rejected" else 1
    if state.status != "succeeded" or result is None:
        if state.status == "cancelled":
            err.print(f"task {state.task_id} cancelled: nothing was written", highlight=False, markup=False)
            code = 130
        else:
            error = state.error
            err.print(f"error: {error.code}: {error.message}" if error else f"task {state.status}",
                      style="bold red", highlight=False, markup=False, soft_wrap=True)
            code = 1
        err.print(trace_line, style="dim", soft_wrap=True, highlight=False, markup=False)
        return code
    if result.modifications:
        err.print("conditions noted (not enforced): " + "; ".join(result.modifications), highlight=False,
                  markup=False)
    if plan_only:
        stdout = [msgspec.json.format(msgspec.json.encode(state.plan), indent=2).decode() + "\n"]
    else:
        stdout = [o.text for o in result.outputs if o.destination == "fd:1"]
        for o in result.outputs:
            if o.destination == "fd:2":
                sys.stderr.write(o.text)
    if output is not None:
        _write_atomic(output, "".join(stdout))
    else:
        for text in stdout:
            sys.stdout.write(text)
        sys.stdout.flush()
    how = result.mode.replace("_", " ")
    if result.recipe:
        params = ", ".join(f"{k}={v}" for k, v in result.recipe_params.items())
        how += f" · recipe {result.recipe}" + (f" ({params})" if params else "")
    if result.plan_cached:
        how += " (cached plan)"
    if result.fallback:
        how += f" — fell back: {result.fallback}"
    err.print(f"{how} · complexity {result.complexity:.2f}", style="dim", soft_wrap=True, highlight=False,
              markup=False)
    if result.shape_reason:
        err.print(f"why: {result.shape_reason}", style="dim", soft_wrap=True, highlight=False, markup=False)
    err.print(trace_line, style="dim", soft_wrap=True, highlight=False, markup=False)
    return 0


_MARKS = {"ok": ("✓", "green"), "skipped": ("↷", "yellow"), "recovered": ("✓", "yellow"), "failed": ("✗", "red")}


def _print_step(step: int, action: str, status: str, detail: str, ms: float) -> None:
    """One progress line; ``detail`` comes from the plan, so it is printed as text, never as markup."""
    from rich.text import Text

    mark, colour = _MARKS.get(status, ("·", ""))
    line = Text("  ")
    line.append(mark, style=colour)
    line.append(f" step {step} {action} ")
    line.append(f"{detail[:80]} ({ms:.1f} ms)", style="dim")
    err.print(line, highlight=False)


async def _progress(bus, task_id: str, shown: set[tuple[int, str]], *,
                    task_status: anyio.abc.TaskStatus[None] | None = None) -> None:
    """Print this task's step events on stderr as they arrive."""
    from tandem.messages import StepEvent, decoder

    if task_status is None:
        task_status = anyio.TASK_STATUS_IGNORED
    sub = await bus.subscribe(subjects.EVENT_STEP)
    await bus.flush()
    task_status.started()
    dec = decoder(StepEvent)
    try:
        async for msg in sub.messages:
            try:
                ev = dec.decode(msg.data)
            except msgspec.DecodeError:
                continue  # another publisher's malformed event: the executor's dead-letter path owns it
            if ev.correlation_id != task_id:
                continue
            if ev.status == "started":
                if ev.action == "manual_transform":
                    err.print(f"  … step {ev.step}/{ev.total_steps} {ev.action} (asking the model)",
                              highlight=False, markup=False)
                continue
            shown.add((ev.step, ev.status))
            _print_step(ev.step, ev.action, ev.status, ev.detail, ev.duration_ms)
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


@app.command()
def serve(
    names: Annotated[Optional[list[str]], typer.Argument(help="Actors to serve: planner, router, executor, choice, task, context, chat (default: all).")] = None,
    ephemeral: Ephemeral = False,
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
    verbose: Verbose = 0,
) -> None:
    """Serve actors in this process until Ctrl-C. Replicas share work through NATS queue groups."""
    from tandem.actors import ACTORS

    _setup_logging(max(verbose, 1))
    names = names or list(ACTORS)
    unknown = [n for n in names if n not in ACTORS]
    if unknown:
        raise typer.BadParameter(f"unknown actor(s) {', '.join(unknown)}; choose from {', '.join(ACTORS)}")
    try:
        config, url = _config(config_path, nats_url, ephemeral=ephemeral)
    except TandemError as exc:
        raise _fail(exc) from None
    _invoke(_serve, config, url, names)


async def _serve(config: Config, url: str | None, names: list[str]) -> None:
    from .runtime import start_actors
    from .telemetry import aclose_tracing, setup_tracing

    provider = setup_tracing("tandem-" + "-".join(names))
    try:
        async with _open_bus(config, url, "tandem-serve") as (bus, used_url), start_actors(bus, config, names):
            # SIGTERM (docker stop, process managers) and SIGINT stop cleanly: spans flushed, server stopped
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                err.print(f"serving {', '.join(names)} on {redact_url(used_url)} (Ctrl-C to stop)",
                          highlight=False, markup=False)
                async for signum in signals:
                    err.print(f"stopping on {signal.Signals(signum).name}")
                    break
    finally:
        await aclose_tracing(provider)  # spans written off the event loop, shielded


@app.command("trace")
def trace_cmd(
    trace_id: Annotated[Optional[str], typer.Argument(help="Trace id or a unique prefix (default: the latest trace).")] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List recent traces instead.")] = False,
    file: Annotated[Optional[Path], typer.Option("--file", help="Trace file (default: $TANDEM_TRACE_FILE or ~/.local/state/tandem/traces.jsonl).")] = None,
) -> None:
    """Print the span tree of a trace with durations (the latest one by default)."""
    from .telemetry import default_trace_file, find_trace, latest_trace_id, load_spans, render_trace, render_trace_list

    out = _console(highlight=False)
    try:
        spans = load_spans(file or default_trace_file())
        if list_:
            out.print(render_trace_list(spans))
            return
        tid = trace_id or latest_trace_id(spans)
        if tid is None:
            raise InputError("the trace file holds no spans yet")
        out.print(render_trace(find_trace(spans, tid)))
    except TandemError as exc:
        raise _fail(exc) from None


@app.command()
def choose(
    answer: Annotated[str, typer.Argument(help="The free-text answer to interpret.")],
    option: Annotated[list[str], typer.Option("--option", "-o", help="An option label (repeat, in order; option 1 first).")],
    description: Annotated[list[str], typer.Option("--description", "-d", help="An option's description (repeat, same order).")] = [],  # noqa: B006
    risk: Annotated[str, typer.Option("--risk", help="low, medium, high or critical (critical always confirms).")] = "medium",
    approval: Annotated[bool, typer.Option("--approval", help="The options are approve/reject-like: yes/no words apply.")] = False,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Pattern matcher only; no model call.")] = False,
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
    verbose: Verbose = 0,
) -> None:
    """Interpret a free-text answer to a list of options; print the ChoiceResult as JSON.

    The same request is served on NATS as `tandem.choice.parse` for other services.
    """
    from tandem.messages import ChoiceContext, ChoiceRequest

    _setup_logging(verbose)
    if risk not in ("low", "medium", "high", "critical"):
        raise typer.BadParameter("--risk must be low, medium, high or critical")
    try:
        config, url = _config(config_path, nats_url)
        request = ChoiceRequest(answer=answer, use_llm=not no_llm, context=ChoiceContext(
            available_options=option, option_descriptions=description, risk_level=risk,
            kind="approval" if approval else "options"))
    except TandemError as exc:
        raise _fail(exc) from None
    if no_llm and url is None:
        # the pattern path alone needs no bus: read it here (fast enough for a shell loop); with --nats-url
        # the running choice parser answers, as other services see it
        from tandem.services.choice._result import pattern_choice

        result = pattern_choice(answer, request.context, execute=config.choice.execute_threshold,
                                confirm=config.choice.confirm_threshold)
    else:
        result = _invoke(_choose, config, url, request)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")


async def _choose(config: Config, url: str | None, request):
    from tandem.messages import ChoiceReply

    from .runtime import find_running, start_actors
    from .telemetry import aclose_tracing, setup_tracing

    provider = setup_tracing("tandem")
    try:
        async with _open_bus(config, url) as (bus, _):
            needed = ["choice", "router"] if request.use_llm else ["choice"]
            remote = await find_running(bus, needed) if url else set()
            async with start_actors(bus, config, [n for n in needed if n not in remote]):
                reply = await bus.request(subjects.CHOICE_PARSE, request, ChoiceReply,
                                          timeout=config.choice.llm_timeout_s + 10)
        return reply.result
    finally:
        await aclose_tracing(provider)  # spans written off the event loop, shielded


@app.command()
def usage(
    top: Annotated[int, typer.Option("--top", "-n", help="How many fallback chains to show.")] = 10,
    log_path: Annotated[Optional[Path], typer.Option("--log", help="Usage log (default: $TANDEM_USAGE_LOG or the config's router.usage_log).")] = None,
    config_path: ConfigPath = None,
) -> None:
    """Summarise the LLM usage log: calls, failures, fallback chains, latency, tokens and cost per model and task."""
    from .usage import load_usage, render_usage, summarize_usage, usage_log_path

    out = _console(highlight=False)
    try:
        path = log_path or usage_log_path(load_config(config_path).router.usage_log)
        if path is None:
            raise InputError("the usage log is disabled (TANDEM_USAGE_LOG_DISABLE=1)")
        for table in render_usage(summarize_usage(load_usage(path), top=top)):
            out.print(table)
    except TandemError as exc:
        raise _fail(exc) from None


plans_app = typer.Typer(name="plans", rich_markup_mode="markdown", help="Vetted plans (recipes) the planner offers a model before it writes a plan.",
                        no_args_is_help=True)
app.add_typer(plans_app)


async def _recipes(config: Config, url: str | None, request):
    from tandem.messages import Ack
    from tandem.messages.recipes import PLANNER_RECIPES, RecipeList, RecipeReply

    from .runtime import find_running, start_actors

    async with _open_bus(config, url, "tandem-plans") as (bus, _):
        remote = await find_running(bus, ["planner"]) if url else set()
        async with start_actors(bus, config, [] if remote else ["planner"]):
            return await bus.request(PLANNER_RECIPES, request, RecipeList | RecipeReply | Ack, timeout=30)


def _plans_call(config_path: Path | None, nats_url: str | None, request):
    try:
        config, url = _config(config_path, nats_url)
        return _invoke(_recipes, config, url, request)
    except TandemError as exc:
        raise _fail(exc) from None


@plans_app.command("list")
def plans_list(nats_url: NatsUrl = None, creds: Creds = None, config_path: ConfigPath = None) -> None:
    """List the recipes: name, shipped or added, description."""
    from rich.table import Table
    from rich.text import Text

    from tandem.messages.recipes import ListRecipes

    reply = _plans_call(config_path, nats_url, ListRecipes())
    table = Table("recipe", "origin", "description", box=None, highlight=False)
    for r in reply.recipes:
        table.add_row(Text(r.name), "shipped" if r.shipped else "added", Text(r.description))
    _console(highlight=False).print(table)


@plans_app.command("show")
def plans_show(name: Annotated[str, typer.Argument(help="Recipe name.")], nats_url: NatsUrl = None, creds: Creds = None,
               config_path: ConfigPath = None) -> None:
    """Print one recipe as JSON."""
    from tandem.messages.recipes import ShowRecipe

    reply = _plans_call(config_path, nats_url, ShowRecipe(name=name))
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(reply.recipe), indent=2).decode() + "\n")


@plans_app.command("add")
def plans_add(path: Annotated[Path, typer.Argument(help="Recipe file, JSON or YAML.")],
              replace: Annotated[bool, typer.Option("--replace", help="Overwrite a recipe of the same name.")] = False,
              nats_url: NatsUrl = None, creds: Creds = None, config_path: ConfigPath = None) -> None:
    """Add a recipe (validated like a plan first)."""
    from tandem.actors._recipes import decode_recipe
    from tandem.messages.recipes import AddRecipe

    try:
        recipe = decode_recipe(path.read_bytes(), yaml=path.suffix in (".yaml", ".yml"))
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except TandemError as exc:
        raise _fail(exc) from None
    reply = _plans_call(config_path, nats_url, AddRecipe(recipe=recipe, replace=replace))
    err.print(f"added recipe {reply.recipe.name}", highlight=False, markup=False)


@plans_app.command("remove")
def plans_remove(name: Annotated[str, typer.Argument(help="Recipe name.")], nats_url: NatsUrl = None, creds: Creds = None,
                 config_path: ConfigPath = None) -> None:
    """Remove a recipe (a removed shipped recipe stays removed)."""
    from tandem.messages.recipes import RemoveRecipe

    _plans_call(config_path, nats_url, RemoveRecipe(name=name))
    err.print(f"removed recipe {name}", highlight=False, markup=False)


task_app = typer.Typer(name="task", rich_markup_mode="markdown", help="Show, cancel or wait for one task (needs --nats-url: a running Tandem).",
                       no_args_is_help=True)
app.add_typer(task_app)


def _task_config(config_path: Path | None, nats_url: str | None) -> tuple[Config, str]:
    config, url = _config(config_path, nats_url)
    if url is None:
        raise InputError("tasks live on a running Tandem: pass --nats-url (or set TANDEM_NATS_URL); "
                         "an embedded server would start empty")
    return config, url


async def _with_client(config: Config, url: str, fn):
    from .runtime import open_bus
    from .tasks import TaskClient

    async with open_bus(url, name="tandem-task", **config.nats.connect_options()) as (bus, _):
        return await fn(TaskClient(bus))


def _task_call(config_path: Path | None, nats_url: str | None, fn):
    """Run ``await fn(TaskClient)`` against the Tandem at ``--nats-url``; errors become one line and exit 1."""
    try:
        config, url = _task_config(config_path, nats_url)
        return _invoke(_with_client, config, url, fn)
    except TandemError as exc:
        raise _fail(exc) from None


def _age(moment) -> str:
    from tandem.messages import utcnow

    seconds = max(0, int((utcnow() - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@app.command("tasks")
def tasks_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.", min=1, max=1000)] = 20,
    status: Annotated[Optional[str], typer.Option("--status", help="Only tasks with this status (running, failed …).")] = None,
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
) -> None:
    """List recent tasks with their status and age."""
    from rich.table import Table
    from rich.text import Text

    rows = _task_call(config_path, nats_url, lambda c: c.list(limit=limit, status=status))
    table = Table("task", "status", "age", "updated", "task text", box=None, highlight=False)
    for t in rows:
        table.add_row(t.task_id, t.status, _age(t.submitted_at), _age(t.updated_at),
                      Text(t.task[:60].replace("\n", " ")))
    _console(highlight=False).print(table)


def _print_state(state, *, full: bool) -> None:
    out = _console(highlight=False)
    out.print(f"task     {state.task_id}", markup=False)
    out.print(f"status   {state.status}" + (f"  ({state.error.code}: {state.error.message})" if state.error else ""),
              markup=False)
    out.print(f"task     {state.task[:200]}", markup=False)
    out.print(f"age      {_age(state.submitted_at)}   attempts {state.attempts}   trace {state.trace_id}", markup=False)
    if state.question:
        out.print(f"question {state.question}", markup=False)
    if state.plan is not None and full:
        from tandem.services.approval import describe_step

        out.print("plan", markup=False)
        done = {s.step: s for s in (state.result.steps if state.result and state.result.steps else
                                    state.checkpoint.steps if state.checkpoint else [])}
        for s in state.plan.workflow:
            mark = done[s.step].status if s.step in done else ""
            out.print(f"  {s.step}. {describe_step(s)}  {mark}", markup=False)
    if state.result is not None and full:
        for o in state.result.outputs:
            out.print(f"--- output {o.destination} ({len(o.text)} chars)", markup=False)
            out.print(o.text, markup=False, end="" if o.text.endswith("\n") else "\n")


@task_app.command("show")
def task_show(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
) -> None:
    """Status, plan, steps and result of one task."""
    state = _task_call(config_path, nats_url, lambda c: c.get(task_id))
    _print_state(state, full=True)


@task_app.command("cancel")
def task_cancel(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
) -> None:
    """Cancel a task wherever it is (queued, planning, awaiting approval, running)."""
    state = _task_call(config_path, nats_url, lambda c: c.cancel(task_id))
    err.print(f"task {task_id}: {state.status}", highlight=False, markup=False)
    raise typer.Exit(0 if state.status == "cancelled" else 1)


@task_app.command("wait")
def task_wait(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the result here instead of stdout.")] = None,
    nats_url: NatsUrl = None,
    creds: Creds = None,
    config_path: ConfigPath = None,
) -> None:
    """Wait until a task ends; print its result like `tandem run` does."""
    state = _task_call(config_path, nats_url, lambda c: c.wait(task_id))
    raise typer.Exit(_report(state, state.result is not None and state.result.mode == "plan_only", output, set()))


config_app = typer.Typer(name="config", rich_markup_mode="markdown", help="Show the effective configuration and where it comes from.",
                         no_args_is_help=True)
app.add_typer(config_app)


@config_app.command("show")
def config_show(config_path: ConfigPath = None) -> None:
    """Print the effective configuration as YAML, secrets redacted (header values, URL passwords)."""
    import yaml

    from .config import redacted

    try:
        config = load_config(config_path)
    except TandemError as exc:
        raise _fail(exc) from None
    sys.stdout.write(yaml.safe_dump(redacted(config), sort_keys=False, allow_unicode=True))


@config_app.command("path")
def config_path_cmd(config_path: ConfigPath = None) -> None:
    """Print the file the configuration is read from, and what chose it (--config, TANDEM_CONFIG, package)."""
    from .config import config_source

    source = config_source(config_path)
    sys.stdout.write(f"{source.location}\n")
    err.print(f"(from {source.origin})", highlight=False, markup=False)


# Sub-commands defined in their own modules: one registration line each, below.
# tandem cache list|clear: registered lazily through _LAZY_GROUPS (its module imports the bus)
app.command("chat")(__import__("tandem.services.chat_cli", fromlist=["chat_command"]).chat_command)  # tandem chat
app.command("schema")(__import__("tandem.services.schema_cli", fromlist=["schema_command"]).schema_command)  # tandem schema
_deploy = __import__("tandem.services.deploy_cli", fromlist=["up_command", "status_command"])
app.command("up")(_deploy.up_command)  # tandem up
app.command("status")(_deploy.status_command)  # tandem status


# `tandem choose --no-llm` in a shell loop: read without typer (its option coercion loads pydantic, about a
# third of the start-up). Only the plain spellings of choose's own options are read here; anything else
# (--help, -oLabel, --, an unknown option, a bus to use, an error to report) goes to typer, which decides.
_CHOOSE_VALUES = {"--option": "option", "-o": "option", "--description": "description", "-d": "description",
                  "--risk": "risk", "--nats-url": "nats_url", "--creds": "creds", "--config": "config_path",
                  "-c": "config_path"}
_CHOOSE_FLAGS = {"--approval": "approval", "--no-llm": "no_llm"}


def _parse_choose(args: list[str]) -> dict[str, Any] | None:
    """``choose``'s arguments as the command receives them, or ``None`` when typer must read them."""
    values: dict[str, Any] = {"answer": None, "option": [], "description": [], "risk": "medium", "approval": False,
                              "no_llm": False, "nats_url": None, "creds": None, "config_path": None, "verbose": 0}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if values["answer"] is not None or arg == "-":
                return None
            values["answer"] = arg
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _CHOOSE_FLAGS and not eq:
            values[_CHOOSE_FLAGS[name]] = True
        elif name == "--verbose" and not eq:
            values["verbose"] += 1
        elif not eq and len(name) > 1 and name.strip("v") == "-":  # -v, -vv
            values["verbose"] += len(name) - 1
        elif name in _CHOOSE_VALUES:
            if not eq:
                if i == len(args) or args[i].startswith("-"):
                    return None
                value = args[i]
                i += 1
            key = _CHOOSE_VALUES[name]
            if isinstance(values[key], list):
                values[key].append(value)
            else:
                values[key] = value
        else:
            return None
    if values["answer"] is None or not values["option"]:
        return None
    for key, env in (("nats_url", "TANDEM_NATS_URL"), ("creds", "TANDEM_NATS_CREDS")):
        if values[key] is None and os.environ.get(env):
            values[key] = os.environ[env]
    for key in ("creds", "config_path"):
        if values[key] is not None:
            values[key] = Path(values[key])
    return values


def _choose_in_process(args: list[str]) -> bool:
    """Run ``tandem choose --no-llm`` without a bus, as :func:`choose` does; ``False``: typer must run it."""
    values = _parse_choose(args)
    if values is None or not values["no_llm"] or values["nats_url"] is not None:
        return False
    if values["risk"] not in ("low", "medium", "high", "critical"):
        return False
    _use_creds(values["creds"])
    _setup_logging(values["verbose"])
    try:
        config, url = _config(values["config_path"], None)
    except TandemError:
        return False  # typer runs it again and reports the error as every command does
    if url is not None:
        return False
    from tandem.messages import ChoiceContext
    from tandem.services.choice._result import pattern_choice

    context = ChoiceContext(available_options=values["option"], option_descriptions=values["description"],
                            risk_level=values["risk"], kind="approval" if values["approval"] else "options")
    result = pattern_choice(values["answer"], context, execute=config.choice.execute_threshold,
                            confirm=config.choice.confirm_threshold)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return True


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["choose"] and _choose_in_process(sys.argv[2:]):
        return
    app()
