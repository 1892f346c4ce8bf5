"""The ``tandem`` command line (typer + rich).

Commands: ``run`` (one task, two-stage flow of design note 000), ``serve``
(actors as a long-running process), ``trace`` (print a recorded trace).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import anyio
import anyio.abc
import msgspec
import typer
from rich.console import Console
from rich.logging import RichHandler

from tandem.messages import ExecutionPlan, StepEvent, decoder, subjects

from .config import Config, load_config
from .errors import InputError, TandemError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tandem",
    help="Tandem: an event-driven actor system for LLM work over NATS, traced with OpenTelemetry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
log = logging.getLogger("tandem")

_TYPES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".csv": "csv", ".tsv": "tsv",
          ".json": "json", ".html": "html", ".htm": "html", ".textile": "textile", ".rst": "rst",
          ".yaml": "yaml", ".yml": "yaml", ".log": "log", ".xml": "xml"}

NatsUrl = Annotated[Optional[str], typer.Option("--nats-url", envvar="TANDEM_NATS_URL",
                    help="NATS server to use. Default: the config's nats.url, else an embedded nats-server.")]
ConfigPath = Annotated[Optional[Path], typer.Option("--config", "-c",
                       help="YAML config. Default: $TANDEM_CONFIG, else the default.yaml shipped with Tandem "
                            "(see `tandem config path`).")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging on stderr (-vv for debug).")]


def _setup_logging(verbose: int) -> None:
    # default: only what went unexpectedly wrong; handled failures are reported by the command itself
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=verbose > 1)])


def _fail(exc: BaseException, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
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


def _config(path: Path | None, nats_url: str | None) -> tuple[Config, str | None]:
    config = load_config(path)
    return config, nats_url or config.nats.url


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
    nats_url: NatsUrl = None,
    config_path: ConfigPath = None,
    verbose: Verbose = 0,
) -> None:
    """Run one task: judge its complexity, plan it (two stage) or not (single stage), execute, print the result.

    Progress goes to stderr; the result to stdout or --output. The trace id is
    printed at the end: `tandem trace` shows it.
    """
    _setup_logging(verbose)
    if single_stage and two_stage:
        raise typer.BadParameter("--single-stage and --two-stage exclude each other")
    if not task and execute_plan is None:
        raise typer.BadParameter("a TASK is needed (unless --execute-plan is given)")
    try:
        config, url = _config(config_path, nats_url)
        inputs, types = _read_inputs(input)
        plan = _read_plan(execute_plan) if execute_plan else None
        from .orchestrator import TaskSpec

        spec = TaskSpec(task=task, inputs=inputs, input_types=types, plan=plan, plan_only=plan_only,
                        use_cache=not no_cache, approve=approve,
                        mode="single_stage" if single_stage else "two_stage" if two_stage else "auto")
        if approve and not answer and not sys.stdin.isatty():
            raise InputError("--approve needs a terminal to ask on, or --answer TEXT")
    except TandemError as exc:
        raise _fail(exc) from None
    raise typer.Exit(_invoke(_run, config, url, spec, output, list(answer)))


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


async def _run(config: Config, url: str | None, spec, output: Path | None, answers: list[str] | None = None) -> int:
    from tandem.actors import ACTORS

    from .orchestrator import run_task
    from .runtime import find_running, open_bus, start_actors
    from .telemetry import setup_tracing, shutdown_tracing

    provider = setup_tracing("tandem")
    try:
        async with open_bus(url) as (bus, used_url):
            remote = await find_running(bus, ACTORS) if url else set()
            local = [n for n in ACTORS if n not in remote]
            if remote:
                err.print(f"[dim]using running actors: {', '.join(sorted(remote))} on {used_url}[/]")
            shown: set[tuple[int, str]] = set()
            async with start_actors(bus, config, local), anyio.create_task_group() as tg:
                await tg.start(_progress, bus, spec.task_id, shown)
                result = await run_task(bus, config, spec, approver=_approver(answers or []))
                tg.cancel_scope.cancel()
            for s in result.steps:  # events still in flight when the task ended
                if (s.step, s.status) not in shown:
                    _print_step(s.step, s.action, s.status, s.detail, s.duration_ms)
    finally:
        shutdown_tracing(provider)
    if result.mode == "not_run":
        what = {"rejected": "plan rejected", "unclear": "no clear approval"}.get(result.approval, result.approval)
        err.print(f"{what}: nothing was run" + (f" ({result.fallback})" if result.fallback else ""))
        err.print(f"[dim]trace {result.trace_id}[/]", soft_wrap=True)
        return 0 if result.approval == "rejected" else 1
    if result.modifications:
        err.print("conditions noted (not enforced): " + "; ".join(result.modifications), highlight=False)
    if spec.plan_only:
        text = msgspec.json.format(msgspec.json.encode(result.plan), indent=2).decode() + "\n"
        stdout = [text]
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
    if result.plan_cached:
        how += " (cached plan)"
    if result.fallback:
        how += f" — fell back: {result.fallback}"
    err.print(f"[dim]{how} · complexity {result.complexity:.2f}[/]", soft_wrap=True)
    if result.shape_reason:
        err.print(f"[dim]why: {result.shape_reason}[/]", soft_wrap=True, markup=True)
    err.print(f"[dim]trace {result.trace_id}  (tandem trace {result.trace_id[:8]})[/]", soft_wrap=True)
    return 0


_MARKS = {"ok": "[green]✓[/]", "skipped": "[yellow]↷[/]", "recovered": "[yellow]✓[/]", "failed": "[red]✗[/]"}


def _print_step(step: int, action: str, status: str, detail: str, ms: float) -> None:
    err.print(f"  {_MARKS.get(status, '·')} step {step} {action} [dim]{detail[:80]} ({ms:.1f} ms)[/]",
              highlight=False, markup=True)


async def _progress(bus, task_id: str, shown: set[tuple[int, str]], *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Print this task's step events on stderr as they arrive."""
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
                    err.print(f"  … step {ev.step}/{ev.total_steps} {ev.action} (asking the model)", highlight=False)
                continue
            shown.add((ev.step, ev.status))
            _print_step(ev.step, ev.action, ev.status, ev.detail, ev.duration_ms)
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


@app.command()
def serve(
    names: Annotated[Optional[list[str]], typer.Argument(help="Actors to serve: planner, router, executor (default: all).")] = None,
    nats_url: NatsUrl = None,
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
        config, url = _config(config_path, nats_url)
    except TandemError as exc:
        raise _fail(exc) from None
    _invoke(_serve, config, url, names)


async def _serve(config: Config, url: str | None, names: list[str]) -> None:
    from .runtime import open_bus, start_actors
    from .telemetry import setup_tracing, shutdown_tracing

    provider = setup_tracing("tandem-" + "-".join(names))
    try:
        async with open_bus(url, name="tandem-serve") as (bus, used_url), start_actors(bus, config, names):
            # SIGTERM (docker stop, process managers) and SIGINT stop cleanly: spans flushed, server stopped
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                err.print(f"serving {', '.join(names)} on {used_url} (Ctrl-C to stop)")
                async for signum in signals:
                    err.print(f"stopping on {signal.Signals(signum).name}")
                    break
    finally:
        shutdown_tracing(provider)


@app.command("trace")
def trace_cmd(
    trace_id: Annotated[Optional[str], typer.Argument(help="Trace id or a unique prefix (default: the latest trace).")] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List recent traces instead.")] = False,
    file: Annotated[Optional[Path], typer.Option("--file", help="Trace file (default: $TANDEM_TRACE_FILE or ~/.local/state/tandem/traces.jsonl).")] = None,
) -> None:
    """Print the span tree of a trace with durations (the latest one by default)."""
    from .telemetry import default_trace_file, find_trace, latest_trace_id, load_spans, render_trace, render_trace_list

    out = Console(highlight=False)
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
    result = _invoke(_choose, config, url, request)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")


async def _choose(config: Config, url: str | None, request):
    from tandem.messages import ChoiceReply

    from .runtime import find_running, open_bus, start_actors
    from .telemetry import setup_tracing, shutdown_tracing

    provider = setup_tracing("tandem")
    try:
        async with open_bus(url) as (bus, _):
            needed = ["choice", "router"] if request.use_llm else ["choice"]
            remote = await find_running(bus, needed) if url else set()
            async with start_actors(bus, config, [n for n in needed if n not in remote]):
                reply = await bus.request(subjects.CHOICE_PARSE, request, ChoiceReply,
                                          timeout=config.choice.llm_timeout_s + 10)
        return reply.result
    finally:
        shutdown_tracing(provider)


@app.command()
def usage(
    top: Annotated[int, typer.Option("--top", "-n", help="How many fallback chains to show.")] = 10,
    log_path: Annotated[Optional[Path], typer.Option("--log", help="Usage log (default: $TANDEM_USAGE_LOG or the config's router.usage_log).")] = None,
    config_path: ConfigPath = None,
) -> None:
    """Summarise the LLM usage log: calls, failures, fallback chains, latency, tokens and cost per model and task."""
    from .usage import load_usage, render_usage, summarize_usage, usage_log_path

    out = Console(highlight=False)
    try:
        path = log_path or usage_log_path(load_config(config_path).router.usage_log)
        if path is None:
            raise InputError("the usage log is disabled (TANDEM_USAGE_LOG_DISABLE=1)")
        for table in render_usage(summarize_usage(load_usage(path), top=top)):
            out.print(table)
    except TandemError as exc:
        raise _fail(exc) from None


config_app = typer.Typer(name="config", help="Show the effective configuration and where it comes from.",
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
    err.print(f"(from {source.origin})", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
