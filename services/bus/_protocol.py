"""Tandem's NATS header conventions beyond the deadline (see ``_deadline.py``).

=====================  =========================================================================
header                 meaning
=====================  =========================================================================
``Tandem-Payload``     The body is empty; the real payload is object ``<name>`` of the JetStream
                       object store bucket ``<bucket>``, written as ``<bucket>/<name>``. Used for
                       requests, replies and events larger than the server's ``max_payload``.
``Tandem-Heartbeat``   On a request: "I am waiting; tell me you are still working on it". The
                       serving actor then sends, every :data:`HEARTBEAT_INTERVAL` seconds until
                       it replies, an empty message with ``Tandem-Status: working`` to the reply
                       subject, and its reply carries ``Tandem-Status: done``. Silence for the
                       caller's liveness window on a subject known to be served by actors (a
                       heartbeat or a ``done`` reply was seen there) means the request was lost
                       with its replica (:class:`~tandem.services.errors.ReplicaLost`, or a
                       retry when idempotent). A responder that never heartbeats (a plain
                       subscription) is waited for until the timeout, as before.
``Tandem-Status``      ``working`` on a heartbeat, ``done`` on an actor's reply.
``Tandem-Attempt``     ``2``, ``3``…: the request is a retry of an idempotent request whose
                       replica went silent. Endpoints not declared ``idempotent`` refuse it
                       with ``bad_request``.
=====================  =========================================================================
"""

from __future__ import annotations

import re

__all__ = [
    "ATTEMPT_HEADER",
    "HEARTBEAT_HEADER",
    "HEARTBEAT_INTERVAL",
    "PAYLOAD_BUCKET",
    "PAYLOAD_HEADER",
    "STATUS_DONE",
    "STATUS_HEADER",
    "STATUS_WORKING",
    "payload_ref",
    "parse_payload_ref",
]

PAYLOAD_HEADER = "Tandem-Payload"
HEARTBEAT_HEADER = "Tandem-Heartbeat"
STATUS_HEADER = "Tandem-Status"
STATUS_WORKING = "working"
STATUS_DONE = "done"
ATTEMPT_HEADER = "Tandem-Attempt"

HEARTBEAT_INTERVAL = 1.0
"""Seconds between two heartbeats of a request in progress."""

PAYLOAD_BUCKET = "tandem_payloads"
"""The object store bucket for payloads larger than ``max_payload``."""

_NAME = re.compile(r"[0-9a-f]{32}")


def payload_ref(bucket: str, name: str) -> str:
    """Return the ``Tandem-Payload`` header value for object ``name`` in ``bucket``."""
    return f"{bucket}/{name}"


def parse_payload_ref(value: str, *, bucket: str = PAYLOAD_BUCKET) -> str | None:
    """Return the object name in a ``Tandem-Payload`` value, or ``None`` when it is not one of ours.

    Only objects of ``bucket`` with a 32-hex-digit name are accepted (the header is
    untrusted input).
    """
    prefix, _, name = value.partition("/")
    return name if prefix == bucket and _NAME.fullmatch(name) else None
