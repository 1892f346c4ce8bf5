"""Tracing setup (JSONL file / OTLP) and the ``tandem trace`` reader/renderer."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry import trace
from opentelemetry.propagate import extract, get_global_textmap, inject, set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from rich.console import Console

from tandem.services.errors import ConfigError, InputError
from tandem.services.telemetry._setup import default_trace_file, setup_tracing, shutdown_tracing
from tandem.services.telemetry._view import (
    SpanRecord,
    find_trace,
    latest_trace_id,
    load_spans,
    render_trace,
    render_trace_list,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MS = 1_000_000  # nanoseconds


def at(ms: float) -> int:
    """Absolute timestamp in ns, ``ms`` milliseconds after BASE_NS."""
    return BASE_NS + int(ms * MS)


def render_text(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


# --------------------------------------------------------------------------- #
# Fixtures
# --------------------------------------------------------------------------- #


class NestedTrace:
    """Ids of the two-service trace written by the ``nested_trace`` fixture."""

    def __init__(self, path: pathlib.Path, trace_id: str, ids: dict[str, str]) -> None:
        self.path = path
        self.trace_id = trace_id
        self.ids = ids


@pytest.fixture
def nested_trace(tmp_path: pathlib.Path) -> NestedTrace:
    """Write one task trace from two "services" (two providers, one file).

    Tree (start order)::

        task                                   cli      0 .. 1500 ms
        ├── load context                       cli      5 .. 8
        └── send agents.planner.request        cli     10 .. 12   (PRODUCER, injects)
            └── process agents.planner.request planner 20 .. 1040 (CONSUMER, extracted)
                ├── chat smollm2               planner 30 .. 1030
                └── execute_tool ls            planner 1032 .. 1035 (ERROR)
    """
    path = tmp_path / "state" / "tandem" / "traces.jsonl"
    cli = setup_tracing("tandem.cli", trace_file=path, install_global=False)
    planner = setup_tracing("tandem.planner", trace_file=path, install_global=False)
    cli_tracer = cli.get_tracer("test")
    planner_tracer = planner.get_tracer("test")

    root = cli_tracer.start_span("task", start_time=at(0))
    with trace.use_span(root, end_on_exit=False):
        send = cli_tracer.start_span(
            "send agents.planner.request",
            kind=SpanKind.PRODUCER,
            start_time=at(10),
            attributes={"messaging.system": "nats", "messaging.destination.name": "agents.planner.request"},
        )
        carrier: dict[str, str] = {}
        with trace.use_span(send, end_on_exit=False):
            inject(carrier)
        send.end(end_time=at(12))
        # Started before ``send`` but ended (so written) last: file order != start order.
        load = cli_tracer.start_span("load context", start_time=at(5))

    # --- "another process": only the carrier crosses over ---
    process = planner_tracer.start_span(
        "process agents.planner.request",
        context=extract(carrier),
        kind=SpanKind.CONSUMER,
        start_time=at(20),
        attributes={"messaging.destination.name": "agents.planner.request", "tandem.plan.step": 2},
    )
    with trace.use_span(process, end_on_exit=False):
        chat = planner_tracer.start_span(
            "chat smollm2",
            kind=SpanKind.CLIENT,
            start_time=at(30),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "smollm2",
                "gen_ai.usage.input_tokens": 312,
                "gen_ai.usage.output_tokens": 88,
            },
        )
        chat.end(end_time=at(1030))
        tool = planner_tracer.start_span("execute_tool ls", start_time=at(1032), attributes={"error.type": "CommandError"})
        tool.set_status(Status(StatusCode.ERROR, "ls: no such directory"))
        tool.end(end_time=at(1035))
    process.end(end_time=at(1040))

    load.end(end_time=at(8))
    root.end(end_time=at(1500))
    shutdown_tracing(planner)
    shutdown_tracing(cli)

    hexid = lambda span: format(span.get_span_context().span_id, "016x")  # noqa: E731
    ids = {
        "task": hexid(root),
        "load context": hexid(load),
        "send agents.planner.request": hexid(send),
        "process agents.planner.request": hexid(process),
        "chat smollm2": hexid(chat),
        "execute_tool ls": hexid(tool),
    }
    return NestedTrace(path, format(root.get_span_context().trace_id, "032x"), ids)


def write_older_trace(path: pathlib.Path) -> str:
    """Append a one-span trace that *ended an hour before* the nested one."""
    provider = setup_tracing("tandem.cli", trace_file=path, install_global=False)
    span = provider.get_tracer("test").start_span("older task", start_time=at(-3_600_000))
    span.end(end_time=at(-3_590_000))
    shutdown_tracing(provider)
    return format(span.get_span_context().trace_id, "032x")


def record(trace_id: str, span_id: str, *, name: str = "s", parent_id: str | None = None, end_ms: float = 1.0) -> SpanRecord:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return SpanRecord(
        name=name,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        kind="INTERNAL",
        start=start,
        end=start + timedelta(milliseconds=end_ms),
    )


# --------------------------------------------------------------------------- #
# _setup
# --------------------------------------------------------------------------- #


def test_default_trace_file_prefers_env_then_xdg_then_home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_TRACE_FILE", str(tmp_path / "explicit.jsonl"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_trace_file() == tmp_path / "explicit.jsonl"

    monkeypatch.delenv("TANDEM_TRACE_FILE")
    assert default_trace_file() == tmp_path / "xdg" / "tandem" / "traces.jsonl"

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unusable in ("", "relative/state"):  # XDG spec: empty or relative → default
        monkeypatch.setenv("XDG_STATE_HOME", unusable)
        assert default_trace_file() == tmp_path / "home" / ".local" / "state" / "tandem" / "traces.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_trace_file() == tmp_path / "home" / ".local" / "state" / "tandem" / "traces.jsonl"


def test_setup_appends_sdk_json_lines_with_resource(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deep" / "dir" / "traces.jsonl"
    monkeypatch.setenv("TANDEM_TRACE_FILE", str(path))  # trace_file=None → default_trace_file()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    path.parent.mkdir(parents=True)
    path.write_text('{"existing": "line"}\n')

    first = setup_tracing("svc.one", install_global=False)
    second = setup_tracing("svc.two", trace_file=path, install_global=False)
    first.get_tracer("t").start_span("a", attributes={"k": 1}).end()
    second.get_tracer("t").start_span("b").end()
    shutdown_tracing(first)
    shutdown_tracing(second)
    shutdown_tracing(second)  # idempotent

    lines = path.read_text().splitlines()
    assert lines[0] == '{"existing": "line"}'  # appended, not truncated
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    objs = [json.loads(line) for line in lines[1:]]
    by_name = {o["name"]: o for o in objs}
    a = by_name["a"]
    assert set(a) >= {"name", "context", "kind", "parent_id", "start_time", "end_time", "status", "attributes", "events", "links", "resource"}
    assert re.fullmatch(r"0x[0-9a-f]{32}", a["context"]["trace_id"])
    assert re.fullmatch(r"0x[0-9a-f]{16}", a["context"]["span_id"])
    assert a["parent_id"] is None and a["kind"] == "SpanKind.INTERNAL" and a["attributes"] == {"k": 1}
    assert a["start_time"].endswith("Z") and a["status"]["status_code"] == "UNSET"
    res_a, res_b = a["resource"]["attributes"], by_name["b"]["resource"]["attributes"]
    assert res_a["service.name"] == "svc.one" and res_b["service.name"] == "svc.two"
    assert res_a["process.pid"] == os.getpid()
    assert re.fullmatch(r"[0-9a-f]{32}", res_a["service.instance.id"])
    assert res_a["service.instance.id"] != res_b["service.instance.id"]


def test_setup_installs_w3c_tracecontext_propagator(tmp_path: pathlib.Path) -> None:
    previous = get_global_textmap()
    set_global_textmap(CompositePropagator([]))
    try:
        provider = setup_tracing("svc", trace_file=tmp_path / "t.jsonl", install_global=False)
        assert isinstance(get_global_textmap(), TraceContextTextMapPropagator)
        span = provider.get_tracer("t").start_span("s")
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        ctx = span.get_span_context()
        assert carrier["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        span.end()
        shutdown_tracing(provider)
    finally:
        set_global_textmap(previous)


def test_unwritable_trace_file_raises_config_error(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not-a-dir"):
        setup_tracing("svc", trace_file=blocker / "traces.jsonl", install_global=False)


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A throwaway HTTP server that records OTLP POSTs and answers 200."""
    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("via", ["argument", "env"])
def test_otlp_endpoint_exports_over_http_instead_of_file(
    via: str, otlp_collector: tuple[str, list[tuple[str, bytes]]], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = otlp_collector
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    path = tmp_path / "sub" / "traces.jsonl"
    if via == "env":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        provider = setup_tracing("svc", trace_file=path, install_global=False)
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        provider = setup_tracing("svc", trace_file=path, otlp_endpoint=url + "/", install_global=False)
    provider.get_tracer("t").start_span("over-the-wire").end()
    shutdown_tracing(provider)

    assert [p for p, _ in received] == ["/v1/traces"]
    assert b"over-the-wire" in received[0][1]
    assert not path.parent.exists()


# --------------------------------------------------------------------------- #
# load_spans
# --------------------------------------------------------------------------- #


def test_load_spans_rebuilds_parent_links_across_services(nested_trace: NestedTrace) -> None:
    spans = load_spans(nested_trace.path)
    by_name = {s.name: s for s in spans}
    ids = nested_trace.ids

    assert set(by_name) == set(ids)
    assert {s.trace_id for s in spans} == {nested_trace.trace_id}
    assert {name: s.span_id for name, s in by_name.items()} == ids
    assert by_name["task"].parent_id is None
    assert by_name["load context"].parent_id == ids["task"]
    assert by_name["send agents.planner.request"].parent_id == ids["task"]
    # crossed "processes" through the injected/extracted carrier only
    assert by_name["process agents.planner.request"].parent_id == ids["send agents.planner.request"]
    assert by_name["chat smollm2"].parent_id == ids["process agents.planner.request"]
    assert by_name["execute_tool ls"].parent_id == ids["process agents.planner.request"]

    assert by_name["task"].service_name == "tandem.cli"
    assert by_name["chat smollm2"].service_name == "tandem.planner"
    assert by_name["send agents.planner.request"].kind == "PRODUCER"
    assert by_name["process agents.planner.request"].kind == "CONSUMER"
    assert by_name["chat smollm2"].attributes["gen_ai.usage.input_tokens"] == 312
    assert by_name["chat smollm2"].duration_ms == pytest.approx(1000.0)
    assert by_name["task"].start == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert by_name["execute_tool ls"].status_code == "ERROR"
    assert by_name["execute_tool ls"].status_description == "ls: no such directory"
    assert by_name["task"].status_code == "UNSET"


def test_load_spans_skips_blank_truncated_and_foreign_lines(nested_trace: NestedTrace) -> None:
    good = nested_trace.path.read_text().splitlines()
    with nested_trace.path.open("a") as f:
        f.write("\n   \n")
        f.write('{"not": "a span"}\n')
        f.write('{"name": "x", "context": {"trace_id": "0xzz", "span_id": "0x1"}, "kind": "SpanKind.INTERNAL"}\n')
        f.write(good[0][: len(good[0]) // 2])  # a concurrent writer's half line, no newline
    spans = load_spans(nested_trace.path)
    assert len(spans) == len(good) == 6


def test_load_spans_missing_file_says_where_it_looked(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere" / "traces.jsonl"
    with pytest.raises(InputError, match="no traces recorded yet") as info:
        load_spans(missing)
    assert str(missing) in str(info.value)


def test_load_spans_unreadable_path_is_input_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError, match="cannot read trace file"):
        load_spans(tmp_path)  # a directory


def test_concurrent_processes_append_whole_lines(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "traces.jsonl"
    script = textwrap.dedent(
        """
        import pathlib, sys
        from tandem.services.telemetry._setup import setup_tracing, shutdown_tracing
        provider = setup_tracing(sys.argv[1], trace_file=pathlib.Path(sys.argv[2]), install_global=False)
        tracer = provider.get_tracer("t")
        for i in range(300):
            # ~12 KB per line: larger than the 8 KiB I/O buffer
            tracer.start_span(f"span {i}", attributes={"blob": "x" * 12_000}).end()
        shutdown_tracing(provider)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    procs = [subprocess.Popen([sys.executable, "-c", script, f"writer.{n}", str(path)], env=env) for n in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]

    spans = load_spans(path)
    assert len(path.read_bytes().splitlines()) == 900
    assert len(spans) == 900
    assert {s.service_name for s in spans} == {"writer.0", "writer.1", "writer.2"}


# --------------------------------------------------------------------------- #
# Selecting a trace
# --------------------------------------------------------------------------- #


def test_latest_trace_id_picks_trace_whose_root_ended_last(nested_trace: NestedTrace) -> None:
    older = write_older_trace(nested_trace.path)  # written last, but ended an hour earlier
    spans = load_spans(nested_trace.path)
    assert {s.trace_id for s in spans} == {older, nested_trace.trace_id}
    assert latest_trace_id(spans) == nested_trace.trace_id
    assert latest_trace_id([s for s in spans if s.trace_id == older]) == older
    assert latest_trace_id([]) is None


def test_latest_trace_id_uses_latest_span_when_root_missing() -> None:
    a, b = "a" * 32, "b" * 32
    spans = [
        record(a, "1" * 16, end_ms=100),  # finished root of a
        record(b, "2" * 16, parent_id="9" * 16, end_ms=50),  # b: root not written yet
        record(b, "3" * 16, parent_id="9" * 16, end_ms=200),
    ]
    assert latest_trace_id(spans) == b
    # a root, once present, beats a later-ending child of the same trace
    spans.append(record(a, "4" * 16, parent_id="1" * 16, end_ms=500))
    assert latest_trace_id(spans) == b


@pytest.mark.parametrize("transform", [str, lambda t: "0x" + t, str.upper, lambda t: t[:6], lambda t: "0X" + t[:10].upper(), lambda t: f"  {t[:8]} "])
def test_find_trace_accepts_full_ids_and_unique_prefixes(nested_trace: NestedTrace, transform) -> None:
    older = write_older_trace(nested_trace.path)
    spans = load_spans(nested_trace.path)
    if older[:10] == nested_trace.trace_id[:10]:  # pragma: no cover - 1 in 2**40
        pytest.skip("random trace ids share a prefix")
    found = find_trace(spans, transform(nested_trace.trace_id))
    assert {s.trace_id for s in found} == {nested_trace.trace_id}
    assert len(found) == 6
    assert [s.start for s in found] == sorted(s.start for s in found)
    assert [s.name for s in find_trace(spans, older)] == ["older task"]


def test_find_trace_rejects_ambiguous_missing_and_malformed_prefixes() -> None:
    one, two = "abcdef00" + "0" * 23 + "1", "abcdef00" + "0" * 23 + "2"
    spans = [record(one, "1" * 16), record(two, "2" * 16)]

    with pytest.raises(InputError, match="ambiguous") as info:
        find_trace(spans, "abcdef")
    assert one in str(info.value) and two in str(info.value)
    assert [s.trace_id for s in find_trace(spans, two)] == [two]
    assert [s.trace_id for s in find_trace(spans, "0x" + one)] == [one]
    with pytest.raises(InputError, match="no recorded trace"):
        find_trace(spans, "abcdef01")
    with pytest.raises(InputError, match="at least 6"):
        find_trace(spans, "abcde")
    with pytest.raises(InputError, match="not hexadecimal"):
        find_trace(spans, "abcdefgh")
    with pytest.raises(InputError, match="longer than 32"):
        find_trace(spans, one + "0")


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


def test_render_trace_nests_spans_in_start_order_with_durations(nested_trace: NestedTrace) -> None:
    spans = load_spans(nested_trace.path)  # file (end) order, not start order
    assert [s.name for s in spans] != [s.name for s in sorted(spans, key=lambda s: s.start)]
    text = render_text(render_trace(spans))
    lines = text.splitlines()

    header = lines[0]
    assert nested_trace.trace_id in header
    assert "1500.0 ms" in header and "6 spans" in header
    assert "services: tandem.cli, tandem.planner" in header and "1 error" in header

    expected = [  # (name, depth) in display order
        ("task", 1),
        ("load context", 2),
        ("send agents.planner.request", 2),
        ("process agents.planner.request", 3),
        ("chat smollm2", 4),
        ("execute_tool ls", 4),
    ]
    body = lines[1:]
    assert len(body) == len(expected)
    for line, (name, depth) in zip(body, expected, strict=True):
        indent = line.index(name)
        assert indent == 4 * depth, (line, depth)
        assert line[:indent].strip(" │├└─") == ""  # only tree guides before the name

    by_name = dict(zip((n for n, _ in expected), body, strict=True))
    assert "[1500.0 ms]  tandem.cli  (internal)" in by_name["task"]
    assert "[3.0 ms]" in by_name["load context"]
    assert "[2.0 ms]  tandem.cli  (producer)  dest=agents.planner.request" in by_name["send agents.planner.request"]
    assert "[1020.0 ms]  tandem.planner  (consumer)" in by_name["process agents.planner.request"]
    assert "step=2" in by_name["process agents.planner.request"]
    assert "[1000.0 ms]  tandem.planner  (client)  model=smollm2  tokens=312→88" in by_name["chat smollm2"]
    assert "error=CommandError" in by_name["execute_tool ls"]
    assert "✗ ls: no such directory" in by_name["execute_tool ls"]
    assert "✗" not in by_name["chat smollm2"]


def test_render_trace_marks_errors_red(nested_trace: NestedTrace) -> None:
    spans = find_trace(load_spans(nested_trace.path), nested_trace.trace_id)
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(render_trace(spans))
    html = console.export_html(inline_styles=True)
    red_runs = re.findall(r'<span style="[^"]*color: #800000[^"]*">([^<]*)</span>', html)
    assert "execute_tool ls" in red_runs
    assert "chat smollm2" not in red_runs


def test_render_trace_puts_spans_with_unrecorded_parent_at_top_level(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    provider = setup_tracing("tandem.executor", trace_file=path, install_global=False)
    tracer = provider.get_tracer("t")
    remote = SpanContext(0x1234567890ABCDEF1234567890ABCDEF, 0x00000000DEADBEEF, is_remote=True, trace_flags=TraceFlags(1))
    orphan = tracer.start_span("process agents.executor.request", context=trace.set_span_in_context(NonRecordingSpan(remote)), start_time=at(0))
    with trace.use_span(orphan, end_on_exit=False):
        tracer.start_span("spawn_command", start_time=at(1)).end(end_time=at(2))
    orphan.end(end_time=at(5))
    shutdown_tracing(provider)

    spans = load_spans(path)
    assert latest_trace_id(spans) == "1234567890abcdef1234567890abcdef"
    lines = render_text(render_trace(spans)).splitlines()
    assert lines[1].index("process agents.executor.request") == 4
    assert "(parent 00000000deadbeef not recorded)" in lines[1]
    assert lines[2].index("spawn_command") == 8


def test_render_trace_survives_parent_cycles() -> None:
    t = "c" * 32
    spans = [record(t, "1" * 16, name="a", parent_id="2" * 16), record(t, "2" * 16, name="b", parent_id="1" * 16)]
    text = render_text(render_trace(spans))
    assert "a" in text and "b" in text and "2 spans" in text


def test_render_trace_rejects_empty_or_mixed_input() -> None:
    with pytest.raises(ValueError, match="at least one span"):
        render_trace([])
    with pytest.raises(ValueError, match="2 traces"):
        render_trace([record("a" * 32, "1" * 16), record("b" * 32, "2" * 16)])


def test_render_trace_list_shows_newest_first_and_respects_limit(nested_trace: NestedTrace) -> None:
    older = write_older_trace(nested_trace.path)
    spans = load_spans(nested_trace.path)

    text = render_text(render_trace_list(spans))
    rows = [line for line in text.splitlines() if nested_trace.trace_id in line or older in line]
    assert len(rows) == 2
    assert nested_trace.trace_id in rows[0] and older in rows[1]
    assert re.search(r"task\s.*\s1500\.0 ms\s.*\s6\s", rows[0])
    assert re.search(r"older task\s.*\s10000\.0 ms\s.*\s1\s", rows[1])
    local_start = datetime(2026, 1, 1, tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert local_start in rows[0]

    limited = render_text(render_trace_list(spans, limit=1))
    assert nested_trace.trace_id in limited and older not in limited
    assert "1 of 2 traces shown" in limited

    assert "no traces recorded" in render_text(render_trace_list([]))
    with pytest.raises(ValueError, match="at least 1"):
        render_trace_list(spans, limit=0)


def test_fast_json_line_is_the_sdk_document() -> None:
    import json

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    from tandem.services.telemetry._setup import span_to_json_line

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent", kind=SpanKind.PRODUCER) as parent:
        with tracer.start_as_current_span(
            "child", kind=SpanKind.CONSUMER, links=[Link(parent.get_span_context(), {"k": 1})],
            attributes={"a": "b", "n": 3, "f": 1.5, "list": ["x", "y"], "flag": True},
        ) as child:
            child.add_event("evt", {"e": 1})
            child.set_status(Status(StatusCode.ERROR, "broken"))
    for span in exporter.get_finished_spans():
        assert json.loads(span_to_json_line(span)) == json.loads(span.to_json(indent=None))
        assert span_to_json_line(span).count("\n") == 1


def test_links_to_other_traces_are_shown_in_the_tree(tmp_path) -> None:
    """A span that links to another trace (a chat turn to the task it started) says where the link leads."""
    import json as _json

    from tandem.services.telemetry._view import load_spans, render_trace

    def span(name: str, trace: str, span_id: str, links: list[str]) -> dict:
        return {"name": name, "context": {"trace_id": "0x" + trace, "span_id": "0x" + span_id}, "kind": "SpanKind.INTERNAL",
                "parent_id": None, "start_time": "2026-01-02T03:04:05.000000Z", "end_time": "2026-01-02T03:04:05.002000Z",
                "status": {"status_code": "UNSET"}, "attributes": {}, "events": [],
                "links": [{"context": {"trace_id": "0x" + t, "span_id": "0x" + "1" * 16}, "attributes": {}} for t in links],
                "resource": {"attributes": {"service.name": "tandem"}}}

    path = tmp_path / "t.jsonl"
    path.write_text(_json.dumps(span("invoke_agent chat", "a" * 32, "b" * 16, ["c" * 32, "a" * 32])) + "\n")
    (record,) = load_spans(path)
    assert record.linked_traces == ("c" * 32,)  # a link inside its own trace is not "another trace"
    from rich.console import Console

    console = Console(width=200, record=True, no_color=True)
    console.print(render_trace([record]))
    assert "→ trace cccccccc" in console.export_text()
