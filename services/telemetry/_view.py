"""Read the JSONL trace file back and render it for ``tandem trace``.

The file is written by ``tandem.services.telemetry._setup`` (one
``ReadableSpan.to_json(indent=None)`` object per line, appended by any number
of processes). This module decodes it into :class:`SpanRecord` values and
renders one trace as a :class:`rich.tree.Tree`, or the most recent traces as a
:class:`rich.table.Table`::

    trace 4bf92f3577b34da6a3ce929d0e0e4736  1523.4 ms  4 spans  services: tandem.cli, tandem.planner
    └── task  [1523.4 ms]  tandem.cli  (internal)
        ├── send agents.planner.request  [2.1 ms]  tandem.cli  (producer)  dest=agents.planner.request
        │   └── process agents.planner.request  [1490.0 ms]  tandem.planner  (consumer)  dest=...
        │       └── chat smollm2  [1480.2 ms]  tandem.planner  (client)  model=smollm2  tokens=312→88
        ...
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from tandem.services.errors import InputError

__all__ = [
    "SpanEvent",
    "SpanRecord",
    "find_trace",
    "latest_trace_id",
    "load_spans",
    "render_trace",
    "render_trace_list",
]

MIN_PREFIX_LENGTH = 6
"""Shortest trace-id prefix :func:`find_trace` accepts."""

_TRACE_ID_LENGTH = 32
_HEX = re.compile(r"[0-9a-f]+")


# --------------------------------------------------------------------------- #
# Public records
# --------------------------------------------------------------------------- #


class SpanEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event recorded on a span (e.g. ``exception``).

    Attributes
    ----------
    name : str
        Event name.
    timestamp : datetime.datetime
        When it happened, timezone-aware UTC.
    attributes : dict[str, Any]
        Event attributes, e.g. ``exception.type``/``exception.message``.
    """

    name: str
    timestamp: datetime
    attributes: dict[str, Any] = {}


class SpanRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One finished span, as read back from the trace file.

    Attributes
    ----------
    name : str
        Span name, e.g. ``"process agents.planner.request"``.
    trace_id : str
        32 lowercase hex characters, without ``0x``.
    span_id : str
        16 lowercase hex characters, without ``0x``.
    parent_id : str or None
        The parent's ``span_id`` (16 hex, no ``0x``); ``None`` for a root.
        The parent may live in another process and be missing from the file.
    kind : str
        ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"`` or ``"CONSUMER"``.
    start, end : datetime.datetime
        Timezone-aware UTC start and end times (microsecond resolution).
    status_code : str
        ``"UNSET"``, ``"OK"`` or ``"ERROR"``.
    status_description : str or None
        The status message, usually only set with ``"ERROR"``.
    attributes : dict[str, Any]
        Span attributes (str, bool, int, float or lists of them).
    service_name : str
        ``service.name`` of the process that recorded the span.
    events : tuple[SpanEvent, ...]
        Span events in recording order.
    linked_traces : tuple[str, ...]
        Trace ids (32 hex) of the spans this one links to in *other* traces, e.g. a chat turn's link
        to the task it started.
    """

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    start: datetime
    end: datetime
    status_code: str = "UNSET"
    status_description: str | None = None
    attributes: dict[str, Any] = {}
    service_name: str = "unknown_service"
    events: tuple[SpanEvent, ...] = ()
    linked_traces: tuple[str, ...] = ()

    @property
    def duration_ms(self) -> float:
        """Wall-clock duration in milliseconds."""
        return (self.end - self.start).total_seconds() * 1000.0

    @property
    def is_error(self) -> bool:
        """Whether the span's status is ``ERROR``."""
        return self.status_code == "ERROR"


# --------------------------------------------------------------------------- #
# Decoding: the exact shape of ``ReadableSpan.to_json(indent=None)``
# --------------------------------------------------------------------------- #

_TraceIdHex = Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{32}$")]
_SpanIdHex = Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{16}$")]


class _WireContext(msgspec.Struct):
    trace_id: _TraceIdHex
    span_id: _SpanIdHex


class _WireStatus(msgspec.Struct):
    status_code: str = "UNSET"
    description: str | None = None


class _WireEvent(msgspec.Struct):
    name: str
    timestamp: datetime
    attributes: dict[str, Any] = {}


class _WireResource(msgspec.Struct):
    attributes: dict[str, Any] = {}


class _WireLink(msgspec.Struct):
    context: _WireContext


class _WireSpan(msgspec.Struct):
    name: str
    context: _WireContext
    kind: str
    start_time: datetime
    end_time: datetime
    parent_id: _SpanIdHex | None = None
    status: _WireStatus | None = None
    attributes: dict[str, Any] = {}
    events: list[_WireEvent] = []
    resource: _WireResource | None = None
    links: list[_WireLink] = []


_DECODER = msgspec.json.Decoder(_WireSpan)


def _bare_hex(value: str) -> str:
    return value.strip().lower().removeprefix("0x")


def _to_record(wire: _WireSpan) -> SpanRecord:
    status = wire.status or _WireStatus()
    resource_attributes = wire.resource.attributes if wire.resource else {}
    return SpanRecord(
        name=wire.name,
        trace_id=_bare_hex(wire.context.trace_id),
        span_id=_bare_hex(wire.context.span_id),
        parent_id=_bare_hex(wire.parent_id) if wire.parent_id else None,
        kind=wire.kind.removeprefix("SpanKind."),
        start=wire.start_time,
        end=wire.end_time,
        status_code=status.status_code,
        status_description=status.description or None,
        attributes=wire.attributes,
        service_name=str(resource_attributes.get("service.name", "unknown_service")),
        events=tuple(SpanEvent(name=e.name, timestamp=e.timestamp, attributes=e.attributes) for e in wire.events),
        linked_traces=tuple(dict.fromkeys(
            trace_id for link in wire.links
            if (trace_id := _bare_hex(link.context.trace_id)) != _bare_hex(wire.context.trace_id))),
    )


def load_spans(path: Path) -> list[SpanRecord]:
    """Read every span from a JSONL trace file.

    Parameters
    ----------
    path : pathlib.Path
        The trace file, usually ``tandem.services.telemetry.default_trace_file()``.

    Returns
    -------
    list[SpanRecord]
        Spans in file order (roughly the order they ended). Blank lines and
        lines that are not a complete span object - such as a last line
        another process is still writing - are skipped.

    Raises
    ------
    services.errors.InputError
        If the file does not exist (no trace recorded yet) or cannot be read.

    Examples
    --------
    >>> spans = load_spans(Path("~/.local/state/tandem/traces.jsonl").expanduser())
    >>> tree = render_trace(find_trace(spans, latest_trace_id(spans)))
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(
            f"no traces recorded yet: {path} does not exist "
            "(run a task first, or set TANDEM_TRACE_FILE to the trace file to read)"
        ) from exc
    except OSError as exc:
        raise InputError(f"cannot read trace file {path}: {exc.strerror or exc}") from exc

    spans: list[SpanRecord] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            wire = _DECODER.decode(line)
        except msgspec.DecodeError:  # truncated/concurrent write or foreign line
            continue
        spans.append(_to_record(wire))
    return spans


# --------------------------------------------------------------------------- #
# Selecting a trace
# --------------------------------------------------------------------------- #


class _TraceSummary(msgspec.Struct, frozen=True, kw_only=True):
    trace_id: str
    root_name: str
    has_root: bool
    start: datetime
    end: datetime
    finished: datetime  # end of the root span(s), else of the latest span
    span_count: int
    services: tuple[str, ...]
    error_count: int

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000.0


def _group_by_trace(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    traces: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return traces


def _summarize(trace_id: str, spans: Sequence[SpanRecord]) -> _TraceSummary:
    ordered = sorted(spans, key=lambda s: (s.start, s.span_id))
    roots = [s for s in ordered if s.parent_id is None]
    services = tuple(dict.fromkeys(s.service_name for s in ordered))
    return _TraceSummary(
        trace_id=trace_id,
        root_name=(roots or ordered)[0].name,
        has_root=bool(roots),
        start=ordered[0].start,
        end=max(s.end for s in ordered),
        finished=max(s.end for s in (roots or ordered)),
        span_count=len(ordered),
        services=services,
        error_count=sum(s.is_error for s in ordered),
    )


def _summaries_newest_first(spans: Iterable[SpanRecord]) -> list[_TraceSummary]:
    summaries = [_summarize(tid, group) for tid, group in _group_by_trace(spans).items()]
    summaries.sort(key=lambda t: (t.finished, t.trace_id), reverse=True)
    return summaries


def latest_trace_id(spans: Iterable[SpanRecord]) -> str | None:
    """Return the id of the most recently finished trace.

    Parameters
    ----------
    spans : iterable of SpanRecord
        Spans of any number of traces, e.g. from :func:`load_spans`.

    Returns
    -------
    str or None
        32-hex trace id of the trace whose root span ended last; a trace
        whose root is not (yet) in the file counts by its latest-ending span.
        ``None`` if there are no spans.
    """
    summaries = _summaries_newest_first(spans)
    return summaries[0].trace_id if summaries else None


def find_trace(spans: Iterable[SpanRecord], trace_id_prefix: str) -> list[SpanRecord]:
    """Return the spans of the one trace whose id starts with a prefix.

    Parameters
    ----------
    spans : iterable of SpanRecord
        Spans of any number of traces.
    trace_id_prefix : str
        A full 32-hex trace id or a unique prefix of at least 6 hex
        characters; case-insensitive, with or without ``0x``.

    Returns
    -------
    list[SpanRecord]
        That trace's spans, sorted by start time.

    Raises
    ------
    services.errors.InputError
        If the prefix is not hex, is shorter than 6 or longer than 32
        characters, matches no trace, or matches more than one.

    Examples
    --------
    >>> find_trace(spans, "0x4BF92F")[0].trace_id
    '4bf92f3577b34da6a3ce929d0e0e4736'
    """
    spans = list(spans)
    prefix = _bare_hex(trace_id_prefix)
    if not _HEX.fullmatch(prefix):
        raise InputError(f"trace id {trace_id_prefix!r} is not hexadecimal")
    if len(prefix) > _TRACE_ID_LENGTH:
        raise InputError(f"trace id {trace_id_prefix!r} is longer than {_TRACE_ID_LENGTH} hex characters")
    if len(prefix) < MIN_PREFIX_LENGTH:
        raise InputError(f"trace id prefix {trace_id_prefix!r} is too short: give at least {MIN_PREFIX_LENGTH} hex characters")

    traces = _group_by_trace(spans)
    matches = sorted(tid for tid in traces if tid.startswith(prefix))
    if not matches:
        raise InputError(f"no recorded trace id starts with {prefix!r} ({len(traces)} traces in the file)")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise InputError(f"trace id prefix {prefix!r} is ambiguous, it matches {len(matches)} traces: {shown}")
    return sorted(traces[matches[0]], key=lambda s: (s.start, s.span_id))


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


def _format_ms(ms: float) -> str:
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms"


def _key_attributes(span: SpanRecord) -> list[str]:
    attrs = span.attributes
    parts: list[str] = []
    destination = attrs.get("messaging.destination.template") or attrs.get("messaging.destination.name")
    if destination is not None:
        parts.append(f"dest={destination}")
    model = attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model")
    if model is not None:
        parts.append(f"model={model}")
    tokens_in = attrs.get("gen_ai.usage.input_tokens")
    tokens_out = attrs.get("gen_ai.usage.output_tokens")
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"tokens={'?' if tokens_in is None else tokens_in}→{'?' if tokens_out is None else tokens_out}")
    step = attrs.get("tandem.plan.step")
    if step is not None:
        parts.append(f"step={step}")
    error_type = attrs.get("error.type")
    if error_type is not None:
        parts.append(f"error={error_type}")
    return parts


def _error_message(span: SpanRecord) -> str:
    if span.status_description:
        return span.status_description
    for event in reversed(span.events):
        if event.name == "exception" and event.attributes.get("exception.message"):
            return str(event.attributes["exception.message"])
    return "error"


def _span_label(span: SpanRecord, *, orphan: bool) -> Text:
    label = Text()
    label.append(span.name, style="bold red" if span.is_error else "bold")
    label.append("  ")
    label.append(f"[{_format_ms(span.duration_ms)}]", style="cyan")
    label.append("  ")
    label.append(span.service_name, style="magenta")
    label.append("  ")
    label.append(f"({span.kind.lower()})", style="dim")
    for part in _key_attributes(span):
        label.append("  ")
        label.append(part, style="red" if part.startswith("error=") else "green")
    if span.is_error:
        label.append("  ")
        label.append(f"✗ {_error_message(span)}", style="bold red")
    for trace_id in span.linked_traces:
        label.append("  ")
        label.append(f"→ trace {trace_id[:8]}", style="yellow")
    if orphan:
        label.append("  ")
        label.append(f"(parent {span.parent_id} not recorded)", style="dim italic")
    return label


def _trace_header(summary: _TraceSummary) -> Text:
    header = Text()
    header.append("trace ", style="bold")
    header.append(summary.trace_id, style="bold yellow")
    header.append(f"  {_format_ms(summary.duration_ms)}", style="cyan")
    header.append(f"  {summary.span_count} span{'s' if summary.span_count != 1 else ''}")
    header.append(f"  services: {', '.join(summary.services)}", style="magenta")
    if summary.error_count:
        header.append(f"  {summary.error_count} error{'s' if summary.error_count != 1 else ''}", style="bold red")
    return header


def render_trace(spans: Sequence[SpanRecord]) -> Tree:
    """Render one trace as a span tree.

    Parameters
    ----------
    spans : sequence of SpanRecord
        All spans of a single trace, e.g. from :func:`find_trace`.

    Returns
    -------
    rich.tree.Tree
        Root label: trace id, total duration (first start to last end), span
        count and services in order of first appearance. One node per span,
        ``name  [duration ms]  service  (kind)`` plus key attributes
        (``dest=``, ``model=``, ``tokens=in→out``, ``step=``, ``error=``);
        children sorted by start time; error spans in red with their status
        message. Spans whose parent is not in ``spans`` (e.g. a remote
        parent that was never flushed) are shown at the top level.

    Raises
    ------
    ValueError
        If ``spans`` is empty or holds spans of more than one trace.
    """
    if not spans:
        raise ValueError("render_trace() needs at least one span")
    trace_ids = {s.trace_id for s in spans}
    if len(trace_ids) > 1:
        raise ValueError(f"render_trace() got spans of {len(trace_ids)} traces; select one with find_trace()")

    by_id: dict[str, SpanRecord] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.span_id)):
        by_id.setdefault(span.span_id, span)  # a span exported twice is shown once
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    top: list[SpanRecord] = []
    for span in by_id.values():  # already in start order, so child lists are too
        if span.parent_id is not None and span.parent_id in by_id and span.parent_id != span.span_id:
            children[span.parent_id].append(span)
        else:
            top.append(span)

    tree = Tree(_trace_header(_summarize(next(iter(trace_ids)), list(by_id.values()))), guide_style="dim")
    visited: set[str] = set()

    def attach(start: SpanRecord, parent_node: Tree) -> None:
        # Iterative depth-first walk; ``visited`` guards against parent cycles.
        stack = [(start, parent_node)]
        while stack:
            span, node = stack.pop()
            if span.span_id in visited:
                continue
            visited.add(span.span_id)
            orphan = span.parent_id is not None and span.parent_id not in by_id
            child_node = node.add(_span_label(span, orphan=orphan))
            stack.extend((child, child_node) for child in reversed(children[span.span_id]))

    for span in top:
        attach(span, tree)
    for span in by_id.values():  # spans only reachable through a parent cycle
        if span.span_id not in visited:
            attach(span, tree)
    return tree


def render_trace_list(spans: Iterable[SpanRecord], limit: int = 10) -> Table:
    """Tabulate the most recent traces, newest first (``tandem trace --list``).

    Parameters
    ----------
    spans : iterable of SpanRecord
        Spans of any number of traces.
    limit : int
        Maximum number of traces (rows) to show; at least 1.

    Returns
    -------
    rich.table.Table
        Columns: trace id (full 32 hex), root span name, start (local time),
        duration, span count. Traces with error spans are styled red; traces
        whose root is missing have their earliest span's name marked
        ``(no root)``. The caption tells how many traces were left out.

    Raises
    ------
    ValueError
        If ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    summaries = _summaries_newest_first(spans)
    table = Table(title="Recent traces", title_justify="left")
    table.add_column("trace id", no_wrap=True, style="yellow")
    table.add_column("root")
    table.add_column("start", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("spans", justify="right")
    for summary in summaries[:limit]:
        root = Text(summary.root_name)
        if not summary.has_root:
            root.append(" (no root)", style="dim italic")
        table.add_row(
            summary.trace_id,
            root,
            summary.start.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            _format_ms(summary.duration_ms),
            str(summary.span_count),
            style="red" if summary.error_count else None,
        )
    if not summaries:
        table.caption = "no traces recorded"
    elif len(summaries) > limit:
        table.caption = f"{limit} of {len(summaries)} traces shown"
    return table
