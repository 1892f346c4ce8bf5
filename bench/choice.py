"""Choice parsing: pattern-path answers per second, and a choice request's round trip over NATS.

Baselines measured in the same run: the cost of ``normalize_answer`` alone (the
floor any parse pays) for the pattern path, and a raw nats-py request/reply
echo on the same server for the round trip. Nothing is asserted; the last line
is ``pattern answers/s <x>; round trip p50 <y> µs (<z>x raw)``.

Examples
--------
::

    .venv/bin/python bench/choice.py
    .venv/bin/python bench/choice.py --answers 20000 --requests 3000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import anyio
from _measure import pct

from tandem.messages import ChoiceContext, ChoiceReply, ChoiceRequest, subjects
from tandem.services.bus import Bus, EmbeddedNats
from tandem.services.choice import match_choice, normalize_answer
from tandem.services.config import load_config
from tandem.services.runtime import start_actors
from tandem.services.telemetry import setup_tracing, shutdown_tracing

ANSWERS = ["1番で", "2つ目を実行", "ファイル作成だけ", "1と3番", "最初の2つ", "1番だけど、バックアップ取って",
           "いい感じのやつ", "only the first", "1 and 3", "all but 2", "3以外", "both", "the last one", "①と③",
           "二番目", "no, don't run it"]
OPTIONS = ChoiceContext(available_options=["ファイル作成", "安全モード実行", "完全実行"])


def pattern_rate(n: int) -> tuple[float, float]:
    """Return (pattern answers/s, normalize-only answers/s)."""
    answers = [ANSWERS[i % len(ANSWERS)] for i in range(n)]
    t = time.perf_counter()
    for a in answers:
        normalize_answer(a)
    floor = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for a in answers:
        match_choice(a, OPTIONS)
    return n / (time.perf_counter() - t), floor


async def round_trips(n: int) -> tuple[list[float], list[float]]:
    config = load_config()
    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url)
        raw = await Bus.connect(server.url)

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        await raw.nc.subscribe("bench.echo", cb=echo)
        async with start_actors(bus, config, ["choice"]):
            tandem, baseline = [], []
            for i in range(n + 200):  # first 200: warm-up
                req = ChoiceRequest(answer=ANSWERS[i % len(ANSWERS)], context=OPTIONS, use_llm=False)
                t = time.perf_counter()
                await bus.request(subjects.CHOICE_PARSE, req, ChoiceReply, timeout=5)
                t2 = time.perf_counter()
                await bus.nc.request("bench.echo", b"x" * 200, timeout=5)
                t3 = time.perf_counter()
                if i >= 200:
                    tandem.append((t2 - t) * 1e6)
                    baseline.append((t3 - t2) * 1e6)
        await raw.close()
        await bus.close()
    return tandem, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=50_000, help="answers for the pattern-path rate (default 50000)")
    parser.add_argument("--requests", type=int, default=2000, help="choice requests over NATS (default 2000)")
    args = parser.parse_args()
    os.environ.setdefault("TANDEM_TRACE_FILE", os.path.join(tempfile.mkdtemp(), "traces.jsonl"))
    rate, floor = pattern_rate(args.answers)
    print(f"pattern path      {rate:12.0f} answers/s  ({1e6 / rate:.1f} µs each)")
    print(f"normalize only    {floor:12.0f} answers/s  (floor; pattern path is {floor / rate:.1f}x its cost)")
    provider = setup_tracing("bench-choice")
    try:
        tandem, raw = anyio.run(round_trips, args.requests)
    finally:
        shutdown_tracing(provider)
    p50, raw50 = statistics.median(tandem), statistics.median(raw)
    print(f"choice over NATS  p50 {p50:8.1f} µs  p99 {pct(tandem, 0.99):8.1f} µs  (tracing on, pattern path)")
    print(f"raw nats echo     p50 {raw50:8.1f} µs  p99 {pct(raw, 0.99):8.1f} µs  (baseline, same server)")
    print(f"pattern answers/s {rate:.0f}; round trip p50 {p50:.0f} µs ({p50 / raw50:.2f}x raw)")


if __name__ == "__main__":
    main()
