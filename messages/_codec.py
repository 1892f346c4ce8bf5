"""JSON codec: one shared encoder and one cached typed decoder per type."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

__all__ = ["decoder", "encode"]

_encoder = msgspec.json.Encoder()

encode = _encoder.encode
"""Encode a message to JSON bytes (``msgspec.json.Encoder.encode``)."""


@functools.cache
def decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    """Return the cached ``msgspec.json.Decoder`` for ``type_``.

    Parameters
    ----------
    type_ : type
        A message Struct or a union of them (e.g. ``PlanReply | ErrorReply``).

    Notes
    -----
    Building a Decoder is the expensive part; reuse it (msgspec ``perf-tips.rst``).
    """
    return msgspec.json.Decoder(type_)
