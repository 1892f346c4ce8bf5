"""One Tandem actor request/reply hop versus raw nats-py, between two OS processes.

Both sides run in the same invocation against one embedded ``nats-server``
(:class:`tandem.services.bus.EmbeddedNats`); rounds of raw and Tandem alternate and
the median round is reported, so the ratios compare like with like on a noisy
machine. Nothing here asserts on timings: targets are printed, never enforced.

* **Tandem**: a responder process runs :class:`EchoActor` (one
  :class:`~actors.Endpoint` on ``bench.echo``) with tracing on (JSON-lines file
  in a temporary directory, the ``QueuedSpanProcessor`` of ``setup_tracing``); the client calls
  :meth:`tandem.services.bus.Bus.request`, which opens the ``send`` span and injects
  ``traceparent``.
* **Raw**: a responder process does ``nc.subscribe(subject, cb=...)`` +
  ``msg.respond``; the client calls ``nc.request``.

Measured per round: N sequential requests (p50/p99 latency, µs) and
throughput with K requests in flight (req/s), and during the throughput run
the CPU time per request of the client process and of the side's responder
process (all threads, read from ``/proc``): on a shared machine the CPU
figures move far less than the wall-clock ones, and with every core busy the
throughput ratio follows the ratio of CPU per request. The last line printed
is ``ratio p50 <tandem/raw>``.

Diagnostics (not the benchmark proper): ``--sides tandem,untraced`` runs only
those sides beside raw; ``--no-tracing`` runs both sides
without tracer providers; ``--profile DIR`` writes cProfile stats of the
client and of the responders and prints, per process, the main thread's own
time by cost category (span start/end, processor, header injection and
extraction, nats-py header encode/parse, msgspec, the actor mailbox, cancel
scopes, event-loop iterations, the spans' JSON lines, encoded as they end), the
span export thread's CPU per span (it only writes the lines) and the garbage collector's runs,
then the hot spots.

Examples
--------
::

    .venv/bin/python bench/hop.py
    .venv/bin/python bench/hop.py --rounds 5 --latency-requests 5000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from _measure import (
    Layout,
    Side,
    add_common_arguments,
    attribute_profile,
    export_statistics,
    file_exporter_only,
    flush_spans,
    print_medians,
    process_cpu,
    run_round,
    tracing,
    warm_up,
)
from tandem.actors import Actor, Endpoint
from tandem.messages import Message
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.errors import NoResponders, RequestTimeout
from tandem.services.telemetry import setup_tracing, shutdown_tracing

TANDEM_SUBJECT = "bench.echo"
FLUSH_SUBJECT = "bench.echo.flush"
RAW_SUBJECT = "bench.raw_echo"
TEXT = "hello tandem"
P50_TARGET = 1.2
THROUGHPUT_TARGET = 0.8
LAYOUT = Layout(
    ns_per_unit=1000,  # µs
    round_line="  round {n} {name:<6}  p50 {p50:8.1f} µs  p99 {p99:8.1f} µs  {rate:9.0f} req/s",
    table_head=f"{'median of rounds':<16} {'p50 µs':>10} {'p99 µs':>10} {'req/s':>10}",
    table_row="{label:<16} {p50:10.1f} {p99:10.1f} {rate:10.0f}",
)


# --------------------------------------------------------------------------- messages & actor


class EchoRequest(Message, frozen=True, kw_only=True, tag="bench_echo_request"):
    """Ask the echo actor to send ``text`` back."""

    seq: int = 0
    text: str = ""


class EchoReply(Message, frozen=True, kw_only=True, tag="bench_echo_reply"):
    """The echoed ``text``."""

    seq: int = 0
    text: str = ""


class FlushRequest(Message, frozen=True, kw_only=True, tag="bench_flush_request"):
    """Ask the responder to export its pending spans (between rounds, outside the timing)."""


class FlushReply(Message, frozen=True, kw_only=True, tag="bench_flush_reply"):
    """Pending spans are written."""


class EchoActor(Actor):
    """Serve ``bench.echo``: reply with the request's text."""

    name = "bench_echo"

    def __init__(self, bus: Bus, *, flush: Callable[[], object], concurrency: int = 64,
                 subject: str = TANDEM_SUBJECT) -> None:
        super().__init__(bus, concurrency=concurrency)
        self._flush = flush
        self.subject = subject

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(self.subject, EchoRequest, self.echo, timeout=5),
            Endpoint(f"{self.subject}.flush", FlushRequest, self.flush, timeout=30),
        ]

    async def echo(self, request: EchoRequest) -> EchoReply:
        return EchoReply(correlation_id=request.correlation_id, conversation_id=request.conversation_id,
                         seq=request.seq, text=request.text)

    async def flush(self, request: FlushRequest) -> FlushReply:
        await anyio.to_thread.run_sync(self._flush)
        return FlushReply(correlation_id=request.correlation_id)


# --------------------------------------------------------------------------- responder processes


async def _wait_stdin_eof() -> None:
    """Return when the parent closes our stdin (or dies)."""
    await anyio.to_thread.run_sync(sys.stdin.buffer.read)


SAMPLER_ENV = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
"""The head sampler of the ``sampled`` side, set the standard way (the client's root decides)."""

SUBJECTS = {"tandem": TANDEM_SUBJECT, "untraced": "bench.echo_untraced", "sampled": "bench.echo_sampled"}
FLUSH_SUBJECTS = {kind: f"{subject}.flush" for kind, subject in SUBJECTS.items()}


async def serve_tandem(url: str, trace_file: Path | None, kind: str = "tandem",
                       stats_file: Path | None = None) -> None:
    if kind == "sampled":
        os.environ.update(SAMPLER_ENV)
    with tracing("bench.hop.responder", None if kind == "untraced" else trace_file) as provider:
        bus = await Bus.connect(url, name=f"bench-{kind}-responder")
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(EchoActor(bus, flush=provider.force_flush if provider else lambda: None,
                                         subject=SUBJECTS[kind]).run)
                await _wait_stdin_eof()
                tg.cancel_scope.cancel()
        finally:
            await bus.close()
            if stats_file is not None:  # the export thread, which cProfile does not see
                stats_file.write_bytes(msgspec.json.encode(export_statistics(provider)))


FASTSTREAM_SUBJECTS = {"faststream": "bench.fs_echo", "faststream-otel": "bench.fs_echo_otel"}


def faststream_installed() -> bool:
    """Whether FastStream (the ``bench`` extra: ``faststream[nats,otel]``) can be imported."""
    try:
        import faststream.nats  # noqa: F401
    except ImportError:
        return False
    return True


def _faststream_broker(url: str, traced: bool, provider: object, name: str) -> Any:
    from faststream.nats import NatsBroker

    middlewares = ()
    if traced:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware

        middlewares = (NatsTelemetryMiddleware(tracer_provider=provider),)
    return NatsBroker(url, middlewares=middlewares, name=name)


def _echo_model() -> Any:
    import pydantic

    class FsEcho(pydantic.BaseModel):
        seq: int = 0
        text: str = ""

    return FsEcho


async def serve_faststream(url: str, trace_file: Path | None, kind: str) -> None:
    traced = kind == "faststream-otel"
    with tracing("bench.hop.responder", trace_file if traced else None) as provider:
        model = _echo_model()
        broker = _faststream_broker(url, traced, provider, f"bench-{kind}-responder")

        @broker.subscriber(FASTSTREAM_SUBJECTS[kind])
        async def echo(msg: model) -> model:  # type: ignore[valid-type]
            return msg

        @broker.subscriber(FASTSTREAM_SUBJECTS[kind] + ".flush")
        async def flush(_: dict) -> dict:
            if provider is not None:
                await anyio.to_thread.run_sync(provider.force_flush)
            return {}

        await broker.start()
        try:
            await _wait_stdin_eof()
        finally:
            await broker.stop()


async def serve_raw(url: str) -> None:
    nc = await nats.connect(url, name="bench-raw-responder")

    async def cb(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(RAW_SUBJECT, cb=cb)
    await nc.flush()
    await _wait_stdin_eof()
    await nc.drain()


# --------------------------------------------------------------------------- measurement


async def wait_answering(call: Callable[[], Awaitable[None]], what: str, deadline: float = 20.0) -> None:
    """Retry ``call`` until it succeeds (the responder process is up)."""
    with anyio.move_on_after(deadline):
        while True:
            try:
                await call()
                return
            except (NoResponders, RequestTimeout, nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await anyio.sleep(0.05)
    raise SystemExit(f"hop.py: the {what} responder did not answer within {deadline:g}s")


async def spawn(kind: str, url: str, trace_file: Path | None, log: Path, profile: Path | None) -> anyio.abc.Process:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--url", url]
    if trace_file is not None:
        cmd += ["--trace-file", str(trace_file)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    with open(log, "wb") as err:
        return await anyio.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)


async def stop(process: anyio.abc.Process, log: Path) -> None:
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            await process.stdin.aclose()  # the responder exits on EOF
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()
    if process.returncode not in (0, -9):
        tail = log.read_text(errors="replace")[-2000:]
        print(f"responder exited with {process.returncode}:\n{tail}", file=sys.stderr)


def _kinds(args: argparse.Namespace) -> list[str]:
    """The responder processes of this run."""
    kinds = ["raw", "tandem"] if not args.no_tracing else ["raw", "untraced"]
    if not args.no_tracing and not args.traced_only:
        kinds += ["untraced", "sampled"]
        if faststream_installed():
            kinds += ["faststream", "faststream-otel"]
    if args.sides:
        wanted = {"raw", *args.sides.split(",")}
        kinds = [kind for kind in kinds if kind in wanted]
    return kinds


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-bench-hop-") as tmp:
        trace_file = None if args.no_tracing else Path(tmp) / "traces.jsonl"
        with tracing("bench.hop.client", trace_file) as provider:
            async with EmbeddedNats() as server:
                kinds = _kinds(args)
                procs = {kind: await spawn(kind, server.url, trace_file, Path(tmp) / f"{kind}.log", args.profile)
                         for kind in kinds}
                try:
                    await _compare(args, server.url, provider, trace_file, kinds,
                                   {kind: proc.pid for kind, proc in procs.items()})
                finally:
                    for kind, proc in procs.items():
                        await stop(proc, Path(tmp) / f"{kind}.log")
            for st in export_statistics(provider):
                print(f"client span export: {st.exported} exported, {st.dropped} dropped, "
                      f"export thread CPU {st.export_cpu_seconds * 1e6 / max(st.exported, 1):.1f} µs/span")
        if trace_file is None:
            print("tracing OFF (--no-tracing): diagnostic run, not the benchmark's configuration")
        else:
            spans = sum(1 for _ in trace_file.open("rb")) if trace_file.exists() else 0
            print(f"spans written to the trace file: {spans} (tracing was active in the traced sides)")
        if args.profile is not None:
            _print_profiles(args.profile, [kind for kind in kinds if kind != "raw"])


async def _compare(args: argparse.Namespace, url: str, provider: Any, trace_file: Path | None,
                   kinds: list[str], pids: dict[str, int]) -> None:
    from opentelemetry.trace import NoOpTracerProvider

    def cpu_of(kind: str) -> Callable[[], dict[str, float]]:
        pid = pids.get(kind)
        return lambda: {"client": process_cpu(), "responder": process_cpu(pid) if pid is not None else float("nan")}

    timeout = args.timeout
    sides: dict[str, Side] = {}
    closers: list[Callable[[], Awaitable[object]]] = []
    payload_struct = EchoRequest(seq=0, text=TEXT)
    raw_payload = msgspec.json.encode(payload_struct)  # same bytes on the wire as Tandem's request body

    nc = await nats.connect(url, name="bench-raw-client")
    closers.append(nc.drain)

    async def raw_call(i: int) -> None:
        msg = await nc.request(RAW_SUBJECT, raw_payload, timeout=timeout)
        assert len(msg.data) == len(raw_payload)

    async def raw_settle() -> None:
        await nc.flush()

    sides["raw"] = Side("raw", raw_call, raw_settle, cpu_of("raw"))

    for kind in ("tandem", "untraced", "sampled"):
        if kind not in kinds:
            continue
        tp: Any = None  # the global provider: traced
        if kind == "untraced":
            tp = NoOpTracerProvider()
        elif kind == "sampled":
            saved = {k: os.environ.get(k) for k in SAMPLER_ENV}
            os.environ.update(SAMPLER_ENV)
            try:
                tp = setup_tracing("bench.hop.client.sampled", trace_file=trace_file, install_global=False)
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            closers.append(lambda tp=tp: anyio.to_thread.run_sync(shutdown_tracing, tp))
        bus = await Bus.connect(url, name=f"bench-{kind}-client", tracer_provider=tp)
        closers.append(bus.close)
        subject, flush_subject = SUBJECTS[kind], FLUSH_SUBJECTS[kind]

        def make(bus: Bus, subject: str, flush_subject: str, tp: Any) -> Side:
            async def call(i: int) -> None:
                reply = await bus.request(subject, EchoRequest(seq=i, text=TEXT), EchoReply, timeout=timeout)
                assert reply.seq == i

            async def settle() -> None:
                await bus.request(flush_subject, FlushRequest(), FlushReply, timeout=30)
                await flush_spans(tp if hasattr(tp, "force_flush") else provider)

            return Side(kind, call, settle, cpu_of(kind))

        sides[kind] = make(bus, subject, flush_subject, tp)

    for kind in ("faststream", "faststream-otel"):
        if kind not in kinds:
            continue
        traced = kind == "faststream-otel"
        model = _echo_model()
        broker = _faststream_broker(url, traced, provider, f"bench-{kind}-client")
        await broker.start()
        closers.append(broker.stop)

        def make_fs(broker: Any, subject: str, traced: bool) -> Side:
            async def call(i: int) -> None:
                msg = await broker.request(model(seq=i, text=TEXT), subject, timeout=timeout)
                reply = model.model_validate(await msg.decode())
                assert reply.seq == i

            async def settle() -> None:
                await broker.request({}, subject + ".flush", timeout=30)
                if traced:
                    await flush_spans(provider)

            return Side(kind, call, settle, cpu_of(kind))

        sides[kind] = make_fs(broker, FASTSTREAM_SUBJECTS[kind], traced)

    try:
        for side in sides.values():
            await wait_answering(lambda side=side: side.call(0), side.name)
        order = list(sides.values())
        await warm_up(order, args.warmup)
        print(f"hop: {args.rounds} rounds; latency {args.latency_requests} sequential requests, "
              f"throughput {args.throughput_requests} requests with {args.in_flight} in flight; "
              f"sides {', '.join(sides)}", flush=True)
        for r in range(args.rounds):  # rotate the order every round
            shift = r % len(order)
            for side in order[shift:] + order[:shift]:
                await run_round(side, args, LAYOUT)
    finally:
        for close in reversed(closers):
            await close()

    rows = [(name, side) for name, side in sides.items()]
    medians = dict(zip(sides, print_medians(rows, LAYOUT), strict=True))
    r50, r99, rrps = medians["raw"]
    print()
    print(f"{'ratio to raw (same run)':<24} {'p50':>7} {'p99':>7} {'req/s':>7}   targets (p50 / throughput)")
    for name, (p50, p99, rps) in medians.items():
        if name == "raw":
            continue
        target = TARGETS.get(name, "")
        print(f"{name:<24} {p50 / r50:6.2f}x {p99 / r99:6.2f}x {rps / rrps:6.2f}x   {target}")
    if "untraced" in medians and "sampled" in medians:
        print(f"sampled/untraced p50 {medians['sampled'][0] / medians['untraced'][0]:.2f}x, "
              f"throughput {medians['sampled'][2] / medians['untraced'][2]:.2f}x (target: within 5%)")
    print()
    print("CPU per request in the throughput runs (µs, median of rounds; all threads of the process; the client's")
    print("figure includes the idle connections of the other sides):")
    for name, side in sides.items():
        cpu = {process: statistics.median(values) for process, values in side.cpu_per_call.items()}
        print(f"  {name:<16} client {cpu.get('client', float('nan')):7.1f}   "
              f"responder {cpu.get('responder', float('nan')):7.1f}")
    main_side = next((name for name in ("tandem", "untraced", *medians) if name in medians and name != "raw"), None)
    if main_side is not None:
        _bench_result.append(medians[main_side][0] / r50)


TARGETS = {"tandem": "<= 1.6x / >= 0.5x", "untraced": "<= 1.2x / >= 0.8x"}
_bench_result: list[float] = []


def _profiled(fn: Callable[[], None], directory: Path | None, name: str) -> None:
    if directory is None:
        fn()
        return
    import cProfile
    import gc
    import time

    directory.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    collections: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}  # generation -> [runs, seconds]
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # every thread's collections (the GIL holder runs them)
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            entry = collections[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started[0]

    gc.callbacks.append(on_gc)
    try:
        profiler.runcall(fn)
    finally:
        gc.callbacks.remove(on_gc)
        profiler.dump_stats(directory / f"{name}.prof")
        (directory / f"{name}.gc.json").write_bytes(msgspec.json.encode(collections))


def _print_profiles(directory: Path, kinds: list[str], top: int = 20) -> None:
    import pstats

    for name in kinds:
        name = name if name == "client" else f"responder-{name}"
        path = directory / f"{name}.prof"
        if not path.exists():
            continue
        stats = pstats.Stats(str(path))
        print(f"\n--- {name}: where the main thread's time goes (cProfile own time; all sides of the client) ---")
        attribute_profile(stats)
        gc_file = directory / f"{name}.gc.json"
        if gc_file.exists():
            runs = msgspec.json.decode(gc_file.read_bytes())
            print("  garbage collector (all threads, wall time of the collections): " + ", ".join(
                f"gen{gen} {n} runs {seconds * 1000:.1f} ms" for gen, (n, seconds) in sorted(runs.items())))
        export = directory / f"{name}.export.json"
        if export.exists():
            for st in msgspec.json.decode(export.read_bytes()):
                print(f"  span export thread (not in cProfile): {st['exported']} spans, {st['dropped']} dropped, "
                      f"{st['export_cpu_seconds'] * 1e6 / max(st['exported'], 1):.1f} µs CPU per span "
                      f"({st['export_cpu_seconds'] * 1000:.1f} ms in all, holding the GIL)")
        print(f"\n--- cProfile {name} (top {top} by own time; main thread only) ---")
        stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Tandem actor request/reply hop vs raw nats-py request/reply (two processes, one "
                    "embedded nats-server). Prints ratios against the raw baseline of the same run; "
                    "the last line is 'ratio p50 <x>'. Never fails on timings.",
    )
    add_common_arguments(
        parser, rounds_help="alternating rounds per side", latency=2000, throughput=10000, in_flight=64,
        warmup=500, warmup_help="warm-up requests per side before round 1", round_warmup=100, timeout=10.0,
        tracing_help="diagnostic: run without tracer providers (the benchmark proper keeps tracing on)",
        profile_metavar="DIR", profile_help="diagnostic: write cProfile stats of the client and both responders to DIR",
        profile_top=None,
    )
    parser.add_argument("--traced-only", action="store_true",
                        help="only raw and traced Tandem (no untraced, sampled or FastStream sides)")
    parser.add_argument("--sides", metavar="A,B",
                        help="diagnostic: only these sides besides raw (e.g. tandem,untraced,sampled)")
    parser.add_argument("--serve", choices=("raw", *SUBJECTS, *FASTSTREAM_SUBJECTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--trace-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        if args.serve in SUBJECTS:
            stats_file = args.profile / f"responder-{args.serve}.export.json" if args.profile is not None else None

            def run() -> None:
                anyio.run(serve_tandem, args.url, args.trace_file, args.serve, stats_file)
        elif args.serve in FASTSTREAM_SUBJECTS:
            def run() -> None:
                anyio.run(serve_faststream, args.url, args.trace_file, args.serve)
        else:
            def run() -> None:
                anyio.run(serve_raw, args.url)
        _profiled(run, args.profile, f"responder-{args.serve}")
        return
    _profiled(lambda: anyio.run(bench, args), args.profile, "client")
    if args.profile is not None:
        _print_profiles(args.profile, ["client"])
    print(f"ratio p50 {_bench_result[0]:.2f}" if _bench_result else "ratio p50 nan")


if __name__ == "__main__":
    file_exporter_only()
    main()
