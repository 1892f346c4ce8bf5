"""The usage log's summary (``tandem usage``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tandem.messages import TokenUsage
from tandem.services.usage import UsageLog, UsageRecord, load_usage, summarize_usage

T = datetime(2026, 11, 21, tzinfo=UTC)


def rec(model: str, chain: list[str], *, ok: bool = True, rid: str = "r1", ms: float = 10.0, task: str = "plan",
        cost: float = 0.0) -> UsageRecord:
    return UsageRecord(ts=T, task=task, tier="standard", model=model, provider="p", fallback_chain=chain,
                       attempt=len(chain), latency_ms=ms, ok=ok, request_id=rid, cost_usd=cost,
                       usage=TokenUsage(input_tokens=10, output_tokens=5) if ok else TokenUsage(),
                       status_code=None if ok else 429, error_class="" if ok else "ProviderStatusError")


def test_log_roundtrip_skips_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    log = UsageLog(path)
    log.write(rec("a", ["a"]))
    log.close()
    with path.open("ab") as f:
        f.write(b'{"ts": "2026-11-21T00:00:00Z", "task": "x"')  # a concurrent writer's partial line
    assert [r.model for r in load_usage(path)] == ["a"]


def test_summary_groups_and_chains() -> None:
    records = [
        rec("a", ["a"], ok=False, rid="r1", ms=100), rec("b", ["a", "b"], rid="r1", ms=20, cost=0.01),
        rec("b", ["b"], rid="r2", ms=30, task="exec"), rec("a", ["a"], ok=False, rid="r3", ms=5),
    ]
    s = summarize_usage(records)
    assert s.requests == 3
    assert (s.by_model["a"].calls, s.by_model["a"].failures) == (2, 2)
    assert s.by_model["b"].latency_mean_ms == 25 and s.by_model["b"].input_tokens == 20
    assert s.by_model["b"].cost_usd == 0.01
    assert s.by_task["plan"].calls == 3 and s.by_task["exec"].calls == 1
    assert dict(s.chains) == {"a → b": 1, "b": 1, "a ✗": 1}


def test_tandem_usage_prints_tables(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    log = UsageLog(path)
    for r in (rec("alpha", ["alpha"], ok=False), rec("gamma", ["alpha", "gamma"])):
        log.write(r)
    log.close()
    out = subprocess.run([str(Path(sys.executable).parent / "tandem"), "usage", "--log", str(path)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "alpha → gamma" in out.stdout and "per model" in out.stdout and "per task" in out.stdout
    missing = subprocess.run([str(Path(sys.executable).parent / "tandem"), "usage", "--log", str(tmp_path / "no")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no usage recorded yet" in missing.stderr
