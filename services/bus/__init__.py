"""The message bus: NATS (core request/reply + JetStream) with tracing, limits and healing."""

from ._deadline import DEADLINE_HEADER, current_deadline, deadline_from_headers, deadline_scope, remaining
from ._embedded import EmbeddedNats, find_nats_server, free_port
from ._kv import HealingKeyValue
from ._limits import MAX_KV_KEY_BYTES, MAX_SUBJECT_BYTES, truncate_text, validate_kv_key, validate_subject
from ._nats import Bus, redact_url
from ._protocol import (
    ATTEMPT_HEADER,
    HEARTBEAT_HEADER,
    HEARTBEAT_INTERVAL,
    PAYLOAD_BUCKET,
    PAYLOAD_HEADER,
    STATUS_DONE,
    STATUS_HEADER,
    STATUS_WORKING,
)
from ._tracing import extract_context, inject_headers, messaging_attributes

__all__ = [
    "ATTEMPT_HEADER",
    "DEADLINE_HEADER",
    "HEARTBEAT_HEADER",
    "HEARTBEAT_INTERVAL",
    "MAX_KV_KEY_BYTES",
    "MAX_SUBJECT_BYTES",
    "PAYLOAD_BUCKET",
    "PAYLOAD_HEADER",
    "STATUS_DONE",
    "STATUS_HEADER",
    "STATUS_WORKING",
    "Bus",
    "EmbeddedNats",
    "HealingKeyValue",
    "current_deadline",
    "deadline_from_headers",
    "deadline_scope",
    "extract_context",
    "find_nats_server",
    "free_port",
    "inject_headers",
    "messaging_attributes",
    "redact_url",
    "remaining",
    "truncate_text",
    "validate_kv_key",
    "validate_subject",
]
