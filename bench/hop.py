"""One Tandem actor request/reply hop versus raw nats-py, between two OS processes.

Both sides run in the same invocation against one embedded ``nats-server``
(:class:`tandem.services.bus.EmbeddedNats`); rounds of raw and Tandem alternate and
the median round is reported, so the ratios compare like with like on a noisy
machine. Nothing here asserts on timings: targets are printed, never enforced.

* **Tandem**: a responder process runs :class:`EchoActor` (one
  :class:`~actors.Endpoint` on ``bench.echo``) with tracing on (JSON-lines file
  in a temporary directory, ``BatchSpanProcessor`` active); the client calls
  :meth:`tandem.services.bus.Bus.request`, which opens the ``send`` span and injects
  ``traceparent``.
* **Raw**: a responder process does ``nc.subscribe(subject, cb=...)`` +
  ``msg.respond``; the client calls ``nc.request``.

Measured per round: N sequential requests (p50/p99 latency, µs) and
throughput with K requests in flight (req/s). The last line printed is
``ratio p50 <tandem/raw>``.

Diagnostics (not the benchmark proper): ``--no-tracing`` runs both sides
without tracer providers; ``--profile DIR`` writes cProfile stats of the
client and of both responders and prints the hot spots.

Examples
--------
::

    .venv/bin/python bench/hop.py
    .venv/bin/python bench/hop.py --rounds 5 --latency-requests 5000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import nats
from _measure import Layout, Side, add_common_arguments, alternate_rounds, file_exporter_only, flush_spans, print_medians, tracing, warm_up

from tandem.actors import Actor, Endpoint
from tandem.messages import Message
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.errors import NoResponders, RequestTimeout

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

    def __init__(self, bus: Bus, *, flush: Callable[[], object], concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self._flush = flush

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(TANDEM_SUBJECT, EchoRequest, self.echo, timeout=5),
            Endpoint(FLUSH_SUBJECT, FlushRequest, self.flush, timeout=30),
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


async def serve_tandem(url: str, trace_file: Path | None) -> None:
    with tracing("bench.hop.responder", trace_file) as provider:
        bus = await Bus.connect(url, name="bench-tandem-responder")
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(EchoActor(bus, flush=provider.force_flush if provider else lambda: None).run)
                await _wait_stdin_eof()
                tg.cancel_scope.cancel()
        finally:
            await bus.close()


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


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tandem-bench-hop-") as tmp:
        trace_file = None if args.no_tracing else Path(tmp) / "traces.jsonl"
        with tracing("bench.hop.client", trace_file) as provider:
            async with EmbeddedNats() as server:
                tandem_proc = await spawn("tandem", server.url, trace_file, Path(tmp) / "tandem.log", args.profile)
                raw_proc = await spawn("raw", server.url, trace_file, Path(tmp) / "raw.log", args.profile)
                try:
                    await _compare(args, server.url, provider)
                finally:
                    await stop(tandem_proc, Path(tmp) / "tandem.log")
                    await stop(raw_proc, Path(tmp) / "raw.log")
        if trace_file is None:
            print("tracing OFF (--no-tracing): diagnostic run, not the benchmark's configuration")
        else:
            spans = sum(1 for _ in trace_file.open("rb")) if trace_file.exists() else 0
            print(f"spans written to the trace file: {spans} (tracing was active in both processes)")


async def _compare(args: argparse.Namespace, url: str, provider: object) -> None:
    bus = await Bus.connect(url, name="bench-tandem-client")
    nc = await nats.connect(url, name="bench-raw-client")
    try:
        payload_struct = EchoRequest(seq=0, text=TEXT)
        raw_payload = msgspec.json.encode(payload_struct)  # same bytes on the wire as Tandem's request body
        timeout = args.timeout

        async def tandem_call(i: int) -> None:
            reply = await bus.request(TANDEM_SUBJECT, EchoRequest(seq=i, text=TEXT), EchoReply, timeout=timeout)
            assert reply.seq == i

        async def raw_call(i: int) -> None:
            msg = await nc.request(RAW_SUBJECT, raw_payload, timeout=timeout)
            assert len(msg.data) == len(raw_payload)

        async def tandem_settle() -> None:
            await bus.request(FLUSH_SUBJECT, FlushRequest(), FlushReply, timeout=30)
            await flush_spans(provider)

        async def raw_settle() -> None:
            await nc.flush()

        await wait_answering(lambda: tandem_call(0), "tandem")
        await wait_answering(lambda: raw_call(0), "raw")

        tandem = Side("tandem", tandem_call, tandem_settle)
        raw = Side("raw", raw_call, raw_settle)
        await warm_up((raw, tandem), args.warmup)

        print(f"hop: {args.rounds} rounds; latency {args.latency_requests} sequential requests, "
              f"throughput {args.throughput_requests} requests with {args.in_flight} in flight", flush=True)
        await alternate_rounds(raw, tandem, args, LAYOUT)
    finally:
        await bus.close()
        await nc.drain()

    (r50, r99, rrps), (t50, t99, trps) = print_medians([(s.name, s) for s in (raw, tandem)], LAYOUT)
    ratio_p50, ratio_p99, ratio_rps = t50 / r50, t99 / r99, trps / rrps
    print()
    print(f"tandem/raw p50 latency  {ratio_p50:.2f}x  (target <= {P50_TARGET:.1f}x: "
          f"{'met' if ratio_p50 <= P50_TARGET else 'NOT met'})")
    print(f"tandem/raw p99 latency  {ratio_p99:.2f}x")
    print(f"tandem/raw throughput   {ratio_rps:.2f}x  (target >= {THROUGHPUT_TARGET:.0%}: "
          f"{'met' if ratio_rps >= THROUGHPUT_TARGET else 'NOT met'})")
    print(f"tandem overhead per hop (p50) {t50 - r50:.1f} µs")
    _bench_result.append(ratio_p50)


_bench_result: list[float] = []


def _profiled(fn: Callable[[], None], directory: Path | None, name: str) -> None:
    if directory is None:
        fn()
        return
    import cProfile

    directory.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(fn)
    finally:
        profiler.dump_stats(directory / f"{name}.prof")


def _print_profiles(directory: Path, top: int = 25) -> None:
    import pstats

    for name in ("client", "responder-tandem"):
        path = directory / f"{name}.prof"
        if path.exists():
            print(f"\n--- cProfile {name} (top {top} by own time; main thread only) ---")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


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
    parser.add_argument("--serve", choices=("tandem", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--trace-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        run = (lambda: anyio.run(serve_tandem, args.url, args.trace_file)) if args.serve == "tandem" \
            else (lambda: anyio.run(serve_raw, args.url))
        _profiled(run, args.profile, f"responder-{args.serve}")
        return
    _profiled(lambda: anyio.run(bench, args), args.profile, "client")
    if args.profile is not None:
        _print_profiles(args.profile)
    print(f"ratio p50 {_bench_result[0]:.2f}" if _bench_result else "ratio p50 nan")


if __name__ == "__main__":
    file_exporter_only()
    main()
