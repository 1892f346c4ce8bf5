"""Fuzz every request subject of planner, router, executor and choice over a real nats-server.

Hypothesis sends random bytes, wrong types, missing fields, deep nesting, huge strings,
long KV keys and payloads over ``max_payload`` (through the object store), each as a
request. Asserted: every request gets a typed reply (an ``ErrorReply`` or the endpoint's
reply, tagged by ``type``), no actor restarts (same instance ids before and after), and
the process memory returns near its baseline. The counts are printed.

Bounded: ``FUZZ_EXAMPLES`` examples (default 200) within ``FUZZ_SECONDS`` (default 30 s).
"""

from __future__ import annotations

import gc
import os
import time
import typing
from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.actors import Endpoint, RouterActor
from tandem.messages import ErrorReply, Ping, Pong, decoder, subjects
from tandem.services.bus import PAYLOAD_HEADER, Bus
from tandem.services.runtime import start_actors

from .._replica import mock_transport, replica_config

ACTORS = ["planner", "router", "executor", "choice"]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "30"))
MEMORY_SLACK = 150 * 1024 * 1024


def _rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _structs(tp: Any) -> list[type[msgspec.Struct]]:
    args = typing.get_args(tp)
    return [t for t in (args or (tp,)) if isinstance(t, type) and issubclass(t, msgspec.Struct)]


def _targets() -> list[tuple[str, str, list[str]]]:
    """(subject, tag, field names) for every request endpoint of the fuzzed actors."""
    from tandem.actors import ACTORS as TABLE

    out: list[tuple[str, str, list[str]]] = []
    for name in ACTORS:
        actor = TABLE[name](None, replica_config())  # type: ignore[arg-type]  # endpoints() only
        eps: list[Endpoint] = [*actor.endpoints(), Endpoint(subjects.ping(name), Ping, actor._ping)]
        for ep in eps:
            for struct in _structs(ep.request_type):
                tag = struct.__struct_config__.tag
                out.append((ep.subject, str(tag), [f.name for f in msgspec.structs.fields(struct)]))
    return out


TARGETS = _targets()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """One hostile request: (kind, subject, payload)."""
    subject, tag, fields = draw(st.sampled_from(TARGETS))
    kind = draw(st.sampled_from(["bytes", "json", "wrong_types", "missing", "deep", "huge", "long_key", "oversize"]))
    if kind == "bytes":
        return kind, subject, draw(st.binary(max_size=300))
    if kind == "json":
        return kind, subject, msgspec.json.encode(draw(json_values))
    if kind == "wrong_types":
        chosen = draw(st.lists(st.sampled_from(fields), unique=True, max_size=len(fields))) if fields else []
        body = {"type": tag, **{f: draw(json_values) for f in chosen}}
        return kind, subject, msgspec.json.encode(body)
    if kind == "missing":
        return kind, subject, msgspec.json.encode({"type": tag})
    if kind == "deep":
        depth = draw(st.sampled_from([600, 2_000, 50_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return kind, subject, b'{"type":"' + tag.encode() + b'","x":' + opener * depth + b"1" + closer * depth + b"}"
    if kind == "huge":
        field = draw(st.sampled_from(fields or ["x"]))
        return kind, subject, msgspec.json.encode({"type": tag, field: "h" * draw(st.sampled_from([10_000, 500_000]))})
    if kind == "long_key":
        key = draw(st.sampled_from(["f" * 5_000, "k" * 513, "a b", "..", "ключ"]))
        return kind, subject, msgspec.json.encode({"type": tag, **{f: key for f in fields if f != "sent_at"}})
    field = draw(st.sampled_from(fields or ["x"]))  # oversize: over max_payload, sent through the object store
    return kind, subject, msgspec.json.encode({"type": tag, field: "o" * 1_200_000})


async def test_fuzz_every_request_subject(bus: Bus) -> None:
    config, transport = replica_config(), mock_transport(0.0)
    factories = {"router": lambda b, c: RouterActor(b, c, transport=transport)}
    counts: Counter[tuple[str, str]] = Counter()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    started = time.monotonic()

    async def ids() -> dict[str, str]:
        return {n: (await bus.request(subjects.ping(n), Ping(), Pong, timeout=5)).instance_id for n in ACTORS}

    async with start_actors(bus, config, ACTORS, factories):
        before = await ids()
        baseline = _rss()

        async def send(case: tuple[str, str, bytes]) -> None:
            kind, subject, payload = case
            headers: dict[str, str] = {}
            if len(payload) > bus.nc.max_payload - 1024:
                headers[PAYLOAD_HEADER] = await bus.put_payload(payload)
                payload = b""
            try:
                msg = await bus.nc.request(subject, payload, timeout=15, headers=headers or None)
            finally:
                if PAYLOAD_HEADER in headers:
                    await bus.delete_payload(headers[PAYLOAD_HEADER])
            data = await bus.payload_of(msg)
            reply = msgspec.json.decode(data)
            assert isinstance(reply, dict) and isinstance(reply.get("type"), str), data[:200]
            if reply["type"] == "error":
                outcomes[decoder(ErrorReply).decode(data).code] += 1
            else:
                outcomes[f"ok:{reply['type']}"] += 1
            counts[(subject, kind)] += 1
            kinds[kind] += 1

        # Hypothesis drives a synchronous test in a worker thread; each example is sent from
        # the event loop (anyio.from_thread), so the actors keep running between examples.
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=hostile())
        def one(case: tuple[str, str, bytes]) -> None:
            if time.monotonic() - started < SECONDS:  # the time bound: later examples are not sent
                anyio.from_thread.run(send, case)

        await anyio.to_thread.run_sync(one)
        after = await ids()
        grown = _rss() - baseline

    sent = sum(counts.values())
    print(f"\nfuzz: {sent} requests in {time.monotonic() - started:.1f}s over {len({s for s, _ in counts})} subjects;"
          f" kinds {dict(kinds)}; replies {dict(outcomes)}; restarts 0 = {after == before};"
          f" memory {grown / 1e6:+.1f} MB vs baseline")
    assert sent >= min(EXAMPLES, 50)
    assert after == before  # no actor restarted
    assert grown < MEMORY_SLACK
    assert {s for s, _ in counts} == {s for s, _, _ in TARGETS}  # every request subject was hit


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s"])
