"""Messaging spans over NATS, named by the OTel messaging semantic conventions.

* ``send <subject>`` — PRODUCER, its context injected as W3C ``traceparent``
  into the NATS message headers;
* ``process <subject>`` — CONSUMER, child of the extracted context and linked to it.

Reply subjects (``_INBOX.*``) are temporary and never used as span names.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import messaging_attributes as M
from opentelemetry.trace import Link, SpanKind

__all__ = ["MESSAGING_SYSTEM", "extract_context", "inject_headers", "messaging_attributes", "tracer"]

MESSAGING_SYSTEM = "nats"

tracer = trace.get_tracer("tandem.bus")


def messaging_attributes(
    operation: str,
    subject: str,
    *,
    message_id: str = "",
    conversation_id: str = "",
    body_size: int | None = None,
    template: str | None = None,
    consumer_group: str | None = None,
    actor: str | None = None,
) -> dict[str, str | int]:
    """Return the semantic-convention attributes of one messaging span.

    Parameters
    ----------
    operation : {"send", "process", "receive"}
        ``messaging.operation.type``; also used as ``messaging.operation.name``.
    subject : str
        ``messaging.destination.name``.
    message_id, conversation_id : str
        The envelope's ``correlation_id`` and ``conversation_id``.
    body_size : int or None
        Payload size in bytes.
    template : str or None
        ``messaging.destination.template`` for templated subjects.
    consumer_group : str or None
        The NATS queue group (``messaging.consumer.group.name``).
    actor : str or None
        The consuming actor (``tandem.actor``).
    """
    attrs: dict[str, str | int] = {
        M.MESSAGING_SYSTEM: MESSAGING_SYSTEM,
        M.MESSAGING_OPERATION_TYPE: operation,
        M.MESSAGING_OPERATION_NAME: operation,
        M.MESSAGING_DESTINATION_NAME: subject,
    }
    if message_id:
        attrs[M.MESSAGING_MESSAGE_ID] = message_id
    if conversation_id:
        attrs[M.MESSAGING_MESSAGE_CONVERSATION_ID] = conversation_id
    if body_size is not None:
        attrs[M.MESSAGING_MESSAGE_BODY_SIZE] = body_size
    if template:
        attrs[M.MESSAGING_DESTINATION_TEMPLATE] = template
    if consumer_group:
        attrs[M.MESSAGING_CONSUMER_GROUP_NAME] = consumer_group
    if actor:
        attrs["tandem.actor"] = actor
    return attrs


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Inject the current context (``traceparent``/``tracestate``) into NATS headers."""
    carrier: dict[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> tuple[Context, list[Link]]:
    """Extract the producer's context from NATS headers.

    Returns
    -------
    tuple of (Context, list of Link)
        The context to parent a ``process`` span on, and a link to the
        producer's span (empty when the message carried no ``traceparent``).
    """
    ctx = propagate.extract(headers or {})
    remote = trace.get_current_span(ctx).get_span_context()
    return ctx, ([Link(remote)] if remote.is_valid else [])


SEND = SpanKind.PRODUCER
PROCESS = SpanKind.CONSUMER
