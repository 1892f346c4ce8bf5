"""The LLM usage log (design note 004 §1.4): one JSON line per provider call, and its summary.

Every call the router makes, success or failure, appends a :class:`UsageRecord`
to a JSONL file: ``task, tier, model, provider, fallback_chain, latency_ms,
usage{input_tokens, output_tokens}, cost_usd, request_id`` and on failure
``error, error_class, status_code`` and ``credential_rejected`` (HTTP 401/403:
the provider refused the API key). ``tandem usage`` aggregates it; its "key
refused" column counts those calls, so a wrong key does not hide behind a
working fallback.
"""

from __future__ import annotations

import atexit
import logging
import os
import statistics
import threading
from collections import Counter, defaultdict, deque
from datetime import datetime
from pathlib import Path

import msgspec
from rich.table import Table
from tandem.messages import TokenUsage

from .errors import InputError

__all__ = ["UsageLog", "UsageRecord", "UsageSummary", "load_usage", "render_usage", "summarize_usage", "usage_log_path"]


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One provider call.

    Parameters
    ----------
    ts : datetime
        When the call ended, UTC.
    task, tier, model, provider : str
        ``model`` is the registry key.
    fallback_chain : list of str
        Model keys tried for this request so far, this call's last.
    attempt : int
        1-based position in the chain.
    latency_ms : float
    usage : TokenUsage
    cost_usd : float
    request_id : str
        The request's ``correlation_id``.
    ok : bool
    error, error_class : str
    status_code : int or None
    skill : str
    credential_rejected : bool
        The provider refused the API key (HTTP 401/403).
    """

    ts: datetime
    task: str
    tier: str
    model: str
    provider: str
    fallback_chain: list[str]
    attempt: int = 1
    latency_ms: float = 0.0
    usage: TokenUsage = TokenUsage()
    cost_usd: float = 0.0
    request_id: str = ""
    ok: bool = True
    error: str = ""
    error_class: str = ""
    status_code: int | None = None
    skill: str = ""
    credential_rejected: bool = False


log = logging.getLogger("tandem.usage")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)


def usage_log_path(configured: str | None) -> Path | None:
    """Resolve the log path: ``$TANDEM_USAGE_LOG_DISABLE=1`` → ``None``, else
    ``$TANDEM_USAGE_LOG``, else ``configured`` (``~`` expanded)."""
    if os.environ.get("TANDEM_USAGE_LOG_DISABLE") == "1":
        return None
    value = os.environ.get("TANDEM_USAGE_LOG") or configured
    return Path(value).expanduser() if value else None


class UsageLog:
    """Appends usage records to a JSONL file (``None`` path: a no-op log), off the event loop.

    :meth:`write` only encodes the record and appends the line to a queue: no disk, no
    lock, no thread wake-up, so neither a slow file system nor a thread switch holds up
    the actor's event loop. A writer thread appends whatever is queued every
    ``interval`` seconds with one ``os.write`` (O_APPEND: whole lines, even with other
    processes appending to the same file). :meth:`close` writes every queued line;
    lines still queued when the interpreter exits without :meth:`close` are written by
    an ``atexit`` hook, so a record is lost only if the process is killed outright.

    Parameters
    ----------
    path : Path or None
        The log file (its directory is created); ``None`` records nothing.
    interval : float
        Seconds between two writes of the queued lines.
    """

    def __init__(self, path: Path | None, *, interval: float = 0.25) -> None:
        self.path = path
        self.interval = interval
        self._fd: int | None = None
        self._lines: deque[bytes] = deque()  # append/popleft are atomic: no lock on the hot path
        self._write_lock = threading.Lock()  # one writer of the file at a time (thread, close, atexit)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._thread = threading.Thread(target=self._run, name="tandem-usage-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def write(self, record: UsageRecord) -> None:
        """Queue one record for appending (returns at once; see the class notes)."""
        if self._fd is not None:
            self._lines.append(_encoder.encode(record) + b"\n")

    def _run(self) -> None:
        while not self._closing.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Write every queued record now (blocking: call it off the event loop)."""
        with self._write_lock:
            lines = self._lines
            chunk = [lines.popleft() for _ in range(len(lines))]
            fd = self._fd
            if not chunk or fd is None:
                return
            view = memoryview(b"".join(chunk))
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:  # a full or vanished disk: say so, keep the actor serving
                log.error("usage log %s: %d bytes not written: %s", self.path, len(view), exc)

    def close(self) -> None:
        """Write every queued record and close the file (idempotent; blocks until written)."""
        if self._fd is None:
            return
        self._closing.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self.flush()  # whatever the thread did not get to
        with self._write_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        atexit.unregister(self.close)


def load_usage(path: Path) -> list[UsageRecord]:
    """Read a usage log, skipping lines that do not decode (a concurrent writer's partial line).

    Raises
    ------
    InputError
        When the file does not exist.
    """
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"no usage recorded yet: {path} does not exist") from exc
    except OSError as exc:
        raise InputError(f"cannot read usage log {path}: {exc}") from exc
    records = []
    for line in lines:
        try:
            records.append(_decoder.decode(line))
        except msgspec.DecodeError:
            continue
    return records


class Group(msgspec.Struct, kw_only=True):
    """Aggregates of one model or task."""

    calls: int = 0
    failures: int = 0
    credential_rejected: int = 0
    latency_mean_ms: float = 0.0
    latency_p95_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class UsageSummary(msgspec.Struct, kw_only=True):
    """What ``tandem usage`` prints."""

    by_model: dict[str, Group]
    by_task: dict[str, Group]
    chains: list[tuple[str, int]]
    requests: int


def _group(records: list[UsageRecord]) -> Group:
    latencies = sorted(r.latency_ms for r in records)
    p95 = latencies[min(len(latencies) - 1, max(0, round(0.95 * len(latencies)) - 1))] if latencies else 0.0
    return Group(
        calls=len(records),
        failures=sum(not r.ok for r in records),
        credential_rejected=sum(r.credential_rejected or r.status_code in (401, 403) for r in records),
        latency_mean_ms=statistics.fmean(latencies) if latencies else 0.0,
        latency_p95_ms=p95,
        input_tokens=sum(r.usage.input_tokens for r in records),
        output_tokens=sum(r.usage.output_tokens for r in records),
        cost_usd=sum(r.cost_usd for r in records),
    )


def summarize_usage(records: list[UsageRecord], *, top: int = 10) -> UsageSummary:
    """Aggregate per model and per task, and count the fallback chains of requests.

    A request's chain is the ``fallback_chain`` of its last record, marked
    ``ok`` or ``failed``; the ``top`` most frequent chains are kept.
    """
    by_model: dict[str, list[UsageRecord]] = defaultdict(list)
    by_task: dict[str, list[UsageRecord]] = defaultdict(list)
    last: dict[str, UsageRecord] = {}
    for r in records:
        by_model[r.model].append(r)
        by_task[r.task].append(r)
        key = r.request_id or f"{r.ts.isoformat()}:{r.model}"
        if key not in last or r.attempt >= last[key].attempt:
            last[key] = r
    chains = Counter(" → ".join(r.fallback_chain) + ("" if r.ok else " ✗") for r in last.values())
    return UsageSummary(
        by_model={k: _group(v) for k, v in sorted(by_model.items())},
        by_task={k: _group(v) for k, v in sorted(by_task.items())},
        chains=chains.most_common(top),
        requests=len(last),
    )


def render_usage(summary: UsageSummary) -> list[Table]:
    """Return rich tables: per model, per task, and the most frequent fallback chains."""
    tables = []
    for title, groups in (("per model", summary.by_model), ("per task", summary.by_task)):
        table = Table(title=f"LLM usage {title}", title_justify="left")
        for col in ("", "calls", "failed", "key refused", "mean ms", "p95 ms", "in tok", "out tok", "cost $"):
            table.add_column(col, justify="left" if not col else "right")
        for name, g in groups.items():
            refused = f"{g.credential_rejected} ✗" if g.credential_rejected else "0"
            table.add_row(name, str(g.calls), str(g.failures), refused, f"{g.latency_mean_ms:.1f}",
                          f"{g.latency_p95_ms:.1f}", str(g.input_tokens), str(g.output_tokens), f"{g.cost_usd:.4f}")
        tables.append(table)
    chains = Table(title=f"fallback chains ({summary.requests} requests)", title_justify="left")
    chains.add_column("chain")
    chains.add_column("requests", justify="right")
    for chain, count in summary.chains:
        chains.add_row(chain, str(count))
    tables.append(chains)
    return tables

