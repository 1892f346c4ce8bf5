"""Bounds on what goes on the wire: subject and KV key names, text that may grow.

nats-server closes the whole connection (``-ERR 'Maximum Control Line Exceeded'``) when
a ``PUB`` line is longer than its ``max_control_line`` (4096 bytes by default), and
nats-py does not reconnect after a server ``-ERR``: one over-long subject, e.g. a KV key
taken from a request, takes down every actor sharing the connection. Names are
therefore checked here, before anything is sent, with a typed
:class:`~tandem.services.errors.InvalidName` (code ``bad_request``).
"""

from __future__ import annotations

import re

from ..errors import InvalidName

__all__ = ["MAX_KV_KEY_BYTES", "MAX_SUBJECT_BYTES", "truncate_text", "validate_kv_key", "validate_reply_subject",
           "validate_subject"]

MAX_SUBJECT_BYTES = 1024
"""Longest subject Tandem publishes to (a quarter of the server's default control line)."""

MAX_KV_KEY_BYTES = 512
"""Longest KV key; the key becomes the subject ``$KV.<bucket>.<key>``."""

_KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")
_SUBJECT_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_PLAIN_SUBJECT = re.compile(r"[-$\w]+(?:\.[-$\w]+)*", re.ASCII)


def validate_subject(subject: str, *, wildcards: bool = False) -> str:
    """Check that ``subject`` is safe to publish to, and return it.

    Parameters
    ----------
    subject : str
    wildcards : bool
        Allow ``*`` and ``>`` tokens (subscriptions only).

    Returns
    -------
    str
        ``subject`` unchanged.

    Raises
    ------
    InvalidName
        When it is empty, longer than :data:`MAX_SUBJECT_BYTES` in UTF-8, contains
        whitespace or control characters, or has an empty token (``a..b``, ``.a``).

    Examples
    --------
    >>> validate_subject("tandem.planner.plan")
    'tandem.planner.plan'
    """
    # the common case in one regex (every reply is checked): ASCII word tokens, no wildcard, short enough
    if len(subject) <= MAX_SUBJECT_BYTES and _PLAIN_SUBJECT.fullmatch(subject):
        return subject
    size = len(subject.encode("utf-8", "surrogatepass"))
    if not subject:
        raise InvalidName("empty subject", kind="subject")
    if size > MAX_SUBJECT_BYTES:
        raise InvalidName(f"subject is {size} bytes long; at most {MAX_SUBJECT_BYTES} allowed", kind="subject")
    if _SUBJECT_FORBIDDEN.search(subject):
        raise InvalidName(f"subject {subject[:80]!r} contains whitespace or control characters", kind="subject")
    tokens = subject.split(".")
    if "" in tokens:
        raise InvalidName(f"subject {subject[:80]!r} has an empty token", kind="subject")
    if not wildcards and any(t in ("*", ">") for t in tokens):
        raise InvalidName(f"subject {subject[:80]!r} contains a wildcard", kind="subject")
    return subject


_MAX_REPLY_PREFIXES = 1024
_reply_prefixes: dict[str, None] = {}  # reply subjects' all-but-last tokens that are plain subjects


def validate_reply_subject(subject: str) -> str:
    """:func:`validate_subject` for a request's reply subject, with its inbox prefix checked once.

    A requester's reply subjects differ only in their last token (``_INBOX.<id>.<n>``, nats-py's
    ``_INBOX.<nuid>.<token>``): when the rest is a prefix already found plain (ASCII word
    tokens) and the last token is ASCII letters and digits, the subject is plain and short
    enough, which is what the first test of :func:`validate_subject` finds with a regex over
    the whole subject (about 1 µs a reply). Anything else goes through
    :func:`validate_subject` itself: the same subjects pass, with the same errors.

    Raises
    ------
    InvalidName
        As :func:`validate_subject`.

    Examples
    --------
    >>> validate_reply_subject("_INBOX.abc.7")
    '_INBOX.abc.7'
    """
    head, _, last = subject.rpartition(".")
    if head in _reply_prefixes and last.isalnum() and last.isascii() and len(subject) <= MAX_SUBJECT_BYTES:
        return subject
    validate_subject(subject)
    if head and _PLAIN_SUBJECT.fullmatch(head):
        if len(_reply_prefixes) >= _MAX_REPLY_PREFIXES:
            _reply_prefixes.clear()
        _reply_prefixes[head] = None
    return subject


def validate_kv_key(key: str) -> str:
    """Check that ``key`` is a valid JetStream KV key of bounded length, and return it.

    Use it on any key derived from input (a plan fingerprint, a model name) before the
    KV call; :meth:`Bus.key_value <tandem.services.bus.Bus.key_value>` buckets call it on
    every operation.

    Parameters
    ----------
    key : str

    Returns
    -------
    str
        ``key`` unchanged.

    Raises
    ------
    InvalidName
        When the key is empty, longer than :data:`MAX_KV_KEY_BYTES`, uses characters other
        than ``A-Z a-z 0-9 - / _ = .``, or starts/ends with ``.`` or has ``..``
        (code ``bad_request``).

    Examples
    --------
    >>> validate_kv_key("3f2a9c")
    '3f2a9c'
    >>> validate_kv_key("a" * 600)
    Traceback (most recent call last):
    ...
    tandem.services.errors.InvalidName: KV key is 600 characters long; at most 512 allowed
    """
    if not key:
        raise InvalidName("empty KV key", kind="kv key")
    if len(key) > MAX_KV_KEY_BYTES:
        raise InvalidName(f"KV key is {len(key)} characters long; at most {MAX_KV_KEY_BYTES} allowed", kind="kv key")
    if not _KV_KEY.fullmatch(key):
        raise InvalidName(f"KV key {key[:80]!r} may only use A-Z a-z 0-9 - / _ = .", kind="kv key")
    if key.startswith(".") or key.endswith(".") or ".." in key:
        raise InvalidName(f"KV key {key[:80]!r} has an empty token", kind="kv key")
    return key


def truncate_text(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` characters, with a note saying so.

    Examples
    --------
    >>> truncate_text("x" * 100, 40)
    'xxxxxxxxxx… [truncated: 100 characters in all]'
    """
    if len(text) <= limit:
        return text
    note = f"… [truncated: {len(text)} characters in all]"
    return text[: max(limit - len(note), 0)] + note
