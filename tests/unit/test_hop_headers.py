"""The bus's cheaper nats-py header path sends the same bytes and reads the same dicts as nats-py (issue 14)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from tandem.services.bus import _nats
from tandem.services.bus._limits import validate_reply_subject, validate_subject
from tandem.services.errors import InvalidName

# the subclass where this nats-py has the internals it relies on; nats-py's own Client otherwise (the
# lowest nats-py allowed, 2.9, has no Client._parse_header_lines: CI's lowest-direct job runs that way)
uses_subclass = pytest.mark.skipif(_nats._CLIENT is not _nats._Client,
                                   reason="this nats-py lacks what the header fast path relies on: the bus uses nats-py's Client")

# header names and values as bytes on the wire: ASCII, controls, spaces, colons, non-ASCII, invalid UTF-8
_WIRE = st.binary(max_size=24) | st.sampled_from([b"traceparent", b"Tandem-Status", b" a b ", b"\x1c", b"\xff",
                                                   b"", b":", b"x\x0b", "é".encode()])


@uses_subclass
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_WIRE, st.sampled_from([b":", b": ", b"", b":\t"]), _WIRE), max_size=6))
def test_parse_header_lines_reads_as_nats_py(lines: list[tuple[bytes, bytes, bytes]]) -> None:
    raw = b"\r\n".join(name + sep + value for name, sep, value in lines) + b"\r\n\r\n"
    expected = Client._parse_header_lines(raw)
    assert _nats._parse_header_lines(raw) == expected
    assert _nats._parse_header_lines(raw) == expected  # again, from the name cache


def _sent(client: type[Client], headers: dict[str, str] | None) -> list[bytes] | type[Exception]:
    nc = client()
    nc._pending, nc._pending_data_size, nc._max_pending_size, nc._flush_queue = [], 0, 0, None
    nc._status, nc._max_payload = Client.CONNECTED, 1 << 20
    try:
        asyncio.run(nc.publish("a.b", b"{}", reply="_INBOX.x.1", headers=headers))
    except nats.errors.Error as exc:
        return type(exc)
    return list(nc._pending)


_NAMES = st.text(max_size=12) | st.sampled_from(["traceparent", "Tandem-Heartbeat", " padded ", "", "bad name",
                                                   "x:y", "é"])


@uses_subclass
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, st.text(max_size=16) | st.sampled_from(["a\r\nb", " v ", "1"]), max_size=5)
       | st.none())
def test_publish_sends_the_bytes_nats_py_sends(headers: dict[str, str] | None) -> None:
    assert _nats._CLIENT is _nats._Client
    assert _sent(_nats._Client, headers) == _sent(Client, headers)


@pytest.mark.parametrize("missing", ["_parse_header_lines", "_flush_pending"])
def test_a_nats_py_without_the_internals_gets_its_own_client(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.delattr(Client, missing, raising=False)
    assert _nats._client_class() is Client


def test_a_nats_py_whose_publish_changed_shape_gets_its_own_client(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _send_publish(self, subject, reply, payload, payload_size, headers, extra=None):  # noqa: ANN001, ANN202
        raise AssertionError

    monkeypatch.setattr(Client, "_send_publish", _send_publish)
    assert _nats._client_class() is Client


@pytest.mark.parametrize("subject", ["tandem.planner.plan", "_INBOX.abc.12", "$SRV.PING", "a-b_c", "x" * 1024])
def test_plain_subjects_pass(subject: str) -> None:
    assert validate_subject(subject) == subject


@pytest.mark.parametrize("subject", ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "x" * 1025, "a\r\nb", "é" * 600])
def test_bad_subjects_still_refused(subject: str) -> None:
    with pytest.raises(InvalidName):
        validate_subject(subject)


# --------------------------------------------------------------------------- the bus's own publish and header caches


def _checked(headers: dict[str, str] | None, *, subject: str = "a.b", reply: str = "_INBOX.x.1",
             payload: bytes = b"{}", status: int = Client.CONNECTED, max_pending: int = 0,
             pending_size: int = 0) -> list[bytes] | type[Exception]:
    """What ``_publish_checked`` queues (or raises) on a client in ``status``."""
    nc = _nats._Client()
    nc._pending, nc._pending_data_size, nc._max_pending_size, nc._flush_queue = [], pending_size, max_pending, None
    nc._status, nc._max_payload = status, 1 << 10
    try:
        asyncio.run(nc._publish_checked(subject, payload, reply, headers))
    except (nats.errors.Error, AssertionError) as exc:  # AssertionError: a forced flush without a connection
        return type(exc)
    return list(nc._pending)


def _published(headers: dict[str, str] | None, *, subject: str = "a.b", reply: str = "_INBOX.x.1",
               payload: bytes = b"{}", status: int = Client.CONNECTED, max_pending: int = 0,
               pending_size: int = 0) -> list[bytes] | type[Exception]:
    """What nats-py's own ``publish`` queues (or raises) in the same state."""
    nc = Client()
    nc._pending, nc._pending_data_size, nc._max_pending_size, nc._flush_queue = [], pending_size, max_pending, None
    nc._status, nc._max_payload = status, 1 << 10
    try:
        asyncio.run(nc.publish(subject, payload, reply=reply, headers=headers))
    except (nats.errors.Error, AssertionError) as exc:  # AssertionError: a forced flush without a connection
        return type(exc)
    return list(nc._pending)


@uses_subclass
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, st.text(max_size=20) | st.sampled_from(["a\r\nb", " v ", "1", "done"]), max_size=4)
       | st.none(), st.sampled_from(["", "_INBOX.x.1", "r"]), st.binary(max_size=40))
def test_publish_checked_sends_the_bytes_nats_py_sends(headers: dict[str, str] | None, reply: str,
                                                       payload: bytes) -> None:
    expected = _published(headers, reply=reply, payload=payload)
    assert _checked(headers, reply=reply, payload=payload) == expected
    assert _checked(headers, reply=reply, payload=payload) == expected  # again, from the block cache


@uses_subclass
@pytest.mark.parametrize("status", [Client.CONNECTED, Client.CLOSED, Client.DRAINING_PUBS, Client.DRAINING_SUBS,
                                    Client.RECONNECTING, Client.DISCONNECTED, Client.CONNECTING])
@pytest.mark.parametrize(("max_pending", "pending_size", "payload"),
                         [(0, 0, b"{}"), (100, 0, b"{}"), (100, 99, b"{}"), (1 << 20, 0, b"x" * 1025)])
def test_publish_checked_refuses_what_nats_py_publish_refuses(status: int, max_pending: int, pending_size: int,
                                                              payload: bytes) -> None:
    state = {"status": status, "max_pending": max_pending, "pending_size": pending_size, "payload": payload}
    assert _checked({"Tandem-Heartbeat": "1"}, **state) == _published({"Tandem-Heartbeat": "1"}, **state)
    assert _checked(None, **state) == _published(None, **state)


def _read(client: type[Client], raw: bytes) -> object:
    nc = client()
    nc._error_cb = _no_error  # type: ignore[assignment]
    return asyncio.run(nc._process_headers(raw))


async def _no_error(exc: Exception) -> None:
    raise AssertionError(exc)


@uses_subclass
@pytest.mark.parametrize("raw", [
    b"NATS/1.0\r\nTandem-Heartbeat: 1\r\n\r\n", b"NATS/1.0\r\nTandem-Status: done\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n", b"NATS/1.0\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\n\r\n", b"NATS/1.0\r\nA: 1\r\nB:2\r\n\r\n",
    b"NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
])
def test_header_blocks_read_as_nats_py_and_each_message_gets_its_own_dict(raw: bytes) -> None:
    expected = _read(Client, raw)
    first = _read(_nats._Client, raw)
    assert first == expected
    if first is not None:
        first["mutated"] = "by a handler"  # type: ignore[index]
    assert _read(_nats._Client, raw) == expected  # from the cache: not the dict handed out before


@uses_subclass
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WIRE, st.sampled_from([b":", b": ", b""]), _WIRE), max_size=3))
def test_short_header_blocks_read_as_nats_py_twice(lines: list[tuple[bytes, bytes, bytes]]) -> None:
    raw = b"NATS/1.0\r\n" + b"\r\n".join(name + sep + value for name, sep, value in lines) + b"\r\n\r\n"
    expected = _read(Client, raw)
    assert _read(_nats._Client, raw) == expected
    assert _read(_nats._Client, raw) == expected


_SUBJECT_CHARS = st.sampled_from(list("ab09_-$.*> \té\r") + [".", "."])


@settings(max_examples=1000, deadline=None)
@given(st.text(_SUBJECT_CHARS, max_size=20), st.text(_SUBJECT_CHARS, max_size=8))
def test_reply_subjects_pass_and_fail_as_validate_subject(prefix: str, last: str) -> None:
    for subject in (f"{prefix}.1", f"{prefix}.{last}", f"{prefix}.{last}"):  # the prefix is remembered on the way
        try:
            validate_subject(subject)
        except InvalidName as exc:
            with pytest.raises(InvalidName) as caught:
                validate_reply_subject(subject)
            assert str(caught.value) == str(exc)
        else:
            assert validate_reply_subject(subject) == subject


def test_a_long_reply_subject_on_a_known_prefix_is_refused() -> None:
    assert validate_reply_subject("_INBOX.known.1") == "_INBOX.known.1"
    with pytest.raises(InvalidName):
        validate_reply_subject("_INBOX.known." + "9" * 1024)
