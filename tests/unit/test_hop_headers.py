"""The bus's cheaper nats-py header path sends the same bytes and reads the same dicts as nats-py (issue 14)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from tandem.services.bus import _nats
from tandem.services.bus._limits import validate_subject
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
