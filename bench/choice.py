"""Choice parsing: pattern-path throughput, its growth with answer length, and a round trip over NATS.

Measured in one run (issue 13's targets in brackets):

* short answers (≤ 12 characters, a few hundred distinct ones) [≥ 50k/s];
* ~50-character multi-clause answers (a choice, a condition, a reason…) [≥ 20k/s];
* answer time against length, 50 → 4000 characters: the least-squares slope
  in µs per character and the time per character at the longest answer
  relative to the shortest (≈1 when time is linear in length);
* the floor any parse pays (``normalize_answer``) and, for the round trip, a
  raw nats-py request/reply echo on the same server.

Every answer set holds distinct answers (the pattern path keeps no result
cache; only per-option-list tables are cached). The pattern-path figures are
per CPU second (``time.process_time``), so a busy shared machine does not
count its other processes against the parser; the round trip is wall time.
Nothing is asserted; the last line sums it up.

Examples
--------
::

    .venv/bin/python bench/choice.py
    .venv/bin/python bench/choice.py --seconds 3 --requests 3000
    .venv/bin/python bench/choice.py --profile multi   # where the time goes (cProfile), then exit
    .venv/bin/python bench/choice.py --stages          # µs per multi-clause answer in each stage, then exit
"""

from __future__ import annotations

import argparse
import itertools
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

JA = ChoiceContext(available_options=["ファイル作成", "安全モード実行", "完全実行", "ログ確認", "バックアップ"])
EN = ChoiceContext(available_options=["Lint", "Test", "Build", "Package", "Deploy"])
APPROVAL = ChoiceContext(available_options=["承認", "却下", "修正要求"], kind="approval")

_PICK_JA = ["{n}", "{n}番", "{n}番で", "{n}つ目", "第{n}案", "{n}番目で", "{n}と{m}", "{n}以外", "{n}はいらない", "{n}番かな"]
_PICK_EN = ["{n}", "option {n}", "#{n}", "{n} and {m}", "not {n}", "all but {n}", "{n} please", "maybe {n}", "{n}?"]
_WORDS = ["はい", "いいえ", "承認", "却下", "yes", "no", "ok", "やめて", "全部", "both", "最初の2つ", "the last one",
          "二番目", "first two", "the second", "うーん", "idk", "whatever", "実行して", "cancel"]
_CLAUSE_JA = ["{n}番でお願いします", "やっぱり{n}番", "{n}番と{m}番", "{n}はやめて{m}で"]
_COND_JA = ["ただしバックアップを取ってから", "ログは残しておいて", "テストは省略して", "急ぎでお願いします"]
_CLAUSE_EN = ["I'd go with option {n}", "not {n} but {m}", "options {n} and {m}", "{n}, no wait, {m}"]
_COND_EN = ["but please keep the logs", "and make a backup first", "as long as prod is untouched", "because it is faster"]


def short_answers() -> list[tuple[str, ChoiceContext]]:
    """Distinct short answers (≤ 12 characters)."""
    out: list[tuple[str, ChoiceContext]] = []
    for n, m in itertools.permutations(range(1, 6), 2):
        out += [(t.format(n=n, m=m), JA) for t in _PICK_JA] + [(t.format(n=n, m=m), EN) for t in _PICK_EN]
    out += [(w, APPROVAL) for w in _WORDS] + [(w, EN) for w in _WORDS]
    seen: dict[tuple[str, int], tuple[str, ChoiceContext]] = {}
    for a, c in out:
        if len(a) <= 12:
            seen.setdefault((a, id(c)), (a, c))
    return list(seen.values())


def multi_answers() -> list[tuple[str, ChoiceContext]]:
    """Distinct multi-clause answers of about 50 characters."""
    out: list[tuple[str, ChoiceContext]] = []
    for (n, m), clause, cond in itertools.product(itertools.permutations(range(1, 6), 2), _CLAUSE_JA, _COND_JA):
        a = f"{clause.format(n=n, m=m)}、{cond}。理由は後で説明しますのでよろしくお願いします"
        out.append((a[:50], JA))
    for (n, m), clause, cond in itertools.product(itertools.permutations(range(1, 6), 2), _CLAUSE_EN, _COND_EN):
        a = f"{clause.format(n=n, m=m)}, {cond}, thanks a lot"
        out.append(((a + " " * 50)[:50].rstrip(), EN))
    return out


def rate(answers: list[tuple[str, ChoiceContext]], seconds: float) -> float:
    """Answers per CPU second over at least ``seconds`` of CPU time (whole passes over the set)."""
    for a, c in answers:  # warm the per-context tables and the lexicon dispatch
        match_choice(a, c)
    done = 0
    t = time.process_time()
    while True:
        for a, c in answers:
            match_choice(a, c)
        done += len(answers)
        elapsed = time.process_time() - t
        if elapsed >= seconds:
            return done / elapsed


def floor_rate(answers: list[tuple[str, ChoiceContext]], seconds: float) -> float:
    done = 0
    t = time.process_time()
    while True:
        for a, _ in answers:
            normalize_answer(a)
        done += len(answers)
        elapsed = time.process_time() - t
        if elapsed >= seconds:
            return done / elapsed


def length_curve(seconds: float) -> list[tuple[int, float]]:
    """(length, µs per answer) for answers of 50 to 4000 characters built from distinct clauses."""
    clauses = [f"{c.format(n=n, m=m)}, {d}" for (n, m), c, d in
               itertools.product(itertools.permutations(range(1, 6), 2), _CLAUSE_EN, _COND_EN)]
    points = []
    for length in (50, 100, 250, 500, 1000, 2000, 4000):
        answers = []
        for k in range(8):  # eight distinct answers per length
            text, i = "", k
            while len(text) < length:
                text += clauses[i % len(clauses)] + ". "
                i += 7
            answers.append(text[:length])
        for a in answers:
            match_choice(a, EN)
        reps = 0
        t = time.process_time()
        while time.process_time() - t < seconds / 7:
            for a in answers:
                match_choice(a, EN)
            reps += len(answers)
        points.append((length, (time.process_time() - t) / reps * 1e6))
    return points


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (µs per character, intercept µs)."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


async def round_trips(n: int) -> tuple[list[float], list[float]]:
    config = load_config()
    answers = short_answers()
    async with EmbeddedNats() as server:
        bus = await Bus.connect(server.url)
        raw = await Bus.connect(server.url)

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        await raw.nc.subscribe("bench.echo", cb=echo)
        async with start_actors(bus, config, ["choice"]):
            tandem, baseline = [], []
            for i in range(n + 200):  # first 200: warm-up
                a, c = answers[i % len(answers)]
                req = ChoiceRequest(answer=a, context=c, use_llm=False)
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


def profile(which: str, top: int = 25) -> None:
    """Print the ``top`` functions by own time (cProfile) over a few passes of one answer set; a diagnostic only."""
    import cProfile
    import pstats

    answers = short_answers() if which == "short" else multi_answers()
    for a, c in answers:
        match_choice(a, c)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        for a, c in answers:
            match_choice(a, c)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def stages(seconds: float) -> None:
    """Print the µs per multi-clause answer of each stage of the pattern path; a diagnostic only.

    Each stage is timed with the ones before it (the clause stage needs fresh
    tokens: it marks them), and its own share is the difference; ``other`` is
    what :func:`~tandem.services.choice.analyse` adds (option tables, fast
    lanes, the residue of an undecided answer, the typo reader). Short answers
    are left out: most take a fast lane that skips the clause stage.
    """
    from tandem.services.choice import analyse
    from tandem.services.choice._clauses import read
    from tandem.services.choice._decide import decide
    from tandem.services.choice._normalize import prep
    from tandem.services.choice._options import index_for
    from tandem.services.choice._scanner import scan

    data = []
    for a, c in multi_answers():
        t = prep(a)
        s = t.lower()
        data.append((a, c, s, t if len(t) == len(s) else s, index_for(c)))

    def per_answer(fn) -> float:
        best = float("inf")
        for _ in range(5):
            done, t0 = 0, time.process_time()
            while time.process_time() - t0 < seconds / 25:
                for x in data:
                    fn(*x)
                done += len(data)
            best = min(best, (time.process_time() - t0) / done * 1e6)
        return best

    total = per_answer(lambda a, c, s, t, idx: analyse(a, c))
    norm = per_answer(lambda a, c, s, t, idx: normalize_answer(a))
    sc = per_answer(lambda a, c, s, t, idx: scan(s, idx))
    rd = per_answer(lambda a, c, s, t, idx: read(s, t, scan(s, idx), idx.approval, idx.n))
    dc = per_answer(lambda a, c, s, t, idx: decide(read(s, t, scan(s, idx), idx.approval, idx.n), idx, c))
    print(f"multi-clause: {total:.1f} µs per answer — normalise {norm:.1f}, scan {sc:.1f}, clauses {rd - sc:.1f}, "
          f"decide {dc - rd:.1f}, other {total - dc - norm:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput measurement (default 2)")
    parser.add_argument("--requests", type=int, default=2000, help="choice requests over NATS (default 2000)")
    parser.add_argument("--profile", choices=["short", "multi"], help="profile one answer set instead, then exit")
    parser.add_argument("--stages", action="store_true", help="time each stage on the multi-clause set, then exit")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile)
        return
    if args.stages:
        stages(args.seconds)
        return
    os.environ.setdefault("TANDEM_TRACE_FILE", os.path.join(tempfile.mkdtemp(), "traces.jsonl"))
    short, multi = short_answers(), multi_answers()
    r_short = rate(short, args.seconds)
    r_multi = rate(multi, args.seconds)
    floor = floor_rate(short, args.seconds / 2)
    mean_multi = statistics.fmean(len(a) for a, _ in multi)
    print(f"short answers     {r_short:10.0f} answers/s  ({1e6 / r_short:6.1f} µs each; {len(short)} distinct, "
          f"target 50000: {r_short / 50000:.2f}x)")
    print(f"multi-clause      {r_multi:10.0f} answers/s  ({1e6 / r_multi:6.1f} µs each; {len(multi)} distinct, "
          f"{mean_multi:.0f} chars, target 20000: {r_multi / 20000:.2f}x)")
    print(f"normalize only    {floor:10.0f} answers/s  (floor; the pattern path is {floor / r_short:.1f}x its cost)")
    points = length_curve(args.seconds)
    b, a0 = slope(points)
    per_char = [y / x for x, y in points]
    print("length (chars)    " + "  ".join(f"{x:>6}" for x, _ in points))
    print("µs per answer     " + "  ".join(f"{y:6.0f}" for _, y in points))
    print(f"slope             {b:.2f} µs/char (intercept {a0:.0f} µs); time per char at 4000 vs 50: "
          f"{per_char[-1] / per_char[0]:.2f}x (1 = linear)")
    provider = setup_tracing("bench-choice")
    try:
        tandem, raw = anyio.run(round_trips, args.requests)
    finally:
        shutdown_tracing(provider)
    p50, raw50 = statistics.median(tandem), statistics.median(raw)
    print(f"choice over NATS  p50 {p50:8.1f} µs  p99 {pct(tandem, 0.99):8.1f} µs  (tracing on, pattern path)")
    print(f"raw nats echo     p50 {raw50:8.1f} µs  p99 {pct(raw, 0.99):8.1f} µs  (baseline, same server)")
    print(f"short {r_short:.0f}/s ({r_short / 50000:.2f}x target); multi-clause {r_multi:.0f}/s "
          f"({r_multi / 20000:.2f}x target); slope {b:.2f} µs/char; round trip p50 {p50:.0f} µs ({p50 / raw50:.2f}x raw)")


if __name__ == "__main__":
    main()
