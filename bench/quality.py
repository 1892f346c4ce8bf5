"""Conversion quality of ``tandem run`` on the embedded defaults, judged against pandoc (issue 11).

For real Markdown documents we did not write — the READMEs of installed
packages, from their metadata (``Description-Content-Type: text/markdown``) —
and several target formats, this runs ``tandem run --no-cache --input
README.md "Convert this Markdown to <Format>"`` and compares each result
with pandoc's own conversion of the same document (``pandoc -f gfm -t <fmt>``
through :func:`tandem.services.convert.convert`).

Score: the share of pandoc's changes the result reproduces, as a normalised
line-similarity gain over the unconverted input::

    sim(a, b) = difflib.SequenceMatcher ratio over the lines of a and b
                (trailing blanks stripped, blank lines dropped)
    score     = (sim(result, pandoc) - sim(input, pandoc)) / (1 - sim(input, pandoc))

1.0 means identical to pandoc's conversion, 0 no closer than the input
itself, below 0 further away. The target is ≥ 0.9 for every document and
format, and a whole task under 20 s on a 2-core machine once the model is
loaded.

By default the actors run in one ``tandem serve`` process on a NATS server
started here, so the model is loaded once and each task's time is that of
``tandem run --nats-url`` (a new CLI process, the actors warm); ``--cold``
runs every task on its own (embedded NATS, model start included). Nothing
here asserts on timings.

Examples
--------
::

    .venv/bin/python bench/quality.py
    .venv/bin/python bench/quality.py --docs httpx rich --formats textile rst
    .venv/bin/python bench/quality.py --cold
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

DOCS = ("httpx", "msgspec", "nats-py", "idna", "markdown-it-py")
"""Packages whose Markdown README is the test document (small to medium, varied markup)."""

FORMATS = {"textile": "Textile", "html": "HTML", "rst": "reStructuredText", "asciidoc": "AsciiDoc",
           "mediawiki": "MediaWiki"}
"""pandoc writer → the name used in the task."""

TARGET_SCORE = 0.9
TARGET_SECONDS = 20.0


def readme(package: str) -> str:
    """Return a package's README from its installed metadata, if it is Markdown.

    Raises
    ------
    LookupError
        When the package is not installed or its README is not Markdown.
    """
    try:
        meta = importlib.metadata.metadata(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LookupError(f"{package} is not installed") from exc
    kind = (meta.get("Description-Content-Type") or "").split(";")[0].strip()
    text = meta.get_payload() or ""
    if kind != "text/markdown" or len(text) < 200:
        raise LookupError(f"{package}: README is {kind or 'untyped'}, {len(text)} chars, not Markdown")
    return text


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def similarity(a: str, b: str) -> float:
    """Line similarity of two texts, 0–1 (see the module docstring)."""
    return difflib.SequenceMatcher(None, _lines(a), _lines(b), autojunk=False).ratio()


def score(result: str, reference: str, source: str) -> float:
    """Share of the reference's changes to ``source`` that ``result`` reproduces (1.0: identical)."""
    base = similarity(source, reference)
    if base >= 1.0:
        return 1.0 if similarity(result, reference) >= 1.0 else 0.0
    return (similarity(result, reference) - base) / (1.0 - base)


@dataclass
class Outcome:
    doc: str
    fmt: str
    chars: int
    score: float
    seconds: float
    plan: str
    ok: bool


_STEP = re.compile(r"step \d+ (\w+)(?: ([^(\n]*?))? \(")
_MODE = re.compile(r"^(two stage|single stage|execute plan)\b", re.MULTILINE)


def plan_of(stderr: str) -> str:
    """The plan as the CLI reported it: ``two stage: pandoc -f gfm -t textile`` or the fallback."""
    found = _MODE.search(stderr)
    mode = found.group(1) if found else "?"
    steps = [f"{m.group(2).strip()}" if m.group(1) == "spawn_command" else m.group(1)
             for m in _STEP.finditer(stderr) if m.group(1) in ("spawn_command", "manual_transform")]
    fell = " (fell back)" if "fell back" in stderr else ""
    return f"{mode}: {' | '.join(steps) or '-'}{fell}"


@contextmanager
def warm_actors(tandem: str, env: dict[str, str]) -> Iterator[str]:
    """Start a NATS server and ``tandem serve`` (all actors, model loaded); yield the NATS URL."""
    from tandem.services.bus import free_port

    nats_bin = Path(sys.executable).parent / "nats-server"
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp, ExitStack() as stack:
        port = free_port()
        nats = subprocess.Popen([str(nats_bin), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", f"{tmp}/js"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (nats.terminate(), nats.wait(10)))
        url = f"nats://127.0.0.1:{port}"
        time.sleep(0.5)
        serve = subprocess.Popen([tandem, "serve", "--nats-url", url], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        stack.callback(lambda: (serve.terminate(), serve.wait(30)))
        deadline = time.monotonic() + 60
        seen = ""
        while "serving" not in seen and time.monotonic() < deadline and serve.poll() is None:
            seen += serve.stdout.readline()
        if "serving" not in seen:
            raise RuntimeError(f"tandem serve did not start: {seen[-500:]}")
        # load the model before the first measured task
        subprocess.run([tandem, "run", "--nats-url", url, "--single-stage", "Say hi."], env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        yield url


def run_one(tandem: str, url: str | None, doc: Path, fmt: str, env: dict[str, str],
            timeout: float) -> tuple[str, str, float, bool]:
    cmd = [tandem, "run", "--no-cache", "--input", str(doc), f"Convert this Markdown to {FORMATS[fmt]}"]
    if url:
        cmd[2:2] = ["--nats-url", url]
    started = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return "", f"timed out after {timeout:g} s: {exc.stderr or ''}", time.perf_counter() - started, False
    return out.stdout, out.stderr, time.perf_counter() - started, out.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", nargs="+", default=list(DOCS), help="packages whose README to convert")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--cold", action="store_true", help="every task on its own (model start included)")
    parser.add_argument("--tandem", default=str(Path(sys.executable).parent / "tandem"), help="the tandem CLI")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per task")
    args = parser.parse_args(argv)

    from tandem.services import convert

    if not convert.pandoc_available():
        print(f"pandoc is needed for the reference: {convert.unavailable_reason()}", file=sys.stderr)
        return 2
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="tandem-quality-") as tmp, ExitStack() as stack:
        url = None if args.cold else stack.enter_context(warm_actors(args.tandem, env))
        for package in args.docs:
            try:
                text = readme(package)
            except LookupError as exc:
                print(f"skipping {exc}", file=sys.stderr)
                continue
            doc = Path(tmp) / package / "README.md"
            doc.parent.mkdir()
            doc.write_text(text)
            for fmt in args.formats:
                reference = convert.convert(text, "gfm", fmt)
                stdout, stderr, seconds, ok = run_one(args.tandem, url, doc, fmt, env, args.timeout)
                outcome = Outcome(doc=package, fmt=fmt, chars=len(text), score=score(stdout, reference, text),
                                  seconds=seconds, plan=plan_of(stderr) if ok else "failed: " + stderr.strip()[-120:],
                                  ok=ok)
                outcomes.append(outcome)
                print(f"{outcome.doc:16} {outcome.fmt:10} {outcome.score:6.3f} {outcome.seconds:6.1f} s  {outcome.plan}",
                      file=sys.stderr, flush=True)
    if not outcomes:
        print("no document to convert", file=sys.stderr)
        return 2
    print(f"\n{'document':16} {'chars':>6} {'format':10} {'score':>6} {'time':>7}  plan")
    for o in outcomes:
        print(f"{o.doc:16} {o.chars:6} {o.fmt:10} {o.score:6.3f} {o.seconds:6.1f}s  {o.plan}")
    worst = min(o.score for o in outcomes)
    slowest = max(o.seconds for o in outcomes)
    times = sorted(o.seconds for o in outcomes)
    print(f"\n{len(outcomes)} tasks ({'cold' if args.cold else 'warm actors'}): worst score {worst:.3f} "
          f"(target ≥ {TARGET_SCORE}), median time {times[len(times) // 2]:.1f} s, slowest {slowest:.1f} s "
          f"(target < {TARGET_SECONDS:g} s); {sum(o.score >= TARGET_SCORE for o in outcomes)}/{len(outcomes)} "
          "at or above the target score")
    return 0


if __name__ == "__main__":
    sys.exit(main())
