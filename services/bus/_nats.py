"""The NATS bus: typed, traced publish and request/reply over nats-py."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from opentelemetry.trace import Status, StatusCode

from tandem.messages import ErrorReply, Message, decoder, encode

from ..errors import BusConnectError, BusError, DeadlineExceeded, NoResponders, RemoteError, RequestTimeout
from ._deadline import DEADLINE_HEADER, current_deadline, remaining
from ._tracing import SEND, inject_headers, messaging_attributes, tracer

__all__ = ["Bus"]

R = TypeVar("R")


@functools.cache
def _reply_decoder(reply_type: Any) -> msgspec.json.Decoder[Any]:
    return decoder(reply_type | ErrorReply)


class Bus:
    """A connected NATS client that speaks Tandem messages.

    Parameters
    ----------
    nc : nats.aio.client.Client
        A connected nats-py client; use :meth:`connect` to make one.

    Notes
    -----
    Replies never echo request headers (nats-py ``Msg.respond`` does); only
    the trace context is sent.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._js: JetStreamContext | None = None

    @classmethod
    async def connect(cls, url: str, *, name: str = "tandem", connect_timeout: float = 2.0) -> Bus:
        """Connect to ``url``.

        Raises
        ------
        BusConnectError
            When the server cannot be reached (no reconnect loop on first connect).
        """
        errors: list[Exception] = []
        connected = False

        async def on_error(exc: Exception) -> None:
            if connected:
                logging.getLogger("tandem.bus").warning("NATS: %s", exc)
            else:
                errors.append(exc)  # reported once, in BusConnectError

        nc = Client()
        try:
            # nats-py keeps retrying a failed first connect when reconnects are
            # allowed; bound it, and keep its per-attempt errors for the message.
            with anyio.fail_after(connect_timeout * 2):
                await nc.connect(
                    url, name=name, connect_timeout=connect_timeout, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=on_error,
                )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            with anyio.CancelScope(shield=True):
                await nc.close()
            cause = errors[-1] if errors else exc
            raise BusConnectError(f"cannot connect to NATS at {url}: {cause or type(cause).__name__}") from exc
        connected = True
        return cls(nc)

    async def close(self) -> None:
        """Drain subscriptions and close the connection."""
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except (nats.errors.Error, OSError) as exc:
            # the server is gone or reconnecting: nothing left to flush, just stop the client's tasks
            logging.getLogger("tandem.bus").debug("drain failed (%s); closing", exc)
            try:
                await self.nc.close()
            except OSError as close_exc:  # the socket was already lost
                logging.getLogger("tandem.bus").debug("close after lost connection: %s", close_exc)

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context of this connection."""
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    async def key_value(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """Return JetStream KV ``bucket``, creating it when missing.

        Raises
        ------
        BusError
            When JetStream is not enabled on the server.
        """
        try:
            try:
                return await self.jetstream.key_value(bucket)
            except BucketNotFoundError:
                from nats.js.api import KeyValueConfig

                return await self.jetstream.create_key_value(KeyValueConfig(bucket=bucket, history=history, ttl=ttl))
        except nats.errors.Error as exc:
            raise BusError(f"JetStream KV {bucket!r} unavailable (is JetStream enabled?): {exc}") from exc

    async def subscribe(
        self, subject: str, *, queue: str = "", cb: Callable[[Msg], Awaitable[None]] | None = None
    ) -> Subscription:
        """Subscribe to ``subject`` (in ``queue`` group if given).

        Without ``cb``, iterate ``sub.messages``; with ``cb``, nats-py awaits it
        once per message in order (errors it raises are only logged, so ``cb``
        should hand work to a task group rather than do it).
        """
        return await self.nc.subscribe(subject, queue=queue, cb=cb)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far."""
        await self.nc.flush(timeout=timeout)

    async def publish(self, subject: str, message: Message, *, template: str | None = None) -> None:
        """Publish a one-way message (an event) inside a ``send <subject>`` span.

        Parameters
        ----------
        subject : str
        message : Message
        template : str or None
            Subject template for the span name (e.g. ``tandem.events.task.{status}``).
        """
        payload = encode(message)
        name = template or subject
        with tracer.start_as_current_span(
            f"send {name}",
            kind=SEND,
            attributes=messaging_attributes(
                "send", subject, message_id=message.correlation_id,
                conversation_id=message.conversation_id, body_size=len(payload), template=template,
            ),
        ):
            try:
                await self.nc.publish(subject, payload, headers=inject_headers())
            except nats.errors.Error as exc:
                raise BusError(f"publish to {subject} failed: {exc}") from exc

    async def request(self, subject: str, message: Message, reply_type: type[R] | Any, *, timeout: float) -> R:
        """Send ``message`` and wait for a typed reply.

        Parameters
        ----------
        subject : str
        message : Message
        reply_type : type
            The success reply Struct (``ErrorReply`` is always accepted too).
        timeout : float
            Seconds to wait for the reply; never past the current deadline
            (:func:`~tandem.services.bus.deadline_scope`), which the request carries
            in the ``Tandem-Deadline`` header.

        Returns
        -------
        reply_type
            The decoded reply.

        Raises
        ------
        RemoteError
            When the peer answered with an ``ErrorReply``.
        NoResponders
            When nobody serves ``subject``.
        DeadlineExceeded
            When the current deadline passed before or while waiting.
        RequestTimeout
            When no reply came within ``timeout``.
        BusError
            When the reply does not decode as ``reply_type``.
        """
        deadline = current_deadline()
        wait = remaining(timeout)
        headers = inject_headers()
        if deadline is not None:
            if wait <= 0:
                raise DeadlineExceeded(f"deadline passed before the request to {subject}", step=subject)
            headers[DEADLINE_HEADER] = f"{deadline:.3f}"
        payload = encode(message)
        with tracer.start_as_current_span(
            f"send {subject}",
            kind=SEND,
            attributes=messaging_attributes(
                "send", subject, message_id=message.correlation_id,
                conversation_id=message.conversation_id, body_size=len(payload),
            ),
        ) as span:
            try:
                msg = await self.nc.request(subject, payload, timeout=wait, headers=headers)
            except nats.errors.NoRespondersError as exc:
                span.set_status(Status(StatusCode.ERROR, "no responders"))
                span.set_attribute("error.type", "no_responders")
                raise NoResponders(f"no actor serves {subject} (is it running?)") from exc
            except nats.errors.TimeoutError as exc:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                if wait < timeout:
                    span.set_attribute("error.type", "deadline_exceeded")
                    raise DeadlineExceeded(f"deadline reached waiting for {subject}", step=subject) from exc
                span.set_attribute("error.type", "timeout")
                raise RequestTimeout(f"no reply from {subject} within {timeout:g}s") from exc
            except nats.errors.Error as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise BusError(f"request to {subject} failed: {exc}") from exc
            try:
                reply = _reply_decoder(reply_type).decode(msg.data)
            except msgspec.DecodeError as exc:
                span.set_attribute("error.type", "bad_reply")
                raise BusError(f"malformed reply from {subject}: {exc}") from exc
            if isinstance(reply, ErrorReply):
                span.set_status(Status(StatusCode.ERROR, reply.message))
                span.set_attribute("error.type", reply.code)
                raise RemoteError(reply.code, reply.message, path=reply.path, subject=subject)
            return reply

    async def respond(self, msg: Msg, reply: Message, headers: Mapping[str, str] | None = None) -> None:
        """Send ``reply`` to the reply subject of request ``msg`` (headers are not echoed)."""
        if msg.reply:
            await self.nc.publish(msg.reply, encode(reply), headers=dict(headers) if headers else None)
