"""The NATS bus: typed, traced publish and request/reply over nats-py.

What the bus adds to nats-py, so every actor and client gets it:

* names are checked before they are sent (:func:`validate_subject`, KV keys), since one
  over-long subject makes nats-server close the connection for good;
* payloads larger than the server's ``max_payload`` travel through the JetStream object
  store (``Tandem-Payload`` header), both ways; :meth:`Bus.request` fetches large replies
  transparently and actors fetch large requests;
* requests ask for heartbeats (``Tandem-Heartbeat``); a request whose replica goes silent
  is retried on another replica within its deadline when the caller says it is
  ``idempotent``, and fails fast with :class:`ReplicaLost` otherwise;
* a connection closed for good (nats-py does not reconnect after a server ``-ERR``) is
  reopened by :meth:`Bus.reconnect`; actors notice through :meth:`Bus.wait_lost`;
* KV buckets validate keys and are recreated when their stream is lost.

See ``_protocol.py`` for the header conventions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import math
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio import client as _nats_client
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore
from nats.protocol import command as _nats_command
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Status, StatusCode

from tandem.messages import ErrorReply, Message, decoder, encode, new_id

from ..errors import (
    BadRequest,
    BusClosed,
    BusConnectError,
    BusError,
    DeadlineExceeded,
    NoResponders,
    PayloadTooLarge,
    PermissionDenied,
    RemoteError,
    ReplicaLost,
    RequestTimeout,
)
from ._deadline import DEADLINE_HEADER, current_deadline, remaining
from ._kv import HealingKeyValue, is_stream_lost
from ._limits import truncate_text, validate_reply_subject, validate_subject
from ._protocol import (
    ATTEMPT_HEADER,
    HEARTBEAT_HEADER,
    PAYLOAD_BUCKET,
    PAYLOAD_HEADER,
    STATUS_DONE,
    STATUS_HEADER,
    STATUS_WORKING,
    parse_payload_ref,
    payload_ref,
)
from ._tracing import (
    SENT_ROOT,
    TRACEPARENT,
    TRACESTATE,
    HopAttributes,
    _fast_propagation,
    _Forwarded,
    inject_span,
    start_send,
)

__all__ = ["Bus", "redact_url"]

R = TypeVar("R")

log = logging.getLogger("tandem.bus")

_NO_RESPONDERS_STATUS = "503"
_HEADROOM = 512  # bytes kept free under max_payload for the protocol line and unforeseen headers


def redact_url(url: str) -> str:
    """Return ``url`` with the password (or a lone token) in its userinfo replaced by ``***``.

    Examples
    --------
    >>> redact_url("nats://app:s3cret@127.0.0.1:4222")
    'nats://app:***@127.0.0.1:4222'
    """
    from ..config import redact_url as _redact  # one implementation; config does not import the bus

    return _redact(url)


def _auth_options(credentials: str | os.PathLike[str] | None, tls: ssl.SSLContext | None,
                  inbox_prefix: str) -> dict[str, Any]:
    """nats-py ``connect`` keywords for a credentials file (``.creds`` or bare nkey seed), TLS and the inbox prefix."""
    options: dict[str, Any] = {"inbox_prefix": inbox_prefix}
    if tls is not None:
        options["tls"] = tls
    if credentials is None:
        return options
    path = os.fspath(credentials)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(64 * 1024)
    except OSError as exc:
        raise BusConnectError(f"cannot read NATS credentials {path}: {exc.strerror or exc}") from exc
    if "BEGIN NATS USER JWT" in text:
        options["user_credentials"] = path
    elif text.strip().startswith("SU"):
        options["nkeys_seed"] = path
    else:
        raise BusConnectError(f"NATS credentials {path}: neither a .creds file (user JWT + seed) "
                              "nor an nkey user seed (SU...)")
    return options


@functools.lru_cache(maxsize=1024)
def _valid_subject(subject: str) -> str:
    """:func:`validate_subject`, remembered for the few subjects a process sends requests to."""
    return validate_subject(subject)


@functools.cache
def _reply_decoder(reply_type: Any) -> msgspec.json.Decoder[Any]:
    return decoder(reply_type | ErrorReply)


_BASE_LOOP_TIME = asyncio.BaseEventLoop.time
"""asyncio's ``loop.time``: ``time.monotonic()`` and nothing else."""


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` (``anyio.current_time()`` on asyncio), or ``time.monotonic`` itself where that is all it calls."""
    return time.monotonic if type(loop).time is _BASE_LOOP_TIME else loop.time


def _headers_size(headers: Mapping[str, str] | None) -> int:
    if not headers:
        return 0
    return 12 + 4 * len(headers) + sum(map(len, headers)) + sum(map(len, headers.values()))


# --------------------------------------------------------------------------- nats-py's header path, cheaper
#
# Every hop sends two header blocks (request: traceparent, Tandem-Heartbeat, maybe Tandem-Deadline;
# reply: traceparent, Tandem-Status) and parses two. nats-py validates each header name with a regex
# on every publish and checks each parsed name character by character (a generator per header):
# about 4 µs per publish and 7 µs per parse of three headers here, a fifth of an untraced hop.
# _Client does the same work once per distinct header name (names come from a handful of
# constants), and produces the same bytes and the same dicts.

_MAX_CACHED_HEADER_NAMES = 1024
_HEADER_LINE = b"NATS/1.0\r\n"
_CRLF = b"\r\n"
_ASCII_SPACE = re.compile(rb"[\t-\r\x1c- ]")  # the ASCII characters for which str.isspace() is true
_encoded_names: dict[str, bytes] = {}  # header name -> b"Name: " (b"": skipped, blank after strip)
_parsed_names: dict[bytes, str | None] = {}  # raw name bytes -> header name (None: skipped)


_NEWLINES_ONLY = getattr(_nats_client, "_HEADER_VALUE_NEWLINES", None) == {ord("\r"): " ", ord("\n"): " "}
"""nats-py's value translation only turns CR and LF into spaces: a value without them is left as it is."""


def _encode_header_block(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block nats-py's ``_send_publish`` builds for ``headers`` (same bytes, same errors).

    Raises
    ------
    nats.errors.BadHeaderError
        When a name is not an RFC 7230 token.
    """
    parts = [_HEADER_LINE]
    names = _encoded_names
    for name, value in headers.items():
        encoded = names.get(name)
        if encoded is None:
            key = name.strip()
            if key and not _nats_client._HEADER_KEY_RE.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            if len(names) >= _MAX_CACHED_HEADER_NAMES:
                names.clear()
            encoded = names[name] = key.encode() + b": " if key else b""
        if encoded:
            value = value.strip()
            if not _NEWLINES_ONLY or "\r" in value or "\n" in value:  # str.translate: ~13k instructions a traceparent
                value = value.translate(_nats_client._HEADER_VALUE_NEWLINES)
            parts += (encoded, value.encode(), _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def _parsed_name(raw: bytes) -> str | None:
    """nats-py's reading of one raw header name: stripped, ASCII, no whitespace inside; else None."""
    try:
        key = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if _ASCII_SPACE.search(raw.strip()) else key


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines`` with the name checks done once per distinct name."""
    out: dict[str, str] = {}
    names = _parsed_names
    for line in raw.split(_CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = names.get(name)
        if key is None:
            if name in names:
                continue
            if len(names) >= _MAX_CACHED_HEADER_NAMES:
                names.clear()
            key = names[name] = _parsed_name(name)
            if key is None:
                continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


_MAX_CACHED_BLOCKS = 256
_SHORT_VALUE = 16  # a header value this short is a flag or a status word, not an id: its block repeats
_SHORT_BLOCK = 64  # a raw header block this short holds no id either (a traceparent alone makes 70 bytes)
_encoded_blocks: dict[tuple[str, str], bytes] = {}  # the one (name, value) of a header dict -> its block
_parsed_blocks: dict[bytes, dict[str, str] | None] = {}  # short raw header block -> nats-py's reading of it
_parsed_rests: dict[bytes, dict[str, str] | None] = {}  # what follows a leading traceparent's value -> its reading
_encoded_rests: dict[tuple[str, str], bytes] = {}  # the (name, value) after a traceparent -> its line and the end
_MISSING: Any = object()

_TRACEPARENT_HEAD = b"NATS/1.0\r\ntraceparent: "
"""How a block the bus sends with a ``traceparent`` starts: that line first, then the block's other lines."""
assert len(_TRACEPARENT_HEAD) == 23  # _Client._process_headers slices at 23, 78 and 80
_PLAIN_PARSE = getattr(_nats_client, "parse_email", None) is None
"""nats-py reads header lines with ``_parse_header_lines`` (not ``fast_mail_parser``, when that is installed)."""


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Store ``value`` under ``key`` in one of the header caches, emptied first once it holds
    :data:`_MAX_CACHED_BLOCKS` entries (called on a miss only)."""
    if len(cache) >= _MAX_CACHED_BLOCKS:
        cache.clear()
    cache[key] = value


def _header_block(headers: Mapping[str, str]) -> bytes:
    """:func:`_encode_header_block`, remembered for a lone header with a short value.

    An untraced hop's request carries only ``Tandem-Heartbeat: 1`` and its reply only
    ``Tandem-Status: done``: the same block every time, built once instead of per message.
    A sampled or traced request's ``traceparent`` and one short header after it make the
    traceparent's line followed by that header's remembered line (a traceparent nats-py would
    change, stripped or with CR or LF in it, takes the general path).
    """
    count = len(headers)
    if count != 1:
        if count == 2:  # a sampled or traced request: traceparent, then Tandem-Heartbeat
            (name, value), item = headers.items()
            if name == "traceparent" and value.isascii():
                raw = value.encode()
                # sent as it is (nats-py strips it and turns CR and LF into spaces): no whitespace at its ends
                # (ASCII: all of it is <= 32) and no CR or LF ("10 in" is memchr, a str needle is not)
                if raw and raw[0] > 32 and raw[-1] > 32 and 13 not in raw and 10 not in raw:
                    rest = _encoded_rests.get(item)
                    if rest is None:
                        rest = _encode_header_block(dict((item,)))[len(_HEADER_LINE):]
                        if len(item[1]) <= _SHORT_VALUE:
                            _remember(_encoded_rests, item, rest)
                    return b"".join((_TRACEPARENT_HEAD, raw, _CRLF, rest))  # one copy, not three concatenations
        return _encode_header_block(headers)
    (item,) = headers.items()
    block = _encoded_blocks.get(item)
    if block is None:
        block = _encode_header_block(headers)
        if len(item[1]) <= _SHORT_VALUE:
            _remember(_encoded_blocks, item, block)
    return block


def _rest_lines(tail: bytes) -> dict[str, str] | None:
    """The reading of a block after its leading ``traceparent`` value, as a dict to copy; None: read the whole block.

    ``tail`` starts where a 55-character value's line would end. ``_parse_header_lines`` reads
    a block line by line into one dict: with the traceparent line first (``tail`` starts with
    its CRLF), that dict is ``{"traceparent": value}`` updated with the reading of the lines
    after it, unless a later line sets ``traceparent`` again. The dict returned has those keys,
    in that order, with an empty ``traceparent`` for the caller's copy to fill in. It is
    remembered when the block it ends would be short (:data:`_SHORT_BLOCK`): flags and status
    words repeat, ids and deadlines do not.
    """
    template: dict[str, str] | None = None
    if tail.startswith(_CRLF):
        parsed = _parse_header_lines(tail[2:])
        if "traceparent" not in parsed:
            template = {"traceparent": "", **parsed}
    if len(tail) - len(_CRLF) + len(_HEADER_LINE) <= _SHORT_BLOCK:
        _remember(_parsed_rests, tail, template)
    return template


def _hpub(subject: str, reply: str, block: bytes, payload: bytes) -> bytes:
    """nats-py's ``hpub_cmd`` in one bytes formatting (the same bytes; ``tests/unit/test_hop_headers.py``)."""
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), len(block), len(block) + len(payload),
                                            block, payload)


class _Client(Client):
    """nats-py's client with :func:`_encode_header_block` and :func:`_parse_header_lines` on its header path.

    Only the header encoding of ``_send_publish`` (which also does ``_send_command``'s two steps
    itself, without a coroutine) and the name checks of ``_parse_header_lines`` differ from
    nats-py's; the wire bytes, the parsed dicts and the errors are the same
    (``tests/unit/test_hop_headers.py`` compares them with nats-py's own). Used only when this nats-py has the methods and constants it overrides
    (:func:`_client_class`); otherwise the bus uses nats-py's ``Client`` as it is.
    """

    _parse_header_lines = staticmethod(_parse_header_lines)  # the function itself: no call in between

    async def _process_headers(self, headers: bytes | None) -> dict[str, str] | None:
        """nats-py's reading of a raw header block, remembered for short blocks (a copy each time).

        A block of :data:`_SHORT_BLOCK` bytes or fewer holds flags and status words, not ids,
        so it repeats: an untraced request's ``Tandem-Heartbeat: 1``, a reply's
        ``Tandem-Status: done``, a no-responders status. A block that starts with a
        ``traceparent`` line (a traced or sampled hop's request) is read as that value, taken
        from its place, followed by the reading of its other lines, remembered the same way
        (:func:`_rest_lines`). Other longer blocks are read every time.
        """
        if headers is None:
            return await super()._process_headers(headers)
        if len(headers) > _SHORT_BLOCK:
            # a traceparent line first (every traced or sampled hop's request): its value is read
            # from its place, the lines after it from the cache of short blocks' readings
            # (23: len(_TRACEPARENT_HEAD); 78: where a 55-character value's line ends; no CR in the
            # value, so that CRLF ends the first line; "13 in" is memchr, a bytes needle is not)
            if headers.startswith(_TRACEPARENT_HEAD) and _PLAIN_PARSE:
                tail = headers[78:]  # the line's CRLF, the other lines: remembered, CRLF checked once
                template = _parsed_rests.get(tail, _MISSING)
                if template is _MISSING:
                    template = _rest_lines(tail)
                if template is not None:
                    value = headers[23:78]
                    if 13 not in value:
                        parsed = template.copy()  # its keys in nats-py's order, traceparent first
                        parsed["traceparent"] = value.strip().decode("utf-8", "replace")
                        return parsed
            return await super()._process_headers(headers)
        parsed = _parsed_blocks.get(headers, _MISSING)
        if parsed is _MISSING:
            parsed = await super()._process_headers(headers)
            _remember(_parsed_blocks, headers, None if parsed is None else dict(parsed))
            return parsed
        return None if parsed is None else parsed.copy()

    async def _send_publish(self, subject: str, reply: str, payload: bytes, payload_size: int,
                            headers: dict[str, Any] | None) -> None:
        if headers is None:
            return await super()._send_publish(subject, reply, payload, payload_size, headers)
        if subject == "":
            raise nats.errors.BadSubjectError
        await self._publish_checked(subject, payload, reply, headers)  # its checks passed in publish already

    async def _publish_checked(self, subject: str, payload: bytes, reply: str, headers: dict[str, str] | None) -> None:
        """``publish`` without nats-py's subject regex, in one coroutine: for subjects already checked.

        The bus's requests and replies go to subjects it checked with
        :func:`~tandem.services.bus.validate_subject` (or :func:`validate_reply_subject`), which
        refuses every subject nats-py's ``_validate_subject`` does (empty, or with a space, tab,
        CR or LF) and more; nats-py's regex search (about 1 µs a subject) would find nothing. The
        rest is nats-py's ``publish``, ``_send_publish`` and ``_send_command``: the same
        connection-state errors in the same order, the same bytes, stats and flushes.

        Raises
        ------
        nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError
        nats.errors.OutboundBufferLimitError, nats.errors.MaxPayloadError, nats.errors.BadHeaderError
            As nats-py's ``publish``.
        """
        status = self._status
        payload_size = len(payload)
        if status != _CONNECTED:  # is_closed, is_draining_pubs, is_connected as publish reads them
            if status == _CLOSED:
                raise nats.errors.ConnectionClosedError
            if status == _DRAINING_PUBS:
                raise nats.errors.ConnectionDrainingError
            if status != _DRAINING_SUBS and (self._max_pending_size <= 0 or
                                             payload_size + self._pending_data_size > self._max_pending_size):
                raise nats.errors.OutboundBufferLimitError
        if payload_size > self._max_payload:
            raise nats.errors.MaxPayloadError
        if headers is None:
            cmd = _nats_command.pub_cmd(subject, reply, payload)
        else:
            cmd = _hpub(subject, reply, _header_block(headers), payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        # _send_command(cmd), inline (one coroutine less per message)
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        if self._max_pending_size > 0 and self._pending_data_size > self._max_pending_size:
            await self._flush_pending(force_flush=True)  # nats-py: "Only flush force timeout on publish"
        flush_queue = self._flush_queue
        # Queue.empty() (a Python call per message), read directly from nats-py's plain asyncio.Queue
        if flush_queue is not None and (not flush_queue._queue  # type: ignore[attr-defined]
                                        if type(flush_queue) is asyncio.Queue else flush_queue.empty()):
            await self._flush_pending()


_CONNECTED, _CLOSED, _DRAINING_SUBS, _DRAINING_PUBS = (
    Client.CONNECTED, Client.CLOSED, Client.DRAINING_SUBS, Client.DRAINING_PUBS)


def _client_class() -> type[Client]:
    """:class:`_Client` when this nats-py has what it relies on, else nats-py's ``Client``."""
    try:
        params = list(inspect.signature(Client._send_publish).parameters)
        needed = (_nats_client._HEADER_KEY_RE, _nats_client._HEADER_VALUE_NEWLINES, _nats_command.hpub_cmd,
                  _nats_command.pub_cmd, Client._parse_header_lines, Client._process_headers, Client._send_command,
                  Client._flush_pending)
        client = Client()  # the state _publish_checked reads where nats-py's publish reads it
        state = ("_status", "_max_payload", "_max_pending_size", "_pending_data_size", "_pending", "stats")
    except (AttributeError, TypeError, ValueError):
        return Client
    if (params != ["self", "subject", "reply", "payload", "payload_size", "headers"] or not all(needed)
            or not all(hasattr(client, name) for name in state)):
        return Client
    return _Client


_CLIENT = _client_class()


class _DirectQueue(asyncio.Queue):  # type: ignore[type-arg]
    """A subscription's pending queue that first offers each message to a synchronous ``direct`` function.

    nats-py's read loop puts every message of a callback subscription in the subscription's
    queue, and a task per subscription takes it out and awaits the callback: one more
    event-loop step per message (about 20k instructions here, as much as the rest of a
    raw nats-py responder's hop). With this class (set on the queue by :meth:`Bus.subscribe`),
    ``direct(msg)`` runs right in the read loop; when it returns False (it cannot take the
    message now: a full mailbox), or while earlier messages still wait here (order), the message
    is queued for the callback as before, which may wait (backpressure).
    """

    _direct: Callable[[Msg], bool]
    _sub: Subscription

    def put_nowait(self, item: Msg) -> None:
        if not self._queue:  # type: ignore[attr-defined]
            try:
                taken = self._direct(item)
            except Exception:  # never into nats-py's read loop: the callback path reports it
                log.exception("direct dispatch of a message on %s failed", item.subject)
                taken = False
            if taken:
                self._sub._pending_size -= len(item.data)  # counted by nats-py before the put
                return
        super().put_nowait(item)


def _offer_first(nc: Client, sub: Subscription, direct: Callable[[Msg], bool]) -> Subscription:
    """Offer ``sub``'s messages to ``direct`` in the read loop (:class:`_DirectQueue`) and return ``sub``.

    Only where the bus uses :class:`_Client` and the subscription has the pending queue and
    counter that class relies on; elsewhere ``sub`` is left as nats-py made it.
    """
    queue = getattr(sub, "_pending_queue", None)
    if (isinstance(nc, _Client) and type(queue) is asyncio.Queue and isinstance(getattr(queue, "_queue", None), deque)
            and isinstance(getattr(sub, "_pending_size", None), int)):
        queue.__class__ = _DirectQueue  # the same object: the subscription's task keeps waiting on it
        queue._direct, queue._sub = direct, sub
    return sub


class _Pending:
    """One request waiting for its reply; heartbeats move ``alive_at`` forward.

    The waiter sleeps on ``waiter``, a bare future resolved by the reply, by a heartbeat
    that changes what silence means, by a lost connection, or at ``wake_at`` by the bus's
    one timer for every pending request (:meth:`Bus._wake_pending`): where
    ``anyio.move_on_after`` + ``Event`` cost a cancel scope and an event (about 17 µs), and a
    ``call_at`` handle per request about 15 Python calls (the handle, the heap's ``__lt__``
    in Python, its cancellation), a request here writes ``wake_at`` and nothing else.
    """

    __slots__ = ("acked", "alive_at", "denied", "lost", "msg", "subject", "waiter", "wake_at")

    def __init__(self, now: float, subject: str) -> None:
        self.subject = subject
        self.alive_at = now
        self.acked = False  # a heartbeat came: the responder is an actor that heartbeats
        self.waiter: asyncio.Future[None] | None = None
        self.msg: Msg | None = None
        self.lost = False  # the connection closed under it
        self.denied: str | None = None  # the server refused its publish or its reply inbox (the violation)
        self.wake_at = math.inf  # when the bus's timer wakes the waiter to look again (loop clock)

    def wake(self) -> None:
        """Let the waiter look again (idempotent)."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.IGNORECASE)
"""The server's ``-ERR`` for a refused publish or subscription (nats-py reports it lower-cased)."""


class _Silent(Exception):
    """The replica went silent (no reply, no heartbeat within the liveness window)."""


class Bus:
    """A connected NATS client that speaks Tandem messages.

    Parameters
    ----------
    nc : nats.aio.client.Client
        A connected nats-py client; use :meth:`connect` to make one (only a bus made by
        :meth:`connect` can :meth:`reconnect`).
    liveness : float
        Seconds a request may go without a reply or a heartbeat before its replica is
        presumed dead (a few :data:`~tandem.services.bus.HEARTBEAT_INTERVAL`).
    max_object_bytes : int
        Largest payload sent or accepted through the object store.
    payload_ttl : float
        Seconds an offloaded payload is kept when nobody deletes it.
    tracer_provider : TracerProvider or None
        Where this bus's messaging spans go (and its actors' ``process`` spans); the
        global provider when None. A ``NoOpTracerProvider`` turns them off for this bus.

    Notes
    -----
    Replies never echo request headers (nats-py ``Msg.respond`` does); only the
    headers the bus needs are sent.
    """

    def __init__(self, nc: Client, *, liveness: float = 5.0, max_object_bytes: int = 64 * 1024 * 1024,
                 payload_ttl: float = 3600.0, tracer_provider: Any | None = None, replicas: int = 1,
                 responders_wait: float = 0.0) -> None:
        self.nc = nc
        self.replicas = replicas
        self.responders_wait = responders_wait
        """Seconds a request keeps resending while nobody serves its subject (an actor restarting or
        reconnecting after a server restart) before :class:`NoResponders`; 0: at once."""
        """Replicas of the streams, KV buckets and object stores Tandem creates (3 on a 3-node cluster)."""
        self.tracer_provider = tracer_provider
        self._send_hops: dict[tuple[str, str | None], HopAttributes] = {}
        self.liveness = liveness
        self.max_object_bytes = max_object_bytes
        self.payload_ttl = payload_ttl
        self._js: JetStreamContext | None = None
        self._obs: ObjectStore | None = None
        self._url: str | None = None
        self._connect_options: dict[str, Any] = {}
        self._closing = False
        self._lost = anyio.Event()
        self._reconnect_lock = anyio.Lock()
        self._inbox_lock = anyio.Lock()
        self._inbox_prefix: str | None = None
        self._inbox_sub: Subscription | None = None
        self._pending: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None  # wakes the pending requests whose wake_at came
        self._timer_at = math.inf  # when it fires
        self._acking: set[str] = set()  # subjects served by actors (they heartbeat)
        self._tokens = itertools.count()
        self.generation = 0
        """How many times the connection was reopened by :meth:`reconnect`."""

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, *, name: str = "tandem", connect_timeout: float = 2.0,
                      credentials: str | os.PathLike[str] | None = None, tls: ssl.SSLContext | None = None,
                      inbox_prefix: str = "_INBOX", **options: Any) -> Bus:
        """Connect to ``url``.

        Parameters
        ----------
        url : str
            One server, or a cluster's as ``nats://a:4222,nats://b:4222`` (the client fails
            over between them and learns the others from the server).
        name : str
            Client name shown by the server.
        connect_timeout : float
        credentials : path or None
            A NATS credentials file: a ``.creds`` file (user JWT and nkey seed, decentralized
            auth) or a file holding just an nkey seed (``SU...``, the server config lists the
            public key, as ``tandem up`` generates). Read by nats-py on every (re)connect.
        tls : ssl.SSLContext or None
            TLS for ``tls://`` URLs or servers that require it.
        inbox_prefix : str
            Prefix of reply subjects (``<prefix>.<id>.*``); a server with per-user permissions
            lets each user subscribe only to its own prefix.
        **options
            Passed to :class:`Bus` (``liveness``, ``max_object_bytes``, ``payload_ttl``,
            ``tracer_provider``, ``replicas``, ``responders_wait``).

        Raises
        ------
        BusConnectError
            When the server cannot be reached (no reconnect loop on first connect); the
            message shows the URL without its password.
        """
        bus = cls.__new__(cls)
        connect_options: dict[str, Any] = {"name": name, "connect_timeout": connect_timeout,
                                           "auth": _auth_options(credentials, tls, inbox_prefix)}
        nc = await bus._open(url, **connect_options)
        cls.__init__(bus, nc, **options)
        bus._url = url
        bus._connect_options = connect_options
        bus._watch(nc, 0)
        return bus

    async def _open(self, url: str, *, name: str, connect_timeout: float, auth: dict[str, Any]) -> Client:
        errors: list[Exception] = []
        connected = False
        refused = anyio.CancelScope()

        async def on_error(exc: Exception) -> None:
            if connected:
                if not self._refuse_pending(exc):
                    log.warning("NATS: %s", exc)
                return
            errors.append(exc)  # reported once, in BusConnectError
            if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
                refused.cancel()  # wrong or missing credentials: retrying will not help

        nc = _CLIENT()
        try:
            # nats-py keeps retrying a failed first connect when reconnects are
            # allowed; bound it, and keep its per-attempt errors for the message.
            with refused, anyio.fail_after(connect_timeout * 2):
                await nc.connect(
                    [u.strip() for u in url.split(",")] if "," in url else url, name=name, connect_timeout=connect_timeout, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=on_error, **auth,
                )
            if refused.cancel_called:
                raise nats.errors.AuthorizationError
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            with anyio.CancelScope(shield=True):
                await nc.close()
            cause = errors[-1] if errors else exc
            raise BusConnectError(f"cannot connect to NATS at {redact_url(url)}: {cause or type(cause).__name__}") from exc
        connected = True
        return nc

    def _refuse_pending(self, exc: Exception) -> bool:
        """Fail at once the requests a permissions violation refused; whether there were any.

        The server names the subject it refused: a request published there, or every request
        when it refused the reply inbox, will never be answered, so waiting out the timeout
        would only hide the cause.
        """
        found = _VIOLATION.search(str(exc))
        if found is None:
            return False
        verb, subject = found.group(1).lower(), found.group(2).lower()
        inbox = (self._inbox_prefix or "").lower()
        if verb == "publish":
            refused = [p for p in self._pending.values() if p.subject.lower() == subject]
        else:  # a refused reply inbox: no request of this connection can be answered
            refused = list(self._pending.values()) if inbox and subject.startswith(inbox) else []
        for pending in refused:
            pending.denied = f"{verb} to {found.group(2)!r}"
            pending.wake()
        return bool(refused)

    def _watch(self, nc: Client, generation: int) -> None:
        """Notice when ``nc`` closes without :meth:`close` (server ``-ERR``, fatal error)."""

        async def closed() -> None:
            if self._closing or generation != self.generation:
                return
            reason = nc.last_error
            log.error("NATS connection closed for good (%s); it will be reopened",
                      f"{type(reason).__name__}: {reason}" if reason else "no reason given")
            self._lost.set()
            for pending in self._pending.values():
                pending.lost = True
                pending.wake()

        nc._closed_cb = closed  # nats-py's connect() sets it from its argument; set after to bind nc

    @property
    def lost(self) -> bool:
        """Whether the current connection closed for good without :meth:`close`."""
        return self._lost.is_set()

    async def wait_lost(self) -> None:
        """Wait until the current connection closes for good without :meth:`close`.

        Actors wait on this instead of sleeping forever, then crash with
        :class:`~tandem.services.errors.BusClosed` so their supervisor calls
        :meth:`reconnect` and restarts them on the new connection.
        """
        await self._lost.wait()

    async def reconnect(self, *, timeout: float = 30.0) -> None:
        """Reopen the connection if it closed for good (a no-op otherwise).

        Concurrent callers share one reconnection. Subscriptions made on the old
        connection are gone: whoever made them must make them again (supervised actors
        are restarted for that).

        Parameters
        ----------
        timeout : float
            Seconds to keep trying.

        Raises
        ------
        BusClosed
            When the bus was closed with :meth:`close`, was not made by :meth:`connect`,
            or the server could not be reached within ``timeout``.
        """
        async with self._reconnect_lock:
            if not self.nc.is_closed:
                return
            if self._closing or self._url is None:
                raise BusClosed("the NATS connection is closed")
            reason = self.nc.last_error
            nc: Client | None = None
            last: BusConnectError | None = None
            with anyio.move_on_after(timeout):
                while nc is None:
                    try:
                        nc = await self._open(self._url, **self._connect_options)
                    except BusConnectError as exc:
                        last = exc
                        await anyio.sleep(0.5)
            if nc is None:
                raise BusClosed(
                    f"NATS connection to {redact_url(self._url)} closed for good "
                    f"({type(reason).__name__ if reason else 'no reason'}: {reason}) "
                    f"and could not be reopened within {timeout:g}s: {last}"
                ) from last
            self.generation += 1
            self.nc = nc
            self._js = None
            self._obs = None
            self._inbox_prefix = None
            self._inbox_sub = None
            self._lost = anyio.Event()
            self._watch(nc, self.generation)
            log.warning("NATS connection to %s reopened (generation %d)", redact_url(self._url), self.generation)

    async def _ensure_open(self) -> None:
        if self.nc.is_closed and not self._closing and self._url is not None:
            await self.reconnect()

    async def close(self) -> None:
        """Drain subscriptions and close the connection."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except (nats.errors.Error, OSError) as exc:
            # the server is gone or reconnecting: nothing left to flush, just stop the client's tasks
            log.debug("drain failed (%s); closing", exc)
            try:
                await self.nc.close()
            except OSError as close_exc:  # the socket was already lost
                log.debug("close after lost connection: %s", close_exc)

    # -- JetStream ----------------------------------------------------------------------------

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context of the current connection."""
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    async def key_value(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> HealingKeyValue:
        """Return JetStream KV ``bucket``, creating it when missing.

        The bucket checks every key with :func:`~tandem.services.bus.validate_kv_key`
        (:class:`~tandem.services.errors.InvalidName`, code ``bad_request``), is recreated
        with this configuration when its stream is lost (a write then succeeds; a read
        finds nothing), and survives :meth:`reconnect`.

        Raises
        ------
        BusError
            When JetStream is not enabled on the server.
        """
        config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl, replicas=self.replicas)
        await self._ensure_open()
        try:
            try:
                info = await self.jetstream.stream_info(f"KV_{bucket}")
                direct = bool(info.config.allow_direct)
            except nats.js.errors.NotFoundError:
                await self.jetstream.create_key_value(config)
                direct = bool(config.direct)
        except nats.errors.Error as exc:
            raise BusError(f"JetStream KV {bucket!r} unavailable (is JetStream enabled?): {exc}") from exc
        return HealingKeyValue(self, config, direct=direct)

    async def _object_store(self, *, fresh: bool = False) -> ObjectStore:
        if self._obs is not None and not fresh:
            return self._obs
        try:
            try:
                if fresh:
                    raise BucketNotFoundError
                self._obs = await self.jetstream.object_store(PAYLOAD_BUCKET)
            except (BucketNotFoundError, nats.js.errors.NotFoundError):
                self._obs = await self.jetstream.create_object_store(
                    PAYLOAD_BUCKET, ObjectStoreConfig(bucket=PAYLOAD_BUCKET, ttl=self.payload_ttl, replicas=self.replicas,
                                                      description="Tandem payloads over max_payload"),
                )
        except nats.js.errors.BadRequestError as exc:
            try:  # created meanwhile by another client, or refused (a cluster still electing leaders)
                self._obs = await self.jetstream.object_store(PAYLOAD_BUCKET)
            except nats.errors.Error:
                raise BusError(f"JetStream object store {PAYLOAD_BUCKET!r} unavailable: {exc}") from exc
        except nats.errors.Error as exc:
            raise BusError(f"JetStream object store {PAYLOAD_BUCKET!r} unavailable: {exc}") from exc
        return self._obs

    async def put_payload(self, data: bytes) -> str:
        """Store ``data`` in the payload object store; return its ``Tandem-Payload`` reference.

        Raises
        ------
        PayloadTooLarge
            When ``data`` is larger than :attr:`max_object_bytes`.
        BusError
            When the object store cannot be used.
        """
        if len(data) > self.max_object_bytes:
            raise PayloadTooLarge(f"payload of {len(data)} bytes exceeds the limit of {self.max_object_bytes}")
        name = new_id()
        obs = await self._object_store()
        try:
            try:
                await obs.put(name, data)
            except nats.errors.Error as exc:
                if not is_stream_lost(exc):
                    raise
                log.warning("object store %s is gone; recreating it", PAYLOAD_BUCKET)
                obs = await self._object_store(fresh=True)
                await obs.put(name, data)
        except nats.errors.Error as exc:
            raise BusError(f"cannot store a payload of {len(data)} bytes: {exc!r}") from exc
        return payload_ref(PAYLOAD_BUCKET, name)

    async def get_payload(self, ref: str) -> bytes:
        """Fetch an offloaded payload by its ``Tandem-Payload`` reference.

        Raises
        ------
        BadRequest
            When ``ref`` is not a reference to this bus's payload bucket, or the object
            does not exist (expired, or never stored).
        PayloadTooLarge
            When the object is larger than :attr:`max_object_bytes`.
        BusError
            When the object store cannot be used.
        """
        name = parse_payload_ref(ref)
        if name is None:
            raise BadRequest(f"bad {PAYLOAD_HEADER} reference {ref[:100]!r}")
        obs = await self._object_store()
        try:
            info = await obs.get_info(name)
            if (info.size or 0) > self.max_object_bytes:
                raise PayloadTooLarge(f"payload of {info.size} bytes exceeds the limit of {self.max_object_bytes}")
            return bytes((await obs.get(name)).data or b"")
        except nats.js.errors.ObjectNotFoundError as exc:
            raise BadRequest(f"payload {ref} not found (expired?)") from exc
        except nats.errors.Error as exc:
            if is_stream_lost(exc):
                raise BadRequest(f"payload {ref} not found (store lost)") from exc
            raise BusError(f"cannot fetch payload {ref}: {exc!r}") from exc

    async def delete_payload(self, ref: str) -> None:
        """Delete an offloaded payload (best effort: failures are only logged)."""
        name = parse_payload_ref(ref)
        if name is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await (await self._object_store()).delete(name)
            except (nats.errors.Error, BusError) as exc:
                log.debug("delete payload %s: %r", ref, exc)

    async def payload_of(self, msg: Msg) -> bytes:
        """Return the body of ``msg``, fetched from the object store when it was offloaded.

        For raw subscribers (``sub.messages``); actors and :meth:`request` do this already.

        Raises
        ------
        BadRequest, PayloadTooLarge, BusError
            As :meth:`get_payload`.
        """
        ref = msg.headers.get(PAYLOAD_HEADER) if msg.headers else None
        return await self.get_payload(ref) if ref is not None else msg.data

    def _inline_limit(self, headers: Mapping[str, str] | None) -> int:
        return self.nc.max_payload - _headers_size(headers) - _HEADROOM

    def _fits(self, size: int, headers: Mapping[str, str]) -> bool:
        """``size <= self._inline_limit(headers)`` in one call (every request and reply asks)."""
        room = self.nc.max_payload - _HEADROOM - size
        if headers:
            room -= 12 + 4 * len(headers)
            for name, value in headers.items():
                room -= len(name) + len(value)
        return room >= 0

    async def _outgoing(self, payload: bytes, headers: dict[str, str]) -> tuple[bytes, str | None]:
        """Offload ``payload`` when it does not fit in one message; return the body to send and the reference."""
        if len(payload) <= self._inline_limit(headers):
            return payload, None
        ref = await self.put_payload(payload)
        headers[PAYLOAD_HEADER] = ref
        return b"", ref

    # -- core NATS ----------------------------------------------------------------------------

    async def subscribe(
        self, subject: str, *, queue: str = "", cb: Callable[[Msg], Awaitable[None]] | None = None,
        direct: Callable[[Msg], bool] | None = None,
    ) -> Subscription:
        """Subscribe to ``subject`` (in ``queue`` group if given).

        Without ``cb``, iterate ``sub.messages``; with ``cb``, nats-py awaits it
        once per message in order (errors it raises are only logged, so ``cb``
        should hand work to a task group rather than do it). Offloaded bodies are
        not fetched here: use :meth:`payload_of`.

        ``direct`` (with ``cb``): a synchronous function offered each message first, in
        nats-py's read loop; it returns True when it took the message, False to leave it to
        ``cb`` (which may wait). Messages stay in order: while some wait for ``cb``, the next
        ones do too. It must not block or raise (an exception is logged and the message goes
        to ``cb``). Ignored where the bus uses nats-py's own client (see ``_Client``).

        Raises
        ------
        InvalidName
            When ``subject`` is malformed or too long.
        """
        validate_subject(subject, wildcards=True)
        await self._ensure_open()
        sub = await self.nc.subscribe(subject, queue=queue, cb=cb)
        return _offer_first(self.nc, sub, direct) if direct is not None and cb is not None else sub

    async def unsubscribe(self, sub: Any) -> None:
        """Unsubscribe ``sub`` (a subscription or a JetStream pull subscription) during cleanup.

        Shielded from cancellation; a connection that is already closed or gone leaves nothing
        to unsubscribe, so that is logged at debug level and not raised.
        """
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError) as exc:
                log.debug("unsubscribe %s: %r", getattr(sub, "subject", sub), exc)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far."""
        await self.nc.flush(timeout=timeout)

    async def publish(self, subject: str, message: Message, *, template: str | None = None) -> None:
        """Publish a one-way message (an event) inside a ``send <subject>`` span.

        A message larger than ``max_payload`` goes through the object store.

        Parameters
        ----------
        subject : str
        message : Message
        template : str or None
            Subject template for the span name (e.g. ``tandem.events.task.{status}``).

        Raises
        ------
        InvalidName
            When ``subject`` is malformed or too long.
        PayloadTooLarge
            When the message is larger than :attr:`max_object_bytes`.
        BusError
            When NATS refuses.
        """
        validate_subject(subject)
        payload = encode(message)
        hop = self._send_hop(subject, template)
        span = start_send(hop, lambda: hop.build(subject=subject, correlation_id=message.correlation_id,
                                                 conversation_id=message.conversation_id, body_size=len(payload)),
                          provider=self.tracer_provider)
        with span:
            await self._ensure_open()
            headers = inject_span(span, {})
            body, _ = await self._outgoing(payload, headers)
            try:
                await self.nc.publish(subject, body, headers=headers or None)
            except nats.errors.Error as exc:
                raise BusError(f"publish to {subject} failed: {exc!r}") from exc

    def _send_hop(self, subject: str, template: str | None = None) -> HopAttributes:
        key = (subject if template is None else template, template)
        hop = self._send_hops.get(key)
        if hop is None:
            if len(self._send_hops) > 4096:  # subjects with ids in them: keep the cache bounded
                self._send_hops.clear()
            hop = self._send_hops[key] = HopAttributes("send", subject, template=template)
        return hop

    async def _ensure_inbox(self) -> str:
        if self._inbox_prefix is not None:
            return self._inbox_prefix
        async with self._inbox_lock:
            if self._inbox_prefix is None:
                base = self._connect_options.get("auth", {}).get("inbox_prefix", "_INBOX")
                prefix = f"{base}.{new_id()}."
                self._inbox_sub = _offer_first(self.nc, await self.nc.subscribe(prefix + "*", cb=self._on_reply),
                                               self._take_reply)
                self._inbox_prefix = prefix
        return self._inbox_prefix

    async def _on_reply(self, msg: Msg) -> None:
        self._take_reply(msg)

    def _take_reply(self, msg: Msg) -> bool:
        """Hand a reply or heartbeat to the request waiting for it (in nats-py's read loop: see ``_DirectQueue``)."""
        prefix = self._inbox_prefix
        if prefix is None or not msg.subject.startswith(prefix):
            return True
        pending = self._pending.get(msg.subject[len(prefix):])
        if pending is None:
            return True  # a late reply to an attempt already given up on
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status == STATUS_WORKING and not msg.data:
            pending.alive_at = asyncio.get_running_loop().time()
            if not pending.acked:  # wake the waiter: from now on silence counts
                pending.acked = True
                self._acking.add(pending.subject)
                pending.wake()
            return True
        if status == STATUS_DONE:
            self._acking.add(pending.subject)  # served by actors: silence there means a lost request
        pending.msg = msg
        pending.wake()
        return True

    async def _attempt(self, subject: str, body: bytes, headers: dict[str, str], end: float, *,
                       idempotent: bool, loop: asyncio.AbstractEventLoop) -> Msg | None:
        """Send one attempt; return the reply, ``None`` on timeout; raise :class:`_Silent`.

        Silence counts once this request got a heartbeat, when the subject is known to be
        served by actors (a heartbeat or a ``Tandem-Status: done`` reply was seen there), or
        for an idempotent request (retrying it is harmless). A responder that never
        heartbeats (a plain subscription answering later) is waited for.
        """
        if self.nc.is_closed:
            await self._ensure_open()
        prefix = self._inbox_prefix if self._inbox_prefix is not None else await self._ensure_inbox()
        token = str(next(self._tokens))
        clock = loop_clock(loop)
        pending = self._pending[token] = _Pending(clock(), subject)
        try:
            nc = self.nc
            if isinstance(nc, _Client):  # request() checked the subject; nats-py's subscribe checked the inbox
                await nc._publish_checked(subject, body, prefix + token, headers)
            else:
                await nc.publish(subject, body, reply=prefix + token, headers=headers)
            while pending.msg is None:
                now = clock()
                if pending.denied is not None:
                    raise PermissionDenied(f"the NATS server refused this connection's credential the {pending.denied} "
                                           f"(permissions violation): it may not request {subject}")
                if pending.lost:
                    raise _Silent("the connection closed")
                if now >= end:
                    return None
                watched = pending.acked or idempotent or subject in self._acking
                quiet = now - pending.alive_at
                if watched and quiet >= self.liveness:
                    raise _Silent(f"no reply and no heartbeat for {quiet:.1f}s"
                                  if pending.acked else f"not received within {quiet:.1f}s")
                wake = min(end, pending.alive_at + self.liveness) if watched else end
                pending.waiter = loop.create_future()
                pending.wake_at = wake
                if wake < self._timer_at:  # else the timer fires sooner and looks at wake_at then
                    self._arm_timer(loop, wake)
                await pending.waiter  # cancelled with the task: the future is cancelled
            return pending.msg
        finally:
            del self._pending[token]

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Make the pending requests' timer fire at ``when`` (sooner than it would)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._wake_pending, loop, when)

    def _wake_pending(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """The timer: wake every pending request whose ``wake_at`` came, and fire again for the next one.

        Requests normally get their reply long before ``wake_at``, so it fires about once per
        timeout or liveness window, not once per request.
        """
        self._timer, self._timer_at = None, math.inf
        now = max(loop.time(), when)  # the loop may run a timer a clock tick before its time
        soonest = math.inf
        for pending in self._pending.values():
            at = pending.wake_at
            if at <= now:
                pending.wake_at = math.inf
                pending.wake()
            elif at < soonest:
                soonest = at
        if soonest < math.inf:
            self._arm_timer(loop, soonest)

    async def request(self, subject: str, message: Message, reply_type: type[R] | Any, *, timeout: float,
                      idempotent: bool = False, responders_wait: float | None = None) -> R:
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
        idempotent : bool
            The request may run twice: when its replica goes silent (dies), send it
            again to another replica (``Tandem-Attempt: 2``…) while time is left. The
            endpoint must be declared ``idempotent`` too, or it refuses the retry.
        responders_wait : float or None
            While nobody serves ``subject``, resend (with backoff) for up to this many
            seconds, within ``timeout``: nobody received the request, so resending is always
            safe, and an actor restarting or reconnecting comes back within seconds.
            ``None``: :attr:`responders_wait`; 0: raise :class:`NoResponders` at once.

        Returns
        -------
        reply_type
            The decoded reply (fetched from the object store when it was offloaded).

        Raises
        ------
        RemoteError
            When the peer answered with an ``ErrorReply``.
        NoResponders
            When nobody serves ``subject`` (still, after ``responders_wait``).
        PermissionDenied
            When the server refused this credential the publish to ``subject`` (or its reply
            inbox): at once, not after ``timeout``.
        ReplicaLost
            When the replica went silent (no reply or heartbeat for :attr:`liveness`
            seconds) and the request is not idempotent or no time is left.
        DeadlineExceeded
            When the current deadline passed before or while waiting.
        RequestTimeout
            When no reply came within ``timeout``.
        InvalidName
            When ``subject`` is malformed or too long.
        PayloadTooLarge
            When the message is larger than :attr:`max_object_bytes`.
        BusError
            When the reply does not decode as ``reply_type``, or NATS fails.
        """
        _valid_subject(subject)
        deadline = current_deadline()
        wait = remaining(timeout)
        assert wait is not None  # timeout is a number
        if deadline is not None and wait <= 0:
            raise DeadlineExceeded(f"deadline passed before the request to {subject}", step=subject)
        payload = encode(message)
        hop = self._send_hop(subject)
        headers: dict[str, str] = {}
        # an unpicked root (most tasks under a ratio sampler) writes its traceparent into headers itself
        span = start_send(hop, lambda: hop.build(correlation_id=message.correlation_id,
                                                 conversation_id=message.conversation_id, body_size=len(payload)),
                          provider=self.tracer_provider, into=headers)
        with span:
            if span is INVALID_SPAN or span is SENT_ROOT:  # no context, or already written
                pass
            elif type(span) is _Forwarded and not span.tracestate and not span._echo \
                    and _fast_propagation():  # a hop that records nothing: inject_span's branch, inline
                headers[TRACEPARENT] = span.traceparent
            else:
                inject_span(span, headers)  # the process span is the send span's child
            if deadline is not None:
                headers[DEADLINE_HEADER] = f"{deadline:.3f}"
            headers[HEARTBEAT_HEADER] = "1"
            if self.nc.is_closed:
                await self._ensure_open()
            if self._fits(len(payload), headers):
                body, ref = payload, None
            else:
                body, ref = await self._outgoing(payload, headers)
            try:
                msg = await self._exchange(subject, body, headers, wait=wait, timeout=timeout,
                                           idempotent=idempotent, span=span,
                                           responders_wait=self.responders_wait if responders_wait is None
                                           else responders_wait)
            finally:
                if ref is not None:
                    await self.delete_payload(ref)
            data = msg.data
            reply_ref = msg.headers.get(PAYLOAD_HEADER) if msg.headers else None
            if reply_ref is not None:
                try:
                    data = await self.get_payload(reply_ref)
                finally:
                    await self.delete_payload(reply_ref)
            try:
                reply = _reply_decoder(reply_type).decode(data)
            except (msgspec.DecodeError, RecursionError) as exc:
                span.set_attribute("error.type", "bad_reply")
                raise BusError(f"malformed reply from {subject}: {truncate_text(str(exc), 500)}") from exc
            if isinstance(reply, ErrorReply):
                span.set_status(Status(StatusCode.ERROR, reply.message))
                span.set_attribute("error.type", reply.code)
                raise RemoteError(reply.code, reply.message, path=reply.path, subject=subject)
            return reply

    async def _exchange(self, subject: str, body: bytes, headers: dict[str, str], *, wait: float, timeout: float,
                        idempotent: bool, span: Any, responders_wait: float = 0.0) -> Msg:
        # asyncio.get_running_loop() once a request: on Python 3.11 each call is a getpid() system call
        loop = asyncio.get_running_loop()
        clock = loop.time  # anyio.current_time() without the backend lookup
        now = clock()
        end = now + wait
        stop_waiting = min(end, now + responders_wait)
        backoff = 0.05
        attempt = 1
        while True:
            try:
                msg = await self._attempt(subject, body, headers, end, idempotent=idempotent, loop=loop)
            except _Silent as exc:
                if idempotent and end - clock() > 0.05:
                    attempt += 1
                    headers[ATTEMPT_HEADER] = str(attempt)
                    log.warning("request to %s: replica silent (%s); retrying (attempt %d)", subject, exc, attempt)
                    span.add_event("retry", {"tandem.attempt": attempt, "tandem.reason": str(exc)})
                    continue
                span.set_status(Status(StatusCode.ERROR, "replica lost"))
                span.set_attribute("error.type", "replica_lost")
                raise ReplicaLost(f"the replica serving {subject} went silent ({exc})"
                                  + ("" if idempotent else "; the request is not idempotent, so it was not retried"),
                                  attempts=attempt) from None
            except PermissionDenied:
                span.set_status(Status(StatusCode.ERROR, "permission denied"))
                span.set_attribute("error.type", PermissionDenied.code)
                raise
            except nats.errors.Error as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise BusError(f"request to {subject} failed: {exc!r}") from exc
            if msg is None:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                if wait < timeout:
                    span.set_attribute("error.type", "deadline_exceeded")
                    raise DeadlineExceeded(f"deadline reached waiting for {subject}", step=subject)
                span.set_attribute("error.type", "timeout")
                raise RequestTimeout(f"no reply from {subject} within {timeout:g}s")
            if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS_STATUS and not msg.data:
                if clock() + backoff < stop_waiting:  # nobody got it: resending is safe
                    span.add_event("no_responders", {"tandem.backoff_s": backoff})
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                span.set_status(Status(StatusCode.ERROR, "no responders"))
                span.set_attribute("error.type", "no_responders")
                raise NoResponders(f"no actor serves {subject} (is it running?)")
            return msg

    async def heartbeat(self, reply: str) -> None:
        """Tell the caller waiting on ``reply`` that its request is still being worked on."""
        await self.nc.publish(reply, b"", headers={STATUS_HEADER: STATUS_WORKING})

    async def respond(self, msg: Msg, reply: Message, headers: Mapping[str, str] | None = None, *,
                      span: trace.Span | None = None) -> None:
        """Send ``reply`` to the reply subject of request ``msg`` (headers are not echoed).

        The reply carries the context (``traceparent``) of ``span``, by default the current
        span: inside an actor, the ``process`` span that produced it.

        A reply larger than ``max_payload`` goes through the object store; when that
        is impossible (too large for it too, or no JetStream) the caller gets
        ``ErrorReply(code="too_large")`` instead.

        Raises
        ------
        InvalidName
            When the request's reply subject is malformed or too long.
        BusError
            When NATS refuses.
        """
        if not msg.reply:
            return
        validate_reply_subject(msg.reply)
        data = encode(reply)
        # the reply carries the span that answered (process)
        if span is None:
            span = trace.get_current_span()
        # nothing to write: tracing off and no incoming trace, or a hop that records nothing and
        # only passes the caller's context on (a _Forwarded echo: inject_span writes nothing for it)
        if span is not INVALID_SPAN and (type(span) is not _Forwarded or not span._echo):  # type: ignore[attr-defined]
            # the span's context first: a block that starts with its traceparent line takes the
            # header fast paths on both sides (_header_block here, _Client._process_headers there)
            hdrs = inject_span(span, {})
            if headers:
                hdrs.update(headers)
                if TRACEPARENT in headers or TRACESTATE in headers:  # the span's context wins, as before
                    inject_span(span, hdrs)
        else:
            hdrs = dict(headers) if headers else {}
        try:
            body = data if self._fits(len(data), hdrs) else (await self._outgoing(data, hdrs))[0]
        except BusError as exc:
            log.warning("reply of %d bytes to %s cannot be sent: %s", len(data), msg.subject, exc)
            body = encode(ErrorReply(
                code="too_large",
                message=truncate_text(f"the reply is {len(data)} bytes, over the server's max_payload of "
                                      f"{self.nc.max_payload}, and could not go through the object store: {exc}", 1000),
                correlation_id=reply.correlation_id, conversation_id=reply.conversation_id,
            ))
            hdrs.pop(PAYLOAD_HEADER, None)
        nc = self.nc
        try:
            if isinstance(nc, _Client):  # the reply subject is checked above
                await nc._publish_checked(msg.reply, body, "", hdrs or None)
            else:
                await nc.publish(msg.reply, body, headers=hdrs or None)
        except nats.errors.Error as exc:
            raise BusError(f"reply to {msg.subject} failed: {exc!r}") from exc
