"""The JSON-lines exporter writes each batch holding the trace file's advisory lock (issue 14).

Several processes append to one trace file; waiting for each other's writes in the kernel spun
(~1.5-2.5 µs of CPU per line in each export thread, against ~0.35 µs alone), waiting for the
``flock`` sleeps. The lines are the same, whole, and a file system that refuses the lock still
gets them.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import pytest
from tandem.services.telemetry import _setup
from tandem.services.telemetry._setup import _JsonLinesExporter

pytestmark = pytest.mark.skipif(_setup._flock is None, reason="no flock on this platform")


def test_each_batch_is_written_holding_the_lock(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.jsonl"
    calls: list[Any] = []
    real = _setup._flock

    def flock(fd: int, op: int) -> None:
        calls.append(("flock", op, path.stat().st_size))
        real(fd, op)

    monkeypatch.setattr(_setup, "_flock", flock)
    exporter = _JsonLinesExporter(open(path, "ab", buffering=0))  # noqa: SIM115 - closed by shutdown
    exporter.write_lines([b'{"a":1}\n', b'{"b":2}\n'])
    exporter.shutdown()
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert calls == [("flock", _setup._LOCK_EX, 0), ("flock", _setup._LOCK_UN, 16)]  # written in between


def _refuse(fd: int, op: int) -> None:
    raise OSError(95, "Operation not supported")


@pytest.mark.parametrize("flock", [_refuse, None], ids=["refused", "missing"])
def test_a_file_without_a_lock_is_still_written(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                 flock: object) -> None:
    monkeypatch.setattr(_setup, "_flock", flock)  # the lock refused (e.g. EOPNOTSUPP), or no fcntl at all
    path = tmp_path / "t.jsonl"
    exporter = _JsonLinesExporter(open(path, "ab", buffering=0))  # noqa: SIM115 - closed by shutdown
    exporter.write_lines([b"x\n"])
    exporter.shutdown()
    assert path.read_bytes() == b"x\n"


def test_writers_sharing_a_file_keep_their_lines_whole_and_release_the_lock(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    exporters = [_JsonLinesExporter(open(path, "ab", buffering=0)) for _ in range(3)]  # noqa: SIM115
    lines = [[b"%d-%d-" % (w, i) + b"x" * 2000 + b"\n" for i in range(64)] for w in range(3)]

    def write(w: int) -> None:
        for start in range(0, 64, 8):
            exporters[w].write_lines(lines[w][start:start + 8])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for exporter in exporters:
        exporter.shutdown()
    written = path.read_bytes().splitlines(keepends=True)
    assert sorted(written) == sorted(line for batch in lines for line in batch)
    with open(path, "ab") as f:  # nobody holds the lock any more
        _setup._flock(f.fileno(), _setup._LOCK_EX | 4)  # LOCK_NB: raises if it were still held
        _setup._flock(f.fileno(), _setup._LOCK_UN)
