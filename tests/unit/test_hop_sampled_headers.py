"""A traced or sampled hop's headers (a ``traceparent`` line first) are sent and read as nats-py sends and reads them.

The bus reads a block that starts with a ``traceparent`` line by taking the value from its
place and the other lines from a cache (issue 14); every other block, and every block that only
looks like that form, goes through the general path. Compared here with nats-py's own
``Client``, order of the keys included.
"""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from tandem.services.bus import _nats

uses_subclass = pytest.mark.skipif(_nats._CLIENT is not _nats._Client,
                                   reason="this nats-py lacks what the header fast path relies on: the bus uses nats-py's Client")

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


async def _no_error(exc: Exception) -> None:
    raise AssertionError(exc)


def _read(client: type[Client], raw: bytes) -> list[tuple[str, str]] | None:
    nc = client()
    nc._error_cb = _no_error  # type: ignore[assignment]
    parsed = asyncio.run(nc._process_headers(raw))
    if parsed is None:
        return None
    items = list(parsed.items())
    parsed["mutated"] = "by a handler"  # the next message must not see it
    return items


def _block(*lines: bytes) -> bytes:
    return b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


_TRACEPARENT_LINE = b"traceparent: " + TP.encode()
_BLOCKS = [
    _block(_TRACEPARENT_LINE, b"Tandem-Heartbeat: 1"),  # a sampled or traced request
    _block(_TRACEPARENT_LINE, b"Tandem-Deadline: 1764582000.125", b"Tandem-Heartbeat: 1"),  # with a deadline
    _block(_TRACEPARENT_LINE, b"Tandem-Status: done"),  # a traced reply
    _block(_TRACEPARENT_LINE, b"tracestate: a=1,b=2", b"Tandem-Heartbeat: 1"),
    _block(_TRACEPARENT_LINE),  # the traceparent alone
    b"NATS/1.0\r\n" + _TRACEPARENT_LINE + b"\r\n",  # no closing blank line
    _block(_TRACEPARENT_LINE, b"Tandem-Payload: " + b"x" * 80, b"Tandem-Heartbeat: 1"),  # a long rest
    # only look like the fast form, or not at all
    _block(_TRACEPARENT_LINE, b"traceparent: 00-11111111111111111111111111111111-2222222222222222-01"),  # duplicate key
    _block(_TRACEPARENT_LINE, b" traceparent : x", b"Tandem-Heartbeat: 1"),  # duplicate after strip
    _block(_TRACEPARENT_LINE, b"Tandem-Heartbeat: 1", b"traceparent:y"),
    _block(b"Traceparent: " + TP.encode(), b"Tandem-Heartbeat: 1"),  # uppercase name
    _block(b"TRACEPARENT: " + TP.encode()),
    _block(b"traceparent: " + TP.upper().encode(), b"Tandem-Heartbeat: 1"),  # uppercase value
    _block(b"traceparent: " + TP[:-1].encode(), b"Tandem-Heartbeat: 1"),  # 54 characters
    _block(b"traceparent: " + TP.encode() + b"0", b"Tandem-Heartbeat: 1"),  # 56 characters
    _block(b"traceparent:  " + TP.encode(), b"Tandem-Heartbeat: 1"),  # two spaces
    _block(b"traceparent:  " + TP[:-1].encode(), b"Tandem-Heartbeat: 1"),  # two spaces, 54 characters: CRLF at 78
    _block(b"traceparent: " + TP[:-1].encode() + b" ", b"Tandem-Heartbeat: 1"),  # a trailing space at 77
    _block(b"traceparent: " + TP[:-1].encode() + b"\t", b"Tandem-Heartbeat: 1"),
    _block(b"traceparent:" + TP.encode() + b"0", b"Tandem-Heartbeat: 1"),  # no space
    _block(b"traceparent: " + TP[:20].encode() + b"\r\nX: " + TP[24:].encode(), b"Tandem-Heartbeat: 1"),  # CRLF inside
    _block(b"traceparent: " + TP[:20].encode() + b"\rX" + TP[22:].encode(), b"Tandem-Heartbeat: 1"),  # a lone CR
    _block(b"traceparent: " + TP[:20].encode() + b"\nX" + TP[22:].encode(), b"Tandem-Heartbeat: 1"),  # a lone LF
    _block(b"traceparent: " + TP[:-1].encode() + b"\r", b"Tandem-Heartbeat: 1"),  # CR at 77: CR CR LF
    _block(b"traceparent: " + TP[:-2].encode() + b"\xff\xfe", b"Tandem-Heartbeat: 1"),  # invalid UTF-8
    _block(b"traceparent: " + "é".encode() + TP[2:].encode(), b"Tandem-Heartbeat: 1"),
    _block(b"traceparent: " + b" " * 55, b"Tandem-Heartbeat: 1"),  # blank value
    _block(b"traceparent: " + TP.encode(), b"Bad Name: 1", b"\xff: 2", b"no colon", b": empty name"),
    b"NATS/1.0 503\r\ntraceparent: " + TP.encode() + b"\r\n\r\n",  # a status line first
    b"NATS/1.0\r\ntraceparent: " + TP.encode(),  # cut short
    b"NATS/1.0\r\ntraceparent: " + TP.encode() + b"\r",
    b"NATS/1.1\r\ntraceparent: " + TP.encode() + b"\r\n\r\n",
]


@uses_subclass
@pytest.mark.parametrize("raw", _BLOCKS)
def test_traceparent_blocks_read_as_nats_py(raw: bytes) -> None:
    expected = _read(Client, raw)
    assert _read(_nats._Client, raw) == expected
    assert _read(_nats._Client, raw) == expected  # again: the rest from the cache, a dict of its own


@uses_subclass
def test_the_fast_form_is_taken_and_its_rest_remembered() -> None:
    _nats._parsed_rests.clear()
    raw = _block(_TRACEPARENT_LINE, b"Tandem-Heartbeat: 1")
    assert _read(_nats._Client, raw) == [("traceparent", TP), ("Tandem-Heartbeat", "1")]
    # remembered from the CRLF that ends the traceparent's line: the keys in order, the value filled in per block
    assert _nats._parsed_rests == {b"\r\nTandem-Heartbeat: 1\r\n\r\n": {"traceparent": "", "Tandem-Heartbeat": "1"}}
    duplicate = _block(_TRACEPARENT_LINE, b"traceparent: x")
    assert _read(_nats._Client, duplicate) == [("traceparent", "x")]  # the last line wins
    assert _nats._parsed_rests[duplicate[78:]] is None  # remembered as: read the whole block


@uses_subclass
def test_remembered_rests_stay_bounded() -> None:
    for i in range(3 * _nats._MAX_CACHED_BLOCKS):
        _read(_nats._Client, _block(_TRACEPARENT_LINE, b"N: %d" % i))
    assert len(_nats._parsed_rests) <= _nats._MAX_CACHED_BLOCKS


_VALUE_BYTES = st.sampled_from([b"0", b"a", b"f", b"-", b"A", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\xff", b":", b"\x0b"])
_WIRE = st.binary(max_size=12) | st.sampled_from([b"traceparent", b" traceparent", b"Tandem-Heartbeat", b"\xff", b""])


@uses_subclass
@settings(max_examples=500, deadline=None)
@given(st.lists(_VALUE_BYTES, max_size=6), st.integers(0, 55), st.sampled_from([b"traceparent: ", b"traceparent:",
                                                                                  b"traceparent:  ", b"Traceparent: "]),
       st.lists(st.tuples(_WIRE, st.sampled_from([b":", b": ", b""]), _WIRE), max_size=3),
       st.sampled_from([b"\r\n", b"", b"\r"]))
def test_blocks_near_the_fast_form_read_as_nats_py(noise: list[bytes], at: int, head: bytes,
                                                   lines: list[tuple[bytes, bytes, bytes]], end: bytes) -> None:
    value = TP.encode()
    for piece in noise:  # overwrite from ``at`` on, keeping 55 bytes when the pieces are single bytes
        value = (value[:at] + piece + value[at + len(piece):])[:56]
    raw = (b"NATS/1.0\r\n" + head + value + b"\r\n"
           + b"".join(name + sep + val + b"\r\n" for name, sep, val in lines) + end)
    expected = _read(Client, raw)
    assert _read(_nats._Client, raw) == expected
    assert _read(_nats._Client, raw) == expected


# --------------------------------------------------------------------------- sending: the traceparent's line, then a remembered rest


def _sent(client: type[Client], headers: dict[str, str]) -> list[bytes] | type[Exception]:
    nc = client()
    nc._pending, nc._pending_data_size, nc._max_pending_size, nc._flush_queue = [], 0, 0, None
    nc._status, nc._max_payload = Client.CONNECTED, 1 << 20
    try:
        if client is Client:
            asyncio.run(nc.publish("a.b", b"{}", reply="_INBOX.x.1", headers=headers))
        else:
            asyncio.run(nc._publish_checked("a.b", b"{}", "_INBOX.x.1", headers))
    except nats.errors.Error as exc:
        return type(exc)
    return list(nc._pending)


_SENT_VALUES = [TP, TP.replace("-00", "-01"), " " + TP, TP + " ", TP + "\t", "\x1c" + TP, TP + "\u3000", "\u00a0" + TP,
                TP[:20] + "\r\n" + TP[20:], TP[:20] + "\r" + TP[20:], TP[:20] + "\n" + TP[20:], "", " ", "x", "é" * 3,
                TP[:20] + " " + TP[20:], TP.upper(), TP + "0" * 10]
_SECOND = [("Tandem-Heartbeat", "1"), ("Tandem-Status", "done"), ("Tandem-Deadline", "1764582000.125"),
           ("tracestate", "a=1,b=2"), (" padded ", " v "), ("", "skipped"), ("  ", "blank"), ("bad name", "1"),
           ("x:y", "1"), ("é", "1"), (" traceparent", "again"), ("Tandem-Heartbeat", "a\r\nb"),
           ("Tandem-Payload", "x" * 40)]


@uses_subclass
@pytest.mark.parametrize("value", _SENT_VALUES)
@pytest.mark.parametrize(("name", "second"), _SECOND)
def test_a_traceparent_and_one_header_are_sent_as_nats_py_sends_them(value: str, name: str, second: str) -> None:
    headers = {"traceparent": value, name: second}
    expected = _sent(Client, headers)
    assert _sent(_nats._Client, headers) == expected
    assert _sent(_nats._Client, headers) == expected  # again: the rest remembered


@uses_subclass
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.sampled_from(_SENT_VALUES), st.text(max_size=12) | st.sampled_from([n for n, _ in _SECOND]),
       st.text(max_size=20))
def test_traceparent_first_headers_are_sent_as_nats_py_sends_them(value: str, name: str, second: str) -> None:
    headers = {"traceparent": value, name: second} if name != "traceparent" else {"traceparent": value}
    expected = _sent(Client, headers)
    assert _sent(_nats._Client, headers) == expected
    assert _sent(_nats._Client, headers) == expected


@uses_subclass
def test_remembered_sent_rests_stay_bounded() -> None:
    for i in range(3 * _nats._MAX_CACHED_BLOCKS):
        _sent(_nats._Client, {"traceparent": TP, "N": str(i)})
    assert len(_nats._encoded_rests) <= _nats._MAX_CACHED_BLOCKS


@uses_subclass
def test_a_sampled_requests_block_is_the_traceparent_line_and_the_remembered_rest() -> None:
    _nats._encoded_rests.clear()
    block = _nats._header_block({"traceparent": TP, "Tandem-Heartbeat": "1"})
    assert block == b"NATS/1.0\r\ntraceparent: " + TP.encode() + b"\r\nTandem-Heartbeat: 1\r\n\r\n"
    assert _nats._encoded_rests == {("Tandem-Heartbeat", "1"): b"Tandem-Heartbeat: 1\r\n\r\n"}
    assert _nats._header_block({"traceparent": " " + TP, "Tandem-Heartbeat": "1"}) == block  # stripped, general path
