"""Tracing setup (JSON lines file or OTLP) and the ``tandem trace`` viewer."""

from ._setup import aclose_tracing, default_trace_file, setup_tracing, shutdown_tracing
from ._view import SpanEvent, SpanRecord, find_trace, latest_trace_id, load_spans, render_trace, render_trace_list

__all__ = [
    "SpanEvent",
    "SpanRecord",
    "aclose_tracing",
    "default_trace_file",
    "find_trace",
    "latest_trace_id",
    "load_spans",
    "render_trace",
    "render_trace_list",
    "setup_tracing",
    "shutdown_tracing",
]
