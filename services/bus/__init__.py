"""The message bus: NATS (core request/reply + JetStream) with tracing."""

from ._deadline import DEADLINE_HEADER, current_deadline, deadline_from_headers, deadline_scope, remaining
from ._embedded import EmbeddedNats, find_nats_server, free_port
from ._nats import Bus
from ._tracing import extract_context, inject_headers, messaging_attributes

__all__ = ["DEADLINE_HEADER", "current_deadline", "deadline_from_headers", "deadline_scope", "remaining", "Bus", "EmbeddedNats", "extract_context", "find_nats_server", "free_port", "inject_headers", "messaging_attributes"]
