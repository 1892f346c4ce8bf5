"""Measurement helpers shared by the benchmark scripts in ``bench/``.

The scripts are run as ``.venv/bin/python bench/<name>.py``, so this
directory is on ``sys.path`` and they import this module as ``_measure``
(hop.py's ``--serve`` subprocess is started the same way).

A benchmark pits two :class:`Side` objects against each other: after a
warm-up (:func:`warm_up`) the rounds alternate (:func:`alternate_rounds`),
each round measuring p50/p99 latency of sequential calls and throughput with
calls in flight (:func:`run_round`); the medians of the rounds are printed by
:func:`print_medians`. How the figures look is a script's :class:`Layout`;
its command line gets the common options from :func:`add_common_arguments`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tandem import actors
from tandem.services.telemetry import setup_tracing, shutdown_tracing

Call = Callable[[int], Awaitable[None]]
"""One measured call; it gets the call's index (which it may ignore)."""


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """Return the ``q``-quantile (0–1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def pct(values: list[float], q: float) -> float:
    """Return the ``q``-quantile (0–1) of unsorted values: the element at index ``int(q * len)``.

    choice.py's definition, kept so its figures stay comparable with earlier
    runs; it differs from :func:`percentile` (nearest rank over ``len - 1``).
    """
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --------------------------------------------------------------------------- measuring


async def measure_latency(call: Call, n: int, ns_per_unit: float) -> tuple[float, float]:
    """Run ``n`` sequential calls; return (p50, p99) in units of ``ns_per_unit`` ns (1000: µs, 1e6: ms)."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        await call(i)
        samples.append((clock() - t0) / ns_per_unit)
    samples.sort()
    return percentile(samples, 0.50), percentile(samples, 0.99)


async def measure_throughput(call: Call, total: int, in_flight: int) -> float:
    """Run ``total`` calls with ``in_flight`` workers; return calls per second."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await call(i)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(min(in_flight, total)):
            tg.start_soon(worker)
    return total / (time.perf_counter() - t0)


class Side:
    """One contender: a ``call(i)`` coroutine, how to settle between rounds, and its figures per round.

    ``cpu``, when given, returns the CPU seconds used so far by each process involved
    (e.g. ``{"client": ..., "responder": ...}``); :func:`run_round` then records the CPU
    time per call of the throughput run in :attr:`cpu_per_call` (µs), a figure that other
    work on a shared machine disturbs far less than the wall-clock ones.
    """

    def __init__(self, name: str, call: Call, settle: Callable[[], Awaitable[None]],
                 cpu: Callable[[], dict[str, float]] | None = None) -> None:
        self.name = name
        self.call = call
        self.settle = settle
        self.cpu = cpu
        self.p50: list[float] = []
        self.p99: list[float] = []
        self.rate: list[float] = []
        self.cpu_per_call: dict[str, list[float]] = {}


@dataclass(frozen=True)
class Layout:
    """How a benchmark measures and prints its latency figures.

    ``round_line`` is formatted with ``n`` (the round), ``name`` (the side),
    ``p50``, ``p99`` and ``rate``; ``table_row`` with ``label``, ``p50``,
    ``p99`` and ``rate``; ``table_head`` is printed as it is.
    """

    ns_per_unit: float
    round_line: str
    table_head: str
    table_row: str


async def run_round(side: Side, args: argparse.Namespace, layout: Layout) -> None:
    """One round of ``side``: ``args.round_warmup`` calls, then latency and throughput; print its line."""
    for i in range(args.round_warmup):
        await side.call(i)
    p50, p99 = await measure_latency(side.call, args.latency_requests, layout.ns_per_unit)
    before = side.cpu() if side.cpu is not None else {}
    rate = await measure_throughput(side.call, args.throughput_requests, args.in_flight)
    if side.cpu is not None:
        for process, seconds in side.cpu().items():
            used = (seconds - before.get(process, float("nan"))) * 1e6 / max(args.throughput_requests, 1)
            side.cpu_per_call.setdefault(process, []).append(used)
    await side.settle()  # export this side's spans now, not during the other side's round
    side.p50.append(p50)
    side.p99.append(p99)
    side.rate.append(rate)
    print(layout.round_line.format(n=len(side.p50), name=side.name, p50=p50, p99=p99, rate=rate), flush=True)


async def warm_up(sides: Sequence[Side], n: int) -> None:
    """``n`` calls of each side in turn, each followed by its settle."""
    for side in sides:
        for i in range(n):
            await side.call(i)
        await side.settle()


async def alternate_rounds(first: Side, second: Side, args: argparse.Namespace, layout: Layout,
                           profiled: Side | None = None) -> Any:
    """``args.rounds`` rounds of both sides, ``first`` leading in even rounds, ``second`` in odd ones.

    With ``profiled`` and ``args.profile`` set, the rounds of ``profiled``
    run under a ``cProfile.Profile``, which is returned (otherwise None).
    """
    profiler = None
    if profiled is not None and args.profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    for r in range(args.rounds):
        for side in ((first, second) if r % 2 == 0 else (second, first)):
            if profiler is not None and side is profiled:
                profiler.enable()
            await run_round(side, args, layout)
            if profiler is not None and side is profiled:
                profiler.disable()
    return profiler


def print_medians(rows: Sequence[tuple[str, Side]], layout: Layout) -> list[tuple[float, float, float]]:
    """Print the table of medians of the rounds, a row per ``(label, side)``; return (p50, p99, rate) per row."""
    med = statistics.median
    medians = [(med(side.p50), med(side.p99), med(side.rate)) for _, side in rows]
    print()
    print(layout.table_head)
    for (label, _), (p50, p99, rate) in zip(rows, medians, strict=True):
        print(layout.table_row.format(label=label, p50=p50, p99=p99, rate=rate))
    return medians


def print_profile(profiler: Any, path: Path, what: str, note: str, top: int) -> None:
    """Write ``profiler``'s stats to ``path``; print the ``top`` rows by own time, then by cumulative
    time those in the project's packages."""
    import pstats

    profiler.dump_stats(path)
    print(f"\n--- cProfile of {what} ({note}; written to {path}) ---")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    root = re.escape(str(Path(actors.__file__).resolve().parent.parent))
    stats.sort_stats("cumulative").print_stats(rf"{root}/(actors|services|messages)/", top)


# cProfile own time by where it is spent: (category, substrings of "file:function"), first match wins
PROFILE_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("idle: waiting in epoll (not a cost)", ("'poll' of 'select.epoll'", "'select' of 'select")),
    ("header injection/extraction (W3C traceparent)", ("propagat", "tracecontext", ":inject_span", ":extract_span_context",
                                                       ":inject_headers", ":extract_context", "tracestate",
                                                       "_Forwarded", ":start_process_from")),
    ("span context attach/detach", ("opentelemetry/context", ":activate", ":deactivate", ":current_span", "use_span")),
    ("sampler + id generation", ("sampling.py", "id_generator", ":generate_")),
    ("span processor on_start/on_end (queue)", ("sdk/trace/export", "_shared_internal", ":on_end", ":on_start",
                                                ":_on_ending", ":_queue_span")),
    ("span JSON line, encoded as the span ends", ("_setup.py:_hop_parts", "_setup.py:encode_line", "_setup.py:_document",
                                                  "_setup.py:_iso", "_setup.py:_is_hop_span")),
    ("span start/end in the SDK (attributes, bookkeeping)", ("opentelemetry/", "services/bus/_tracing.py")),
    ("msgspec encode/decode", ("msgspec", "messages/")),
    ("mailbox hand-off (actor mailbox, futures)", ("anyio/streams/memory", "anyio/_core/_synchronization",
                                                   "Event.wait", "Event.set", "actors/_base.py:get",
                                                   "actors/_base.py:put", "actors/_base.py:dispatch",
                                                   ":create_future", "set_result", "_DirectQueue", ":_take_reply",
                                                   ":_offer_first")),
    ("cancel scopes, deadlines, timeouts (anyio)", ("anyio/", "_deadline.py", ":_arm_timer")),
    ("FastStream / pydantic", ("faststream", "fast_depends", "pydantic")),
    ("nats-py headers (encode on publish, parse on receipt)", ("nats/aio/client.py:_send_publish",
                                                               "services/bus/_nats.py:_send_publish",
                                                               "services/bus/_nats.py:_encode_header_block",
                                                               "services/bus/_nats.py:_parse_header_lines",
                                                               "services/bus/_nats.py:_parsed_name",
                                                               "nats/aio/client.py:_process_headers",
                                                               "nats/aio/client.py:_parse_header_lines",
                                                               "nats/aio/client.py:<genexpr>", "hpub_cmd",
                                                               "'translate' of 'str'")),
    ("nats-py client", ("nats/",)),
    ("Tandem bus and actor code", ("services/bus/", "actors/")),
    ("event loop iterations (asyncio, selectors, sockets)", ("asyncio", "selectors", "select", "socket",
                                                             "_contextvars", "run_until", "sock_")),
]


def attribute_profile(stats: Any) -> dict[str, float]:
    """Print and return the own time of a ``pstats.Stats`` grouped into the hop's cost categories.

    Categories follow :data:`PROFILE_CATEGORIES` (OTel span start/end, processor,
    propagation, context attach/detach, msgspec, mailbox hand-off, event loop...);
    the rest is "other". Own time (``tottime``) is used, so nothing is counted twice.
    The export thread does not appear in cProfile (main thread only): see the
    span processor's ``statistics()`` for its CPU time.
    """
    totals: dict[str, float] = {}
    grand = 0.0
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        key = f"{filename}:{func}"
        grand += tt
        for name, needles in PROFILE_CATEGORIES:
            if any(n in key for n in needles):
                break
        else:
            name = "other"
        totals[name] = totals.get(name, 0.0) + tt
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds * 1000:10.1f} ms  {100 * seconds / grand if grand else 0:5.1f}%  {name}")
    return totals


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system, every thread) used so far by process ``pid`` (None: this one).

    Read from ``/proc/<pid>/stat`` on Linux; NaN where that is not available.
    """
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


# --------------------------------------------------------------------------- tracing


def file_exporter_only() -> None:
    """Drop the OTLP endpoints from the environment: spans always go to the JSON-lines file exporter."""
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)


@contextmanager
def tracing(service: str, trace_file: Path | None) -> Iterator[Any]:
    """A tracer provider writing to ``trace_file`` (None: no provider), shut down on exit."""
    provider = setup_tracing(service, trace_file=trace_file) if trace_file is not None else None
    try:
        yield provider
    finally:
        if provider is not None:
            shutdown_tracing(provider)


async def flush_spans(provider: Any) -> None:
    """Export ``provider``'s pending spans (no-op without a provider)."""
    if provider is not None and hasattr(provider, "force_flush"):
        await anyio.to_thread.run_sync(provider.force_flush)


def export_statistics(provider: Any) -> list[Any]:
    """Return the ``statistics()`` of ``provider``'s span processors that have them (export queue, drops, CPU)."""
    multi = getattr(provider, "_active_span_processor", None)
    return [p.statistics() for p in getattr(multi, "_span_processors", ()) if hasattr(p, "statistics")]


# --------------------------------------------------------------------------- command line


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    rounds_help: str,
    latency: int,
    throughput: int,
    in_flight: int,
    warmup: int,
    profile_help: str,
    unit: str = "requests",
    latency_option: str = "--latency-requests",
    throughput_option: str = "--throughput-requests",
    rounds: int = 3,
    warmup_help: str | None = None,
    round_warmup: int | None = None,
    timeout: float | None = None,
    tracing_help: str = "diagnostic: no tracer provider (the benchmark proper keeps tracing on)",
    profile_metavar: str = "FILE",
    profile_top: int | None = 30,
    after_rounds: Callable[[argparse.ArgumentParser], object] | None = None,
) -> None:
    """Add the options the benchmarks share, with a script's defaults and wording.

    The namespace always has ``rounds``, ``latency_requests``,
    ``throughput_requests``, ``in_flight``, ``warmup``, ``round_warmup`` (0
    when ``round_warmup`` is None: no option), ``no_tracing`` and
    ``profile``; ``timeout`` and ``profile_top`` when asked for. ``unit``
    names what is sent ("requests", "tasks"); ``after_rounds`` adds a
    script's own options right after ``--rounds``.
    """
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"{rounds_help}; medians are reported (default {rounds})")
    if after_rounds is not None:
        after_rounds(parser)
    parser.add_argument(latency_option, dest="latency_requests", type=int, default=latency, metavar="N",
                        help=f"sequential {unit} per round for p50/p99 (default {latency})")
    parser.add_argument(throughput_option, dest="throughput_requests", type=int, default=throughput, metavar="N",
                        help=f"{unit} per round for the throughput run (default {throughput})")
    parser.add_argument("--in-flight", type=int, default=in_flight, metavar="K",
                        help=f"concurrent {unit} in the throughput run (default {in_flight})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"{warmup_help or f'warm-up {unit} per side'} (default {warmup})")
    if round_warmup is None:
        parser.set_defaults(round_warmup=0)
    else:
        parser.add_argument("--round-warmup", type=int, default=round_warmup,
                            help=f"warm-up {unit} at the start of every round (default {round_warmup})")
    if timeout is not None:
        parser.add_argument("--timeout", type=float, default=timeout,
                            help=f"per-request timeout, seconds (default {timeout:g})")
    parser.add_argument("--no-tracing", action="store_true", help=tracing_help)
    parser.add_argument("--profile", type=Path, metavar=profile_metavar, help=profile_help)
    if profile_top is not None:
        parser.add_argument("--profile-top", type=int, default=profile_top, metavar="N",
                            help=f"rows per profile table (default {profile_top})")
