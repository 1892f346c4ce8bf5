"""Envelope, base message class and the typed error reply.

Every message on a Tandem subject is a frozen, keyword-only msgspec Struct that
derives from :class:`Message` and therefore carries the envelope fields. Each
flow defines one tagged union of its messages; the tag lives in the JSON field
``"type"`` so any subscriber (in any language) can dispatch on it.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from os import urandom as _urandom

import msgspec

__all__ = ["ErrorReply", "Message", "decode_error_path", "new_id", "utcnow"]


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)  # the version nibble and the variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_id() -> str:
    """Return a fresh 32-hex-digit identifier (a UUID4 without dashes).

    What ``uuid.uuid4().hex`` returns (128 random bits from ``os.urandom``, the version and
    variant bits set), without building a ``UUID``: a fifth of its cost, and every request
    that does not pass its own ``correlation_id`` makes one.

    Examples
    --------
    >>> import uuid
    >>> uuid.UUID(new_id()).version
    4
    """
    return "%032x" % (int.from_bytes(_urandom(16), "big") & _UUID4_CLEAR | _UUID4_SET)


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every Tandem message: the envelope.

    Parameters
    ----------
    correlation_id : str
        Ties a reply to its request and every event to the task it belongs to.
        Replies copy the request's value (OTel ``messaging.message.conversation_id``).
    conversation_id : str
        The user conversation the message belongs to (OTel ``gen_ai.conversation.id``).
    sent_at : datetime
        When the message was created, timezone-aware UTC.

    Notes
    -----
    Subclasses set ``tag="..."`` explicitly; new fields must be appended with
    defaults and existing fields are never retyped (msgspec
    ``schema-evolution.rst``).
    """

    correlation_id: str = msgspec.field(default_factory=new_id)
    conversation_id: str = ""
    sent_at: datetime = msgspec.field(default_factory=functools.partial(datetime.now, UTC))  # utcnow, in C


class ErrorReply(Message, frozen=True, kw_only=True, tag="error"):
    """Typed reply to a request that failed.

    Parameters
    ----------
    code : str
        Stable machine-readable code: ``bad_request`` when the request did not
        decode, ``timeout`` when the handler ran out of time, ``internal`` for
        an unexpected exception, or the ``code`` of a :class:`TandemError`.
    message : str
        Human-readable, one line.
    path : str or None
        JSON path of the offending field (e.g. ``$.plan.workflow[0].step``)
        when decoding failed, else ``None``.
    """

    code: str
    message: str
    path: str | None = None


_PATH_RE = re.compile(r" - at `(\$[^`]*)`$")
_INNER_RE = re.compile(r" \[at (\S+)\]$")


def decode_error_path(exc: msgspec.DecodeError) -> tuple[str, str | None]:
    """Split a msgspec decode error into its message and JSON path.

    Parameters
    ----------
    exc : msgspec.DecodeError
        The error raised by a ``Decoder`` (``ValidationError`` included).

    Returns
    -------
    tuple of (str, str or None)
        The message without the path suffix, and the path such as
        ``$.workflow[1].params`` or ``None`` when msgspec gave none.

    Examples
    --------
    >>> import msgspec
    >>> try:
    ...     msgspec.json.decode(b'{"a": "x"}', type=dict[str, int])
    ... except msgspec.ValidationError as e:
    ...     decode_error_path(e)
    ('Expected `int`, got `str`', '$.a')
    """
    text = str(exc)
    path: str | None = None
    m = _PATH_RE.search(text)
    if m is not None:
        text, path = text[: m.start()], m.group(1)
    # Invariant checks in __post_init__ name the field inside their struct as
    # "[at workflow[1].params.input_fd]"; join it to msgspec's outer path.
    inner = _INNER_RE.search(text)
    if inner is not None:
        text, path = text[: inner.start()], f"{path or '$'}.{inner.group(1)}"
    return text, path
